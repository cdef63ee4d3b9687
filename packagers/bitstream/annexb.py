"""H.264/HEVC NAL units: MP4 length-prefixed form (ISO/IEC 14496-15) to the Annex B byte stream MPEG-TS carries.

In MP4 each NAL unit is preceded by a big-endian length of ``nal_length_size`` bytes and the parameter sets live
out of band in avcC/hvcC. An elementary stream in MPEG-TS is an Annex B byte stream (ITU-T H.264/H.265 Annex B):
each NAL unit follows a start code, every access unit starts with an access unit delimiter (ISO/IEC 13818-1
2.14.1 requires it for AVC in TS) and the parameter sets must be sent in band before each random access point.

The NAL walk is vectorised: one numpy step per "n-th NAL of every sample", so a segment of 50 frames with one
slice each costs a couple of steps, not 50 Python iterations.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import bad_data

START_CODE = b"\x00\x00\x00\x01"
# Muxers repeat the decoder configuration before every key frame (TS parameter sets, HDS sequence headers), so its
# size multiplies with the frames of a segment. Real encoders write a few hundred bytes; more than this is bad data.
MAX_PARAMETER_SET_BYTES = 16 * 1024

# NAL unit types (H.264 Table 7-1, H.265 Table 7-1)
H264_SPS, H264_PPS, H264_AUD = 7, 8, 9
HEVC_VPS, HEVC_SPS, HEVC_PPS, HEVC_AUD = 32, 33, 34, 35

# access_unit_delimiter_rbsp with "any picture type" (H.264 primary_pic_type 7, H.265 pic_type 2) and the stop bit
AUD_H264 = START_CODE + b"\x09\xf0"
AUD_HEVC = START_CODE + b"\x46\x01\x50"  # nal_unit_type 35, nuh_layer_id 0, nuh_temporal_id_plus1 1


def nal_unit_type(codec: str, first_byte: np.ndarray) -> np.ndarray:
    """nal_unit_type from the first NAL header byte (H.264 7.3.1: low 5 bits; H.265 7.3.1.2: bits 6..1)."""
    first_byte = first_byte.astype(np.uint8)
    return (first_byte >> 1) & 0x3F if codec == "hevc" else first_byte & 0x1F


def sps_type(codec: str) -> int:
    return HEVC_SPS if codec == "hevc" else H264_SPS


def aud_for(codec: str) -> bytes:
    return AUD_HEVC if codec == "hevc" else AUD_H264


def aud_type(codec: str) -> int:
    return HEVC_AUD if codec == "hevc" else H264_AUD


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


def parse_avcc(avcc: bytes) -> tuple[int, tuple[bytes, ...]]:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) → (nal_length_size, (SPS..., PPS...))."""
    try:
        if avcc[0] != 1:
            raise bad_data(f"parse_avcc: configurationVersion {avcc[0]} is not 1")
        nal_length_size = (avcc[4] & 0x03) + 1
        pos, sets = 5, []
        for count_mask in (0x1F, 0xFF):  # numOfSequenceParameterSets (5 bits), numOfPictureParameterSets
            count = avcc[pos] & count_mask
            pos += 1
            for _ in range(count):
                n = int.from_bytes(avcc[pos : pos + 2], "big")
                if pos + 2 + n > len(avcc):
                    raise IndexError
                sets.append(bytes(avcc[pos + 2 : pos + 2 + n]))
                pos += 2 + n
    except IndexError:
        raise bad_data("parse_avcc: avcC record is truncated") from None
    return nal_length_size, tuple(sets)


def parse_hvcc(hvcc: bytes) -> tuple[int, tuple[bytes, ...]]:
    """HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1) → (nal_length_size, (VPS..., SPS..., PPS...)).

    Arrays of other NAL types (SEI) are skipped; parameter sets are returned in VPS, SPS, PPS order.
    """
    try:
        if hvcc[0] != 1:
            raise bad_data(f"parse_hvcc: configurationVersion {hvcc[0]} is not 1")
        nal_length_size = (hvcc[21] & 0x03) + 1
        num_arrays, pos = hvcc[22], 23
        by_type: dict[int, list[bytes]] = {}
        for _ in range(num_arrays):
            nal_type = hvcc[pos] & 0x3F
            count = int.from_bytes(hvcc[pos + 1 : pos + 3], "big")
            pos += 3
            for _ in range(count):
                n = int.from_bytes(hvcc[pos : pos + 2], "big")
                if pos + 2 + n > len(hvcc):
                    raise IndexError
                by_type.setdefault(nal_type, []).append(bytes(hvcc[pos + 2 : pos + 2 + n]))
                pos += 2 + n
    except IndexError:
        raise bad_data("parse_hvcc: hvcC record is truncated") from None
    return nal_length_size, tuple(n for t in (HEVC_VPS, HEVC_SPS, HEVC_PPS) for n in by_type.get(t, ()))
