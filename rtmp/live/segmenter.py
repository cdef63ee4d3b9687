"""Live segmenter, sans-I/O: one publish's RTMP audio/video messages → `Cut`s (the samples of one segment per track).

Timelines. A *period* is a stretch with one codec configuration and one clock: it starts at a video key frame (or,
without video, at the first audio frame) whose publisher time becomes media time 0 (``base``). A publish, a new
sequence header with a different configuration, an overflow of the packager's queue (``interrupt``) and a segment
that grew past ``max_segment_ms`` without a key frame all end the period; the next one starts at the next key frame.

Times. Video: 90 kHz, ``(dts_ms - base) * 90`` and ``cts_ms * 90``: integers, exact, no drift. Audio: the sample rate,
each AAC frame snapped onto the previous frame's end (1024 or 2048 samples later) while the publisher's millisecond
time stays within half a frame of it; beyond that (a real gap) it resyncs to the publisher's time. So consecutive
segments tile the timeline exactly (the next segment starts where the last sample of this one ends).

Cuts. Video: before the first key frame at or after ``target_ms`` since the segment's first key frame; audio frames
before that key frame's time go with the closing segment. Audio only: before the first frame at or after
``target_ms``. A segment's presentation span runs from its earliest pts to its latest pts + duration (with video: to
the next key frame's pts), so for closed GOPs it is exactly the next segment's start.

Parts (low-latency HLS, ``part_ms`` > 0): a segment is also cut into `Part`s as its samples arrive, each as long as
fits in ``part_ms`` (never longer than the PART-TARGET the playlist states: exactly as long for the common frame
rates, so parts meet whole-second key frames), or closed early at a key frame once it is 85 % full; audio is split
at the same times as video; the last part of a segment ends where the segment does and is emitted just before its
`Cut`. Parts tile their segment: the same samples, in order.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from packagers.model import CodecConfig, SampleTable, Track

from ..flv import FlvDemuxer, FlvSample
from ..messages import Message

__all__ = ["Cut", "LiveSegmenter", "Part", "TrackCut", "VIDEO_TIMESCALE"]

log = logging.getLogger("rtmp.live")

VIDEO_TIMESCALE = 90_000
VIDEO_TRACK_ID, AUDIO_TRACK_ID = 1, 2


@dataclass(frozen=True, eq=False)
class TrackCut:
    """One track's share of a segment: samples with offsets into ``b"".join(chunks)``, and its presentation span."""
    track: Track            # the period's track (codec, timescale); its own sample table is empty
    samples: SampleTable
    chunks: tuple[bytes, ...]
    start: int              # earliest presentation time, ticks of period media time
    duration: int           # presentation span, ticks

    @property
    def size(self) -> int:
        return int(self.samples.sizes.sum(dtype=np.uint64))


@dataclass(frozen=True, eq=False)
class Cut:
    period: int             # 0-based period of this publish
    new_period: bool        # first segment of the period
    tracks: tuple[TrackCut, ...]   # video first; a track without samples in this segment is left out
    period_tracks: tuple[Track, ...]
    wall_clock: float       # POSIX time when the segment's first sample arrived
    period_wall_clock: float  # ... and the period's first sample
    closed_at: float        # monotonic time when the message that closed the segment arrived
    base_ms: int = 0        # the publisher's time (ms) of the period's media time 0

    @property
    def main(self) -> TrackCut:
        """The track whose span is the segment's duration (video when there is video)."""
        return self.tracks[0]


@dataclass(frozen=True, eq=False)
class Part:
    """A part of the segment in progress: its samples per track (video first), as a `Cut` has them."""
    period: int
    new_period: bool        # first part of the period
    tracks: tuple[TrackCut, ...]
    period_tracks: tuple[Track, ...]
    independent: bool       # starts with a key frame (or has no video)
    period_wall_clock: float
    closed_at: float        # monotonic time when the message that closed the part arrived
    base_ms: int = 0        # as Cut's

    @property
    def main(self) -> TrackCut:
        return self.tracks[0]


# a frame joins the part when the part would end within this much of part_ms (ticks at 90 kHz): FLV times are whole
# ms, so a 30-fps part of 15 frames that lasts exactly 500 ms looks up to ~0.5 ms longer from its frames' times
_PART_FIT = 90
# RFC 8216bis 4.4.4.9: a part other than the last of its segment (or an independent one) lasts >= 85 % of PART-TARGET
_PART_MIN = 0.85


