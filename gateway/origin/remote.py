"""A content store behind an HTTP origin (``http(s)://host[:port]/prefix``) read by byte range.

The same seam as the local ``Store`` (``identify_all`` / ``identify`` / ``open`` → a reader with ``pread``,
``read_all``, ``read_scratch``, ``read_scatter``), so handlers and packagers do not know where bytes come from:
- identify: a HEAD (single flight, cached ``ttl`` seconds) gives size, ETag and Last-Modified; the identity's
  cache key holds the validator, so a replaced object gets a new moov parse and new cache entries;
- reads: one ranged GET per coalesced ``ReadRequest`` (a segment's run concurrently), each with ``If-Match`` so a
  replacement between the HEAD and the read is a 412 → FileChanged (503 + retry), never a mix of two files;
- small reads (box headers while looking for the moov) fetch a window of ``WINDOW`` bytes: the head of the file,
  and the tail when the moov is at the end, rather than one GET per 16-byte header.

Packagers and handlers call the reader from executor threads; the requests run on the event loop that owns the
pooled session (``asyncio.run_coroutine_threadsafe``). Calling a blocking method on the loop thread would deadlock
it: that is asserted.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import os
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import quote

import numpy as np

from packagers.errors import bad_data, not_found
from packagers.media_data import MAX_PIECES_PER_READ, ReadRequest, ScatterRead

from . import landing as landing_module
from .landing import Landing
from .origin_client import (OriginChanged, OriginClient, OriginError, OriginInfo, OriginNotFound, OriginOptions,
                            Signer, joined)
from .store import SCRATCH_KEEP, ContentStore, FileChanged, FileIdentity, Store, piece_iovecs, read_pieces

WINDOW = 64 * 1024  # what a small read fetches: box headers, an ftyp + small moov, a 64 KB key-frame probe
MAX_IDENTITIES = 4096  # identities kept for the TTL (oldest dropped first)


@dataclass(frozen=True)
class RemoteIdentity(FileIdentity):
    """A FileIdentity of an origin object: ``real_path`` is its URL (never shown to clients), ``validator`` its
    ETag (or Last-Modified when it has none) at HEAD time."""

    info: OriginInfo | None = None

    @property
    def cache_key(self) -> tuple:
        return (self.real_path, self.size, self.info.etag, self.info.last_modified)

    @property
    def etag_key(self) -> str:
        return f"{self.store_path}:{self.size}:{self.info.etag or self.mtime_ns}"


class RemoteStore:
    """Media read by byte range from an HTTP origin. ``root`` is the local state directory (live output,
    recordings, the default catalog place): origin URLs never stand where a local path is expected."""

    nowait_reads = False  # every read is a network round trip: segments are always built in the executor
    is_remote = True

    def __init__(self, base_url: str, *, root: str = "", signer: Signer | None = None,
                 options: OriginOptions | None = None, ttl: float = 2.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"RemoteStore: {base_url!r} is not an http(s) URL")
        self.client = OriginClient(base_url, options, signer)
        self.base_url = self.client.base_url
        self.root = root
        self.ttl = ttl
        self._identities: dict[str, tuple[float, RemoteIdentity]] = {}
        self._identifying: dict[str, asyncio.Future] = {}  # the HEAD in flight per path (single flight)
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- identify ---------------------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        """The object URL of a store-relative path: validated as the local store does, then percent-encoded, so
        nothing outside the prefix can be named (no ``..``, no absolute path, no NUL, no query)."""
        missing = not_found(f"Store.identify: no such file '{path}'")
        if not path or path.startswith("/") or "\x00" in path or "\\" in path:
            raise missing
        parts = path.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise missing
        return self.base_url + "/".join(quote(p, safe="") for p in parts)

    async def identify_async(self, path: str) -> RemoteIdentity:
        """The kept identity, else one HEAD shared by every concurrent caller. The identity is kept by the shared
        task itself, in the step that ends it, so that a caller arriving at any moment finds either the HEAD in
        flight or its identity kept: had each caller kept it after its own wake-up (one loop step after the HEAD's
        single flight ends), one arriving in that step would send a second HEAD."""
        self._bind_loop()
        url = self.url(path)
        kept = self._identities.get(path)
        if kept is not None and kept[0] > time.monotonic():
            return kept[1]
        task = self._identifying.get(path)
        if task is None:
            task = self._identifying[path] = asyncio.ensure_future(self._identify(path, url))
            task.add_done_callback(functools.partial(self._identified, path))
        return await asyncio.shield(task)  # a caller that goes away does not cancel the others' HEAD

    async def _identify(self, path: str, url: str) -> RemoteIdentity:
        now = time.monotonic()
        try:
            info = await self.client.head(url)
        except OriginNotFound:
            raise not_found(f"Store.identify: no such file '{path}'") from None
        identity = RemoteIdentity(path, url, path, info.size, info.mtime_ns, 0, info=info)
        if self.ttl > 0:
            if len(self._identities) >= MAX_IDENTITIES:
                self._identities.pop(next(iter(self._identities)))
            self._identities[path] = (now + self.ttl, identity)
        return identity

    def _identified(self, path: str, task: asyncio.Future) -> None:
        if self._identifying.get(path) is task:
            del self._identifying[path]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every caller went away

    async def identify_all(self, paths: Sequence[str], executor: Executor | None = None) -> tuple[RemoteIdentity, ...]:
        """On the loop: the HEADs of a url set run concurrently; nothing blocks, so no executor hop."""
        return tuple(await asyncio.gather(*(self.identify_async(p) for p in paths)))

    def identify(self, path: str) -> RemoteIdentity:
        """Blocking (executor threads only)."""
        return self._call(self.identify_async(path))

    def forget(self, path: str) -> None:
        self._identities.pop(path, None)

    # --- read ---------------------------------------------------------------------------------------------------
    def open(self, identity: FileIdentity) -> "RemoteReader":
        return RemoteReader(self, identity)

    async def read_ranges(self, identity: RemoteIdentity, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """[start, stop) ranges of ``identity`` (clipped to its size), fetched concurrently; FileChanged when the
        object is not the identified one any more (or came back short)."""
        return [joined(chunks) for chunks in await self.read_chunks(identity, ranges)]

    async def read_chunks(self, identity: RemoteIdentity, ranges: Sequence[tuple[int, int]],
                          landings: Sequence[Landing | None] = ()) -> list[tuple[bytes, ...] | None]:
        """``read_ranges``, each range as the chunks it arrived in (not joined); None for a range that was read
        straight into its landing's pieces (``landings``: one per range, or none)."""
        self._bind_loop()
        landings = landings or [None] * len(ranges)
        try:
            return list(await asyncio.gather(*(self.client.get_range_chunks(identity.real_path, identity.info, a,
                                                                            min(b, identity.size), landing)
                                               for (a, b), landing in zip(ranges, landings))))
        except OriginChanged as e:
            self.forget(identity.path)
            raise FileChanged(identity.path, e.reason) from None
        except OriginNotFound:
            self.forget(identity.path)
            raise FileChanged(identity.path, "replaced") from None  # gone since the HEAD: the retry says 404

    async def read(self, identity: FileIdentity, requests: Sequence[ReadRequest],
                   executor: Executor | None = None) -> list[bytes]:
        return await self.read_ranges(identity, [(r.offset, r.offset + r.size) for r in requests])

    # --- health and lifetime ----------------------------------------------------------------------------------
    async def probe(self, ready_file: str | None = None) -> str | None:
        """None when the origin answers (any status below 500 for the prefix, the file itself for ``ready_file``)."""
        self._bind_loop()
        if ready_file:
            try:
                identity = await self.identify_async(ready_file)
                await self.read_ranges(identity, [(0, 1)])
            except (OriginError, FileChanged) as e:
                return str(e)
            except Exception as e:  # NOT_FOUND of the ready file
                return f"ready file: {getattr(e, 'message', e)}"
            return None
        return await self.client.probe(self.base_url)

    def stats(self) -> dict:
        return self.client.stats()

    async def aclose(self) -> None:
        await self.client.close()

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None or self._loop.is_closed():
            self._loop = loop

    def _call(self, coro):
        """Run ``coro`` on the store's loop from an executor thread and wait (bounded) for it."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("RemoteStore: no event loop bound yet (identify_all runs first, on the loop)")
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:  # no loop runs in this thread: an executor thread, as it should be
            on_loop = False
        if on_loop:
            coro.close()
            raise AssertionError("RemoteStore: a blocking read on the event loop thread would deadlock it")
        try:
            return asyncio.run_coroutine_threadsafe(coro, loop).result(self.client.options.worst_case())
        except TimeoutError:
            raise OriginError(504, f"origin {self.client.name} did not answer in time") from None


class RemoteReader:
    """The blocking reader of one identified object; bytes come from ranged GETs (executor threads only)."""

    def __init__(self, store: RemoteStore, identity: FileIdentity):
        self.store = store
        self.identity = identity
        self._window: tuple[int, bytes] | None = None  # the last small read's window: (offset, bytes)

    def allocated_bytes(self) -> int | None:
        return None  # an object store has no sparse files: the size bounds the samples

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (short only past the identified end). Small reads come from a window
        of WINDOW bytes fetched once."""
        if offset < 0 or size < 0:
            raise ValueError(f"RemoteReader.pread: negative offset {offset} or size {size}")
        stop = min(offset + size, self.identity.size)
        if stop <= offset:
            return b""
        window = self._window
        if window is not None and window[0] <= offset and stop <= window[0] + len(window[1]):
            return window[1][offset - window[0]: stop - window[0]]
        if size >= WINDOW:
            return self._ranges([(offset, stop)])[0]
        data = self._ranges([(offset, min(offset + WINDOW, self.identity.size))])[0]
        self._window = (offset, data)
        return data[: stop - offset]

    def read_all(self, requests: Sequence[ReadRequest]) -> list[bytes]:
        return self._ranges([(r.offset, r.offset + r.size) for r in requests])

    def read_scratch(self, requests: Sequence[ReadRequest], nowait: bool = False) -> list[memoryview]:
        ranges = [(r.offset, r.offset + r.size) for r in requests]
        chunks = self.store._call(self.store.read_chunks(self.identity, ranges))
        return [memoryview(joined(parts)) for parts in chunks]  # one buffer a range from the range pool: no copy

    def read_scatter(self, reads: Sequence[ScatterRead], nowait: bool = False) -> None:
        """Each read's bytes into its pieces, as the local reader does. From a plain http:// origin each range's
        body is read (readv) straight into the muxer's layout by the range pool (gateway/origin/landing.py: one
        copy, as preadv2 from a file); otherwise one process_vm_readv per read copies the fetched range there (the
        kernel walks the pieces: no Python loop per sample); where a sandbox refuses that call, the range goes
        through this thread's memory file and preadv2. A sample past the identified end is BAD_DATA, as locally."""
        ranges = [(r.offset, r.offset + r.size) for r in reads]
        iov = piece_iovecs(reads)
        landings = scatter_landings(iov, reads)
        try:
            chunks = self.store._call(self.store.read_chunks(self.identity, ranges, landings))
        finally:
            disarm(landings)
        if landed_or_copied(self.identity, iov, reads, chunks):
            return
        if any(parts is None for parts in chunks):  # a landed range, then the copy refused: read them again
            chunks = self.store._call(self.store.read_chunks(self.identity, ranges))
        fd, at, local = _memory_file(), 0, []
        for r, parts in zip(reads, chunks):
            _write_all(fd, joined(parts), at)
            local.append(ScatterRead(at, r.size, r.into, r.at, r.lengths))
            at += r.size
        try:
            iov, first = piece_iovecs(local), 0
            for r in local:
                if read_pieces(fd, r, iov, first, 0) < r.size:
                    raise OSError("read_scatter: the memory file came back short")
                first += len(r.at)
        finally:
            if at > SCRATCH_KEEP:
                os.ftruncate(fd, 0)  # a thread keeps at most SCRATCH_KEEP of it, as with its read buffer

    def _ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        return self.store._call(self.store.read_ranges(self.identity, ranges))

    def close(self) -> None:
        pass

    def __enter__(self) -> "RemoteReader":
        return self

    def __exit__(self, *exc) -> None:
        pass


