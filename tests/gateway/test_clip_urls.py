"""nginx-vod-module's clipFrom/clipTo path parameters in the URL grammar (table tests)."""
from __future__ import annotations

import pytest

from gateway.http.urls import Mp4Download, parse_path
from packagers.clipping import Clip
from packagers.errors import ErrorCode, PackagerError


@pytest.mark.parametrize("path, paths, clip", [
    ("/hls/title.mp4/clipFrom/10000/clipTo/60000/master.m3u8", ("title.mp4",), Clip(10000, 60000)),
    ("/hls/clipFrom/10000/title.mp4/seg-1-v1-a1.ts", ("title.mp4",), Clip(10000)),
    ("/dash/a/CLIPTO/5000/b/title.mp4/manifest.mpd", ("a/b/title.mp4",), Clip(0, 5000)),  # names: any case
    ("/hds/clipTo/5000/title.mp4/clipTo/9000/manifest.f4m", ("title.mp4",), Clip(0, 5000)),  # the first counts
    ("/mss/title.mp4/clipFrom/2000/manifest", ("title.mp4",), Clip(2000)),
    ("/mss/title.mp4/clipFrom/2000/QualityLevels(1000)/Fragments(video=0)", ("title.mp4",), Clip(2000)),
    ("/hls/d/t_,a,b,.mp4.urlset/clipFrom/0/master.m3u8", ("d/t_a.mp4", "d/t_b.mp4"), Clip()),
    ("/hls/clipFrom/master.m3u8", ("clipFrom",), Clip()),  # no value after the name: a path segment
])  # fmt: skip
def test_path_parameters_are_taken_out_of_the_media_path(path, paths, clip):
    parsed = parse_path(path)
    assert parsed.target.paths == paths and parsed.target.clip == clip


def test_a_clip_is_its_own_target_and_a_token_still_covers_the_file():
    whole, clipped = parse_path("/hls/t.mp4/master.m3u8"), parse_path("/hls/t.mp4/clipTo/9000/master.m3u8")
    assert whole.target != clipped.target and clipped.signed_name == whole.signed_name == "t.mp4"
    signed = parse_path("/s/0_abcd1234/123-abc/mp4/clipFrom/1000/t.mp4")
    assert signed.request == Mp4Download("t.mp4", Clip(1000)) and signed.request.signed_name == "t.mp4"


@pytest.mark.parametrize("path", [
    "/hls/t.mp4/clipFrom/ten/master.m3u8", "/hls/t.mp4/clipFrom/-5/master.m3u8", "/hls/t.mp4/clipTo/0/master.m3u8",
    "/hls/t.mp4/clipFrom/5000/clipTo/5000/master.m3u8", "/mp4/t.mp4/clipFrom/9000/clipTo/1000",
    "/dash/t.mp4/clipTo/99999999999999/manifest.mpd", "/hls/t.mp4/clipFrom/%EF%BC%91/master.m3u8",
])  # fmt: skip
def test_bad_clips_are_400(path):
    with pytest.raises(PackagerError) as raised:
        parse_path(path)
    assert raised.value.code == ErrorCode.BAD_REQUEST and "clip" in str(raised.value).lower()
