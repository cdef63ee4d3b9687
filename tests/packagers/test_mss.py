"""Smooth Streaming manifest (MS-SSTR §2.2.2) and fragment lookup, on synthetic media sets."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from packagers.errors import ErrorCode, PackagerError
from packagers.media_set import MediaSet
from packagers.mss import build_smooth_manifest, locate_fragment, smooth_streams

from .golden import check_golden
from .synthetic import audio_track, presentation, video_track

def ladder(timescales=(12288, 12288, 12288)) -> MediaSet:
    return MediaSet([presentation(video_track(20, timescale=ts), audio_track(20), source=f"r{i}.mp4")
                     for i, ts in enumerate(timescales)], 6000)


SCENARIOS = {
    "mss_url_set_ladder": ladder,
    "mss_two_audio": lambda: MediaSet([presentation(video_track(13), audio_track(13, track_id=2),
                                                    audio_track(13, track_id=3, language="fra"))], 4000),
    "mss_audio_only": lambda: MediaSet([presentation(audio_track(14.5))], 6000),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_golden_manifest(scenario, update_golden):
    check_golden(scenario, {"Manifest.xml": build_smooth_manifest(SCENARIOS[scenario]())}, update_golden)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_chunks_tile_the_tracks_and_every_fragment_is_found(scenario):
    media_set = SCENARIOS[scenario]()
    root = ET.fromstring(build_smooth_manifest(media_set))
    for stream, index in zip(smooth_streams(media_set), root.findall("StreamIndex")):
        chunks = index.findall("c")
        assert chunks[0].get("t") == str(int(stream.starts[0])) and all(c.get("t") is None for c in chunks[1:])
        d = np.array([int(c.get("d")) for c in chunks])
        assert (stream.starts[1:] == stream.starts[:-1] + d[:-1]).all()
        for bitrate, selection in stream.levels:
            track = selection.tracks[0]
            assert int(stream.starts[0]) + d.sum() == track.samples.end_dts(), "chunks cover every sample"
            for k, t in enumerate(stream.starts.tolist()):
                found, index = locate_fragment(media_set, stream.name, bitrate, t)
                assert (found.file_index, found.spec, index) == (selection.file_index, selection.spec, k)


def test_unknown_fragment_names_are_not_found():
    media_set = ladder()
    video = smooth_streams(media_set)[0]
    bitrate = video.levels[0][0]
    for stream, rate, start in (("video", bitrate, 1), ("video", 123, 0), ("nope", bitrate, 0),
                                ("video", bitrate, int(video.starts[-1]) + 10**6)):
        with pytest.raises(PackagerError) as e:
            locate_fragment(media_set, stream, rate, start)
        assert e.value.code is ErrorCode.NOT_FOUND


def test_renditions_that_cannot_share_chunks_are_refused():
    with pytest.raises(PackagerError) as e:
        build_smooth_manifest(ladder((12288, 24576, 12288)))
    assert e.value.code is ErrorCode.UNSUPPORTED and "line up" in e.value.message


def test_equal_bitrates_get_distinct_quality_level_names():
    levels = smooth_streams(ladder())[0].levels
    assert len({b for b, _ in levels}) == 3
