"""Live output of one stream: `Cut`s → MPEG-TS and fMP4 segments, HLS playlists and a dynamic MPD in one directory.

Blocking file I/O: the packager runs this in the stream's worker thread, never on the event loop.

Files (all in ``<store>/live/<app>/<stream>/``; `LIVE_FILE` is the exact set, and the gateway serves nothing else):
  ``index.m3u8``, ``master.m3u8``           HLS media playlist (MPEG-TS, audio + video muxed) and master playlist
  ``manifest.mpd``                          DASH, dynamic, one Period per timeline
  ``<tid>-<n>.ts``                          HLS segment n (the media sequence number)
  ``<tid>-<p>-<v|a>-init.mp4``              DASH init segment of period p, video or audio
  ``<tid>-<p>-<v|a>-<t>.m4s``               DASH media segment starting at presentation time t (``$Time$``)
With low latency (``part_ms`` > 0) the HLS playlist is LL-HLS over fMP4 instead of MPEG-TS (``packagers.hls.live``),
and so are the segments of HEVC (and any video but H.264: browsers play those from fMP4 only), without parts:
  ``<tid>-<p>-init.mp4``                    HLS init segment of period p (audio + video in one file)
  ``<tid>-<n>.<k>.m4s``                     part k of HLS segment n (moof + mdat), written as its samples arrive
  ``<tid>-<n>.m4s``                         HLS segment n: its parts back to back, written when it closes
  ``index_delta.m3u8``                      the playlist's delta update (what ``index.m3u8?_HLS_skip=YES`` gets)
  ``<tid>-<p>-<v|a>-<t>.<k>.m4s``           low-latency DASH: chunk k of the DASH segment at t (moof + mdat)
Low latency makes the DASH output low-latency DASH too (DASH-IF "Low-latency Modes for DASH"): each part's samples
are also written per track as a CMAF chunk, the DASH segment is its chunks back to back, and the MPD announces the
segment in progress (with the previous segment's duration as its expected one) as soon as its first chunk exists,
with an @availabilityTimeOffset that makes it requestable then; the gateway streams it chunk by chunk
(``gateway.http.live_chunked``).
Every part and segment is renamed into place before the playlist that names it; the playlist's preload hint names
the next part before it exists (the gateway holds a request for it until it does).
``<tid>`` is the base-36 creation time of this writer (ms): a gateway restart or another node taking the stream over
never reuses a segment name, so no cache (CDN, player) can serve an old segment for a new one. Files of another
``<tid>`` are removed at the first segment. Every file is written to a hidden temporary name in the same directory
and renamed into place (atomic on POSIX and NFS), so readers never see a partial file.

Timelines. Numbers and the DASH clock (availabilityStartTime = when the first period's first sample arrived) span
publishes: a republish (or codec change) starts a new Period, whose @start is the later of the wall-clock time since
availabilityStartTime and the end of the previous Period, and an EXT-X-DISCONTINUITY in HLS. On unpublish the HLS
playlist gets EXT-X-ENDLIST and the MPD a mediaPresentationDuration (see ``packagers.dash.live``); files stay.

Window: ``window`` segments listed, or with ``dvr_s`` (a DVR window) as many as ``dvr_s`` seconds need; files of
``keep_extra`` more stay on disk for players that are behind, older ones (and init segments of periods with no
segment left) are deleted.

Write errors (a full disk, a quota, EIO): a segment that cannot be written whole is skipped: its files and temporaries
are removed, the playlists do not list it, its number is used by the next segment, and that next segment carries an
EXT-X-DISCONTINUITY (its timestamps jump by the missing span; in the MPD the SegmentTimeline simply has a gap, an
explicit S@t, within the same Period). Nothing is retried: packaging resumes by itself with the next segment that
fits. Skips are counted (``segments_skipped``) and logged at most once per ``ERROR_LOG_INTERVAL`` per stream.
"""
from __future__ import annotations

import dataclasses
import functools
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

