"""Walking ISO BMFF boxes (ISO/IEC 14496-12 §4.2) inside an in-memory buffer, never trusting a size field.

The header itself is read by ``packagers.codecs.box`` (``parse_header`` -> ``Box``, where a box lies in its buffer;
re-exported here for the demuxer's modules); ``Fields`` reads a box payload field by field and turns every overrun
into ``PackagerError(BAD_DATA)``, so corrupt input can never surface as ``struct.error`` or ``IndexError``.
"""
from __future__ import annotations

import struct
from typing import Iterator

import numpy as np

from ..codecs.box import Box, parse_header, split_full_box_fields
from ..errors import bad_data

__all__ = ["Box", "Fields", "children", "iter_boxes", "parse_header"]

_U8, _U16, _U32, _U64 = (struct.Struct(f) for f in (">B", ">H", ">I", ">Q"))
_I16, _I32, _I64 = (struct.Struct(f) for f in (">h", ">i", ">q"))


def iter_boxes(buf: bytes, start: int, end: int, where: str) -> Iterator[Box]:
    """The child boxes laid out in ``buf[start:end]``. Fewer than 8 trailing bytes (a QuickTime terminator) are
    ignored."""
    pos = start
    while end - pos >= 8:
        box = parse_header(buf[pos : min(pos + 16, end)], pos, end, where)
        yield box
        pos = box.end


def children(buf: bytes, parent: Box, where: str, skip: int = 0) -> dict[str, Box]:
    """First child of each type (``skip`` bytes of the parent's own fields come before the children)."""
    found: dict[str, Box] = {}
    for box in iter_boxes(buf, parent.payload_start + skip, parent.end, where):
        found.setdefault(box.type, box)
    return found


class Fields:
    """A cursor over one box payload; reads past the payload raise BAD_DATA naming ``func`` and ``where``."""

    __slots__ = ("buf", "pos", "end", "func", "where")

    def __init__(self, buf: bytes, box: Box, func: str, where: str, skip: int = 0):
        self.buf, self.pos, self.end = buf, box.payload_start + skip, box.end
        self.func, self.where = func, where

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def _take(self, n: int) -> int:
        if n < 0 or self.pos + n > self.end:
            raise bad_data(f"{self.func}: box truncated in {self.where}")
        pos = self.pos
        self.pos += n
        return pos

    def skip(self, n: int) -> None:
        self._take(n)

    def bytes(self, n: int) -> bytes:
        pos = self._take(n)
        return bytes(self.buf[pos : pos + n])

    def u8(self) -> int:
        return _U8.unpack_from(self.buf, self._take(1))[0]

    def u16(self) -> int:
        return _U16.unpack_from(self.buf, self._take(2))[0]

    def u32(self) -> int:
        return _U32.unpack_from(self.buf, self._take(4))[0]

    def u64(self) -> int:
        return _U64.unpack_from(self.buf, self._take(8))[0]

    def i16(self) -> int:
        return _I16.unpack_from(self.buf, self._take(2))[0]

    def i32(self) -> int:
        return _I32.unpack_from(self.buf, self._take(4))[0]

    def i64(self) -> int:
        return _I64.unpack_from(self.buf, self._take(8))[0]

    def full_box(self) -> tuple[int, int]:
        """FullBox (§4.2): version(8) flags(24)."""
        return split_full_box_fields(self.u32())

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        """``count`` big-endian items, after checking that the payload really holds them (a lying count field must
        not make us allocate). Returns a native-endian copy."""
        item = np.dtype(dtype).itemsize
        if count > self.remaining // item:
            raise bad_data(f"{self.func}: {what} count {count} exceeds the box size in {self.where}")
        pos = self._take(count * item)
        return np.frombuffer(self.buf, dtype, count, pos).astype(np.dtype(dtype).newbyteorder("="))
