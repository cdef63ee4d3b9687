"""Segment boundaries: computed once per presentation, shared by every protocol.

Boundaries follow nginx-vod-module's ``vod_align_segments_to_key_frames``: on an absolute grid of ``target``
seconds, each boundary moves forward to the first key frame at or after its grid point, so segment k means the same
samples whatever the protocol, and renditions with aligned key frames get identical boundaries (seamless ABR
switching). A GOP longer than the target makes a longer segment; there are never empty segments. Audio-only media is
cut on the grid at audio frame boundaries.

All boundary times are integers in the plan's timescale (the driving track's own, so key-frame times are exact).

``build_plan`` is also the one sanity check every manifest writer relies on (HLS EXTINF and TARGETDURATION, DASH
durations, MSS chunks, HDS fragments all come from a plan): a presentation of zero duration, a grid of more than
``Limits.max_segments`` entries (checked before it is allocated), a segment shorter than
``Limits.min_segment_seconds`` (1 ms) or longer than ``Limits.max_segment_seconds``, or one holding more than
``Limits.segment_max_frame_count`` frames is BAD_DATA. ``MediaSet.segment_times`` holds each track's own segment
spans (DASH S@d, MSS chunks) to the same range.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import ErrorCode, PackagerError, bad_data, not_found
from .limits import DEFAULT_LIMITS, Limits
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


def build_plan(presentation: Presentation, segment_duration_ms: int = DEFAULT_SEGMENT_DURATION_MS,
               limits: Limits = DEFAULT_LIMITS) -> SegmentPlan:
    """Key-frame-aligned boundaries for one presentation, checked against ``limits`` (see the module docstring)."""
    if segment_duration_ms <= 0:
        raise PackagerError(ErrorCode.BAD_REQUEST, f"build_plan: segment duration {segment_duration_ms} ms must be > 0")
    driver = driving_track(presentation)
    ts = driver.timescale
    where = presentation.source or "presentation"
    check_tracks(presentation, limits, where)
    end = max(int(np.ceil(t.duration * ts / t.timescale)) for t in presentation.tracks if len(t.samples))
    target = max(1, segment_duration_ms * ts // 1000)
    segments = (end - 1) // target + 1  # the grid's size, before it exists
    if segments > limits.max_segments:
        raise bad_data(f"build_plan: {segments} segments are more than {limits.max_segments} in {where}")
    sync = sync_times(driver)
    sync = sync[(sync > 0) & (sync < end)]
    grid = np.arange(target, end, target, dtype=np.int64)
    pos = np.searchsorted(sync, grid, side="left")
    inner = np.unique(sync[pos[pos < len(sync)]])
    plan = SegmentPlan(ts, np.concatenate(([0], inner, [end])).astype(np.int64))
    plan, frames = _drop_empty(plan, presentation.tracks)
    check_plan(plan, frames, limits, where)
    return plan


def check_tracks(presentation: Presentation, limits: Limits, where: str) -> None:
    """Every track with samples lasts more than 0 and at most ``max_duration_seconds`` (edit lists and composition
    offsets can move a sane stts out of range)."""
    for track in presentation.tracks:
        if not len(track.samples):
            continue
        if track.duration <= 0:
            raise bad_data(f"check_tracks: track {track.track_id} has samples but no duration in {where}")
        if track.duration / track.timescale > limits.max_duration_seconds:
            raise bad_data(f"check_tracks: track {track.track_id} lasts {track.duration_seconds:.0f} s, more than "
                           f"{limits.max_duration_seconds:.0f} s in {where}")


def _drop_empty(plan: SegmentPlan, tracks: Sequence[Track]) -> tuple[SegmentPlan, np.ndarray]:
    """Merge away segments in which no track has a sample (e.g. a grid point after the last audio frame); also the
    frames of all tracks in each segment of the plan returned."""
    frames = np.zeros(plan.count, dtype=np.int64)
    for track in tracks:
        frames += np.diff(plan.sample_ranges(track))
    has_samples = frames > 0
    if has_samples.all() or not has_samples.any():
        return plan, frames
    keep = np.flatnonzero(has_samples)
    # Keep the starts of non-empty segments; the first segment always starts at 0 and the end stays the end.
    bounds = np.concatenate(([0], plan.boundaries[keep[1:]], [plan.boundaries[-1]]))
    # a merged segment gets only empty ones, so its frames are the non-empty segment's
    return SegmentPlan(plan.timescale, bounds.astype(np.int64)), frames[keep]


def check_plan(plan: SegmentPlan, frames: np.ndarray, limits: Limits, where: str) -> None:
    """The sanity every manifest writer relies on: segments of positive duration, none longer than the limit, none
    with more frames than the limit."""
    lengths = np.diff(plan.boundaries)
    if plan.count < 1 or int(lengths.min()) < limits.min_segment_seconds * plan.timescale:
        raise bad_data(f"check_plan: a segment of {int(lengths.min()) if plan.count else 0} ticks (timescale "
                       f"{plan.timescale}) is shorter than {limits.min_segment_seconds} s in {where}")
    longest = int(lengths.max())
    if longest > limits.max_segment_seconds * plan.timescale:
        raise bad_data(f"check_plan: a segment of {longest / plan.timescale:.0f} s is longer than "
                       f"{limits.max_segment_seconds:.0f} s in {where}")
    if len(frames) and int(frames.max()) > limits.segment_max_frame_count:
        raise bad_data(f"check_plan: segment {int(frames.argmax()) + 1} has {int(frames.max())} frames, more than "
                       f"{limits.segment_max_frame_count} in {where}")


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


def build_shared_plans(presentations: Sequence[Presentation], segment_duration_ms: int,
                       limits: Limits = DEFAULT_LIMITS) -> tuple[SegmentPlan, ...]:
    """One plan per presentation; the same plan object for all when their key frames align (seamless ABR). A shared
    plan is checked against every presentation, since each has its own samples in its segments."""
    first = build_plan(presentations[0], segment_duration_ms, limits)
    if all(aligned(first, p) for p in presentations[1:]):
        for p in presentations[1:]:
            check_tracks(p, limits, p.source or "presentation")
            _, frames = _drop_empty(first, p.tracks)
            check_plan(first, frames, limits, p.source or "presentation")
        return (first,) * len(presentations)
    return (first,) + tuple(build_plan(p, segment_duration_ms, limits) for p in presentations[1:])