from packagers.dash.live import DashLowLatency, LivePeriod, LiveRepresentation, build_live_mpd
from packagers.errors import PackagerError
from packagers.fmp4 import Fmp4Muxer, build_init_segment, channel_configuration, codec_string
from packagers.hls.live import (LivePart, LiveSegment, LiveVariant, LowLatency, bandwidth,
                                build_live_master_playlist, build_live_media_playlist, skippable, target_duration)
from packagers.media_data import MediaSegment, TrackSegment
from packagers.model import SampleTable, Track
from packagers.ts.muxer import TsMuxer

from .segmenter import Cut, Part, TrackCut

__all__ = ["LIVE_FILE", "LiveStreamWriter", "MEDIA_PLAYLIST", "MASTER_PLAYLIST", "MPD", "DELTA_PLAYLIST"]

log = logging.getLogger("rtmp.live")

MEDIA_PLAYLIST, MASTER_PLAYLIST, MPD = "index.m3u8", "master.m3u8", "manifest.mpd"
DELTA_PLAYLIST = "index_delta.m3u8"
LIVE_FILE = re.compile(r"index\.m3u8|index_delta\.m3u8|master\.m3u8|manifest\.mpd|(?P<tid>[0-9a-z]{1,13})-"
                       r"(?:[0-9]{1,12}\.ts|[0-9]{1,12}(?:\.[0-9]{1,6})?\.m4s|[0-9]{1,9}-init\.mp4"
                       r"|[0-9]{1,9}-[va]-(?:init\.mp4|[0-9]{1,18}(?:\.[0-9]{1,6})?\.m4s))")
_KIND_LETTER = {"video": "v", "audio": "a"}
ERROR_LOG_INTERVAL = 5.0        # seconds: a full disk fails every segment; one line per stream per interval is enough


@dataclass(eq=False)
class _Period:
    id: int
    start_ms: int                   # from availabilityStartTime
    tracks: tuple[Track, ...]
    ts: TsMuxer | None              # HLS without low latency
    fmp4: dict                      # kind → Fmp4Muxer (DASH)
    chunk_fmp4: dict                # kind → Fmp4Muxer without styp (LL-DASH: the chunks after a segment's first)
    init_names: dict                # kind → file name (DASH); "hls" → the LL-HLS init segment
    hls: Fmp4Muxer | None = None    # LL-HLS: every track in one fragment
    frame_rate: str = ""
    base_ms: int = 0                # the publisher's time of media time 0 (a ladder's renditions share the source's)
    end_ms: int = 0                 # media end of the last segment written, from availabilityStartTime
    last_number: int = 0


@dataclass(frozen=True, eq=False)
class _Chunks:
    """LL-DASH: one track's DASH segment in progress, the chunks written so far."""
    start: int                      # its earliest presentation time (the ``$Time$`` of its name)
    names: tuple[str, ...]
    data: tuple[bytes, ...]
    duration: int                   # ticks so far


@dataclass(eq=False)
class _Segment:
    number: int
    period: _Period
    hls_name: str                   # MPEG-TS, or fMP4 with low latency
    hls_size: int
    duration: int                   # main track ticks
    timescale: int
    wall_clock: float
    discontinuity: bool
    dash: dict = field(default_factory=dict)    # kind → (start, duration, size, file name)
    parts: tuple[LivePart, ...] = ()            # LL-HLS
    chunks: tuple[str, ...] = ()                # LL-DASH chunk files

    @property
    def files(self) -> list[str]:
        return [self.hls_name] + [p[3] for p in self.dash.values()] + [p.uri for p in self.parts] + list(self.chunks)

    @functools.cached_property
    def entry(self) -> LiveSegment:
        """The playlists' view of it (made once: a DVR window lists thousands, for every part)."""
        return LiveSegment(self.number, self.hls_name, self.duration, self.timescale, self.wall_clock,
                           self.discontinuity, self.parts, self.period.init_names.get("hls"))


