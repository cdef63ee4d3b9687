"""Live output of one stream: `Cut`s → MPEG-TS and fMP4 segments, HLS playlists and a dynamic MPD in one directory.

Blocking file I/O: the packager runs this in the stream's worker thread, never on the event loop.

Files (all in ``<store>/live/<app>/<stream>/``; `LIVE_FILE` is the exact set, and the gateway serves nothing else):
  ``index.m3u8``, ``master.m3u8``           HLS media playlist (MPEG-TS, audio + video muxed) and master playlist
  ``manifest.mpd``                          DASH, dynamic, one Period per timeline
  ``<tid>-<n>.ts``                          HLS segment n (the media sequence number)
  ``<tid>-<p>-<v|a>-init.mp4``              DASH init segment of period p, video or audio
  ``<tid>-<p>-<v|a>-<t>.m4s``               DASH media segment starting at presentation time t (``$Time$``)
``<tid>`` is the base-36 creation time of this writer (ms): a gateway restart or another node taking the stream over
never reuses a segment name, so no cache (CDN, player) can serve an old segment for a new one. Files of another
``<tid>`` are removed at the first segment. Every file is written to a hidden temporary name in the same directory
and renamed into place (atomic on POSIX and NFS), so readers never see a partial file.

Timelines. Numbers and the DASH clock (availabilityStartTime = when the first period's first sample arrived) span
publishes: a republish (or codec change) starts a new Period, whose @start is the later of the wall-clock time since
availabilityStartTime and the end of the previous Period, and an EXT-X-DISCONTINUITY in HLS. On unpublish the HLS
playlist gets EXT-X-ENDLIST and the MPD a mediaPresentationDuration (see ``packagers.dash.live``); files stay.

Window: ``window`` segments listed; files of ``keep_extra`` more stay on disk for players that are behind, older
ones (and init segments of periods with no segment left) are deleted.

Write errors (a full disk, a quota, EIO): a segment that cannot be written whole is skipped: its files and temporaries
are removed, the playlists do not list it, its number is used by the next segment, and that next segment carries an
EXT-X-DISCONTINUITY (its timestamps jump by the missing span; in the MPD the SegmentTimeline simply has a gap, an
explicit S@t, within the same Period). Nothing is retried: packaging resumes by itself with the next segment that
fits. Skips are counted (``segments_skipped``) and logged at most once per ``ERROR_LOG_INTERVAL`` per stream.
"""
from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from packagers.dash.live import LivePeriod, LiveRepresentation, build_live_mpd
from packagers.errors import PackagerError
from packagers.fmp4 import Fmp4Muxer, build_init_segment, channel_configuration, codec_string
from packagers.hls.live import (LiveSegment, LiveVariant, bandwidth, build_live_master_playlist,
                                build_live_media_playlist, target_duration)
from packagers.media_data import MediaSegment, TrackSegment
from packagers.model import Track
from packagers.ts.muxer import TsMuxer

from .segmenter import Cut, TrackCut

__all__ = ["LIVE_FILE", "LiveStreamWriter", "MEDIA_PLAYLIST", "MASTER_PLAYLIST", "MPD"]

log = logging.getLogger("rtmp.live")

MEDIA_PLAYLIST, MASTER_PLAYLIST, MPD = "index.m3u8", "master.m3u8", "manifest.mpd"
LIVE_FILE = re.compile(r"index\.m3u8|master\.m3u8|manifest\.mpd|(?P<tid>[0-9a-z]{1,13})-"
                       r"(?:[0-9]{1,12}\.ts|[0-9]{1,9}-[va]-(?:init\.mp4|[0-9]{1,18}\.m4s))")
_KIND_LETTER = {"video": "v", "audio": "a"}
ERROR_LOG_INTERVAL = 5.0        # seconds: a full disk fails every segment; one line per stream per interval is enough


@dataclass(eq=False)
class _Period:
    id: int
    start_ms: int                   # from availabilityStartTime
    tracks: tuple[Track, ...]
    ts: TsMuxer
    fmp4: dict                      # kind → Fmp4Muxer
    init_names: dict                # kind → file name
    frame_rate: str = ""
    end_ms: int = 0                 # media end of the last segment written, from availabilityStartTime
    last_number: int = 0


