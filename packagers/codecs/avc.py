"""H.264/AVC: the avcC record, SPS picture size, NAL unit types, and the MP4 length-prefixed ↔ Annex B conversion.

* avcC, AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1): profile, compatibility and level give the
  RFC 6381 string ``avc1.PPCCLL``; the record carries the SPS/PPS a TS muxer repeats in band before key frames.
* The SPS (ITU-T H.264 §7.3.2.1.1) gives the cropped picture size (what ffmpeg writes into a sample entry); the
  exp-Golomb reader ``RbspBits`` is shared with ``hevc``.
* In MP4 each NAL unit is preceded by a big-endian length of ``nal_length_size`` bytes; an elementary stream in
  MPEG-TS is an Annex B byte stream (ITU-T H.264/H.265 Annex B): each NAL unit follows a start code, every access
  unit starts with an access unit delimiter (ISO/IEC 13818-1 2.14.1 requires it for AVC in TS). The conversion is
  the same for HEVC, so it lives here and ``hevc`` only adds its NAL header layout.

The NAL walk is vectorised: one numpy step per "n-th NAL of every sample", so a segment of 50 frames with one slice
each costs a couple of steps, not 50 Python iterations.

``avc`` and ``hevc`` expose the same names for what the TS muxer picks per codec (``SPS``, ``AUD``,
``AUD_NAL_TYPE``, ``nal_unit_types``, ``parse_config``, ``sps_size``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import bad_data
from .bits import BitReader

START_CODE = b"\x00\x00\x00\x01"
# Muxers repeat the decoder configuration before every key frame (TS parameter sets, HDS sequence headers), so its
# size multiplies with the frames of a segment. Real encoders write a few hundred bytes; more than this is bad data.
MAX_PARAMETER_SET_BYTES = 16 * 1024

# NAL unit types (H.264 Table 7-1)
SPS, PPS, AUD_NAL_TYPE = 7, 8, 9
# access_unit_delimiter_rbsp with "any picture type" (primary_pic_type 7) and the stop bit
AUD = START_CODE + b"\x09\xf0"

_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}   # SPS with chroma_format_idc...
SUB_WIDTH_HEIGHT = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}   # chroma_format_idc → SubWidthC, SubHeightC
_EMULATION_PREVENTION = re.compile(b"\x00\x00\x03")


def nal_unit_types(first_byte: np.ndarray) -> np.ndarray:
    """nal_unit_type from the first NAL header byte (H.264 7.3.1: the low 5 bits)."""
    return first_byte.astype(np.uint8) & 0x1F


# ---------------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class VideoConfig:
    codec_string: str
    nal_length_size: int
    parameter_sets: tuple[bytes, ...]


class RecordReader:
    """Bounds-checked reads over a decoder configuration record; overruns are BAD_DATA."""

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
        return [bytes(self.take(self.u16())) for _ in range(count)]


def nal_length_size(length_size_minus_one: int, func: str, where: str) -> int:
    """lengthSizeMinusOne (2 bits) → 1, 2 or 4; 3 is not allowed by ISO/IEC 14496-15."""
    size = (length_size_minus_one & 3) + 1
    if size == 3:
        raise bad_data(f"{func}: NAL length size 3 is not allowed in {where}")
    return size


def avc_codec_string(fourcc: str, profile: int, compatibility: int, level: int) -> str:
    """RFC 6381 §3.3: avc1.PPCCLL, the three bytes as hex."""
    return f"{fourcc}.{profile:02x}{compatibility:02x}{level:02x}"


def parse_avcc(avcc: bytes, fourcc: str, where: str) -> VideoConfig:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1); the high-profile extension fields are ignored."""
    c = RecordReader(avcc, "parse_avcc", where)
    version, profile, compatibility, level = c.take(4)
    if version != 1:
        raise bad_data(f"parse_avcc: configurationVersion {version} in {where}")
    length_size = nal_length_size(c.u8(), "parse_avcc", where)
    sps = c.nal_units(c.u8() & 0x1F)
    pps = c.nal_units(c.u8())
    return VideoConfig(avc_codec_string(fourcc, profile, compatibility, level), length_size, tuple(sps + pps))


parse_config = parse_avcc