class LiveStreamWriter:
    def __init__(self, directory: Path, *, target_ms: int, window: int, keep_extra: int = 3,
                 wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 utc_timing: str = "/time", part_ms: int = 0, dvr_s: float = 0.0,
                 siblings: Callable[[], list[tuple[int, LiveVariant]]] = list,
                 reports: Callable[[], list[tuple[str, int, int | None]]] = list,
                 dash_siblings: Callable[[], list[tuple[int, LiveRepresentation]]] = list) -> None:
        self.directory = Path(directory)
        self.target_ms, self.window, self.keep_extra = target_ms, window, keep_extra
        self.dvr_s = dvr_s          # > 0: the window is this many seconds (a DVR window), not ``window`` segments
        self.siblings = siblings    # (base_ms, variant) of the renditions made of this stream (rtmp.live.ladder)
        self.reports = reports      # LL-HLS: (URI, LAST-MSN, LAST-PART) of the other renditions of its master
        self.dash_siblings = dash_siblings  # those renditions' video as Representations of this stream's MPD
        self.part_ms = part_ms      # > 0: low-latency HLS (fMP4 parts), see the module docstring
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
        self._parts: list[tuple[LivePart, bytes]] = []   # LL-HLS: the segment in progress, so far
        self._chunks: dict[str, _Chunks] = {}  # LL-DASH: kind → the DASH segment in progress, so far
        self._fragments = 0         # LL-HLS fragments written (their moof sequence numbers)
        self._parts_failed = False  # a part of the segment in progress could not be written
        self._lines: dict[int, str] = {}    # HLS playlist lines of settled segments (build_live_media_playlist)
        self.part_latencies_ms: deque[float] = deque(maxlen=512)   # closing frame received → playlist renamed

    # ------------------------------------------------------------------------------------------------ input
    def add(self, cut: Cut) -> None:
        """Write one segment and the playlists that list it. A write or mux failure skips this segment (counted
        and logged); the next one then starts with a discontinuity."""
        try:
            if not self._cleaned:
                self._clean_directory()
            # (with parts, the segment's first part started its period)
            if (cut.new_period and not self._parts) or self._period is None or self._restart_period:
                self._start_period(cut)     # again after a failed start: never mux with the last period's tracks
            segment = self._write_segment(cut)
        except (OSError, PackagerError) as e:
            self.segments_skipped += 1
            self._skipping += 1
            self._broken = True
            self._parts.clear()     # the next segment starts its own parts and chunks
            self._chunks = {}
            self._parts_failed = False
            self._failed(f"segment skipped ({self._skipping} in a row)", e)
            return
        if self._skipping:
            log.warning("live %s: writing again after %d skipped segment(s)", self.directory, self._skipping)
            self._skipping = 0
        self.ended = False
        self._listed.append(segment)
        while self._over_window():
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

    def _over_window(self) -> bool:
        """More listed than the window: ``window`` segments, or with a DVR window, the oldest segment is not
        needed to list ``dvr_s`` seconds (at least 2 segments stay)."""
        if len(self._listed) <= 2:
            return False
        if not self.dvr_s:
            return len(self._listed) > self.window
        return sum(s.duration / s.timescale for s in self._listed) - self._listed[0].duration / \
            self._listed[0].timescale >= self.dvr_s

    def add_part(self, part: Part) -> None:
        """LL-HLS: write one part of the segment in progress and the playlist that lists it. A failure skips the
        part (counted and logged); the segment is then written whole from its samples when it closes."""
        if self._parts_failed:
            return
        try:
            if not self._cleaned:
                self._clean_directory()
            if part.new_period or self._period is None or self._restart_period:
                self._parts.clear()
                self._chunks = {}
                self._start_period(part)
            number, index = self._next_number, len(self._parts)
            period = self._period
            data = period.hls.build(MediaSegment(self._fragments, self._segments_of(period, part.tracks)))
            name = f"{self.tid}-{number}.{index}.m4s"
            chunks = self._dash_chunks(period, part)
            self._write_all([(c.names[-1], c.data[-1]) for c in chunks.values()] + [(name, data)])
        except (OSError, PackagerError) as e:
            self._parts_failed = True   # no more parts for this segment: it is written whole when it closes
            self._failed("part skipped", e)
            return
        self._chunks = chunks
        self._fragments += 1
        main = part.main
        # (its decode span: parts tile the timeline; the presentation span of B-frames would overlap the next)
        seconds = int(main.samples.durations.sum()) / main.track.timescale
        self._parts.append((LivePart(name, seconds, part.independent), data))
        self.bytes_written += len(data)
        try:
            # the MPD announces a DASH segment once, with its first chunk (LL-DASH players fetch it chunked)
            self._write_playlists(mpd=index == 0)
            self.part_latencies_ms.append((self._monotonic() - part.closed_at) * 1000)
            if not self._master:    # players start from the master playlist: as soon as there is a part
                self._write_master()
        except OSError as e:
            self._failed("playlists not written", e)

    def _dash_chunks(self, period: _Period, part: Part) -> dict[str, "_Chunks"]:
        """The DASH segments in progress with this part's samples added as one more CMAF chunk per track (new
        objects: the writer's own change only once they are written)."""
        out = dict(self._chunks)
        for tc in part.tracks:
            kind = tc.track.kind
            old = out.get(kind) or _Chunks(tc.start, (), (), 0)
            name = f"{self.tid}-{period.id}-{_KIND_LETTER[kind]}-{old.start}.{len(old.names)}.m4s"
            muxer = period.chunk_fmp4[kind] if old.names else period.fmp4[kind]   # (styp starts a segment only)
            data = muxer.build(MediaSegment(self._fragments, (TrackSegment(tc.track, tc.samples, tc.chunks),)))
            out[kind] = _Chunks(old.start, old.names + (name,), old.data + (data,),
                                old.duration + int(tc.samples.durations.sum()))
        return out

    @staticmethod
    def _segments_of(period: _Period, cuts) -> tuple[TrackSegment, ...]:
        """A TrackSegment per track of the period (empty for a track without samples here), in its order."""
        by_kind = {tc.track.kind: tc for tc in cuts}
        return tuple(TrackSegment(t, by_kind[t.kind].samples, by_kind[t.kind].chunks) if t.kind in by_kind
                     else TrackSegment(t, SampleTable.empty(), ()) for t in period.tracks)

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
        files = [(init_names[t.kind], build_init_segment([t])) for t in tracks]
        # HLS in fMP4 with low latency, and for codecs browsers only play from fMP4 (HEVC, AV1); else MPEG-TS
        fmp4 = self.part_ms > 0 or any(t.kind == "video" and t.codec.codec != "h264" for t in tracks)
        if fmp4:
            init_names["hls"] = f"{self.tid}-{pid}-init.mp4"
            files.append((init_names["hls"], build_init_segment(tracks)))
        self._restart_period = True
        self._write_all(files)
        self._restart_period = False
        self._period = _Period(pid, start_ms, tracks, None if fmp4 else TsMuxer(tracks),
                               {t.kind: Fmp4Muxer([t]) for t in tracks},
                               {t.kind: Fmp4Muxer([t], styp=False) for t in tracks}, init_names,
                               hls=Fmp4Muxer(tracks) if fmp4 else None, base_ms=cut.base_ms)
        self._periods += 1

    def _write_segment(self, cut: Cut) -> _Segment:
        period, n = self._period, self._next_number
        parts = tuple(TrackSegment(tc.track, tc.samples, tc.chunks) for tc in cut.tracks)
        if period.hls is None:
            hls = period.ts.build(MediaSegment(n - 1, parts))
            files = [(f"{self.tid}-{n}.ts", hls)]
        elif self._parts and not self._parts_failed:    # LL-HLS: the segment is its parts, back to back
            hls = b"".join(data for _, data in self._parts)
            files = [(f"{self.tid}-{n}.m4s", hls)]
        else:               # its parts failed: the segment alone, listed without parts
            hls = period.hls.build(MediaSegment(self._fragments, self._segments_of(period, cut.tracks)))
            self._fragments += 1
            files = [(f"{self.tid}-{n}.m4s", hls)]
        info, chunk_files = {}, []
        for tc, part in zip(cut.tracks, parts):
            name = f"{self.tid}-{period.id}-{_KIND_LETTER[tc.track.kind]}-{tc.start}.m4s"
            chunks = self._chunks.get(tc.track.kind)
            if chunks is not None and not self._parts_failed and chunks.start == tc.start:
                data = b"".join(chunks.data)    # LL-DASH: what was streamed, chunk by chunk
            else:
                data = period.fmp4[tc.track.kind].build(MediaSegment(n - 1, (part,)))
            chunk_files += chunks.names if chunks is not None else ()
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
        listed_parts = () if self._parts_failed else tuple(p for p, _ in self._parts)
        self._parts.clear()
        self._chunks = {}
        self._parts_failed = False
        return _Segment(n, period, files[0][0], len(hls), main.duration, main.track.timescale, cut.wall_clock,
                        discontinuity, info, listed_parts, tuple(chunk_files))

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
    def _preload_hint(self, trailing: tuple[LivePart, ...]) -> str | None:
        """The part a player should ask for next: the next of the segment in progress, or the next segment's first
        when the segment in progress is as long as the target and as the one before it (segments end at key frames:
        with a steady GOP they repeat, so the next frame is the key frame that closes this one). A wrong guess
        costs a held request a 404 (§6.2.6-S3)."""
        if self.ended:
            return None
        so_far = sum(p.duration for p in trailing)
        if trailing and so_far >= self.target_ms / 1000 - 5e-4:
            before = self._listed[-1].entry if self._listed else None
            if before is None or so_far >= (sum(p.duration for p in before.parts) or before.seconds) - 5e-4:
                return f"{self.tid}-{self._next_number + 1}.0.m4s"
        return f"{self.tid}-{self._next_number}.{len(trailing)}.m4s"

    def _write_playlists(self, mpd: bool = True) -> None:
        listed = list(self._listed)
        hls = [s.entry for s in listed]
        self._min_target = max(self._min_target, target_duration(hls))
        first_discontinuity = listed[0].discontinuity if listed else False
        options = dict(discontinuity_sequence=self._dropped_discontinuities + first_discontinuity, ended=self.ended,
                       min_target_duration=self._min_target)
        if self.part_ms:
            trailing = tuple(p for p, _ in self._parts)
            options["low_latency"] = LowLatency(
                self.part_ms / 1000, trailing, self._preload_hint(trailing),
                self._period.init_names["hls"] if trailing else None, self._next_number, tuple(self.reports()))
        first = hls[0].number if hls else 0
        for number in [n for n in self._lines if n < first]:    # slid out of the window
            del self._lines[number]
        self._write(MEDIA_PLAYLIST, build_live_media_playlist(hls, cache=self._lines, **options).encode())
        if self.part_ms:
            skip = skippable(hls, target_duration(hls, self._min_target))
            self._write(DELTA_PLAYLIST, build_live_media_playlist(hls, skip=skip, cache=self._lines,
                                                                  **options).encode())
        if mpd:
            self._write(MPD, self._mpd(listed).encode())

    def _mpd(self, listed: list[_Segment]) -> str:
        groups: list[tuple[_Period, list[_Segment]]] = []
        for s in listed:
            if not groups or groups[-1][0] is not s.period:
                groups.append((s.period, []))
            groups[-1][1].append(s)
        if self._chunks and (not groups or groups[-1][0] is not self._period):
            groups.append((self._period, []))   # a period whose first segment is in progress
        built = []
        for period, segs in groups:
            progress = self._chunks if period is self._period else {}
            reps = tuple(r for r in (self._representation(period, t, segs, progress.get(t.kind))
                                     for t in period.tracks) if r is not None)
            if period is self._period:
                reps += self._aligned_siblings(reps)
            built.append(LivePeriod(str(period.id), period.start_ms, reps))
        seconds = [s.duration / s.timescale for s in listed]
        window_ms = math.ceil(sum(seconds) * 1000)
        longest_ms = math.ceil(max(seconds, default=0) * 1000)
        ended_ms = self._period.end_ms if self.ended and self._period else None
        return build_live_mpd(
            built, availability_start=self._ast or self._wall(), publish_time=self._wall(),
            minimum_update_period_ms=self.target_ms, time_shift_buffer_ms=max(window_ms, self.target_ms),
            suggested_delay_ms=min(3 * self.target_ms, max(window_ms - self.target_ms, self.target_ms)),
            max_segment_ms=max(longest_ms, 1), min_buffer_ms=max(longest_ms, self.target_ms), ended_ms=ended_ms,
            utc_timing=self.utc_timing, low_latency=self._dash_low_latency())

    def _dash_low_latency(self) -> DashLowLatency | None:
        """LL-DASH: the MPD is reloaded once per part (it changes once per segment: a player learns of a new segment
        within a part of its first chunk); the target latency is that of LL-HLS players (PART-HOLD-BACK), plus a
        part for the MPD reload."""
        if not self.part_ms or self.ended:
            return None
        return DashLowLatency(update_period_ms=self.part_ms, target_latency_ms=4 * self.part_ms)

    def _representation(self, period: _Period, track: Track, segs: list[_Segment],
                        progress: _Chunks | None = None) -> LiveRepresentation | None:
        """``progress``: the DASH segment in progress (LL-DASH), listed last with the duration expected of it (the
        previous segment's), made available after its first chunk by @availabilityTimeOffset."""
        parts = [s.dash[track.kind] for s in segs if track.kind in s.dash]
        if not parts and progress is None:
            return None
        starts = [p[0] for p in parts]
        durations = [p[1] for p in parts]
        sizes, spans = [p[2] for p in parts], [d / track.timescale for d in durations]
        offset = None
        if self.part_ms and not self.ended and durations:
            offset = max(0.0, durations[-1] / track.timescale - self.part_ms / 1000)
        if progress is not None:
            expected = max(durations[-1] if durations else track.timescale * self.target_ms // 1000, progress.duration)
            starts.append(progress.start)
            durations.append(expected)
            if not parts:       # before the first complete segment: the rate of its chunks so far
                sizes, spans = [sum(map(len, progress.data))], [max(progress.duration, 1) / track.timescale]
            # available a part after its start: when its first chunk is there (DASH-IF LL: ATO = segment - chunk)
            offset = max(0.0, expected / track.timescale - self.part_ms / 1000)
        peak, _ = bandwidth(sizes, spans)
        letter = _KIND_LETTER[track.kind]
        return LiveRepresentation(
            id=letter, kind=track.kind, codecs=codec_string(track.codec), bandwidth=peak,
            timescale=track.timescale, initialization=period.init_names[track.kind],
            media=f"{self.tid}-{period.id}-{letter}-$Time$.m4s",
            start_number=segs[0].number if segs else self._next_number, starts=starts,
            durations=durations, width=track.codec.width, height=track.codec.height, frame_rate=period.frame_rate,
            sample_rate=track.codec.sample_rate, channel_configuration=channel_configuration(track.codec),
            availability_time_offset=offset)

    def _aligned_siblings(self, own: tuple[LiveRepresentation, ...]) -> tuple[LiveRepresentation, ...]:
        """The ladder's renditions on this stream's media timeline (their publish carries the source's timestamps:
        the same publisher time of media time 0) whose segments start where this stream's do, so a player can switch
        between them in one AdaptationSet; any other is left out rather than listed misaligned."""
        video = next((r for r in own if r.kind == "video"), None)
        if video is None:
            return ()
        starts, out = set(video.starts), []
        for base_ms, r in self.dash_siblings():
            first = next((i for i, t in enumerate(r.starts) if t >= video.starts[0]), len(r.starts))  # same window
            if base_ms == self._period.base_ms and r.timescale == video.timescale and first < len(r.starts) \
                    and set(r.starts[first:]) <= starts:
                out.append(dataclasses.replace(r, start_number=r.start_number + first, starts=r.starts[first:],
                                               durations=r.durations[first:]))
        return tuple(out)

    def dash_representation(self, prefix: str, rid: str) -> tuple[int, LiveRepresentation] | None:
        """This stream's video in its current period as a Representation of another stream's MPD (a ladder's
        source), with the period's ``base_ms``: file names prefixed by ``prefix`` (the way from that stream's
        directory to this one)."""
        period, chunks = self._period, self._chunks
        video = next((t for t in period.tracks if t.kind == "video"), None) if period is not None else None
        if video is None or self.ended:
            return None
        segs = [s for s in list(self._listed) if s.period is period]
        rep = self._representation(period, video, segs, chunks.get("video"))
        if rep is None:
            return None
        return period.base_ms, dataclasses.replace(rep, id=rid, initialization=prefix + rep.initialization,
                                                   media=prefix + rep.media)

    def position(self) -> tuple[int, int | None] | None:
        """(LAST-MSN, LAST-PART) of this stream's playlist, for its siblings' EXT-X-RENDITION-REPORT: the segment in
        progress and its last part, else the last segment and its last part (None before anything is listed)."""
        parts, listed = list(self._parts), list(self._listed)
        if parts:
            return self._next_number, len(parts) - 1
        if not listed:
            return None
        return listed[-1].number, (len(listed[-1].parts) - 1 if listed[-1].parts else None)

    @property
    def base_ms(self) -> int | None:
        """The publisher's time of media time 0 in the current period (None before it starts)."""
        period = self._period
        return period.base_ms if period is not None else None

    def variant(self, uri: str = MEDIA_PLAYLIST) -> LiveVariant | None:
        """This stream as a master playlist's variant (None before its first segment); thread-safe enough for a
        sibling's writer to read: every field is replaced whole."""
        period = self._period
        listed = [(s.hls_size, s.duration / s.timescale) for s in list(self._listed) if s.period is period]
        if not listed:     # low latency, before the first segment: its parts so far
            listed = [(len(data), p.duration) for p, data in list(self._parts)]
        if period is None or not listed:
            return None
        peak, average = bandwidth([n for n, _ in listed], [d for _, d in listed])
        video = next((t for t in period.tracks if t.kind == "video"), None)
        rate = float(Fraction(period.frame_rate)) if period.frame_rate else 0.0
        return LiveVariant(uri, peak, average, tuple(t.codec.codec_string for t in period.tracks),
                           video.codec.width if video else 0, video.codec.height if video else 0, rate)

    def _write_master(self) -> None:
        """master.m3u8: this stream, and the renditions a ladder makes of it (``siblings``: their variants with
        URIs relative to this directory), highest bandwidth first. Only renditions on this stream's timeline (the
        same publisher time of media time 0: the same first key frame) are listed: variants must match in time."""
        variants = [v for v in [self.variant(), *(v for b, v in self.siblings() if b == self.base_ms)]
                    if v is not None]
        text = build_live_master_playlist(sorted(variants, key=lambda v: -v.bandwidth))
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
                "periods": self._periods, "latency_ms": latency_summary(self.latencies_ms),
                "part_latency_ms": latency_summary(self.part_latencies_ms)}


