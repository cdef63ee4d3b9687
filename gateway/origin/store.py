"""The content store: safe path resolution, file identity and positioned reads.

Every path a request names goes through ``Store.identify``: join onto the store root, ``realpath`` (so symlinks are
followed the way the kernel will follow them), then require the result to lie inside ``realpath(root)`` and to be a
regular file. Anything else is the same NOT_FOUND as a missing file, so a probe cannot learn what exists outside.
Messages name the store-relative path the client asked for, never an absolute one.

Reads use ``os.pread`` on one descriptor per build, in the caller's executor thread: the store is NFS in production
and a stalled read must block a worker thread, not the event loop.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import stat
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from packagers.errors import bad_data, not_found
from packagers.limits import Limits
from packagers.model import Presentation
from packagers.mp4 import read_presentation
from packagers.media_data import MAX_PIECES_PER_READ, SKIP_LIMIT, ReadRequest, ScatterRead


class WouldBlock(Exception):
    """A non-blocking read found bytes that are not in the page cache (or a file system without non-blocking reads,
    ``unsupported``): the caller reads them in the executor instead."""

    def __init__(self, unsupported: bool = False):
        super().__init__("the read would block")
        self.unsupported = unsupported


# preadv2 flag: fail with EAGAIN rather than wait for the disk or the network (Linux 4.14+, local file systems; NFS,
# tmpfs and others answer EOPNOTSUPP)
RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)


class FileChanged(Exception):
    """The file was replaced between identification and reading; the next request sees the new file.

    ``reason``: "replaced" when opening finds another file than the one identified (a stale stat: routine), or
    "truncated"/"changed" when it changed in place while being read (counted in gateway_responses_aborted_total).
    """

    def __init__(self, path: str, reason: str = "replaced"):
        super().__init__(f"FileReader: '{path}' changed while being read, retry")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class FileIdentity:
    """What makes cached metadata and packaged bytes valid: the resolved file and its stat at parse time."""

    path: str  # as requested, store-relative (for messages and Track.source)
    real_path: str  # absolute realpath inside the store (for opening; never shown to clients)
    store_path: str  # realpath relative to the store root: stable across nodes that mount the store elsewhere
    size: int
    mtime_ns: int
    inode: int  # catches `rsync -t`-style replacement that keeps size and mtime
    device: int = 0  # (device, inode) names the file whatever its name: gateway.catalog.access finds hardlinks by it
    ctime_ns: int = 0  # a new name (link, rename) updates it: tells gateway.catalog.access its identity index may be stale

    @property
    def cache_key(self) -> tuple:
        return (self.real_path, self.size, self.mtime_ns, self.inode)

    @property
    def etag_key(self) -> str:
        return f"{self.store_path}:{self.size}:{self.mtime_ns}"


class Reader(Protocol):
    """What packagers and handlers read an identified file with (FileReader here, RemoteReader in remote.py).
    Blocking: executor threads only."""

    identity: FileIdentity

    def pread(self, offset: int, size: int) -> bytes: ...
    def read_all(self, requests: Sequence[ReadRequest]) -> list[bytes]: ...
    def read_scratch(self, requests: Sequence[ReadRequest], nowait: bool = False) -> Sequence: ...
    def read_scatter(self, reads: Sequence[ScatterRead], nowait: bool = False) -> None: ...
    def allocated_bytes(self) -> int | None: ...
    def __enter__(self) -> "Reader": ...
    def __exit__(self, *exc) -> None: ...


class ContentStore(Protocol):
    """The seam every media read goes through: this module's Store (a directory, NFS in production) and
    gateway.origin.remote.RemoteStore (an HTTP/S3 origin read by byte range). ``root``: a local directory (the
    store itself, or a remote store's local state directory); ``nowait_reads``: whether builds may run inline."""

    root: str
    nowait_reads: bool | None

    def identify(self, path: str) -> FileIdentity: ...
    async def identify_all(self, paths: Sequence[str], executor: Executor | None) -> tuple[FileIdentity, ...]: ...
    def open(self, identity: FileIdentity) -> Reader: ...


class Store:
    def __init__(self, root: Path | str):
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ValueError(f"store root {root} is not a directory")
        # whether the store's file system answers non-blocking reads (RWF_NOWAIT): None until the first file is
        # identified (probed then, in the executor), False for NFS and others, and once one refuses
        self.nowait_reads: bool | None = None if RWF_NOWAIT else False

    def identify(self, path: str) -> FileIdentity:
        """Resolve a store-relative path (validated by gateway.http.urls) to a regular file inside the store. Blocking."""
        missing = not_found(f"Store.identify: no such file '{path}'")
        if not path or path.startswith("/") or "\x00" in path:
            raise missing
        real = os.path.realpath(os.path.join(self.root, path))
        if os.path.commonpath([self.root, real]) != self.root or real == self.root:
            raise missing
        try:
            st = os.stat(real)
        except (OSError, ValueError):
            raise missing from None
        if not stat.S_ISREG(st.st_mode):
            raise missing
        return FileIdentity(path, real, os.path.relpath(real, self.root), st.st_size, st.st_mtime_ns, st.st_ino,
                            st.st_dev, st.st_ctime_ns)

    async def identify_all(self, paths: Sequence[str], executor: Executor | None) -> tuple[FileIdentity, ...]:
        def identify_all() -> tuple[FileIdentity, ...]:
            files = tuple(self.identify(p) for p in paths)
            if self.nowait_reads is None and files:
                self.nowait_reads = probe_nowait_reads(files[0])
            return files

        return await asyncio.get_running_loop().run_in_executor(executor, identify_all)

    @staticmethod
    def open(identity: FileIdentity) -> "FileReader":
        return FileReader(identity)

    async def read(
        self, identity: FileIdentity, requests: Sequence[ReadRequest], executor: Executor | None
    ) -> list[bytes]:
        """The bytes of ``requests`` (short at end of file), read in the executor."""

        def read_all() -> list[bytes]:
            with self.open(identity) as reader:
                return reader.read_all(requests)

        return await asyncio.get_running_loop().run_in_executor(executor, read_all)


class FileReader:
    """One open descriptor on an identified file; ``pread`` is the ``read`` callable packagers take. Blocking."""

    def __init__(self, identity: FileIdentity):
        self.identity = identity
        try:
            self.fd = os.open(identity.real_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            raise FileChanged(identity.path) from None
        st = os.fstat(self.fd)
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (identity.size, identity.mtime_ns, identity.inode):
            self.close()
            raise FileChanged(identity.path)

    def allocated_bytes(self) -> int:
        """What the file really holds on disk (st_blocks): bounds the sample bytes a sparse file may claim."""
        return os.fstat(self.fd).st_blocks * 512

    def _expected(self, offset: int, size: int) -> int:
        """What a read must return: all of it, except past the end of the file as identified."""
        return max(0, min(size, self.identity.size - offset))

    def _check_unchanged(self) -> None:
        """Raise FileChanged if the file changed in place since it was identified (one fstat)."""
        st = os.fstat(self.fd)
        if (st.st_size, st.st_mtime_ns) != (self.identity.size, self.identity.mtime_ns):
            raise FileChanged(self.identity.path, "changed")

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; shorter only past the end of the file as identified, else the file
        was truncated in place after identification: FileChanged, never short bytes that look like a corrupt file."""
        if offset < 0 or size < 0:
            raise ValueError(f"FileReader.pread: negative offset {offset} or size {size}")
        expected = self._expected(offset, size)
        chunks = []
        while size > 0:
            chunk = os.pread(self.fd, size, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            size -= len(chunk)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if len(data) < expected:
            raise FileChanged(self.identity.path, "truncated")
        return data

    def read_all(self, requests: Sequence[ReadRequest]) -> list[bytes]:
        return [self.pread(r.offset, r.size) for r in requests]

    def read_scratch(self, requests: Sequence[ReadRequest], nowait: bool = False) -> list[memoryview]:
        """``requests`` read into this thread's reusable buffer (see ``read_into_scratch``).

        A read short of the file as identified, or a size/mtime change by the time all are read, is FileChanged
        (503 and a retry) rather than a segment built from the wrong bytes; reads past the identified end stay
        short (the packager reports that file as BAD_DATA). ``nowait``: WouldBlock unless every byte is in the page
        cache (then the caller reads again in the executor, where those checks apply)."""
        views = read_into_scratch(self.fd, requests, nowait)
        if any(len(v) < self._expected(r.offset, r.size) for r, v in zip(requests, views)):
            raise FileChanged(self.identity.path, "truncated")
        self._check_unchanged()
        return views

    def read_scatter(self, reads: Sequence[ScatterRead], nowait: bool = False) -> None:
        """Each read's bytes into its pieces, one preadv per read (a TS segment's samples straight into place).

        The checks of ``read_scratch``: FileChanged when the file ends before its identified size or changed by the
        time all is read; a sample past the identified end is BAD_DATA (the file lies about its samples), as the
        gather of read bytes reports it. ``nowait``: WouldBlock unless every byte is in the page cache."""
        flags, iov, first = RWF_NOWAIT if nowait else 0, piece_iovecs(reads), 0
        for r in reads:
            got = read_pieces(self.fd, r, iov, first, flags)
            first += len(r.at)
            if got < r.size:
                if nowait:
                    raise WouldBlock()
                if got < self._expected(r.offset, r.size):
                    raise FileChanged(self.identity.path, "truncated")
                raise bad_data(f"read_scatter: a sample ends at byte {r.offset + r.size} of a file of "
                               f"{self.identity.size} bytes (file truncated?)")
        self._check_unchanged()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "FileReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Scratch(threading.local):
    buffer = bytearray()


_scratch = _Scratch()
# What a thread keeps between builds: reads up to this size reuse its buffer (a 6-s segment up to ~5 Mbit/s); a
# bigger read gets a buffer of its own, freed with the build (malloc reuses its memory: gateway/ops/allocator.py).
# A worker thus keeps at most (io_threads + 1) x SCRATCH_KEEP of read buffers (docs/performance.md, memory).
SCRATCH_KEEP = 4 * 1024 * 1024


def read_into_scratch(fd: int, requests: Sequence[ReadRequest], nowait: bool = False) -> list[memoryview]:
    """Read ``requests`` into one buffer reused by this thread; views are valid until the thread's next call.

    A segment build reads, gathers and muxes in one job on one thread, so its reads need not outlive it. A fresh
    multi-megabyte ``bytes`` per read costs a page fault per 4 KB, which on this class of VM measured 4-5x slower
    than the copies themselves (gateway bench). Short only at end of file. ``nowait``: each read either comes
    whole from the page cache or raises WouldBlock (a partial read too: it may be a truncated file, and the
    executor's blocking read tells the two apart).
    """
    total = sum(r.size for r in requests)
    if total > SCRATCH_KEEP:
        buffer = np.empty(total, dtype=np.uint8)  # not zeroed: every byte is read into before it is used
    else:
        if len(_scratch.buffer) < total:
            _scratch.buffer = bytearray(min(max(total, 2 * len(_scratch.buffer), 1 << 20), SCRATCH_KEEP))
        buffer = _scratch.buffer
    view = memoryview(buffer)
    out, pos = [], 0
    for r in requests:
        got = 0
        if nowait and r.size:
            got = _read_nowait(fd, view[pos : pos + r.size], r.offset)
        while got < r.size:
            n = os.preadv(fd, [view[pos + got : pos + r.size]], r.offset + got)
            if n == 0:
                break
            got += n
        out.append(view[pos : pos + got])
        pos += r.size
    return out


def probe_nowait_reads(identity: FileIdentity) -> bool:
    """Whether the file system of ``identity`` answers non-blocking reads (one byte, RWF_NOWAIT). Blocking."""
    try:
        fd = os.open(identity.real_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        _read_nowait(fd, memoryview(bytearray(1)), 0)
    except WouldBlock as e:
        return not e.unsupported
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _read_nowait(fd: int, into: memoryview, offset: int) -> int:
    n = _checked(lambda: os.preadv(fd, [into], offset, RWF_NOWAIT), True)
    if n < len(into):
        raise WouldBlock()
    return n


_SKIPPED = bytearray(SKIP_LIMIT)  # where the bytes between samples go: shared, never looked at
_SKIPPED_AT = np.frombuffer(_SKIPPED, dtype=np.uint8).__array_interface__["data"][0]
_libc = ctypes.CDLL(None, use_errno=True)
_preadv2 = getattr(_libc, "preadv2", None)  # glibc >= 2.26
if _preadv2 is not None:
    _preadv2.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_int]
    _preadv2.restype = ctypes.c_ssize_t


def piece_iovecs(reads: Sequence[ScatterRead]) -> np.ndarray | None:
    """The iovec array (base, length) of every piece of ``reads``, after checking that each lies inside its buffer;
    built with numpy: a TS segment has a piece per sample, and ~400 views would cost more than the read. None
    without glibc's preadv2 (the pieces are then read as views with ``os.preadv``)."""
    iov = []
    for r in reads:
        at, lengths = r.at, r.lengths
        if not len(at):
            iov.append(np.zeros((0, 2), dtype=np.int64))
            continue
        into = np.frombuffer(r.into, dtype=np.uint8)
        mine = None if int(at.min()) >= 0 else at >= 0
        ends = at + lengths
        if len(at) > MAX_PIECES_PER_READ:
            raise ValueError(f"read_scatter: {len(at)} pieces in one read, more than preadv takes")
        if int(lengths.min()) < 0 or int((ends if mine is None else ends[mine]).max(initial=0)) > len(into) or (
                mine is not None and int(lengths[~mine].max()) > len(_SKIPPED)):
            raise ValueError("read_scatter: a piece lies outside its buffer")
        if _preadv2 is None:
            continue
        piece = np.empty((len(at), 2), dtype=np.int64)
        np.add(at, into.__array_interface__["data"][0], out=piece[:, 0])
        piece[:, 1] = lengths
        if mine is not None:
            piece[~mine, 0] = _SKIPPED_AT
        iov.append(piece)
    if _preadv2 is None:
        return None
    return iov[0] if len(iov) == 1 else np.concatenate(iov)


def read_pieces(fd: int, r: ScatterRead, iov: np.ndarray | None, first: int, flags: int) -> int:
    """preadv2 of ``r`` (its pieces are ``iov[first:]``) until they are full or the file ends; the bytes read.
    ``flags`` RWF_NOWAIT: WouldBlock instead of waiting for the disk."""
    if iov is None:
        buffers = r.buffers(memoryview(_SKIPPED))
        return _checked(lambda: os.preadv(fd, buffers, r.offset, *((flags,) if flags else ())), bool(flags))
    iov = iov[first : first + len(r.at)]
    got = 0
    while True:
        n = _checked(lambda: _call_preadv2(fd, iov, r.offset + got, flags), bool(flags))
        got += n
        if n == 0 or got >= r.size or flags:
            return got
        ends = np.cumsum(iov[:, 1])  # a short read before the end of the file: go on from where it stopped
        i = int(np.searchsorted(ends, n, side="right"))
        iov = iov[i:].copy()
        done = n - (int(ends[i - 1]) if i else 0)
        iov[0, 0] += done
        iov[0, 1] -= done


def _call_preadv2(fd: int, iov: np.ndarray, offset: int, flags: int) -> int:
    n = _preadv2(fd, iov.__array_interface__["data"][0], len(iov), offset, flags)
    if n < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return n


def _checked(read: Callable[[], int], nowait: bool) -> int:
    """``read()``; for a non-blocking read, the errors that mean "not now" or "not here" as WouldBlock."""
    try:
        return read()
    except BlockingIOError:
        if not nowait:
            raise
        raise WouldBlock() from None
    except OSError as e:
        if nowait and e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # EINVAL: kernels before the flag existed
            raise WouldBlock(unsupported=True) from None
        raise


def parse_presentation(store: Store, file: FileIdentity, limits: Limits | None = None) -> Presentation:
    """Read the moov of one file (box headers and moov only). Blocking. The allocated size of the open file bounds
    the sample bytes it may claim (a sparse file cannot promise bytes it does not hold)."""
    with store.open(file) as reader:
        allocated = reader.allocated_bytes()
        return read_presentation(reader.pread, file.size, file.path, limits=limits or Limits(),
                                 allocated_bytes=allocated)
