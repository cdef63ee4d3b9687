"""Writing ISO BMFF boxes (ISO/IEC 14496-12 §4.2): ``size(32) type(32) payload``, FullBox adds ``version(8)
flags(24)``. Init segments are a few hundred bytes, so plain ``struct`` packing is all they need; the per-sample tables
of a fragment are built with numpy in ``fragment``."""
from __future__ import annotations

import struct

_HEADER = struct.Struct(">I4s")
_FULL = struct.Struct(">I4sI")
U8, U16, U32, U64 = (struct.Struct(f).pack for f in (">B", ">H", ">I", ">Q"))
I16 = struct.Struct(">h").pack


def box(fourcc: bytes, *payload: bytes) -> bytes:
    """A box whose payload is the concatenation of ``payload`` (compact 32-bit size: init boxes are small)."""
    body = b"".join(payload)
    return _HEADER.pack(8 + len(body), fourcc) + body


def full_box(fourcc: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """FullBox §4.2: version and 24 bits of flags before the payload."""
    body = b"".join(payload)
    return _FULL.pack(12 + len(body), fourcc, version << 24 | flags) + body


def box_header(fourcc: bytes, payload_size: int) -> bytes:
    """The header of a box of ``payload_size`` bytes; a 64-bit largesize when the box would not fit 32 bits."""
    if payload_size + 8 <= 0xFFFFFFFF:
        return _HEADER.pack(payload_size + 8, fourcc)
    return _HEADER.pack(1, fourcc) + U64(payload_size + 16)


def box_header_size(payload_size: int) -> int:
    return 8 if payload_size + 8 <= 0xFFFFFFFF else 16


def file_type(fourcc: bytes, major: bytes, minor: int, compatible: tuple[bytes, ...]) -> bytes:
    """ftyp (§4.3) or styp (§8.16.2): major brand, minor version, compatible brands."""
    return box(fourcc, major, U32(minor), *compatible)
