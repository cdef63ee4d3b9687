"""The ISO BMFF box header (ISO/IEC 14496-12 §4.2), read and written in one place.

A box is ``size(32) type(32) [largesize(64) if size == 1] payload``; ``size == 0`` means "to the end of the enclosing
space". A FullBox adds ``version(8) flags(24)`` before its payload. Writers (fMP4 init and fragments, the MP4
writer, HDS bootstrap and fragments) and readers (the MP4 demuxer's box walk, the HDS bootstrap reader) use these;
walking children and reading payload fields stays with the MP4 demuxer (``packagers.mp4.boxes``).

Headers are packed with ``struct`` (init boxes are a few hundred bytes; per-sample tables are numpy in the callers).
A writer picks the compact 32-bit size whenever it fits and a 64-bit largesize only when the box would not.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import bad_data

HEADER = struct.Struct(">I4s")  # compact header: size, type
_FULL = struct.Struct(">I4sI")  # compact header + version/flags word
_LARGE = struct.Struct(">I4sQ")  # size 1, type, largesize
_U64 = struct.Struct(">Q")
_U32_MAX = 0xFFFFFFFF
HEADER_SIZE, LARGE_HEADER_SIZE, FULL_BOX_FIELDS_SIZE = 8, 16, 4


# -- writing ---------------------------------------------------------------------------------------------------------
def box_header(fourcc: bytes, payload_size: int) -> bytes:
    """The header of a box of ``payload_size`` bytes; a 64-bit largesize when the box would not fit 32 bits."""
    if payload_size + HEADER_SIZE <= _U32_MAX:
        return HEADER.pack(payload_size + HEADER_SIZE, fourcc)
    return _LARGE.pack(1, fourcc, payload_size + LARGE_HEADER_SIZE)


def box_header_size(payload_size: int) -> int:
    return HEADER_SIZE if payload_size + HEADER_SIZE <= _U32_MAX else LARGE_HEADER_SIZE


def box(fourcc: bytes, *payload: bytes) -> bytes:
    """A box whose payload is the concatenation of ``payload``."""
    body = b"".join(payload)
    return box_header(fourcc, len(body)) + body


def full_box(fourcc: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """FullBox §4.2: version and 24 bits of flags before the payload."""
    body = b"".join(payload)
    if len(body) + HEADER_SIZE + FULL_BOX_FIELDS_SIZE <= _U32_MAX:  # the common case in one pack
        return _FULL.pack(len(body) + HEADER_SIZE + FULL_BOX_FIELDS_SIZE, fourcc, version << 24 | flags) + body
    return box(fourcc, full_box_fields(version, flags), body)


def full_box_fields(version: int, flags: int) -> bytes:
    return (version << 24 | flags).to_bytes(4, "big")


def split_full_box_fields(word: int) -> tuple[int, int]:
    """The 32-bit FullBox word -> (version, flags)."""
    return word >> 24, word & 0xFFFFFF


# -- reading ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Box:
    type: str  # four-character code (latin-1, so any 4 bytes round-trip)
    start: int  # offset of the header in the buffer (or file)
    header_size: int  # 8, or 16 with a largesize
    size: int  # header included

    @property
    def payload_start(self) -> int:
        return self.start + self.header_size

    @property
    def end(self) -> int:
        return self.start + self.size


def printable(fourcc: str) -> str:
    """A box type fit for a one-line message: itself if printable ASCII, else its hex."""
    return fourcc if fourcc.isascii() and fourcc.isprintable() else "0x" + fourcc.encode("latin-1").hex()


def parse_header(header: bytes, start: int, limit: int, where: str, parent: str = "its parent") -> Box:
    """The box whose header bytes (8, or 16 for a largesize) are ``header``, at ``start``; it must end by ``limit``
    (the end of ``parent``). Never trusts a size field: every inconsistency is BAD_DATA."""
    if len(header) < HEADER_SIZE:
        raise bad_data(f"parse_header: box header truncated at offset {start} in {where}")
    size, raw_type = HEADER.unpack_from(header)
    typ = raw_type.decode("latin-1")
    header_size = HEADER_SIZE
    if size == 1:
        if len(header) < LARGE_HEADER_SIZE:
            raise bad_data(f"parse_header: largesize of box '{printable(typ)}' truncated at offset {start} in {where}")
        (size,) = _U64.unpack_from(header, 8)
        header_size = LARGE_HEADER_SIZE
    elif size == 0:
        size = limit - start
    if size < header_size:
        raise bad_data(f"parse_header: box '{printable(typ)}' at offset {start} has size {size} < its header "
                       f"in {where}")
    if start + size > limit:
        raise bad_data(f"parse_header: box '{printable(typ)}' at offset {start} ends at {start + size}, past {parent} "
                       f"({limit}) in {where}")
    return Box(typ, start, header_size, size)