# ---------------------------------------------------------------------------------------------------- SPS
class RbspBits(BitReader):
    """Exp-Golomb reader over the RBSP of a NAL unit (emulation prevention bytes removed); overruns are BAD_DATA.

    Only the first ``limit`` bytes are read: the fields callers want sit near the start of a parameter set (or of a
    slice); ``what`` names the structure in error messages."""

    def __init__(self, nal: bytes, header_bytes: int, func: str, limit: int = 512, what: str = "SPS") -> None:
        super().__init__(_EMULATION_PREVENTION.sub(b"\x00\x00", nal[header_bytes:header_bytes + limit]),
                         f"{func}: {what} truncated")
        self.func, self.what = func, what

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise bad_data(f"{self.func}: {self.what} exp-Golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _sps_fields(b: RbspBits) -> dict:
    """An H.264 SPS (§7.3.2.1.1) from its start up to frame_mbs_only_flag, by name."""
    profile_idc = b.u(8)
    b.u(16)     # constraint flags, level_idc
    sps_id = b.ue()
    chroma_format_idc, separate_planes = 1, 0
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = b.ue()
        if chroma_format_idc == 3:
            separate_planes = b.u(1)
        b.ue(), b.ue(), b.u(1)      # bit depths, qpprime_y_zero_transform_bypass_flag
        if b.u(1):                  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma_format_idc == 3 else 8):
                if b.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    log2_max_frame_num = b.ue() + 4
    poc_type, log2_max_poc_lsb, delta_always_zero = b.ue(), 0, 0
    if poc_type == 0:
        log2_max_poc_lsb = b.ue() + 4
    elif poc_type == 1:
        delta_always_zero = b.u(1)
        b.se(), b.se()
        for _ in range(min(b.ue(), 255)):
            b.se()
    b.ue(), b.u(1)      # max_num_ref_frames, gaps_in_frame_num_value_allowed_flag
    width_mbs, height_units = b.ue() + 1, b.ue() + 1
    return dict(sps_id=sps_id, chroma_format_idc=chroma_format_idc, separate_colour_plane=separate_planes,
                log2_max_frame_num=log2_max_frame_num, poc_type=poc_type, log2_max_poc_lsb=log2_max_poc_lsb,
                delta_pic_order_always_zero=delta_always_zero, width_mbs=width_mbs, height_units=height_units,
                frame_mbs_only=b.u(1))


def sps_size(sps: bytes) -> tuple[int, int]:
    """Cropped picture size from an H.264 SPS (ITU-T H.264 §7.3.2.1.1, §7.4.2.1.1 frame_crop_*)."""
    b = RbspBits(sps, 1, "avc.sps_size")
    f = _sps_fields(b)
    frame_mbs_only, chroma_format_idc = f["frame_mbs_only"], f["chroma_format_idc"]
    if not frame_mbs_only:
        b.u(1)
    b.u(1)      # direct_8x8_inference_flag
    crop = (b.ue(), b.ue(), b.ue(), b.ue()) if b.u(1) else (0, 0, 0, 0)
    chroma_array_type = 0 if f["separate_colour_plane"] else chroma_format_idc
    sub_w, sub_h = SUB_WIDTH_HEIGHT[chroma_array_type] if chroma_array_type else (1, 1)
    unit_x, unit_y = sub_w, sub_h * (2 - frame_mbs_only)
    width = f["width_mbs"] * 16 - unit_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * f["height_units"] * 16 - unit_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise bad_data(f"avc.sps_size: SPS gives a {width}x{height} picture")
    return width, height


def slice_sps(sps: bytes) -> dict:
    """The SPS fields an H.264 slice header depends on (§7.3.3), by name."""
    f = _sps_fields(RbspBits(sps, 1, "avc.slice_sps"))
    if f["sps_id"] > 31 or f["log2_max_frame_num"] > 16 or f["log2_max_poc_lsb"] > 16 or f["poc_type"] > 2 \
            or f["chroma_format_idc"] > 3:
        raise bad_data(f"avc.slice_sps: SPS {f['sps_id']} has a field out of range")
    f["chroma_array_type"] = 0 if f["separate_colour_plane"] else f["chroma_format_idc"]
    return f


