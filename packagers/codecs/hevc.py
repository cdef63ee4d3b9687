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


def _sps_picture(b: RbspBits) -> dict:
    """An HEVC SPS (§7.3.2.2) up to the conformance window, by name; ``width``/``height`` are after the window."""
    b.u(4)      # sps_video_parameter_set_id
    max_sub_layers_minus1 = b.u(3)
    b.u(1)      # sps_temporal_id_nesting_flag
    b.u(3)      # general_profile_space, general_tier_flag
    profile_idc = b.u(5)
    b.u(88)     # the rest of the general profile_tier_level: 32 + 48 + level 8 (§7.3.3)
    present = [(b.u(1), b.u(1)) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1:
        b.u(2 * (8 - max_sub_layers_minus1))
    for profile_present, level_present in present:
        b.u(88 * profile_present + 8 * level_present)
    sps_id = b.ue()
    chroma_format_idc = b.ue()
    if chroma_format_idc > 3:
        raise bad_data(f"{b.func}: chroma_format_idc {chroma_format_idc}")
    separate = b.u(1) if chroma_format_idc == 3 else 0
    chroma_array_type = 0 if separate else chroma_format_idc
    coded_width, coded_height = width, height = b.ue(), b.ue()
    if b.u(1):  # conformance_window_flag
        sub_w, sub_h = SUB_WIDTH_HEIGHT[chroma_array_type]
        left, right, top, bottom = b.ue(), b.ue(), b.ue(), b.ue()
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    return dict(profile_idc=profile_idc, max_sub_layers_minus1=max_sub_layers_minus1, sps_id=sps_id,
                separate_colour_plane=separate, chroma_array_type=chroma_array_type, coded_width=coded_width,
                coded_height=coded_height, width=width, height=height)


def sps_size(sps: bytes) -> tuple[int, int]:
    """Cropped picture size from an HEVC SPS (ITU-T H.265 §7.3.2.2, conformance window §7.4.3.2.1)."""
    p = _sps_picture(RbspBits(sps, 2, "hevc.sps_size"))
    width, height = p["width"], p["height"]
    if width <= 0 or height <= 0:
        raise bad_data(f"hevc.sps_size: SPS gives a {width}x{height} picture")
    return width, height


# ---------------------------------------------------------------------------------------------------- slice headers
def st_ref_pic_set(b: RbspBits, sets: list, in_slice_header: bool = False) -> tuple:
    """st_ref_pic_set(stRpsIdx) (§7.3.7) with its derivation (§7.4.8, equations 7-61/7-62): the pictures before and
    after the current one as ((DeltaPocS0, UsedByCurrPicS0), (DeltaPocS1, UsedByCurrPicS1)), tuples each.
    ``sets``: the SPS's sets before this one (all of them in a slice header), so stRpsIdx is ``len(sets)``."""
    idx = len(sets)
    if idx and b.u(1):      # inter_ref_pic_set_prediction_flag: this set is predicted from a previous one
        ref_idx = idx - (b.ue() + 1 if in_slice_header else 1)
        if ref_idx < 0:
            raise bad_data(f"{b.func}: st_ref_pic_set predicted from set {ref_idx}")
        delta_rps = (1 - 2 * b.u(1)) * (b.ue() + 1)
        (s0, u0), (s1, u1) = sets[ref_idx]
        ref_deltas = s0 + s1
        used, use_delta = [], []
        for _ in range(len(ref_deltas) + 1):
            used.append(b.u(1))
            use_delta.append(1 if used[-1] else b.u(1))
        # every j with use_delta_flag gives the picture dPoc = ref delta + deltaRps (deltaRps alone for the last j)
        pics = [(d + delta_rps, used[j]) for j, d in enumerate(ref_deltas) if use_delta[j]]
        if use_delta[-1]:
            pics.append((delta_rps, used[-1]))
        neg = sorted((p for p in pics if p[0] < 0), key=lambda p: -p[0])
        pos = sorted((p for p in pics if p[0] > 0), key=lambda p: p[0])
        return tuple(zip(*neg)) or ((), ()), tuple(zip(*pos)) or ((), ())
    num_negative, num_positive = b.ue(), b.ue()
    if num_negative > 16 or num_positive > 16:
        raise bad_data(f"{b.func}: st_ref_pic_set of {num_negative} + {num_positive} pictures")
    lists = []
    for count, sign in ((num_negative, -1), (num_positive, 1)):
        deltas, used, poc = [], [], 0
        for _ in range(count):
            poc += sign * (b.ue() + 1)
            deltas.append(poc)
            used.append(b.u(1))
        lists.append((tuple(deltas), tuple(used)))
    return tuple(lists)


def _skip_scaling_list_data(b: RbspBits) -> None:
    """scaling_list_data() (§7.3.4), values unused."""
    for size_id in range(4):
        for _ in range(0, 6, 3 if size_id == 3 else 1):
            if not b.u(1):          # scaling_list_pred_mode_flag
                b.ue()
                continue
            if size_id > 1:
                b.ue()              # scaling_list_dc_coef_minus8 (se: same length)
            for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                b.ue()              # scaling_list_delta_coef (se)


def slice_sps(sps: bytes) -> dict:
    """The SPS fields an HEVC slice segment header depends on (§7.3.2.2 up to sps_temporal_mvp_enabled_flag)."""
    b = RbspBits(sps, 2, "hevc.slice_sps", limit=4096)
    p = _sps_picture(b)
    b.ue(), b.ue()                  # bit depths
    log2_max_poc_lsb = b.ue() + 4
    top = p["max_sub_layers_minus1"]
    for _ in range(0 if b.u(1) else top, top + 1):
        b.ue(), b.ue(), b.ue()      # sps_max_dec_pic_buffering, num_reorder, latency
    log2_ctb = b.ue() + 3
    log2_ctb += b.ue()
    b.ue(), b.ue(), b.ue(), b.ue()  # transform block sizes, hierarchy depths
    if b.u(1) and b.u(1):           # scaling_list_enabled_flag, sps_scaling_list_data_present_flag
        _skip_scaling_list_data(b)
    b.u(1)                          # amp_enabled_flag
    sao = b.u(1)
    if b.u(1):                      # pcm_enabled_flag
        b.u(8), b.ue(), b.ue(), b.u(1)
    width, height = p["coded_width"], p["coded_height"]
    if p["sps_id"] > 15 or log2_max_poc_lsb > 16 or log2_ctb > 6 or not (0 < width <= 16888 and 0 < height <= 16888):
        raise bad_data(f"hevc.slice_sps: SPS {p['sps_id']} has a field out of range")
    num_sets = b.ue()
    if num_sets > 64:
        raise bad_data(f"hevc.slice_sps: {num_sets} short-term reference picture sets")
    sets: list = []
    for _ in range(num_sets):
        sets.append(st_ref_pic_set(b, sets))
    lt_present, lt_used = b.u(1), []
    if lt_present:
        count = b.ue()
        if count > 32:
            raise bad_data(f"hevc.slice_sps: {count} long-term reference pictures")
        for _ in range(count):
            b.u(log2_max_poc_lsb)   # lt_ref_pic_poc_lsb_sps
            lt_used.append(b.u(1))
    ctbs = -(-width >> log2_ctb) * -(-height >> log2_ctb)
    return dict(sps_id=p["sps_id"], scc_profile=int(p["profile_idc"] == 9),
                chroma_array_type=p["chroma_array_type"], separate_colour_plane=p["separate_colour_plane"],
                log2_max_poc_lsb=log2_max_poc_lsb,
                address_bits=(ctbs - 1).bit_length(), sao=sao, st_rps=tuple(sets), long_term_present=lt_present,
                lt_used_sps=tuple(lt_used), temporal_mvp=b.u(1))


def slice_pps(pps: bytes) -> dict:
    """The PPS fields an HEVC slice segment header depends on (§7.3.2.3.1 with its range extension §7.3.2.3.2)."""
    b = RbspBits(pps, 2, "hevc.slice_pps", limit=4096, what="PPS")
    f = dict(pps_id=b.ue(), sps_id=b.ue(), dependent_slices=b.u(1), output_flag_present=b.u(1),
             extra_slice_header_bits=b.u(3))
    b.u(1)                          # sign_data_hiding_enabled_flag
    f.update(cabac_init_present=b.u(1), l0_default=b.ue(), l1_default=b.ue())
    b.ue()                          # init_qp_minus26 (se)
    b.u(1)                          # constrained_intra_pred_flag
    transform_skip = b.u(1)
    if b.u(1):                      # cu_qp_delta_enabled_flag
        b.ue()
    b.ue(), b.ue()                  # pps_cb_qp_offset, pps_cr_qp_offset (se)
    f.update(chroma_qp_offsets_present=b.u(1), weighted_pred=b.u(1), weighted_bipred=b.u(1))
    b.u(1)                          # transquant_bypass_enabled_flag
    f.update(tiles=b.u(1), entropy_coding_sync=b.u(1))
    if f["pps_id"] > 63 or f["sps_id"] > 15 or f["l0_default"] > 14 or f["l1_default"] > 14:
        raise bad_data(f"hevc.slice_pps: PPS {f['pps_id']} has a field out of range")
    if f["tiles"]:
        columns, rows = b.ue(), b.ue()
        if columns > 64 or rows > 64:
            raise bad_data(f"hevc.slice_pps: {columns + 1}x{rows + 1} tiles")
        if not b.u(1):              # uniform_spacing_flag
            for _ in range(columns + rows):
                b.ue()
        b.u(1)                      # loop_filter_across_tiles_enabled_flag
    f.update(loop_filter_across_slices=b.u(1), deblocking_override_enabled=0, deblocking_disabled=0)
    if b.u(1):                      # deblocking_filter_control_present_flag
        f.update(deblocking_override_enabled=b.u(1), deblocking_disabled=b.u(1))
        if not f["deblocking_disabled"]:
            b.ue(), b.ue()          # pps_beta_offset_div2, pps_tc_offset_div2 (se)
    if b.u(1):                      # pps_scaling_list_data_present_flag
        _skip_scaling_list_data(b)
    f.update(lists_modification=b.u(1))
    b.ue()                          # log2_parallel_merge_level_minus2
    f.update(header_extension=b.u(1), chroma_qp_offset_list=0, scc_extension=0)
    if b.u(1):                      # pps_extension_present_flag
        range_ext, _, _, f["scc_extension"] = b.u(1), b.u(1), b.u(1), b.u(1)
        b.u(4)
        if range_ext:
            if transform_skip:
                b.ue()              # log2_max_transform_skip_block_size_minus2
            b.u(1)                  # cross_component_prediction_enabled_flag
            f["chroma_qp_offset_list"] = b.u(1)
    return f
