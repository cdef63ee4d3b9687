"""Reference NAL unit syntax for tests, written byte by byte from the spec (independent of packagers/codecs)."""
from __future__ import annotations


def escape(unit: bytes, cabac_zero_words: bool = False) -> bytes:
    """Emulation prevention (H.264 7.4.1, H.265 7.4.2) as an encoder writes it: 03 after every 00 00 followed by a
    byte <= 03; with ``cabac_zero_words``, also after 00 00 at the unit's end (where cabac_zero_word may follow)."""
    out, zeros = bytearray(), 0
    for byte in unit:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    if cabac_zero_words and zeros >= 2:
        out.append(3)
    return bytes(out)
