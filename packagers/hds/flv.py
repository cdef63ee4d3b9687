"""FLV tags (Adobe Flash Video File Format Specification 10.1, Annex E), written column-wise with numpy.

An F4F fragment's ``mdat`` carries FLV tags without the FLV file header (E.2): each tag is an 11-byte FLVTAG header
(E.4.1: TagType, DataSize UI24, Timestamp UI24 + TimestampExtended UI8, StreamID UI24 = 0), the AUDIODATA (E.4.2.1)
or VIDEODATA (E.4.3.1) header, the data, then PreviousTagSize UI32 (E.3, 11 + DataSize).

``tag_pieces`` writes every header of a fragment at once: row i of a ``(n, 5)`` big-endian uint32 matrix is
[PreviousTagSize of tag i-1][TagType|DataSize][Timestamp|TimestampExtended][StreamID|AV byte 0][AV bytes 1-4], so
the bytes before each tag's data are the start of one row of that matrix (the first row's PreviousTagSize is skipped,
audio rows end after AV byte 1), and the fragment is one ``bytes.join`` of (header, data) pairs: no per-byte work.
"""
from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

from ..errors import bad_data

TAG_TYPE_AUDIO = 8
TAG_TYPE_VIDEO = 9
TAG_TYPE_SCRIPT_DATA = 18
TAG_HEADER_SIZE = 11
PREVIOUS_TAG_SIZE_SIZE = 4
FILE_HEADER_SIZE = 9

# VIDEODATA (E.4.3.1) with AVCVIDEOPACKET: FrameType(4) | CodecID(4), AVCPacketType, CompositionTime SI24
FRAME_TYPE_KEY = 1
FRAME_TYPE_INTER = 2
CODEC_ID_AVC = 7
AVC_SEQUENCE_HEADER = 0
AVC_NALU = 1
VIDEO_HEADER_SIZE = 5

# AUDIODATA (E.4.2.1) with AACAUDIODATA: SoundFormat(4) | SoundRate(2) | SoundSize(1) | SoundType(1), AACPacketType.
# "If the SoundFormat indicates AAC, the SoundType should be set to 1 (stereo) and the SoundRate should be set to 3
# (44 kHz)": the decoder takes the real configuration from the AudioSpecificConfig.
SOUND_FORMAT_AAC = 10
AAC_SOUND_INFO = SOUND_FORMAT_AAC << 4 | 3 << 2 | 1 << 1 | 1  # 0xAF
AAC_SEQUENCE_HEADER = 0
AAC_RAW = 1
AUDIO_HEADER_SIZE = 2

_ROW = 20  # bytes per header row: PreviousTagSize(prev) 4 + FLVTAG 11 + AV header up to 5


def file_header(audio: bool, video: bool) -> bytes:
    """The FLV header (E.2) followed by PreviousTagSize0 = 0: what turns a fragment's tags into an FLV file."""
    flags = (0x04 if audio else 0) | (0x01 if video else 0)
    return b"FLV" + struct.pack(">BBII", 1, flags, FILE_HEADER_SIZE, 0)


def tag(tag_type: int, timestamp: int, data: bytes) -> bytes:
    """One complete tag and its PreviousTagSize (for script data and tests; fragments use ``tag_pieces``)."""
    stamp = (timestamp & 0xFFFFFF) << 8 | timestamp >> 24 & 0xFF
    header = struct.pack(">III", tag_type << 24 | len(data), stamp, 0)[:TAG_HEADER_SIZE]
    return header + data + struct.pack(">I", TAG_HEADER_SIZE + len(data))


def tag_pieces(
    tag_type: np.ndarray, timestamp: np.ndarray, av_words: np.ndarray, av_size: np.ndarray,
    data: Sequence, data_size: np.ndarray,
) -> tuple[list, int]:  # fmt: skip
    """The pieces whose concatenation is tag 0, PreviousTagSize 0, tag 1, ... (see the module docstring), and
    their total size. ``data`` is one bytes-like object per tag; the columns are int64 arrays of the tag count;
    ``av_words`` (n, 2) holds AV header byte 0 (low byte of the first word) and AV bytes 1-4 (big-endian second
    word): FrameType|CodecID, then AVCPacketType and CompositionTime for video; 0xAF, then AACPacketType for audio."""
    n = len(tag_type)
    if n == 0:
        return [], 0
    body_size = av_size + data_size  # DataSize
    if int(body_size.max()) > 0xFFFFFF:
        raise bad_data(f"flv.tag_pieces: a tag of {int(body_size.max())} bytes exceeds DataSize UI24")
    if int(timestamp.min()) < 0 or int(timestamp.max()) > 0xFFFFFFFF:
        raise bad_data("flv.tag_pieces: a timestamp does not fit Timestamp + TimestampExtended (0 .. 2^32-1 ms)")
    rows = np.empty((n, 5), dtype=">u4")
    rows[0, 0] = 0
    rows[1:, 0] = body_size[:-1] + TAG_HEADER_SIZE
    rows[:, 1] = tag_type << 24 | body_size
    rows[:, 2] = (timestamp & 0xFFFFFF) << 8 | (timestamp >> 24 & 0xFF)
    rows[:, 3:] = av_words
    heads = _row_bytes(rows.view(np.uint8).reshape(n, _ROW), PREVIOUS_TAG_SIZE_SIZE + TAG_HEADER_SIZE + av_size)
    heads[0] = heads[0][PREVIOUS_TAG_SIZE_SIZE:]  # nothing precedes the first tag
    pieces: list = [None] * (2 * n + 1)
    pieces[0:-1:2] = heads
    pieces[1::2] = data
    pieces[-1] = struct.pack(">I", int(body_size[-1]) + TAG_HEADER_SIZE)
    total = int(body_size.sum()) + n * (TAG_HEADER_SIZE + PREVIOUS_TAG_SIZE_SIZE)
    return pieces, total


def _row_bytes(matrix: np.ndarray, length: np.ndarray) -> list[bytes]:
    """Row i of ``matrix`` cut to ``length[i]`` bytes, as bytes objects: one fixed-size void view per distinct length
    (``tolist`` on it makes the bytes objects in C, far cheaper than a slice per row)."""
    lengths = np.unique(length)
    if len(lengths) == 1:
        width = int(lengths[0])
        return np.ascontiguousarray(matrix[:, :width]).view(f"V{width}").ravel().tolist()
    pool: list[bytes] = []
    where = np.empty(len(length), dtype=np.int64)
    for width in lengths.tolist():
        rows = np.flatnonzero(length == width)
        where[rows] = len(pool) + np.arange(len(rows))
        pool += np.ascontiguousarray(matrix[rows, :width]).view(f"V{width}").ravel().tolist()
    return list(map(pool.__getitem__, where.tolist()))
