"""A new ``bytes`` not filled yet, for a body received straight into it (gateway/origin/range_protocol.py, landing.py).

CPython-specific (its C API and the layout of a bytes object); tests/origin/test_range_protocol.py fails if that
layout changes.
"""
from __future__ import annotations

import ctypes

# A body is received into a new, not yet filled ``bytes`` (the C API's PyBytes_FromStringAndSize(NULL, n), as C
# code fills one before anyone sees it): callers get the same type as from aiohttp, and no 1.5 MB zero-fill
# precedes the recv (bytearray(n) is calloc: a memset of heap memory on every range).
_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
_BYTES_DATA = bytes.__basicsize__ - 1  # offset of ob_sval (the basic size counts its trailing NUL)


def unfilled(n: int) -> tuple[bytes, memoryview]:
    """A new ``bytes`` of ``n`` bytes and a writable view of them, to be filled before the bytes are shared."""
    if n == 0:
        return b"", memoryview(bytearray())
    body = _new_bytes(None, n)
    return body, memoryview((ctypes.c_ubyte * n).from_address(id(body) + _BYTES_DATA)).cast("B")