@dataclass(eq=False)
class _Segment:
    number: int
    period: _Period
    ts_name: str
    ts_size: int
    duration: int                   # main track ticks
    timescale: int
    wall_clock: float
    discontinuity: bool
    parts: dict = field(default_factory=dict)   # kind → (start, duration, size, file name)

    @property
    def files(self) -> list[str]:
        return [self.ts_name] + [p[3] for p in self.parts.values()]


class LiveStreamWriter:
    def __init__(self, directory: Path, *, target_ms: int, window: int, keep_extra: int = 3,
                 wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 utc_timing: str = "/time") -> None:
        self.directory = Path(directory)
        self.target_ms, self.window, self.keep_extra = target_ms, window, keep_extra
        self._wall, self._monotonic, self.utc_timing = wall, monotonic, utc_timing
        self.tid = _base36(int(wall() * 1000))
        self.ended = False
        self.segments_written = 0
        self.bytes_written = 0
        self.errors = 0
        self.segments_skipped = 0   # segments lost to a write or mux error
        self._skipping = 0          # ... since the last segment written
        self._restart_period = False    # a period's start failed: its next segment starts it again
        self._logged_at: float | None = None    # monotonic time of the last error line
        self._unlogged = 0          # errors since that line, not logged
        self.latencies_ms: deque[float] = deque(maxlen=512)    # closing key frame received → playlists renamed
        self._listed: deque[_Segment] = deque()
        self._kept: deque[_Segment] = deque()                   # out of the window, files still on disk
        self._period: _Period | None = None
        self._periods = 0
        self._next_number = 1
        self._dropped_discontinuities = 0
        self._min_target = max(1, math.ceil(target_ms / 1000))
        self._ast: float | None = None
        self._master = ""
        self._broken = False        # a segment failed: the next one starts a discontinuity
        self._cleaned = False

    # ------------------------------------------------------------------------------------------------ input
    def add(self, cut: Cut) -> None:
        """Write one segment and the playlists that list it. A write or mux failure skips this segment (counted
        and logged); the next one then starts with a discontinuity."""
        try:
            if not self._cleaned:
                self._clean_directory()
            if cut.new_period or self._period is None or self._restart_period:
                self._start_period(cut)     # again after a failed start: never mux with the last period's tracks
            segment = self._write_segment(cut)
        except (OSError, PackagerError) as e:
            self.segments_skipped += 1
            self._skipping += 1
            self._broken = True
            self._failed(f"segment skipped ({self._skipping} in a row)", e)
            return
        if self._skipping:
            log.warning("live %s: writing again after %d skipped segment(s)", self.directory, self._skipping)
            self._skipping = 0
        self.ended = False
        self._listed.append(segment)
        while len(self._listed) > self.window:
            old = self._listed.popleft()
            self._dropped_discontinuities += old.discontinuity
            self._kept.append(old)
        try:
            self._write_playlists()
            self.latencies_ms.append((self._monotonic() - cut.closed_at) * 1000)
            self._expire()
            self._write_master()
        except OSError as e:    # the segment stays listed: the next playlists that fit list it
            self._failed("playlists not written", e)

    def end(self) -> None:
        """The publisher left (after its last segment was added): ENDLIST and the MPD's end."""
        if not self._listed:
            return
        self.ended = True
        try:
            self._write_playlists()
        except OSError as e:
            self._failed("final playlists not written", e)

    # ------------------------------------------------------------------------------------------------ segments
    def _start_period(self, cut: Cut) -> None:
        if self._ast is None:
            self._ast, start_ms = cut.period_wall_clock, 0
        else:
            since = round((cut.period_wall_clock - self._ast) * 1000)
            start_ms = max(since, self._period.end_ms if self._period else 0)
        pid = self._periods
        tracks = cut.period_tracks
        init_names = {t.kind: f"{self.tid}-{pid}-{_KIND_LETTER[t.kind]}-init.mp4" for t in tracks}
        self._restart_period = True
        self._write_all([(init_names[t.kind], build_init_segment([t])) for t in tracks])
        self._restart_period = False
        self._period = _Period(pid, start_ms, tracks, TsMuxer(tracks), {t.kind: Fmp4Muxer([t]) for t in tracks},
                               init_names)
        self._periods += 1

    def _write_segment(self, cut: Cut) -> _Segment:
        period, n = self._period, self._next_number
        parts = tuple(TrackSegment(tc.track, tc.samples, tc.chunks) for tc in cut.tracks)
        ts = period.ts.build(MediaSegment(n - 1, parts))
        files = [(f"{self.tid}-{n}.ts", ts)]
        info = {}
        for tc, part in zip(cut.tracks, parts):
            name = f"{self.tid}-{period.id}-{_KIND_LETTER[tc.track.kind]}-{tc.start}.m4s"
            data = period.fmp4[tc.track.kind].build(MediaSegment(n - 1, (part,)))
            files.append((name, data))
            info[tc.track.kind] = (tc.start, tc.duration, len(data), name)
        self._write_all(files)
        if not period.frame_rate and cut.tracks[0].track.kind == "video":
            period.frame_rate = _frame_rate(cut.tracks[0])
        main = cut.main
        period.end_ms = period.start_ms + max(
            math.ceil((tc.start + tc.duration) * 1000 / tc.track.timescale) for tc in cut.tracks)
        period.last_number = n
        discontinuity = self.segments_written > 0 and (cut.new_period or self._broken)
        self._broken = False
        self._next_number += 1
        self.segments_written += 1
        self.bytes_written += sum(len(d) for _, d in files)
        return _Segment(n, period, files[0][0], len(ts), main.duration, main.track.timescale, cut.wall_clock,
                        discontinuity, info)

    def _expire(self) -> None:
        """Delete the files of segments past the window + keep_extra, and init segments no segment needs."""
        while len(self._kept) > self.keep_extra:
            old = self._kept.popleft()
            for name in old.files:
                self._remove(name)
            period = old.period
            if period is not self._period and period.last_number == old.number:
                for name in period.init_names.values():
                    self._remove(name)

    # ------------------------------------------------------------------------------------------------ playlists
    def _write_playlists(self) -> None:
        listed = list(self._listed)
        hls = [LiveSegment(s.number, s.ts_name, s.duration, s.timescale, s.wall_clock, s.discontinuity)
               for s in listed]
        self._min_target = max(self._min_target, target_duration(hls))
        first_discontinuity = listed[0].discontinuity if listed else False
        self._write(MEDIA_PLAYLIST, build_live_media_playlist(
            hls, discontinuity_sequence=self._dropped_discontinuities + first_discontinuity, ended=self.ended,
            min_target_duration=self._min_target).encode())
        self._write(MPD, self._mpd(listed).encode())

    def _mpd(self, listed: list[_Segment]) -> str:
        periods: list[LivePeriod] = []
        for s in listed:
            if not periods or periods[-1].id != str(s.period.id):
                periods.append(LivePeriod(str(s.period.id), s.period.start_ms, ()))
        built = []
        for lp in periods:
            segs = [s for s in listed if str(s.period.id) == lp.id]
            period = segs[0].period
            reps = tuple(r for r in (self._representation(period, t, segs) for t in period.tracks) if r is not None)
            built.append(LivePeriod(lp.id, lp.start_ms, reps))
        seconds = [s.duration / s.timescale for s in listed]
        window_ms = math.ceil(sum(seconds) * 1000)
        longest_ms = math.ceil(max(seconds, default=0) * 1000)
        ended_ms = self._period.end_ms if self.ended and self._period else None
        return build_live_mpd(
            built, availability_start=self._ast or self._wall(), publish_time=self._wall(),
            minimum_update_period_ms=self.target_ms, time_shift_buffer_ms=max(window_ms, self.target_ms),
            suggested_delay_ms=min(3 * self.target_ms, max(window_ms - self.target_ms, self.target_ms)),
            max_segment_ms=max(longest_ms, 1), min_buffer_ms=max(longest_ms, self.target_ms), ended_ms=ended_ms,
            utc_timing=self.utc_timing)

    def _representation(self, period: _Period, track: Track, segs: list[_Segment]) -> LiveRepresentation | None:
        parts = [s.parts[track.kind] for s in segs if track.kind in s.parts]
        if not parts:
            return None
        starts = [p[0] for p in parts]
        durations = [p[1] for p in parts]
        peak, _ = bandwidth([p[2] for p in parts], [d / track.timescale for d in durations])
        letter = _KIND_LETTER[track.kind]
        return LiveRepresentation(
            id=letter, kind=track.kind, codecs=codec_string(track.codec), bandwidth=peak,
            timescale=track.timescale, initialization=period.init_names[track.kind],
            media=f"{self.tid}-{period.id}-{letter}-$Time$.m4s", start_number=segs[0].number, starts=starts,
            durations=durations, width=track.codec.width, height=track.codec.height, frame_rate=period.frame_rate,
            sample_rate=track.codec.sample_rate, channel_configuration=channel_configuration(track.codec))

    def _write_master(self) -> None:
        period = self._period
        listed = [s for s in self._listed if s.period is period]
        peak, average = bandwidth([s.ts_size for s in listed], [s.duration / s.timescale for s in listed])
        video = next((t for t in period.tracks if t.kind == "video"), None)
        rate = float(Fraction(period.frame_rate)) if period.frame_rate else 0.0
        variant = LiveVariant(MEDIA_PLAYLIST, peak, average, tuple(t.codec.codec_string for t in period.tracks),
                              video.codec.width if video else 0, video.codec.height if video else 0, rate)
        text = build_live_master_playlist([variant])
        if text != self._master:
            self._write(MASTER_PLAYLIST, text.encode())
            self._master = text

    # ------------------------------------------------------------------------------------------------ files
    def _write(self, name: str, data: bytes) -> None:
        tmp = self.directory / f".{name}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.directory / name)
        except BaseException:
            tmp.unlink(missing_ok=True)     # a partial temporary would hold the space a full disk lacks
            raise

    def _write_all(self, files: list[tuple[str, bytes]]) -> None:
        """Write every file or, on an error, none: those already written are removed (nothing lists them)."""
        done = []
        try:
            for name, data in files:
                self._write(name, data)
                done.append(name)
        except BaseException:
            for name in done:
                self._remove(name)
            raise

    def _failed(self, what: str, error: Exception) -> None:
        """Count an error; log it unless this stream logged one less than ERROR_LOG_INTERVAL ago."""
        self.errors += 1
        now = self._monotonic()
        if self._logged_at is not None and now - self._logged_at < ERROR_LOG_INTERVAL:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more errors since the last line)" if self._unlogged else ""
        log.error("live %s: %s: %s%s", self.directory, what, error, more)
        self._logged_at, self._unlogged = now, 0

    def _remove(self, name: str) -> None:
        try:
            os.unlink(self.directory / name)
        except FileNotFoundError:
            pass
        except OSError as e:
            self.errors += 1
            log.warning("live %s: could not delete %s: %s", self.directory, name, e)

    def _clean_directory(self) -> None:
        """Create the directory; remove what an earlier writer (another ``tid``) left, and stray temporaries."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for entry in os.scandir(self.directory):
            m = LIVE_FILE.fullmatch(entry.name)
            stale = (m is not None and m["tid"] != self.tid) or (entry.name.startswith(".") and
                                                                 entry.name.endswith(".tmp"))
            if stale:
                self._remove(entry.name)
        self._cleaned = True

    # ------------------------------------------------------------------------------------------------ stats
    def stats(self) -> dict:
        return {"segments": self.segments_written, "bytes": self.bytes_written, "errors": self.errors,
                "segments_skipped": self.segments_skipped, "ended": self.ended,
                "media_sequence": self._listed[0].number if self._listed else None,
                "periods": self._periods, "latency_ms": latency_summary(self.latencies_ms)}


def latency_summary(values) -> dict:
    if not len(values):
        return {"count": 0, "p50": None, "p95": None, "max": None}
    a = np.fromiter(values, dtype=np.float64)
    return {"count": int(len(a)), "p50": round(float(np.percentile(a, 50)), 3),
            "p95": round(float(np.percentile(a, 95)), 3), "max": round(float(a.max()), 3)}


_COMMON_RATES = tuple(Fraction(r) for r in ("24000/1001", "24", "25", "30000/1001", "30", "48", "50", "60000/1001",
                                            "60", "10", "12", "15", "20"))


def _frame_rate(tc: TrackCut) -> str:
    """@frameRate from the segment's mean frame duration. FLV times are whole ms (24 fps: 41 and 42 ms), so the mean,
    snapped to a common rate within 0.5 %, is the nominal one; anything else is given to 3 decimals."""
    dts = tc.samples.dts
    if len(dts) < 2 or dts[-1] <= dts[0]:
        return ""
    rate = Fraction(int(len(dts) - 1) * tc.track.timescale, int(dts[-1] - dts[0]))
    near = min(_COMMON_RATES, key=lambda r: abs(r - rate))
    if abs(near - rate) <= near / 200:
        rate = near
    else:
        rate = Fraction(round(float(rate) * 1000), 1000)
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out
