"""FLV tag bodies (the payloads of RTMP audio/video messages) → samples of the media model.

Tag headers are read by ``packagers.codecs.flv``; this module decides what to package. Video (FLV spec v10.1 §E.4.3,
Enhanced RTMP v1): legacy AVC (codec id 7) and HEVC (12, the widespread extension with the AVC layout; 13, AV1 in the
same extension, is skipped), and E-RTMP ex-headers (IsExHeader bit, FourCC ``avc1``/``hvc1``, packet types
SequenceStart, CodedFrames (with a signed 24-bit composition time), CodedFramesX (composition time 0), SequenceEnd). The
sequence header is the avcC/hvcC record, parsed by the MP4 demuxer's code (``packagers.codecs.avc``/``hevc``), so
the ``CodecConfig`` is the one an MP4 of the same stream gives; width/height come from the SPS (cropped, same
modules), as ffmpeg writes them into an MP4 sample entry. Samples are the length-prefixed NAL units after the tag
header: exactly an MP4 sample.

Audio (§E.4.2): AAC (sound format 10; packet type 0 = AudioSpecificConfig, 1 = one raw frame) and E-RTMP audio
(sound format 9) with FourCC ``mp4a``.

Anything else (VP6, MP3, AV1, multitrack...) is skipped and counted in ``ignored`` with one log line per kind: a
publisher sending a codec we cannot package must not be disconnected for it. Malformed bodies raise `RtmpError`.
Timestamps are unwrapped past 2**32 ms by the signed 32-bit difference to the previous message (audio and video
interleave slightly out of order, so a small step back is a step back, not a wrap).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from packagers.codecs import avc, flv, hevc
from packagers.codecs.aac import parse_audio_specific_config
from packagers.errors import PackagerError
from packagers.model import CodecConfig

from .errors import RtmpError
from .messages import MSG_AUDIO, MSG_VIDEO, Message

__all__ = ["FlvDemuxer", "FlvSample"]

log = logging.getLogger("rtmp.flv")

# FourCC (E-RTMP, or what a legacy codec id stands for) → the sample entry we package; AV1 is not packaged yet
_PACKAGED_VIDEO = {b"avc1": "avc1", b"hvc1": "hvc1"}
U32 = 1 << 32


@dataclass(frozen=True, slots=True)
class FlvSample:
    kind: str        # "video" | "audio"
    dts: int         # ms, publisher timestamp unwrapped past 2**32 to a monotonic 64-bit int
    cts: int         # ms composition offset (AVC/HEVC CompositionTime, signed 24-bit), 0 for audio
    keyframe: bool
    data: bytes      # video: length-prefixed NAL units exactly as in an MP4 sample; audio: one raw AAC frame


class FlvDemuxer:
    """One published stream's FLV tags → `FlvSample`s. Sequence headers update ``video``/``audio`` (and bump
    ``config_generation`` when the configuration really changes) and yield no sample."""

    def __init__(self) -> None:
        self.video: CodecConfig | None = None
        self.audio: CodecConfig | None = None
        self.config_generation = 0
        self.ignored: Counter[str] = Counter()      # skipped messages by reason ("video codec 4", ...)
        self._last_raw: int | None = None
        self._last_dts = 0

    # ------------------------------------------------------------------------------------------------ public
    def feed(self, message: Message) -> list[FlvSample]:
        if message.message_type_id == MSG_VIDEO:
            return self._video(message)
        if message.message_type_id == MSG_AUDIO:
            return self._audio(message)
        return []

    def unwrap(self, timestamp: int) -> int:
        """The 64-bit ms time of a 32-bit RTMP timestamp: previous + signed 32-bit difference."""
        raw = timestamp & (U32 - 1)
        if self._last_raw is None:
            self._last_dts = raw
        else:
            delta = (raw - self._last_raw) & (U32 - 1)
            self._last_dts += delta - U32 if delta >= 1 << 31 else delta
        self._last_raw = raw
        return self._last_dts

    # ------------------------------------------------------------------------------------------------ video
    def _video(self, message: Message) -> list[FlvSample]:
        p = message.payload
        header = flv.video_tag_header(p)
        if header is None:
            raise RtmpError("FlvDemuxer.feed: empty video message")
        if header.ex_header:
            if header.packet_type == flv.METADATA or header.frame_type == flv.FRAME_TYPE_COMMAND:
                return []   # HDR colour info, seek commands: no picture
            if header.packet_type > flv.CODED_FRAMES_X:   # MPEG2TSSequenceStart, Multitrack, ModEx
                return self._ignore(f"E-RTMP video packet type {header.packet_type}")
            if header.fourcc is None:
                raise RtmpError(f"FlvDemuxer.feed: E-RTMP video header of {len(p)} bytes")
            fourcc = _PACKAGED_VIDEO.get(header.fourcc)
            if fourcc is None:
                return self._ignore(f"video FourCC {header.fourcc!r}")
            if header.packet_type == flv.CODED_FRAMES and len(p) < header.header_size:
                raise RtmpError("FlvDemuxer.feed: E-RTMP CodedFrames without composition time")
        else:
            if header.frame_type == flv.FRAME_TYPE_COMMAND:   # one command byte, no picture
                return []
            fourcc = _PACKAGED_VIDEO.get(header.fourcc)
            if fourcc is None:
                return self._ignore(f"video codec id {header.codec_id}")
            if len(p) < header.header_size:
                raise RtmpError(f"FlvDemuxer.feed: AVC video header of {len(p)} bytes")
            if header.packet_type > flv.SEQUENCE_END:
                raise RtmpError(f"FlvDemuxer.feed: AVC packet type {header.packet_type}")
        data = p[header.header_size:]
        if header.packet_type == flv.SEQUENCE_START:
            self._set_video(fourcc, bytes(data))
            return []
        if header.packet_type in (flv.CODED_FRAMES, flv.CODED_FRAMES_X):
            return self._frame(message, fourcc, header.frame_type, header.composition_time, data)
        return []   # end of sequence

    def _frame(self, message: Message, fourcc: str, frame_type: int, cts: int, data: bytes) -> list[FlvSample]:
        dts = self.unwrap(message.timestamp)
        if not data:
            return []
        if self.video is None or self.video.fourcc != fourcc:
            return self._ignore("video frame before its sequence header")
        _check_nal_lengths(data, self.video.nal_length_size)
        return [FlvSample("video", dts, cts, frame_type == 1, bytes(data))]

    def _set_video(self, fourcc: str, record: bytes) -> None:
        syntax = hevc if fourcc == "hvc1" else avc
        try:
            parsed = syntax.parse_config(record, fourcc, "FLV sequence header")
            sps = next((n for n in parsed.parameter_sets if n and _nal_type(syntax, n[0]) == syntax.SPS), None)
            if sps is None:
                raise RtmpError(f"FlvDemuxer.feed: {fourcc} sequence header without SPS")
            width, height = syntax.sps_size(sps)
        except PackagerError as e:
            raise RtmpError(f"FlvDemuxer.feed: bad {fourcc} sequence header: {e.message}") from None
        config = CodecConfig(fourcc=fourcc, codec_string=parsed.codec_string, extradata=record,
                             parameter_sets=parsed.parameter_sets, nal_length_size=parsed.nal_length_size,
                             width=width, height=height)
        if config != self.video:
            self.video = config
            self.config_generation += 1

    # ------------------------------------------------------------------------------------------------ audio
    def _audio(self, message: Message) -> list[FlvSample]:
        p = message.payload
        header = flv.audio_tag_header(p)
        if header is None:
            raise RtmpError("FlvDemuxer.feed: empty audio message")
        packet_type = header.packet_type
        if header.sound_format == flv.SOUND_FORMAT_EX_HEADER:
            if header.fourcc is None:
                raise RtmpError(f"FlvDemuxer.feed: E-RTMP audio header of {len(p)} bytes")
            if header.fourcc != b"mp4a":
                return self._ignore(f"audio FourCC {header.fourcc!r}")
            if packet_type == flv.SEQUENCE_END:
                return []
            if packet_type > flv.CODED_FRAMES:     # MultichannelConfig, Multitrack, ModEx
                return self._ignore(f"E-RTMP audio packet type {packet_type}")
        elif header.sound_format == flv.SOUND_FORMAT_AAC:
            if packet_type is None:
                raise RtmpError("FlvDemuxer.feed: AAC message without packet type")
            if packet_type > flv.CODED_FRAMES:
                raise RtmpError(f"FlvDemuxer.feed: AAC packet type {packet_type}")
        else:
            return self._ignore(f"audio sound format {header.sound_format}")
        body = p[header.header_size:]
        if packet_type == flv.SEQUENCE_START:
            self._set_audio(bytes(body), header.sample_rate, header.channels)
            return []
        dts = self.unwrap(message.timestamp)
        if not body:
            return []
        if self.audio is None:
            return self._ignore("audio frame before its sequence header")
        return [FlvSample("audio", dts, 0, True, bytes(body))]

    def _set_audio(self, asc: bytes, flv_rate: int, flv_channels: int) -> None:
        if not asc:
            raise RtmpError("FlvDemuxer.feed: empty AudioSpecificConfig")
        try:
            parsed = parse_audio_specific_config(asc, "FLV AAC sequence header")
        except PackagerError as e:
            raise RtmpError(f"FlvDemuxer.feed: bad AudioSpecificConfig: {e.message}") from None
        config = CodecConfig(fourcc="mp4a", codec_string=parsed.codec_string, extradata=asc,
                             sample_rate=parsed.sample_rate or flv_rate, channels=parsed.channels or flv_channels)
        if config != self.audio:
            self.audio = config
            self.config_generation += 1

    def _ignore(self, reason: str) -> list[FlvSample]:
        if not self.ignored[reason]:
            log.warning("rtmp flv: skipping %s (counted in FlvDemuxer.ignored)", reason)
        self.ignored[reason] += 1
        return []


# ---------------------------------------------------------------------------------------------------- helpers
def _nal_type(syntax: ModuleType, first_byte: int) -> int:
    """nal_unit_type of one NAL header byte; ``syntax`` is ``packagers.codecs.avc`` or ``hevc``."""
    return int(syntax.nal_unit_types(np.array([first_byte]))[0])


def _check_nal_lengths(data: bytes, nal_length_size: int) -> None:
    """The length prefixes must tile the frame exactly (one step per NAL unit, a handful per frame)."""
    pos, end = 0, len(data)
    while pos < end:
        if pos + nal_length_size > end:
            raise RtmpError(f"FlvDemuxer.feed: NAL length prefix cut at byte {pos} of {end}")
        pos += nal_length_size + int.from_bytes(data[pos:pos + nal_length_size], "big")
    if pos != end:
        raise RtmpError(f"FlvDemuxer.feed: NAL units overrun the frame ({pos} > {end} bytes)")
