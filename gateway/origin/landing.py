"""Where a scatter read's range lands: the range pool reads the body of its GET (``readv``) straight into the
muxer's pieces, one copy out of the kernel as ``preadv2`` makes from a local file, instead of into a buffer that
``process_vm_readv`` then scatters (a second copy, and the pinning of every source page).

A ``Landing`` belongs to the executor thread whose segment build owns the pieces. It is written on the event loop,
always under its lock and only while ``armed``: the thread disarms it (taking the lock, so no write is under way)
before its pieces can be released or reused, whatever became of the request.
"""
from __future__ import annotations

import ctypes
import errno
import os
import threading

import numpy as np

from .store import _SKIPPED_AT

IOV_MAX = 1024

_libc = ctypes.CDLL(None, use_errno=True)
_readv = _libc.readv
_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_readv.restype = ctypes.c_ssize_t
_vm_readv = getattr(_libc, "process_vm_readv", None)
if _vm_readv is not None:
    _vm_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                          ctypes.c_ulong]
    _vm_readv.restype = ctypes.c_ssize_t


class Disarmed(Exception):
    """The thread that owns the pieces gave up on them: nothing may be written any more."""


class Landing:
    """Bytes [start, start + size) of a file, to land in the pieces ``rows`` (an (n, 2) int64 array of iovecs:
    address, length)."""

    def __init__(self, rows: np.ndarray, start: int, size: int):
        rows = np.array(rows, dtype=np.int64)
        skipped = rows[:, 0] == _SKIPPED_AT
        if skipped.any():  # bytes between samples: this landing's own, so that a shared copy of the range is exact
            lengths = rows[skipped, 1]
            self._gaps = np.empty(int(lengths.sum()), dtype=np.uint8)
            rows[skipped, 0] = self._gaps.__array_interface__["data"][0] + np.cumsum(lengths) - lengths
        if len(rows) > IOV_MAX or int(rows[:, 1].sum()) != size:
            raise ValueError(f"Landing: {len(rows)} pieces of {int(rows[:, 1].sum())} bytes for a range of {size}")
        self.rows, self.start, self.size = rows, start, size
        self.lock = threading.Lock()
        self.armed = True
        self.reset()

    def reset(self) -> None:
        """Back to the first byte (a new attempt writes the range again from its start)."""
        self._work = self.rows.copy()
        self._first = 0
        self.filled = 0

    def disarm(self) -> None:
        with self.lock:
            self.armed = False

    def put(self, address: int, n: int) -> None:
        """The next ``n`` bytes from memory at ``address`` (body bytes that came with the answer's head: at most a
        head read's worth, so a piece or two): copied piece by piece (memmove: 2 µs where process_vm_readv and its
        bookkeeping took ~60)."""
        with self.lock:
            if not self.armed:
                raise Disarmed()
            if n > self.size - self.filled:
                raise OSError(errno.EOVERFLOW, f"Landing.put: {n} bytes for the {self.size - self.filled} left")
            work, i, left = self._work, self._first, n
            while left:
                to, room = int(work[i, 0]), int(work[i, 1])
                if room > left:  # the last piece touched is filled in part: it goes on after these bytes
                    ctypes.memmove(to, address, left)
                    work[i, 0], work[i, 1] = to + left, room - left
                    break
                ctypes.memmove(to, address, room)
                address, left, i = address + room, left - room, i + 1
            self._first, self.filled = i, self.filled + n

    def readv(self, fd: int) -> int:
        """One ``readv`` of the socket ``fd`` into the next pieces: bytes read, 0 at end of file, -errno."""
        with self.lock:
            if not self.armed:
                raise Disarmed()
            rows = self._work[self._first:]
            n = _readv(fd, rows.__array_interface__["data"][0], len(rows))
            if n < 0:
                return -ctypes.get_errno()
            if n:
                self._advance(n)
            return n

    def gather(self) -> bytes:
        """The landed range as bytes (for callers that shared this request); copied before the thread goes on."""
        from .unfilled import _BYTES_DATA, unfilled  # the same not-yet-filled bytes as a received body

        with self.lock:
            if not self.armed:
                raise Disarmed()
            out, view = unfilled(self.size)
            view.release()
            target = np.array([(id(out) + _BYTES_DATA, self.size)], dtype=np.int64)
            got = _vm_readv(os.getpid(), target.__array_interface__["data"][0], 1,
                            self.rows.__array_interface__["data"][0], len(self.rows), 0)
            if got != self.size:
                raise OSError(ctypes.get_errno(), f"Landing.gather: copied {got} of {self.size} bytes")
            return out

    def _advance(self, n: int) -> None:
        self.filled += n
        if self.filled >= self.size:
            self._first = len(self._work)
            return
        lengths = self._work[self._first:, 1]
        ends = np.cumsum(lengths)
        whole = int(np.searchsorted(ends, n, side="right"))  # pieces filled entirely
        self._first += whole
        into = n - (int(ends[whole - 1]) if whole else 0)
        self._work[self._first, 0] += into
        self._work[self._first, 1] -= into


def available() -> bool:
    return _vm_readv is not None
