"""The newest picture of a live stream (``/live/<app>/<stream>/thumb-now.jpg``), without a sample table.

Two sources, both plain bytes: the RTMP relay's GOP cache (the video sequence header and every FLV video payload since
the last key frame: the freshest picture, on the node the publisher is connected to), or the newest MPEG-TS segment
the live packager wrote to the shared store (any node; a segment older). Either way everything is decoded and the
frame presented last is kept.
"""
from __future__ import annotations

import io
from typing import Sequence

from ..codecs.flv import CODED_FRAMES, CODED_FRAMES_X, video_tag_header
from ..errors import bad_data
from .frames import DECODERS


def latest_from_gop(sequence_header: bytes, frames: Sequence[tuple[int, bytes]]):
    """The ``av.VideoFrame`` presented last among FLV video ``frames`` ((timestamp ms, VIDEODATA payload), decode
    order, from a key frame on) decoded with the configuration record of ``sequence_header`` (AVC, HEVC, AV1)."""
    import av

    header = video_tag_header(sequence_header)
    if header is None or not header.is_sequence_header or header.fourcc is None:
        raise bad_data("latest_from_gop: the stream's video sequence header is not one we decode")
    name = DECODERS.get(header.fourcc.decode("latin-1"))
    if name is None:
        raise bad_data(f"latest_from_gop: no thumbnail decoder for video {header.fourcc!r}")
    try:
        ctx = av.CodecContext.create(name, "r")
        ctx.extradata = bytes(sequence_header[header.header_size:])
        ctx.thread_count = 1
        pictures = []
        for timestamp, payload in frames:
            tag = video_tag_header(payload)
            if tag is None or tag.is_sequence_header or tag.packet_type not in (CODED_FRAMES, CODED_FRAMES_X):
                continue
            if len(payload) <= tag.header_size:
                continue
            packet = av.Packet(bytes(payload[tag.header_size:]))
            packet.dts, packet.pts = timestamp, timestamp + tag.composition_time
            pictures += ctx.decode(packet)
        pictures += ctx.decode(None)
    except av.FFmpegError as e:
        raise bad_data(f"latest_from_gop: the cached GOP does not decode: {e}") from None
    if not pictures:
        raise bad_data("latest_from_gop: the cached GOP holds no picture")
    return max(pictures, key=lambda f: f.pts if f.pts is not None else -1)


def latest_from_segment(segment: bytes, container_format: str = "mpegts"):
    """The ``av.VideoFrame`` presented last in a live segment (the live packager's newest): MPEG-TS, or fMP4
    (``"mp4"``: its init segment and the segment, back to back)."""
    import av

    try:
        with av.open(io.BytesIO(segment), format=container_format) as container:
            if not container.streams.video:
                raise bad_data("latest_from_segment: the live segment has no video")
            stream = container.streams.video[0]
            stream.thread_count = 1
            pictures = list(container.decode(stream))
    except av.FFmpegError as e:
        raise bad_data(f"latest_from_segment: the live segment does not decode: {e}") from None
    if not pictures:
        raise bad_data("latest_from_segment: the live segment holds no picture")
    return max(pictures, key=lambda f: f.pts if f.pts is not None else -1)
