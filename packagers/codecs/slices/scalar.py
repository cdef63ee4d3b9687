"""The scalar slice header parser: a plain bit reader on the RBSP that mirrors the spec text (H.264 §7.3.3,
H.265 §7.3.6.1) and raises the proper BAD_DATA/UNSUPPORTED: the reference, and the fallback of the vector path."""
from __future__ import annotations

from ...errors import PackagerError, bad_data
from .. import hevc
from ..avc import RbspBits
from .params import _EPB, _FUNC, _unsupported


class _Bits(RbspBits):
    def __init__(self, nal: bytes, limit: int) -> None:
        super().__init__(nal, 0, _FUNC, limit=limit, what="slice header")
        self.total = self.left

    def skip(self, n: int) -> None:
        if n > self.left:
            raise bad_data(self.truncated)
        self.left -= n


def scalar_size(parse, nal: bytes, nal_type: int, params) -> int:
    """One slice through the scalar parser ``parse`` (``_scalar_h264`` or ``_scalar_hevc``): its header size in
    stored bytes. The RBSP is read from the first 4 KB, and from the whole NAL unit if that was not enough."""
    for limit in (4096, len(nal)):
        b = _Bits(nal, limit)
        try:
            parse(b, nal_type, params)
            break
        except PackagerError as e:
            if limit >= len(nal) or not e.message.endswith("truncated"):
                raise
    last = (b.total - b.left + 7) // 8 - 1      # the RBSP byte holding the last header bit
    epbs = 0                                    # emulation prevention bytes stored before it
    for k, m in enumerate(_EPB.finditer(nal)):
        if m.start() + 2 - k > last:            # the k-th EPB sits before RBSP byte m.start() + 2 - k
            break
        epbs += 1
    return last + epbs + 1


def _ceil_log2(n: int) -> int:
    return (n - 1).bit_length() if n > 1 else 0


def _scalar_h264(b: _Bits, nal_type: int, params) -> None:
    """slice_header() of H.264 §7.3.3, from the NAL header byte on."""
    nal_ref_idc = (b.u(8) >> 5) & 3
    b.ue()                                      # first_mb_in_slice
    slice_type = b.ue()
    if slice_type > 9:
        raise bad_data(f"{_FUNC}: slice_type {slice_type}")
    p = params(b.ue())
    if p["num_slice_groups_minus1"]:
        raise _unsupported("slice groups (FMO)")
    kind = slice_type % 5                       # 0 P, 1 B, 2 I, 3 SP, 4 SI
    b.u(2 * p["separate_colour_plane"] + p["log2_max_frame_num"])   # colour_plane_id, frame_num
    field = 0
    if not p["frame_mbs_only"] and b.u(1):      # field_pic_flag
        field = 1
        b.u(1)                                  # bottom_field_flag
    if nal_type == 5:
        b.ue()                                  # idr_pic_id
    bottom = p["bottom_field_pic_order_present"] and not field
    if p["poc_type"] == 0:
        b.u(p["log2_max_poc_lsb"])
        if bottom:
            b.se()                              # delta_pic_order_cnt_bottom
    if p["poc_type"] == 1 and not p["delta_pic_order_always_zero"]:
        b.se()
        if bottom:
            b.se()
    if p["redundant_pic_cnt_present"]:
        b.ue()
    if kind == 1:
        b.u(1)                                  # direct_spatial_mv_pred_flag
    counts = [p["l0_default"], p["l1_default"]]
    if kind in (0, 1, 3) and b.u(1):            # num_ref_idx_active_override_flag
        counts[0] = b.ue()
        if kind == 1:
            counts[1] = b.ue()
    if max(counts) > 31:
        raise bad_data(f"{_FUNC}: more than 32 references in a list")
    lists = {0: 1, 3: 1, 1: 2}.get(kind, 0)
    for _ in range(lists):                      # ref_pic_list_modification()
        if b.u(1):
            for _ in range(66):
                idc = b.ue()
                if idc == 3:
                    break
                if idc > 3:
                    raise bad_data(f"{_FUNC}: modification_of_pic_nums_idc {idc}")
                b.ue()
            else:
                raise bad_data(f"{_FUNC}: ref_pic_list_modification without an end")
    if (p["weighted_pred"] and kind in (0, 3)) or (p["weighted_bipred_idc"] == 1 and kind == 1):
        chroma = p["chroma_array_type"] != 0
        b.ue()                                  # luma_log2_weight_denom
        if chroma:
            b.ue()
        for n in counts[:lists]:
            for _ in range(n + 1):
                if b.u(1):
                    b.se(), b.se()
                if chroma and b.u(1):
                    b.se(), b.se(), b.se(), b.se()
    if nal_ref_idc:                             # dec_ref_pic_marking()
        if nal_type == 5:
            b.u(2)
        elif b.u(1):
            for _ in range(66):
                mmco = b.ue()
                if mmco == 0:
                    break
                if mmco > 6:
                    raise bad_data(f"{_FUNC}: memory_management_control_operation {mmco}")
                for _ in range((mmco in (1, 2, 3, 4, 6)) + (mmco == 3)):
                    b.ue()
            else:
                raise bad_data(f"{_FUNC}: dec_ref_pic_marking without an end")
    if p["entropy_coding_mode"] and kind not in (2, 4):
        b.ue()                                  # cabac_init_idc
    b.se()                                      # slice_qp_delta
    if kind in (3, 4):
        b.u(kind == 3)                          # sp_for_switch_flag
        b.se()                                  # slice_qs_delta
    if p["deblocking_filter_control"] and b.ue() != 1:
        b.se(), b.se()