def latency_summary(values) -> dict:
    if not len(values):
        return {"count": 0, "p50": None, "p95": None, "max": None}
    a = np.fromiter(values, dtype=np.float64)
    return {"count": int(len(a)), "p50": round(float(np.percentile(a, 50)), 3),
            "p95": round(float(np.percentile(a, 95)), 3), "max": round(float(a.max()), 3)}


_COMMON_RATES = tuple(Fraction(r) for r in ("24000/1001", "24", "25", "30000/1001", "30", "48", "50", "60000/1001",
                                            "60", "10", "12", "15", "20"))


def nominal_frame_rate(dts, timescale: int, tolerance: float = 1 / 200) -> Fraction | None:
    """The rate of frames at decode times ``dts`` (ticks): their mean rate snapped to a common rate within
    ``tolerance`` (FLV times are whole ms: 24 fps comes as 41 and 42 ms), else to 3 decimals; None without a span."""
    if len(dts) < 2 or dts[-1] <= dts[0]:
        return None
    rate = Fraction(int(len(dts) - 1) * timescale, int(dts[-1] - dts[0]))
    near = min(_COMMON_RATES, key=lambda r: abs(r - rate))
    return near if abs(near - rate) <= near * tolerance else Fraction(round(float(rate) * 1000), 1000)


def _frame_rate(tc: TrackCut) -> str:
    """@frameRate of a segment: its nominal rate (``nominal_frame_rate``), "" when unknown."""
    rate = nominal_frame_rate(tc.samples.dts, tc.track.timescale)
    if rate is None:
        return ""
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out
