"""Video decoder configuration records (ISO/IEC 14496-15) and their RFC 6381 codec strings.

* avcC, AVCDecoderConfigurationRecord (§5.3.3.1): profile, compatibility and level give ``avc1.PPCCLL``.
* hvcC, HEVCDecoderConfigurationRecord (§8.3.3.1): the general profile/tier/level fields give the Annex E string,
  ``hvc1.[A-C]<profile_idc>.<compatibility flags bit-reversed, hex>.<L|H><level_idc>[.<constraint byte, hex>]*`` with
  trailing zero constraint bytes dropped, e.g. ``hvc1.1.6.L93.B0``.

Both records carry the parameter sets (SPS/PPS, VPS/SPS/PPS) that a TS muxer repeats in band before key frames.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import bad_data

HEVC_VPS, HEVC_SPS, HEVC_PPS = 32, 33, 34
_HEVC_PARAMETER_SET_ORDER = (HEVC_VPS, HEVC_SPS, HEVC_PPS)


@dataclass(frozen=True)
class VideoConfig:
    codec_string: str
    nal_length_size: int
    parameter_sets: tuple[bytes, ...]


class _Cursor:
    """Bounds-checked reads over a configuration record; overruns are BAD_DATA."""

    def __init__(self, data: bytes, func: str, where: str):
        self.data, self.pos, self.func, self.where = data, 0, func, where

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise bad_data(f"{self.func}: record truncated in {self.where}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def nal_units(self, count: int) -> list[bytes]:
        return [self.take(self.u16()) for _ in range(count)]


def _nal_length_size(length_size_minus_one: int, func: str, where: str) -> int:
    size = (length_size_minus_one & 3) + 1
    if size == 3:
        raise bad_data(f"{func}: NAL length size 3 is not allowed in {where}")
    return size


def avc_codec_string(fourcc: str, profile: int, compatibility: int, level: int) -> str:
    """RFC 6381 §3.3: avc1.PPCCLL, the three bytes as hex."""
    return f"{fourcc}.{profile:02x}{compatibility:02x}{level:02x}"


def parse_avcc(avcc: bytes, fourcc: str, where: str) -> VideoConfig:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1); the high-profile extension fields are ignored."""
    c = _Cursor(avcc, "parse_avcc", where)
    version, profile, compatibility, level = c.take(4)
    if version != 1:
        raise bad_data(f"parse_avcc: configurationVersion {version} in {where}")
    nal_length_size = _nal_length_size(c.u8(), "parse_avcc", where)
    sps = c.nal_units(c.u8() & 0x1F)
    pps = c.nal_units(c.u8())
    return VideoConfig(avc_codec_string(fourcc, profile, compatibility, level), nal_length_size, tuple(sps + pps))


def hevc_codec_string(fourcc: str, profile_space: int, tier_flag: int, profile_idc: int, compatibility_flags: int,
                      constraint_flags: bytes, level_idc: int) -> str:
    """ISO/IEC 14496-15 Annex E.3."""
    compat_reversed = int(f"{compatibility_flags:032b}"[::-1], 2)
    parts = [
        fourcc,
        f"{('', 'A', 'B', 'C')[profile_space & 3]}{profile_idc}",
        f"{compat_reversed:X}",
        f"{'H' if tier_flag else 'L'}{level_idc}",
    ]
    parts += [f"{b:X}" for b in constraint_flags.rstrip(b"\0")]
    return ".".join(parts)


def parse_hvcc(hvcc: bytes, fourcc: str, where: str) -> VideoConfig:
    """HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1). Parameter sets come out as VPS, SPS, PPS
    whatever the order of the arrays; other NAL unit arrays (SEI) are left out."""
    c = _Cursor(hvcc, "parse_hvcc", where)
    c.u8()  # configurationVersion (0 in some early files; nothing else depends on it)
    ptl = c.u8()
    compatibility_flags = int.from_bytes(c.take(4), "big")
    constraint_flags = c.take(6)
    level_idc = c.u8()
    c.take(8)  # min_spatial_segmentation .. avgFrameRate
    nal_length_size = _nal_length_size(c.u8(), "parse_hvcc", where)
    by_type: dict[int, list[bytes]] = {}
    for _ in range(c.u8()):
        nal_type = c.u8() & 0x3F
        by_type.setdefault(nal_type, []).extend(c.nal_units(c.u16()))
    codec_string = hevc_codec_string(fourcc, ptl >> 6, (ptl >> 5) & 1, ptl & 0x1F, compatibility_flags,
                                     constraint_flags, level_idc)
    sets = tuple(nal for t in _HEVC_PARAMETER_SET_ORDER for nal in by_type.get(t, ()))
    return VideoConfig(codec_string, nal_length_size, sets)
