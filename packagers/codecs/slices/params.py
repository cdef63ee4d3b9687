"""Constants of the slice header parsers and the parameter sets in force at each NAL unit."""
from __future__ import annotations

import functools
import re

import numpy as np

from ...errors import ErrorCode, PackagerError, bad_data
from .. import avc, hevc
from ..avc import VideoConfig

_FUNC = "slice_header_sizes"
_EPB = re.compile(b"\x00\x00\x03")
_EIGHT = np.arange(8)
_WINDOW = 64            # bytes of each NAL unit searched for emulation prevention in one vector step
_LOOP_CAP = 32          # ref_pic_list_modification / MMCO entries the vector path follows before the fallback

_H264_FIELDS = ("separate_colour_plane", "log2_max_frame_num", "frame_mbs_only", "poc_type", "log2_max_poc_lsb",
                "delta_pic_order_always_zero", "chroma_array_type", "entropy_coding_mode",
                "bottom_field_pic_order_present", "num_slice_groups_minus1", "l0_default", "l1_default",
                "weighted_pred", "weighted_bipred_idc", "deblocking_filter_control", "redundant_pic_cnt_present")
_HEVC_FIELDS = ("scc_profile", "chroma_array_type", "separate_colour_plane", "log2_max_poc_lsb", "address_bits", "sao",
                "num_st_rps", "long_term_present", "num_lt_sps", "temporal_mvp", "dependent_slices",
                "output_flag_present", "extra_slice_header_bits", "cabac_init_present", "l0_default", "l1_default",
                "chroma_qp_offsets_present", "weighted_pred", "weighted_bipred", "tiles", "entropy_coding_sync",
                "loop_filter_across_slices", "deblocking_override_enabled", "deblocking_disabled",
                "lists_modification", "header_extension", "chroma_qp_offset_list", "scc_extension")


def _unsupported(message: str) -> PackagerError:
    return PackagerError(ErrorCode.UNSUPPORTED, f"{_FUNC}: {message}")


def _is_hevc(codec) -> bool:
    """``codec``: an ``avc.VideoConfig`` or a ``model.CodecConfig`` (both have codec_string and parameter_sets)."""
    return codec.codec_string[:4] in ("hvc1", "hev1") or getattr(codec, "fourcc", "") in ("hvc1", "hev1")


@functools.lru_cache(maxsize=256)
def _parse_set(is_hevc: bool, is_sps: bool, nal: bytes) -> dict:
    syntax = hevc if is_hevc else avc
    return (syntax.slice_sps if is_sps else syntax.slice_pps)(nal)


class _Sets:
    """The SPS/PPS in force at each point of the data: ``table[run, pps_id]`` indexes ``params`` (combined SPS+PPS
    dicts) or is -1 (unknown PPS, or a PPS naming an unknown SPS: ``missing`` says which)."""

    def __init__(self, is_hevc: bool, states: list[tuple[dict, dict]]) -> None:
        self.table = np.full((len(states), 256), -1, dtype=np.int64)
        self.params: list[dict] = []
        self.missing: dict[tuple[int, int], str] = {}
        seen: dict[tuple[int, int], int] = {}
        for run, (sps, pps) in enumerate(states):
            for pps_id, p in pps.items():
                s = sps.get(p["sps_id"])
                if s is None:
                    self.missing[run, pps_id] = f"PPS {pps_id} names SPS {p['sps_id']}, never seen"
                    continue
                key = (id(s), id(p))
                if key not in seen:
                    seen[key] = len(self.params)
                    self.params.append(s | p | ({"num_st_rps": len(s["st_rps"]), "num_lt_sps": len(s["lt_used_sps"])}
                                                if is_hevc else {}))
                self.table[run, pps_id] = seen[key]
        fields = _HEVC_FIELDS if is_hevc else _H264_FIELDS
        self.columns = np.array([[p[f] for f in fields] for p in self.params] or [[0] * len(fields)], dtype=np.int64)
        self.index = {f: i for i, f in enumerate(fields)}

    def lookup(self, run: int, pps_id: int) -> dict:
        if pps_id > 255 or self.table[run, pps_id] < 0:
            raise bad_data(f"{_FUNC}: " + self.missing.get((run, pps_id), f"slice names PPS {pps_id}, never seen"))
        return self.params[self.table[run, pps_id]]


def _add_set(is_hevc: bool, nal_type: int, nal: bytes, sps: dict, pps: dict) -> None:
    is_sps = nal_type == (hevc.SPS if is_hevc else avc.SPS)
    parsed = _parse_set(is_hevc, is_sps, nal)
    (sps if is_sps else pps)[parsed["sps_id" if is_sps else "pps_id"]] = parsed


@functools.lru_cache(maxsize=64)
def _config_sets(codec: VideoConfig) -> tuple[dict, dict]:
    is_hevc, sps, pps = _is_hevc(codec), {}, {}
    for nal in codec.parameter_sets:
        nal_type = int((hevc if is_hevc else avc).nal_unit_types(np.array([nal[0] if nal else 0]))[0])
        if nal_type in ((hevc.SPS, hevc.PPS) if is_hevc else (avc.SPS, avc.PPS)):
            _add_set(is_hevc, nal_type, nal, sps, pps)
    return sps, pps


@functools.lru_cache(maxsize=64)
def _config_tables(codec: VideoConfig) -> _Sets:
    return _Sets(_is_hevc(codec), [_config_sets(codec)])


def _sets_in_force(codec, data, starts, lengths, types, is_hevc) -> tuple[_Sets, np.ndarray]:
    """The parameter sets and, per NAL unit, its run: how many in-band SPS/PPS precede it."""
    ps = np.isin(types, (hevc.SPS, hevc.PPS) if is_hevc else (avc.SPS, avc.PPS))
    if not ps.any():
        return _config_tables(codec), np.zeros(len(types), dtype=np.int64)
    sps, pps = (dict(d) for d in _config_sets(codec))
    states = [(dict(sps), dict(pps))]
    for i in np.flatnonzero(ps).tolist():     # a few per fragment at most (avc3/hev1 key frames)
        start = int(starts[i])
        _add_set(is_hevc, int(types[i]), data[start:start + int(lengths[i])].tobytes(), sps, pps)
        states.append((dict(sps), dict(pps)))
    return _Sets(is_hevc, states), np.cumsum(ps)
