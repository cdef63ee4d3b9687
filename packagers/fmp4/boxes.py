"""Field packers and the ftyp/styp box for writing ISO BMFF (ISO/IEC 14496-12). The box header itself (``box``,
``full_box``, ``box_header``) is ``packagers.codecs.box``; init segments are a few hundred bytes, so plain ``struct``
packing is all they need; the per-sample tables of a fragment are built with numpy in ``fragment``."""
from __future__ import annotations

import struct

from ..codecs.box import box

U8, U16, U32, U64 = (struct.Struct(f).pack for f in (">B", ">H", ">I", ">Q"))
I16 = struct.Struct(">h").pack


def file_type(fourcc: bytes, major: bytes, minor: int, compatible: tuple[bytes, ...]) -> bytes:
    """ftyp (§4.3) or styp (§8.16.2): major brand, minor version, compatible brands."""
    return box(fourcc, major, U32(minor), *compatible)