def _scalar_hevc(b: _Bits, nal_type: int, params) -> None:
    """slice_segment_header() of H.265 §7.3.6.1 with its byte_alignment(), from the NAL header on."""
    if b.u(16) & 0x1F8:
        raise _unsupported("HEVC slices of layers other than the base layer")
    first = b.u(1)
    if 16 <= nal_type <= 23:
        b.u(1)                                  # no_output_of_prior_pics_flag
    p = params(b.ue())
    if p["scc_profile"] or p["scc_extension"]:
        raise _unsupported("HEVC screen content coding")
    dependent = 0
    if not first:
        if p["dependent_slices"]:
            dependent = b.u(1)
        b.u(p["address_bits"])                  # slice_segment_address
    if not dependent:
        b.u(p["extra_slice_header_bits"])
        slice_type = b.ue()
        if slice_type > 2:
            raise bad_data(f"{_FUNC}: slice_type {slice_type}")
        b.u(p["output_flag_present"] + 2 * p["separate_colour_plane"])
        total_curr, tmvp = 0, 0
        if nal_type not in (19, 20):            # not IDR
            b.u(p["log2_max_poc_lsb"])
            sets = p["st_rps"]
            if not b.u(1):                      # short_term_ref_pic_set_sps_flag
                rps = hevc.st_ref_pic_set(b, list(sets), in_slice_header=True)
            else:
                i = b.u(_ceil_log2(len(sets)))
                if i >= len(sets):
                    raise bad_data(f"{_FUNC}: short_term_ref_pic_set_idx {i} of {len(sets)}")
                rps = sets[i]
            total_curr = sum(rps[0][1]) + sum(rps[1][1])
            if p["long_term_present"]:
                lt = p["lt_used_sps"]
                from_sps = b.ue() if lt else 0
                count = from_sps + b.ue()
                if from_sps > len(lt) or count > 32:
                    raise bad_data(f"{_FUNC}: {count} long-term pictures")
                for i in range(count):
                    if i < from_sps:
                        j = b.u(_ceil_log2(len(lt)))
                        total_curr += lt[j] if j < len(lt) else 0
                    else:
                        b.u(p["log2_max_poc_lsb"])
                        total_curr += b.u(1)
                    if b.u(1):                  # delta_poc_msb_present_flag
                        b.ue()
            if p["temporal_mvp"]:
                tmvp = b.u(1)
        sao = 0
        if p["sao"]:
            sao = b.u(1)
            if p["chroma_array_type"]:
                sao |= b.u(1)
        if slice_type < 2:                      # P or B
            counts = [p["l0_default"], p["l1_default"]]
            if b.u(1):
                counts[0] = b.ue()
                if slice_type == 0:
                    counts[1] = b.ue()
            if max(counts) > 14:
                raise bad_data(f"{_FUNC}: more than 15 references in a list")
            lists = 2 - slice_type
            if p["lists_modification"] and total_curr > 1:
                for n in counts[:lists]:
                    if b.u(1):
                        b.skip((n + 1) * _ceil_log2(total_curr))
            b.u((slice_type == 0) + p["cabac_init_present"])  # mvd_l1_zero_flag, cabac_init_flag
            if tmvp:
                from_l0 = b.u(1) if slice_type == 0 else 1
                if counts[1 - from_l0] > 0:
                    b.ue()                      # collocated_ref_idx
            if (p["weighted_pred"] and slice_type == 1) or (p["weighted_bipred"] and slice_type == 0):
                chroma = p["chroma_array_type"] != 0
                b.ue()
                if chroma:
                    b.se()
                for n in counts[:lists]:
                    luma = [b.u(1) for _ in range(n + 1)]
                    chroma_flags = [b.u(1) for _ in range(n + 1)] if chroma else [0] * (n + 1)
                    for i in range(n + 1):
                        for _ in range(2 * luma[i] + 4 * chroma_flags[i]):
                            b.se()
            b.ue()                              # five_minus_max_num_merge_cand
        b.se()                                  # slice_qp_delta
        if p["chroma_qp_offsets_present"]:
            b.se(), b.se()
        b.u(p["chroma_qp_offset_list"])         # cu_chroma_qp_offset_enabled_flag
        disabled = p["deblocking_disabled"]
        if p["deblocking_override_enabled"] and b.u(1):
            disabled = b.u(1)
            if not disabled:
                b.se(), b.se()
        if p["loop_filter_across_slices"] and (sao or not disabled):
            b.u(1)
    if p["tiles"] or p["entropy_coding_sync"]:
        count = b.ue()
        if count:
            bits = b.ue() + 1
            if bits > 32:
                raise bad_data(f"{_FUNC}: offset_len_minus1 {bits - 1}")
            b.skip(count * bits)
    if p["header_extension"]:
        b.skip(8 * b.ue())
    b.skip(1 + (b.left - 1) % 8)                # byte_alignment(): a one bit, zero bits up to the byte boundary