@dataclass
class _Pending:
    """Samples of one track not cut yet: plain lists, turned into numpy columns once per segment."""
    dts: list = field(default_factory=list)     # ticks
    cts: list = field(default_factory=list)
    keyframe: list = field(default_factory=list)
    data: list = field(default_factory=list)
    ms: list = field(default_factory=list)      # publisher ms (audio: to split at a video cut)

    def add(self, dts: int, cts: int, keyframe: bool, data: bytes, ms: int) -> None:
        self.dts.append(dts), self.cts.append(cts), self.keyframe.append(keyframe)
        self.data.append(data), self.ms.append(ms)

    def take(self, n: int) -> tuple[list, list, list, list]:
        out = self.dts[:n], self.cts[:n], self.keyframe[:n], self.data[:n]
        del self.dts[:n], self.cts[:n], self.keyframe[:n], self.data[:n], self.ms[:n]
        return out

    def view(self, a: int, b: int) -> tuple[list, list, list, list]:
        return self.dts[a:b], self.cts[a:b], self.keyframe[a:b], self.data[a:b]


class LiveSegmenter:
    def __init__(self, target_ms: int, *, source: str = "", max_segment_ms: int | None = None,
                 part_ms: int = 0) -> None:
        self.target_ms = target_ms
        self.part_ms = part_ms          # 0: no parts
        self.max_segment_ms = max_segment_ms or max(10 * target_ms, 30_000)
        self.source = source
        self.demuxer = FlvDemuxer()
        self.dropped: Counter[str] = Counter()   # samples not packaged, by reason
        self.period = -1
        self._tracks: tuple[Track, ...] = ()      # of the current period; () = waiting for a period start
        self._video: _Pending | None = None
        self._audio: _Pending | None = None
        self._new_period = False
        self._base = 0                  # publisher ms of media time 0
        self._segment_ms = 0            # publisher ms of the current segment's first sample
        self._segment_wall = 0.0
        self._period_wall = 0.0
        self._frame = 1024              # AAC frame, in samples at the configured rate
        self._last_video_duration = 0
        self._last_audio_end: int | None = None
        self._early_audio: list[FlvSample] = []     # while waiting for a key frame: the last audio frames
        self._part_video = 0            # pending samples already in parts
        self._part_audio = 0
        self._first_part = False        # the next part is the period's first

    # ------------------------------------------------------------------------------------------------ input
    def feed(self, message: Message, received: float, wall: float) -> list[Cut]:
        """One RTMP message (``received``: monotonic time, ``wall``: POSIX time of its arrival). RtmpError for a
        malformed body (the caller drops that message)."""
        generation = self.demuxer.config_generation
        samples = self.demuxer.feed(message)
        out: list[Cut] = []
        if self.demuxer.config_generation != generation and self._tracks:
            out += self.interrupt(received)   # a new configuration is a new period
        for s in samples:
            out += self._sample(s, received, wall)
        return out

    def interrupt(self, received: float) -> list[Cut]:
        """End the current period here (cutting what it has); the next one starts at the next key frame."""
        out = self._cut(received, None)
        self._tracks = ()
        return out

    def finish(self, received: float) -> list[Cut]:
        """The publisher left: the last segment."""
        return self.interrupt(received)

    # ------------------------------------------------------------------------------------------------ samples
    def _sample(self, s: FlvSample, received: float, wall: float) -> list[Cut]:
        if not self._tracks:
            if not self._start_period(s, wall):
                return []
            early, self._early_audio = self._early_audio, []
            for a in early:     # audio that arrived just before the key frame with the same (or a later) time
                if a.dts >= self._base:
                    self._sample(a, received, wall)
                else:
                    self.dropped["waiting for a key frame"] += 1
        out: list[Cut] = []
        if s.kind == "video":
            if self._video is None:
                self.dropped["video in an audio-only period"] += 1
                return []
            dts = (s.dts - self._base) * 90
            if self._video.dts and dts <= self._video.dts[-1]:
                self.dropped["video dts not increasing"] += 1
                return out
            since = s.dts - self._segment_ms
            if s.keyframe and since >= self.target_ms:
                out += self._cut(received, s)
            elif since >= self.max_segment_ms:     # no key frame for far too long: end the period here
                self.dropped["no key frame within max_segment_ms"] += 1
                return self.interrupt(received)
            if self.part_ms and len(self._video.dts) > self._part_video:
                out += self._video_part(received, dts, s)
            if not self._video.dts:
                self._segment_ms, self._segment_wall = s.dts, wall
            self._video.add(dts, s.cts * 90, s.keyframe, s.data, s.dts)
            return out
        if self._audio is None:
            self.dropped["audio in a video-only period"] += 1
            return []
        if s.dts < self._base:
            self.dropped["audio before the period's first key frame"] += 1
            return []
        if self._video is None and s.dts - self._segment_ms >= self.target_ms:
            out += self._cut(received, None)
        rate = self._tracks[-1].timescale
        exact = ((s.dts - self._base) * rate + 500) // 1000
        if self._audio.dts:
            expected = self._audio.dts[-1] + self._frame
            if abs(exact - expected) <= self._frame // 2:
                exact = expected
            elif exact <= self._audio.dts[-1]:
                self.dropped["audio dts not increasing"] += 1
                return out
        elif self._last_audio_end is not None and abs(exact - self._last_audio_end) <= self._frame // 2:
            exact = self._last_audio_end   # continue the previous segment's timeline exactly
        if self._video is None and self.part_ms and len(self._audio.dts) > self._part_audio:
            ticks = self.part_ms * rate // 1000
            if exact - self._audio.dts[self._part_audio] + self._frame > ticks:
                out += self._part(received, None, s.dts)
        if self._video is None and not self._audio.dts:
            self._segment_ms, self._segment_wall = s.dts, wall
        self._audio.add(exact, 0, True, s.data, s.dts)
        return out

    def _start_period(self, s: FlvSample, wall: float) -> bool:
        video, audio = self.demuxer.video, self.demuxer.audio
        if s.kind == "video" and not s.keyframe:
            self.dropped["waiting for a key frame"] += 1
            return False
        if s.kind == "audio" and video is not None:
            if len(self._early_audio) >= 64:
                self.dropped["waiting for a key frame"] += 1
                del self._early_audio[0]
            self._early_audio.append(s)
            return False
        tracks = []
        if s.kind == "video":
            tracks.append(self._track(VIDEO_TRACK_ID, "video", VIDEO_TIMESCALE, video))
        if audio is not None:
            tracks.append(self._track(AUDIO_TRACK_ID, "audio", audio.sample_rate or 44100, audio))
            self._frame = 2048 if audio.codec_string in ("mp4a.40.5", "mp4a.40.29") else 1024
        self.period += 1
        self._tracks = tuple(tracks)
        self._video = _Pending() if s.kind == "video" else None
        self._audio = _Pending() if audio is not None else None
        self._new_period = True
        self._base = self._segment_ms = s.dts
        self._segment_wall = self._period_wall = wall
        self._last_audio_end = None
        self._last_video_duration = 0
        self._part_video = self._part_audio = 0
        self._first_part = True
        return True

    def _track(self, track_id: int, kind: str, timescale: int, codec: CodecConfig) -> Track:
        return Track(track_id, kind, timescale, codec, SampleTable.empty(), source=self.source)

    # ------------------------------------------------------------------------------------------------ cutting
    def _cut(self, received: float, key: FlvSample | None) -> list[Cut]:
        """Close the current segment before ``key`` (a video key frame; None = everything pending)."""
        if not self._tracks:
            return []
        out: list = []
        if self.part_ms:    # the segment's last part first
            end = (key.dts - self._base) * 90 if key is not None else self._video_end_guess()
            if end is not None and len(self._video.dts) > self._part_video:
                out += self._overrun(received, end)
            out += self._part(received, end, key.dts if key is not None else None)
        self._part_video = self._part_audio = 0
        parts = []
        for track in self._tracks:
            if track.kind == "video":
                part = self._cut_video(track, key)
            else:
                part = self._cut_audio(track, key)
            if part is not None:
                parts.append(part)
        if not parts:
            return out
        cut = Cut(self.period, self._new_period, tuple(parts), self._tracks, self._segment_wall, self._period_wall,
                  received, self._base)
        self._new_period = False
        return out + [cut]

    def _video_part(self, received: float, dts: int, s: FlvSample) -> list[Part]:
        """Close the part in progress before the video frame at ``dts`` if it is full, or if that frame is a key frame
        and the part is long enough to close early (the key frame then starts an independent part). A part is full
        when this frame, lasting as long as the part's frames on average, would take it past PART-TARGET: so a
        24/25/30/50/60-fps part is exactly part_ms long and its grid meets the key frames of a whole-second GOP
        (a player joins, or switches, on any of them). When FLV's whole-ms times say the part has just run past
        PART-TARGET after all, its last frame starts the next part instead."""
        out = self._overrun(received, dts)
        v, a = self._video, self._part_video
        limit, first, n = self.part_ms * 90, v.dts[a], len(v.dts) - a
        mean = (v.dts[-1] - first) / (n - 1) if n > 1 else dts - v.dts[-1]
        if dts - first + mean > limit + _PART_FIT or (s.keyframe and dts - first >= _PART_MIN * limit):
            out += self._part(received, dts, s.dts)
        return out

    def _overrun(self, received: float, dts: int) -> list[Part]:
        """The part in progress ends at ``dts`` past PART-TARGET: all but its newest frame are a part."""
        v, a = self._video, self._part_video
        if len(v.dts) - a > 1 and dts - v.dts[a] > self.part_ms * 90:
            return self._part(received, v.dts[-1], v.ms[-1], video_end=len(v.dts) - 1)
        return []

    def _part(self, received: float, next_dts: int | None, next_ms: int | None,
              video_end: int | None = None) -> list[Part]:
        """The samples since the last part, up to the video frame at ``next_dts`` (ticks; its publisher time
        ``next_ms``; pending at ``video_end`` when it is not the newest), or all of them (None: the publisher left or
        the period ends)."""
        tracks = []
        for track in self._tracks:
            p = self._video if track.kind == "video" else self._audio
            a = self._part_video if track.kind == "video" else self._part_audio
            if track.kind == "video" or next_ms is None:
                b = len(p.dts) if video_end is None or track.kind != "video" else video_end
            else:
                b = a + int(np.searchsorted(np.array(p.ms[a:], dtype=np.int64), next_ms, "left"))
            if b <= a:
                continue
            dts, cts, keyframe, data = p.view(a, b)
            dts = np.array(dts, dtype=np.int64)
            durations = np.empty(len(dts), dtype=np.int64)
            durations[:-1] = np.diff(dts)
            if track.kind == "video":
                self._part_video = b
                last = next_dts - dts[-1] if next_dts is not None else (durations[-2] if len(dts) > 1 else 0)
                durations[-1] = last or self._last_video_duration or 3600
            else:
                self._part_audio = b
                durations[-1] = p.dts[b] - dts[-1] if b < len(p.dts) else self._frame
            tracks.append(_track_cut(track, dts, np.array(cts, dtype=np.int64), keyframe, data, durations))
        if not tracks:
            return []
        independent = tracks[0].track.kind != "video" or bool(tracks[0].samples.keyframe[0])
        first, self._first_part = self._first_part, False
        return [Part(self.period, first, tuple(tracks), self._tracks, independent, self._period_wall, received,
                     self._base)]

    def _video_end_guess(self) -> int | None:
        """Where the pending video ends when no frame follows (the publisher left): its last frame lasts as long as
        the one before (as `_cut_video` has it)."""
        v = self._video
        if v is None or not v.dts:
            return None
        return v.dts[-1] + (v.dts[-1] - v.dts[-2] if len(v.dts) > 1 else self._last_video_duration or 3600)

    def _cut_video(self, track: Track, key: FlvSample | None) -> TrackCut | None:
        p = self._video
        if not p.dts:
            return None
        dts, cts, keyframe, data = p.take(len(p.dts))
        dts = np.array(dts, dtype=np.int64)
        durations = np.empty(len(dts), dtype=np.int64)
        durations[:-1] = np.diff(dts)
        if key is not None:
            durations[-1] = (key.dts - self._base) * 90 - dts[-1]
        else:   # the publisher left: the last frame lasts as long as the one before
            durations[-1] = durations[-2] if len(dts) > 1 else (self._last_video_duration or 3600)
        self._last_video_duration = int(durations[-1])
        # the span ends where the next segment's key frame is presented (closed GOP: its earliest picture); FLV's
        # whole-ms durations cannot say it as exactly
        end = (key.dts - self._base + key.cts) * 90 if key is not None else None
        return _track_cut(track, dts, np.array(cts, dtype=np.int64), keyframe, data, durations, end)

    def _cut_audio(self, track: Track, key: FlvSample | None) -> TrackCut | None:
        p = self._audio
        n = len(p.dts) if key is None else int(np.searchsorted(np.array(p.ms, dtype=np.int64), key.dts, "left"))
        if n == 0:
            return None
        after = p.dts[n] if n < len(p.dts) else None
        dts, cts, keyframe, data = p.take(n)
        dts = np.array(dts, dtype=np.int64)
        durations = np.empty(n, dtype=np.int64)
        durations[:-1] = np.diff(dts)
        durations[-1] = after - dts[-1] if after is not None else self._frame
        self._last_audio_end = int(dts[-1] + durations[-1])
        return _track_cut(track, dts, np.zeros(n, dtype=np.int64), keyframe, data, durations)


def _track_cut(track: Track, dts: np.ndarray, cts: np.ndarray, keyframe: list, data: list,
               durations: np.ndarray, end: int | None = None) -> TrackCut:
    sizes = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
    offsets = np.zeros(len(sizes), dtype=np.int64)
    np.cumsum(sizes[:-1], out=offsets[1:])
    table = SampleTable(offsets=offsets, sizes=sizes, dts=dts, cts=cts, durations=durations,
                        keyframe=np.array(keyframe, dtype=bool))
    pts = dts + cts
    start = int(pts.min())
    if end is None or end <= start:
        end = int((pts + durations).max())
    return TrackCut(track, table, tuple(data), start, end - start)