def slice_pps(pps: bytes) -> dict:
    """The PPS fields an H.264 slice header depends on (§7.3.2.2, read up to redundant_pic_cnt_present_flag; a PPS
    with slice groups (FMO) stops at num_slice_groups_minus1: slices using it are refused)."""
    b = RbspBits(pps, 1, "avc.slice_pps", what="PPS")
    pps_id, sps_id = b.ue(), b.ue()
    entropy, bottom_field_poc = b.u(1), b.u(1)
    slice_groups = b.ue()
    out = dict(pps_id=pps_id, sps_id=sps_id, entropy_coding_mode=entropy,
               bottom_field_pic_order_present=bottom_field_poc, num_slice_groups_minus1=slice_groups)
    if pps_id > 255 or sps_id > 31:
        raise bad_data(f"avc.slice_pps: PPS {pps_id} or its SPS {sps_id} out of range")
    if slice_groups:
        return out | dict(l0_default=0, l1_default=0, weighted_pred=0, weighted_bipred_idc=0,
                          deblocking_filter_control=0, redundant_pic_cnt_present=0)
    out.update(l0_default=b.ue(), l1_default=b.ue(), weighted_pred=b.u(1), weighted_bipred_idc=b.u(2))
    b.se(), b.se(), b.se()      # pic_init_qp_minus26, pic_init_qs_minus26, chroma_qp_index_offset
    out.update(deblocking_filter_control=b.u(1))
    b.u(1)                      # constrained_intra_pred_flag
    out.update(redundant_pic_cnt_present=b.u(1))
    if out["l0_default"] > 31 or out["l1_default"] > 31:
        raise bad_data(f"avc.slice_pps: PPS {pps_id} has more than 32 default references")
    return out


# ---------------------------------------------------------------------------------------------------- Annex B
def with_start_codes(nal_units: Sequence[bytes]) -> bytes:
    """Raw NAL units (e.g. ``CodecConfig.parameter_sets``) as one Annex B blob with 4-byte start codes."""
    return b"".join(START_CODE + bytes(n) for n in nal_units)


