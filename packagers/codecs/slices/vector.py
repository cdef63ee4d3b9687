"""The vector slice header parser: every slice of a fragment at once (see the package docstring)."""
from __future__ import annotations

import numpy as np

from .params import _EIGHT, _LOOP_CAP, _Sets


def _ue_tables() -> tuple[np.ndarray, np.ndarray]:
    """ue(v) code length and value by the next 16 bits; length 0 for codes longer than 15 bits."""
    top = np.arange(1 << 16)
    zeros = 16 - np.frexp(top.astype(np.float64))[1]
    length = np.where(zeros <= 7, 2 * zeros + 1, 0)
    value = np.where(length > 0, (top >> np.maximum(16 - length, 0)) - 1, 0)
    return length.astype(np.int64), value.astype(np.int64)


_UE_LENGTH, _UE_VALUE = _ue_tables()
_S48 = np.uint64(48)


class _Vec:
    """Bit positions (absolute, in ``data``) of every slice, read together; ``bad`` marks the slices to redo with
    the scalar parser. Reads never raise: an unknown PPS, a code too long or a read past the NAL end only set
    ``bad``, and the scalar parser gives the error.

    The position of each slice is ``base + used``: ``reg`` holds the 64 bits at ``base`` (57 of them real), and
    reads take their bits from it until ``spent`` (an upper bound of every slice's ``used``, kept in Python) says
    it may run dry; then it is filled again with one gather of 8 bytes per slice."""

    def __init__(self, data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, header_bytes: int) -> None:
        self.data, self.last = data, len(data) - 1
        self.start, self.end = starts * 8, (starts + lengths) * 8
        self.base = self.start + 8 * header_bytes
        self.used = np.zeros(len(starts), dtype=np.int64)
        self.spent = 64         # > 57: fill before the first read
        self.bad = np.zeros(len(starts), dtype=bool)
        self.zero = np.zeros(len(starts), dtype=np.int64)

    @property
    def pos(self) -> np.ndarray:
        return self.base + self.used

    def _fill(self) -> None:
        self.base = self.base + self.used
        self.used[:] = 0
        words = np.take(self.data, (self.base >> 3)[:, None] + _EIGHT, mode="clip").view(">u8").ravel()
        self.reg = words << (self.base & 7).astype(np.uint64)
        self.spent = 0

    def _bits(self, need: int) -> np.ndarray:
        """The next bits of every slice from the top bit, at least ``need`` of them real."""
        if self.spent + need > 57:
            self._fill()
        fresh, self.spent = self.spent == 0, self.spent + need
        return self.reg if fresh else self.reg << self.used.astype(np.uint64)

    def u(self, n: int, mask: np.ndarray) -> np.ndarray:
        """u(n), 1 <= n <= 32, where ``mask``; 0 elsewhere."""
        if not mask.any():
            return self.zero
        value = (self._bits(n) >> np.uint64(64 - n)).astype(np.int64)
        self.used += mask * n
        return value * mask

    def uv(self, n: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """u(n) with a per-slice 0 <= n <= 32, where ``mask``."""
        if not mask.any():
            return self.zero
        value = ((self._bits(32) >> np.uint64(1)) >> (63 - n).astype(np.uint64)).astype(np.int64)
        self.used += mask * n
        return value * mask

    def ue(self, mask: np.ndarray, times: int = 1) -> np.ndarray:
        """ue(v) where ``mask`` (``times`` in a row, the last value returned); also skips se(v)."""
        if not mask.any():
            return self.zero
        for _ in range(times):
            top = (self._bits(15) >> _S48).astype(np.intp)
            length, value = _UE_LENGTH[top], _UE_VALUE[top]    # codes of up to 15 bits: one look-up
            if not length.all() and (mask & (length == 0)).any():
                length, value = self._long_ue(mask)
            self.used += length * mask
        return value * mask

    def _long_ue(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ue(v) codes of up to 57 bits: leading zeros from the float exponent of the top 32 bits."""
        self._fill()
        self.spent = 64
        bits = self.reg
        length = np.frexp((bits >> np.uint64(32)).astype(np.float64))[1]
        zeros = 32 - length
        ok = (length > 0) & (zeros <= 28)
        zeros = np.where(ok, zeros, 0)
        self.bad |= mask & ~ok
        return 2 * zeros + 1, (bits >> (63 - 2 * zeros).astype(np.uint64)).astype(np.int64) - 1

    def skip(self, bits, most: int = 64) -> None:
        """Skip ``bits`` (per slice), at most ``most`` of them (64: unbounded, fill before the next read)."""
        self.used += bits
        self.spent += most

    def byte_alignment(self) -> None:
        """HEVC byte_alignment(): a one bit, then zero bits up to the next byte of the NAL unit."""
        self.base = (self.pos - self.start + 8) // 8 * 8 + self.start
        self.used[:] = 0
        self.spent = 64


def _params(sets: _Sets, run: np.ndarray, pps_id: np.ndarray, v: _Vec) -> dict:
    """Each slice's SPS+PPS fields, as columns."""
    rec = sets.table[run, np.minimum(pps_id, 255)]
    v.bad |= (pps_id > 255) | (rec < 0)
    cols = sets.columns[np.maximum(rec, 0)]
    return {f: cols[:, i] for f, i in sets.index.items()}


def _sizes(v: _Vec) -> tuple[np.ndarray, np.ndarray]:
    v.bad |= v.pos > v.end
    return (v.pos - v.start + 7) // 8, v.bad


def _vector_h264(data, starts, lengths, types, run, sets: _Sets):
    """slice_header() (§7.3.3) of every slice at once; mirrors ``_scalar_h264``."""
    v = _Vec(data, starts, lengths, 1)
    v.bad |= lengths < 2
    nal_ref_idc = (data[starts] >> 5) & 3
    every = np.ones(len(starts), dtype=bool)
    v.ue(every)
    slice_type = v.ue(every)
    p = _params(sets, run, v.ue(every), v)
    v.bad |= (slice_type > 9) | (p["num_slice_groups_minus1"] > 0)
    kind = slice_type % 5
    v.skip(2 * p["separate_colour_plane"] + p["log2_max_frame_num"], 18)
    field = v.u(1, p["frame_mbs_only"] == 0).astype(bool)
    v.skip(field, 1)
    v.ue(types == 5)
    bottom = (p["bottom_field_pic_order_present"] == 1) & ~field
    poc0 = p["poc_type"] == 0
    v.skip(poc0 * p["log2_max_poc_lsb"], 16)
    v.ue(poc0 & bottom)
    poc1 = (p["poc_type"] == 1) & (p["delta_pic_order_always_zero"] == 0)
    v.ue(poc1)
    v.ue(poc1 & bottom)
    v.ue(p["redundant_pic_cnt_present"] == 1)
    b, predicted = kind == 1, (kind == 0) | (kind == 1) | (kind == 3)
    v.skip(b, 1)
    override = v.u(1, predicted).astype(bool)
    l0 = np.where(override, v.ue(override), p["l0_default"])
    l1 = np.where(override & b, v.ue(override & b), p["l1_default"])
    v.bad |= (l0 > 31) | (l1 > 31)
    for in_list in (predicted, b):              # ref_pic_list_modification()
        active = v.u(1, in_list).astype(bool)
        for _ in range(_LOOP_CAP):
            if not active.any():
                break
            idc = v.ue(active)
            v.bad |= active & (idc > 3)
            active &= idc != 3
            v.ue(active)
        v.bad |= active
    weighted = ((p["weighted_pred"] == 1) & ((kind == 0) | (kind == 3))) | ((p["weighted_bipred_idc"] == 1) & b)
    if weighted.any():
        chroma = weighted & (p["chroma_array_type"] != 0)
        v.ue(weighted)
        v.ue(chroma)
        for in_list, count in ((weighted, l0), (weighted & b, l1)):
            for i in range(int(count[in_list].max(initial=-1)) + 1):
                entry = in_list & (i <= count)
                v.ue(v.u(1, entry).astype(bool), times=2)
                v.ue(v.u(1, entry & chroma).astype(bool), times=4)
    marking = nal_ref_idc != 0
    idr = types == 5
    v.skip(2 * (marking & idr), 2)
    active = v.u(1, marking & ~idr).astype(bool)  # adaptive_ref_pic_marking_mode_flag
    for _ in range(_LOOP_CAP):
        if not active.any():
            break
        mmco = v.ue(active)
        v.bad |= active & (mmco > 6)
        active &= mmco != 0
        v.ue(active & ((mmco == 1) | (mmco == 2) | (mmco == 3) | (mmco == 4) | (mmco == 6)))
        v.ue(active & (mmco == 3))
    v.bad |= active
    v.ue((p["entropy_coding_mode"] == 1) & predicted)
    v.ue(every)
    v.skip(kind == 3, 1)
    v.ue((kind == 3) | (kind == 4))
    deblock = p["deblocking_filter_control"] == 1
    v.ue(deblock & (v.ue(deblock) != 1), times=2)
    return _sizes(v)


def _vector_hevc(data, starts, lengths, types, run, sets: _Sets):
    """slice_segment_header() (§7.3.6.1) of every slice at once; mirrors ``_scalar_hevc``. Slices with an
    inter-predicted RPS, or a PPS with list modifications, go to the scalar parser."""
    v = _Vec(data, starts, lengths, 2)
    v.bad |= (lengths < 3) | (((data[starts] & 1) == 1) | (data[np.minimum(starts + 1, v.last)] >= 8))   # layer > 0
    every = np.ones(len(starts), dtype=bool)
    first = v.u(1, every).astype(bool)
    v.skip((types >= 16) & (types <= 23), 1)
    p = _params(sets, run, v.ue(every), v)
    v.bad |= (p["scc_profile"] | p["scc_extension"] | p["lists_modification"]) == 1
    dependent = v.u(1, ~first & (p["dependent_slices"] == 1)).astype(bool)
    v.skip(~first * p["address_bits"], 23)
    full = ~dependent
    v.skip(full * p["extra_slice_header_bits"], 7)
    slice_type = v.ue(full)
    v.bad |= slice_type > 2
    v.skip(full * (p["output_flag_present"] + 2 * p["separate_colour_plane"]), 3)
    poc = full & (types != 19) & (types != 20)
    v.skip(poc * p["log2_max_poc_lsb"], 16)
    from_sps = v.u(1, poc).astype(bool)
    coded = poc & ~from_sps                     # st_ref_pic_set(num_short_term_ref_pic_sets) in the header
    v.bad |= v.u(1, coded & (p["num_st_rps"] > 0)) == 1
    negative, positive = v.ue(coded), v.ue(coded)
    v.bad |= (negative > 16) | (positive > 16)
    pics = negative + positive
    for i in range(int(pics.max(initial=0))):
        entry = coded & (i < pics)
        v.ue(entry)
        v.skip(entry, 1)
    in_sps = poc & from_sps
    v.bad |= in_sps & (v.uv(_ceil_log2_vec(p["num_st_rps"]), in_sps) >= p["num_st_rps"])   # set idx
    lt = poc & (p["long_term_present"] == 1)
    lt_sps = v.ue(lt & (p["num_lt_sps"] > 0))
    lt_count = lt_sps + v.ue(lt)
    v.bad |= (lt_sps > p["num_lt_sps"]) | (lt_count > 32)
    for i in range(int(lt_count.max(initial=0))):
        entry = lt & (i < lt_count)
        in_sps = entry & (i < lt_sps)
        v.skip(in_sps * _ceil_log2_vec(p["num_lt_sps"]) + (entry & ~in_sps) * (p["log2_max_poc_lsb"] + 1))
        v.ue(v.u(1, entry).astype(bool))
    tmvp = v.u(1, poc & (p["temporal_mvp"] == 1)).astype(bool)
    sao_on = full & (p["sao"] == 1)
    sao = v.u(1, sao_on) | v.u(1, sao_on & (p["chroma_array_type"] != 0))
    predicted, b = full & (slice_type < 2), full & (slice_type == 0)
    override = v.u(1, predicted).astype(bool)
    l0 = np.where(override, v.ue(override), p["l0_default"])
    l1 = np.where(override & b, v.ue(override & b), p["l1_default"])
    v.bad |= (l0 > 14) | (l1 > 14)
    v.skip(b + predicted * p["cabac_init_present"], 2)
    from_l0 = np.where(b, v.u(1, b & tmvp), 1).astype(bool)
    v.ue(predicted & tmvp & np.where(from_l0, l0 > 0, l1 > 0))
    weighted = ((p["weighted_pred"] == 1) & predicted & ~b) | ((p["weighted_bipred"] == 1) & b)
    if weighted.any():
        chroma = weighted & (p["chroma_array_type"] != 0)
        v.ue(weighted)
        v.ue(chroma)
        for in_list, count in ((weighted, l0), (weighted & b, l1)):
            n = np.where(in_list, count + 1, 0)
            luma_flags = v.u(16, in_list)       # up to 15 flags, read at once
            v.skip((n - 16) * in_list, 0)
            chroma_flags = v.u(16, in_list & chroma)
            v.skip((n - 16) * (in_list & chroma), 0)
            for i in range(int(n.max(initial=0))):
                entry = i < n
                v.ue(entry & ((luma_flags >> (15 - i)) & 1 == 1), times=2)
                v.ue(entry & ((chroma_flags >> (15 - i)) & 1 == 1), times=4)
    v.ue(predicted)                             # five_minus_max_num_merge_cand
    v.ue(full)                                  # slice_qp_delta
    v.ue(full & (p["chroma_qp_offsets_present"] == 1), times=2)
    v.skip(full * p["chroma_qp_offset_list"], 1)
    override = v.u(1, full & (p["deblocking_override_enabled"] == 1)).astype(bool)
    disabled = np.where(override, v.u(1, override), p["deblocking_disabled"]).astype(bool)
    v.ue(override & ~disabled, times=2)
    v.skip(full & (p["loop_filter_across_slices"] == 1) & ((sao == 1) | ~disabled), 1)
    entries = (p["tiles"] | p["entropy_coding_sync"]) == 1
    count = v.ue(entries)
    offset_bits = v.ue(count > 0) + 1
    v.bad |= offset_bits > 32
    v.skip(count * offset_bits)
    v.skip(8 * v.ue(p["header_extension"] == 1))
    v.byte_alignment()
    return _sizes(v)


def _ceil_log2_vec(n: np.ndarray) -> np.ndarray:
    """Ceil(Log2(n)) for n >= 1 (0 for n <= 1), exact for the small counts of parameter sets."""
    return np.frexp(np.maximum(n - 1, 0).astype(np.float64))[1]