_libc = ctypes.CDLL(None, use_errno=True)
_vm_readv = getattr(_libc, "process_vm_readv", None)  # glibc >= 2.15, Linux >= 3.2
if _vm_readv is not None:
    _vm_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                          ctypes.c_ulong]
    _vm_readv.restype = ctypes.c_ssize_t
_vm_copies = [_vm_readv is not None]  # turned off for the process when a sandbox (seccomp) refuses the call


def copy_into_pieces(iov: np.ndarray, reads: Sequence[ScatterRead], chunks: list[tuple[bytes, ...]]) -> bool:
    """Copy each read's bytes (the chunks they arrived in) into its pieces (``iov``: the (base, length) rows of
    every read's pieces, in order) with process_vm_readv on this very process: the kernel walks both lists, so the
    bytes are copied once, straight from the socket's buffers into the segment. False, having copied nothing
    reliable, when the call is refused."""
    if not _vm_copies[0]:
        return False
    first, pid = 0, os.getpid()
    for r, parts in zip(reads, chunks):
        rows = iov[first: first + len(r.at)]
        first += len(r.at)
        if parts is None:  # landed already
            continue
        if len(parts) > MAX_PIECES_PER_READ:  # more chunks than one call takes: one source
            parts = (joined(parts),)
        source = np.array([(np.frombuffer(p, dtype=np.uint8).__array_interface__["data"][0], len(p))
                           for p in parts], dtype=np.int64)  # a few chunks per range, not per sample
        n = _vm_readv(pid, rows.__array_interface__["data"][0], len(rows), source.__array_interface__["data"][0],
                      len(source), 0)
        if n < 0:
            code = ctypes.get_errno()
            if code in (errno.EPERM, errno.ENOSYS, errno.EACCES):
                _vm_copies[0] = False
                return False
            raise OSError(code, os.strerror(code))
        if n != r.size:
            raise OSError(f"read_scatter: process_vm_readv copied {n} of {r.size} bytes")
    return True


