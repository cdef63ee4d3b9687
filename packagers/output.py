"""A segment's ``bytes`` filled in place: the muxer's last pass writes the very object that is cached and sent.

Filling a numpy buffer and then calling ``tobytes()`` copies every segment once more (~0.1 ms per 1.6 MB TS segment,
one of its few full passes over memory). CPython can allocate a ``bytes`` object whose contents are not yet set
(``PyBytes_FromStringAndSize(NULL, n)``, what C extensions use to build their results); the muxer writes it through
a numpy view before anyone else holds a reference, and never after. Elsewhere than CPython: a bytearray and one copy.
"""
from __future__ import annotations

import ctypes
import platform
from typing import Callable

import numpy as np

__all__ = ["finished", "new_bytes"]


def _cpython_new_bytes() -> Callable[[int], tuple[bytes, np.ndarray]] | None:
    if platform.python_implementation() != "CPython":
        return None
    allocate = ctypes.pythonapi.PyBytes_FromStringAndSize
    allocate.argtypes, allocate.restype = (ctypes.c_void_p, ctypes.c_ssize_t), ctypes.py_object
    data_offset = bytes.__basicsize__ - 1  # ob_sval: the bytes start where the fixed part's last field begins

    def new_bytes(size: int) -> tuple[bytes, np.ndarray]:
        body = allocate(None, size)
        # a view through the array interface: a ctypes array type per size would cost ~8 us a segment
        raw = _RawMemory()
        raw.__array_interface__ = {"data": (id(body) + data_offset, False), "shape": (size,), "typestr": "|u1",
                                   "version": 3}
        return body, np.asarray(raw)

    probe, view = new_bytes(3)
    view[:] = (1, 2, 3)
    return new_bytes if probe == b"\x01\x02\x03" else None


class _RawMemory:
    """Memory numpy may view: it holds no reference to the owner (the caller keeps ``body`` alive)."""

    __slots__ = ("__array_interface__",)


def _portable_new_bytes(size: int) -> tuple[bytearray, np.ndarray]:
    body = bytearray(size)
    return body, np.frombuffer(body, dtype=np.uint8)


_new_bytes = _cpython_new_bytes()


def new_bytes(size: int) -> tuple[bytes | bytearray, np.ndarray]:
    """``(body, view)``: ``body`` (``size`` bytes, contents unset) and a writable uint8 view of it. Write ``view``
    completely, drop it, then hand out ``finished(body)``; the view must not outlive the function that asked."""
    if size == 0 or _new_bytes is None:
        return _portable_new_bytes(size)
    return _new_bytes(size)


def finished(body: bytes | bytearray) -> bytes:
    """The ``bytes`` of a body from ``new_bytes`` once written (the same object on CPython)."""
    return body if isinstance(body, bytes) else bytes(body)
