"""Golden HLS playlists and MPEG-TS segment digests for fixed synthetic media sets (independent of encoder versions).

Run ``python -m pytest tests/packagers/test_golden_playlists.py --update-golden`` after an intended change, then
review the diff of tests/golden/.
"""
import m3u8
import numpy as np
import pytest

from packagers.hls import build_master_playlist, build_media_playlist
from packagers.media_set import MediaSet
from packagers.naming import TrackSpec
from packagers.ts import TsMuxer

from .golden import check_golden, segment_digests
from .synthetic import SCENARIOS


def _render(media_set: MediaSet) -> dict[str, str]:
    out = {"master.m3u8": build_master_playlist(media_set)}
    master = m3u8.loads(out["master.m3u8"])
    uris = [p.uri for p in master.playlists] + [m.uri for m in master.media if m.uri]
    for uri in uris:
        suffix = uri[len("index"):-len(".m3u8")]
        out[uri] = build_media_playlist(media_set, media_set.resolve(TrackSpec.parse(suffix)))
    return out


def _segment_digests(media_set: MediaSet, playlists: dict[str, str]) -> str:
    """``fragments.sha256`` of every .ts segment the media playlists list, muxed as the gateway muxes clear TS."""
    segments = []
    for name, text in playlists.items():
        if name != "master.m3u8":
            spec = TrackSpec.parse(name[len("index"):-len(".m3u8")])
            segments += [(segment.uri, spec, k) for k, segment in enumerate(m3u8.loads(text).segments)]
    return segment_digests(media_set, segments, lambda selection: TsMuxer(selection.tracks).build)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_golden(scenario, update_golden):
    media_set = SCENARIOS[scenario]()
    rendered = _render(media_set)
    rendered["fragments.sha256"] = _segment_digests(media_set, rendered)
    check_golden(scenario, rendered, update_golden)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_playlists_are_valid_hls(scenario):
    media_set = SCENARIOS[scenario]()
    rendered = _render(media_set)
    for name, text in rendered.items():
        if name == "master.m3u8":
            continue
        pl = m3u8.loads(text)
        assert pl.is_endlist and pl.playlist_type == "vod"
        durations = np.array([s.duration for s in pl.segments])
        # RFC 8216 §4.3.3.1: every EXTINF rounded to the nearest integer <= TARGETDURATION
        assert (np.round(durations) <= pl.target_duration).all()
        assert durations.sum() == pytest.approx(media_set.presentations[0].duration_seconds, abs=0.002 * len(durations))
    master = m3u8.loads(rendered["master.m3u8"])
    for variant in master.playlists:
        info = variant.stream_info
        assert info.bandwidth >= info.average_bandwidth > 0
        assert info.codecs
