"""Smooth Streaming manifest (MS-SSTR §2.2.2) and fragment lookup, on synthetic media sets; golden manifests and
fragment digests (``python -m pytest tests/packagers/test_mss.py --update-golden`` after an intended change)."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from packagers.errors import ErrorCode, PackagerError
from packagers.fmp4 import Fmp4Muxer
from packagers.media_set import MediaSet
from packagers.mss import build_smooth_manifest, locate_fragment, smooth_streams

from .golden import check_golden, segment_digests
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


def _fragment_digests(media_set: MediaSet) -> str:
    """``fragments.sha256`` of every fragment of every quality level, named by its URL (which must find it)."""
    segments = []
    for stream in smooth_streams(media_set):
        for bitrate, selection in stream.levels:
            for k, start in enumerate(stream.starts.tolist()):
                found, index = locate_fragment(media_set, stream.name, bitrate, start)
                assert (found.spec, index) == (selection.spec, k)
                segments.append((f"QualityLevels({bitrate})/Fragments({stream.name}={start})", selection.spec, k))
    # the gateway's fragment muxer (products.py): moof with tfxd + mdat, no styp
    return segment_digests(media_set, segments, lambda selection: Fmp4Muxer(selection.tracks, styp=False,
                                                                            tfxd=True).build)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_golden_manifest(scenario, update_golden):
    media_set = SCENARIOS[scenario]()
    rendered = {"Manifest.xml": build_smooth_manifest(media_set), "fragments.sha256": _fragment_digests(media_set)}
    check_golden(scenario, rendered, update_golden)


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


def test_streams_are_derived_once_per_media_set_and_refusals_are_not_remembered():
    media_set = SCENARIOS["mss_two_audio"]()
    assert smooth_streams(media_set) is smooth_streams(media_set)  # every fragment request looks them up
    assert smooth_streams(SCENARIOS["mss_two_audio"]()) is not smooth_streams(media_set)
    with pytest.raises(ValueError):
        smooth_streams(media_set)[0].starts[0] = 1  # shared by every request: read-only
    calls = []

    def refuse():
        calls.append(1)
        raise PackagerError(ErrorCode.UNSUPPORTED, "no")

    for _ in range(2):
        with pytest.raises(PackagerError):
            media_set.derived("refused", refuse)
    assert len(calls) == 2
