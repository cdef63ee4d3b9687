"""One MSB-first bit reader for the codec headers that are bit fields (AudioSpecificConfig, H.264/HEVC SPS).

The bytes are read as one big integer: the headers we parse are at most a few hundred bytes, and shifting an int is
far cheaper in Python than a per-bit loop. Reading past the end raises BAD_DATA with the caller's own message.
"""
from __future__ import annotations

from ..errors import bad_data


class BitReader:
    def __init__(self, data: bytes, truncated: str) -> None:
        self.value, self.left, self.truncated = int.from_bytes(data, "big"), 8 * len(data), truncated

    def u(self, n: int) -> int:
        """The next ``n`` bits as an unsigned integer (ISO/IEC 14496 and ITU-T H.264 ``u(n)``)."""
        if n > self.left:
            raise bad_data(self.truncated)
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)
