"""Segment boundaries: computed once per presentation, shared by every protocol.

Boundaries follow nginx-vod-module's ``vod_align_segments_to_key_frames``: on an absolute grid of ``target``
seconds, each boundary moves forward to the first key frame at or after its grid point, so segment k means the same
samples whatever the protocol, and renditions with aligned key frames get identical boundaries (seamless ABR
switching). A GOP longer than the target makes a longer segment; there are never empty segments. Audio-only media is
cut on the grid at audio frame boundaries.

All boundary times are integers in the plan's timescale (the driving track's own, so key-frame times are exact).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import ErrorCode, PackagerError, not_found
from .model import Presentation, Track

DEFAULT_SEGMENT_DURATION_MS = 6000


def driving_track(presentation: Presentation) -> Track:
    """The track whose sync points decide the boundaries: the first video track, else the first audio track."""
    tracks = presentation.video_tracks or presentation.audio_tracks
    if not tracks:
        raise PackagerError(ErrorCode.NO_STREAMS, f"driving_track: no audio or video track in {presentation.source}")
    return tracks[0]


def sync_times(track: Track) -> np.ndarray:
    """Presentation times of the samples a segment may start on, ascending (track timescale)."""
    if track.kind == "video":
        times = track.presentation_pts()[track.samples.keyframe]
    else:
        times = track.presentation_pts()
    return np.sort(times)


@dataclass(frozen=True, eq=False)
class SegmentPlan:
    timescale: int
    boundaries: np.ndarray  # int64, count + 1 entries: start of each segment, then the end of the presentation

    @property
    def count(self) -> int:
        return len(self.boundaries) - 1

    def durations(self) -> np.ndarray:
        """Each segment's real duration in seconds (float64); they sum to the presentation duration."""
        return np.diff(self.boundaries) / self.timescale

    def check_index(self, index: int) -> None:
        if not 0 <= index < self.count:
            raise not_found(f"SegmentPlan.check_index: segment {index + 1} is past the end ({self.count} segments)")

    def sample_ranges(self, track: Track) -> np.ndarray:
        """Index of the first sample of every segment for ``track``, plus len(samples): shape (count + 1,).

        Video splits in decode order at the first key frame presented at or after each boundary (half a frame of
        tolerance absorbs timescale rounding between renditions); audio splits by presentation time.
        """
        n = len(track.samples)
        inner = self.boundaries[1:-1].astype(np.float64) * track.timescale / self.timescale
        pts = track.presentation_pts()
        if track.kind == "video" and n:
            key_index = np.flatnonzero(track.samples.keyframe)
            key_pts = pts[key_index]
            tol = float(np.median(track.samples.durations)) / 2 if n else 0.0
            pos = np.searchsorted(key_pts, inner - tol, side="left")
            starts = np.where(pos < len(key_index), key_index[np.minimum(pos, len(key_index) - 1)], n)
        else:
            starts = np.searchsorted(pts, inner, side="left")
        out = np.empty(self.count + 1, dtype=np.int64)
        out[0] = 0
        out[1:-1] = starts
        out[-1] = n
        return out


def build_plan(presentation: Presentation, segment_duration_ms: int = DEFAULT_SEGMENT_DURATION_MS) -> SegmentPlan:
    """Key-frame-aligned boundaries for one presentation."""
    if segment_duration_ms <= 0:
        raise PackagerError(ErrorCode.BAD_REQUEST, f"build_plan: segment duration {segment_duration_ms} ms must be > 0")
    driver = driving_track(presentation)
    ts = driver.timescale
    end = max(int(np.ceil(t.duration * ts / t.timescale)) for t in presentation.tracks if len(t.samples))
    sync = sync_times(driver)
    sync = sync[(sync > 0) & (sync < end)]
    target = segment_duration_ms * ts // 1000
    grid = np.arange(target, end, max(1, target), dtype=np.int64)
    pos = np.searchsorted(sync, grid, side="left")
    inner = np.unique(sync[pos[pos < len(sync)]])
    plan = SegmentPlan(ts, np.concatenate(([0], inner, [end])).astype(np.int64))
    return _drop_empty(plan, presentation.tracks)


def _drop_empty(plan: SegmentPlan, tracks: Sequence[Track]) -> SegmentPlan:
    """Merge away segments in which no track has a sample (e.g. a grid point after the last audio frame)."""
    has_samples = np.zeros(plan.count, dtype=bool)
    for track in tracks:
        has_samples |= np.diff(plan.sample_ranges(track)) > 0
    if has_samples.all() or not has_samples.any():
        return plan
    keep = np.flatnonzero(has_samples)
    # Keep the starts of non-empty segments; the first segment always starts at 0 and the end stays the end.
    bounds = np.concatenate(([0], plan.boundaries[keep[1:]], [plan.boundaries[-1]]))
    return SegmentPlan(plan.timescale, bounds.astype(np.int64))


def aligned(plan: SegmentPlan, presentation: Presentation) -> bool:
    """Whether ``presentation``'s sync points sit on ``plan``'s boundaries (within half a frame)."""
    driver = driving_track(presentation)
    inner = plan.boundaries[1:-1].astype(np.float64) * driver.timescale / plan.timescale
    if not len(inner):
        return True
    sync = sync_times(driver).astype(np.float64)
    if not len(sync):
        return False
    tol = float(np.median(driver.samples.durations)) / 2
    pos = np.clip(np.searchsorted(sync, inner), 1, len(sync) - 1) if len(sync) > 1 else np.zeros(len(inner), int)
    nearest = np.minimum(np.abs(sync[pos] - inner), np.abs(sync[np.maximum(pos - 1, 0)] - inner))
    return bool((nearest <= tol).all())


def build_shared_plans(presentations: Sequence[Presentation], segment_duration_ms: int) -> tuple[SegmentPlan, ...]:
    """One plan per presentation; the same plan object for all when their key frames align (seamless ABR)."""
    first = build_plan(presentations[0], segment_duration_ms)
    if all(aligned(first, p) for p in presentations[1:]):
        return (first,) * len(presentations)
    return (first,) + tuple(build_plan(p, segment_duration_ms) for p in presentations[1:])