def _read_be(data: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """Big-endian unsigned integers of ``width`` bytes at each ``pos`` (int64)."""
    if width == 4:
        return data[pos[:, None] + _FOUR].view(">u4").ravel().astype(np.int64)
    value = np.zeros(len(pos), dtype=np.int64)
    for i in range(width):
        value = (value << 8) | data[pos + i]
    return value


_FOUR = np.arange(4)


def nal_units(data: np.ndarray, starts: np.ndarray, sizes: np.ndarray, nal_length_size: int):
    """Walk the length prefixes of every sample (ISO/IEC 14496-15 5.3.3 sample format).

    ``data`` is the uint8 view of the samples back to back, sample i at ``starts[i]`` with ``sizes[i]`` bytes.
    Returns ``(offsets, lengths, owner)``: where each NAL unit's length prefix starts in ``data``, the NAL unit's
    length (without the prefix) and the index of its sample, in byte order. Raises BAD_DATA when a NAL unit runs past
    its sample.
    """
    if nal_length_size not in (1, 2, 3, 4):
        raise bad_data(f"nal_units: unsupported NAL length size {nal_length_size}")
    starts, sizes = np.asarray(starts, dtype=np.int64), np.asarray(sizes, dtype=np.int64)
    pos, end, own = starts, starts + sizes, np.arange(len(starts))
    if not sizes.all():  # empty samples have no NAL units
        live = sizes > 0
        pos, end, own = pos[live], end[live], own[live]
    found = []
    while len(pos):
        try:
            length = _read_be(data, pos, nal_length_size)
        except IndexError:
            raise bad_data("nal_units: truncated NAL length prefix at the end of the data") from None
        nxt = pos + nal_length_size + length
        found.append((pos, length, own))
        if (nxt == end).all():  # every sample ends here (the common case: one NAL unit each)
            break
        if (nxt > end).any():
            raise bad_data("nal_units: a NAL unit or its length prefix extends past the end of its sample")
        more = nxt < end
        pos, end, own = nxt[more], end[more], own[more]
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    if len(found) == 1:
        return found[0]
    offsets, lengths, owner = (np.concatenate(c) for c in zip(*found))
    order = np.argsort(offsets, kind="stable")
    return offsets[order], lengths[order], owner[order]


def to_annexb(payload: bytes, sizes: np.ndarray, nal_length_size: int) -> tuple[bytes, np.ndarray]:
    """Replace every length prefix by a 4-byte start code; returns the new payload and the new sample sizes.

    Nothing is inserted (``TsMuxer`` adds AUD and parameter sets). With 4-byte lengths the layout is unchanged and
    the prefixes are overwritten in one copy; other sizes are widened to 4 bytes first.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if nal_length_size != 4:
        payload, sizes = widen_length_prefixes(payload, sizes, nal_length_size)
    starts = np.zeros(len(sizes), dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    out = bytearray(payload)
    offsets, _, _ = nal_units(np.frombuffer(out, dtype=np.uint8), starts, sizes, 4)
    write_start_codes(np.frombuffer(out, dtype=np.uint8), offsets)
    return bytes(out), sizes


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B stream (3- or 4-byte start codes)."""
    units, i, n = [], 0, len(data)
    starts = []
    while True:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else n
        # a NAL unit never ends in a zero byte (rbsp_trailing_bits): zeros there are a 4-byte start code's first
        # byte or trailing_zero_8bits
        units.append(data[s:end].rstrip(b"\x00"))
    return [u for u in units if u]


def annexb_to_avcc(data: bytes) -> bytes:
    """An Annex B access unit as AVCC (4-byte length prefixes): the inverse of ``to_annexb`` (an encoder's output
    into what MP4 and FLV carry)."""
    return b"".join(len(u).to_bytes(4, "big") + u for u in split_annexb(data))


def widen_length_prefixes(payload: bytes, sizes: np.ndarray, nal_length_size: int) -> tuple[bytes, np.ndarray]:
    """Rewrite samples with 1-, 2- or 3-byte NAL length prefixes to 4-byte prefixes (one join over the NALs)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    starts = np.zeros(len(sizes), dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    offsets, lengths, owner = nal_units(np.frombuffer(payload, dtype=np.uint8), starts, sizes, nal_length_size)
    prefixes = memoryview(lengths.astype(">u4").tobytes())
    mv = memoryview(payload)
    body = (offsets + nal_length_size).tolist()
    pieces: list = [None] * (2 * len(body))
    pieces[0::2] = [prefixes[4 * i : 4 * i + 4] for i in range(len(body))]
    pieces[1::2] = [mv[a : a + n] for a, n in zip(body, lengths.tolist())]
    new_sizes = sizes + np.bincount(owner, minlength=len(sizes)) * (4 - nal_length_size)
    return b"".join(pieces), new_sizes


def write_start_codes(buf: np.ndarray, offsets: np.ndarray) -> None:
    """Overwrite 4-byte NAL length prefixes at ``offsets`` of a writable uint8 array with 00 00 00 01."""
    if len(offsets):
        buf[offsets] = 0
        buf[offsets + 1] = 0
        buf[offsets + 2] = 0
        buf[offsets + 3] = 1


def emulation_prevention_insertions(data: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                                    pairs: np.ndarray | None = None) -> np.ndarray:
    """Where an emulation_prevention_three_byte goes (before ``data[i]``; ``i`` may be a unit's end) so that no
    00 00 0x (x <= 3) is left in the units ``data[starts[j]:ends[j]]`` (sorted, disjoint; H.264 7.4.1). Array
    passes instead of the sequential scan: only runs of two or more zeros matter, found as pairs of zero bytes (few
    in compressed or encrypted data). In a run of r zeros starting at ``a`` the escape comes before the zeros at
    a+2, a+4, ...; after the run the zero count is 2 when r is even, and then the next byte is escaped if it is
    1..3, or a 0x03 is appended when the unit ends there (as after a cabac_zero_word)."""
    if pairs is None:  # every i with data[i] == data[i + 1] == 0 (callers may bring them from a reused buffer)
        zero = data == 0
        pairs = np.flatnonzero(zero[:-1] & zero[1:])
    pair = pairs
    unit = np.searchsorted(starts, pair, "right") - 1
    inside = (unit >= 0) & (pair + 1 < ends[np.maximum(unit, 0)])  # a run stops at its unit's end
    pair, unit = pair[inside], unit[inside]
    if not len(pair):
        return pair
    run = np.flatnonzero(np.diff(pair, prepend=-2) != 1)  # first pair of each run
    run_start, unit = pair[run], unit[run]
    r = np.diff(run, append=len(pair)) + 1
    run_end = run_start + r
    inner = (r - 1) // 2
    first = np.cumsum(inner) - inner
    inner_at = np.repeat(run_start, inner) + 2 * (np.arange(int(inner.sum())) - np.repeat(first, inner) + 1)
    at_end = run_end == ends[unit]
    after = data[np.minimum(run_end, len(data) - 1)]
    trailing = run_end[(r % 2 == 0) & (at_end | (after <= 3))]
    return np.sort(np.concatenate((inner_at, trailing)))


def with_escapes(out: np.ndarray, inserted: np.ndarray) -> bytes:
    """``out`` with a 0x03 before each position of ``inserted``, in one join (a new ``bytes``)."""
    bounds, view = [0, *inserted.tolist(), len(out)], memoryview(out)
    pieces: list = [b"\x03"] * (2 * len(inserted) + 1)
    pieces[0::2] = map(view.__getitem__, map(slice, bounds[:-1], bounds[1:]))
    return b"".join(pieces)
