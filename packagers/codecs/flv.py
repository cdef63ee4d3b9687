"""FLV tags (Adobe Flash Video File Format Specification 10.1, Annex E, and Enhanced RTMP v1): the one place that
reads and writes their headers. RTMP audio/video message bodies are FLV tag bodies, so rtmp uses the read side;
HDS fragments are FLV tags, so hds uses the write side.

Writing. An F4F fragment's ``mdat`` carries FLV tags without the FLV file header (E.2): each tag is an 11-byte FLVTAG
header (E.4.1: TagType, DataSize UI24, Timestamp UI24 + TimestampExtended UI8, StreamID UI24 = 0), the AUDIODATA
(E.4.2.1) or VIDEODATA (E.4.3.1) header, the data, then PreviousTagSize UI32 (E.3, 11 + DataSize).

``tag_pieces`` writes every header of a fragment at once: row i of a ``(n, 5)`` big-endian uint32 matrix is
[PreviousTagSize of tag i-1][TagType|DataSize][Timestamp|TimestampExtended][StreamID|AV byte 0][AV bytes 1-4], so
the bytes before each tag's data are the start of one row of that matrix (the first row's PreviousTagSize is skipped,
audio rows end after AV byte 1), and the fragment is one ``bytes.join`` of (header, data) pairs: no per-byte work.

Reading. ``video_tag_header`` / ``audio_tag_header`` classify a tag body without raising (a relay must forward what
it cannot read): legacy VIDEODATA is FrameType(4) | CodecID(4), and codec ids 7 (AVC), 12 (HEVC) and 13 (AV1) carry
an AVC-style packet type and SI24 composition time. 12 and 13 are not in Adobe's spec: they are the CDN-Union /
Tencent "FLV extension for HEVC and AV1" that SRS, nginx-rtmp forks and patched ffmpeg builds send (stock ffmpeg and
OBS send HEVC/AV1 as Enhanced RTMP instead). Enhanced RTMP sets bit 0x80 of the first byte (IsExHeader), then
FrameType(3) | PacketType(4) and a FourCC; E-RTMP audio is SoundFormat 9 | AudioPacketType, then a FourCC.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from ..errors import bad_data

TAG_TYPE_AUDIO = 8
TAG_TYPE_VIDEO = 9
TAG_TYPE_SCRIPT_DATA = 18
TAG_HEADER_SIZE = 11
PREVIOUS_TAG_SIZE_SIZE = 4
FILE_HEADER_SIZE = 9
_TAG_HEADER = struct.Struct(">BHBHBI")   # TagType, DataSize (hi 16, lo 8), Timestamp (hi 16, lo 8), ext|StreamID

# VIDEODATA (E.4.3.1) with AVCVIDEOPACKET: FrameType(4) | CodecID(4), AVCPacketType, CompositionTime SI24
FRAME_TYPE_KEY = 1
FRAME_TYPE_INTER = 2
FRAME_TYPE_COMMAND = 5  # video info / command frame: one command byte, no picture
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


# ---------------------------------------------------------------------------------------------------- reading
# Legacy CodecID (E.4.3.1, and the HEVC/AV1 extension) → name; the ones with the AVC packet layout → FourCC.
VIDEO_CODEC_NAMES = {2: "h263", 3: "screen", 4: "vp6", 5: "vp6a", 6: "screen2", 7: "avc", 12: "hevc", 13: "av1"}
_AVC_LAYOUT_FOURCC = {7: b"avc1", 12: b"hvc1", 13: b"av01"}
# Legacy SoundFormat (E.4.2.1) → name; 9 is Enhanced RTMP's ExHeader (a FourCC follows).
SOUND_FORMAT_NAMES = {0: "pcm", 1: "adpcm", 2: "mp3", 3: "pcm_le", 7: "g711a", 8: "g711u", 10: "aac", 11: "speex",
                      14: "mp3_8k"}
SOUND_FORMAT_EX_HEADER = 9
SOUND_RATES = (5512, 11025, 22050, 44100)   # SoundRate (2 bits); AAC's real rate is in its AudioSpecificConfig

# Enhanced RTMP PacketType (video) / AudioPacketType; the legacy AVC/AAC packet types 0, 1, 2 are the first three.
SEQUENCE_START, CODED_FRAMES, SEQUENCE_END, CODED_FRAMES_X, METADATA, MPEG2TS_SEQUENCE_START = range(6)


class TagHeader(NamedTuple):
    """The 11-byte FLVTAG header (E.4.1)."""

    tag_type: int
    data_size: int
    timestamp: int      # ms, Timestamp + TimestampExtended (32 bits)
    stream_id: int


def parse_tag_header(data: bytes, pos: int = 0) -> TagHeader:
    """The FLVTAG header at data[pos:]; raises PackagerError (bad data) when fewer than 11 bytes are left."""
    if len(data) - pos < TAG_HEADER_SIZE:
        raise bad_data(f"flv.parse_tag_header: {len(data) - pos} bytes at {pos}, a tag header has {TAG_HEADER_SIZE}")
    tag_type, size_hi, size_lo, stamp_hi, stamp_lo, ext_stream = _TAG_HEADER.unpack_from(data, pos)
    return TagHeader(tag_type, size_hi << 8 | size_lo, ext_stream >> 24 << 24 | stamp_hi << 8 | stamp_lo,
                     ext_stream & 0xFFFFFF)


@dataclass(frozen=True, slots=True)
class VideoTagHeader:
    """What the first bytes of a VIDEODATA body say. Fields the body is too short for are None (or 0 for the
    composition time); ``header_size`` is where the codec data starts when the body is long enough."""

    ex_header: bool             # Enhanced RTMP
    frame_type: int             # 1 key frame, 2 inter frame, 5 command frame, ...
    codec_id: int | None        # legacy CodecID; None for E-RTMP
    fourcc: bytes | None        # E-RTMP FourCC, or the FourCC of a legacy id with the AVC layout
    packet_type: int | None     # E-RTMP PacketType or legacy AVCPacketType (same numbers for 0-2)
    composition_time: int       # ms, SI24; 0 when the packet type has none
    header_size: int            # bytes before the codec data (NAL units, configuration record)

    @property
    def is_sequence_header(self) -> bool:
        """Carries the decoder configuration (avcC/hvcC/av1C; E-RTMP MPEG2TSSequenceStart too)."""
        if self.ex_header:
            return self.packet_type in (SEQUENCE_START, MPEG2TS_SEQUENCE_START)
        return self.codec_id in _AVC_LAYOUT_FOURCC and self.packet_type == SEQUENCE_START

    @property
    def is_keyframe(self) -> bool:
        """A key frame picture: not a sequence header, not E-RTMP metadata."""
        if self.frame_type != FRAME_TYPE_KEY or self.is_sequence_header:
            return False
        return not (self.ex_header and self.packet_type == METADATA)

    @property
    def codec_name(self) -> str | None:
        if self.ex_header:
            return self.fourcc.decode("latin-1") if self.fourcc is not None else None
        return VIDEO_CODEC_NAMES.get(self.codec_id)


@dataclass(frozen=True, slots=True)
class AudioTagHeader:
    """What the first bytes of an AUDIODATA body say; see `VideoTagHeader`."""

    sound_format: int           # 10 AAC, 9 E-RTMP ex-header, ...
    fourcc: bytes | None        # E-RTMP FourCC
    packet_type: int | None     # AACPacketType or E-RTMP AudioPacketType; None for other formats
    sample_rate: int            # SoundRate in Hz (legacy formats; 0 for E-RTMP, where the configuration says)
    channels: int               # SoundType + 1 (legacy formats; 0 for E-RTMP)
    header_size: int            # bytes before the codec data

    @property
    def is_sequence_header(self) -> bool:
        """Carries the decoder configuration (AudioSpecificConfig, or the E-RTMP SequenceStart)."""
        return self.packet_type == SEQUENCE_START and self.sound_format in (SOUND_FORMAT_AAC, SOUND_FORMAT_EX_HEADER)

    @property
    def codec_name(self) -> str | None:
        if self.sound_format == SOUND_FORMAT_EX_HEADER:
            return self.fourcc.decode("latin-1") if self.fourcc is not None else None
        return SOUND_FORMAT_NAMES.get(self.sound_format)


def _si24(body: bytes, at: int) -> int:
    v = int.from_bytes(body[at:at + 3], "big")
    return v - (1 << 24) if v & 0x800000 else v


def video_tag_header(body: bytes) -> VideoTagHeader | None:
    """The header of a VIDEODATA body (legacy or E-RTMP); None for an empty body. Never raises."""
    if not body:
        return None
    b = body[0]
    fourcc = bytes(body[1:5]) if len(body) >= 5 else None
    if b & 0x80:    # IsExHeader | FrameType (3 bits) | PacketType (4 bits), FourCC
        packet_type = b & 0x0F
        if packet_type == CODED_FRAMES:     # CodedFrames: SI24 composition time before the data
            return VideoTagHeader(True, (b >> 4) & 7, None, fourcc, packet_type,
                                  _si24(body, 5) if len(body) >= 8 else 0, 8)
        return VideoTagHeader(True, (b >> 4) & 7, None, fourcc, packet_type, 0, 5)
    codec_id = b & 0x0F
    layout = _AVC_LAYOUT_FOURCC.get(codec_id)
    if layout is None:
        return VideoTagHeader(False, b >> 4, codec_id, None, None, 0, 1)
    packet_type = body[1] if len(body) > 1 else None
    cts = _si24(body, 2) if packet_type == CODED_FRAMES and len(body) >= 5 else 0
    return VideoTagHeader(False, b >> 4, codec_id, layout, packet_type, cts, VIDEO_HEADER_SIZE)


def audio_tag_header(body: bytes) -> AudioTagHeader | None:
    """The header of an AUDIODATA body (legacy or E-RTMP); None for an empty body. Never raises."""
    if not body:
        return None
    b = body[0]
    sound_format = b >> 4
    if sound_format == SOUND_FORMAT_EX_HEADER:     # SoundFormat 9 | AudioPacketType, FourCC
        return AudioTagHeader(sound_format, bytes(body[1:5]) if len(body) >= 5 else None, b & 0x0F, 0, 0, 5)
    rate, channels = SOUND_RATES[(b >> 2) & 3], 1 + (b & 1)
    if sound_format == SOUND_FORMAT_AAC:
        return AudioTagHeader(sound_format, None, body[1] if len(body) > 1 else None, rate, channels,
                              AUDIO_HEADER_SIZE)
    return AudioTagHeader(sound_format, None, None, rate, channels, 1)
