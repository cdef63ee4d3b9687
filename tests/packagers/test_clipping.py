"""packagers.clipping against the source's own sample tables (the e2e test decodes every protocol's clip)."""
from __future__ import annotations

import numpy as np
import pytest

from fixtures.generate import fixture_path
from packagers.clipping import Clip, clip_presentation
from packagers.errors import ErrorCode, PackagerError
from packagers.media_set import MediaSet
from packagers.mp4 import open_presentation


@pytest.fixture(scope="module")
def title():
    return open_presentation(fixture_path("title_180p.mp4"))


def test_a_clip_presents_from_clip_from_and_decodes_from_the_key_frame_before(title):
    clipped = clip_presentation(title, Clip(3500, 7000))
    video, audio = clipped.video_tracks[0], clipped.audio_tracks[0]
    source = title.video_tracks[0]
    first = int(np.flatnonzero(source.samples.offsets == video.samples.offsets[0])[0])
    assert source.samples.keyframe[first] and video.samples.keyframe[0]
    assert source.presentation_pts()[first] == 2 * source.timescale  # the key frame at 2 s (GOP of 2 s)
    # presentation 0 of the clip is 3.5 s of the source, for every sample kept
    kept = slice(first, first + len(video.samples))
    assert np.array_equal(video.presentation_pts(), source.presentation_pts()[kept] - 3.5 * source.timescale)
    assert video.samples.dts[0] == 0 and audio.samples.dts[0] == 0  # rebased decode times
    assert abs(audio.presentation_pts()[1] / audio.timescale) < 1024 / audio.timescale  # the frame playing at 0
    assert video.duration_seconds == pytest.approx(3.5) and audio.duration_seconds == pytest.approx(3.5)
    plan = MediaSet([clipped], 4000).plans[0]
    assert plan.boundaries[0] == 0 and plan.durations().sum() == pytest.approx(3.5)


def test_clip_to_alone_and_audio_only():
    audio_only = open_presentation(fixture_path("audio_only.mp4"))
    clipped = clip_presentation(audio_only, Clip(0, 2000))
    (track,) = clipped.tracks
    assert track.samples.offsets[0] == audio_only.tracks[0].samples.offsets[0]  # nothing cut at the start
    assert track.duration_seconds == pytest.approx(2.0)
    assert (track.presentation_pts() < 2 * track.timescale).all()


def test_clip_from_at_or_past_the_end_is_bad_request(title):
    with pytest.raises(PackagerError) as raised:
        clip_presentation(title, Clip(12000))
    assert raised.value.code == ErrorCode.BAD_REQUEST and "clipFrom 12000 ms" in str(raised.value)
    assert clip_presentation(title, Clip(0, 10**9)).video_tracks[0].duration == title.video_tracks[0].duration
