import numpy as np
import pytest

from packagers.errors import ErrorCode, PackagerError
from packagers.media_set import MediaSet
from packagers.naming import TrackSpec
from packagers.segmenter import build_plan, build_shared_plans

from .synthetic import audio_track, presentation, video_track


def test_boundaries_on_key_frames_and_durations_sum_to_duration():
    v, a = video_track(20, gop=48), audio_track(20)
    plan = build_plan(presentation(v, a), 6000)
    # key frames every 2 s: grid 6, 12, 18 s → boundaries exactly there
    assert (plan.boundaries[1:-1] == np.array([6, 12, 18]) * v.timescale).all()
    assert plan.durations().sum() == pytest.approx(max(v.duration_seconds, a.duration_seconds), abs=1 / plan.timescale)
    ranges = plan.sample_ranges(v)
    assert v.samples.keyframe[ranges[:-1]].all(), "every video segment starts on a key frame"
    assert (np.diff(ranges) > 0).all()


def test_long_gop_makes_longer_segment_never_empty():
    v = video_track(30, gop=24 * 10)  # key frames every 10 s
    plan = build_plan(presentation(v, audio_track(30)), 4000)
    assert (plan.boundaries[1:-1] == np.array([10, 20]) * v.timescale).all()
    assert (np.diff(plan.sample_ranges(v)) > 0).all()


def test_audio_split_by_presentation_time():
    v, a = video_track(12), audio_track(12)
    plan = build_plan(presentation(v, a), 6000)
    r = plan.sample_ranges(a)
    pts = a.presentation_pts()
    boundary = plan.boundaries[1] * a.timescale / plan.timescale
    assert pts[r[1] - 1] < boundary <= pts[r[1]]
    assert r[-1] == len(a.samples)


def test_audio_only_segmented_by_time_without_empty_tail():
    a = audio_track(12.01)
    plan = build_plan(presentation(a), 6000)
    assert plan.count == 3 or plan.count == 2
    assert (np.diff(plan.sample_ranges(a)) > 0).all()
    assert plan.durations()[:2] == pytest.approx([6.0, 6.0], abs=1024 / 44100)


def test_renditions_with_aligned_key_frames_share_one_plan():
    p1 = presentation(video_track(12, timescale=12288), audio_track(12))
    p2 = presentation(video_track(12, timescale=90000 // 24 * 24), audio_track(12))
    plans = build_shared_plans([p1, p2], 4000)
    assert plans[0] is plans[1]


def test_misaligned_renditions_get_their_own_plans():
    p1 = presentation(video_track(12, gop=48))
    p2 = presentation(video_track(12, keyframes=np.arange(0, 288, 37)))
    plans = build_shared_plans([p1, p2], 4000)
    assert plans[0] is not plans[1]
    r = plans[1].sample_ranges(p2.tracks[0])
    assert p2.tracks[0].samples.keyframe[r[:-1]].all()


def test_media_set_selection_and_past_end():
    ms = MediaSet([presentation(video_track(12), audio_track(12, track_id=2), audio_track(12, track_id=3, language="fra"))])
    assert [t.track_id for t in ms.resolve(TrackSpec()).tracks] == [1, 2]
    assert [t.track_id for t in ms.resolve(TrackSpec(audio=2)).tracks] == [3]
    with pytest.raises(PackagerError) as e:
        ms.resolve(TrackSpec(video=2))
    assert e.value.code is ErrorCode.NOT_FOUND
    sel = ms.resolve(TrackSpec())
    with pytest.raises(PackagerError) as e:
        ms.segment_tables(sel, ms.plan(sel).count)
    assert e.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(PackagerError) as e:
        ms.resolve(TrackSpec(file=1))
    assert e.value.code is ErrorCode.BAD_REQUEST


def test_segments_partition_every_sample_once():
    v, a = video_track(37), audio_track(37)
    ms = MediaSet([presentation(v, a)], 6000)
    sel = ms.resolve(TrackSpec())
    counts = [0, 0]
    for i in range(ms.plan(sel).count):
        for k, t in enumerate(ms.segment_tables(sel, i)):
            counts[k] += len(t)
    assert counts == [len(v.samples), len(a.samples)]


def test_segment_times_tile_the_timeline():
    v, a = video_track(20), audio_track(20)
    ms = MediaSet([presentation(v, a)], 6000)
    sel = ms.resolve(TrackSpec())
    for track in sel.tracks:
        for decode in (False, True):
            starts, durations = ms.segment_times(sel, track, decode=decode)
            assert (starts[1:] == starts[:-1] + durations[:-1]).all()
            assert len(starts) == ms.plan(sel).count
        starts, durations = ms.segment_times(sel, track)
        assert starts[-1] + durations[-1] == track.duration
    vstarts, _ = ms.segment_times(sel, v)
    assert (vstarts == np.array([0, 6, 12, 18]) * v.timescale).all()