# GATEWAY_ORIGIN_LAND=0: scatter reads take the fetched bytes and copy them (bench comparisons)
LAND = landing_module.available() and os.environ.get("GATEWAY_ORIGIN_LAND", "1") != "0"


def scatter_landings(iov: np.ndarray | None, reads: Sequence[ScatterRead]) -> list[Landing | None]:
    """Where each read's range may land straight from the socket (none where that cannot be done)."""
    return _landings(iov, reads) if iov is not None and _vm_copies[0] and LAND else []


def disarm(landings: Sequence[Landing | None]) -> None:
    """From here on nothing writes into the pieces, whatever became of the reads."""
    for landing in landings:
        if landing is not None:
            landing.disarm()


def landed_or_copied(identity: FileIdentity, iov: np.ndarray | None, reads: Sequence[ScatterRead],
                     chunks: Sequence[tuple[bytes, ...] | None]) -> bool:
    """True when every read's bytes are in its pieces: landed (None) or now copied there by process_vm_readv.
    BAD_DATA for a read past the end of the object."""
    if all(parts is None for parts in chunks):
        return True  # every range read straight into its pieces: one copy, as from a local file
    for r, parts in zip(reads, chunks):
        if parts is not None and sum(map(len, parts)) < r.size:
            raise bad_data(f"read_scatter: a sample ends at byte {r.offset + r.size} of a file of "
                           f"{identity.size} bytes (file truncated?)")
    return iov is not None and copy_into_pieces(iov, reads, chunks)


