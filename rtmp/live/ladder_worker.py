"""The transcoding process of one published stream (``rtmp.live.ladder`` starts it): FLV video messages in through a
pipe, each rendition's FLV video messages out (sequence header first), plus its CPU time now and then.

It runs in a process of its own so that decoding and encoding (``packagers.transcode.LadderEncoder``: seconds of
CPU per second of video) never compete with the event loop for the GIL, and a crash (a codec bug, memory) ends this
process only: the source stream and every other stream go on.

Pipe protocol (``Connection.send``/``recv``, pickled tuples): in ``("video", timestamp, payload)``,
``("drop", rendition)`` (overload: stop encoding it), ``("stop",)``; out ``("video", rendition, timestamp, payload,
keyframe, sequence_header)``, ``("failed", rendition, why)``, ``("stats", {name: cpu seconds})``.
"""
from __future__ import annotations

import time
from fractions import Fraction

from packagers.codecs import flv
from packagers.errors import PackagerError
from packagers.transcode import LadderEncoder, Rendition

from ..flv import FlvDemuxer
from ..messages import MSG_VIDEO, Message
from .writer import nominal_frame_rate

STATS_EVERY = 2.0           # s between CPU reports


def video_tag(sample, config=None, cts: int = 0) -> bytes:
    """An AVC VIDEODATA body: the sequence header (``config``: avcC) or one access unit, composition time ``cts``."""
    if config is not None:
        return bytes([flv.FRAME_TYPE_KEY << 4 | flv.CODEC_ID_AVC, flv.AVC_SEQUENCE_HEADER, 0, 0, 0]) + config
    frame = flv.FRAME_TYPE_KEY if sample.keyframe else flv.FRAME_TYPE_INTER
    return bytes([frame << 4 | flv.CODEC_ID_AVC, flv.AVC_NALU]) + cts.to_bytes(3, "big", signed=True) + sample.data


class _Ladder:
    def __init__(self, conn, renditions: list[Rendition]) -> None:
        self.conn, self.renditions = conn, renditions
        self.demuxer = FlvDemuxer()
        self.encoder: LadderEncoder | None = None
        self.generation = -1
        self.waiting: list = []         # the first frames, until their times give the frame rate
        self.announced: set[str] = set()
        # The renditions' pictures come out in presentation order (no B-frames). Sent with the source's decode
        # times (pts - the source key frame's composition offset) and that offset as their composition time, their
        # key frames have the source's dts and pts: a live packager then puts every rendition and the source on
        # the same timeline (HLS variants must have matching timestamps, RFC 8216 §6.2.4).
        self.offset: int | None = None
        self.reported_failed: set[str] = set()
        self.dropped: set[str] = set()

    def feed(self, timestamp: int, payload: bytes) -> None:
        samples = self.demuxer.feed(Message(6, timestamp, MSG_VIDEO, 1, payload))
        if self.demuxer.config_generation != self.generation:   # a new configuration: a new encoder
            self.flush()
            self.encoder, self.generation, self.announced = None, self.demuxer.config_generation, set()
            self.offset = None
        for s in samples:
            if self.encoder is None:
                self.waiting.append(s)
                if len(self.waiting) < 3:
                    continue
                rate = nominal_frame_rate([w.dts for w in self.waiting], 1000, 1 / 50) or Fraction(30)
                running = [r for r in self.renditions if r.name not in self.dropped]
                self.encoder = LadderEncoder(self.demuxer.video, running, frame_rate=rate)
                pending, self.waiting = self.waiting, []
            else:
                pending = [s]
            for p in pending:
                if self.offset is None and p.keyframe:
                    self.offset = p.cts
                try:
                    self.send(self.encoder.encode(p.data, p.dts, p.cts, p.keyframe))
                except PackagerError:
                    pass    # an access unit that does not decode: the next key frame resumes the pictures

    def send(self, encoded) -> None:
        for e in encoded:
            if e.rendition in self.dropped:
                continue
            offset = self.offset or 0
            timestamp = (e.dts + e.cts - offset) & 0xFFFFFFFF
            if e.rendition not in self.announced:
                self.announced.add(e.rendition)
                config = self.encoder.configs[e.rendition].extradata
                self.conn.send(("video", e.rendition, timestamp, video_tag(None, config), True, True))
            self.conn.send(("video", e.rendition, timestamp, video_tag(e, cts=offset), e.keyframe, False))
        if self.encoder is not None:
            for name, why in self.encoder.failed.items():
                if name not in self.reported_failed:
                    self.reported_failed.add(name)
                    self.conn.send(("failed", name, why))

    def drop(self, name: str) -> None:
        self.dropped.add(name)
        if self.encoder is not None:
            self.encoder.failed.setdefault(name, "dropped: the transcoder could not keep up")
            self.reported_failed.add(name)

    def flush(self) -> None:
        if self.encoder is not None:
            self.send(self.encoder.flush())

    def stats(self) -> dict:
        return dict(self.encoder.seconds) if self.encoder is not None else {}


def run(conn, renditions: list[Rendition]) -> None:
    """The process's main: until ``stop`` or the pipe closes."""
    ladder = _Ladder(conn, renditions)
    reported = time.monotonic()
    try:
        while True:
            try:
                item = conn.recv()
            except EOFError:
                return
            if item[0] == "video":
                ladder.feed(item[1], item[2])
            elif item[0] == "drop":
                ladder.drop(item[1])
            elif item[0] == "stop":
                ladder.flush()
                conn.send(("stats", ladder.stats()))
                return
            if time.monotonic() - reported >= STATS_EVERY:
                conn.send(("stats", ladder.stats()))
                reported = time.monotonic()
    except (BrokenPipeError, EOFError):
        return
