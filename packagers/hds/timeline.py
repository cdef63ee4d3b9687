"""The HDS timeline: FLV tag timestamps in milliseconds, and the fragment table the bootstrap states.

FLV timestamps are decode times (FLV spec E.4.1 ``Timestamp``: "the time in milliseconds at which the data in this
tag applies"; a video tag's presentation time is ``Timestamp + CompositionTime``, E.4.3.1). They are unsigned, while
an MP4 with B-frames or AAC priming starts *before* presentation 0 (``dts - edit_offset`` of the first video frame is
minus two frames, of the first AAC frame minus 1024 samples). So every timestamp gets one constant added:

    Timestamp = round_ms(dts - edit_offset) + TIMESTAMP_OFFSET
    TIMESTAMP_OFFSET = max(0, -min over every track of the media set of round_ms(first dts - edit_offset))

i.e. the earliest tag of the media set is at 0 ms (for ffmpeg's B-frame H.264 + AAC output the offset is the video
edit offset, two frames: 83 ms at 24 fps). It is one constant per *media set* (every file of a url set, every track),
so renditions and alternate audio tracks share one timeline and fragment n of every rendition starts at the same
time; and the same in every fragment, so timestamps continue across fragments. ``round_ms`` rounds half up, and a
video tag's CompositionTime is ``round_ms(pts) - round_ms(dts)``, so both FLV times are within 0.5 ms of the source.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..media_set import MediaSet, Selection
from ..model import Track

HDS_TIMESCALE = 1000  # abst/afrt TimeScale and FLV timestamps: milliseconds


def round_ms(ticks, timescale: int):
    """``ticks`` / ``timescale`` in milliseconds, rounded half up (exact integer arithmetic; int or int64 array)."""
    return (ticks * (2 * HDS_TIMESCALE) + timescale) // (2 * timescale)


def timestamp_offset_ms(tracks: Iterable[Track]) -> int:
    """The constant added to every FLV timestamp so that the earliest decode time of ``tracks`` is 0 ms."""
    firsts = [
        int(round_ms(int(t.samples.dts[0]) - t.edit_offset, t.timescale)) for t in tracks if len(t.samples)
    ]
    return max(0, -min(firsts, default=0))


def media_set_timestamp_offset(media_set: MediaSet) -> int:
    """``timestamp_offset_ms`` over every track of every file of the set: the one constant of its HDS timeline."""
    return timestamp_offset_ms(t for p in media_set.planned for t in p.tracks)  # not only what a manifest lists


def track_timestamps(track: Track, offset_ms: int) -> np.ndarray:
    """FLV Timestamp of every sample of ``track`` (int64 ms)."""
    return round_ms(track.presentation_dts(), track.timescale) + offset_ms


def fragment_times(media_set: MediaSet, selection: Selection) -> tuple[np.ndarray, np.ndarray, int]:
    """Per fragment of ``selection``: (timestamp of its first FLV tag, duration) in ms, and the end of the timeline.

    A fragment's first tag is its earliest sample over the selected tracks (tags are in decode order), so these
    starts are exactly what a player reads in the fragments. Starts tile the timeline (duration = next start -
    start); the last fragment lasts until the latest decode end (last dts + duration) of the selected tracks.
    """
    offset = media_set_timestamp_offset(media_set)
    count = media_set.plan(selection).count
    starts = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
    end = 0
    for track in selection.tracks:
        n = len(track.samples)
        if not n:
            continue
        ranges = media_set.sample_ranges(selection, track)
        nonempty = ranges[1:] > ranges[:-1]
        first_dts = track.samples.dts[np.minimum(ranges[:-1], n - 1)] - track.edit_offset
        first = round_ms(first_dts, track.timescale) + offset
        starts = np.where(nonempty, np.minimum(starts, first), starts)
        decode_end = int(track.samples.dts[-1]) + int(track.samples.durations[-1]) - track.edit_offset
        end = max(end, int(round_ms(decode_end, track.timescale)) + offset)
    # A fragment without samples (possible for a partial selection) starts where the next one does, or at the end.
    empty = starts == np.iinfo(np.int64).max
    if empty.any():
        starts = np.minimum.accumulate(np.where(empty, end, starts)[::-1])[::-1].copy()
    durations = np.diff(np.append(starts, end))
    return starts, durations, end
