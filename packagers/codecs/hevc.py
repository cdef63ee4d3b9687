"""H.265/HEVC: the hvcC record, its VPS/SPS/PPS arrays, SPS picture size and the NAL header layout.

* hvcC, HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1): the general profile/tier/level fields give the
  Annex E string, ``hvc1.[A-C]<profile_idc>.<compatibility flags bit-reversed, hex>.<L|H><level_idc>[.<constraint
  byte, hex>]*`` with trailing zero constraint bytes dropped, e.g. ``hvc1.1.6.L93.B0``.
* The SPS (ITU-T H.265 §7.3.2.2) gives the picture size after the conformance window.

Length-prefixed ↔ Annex B conversion is the same as for AVC and lives in ``avc``; this module exposes the same
per-codec names (``SPS``, ``AUD``, ``AUD_NAL_TYPE``, ``nal_unit_types``, ``parse_config``, ``sps_size``).
"""
from __future__ import annotations

import numpy as np

from ..errors import bad_data
from .avc import START_CODE, SUB_WIDTH_HEIGHT, RbspBits, RecordReader, VideoConfig, nal_length_size

# NAL unit types (H.265 Table 7-1)
VPS, SPS, PPS, AUD_NAL_TYPE = 32, 33, 34, 35
PARAMETER_SET_ORDER = (VPS, SPS, PPS)
# access_unit_delimiter_rbsp: nal_unit_type 35, nuh_layer_id 0, nuh_temporal_id_plus1 1, pic_type 2 ("any"), stop bit
AUD = START_CODE + b"\x46\x01\x50"


def nal_unit_types(first_byte: np.ndarray) -> np.ndarray:
    """nal_unit_type from the first NAL header byte (H.265 7.3.1.2: bits 6..1)."""
    return (first_byte.astype(np.uint8) >> 1) & 0x3F


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
    c = RecordReader(hvcc, "parse_hvcc", where)
    c.u8()  # configurationVersion (0 in some early files; nothing else depends on it)
    ptl = c.u8()
    compatibility_flags = int.from_bytes(c.take(4), "big")
    constraint_flags = c.take(6)
    level_idc = c.u8()
    c.take(8)  # min_spatial_segmentation .. avgFrameRate
    length_size = nal_length_size(c.u8(), "parse_hvcc", where)
    by_type: dict[int, list[bytes]] = {}
    for _ in range(c.u8()):
        nal_type = c.u8() & 0x3F
        by_type.setdefault(nal_type, []).extend(c.nal_units(c.u16()))
    codec_string = hevc_codec_string(fourcc, ptl >> 6, (ptl >> 5) & 1, ptl & 0x1F, compatibility_flags,
                                     constraint_flags, level_idc)
    sets = tuple(nal for t in PARAMETER_SET_ORDER for nal in by_type.get(t, ()))
    return VideoConfig(codec_string, length_size, sets)


parse_config = parse_hvcc


def sps_size(sps: bytes) -> tuple[int, int]:
    """Cropped picture size from an HEVC SPS (ITU-T H.265 §7.3.2.2, conformance window §7.4.3.2.1)."""
    b = RbspBits(sps, 2, "hevc.sps_size")
    b.u(4)      # sps_video_parameter_set_id
    max_sub_layers_minus1 = b.u(3)
    b.u(1)      # sps_temporal_id_nesting_flag
    b.u(96)     # general profile_tier_level: 2+1+5 + 32 + 48 + level 8 (§7.3.3)
    present = [(b.u(1), b.u(1)) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1:
        b.u(2 * (8 - max_sub_layers_minus1))
    for profile_present, level_present in present:
        b.u(88 * profile_present + 8 * level_present)
    b.ue()      # sps_seq_parameter_set_id
    chroma_format_idc = b.ue()
    if chroma_format_idc > 3:
        raise bad_data(f"hevc.sps_size: chroma_format_idc {chroma_format_idc}")
    if chroma_format_idc == 3 and b.u(1):   # separate_colour_plane_flag
        chroma_format_idc = 0
    width, height = b.ue(), b.ue()
    if b.u(1):  # conformance_window_flag
        sub_w, sub_h = SUB_WIDTH_HEIGHT[chroma_format_idc]
        left, right, top, bottom = b.ue(), b.ue(), b.ue(), b.ue()
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    if width <= 0 or height <= 0:
        raise bad_data(f"hevc.sps_size: SPS gives a {width}x{height} picture")
    return width, height
