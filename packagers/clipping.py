"""Clipping: nginx-vod-module's ``clipFrom``/``clipTo`` path parameters as a presentation of part of a file.

A clip is cut from the sample tables alone (no byte is read, nothing is re-encoded), so every protocol packages it
like any other file, with segment numbering from 1 inside the clip:

* video starts on the key frame at or before the frame shown at clipFrom (decoding needs it) and ends with the last
  frame, in decode order, presented before clipTo (with B-frames, a reference frame presented later may come along);
* audio starts one frame before the one playing at clipFrom (AAC decodes a frame with its predecessor) and ends
  with the last one starting before clipTo;
* the clip's presentation time 0 is clipFrom, moved back to the start of the video frame shown then (at most one
  frame earlier: a clip starts with a whole picture), in every track: ``edit_offset`` says so, as it says where an
  MP4's edit list starts. The frames before (the rest of that GOP, part of an audio frame) get negative presentation
  times. ``Track.presentation_end`` ends presentation at clipTo.

How each player is told where to start: an MP4's edit list (ffmpeg, Chromium: the picture at clipFrom first); HLS,
EXT-X-START:TIME-OFFSET with PRECISE=YES (MPEG-TS players put the earliest timestamp at 0; an fMP4 clip's times
move later by the decode-only span, ``hls.playlists.clip_shift``, since MSE players drop frames before 0): hls.js
and shaka start on the picture at clipFrom; DASH, @presentationTimeOffset and the negative times themselves: ffmpeg
shows the picture at clipFrom, but MSE players drop the frames before the period start and, with them, every frame
up to the next key frame, so they start on that key frame, at most one GOP late (DASH has no start position to
give). Smooth and HDS have no way to say it either: their players show the decode-only frames too.

Unlike nginx-vod-module, which moves clipFrom forward to the next key frame, the picture shown first is the one at
clipFrom; decode times are rebased to start at 0 so that fragments' tfdt stay small.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .errors import bad_request
from .model import Presentation, SampleTable, Track

MAX_CLIP_MS = 10**12  # ~31 years: digits beyond this are a typo or an attack, not a position


@dataclass(frozen=True)
class Clip:
    """Milliseconds from the start of the file; ``to_ms`` None means to the end."""

    from_ms: int = 0
    to_ms: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.from_ms <= MAX_CLIP_MS or (self.to_ms is not None and not 0 < self.to_ms <= MAX_CLIP_MS):
            raise bad_request(f"Clip: clipFrom {self.from_ms} / clipTo {self.to_ms} ms out of range")
        if self.to_ms is not None and self.from_ms >= self.to_ms:
            raise bad_request(f"Clip: clipFrom {self.from_ms} ms is not before clipTo {self.to_ms} ms")

    @property
    def is_whole(self) -> bool:
        return self.from_ms == 0 and self.to_ms is None


def clip_presentation(presentation: Presentation, clip: Clip) -> Presentation:
    """The part of ``presentation`` that ``clip`` names (see the module docstring); tracks left without a sample
    are dropped. BAD_REQUEST when clipFrom is at or past the end."""
    if clip.is_whole:
        return presentation
    duration_ms = presentation.duration_seconds * 1000
    if clip.from_ms >= duration_ms:
        raise bad_request(f"clip_presentation: clipFrom {clip.from_ms} ms is at or past the end of "
                          f"{presentation.source or 'the media'} ({duration_ms / 1000:.3f} s)")
    start = clip_start(presentation, clip)
    tracks = tuple(t for t in (clip_track(t, clip, start) for t in presentation.tracks) if len(t.samples))
    return dataclasses.replace(presentation, tracks=tracks)


def clip_start(presentation: Presentation, clip: Clip) -> Fraction:
    """Where the clip starts, in seconds: the start of the video frame shown at clipFrom (so that the clip's first
    picture is a whole frame, as an edit list's reader cuts it), else clipFrom itself."""
    start = Fraction(clip.from_ms, 1000)
    if clip.from_ms == 0 or not presentation.video_tracks:
        return start
    video = presentation.video_tracks[0]
    pts = np.sort(video.presentation_pts())
    at = int(np.searchsorted(pts, clip.from_ms * video.timescale // 1000, side="right")) - 1
    return Fraction(int(pts[at]), video.timescale) if at >= 0 and pts[at] > 0 else start


def clip_track(track: Track, clip: Clip, start: Fraction) -> Track:
    ts = track.timescale
    start_time = round(start * ts)
    pts = track.presentation_pts()
    n = len(pts)
    if start_time == 0:
        first = 0
    elif track.kind == "video":
        # the frame shown at clipFrom: the last one presented at or before it; decoding starts at its key frame
        order = np.argsort(pts, kind="stable")
        shown = int(order[max(0, int(np.searchsorted(pts[order], start_time, side="right")) - 1)]) if n else 0
        keys = np.flatnonzero(track.samples.keyframe)
        before = np.searchsorted(keys, shown, side="right") - 1
        first = int(keys[before]) if len(keys) and before >= 0 else shown
    else:
        # the frame playing at clipFrom, and the one before: an AAC frame decodes from its predecessor's overlap
        first = max(0, int(np.searchsorted(pts, start_time, side="right")) - 2)
    end, presentation_end = n, track.presentation_end
    if clip.to_ms is not None:
        end_time = clip.to_ms * ts // 1000
        before_end = np.flatnonzero(pts < end_time)
        end = int(before_end[-1]) + 1 if len(before_end) else 0
        presentation_end = min(end_time, presentation_end if presentation_end is not None else end_time)
    if first >= end:
        return track.with_samples(SampleTable.empty())
    samples = track.samples[first:end]
    origin = int(samples.dts[0])
    rebased = dataclasses.replace(samples, dts=samples.dts - origin)
    return dataclasses.replace(
        track, samples=rebased, edit_offset=track.edit_offset + start_time - origin,
        presentation_end=None if presentation_end is None else presentation_end - start_time)