def _landings(iov: np.ndarray, reads: Sequence[ScatterRead]) -> list[Landing | None]:
    """One Landing per read: its rows of ``iov`` (the pool reads the range's body straight into them)."""
    out, first = [], 0
    for r in reads:
        rows = iov[first: first + len(r.at)]
        first += len(r.at)
        out.append(Landing(rows, r.offset, r.size) if len(rows) and int(rows[:, 1].sum()) == r.size else None)
    return out


class _MemoryFile(threading.local):
    fd = -1


_memory = _MemoryFile()


def _memory_file() -> int:
    """This thread's anonymous memory file (one per executor thread, kept for its life)."""
    if _memory.fd < 0:
        _memory.fd = os.memfd_create("gateway-remote-scatter", os.MFD_CLOEXEC)
    return _memory.fd


def _write_all(fd: int, data: bytes, at: int) -> None:
    view, done = memoryview(data), 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], at + done)


def make_store(settings) -> ContentStore:
    """The store ``settings`` name: the local directory, or an origin (``settings.origin``) read by range; with
    ``settings.fallback_store``, paired with that store (gateway/origin/fallback.py)."""
    origin = getattr(settings, "origin", None)
    primary = _one_store(origin, settings) if origin else Store(settings.store)
    fallback = getattr(settings, "fallback_store", None)
    if not fallback:
        return primary
    from .fallback import FallbackStore

    if "://" not in fallback:
        return FallbackStore(primary, Store(fallback))
    store = _one_store(fallback, settings)
    c = store.client  # a fallback origin's requests carry the loop-guard header
    store.client = OriginClient(c.base_url, c.options, c.signer, fallback=True)
    return FallbackStore(primary, store)


def _one_store(origin: str, settings) -> "RemoteStore":
    options = OriginOptions(connect_timeout=settings.origin_connect_timeout, timeout=settings.origin_timeout,
                            connections=settings.origin_connections, tries=settings.origin_tries)
    root = str(settings.store)
    if origin.startswith("s3://"):
        from . import s3  # gateway/origin/s3.py: the bucket URL and the botocore signer

        base_url, signer = s3.origin_for(origin, settings)
        return RemoteStore(base_url, root=root, signer=signer, options=options, ttl=settings.origin_identity_ttl)
    return RemoteStore(origin, root=root, options=options, ttl=settings.origin_identity_ttl)
