"""URL grammar: table tests for what is accepted, and a property test that nothing else escapes as an exception."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.responses import ByteRange, RangeNotSatisfiable, parse_range
from gateway.http.urls import (CrossDomainPolicy, Mp4Download, PackagedRequest, PlayManifest, Signed, StatusRequest,
                               parse_path)
from gateway.origin.paths import MediaTarget, UrlTooLong
from packagers.errors import ErrorCode, PackagerError
from packagers.mss.names import SmoothFile
from packagers.naming import MediaFile, TrackSpec

ONE = MediaTarget(("title_360p.mp4",), False)
NESTED = MediaTarget(("a/b c/x.mp4",), False)
SET3 = MediaTarget(("title_360p.mp4", "title_240p.mp4", "title_180p.mp4"), True)


def hls_master(target):
    return PackagedRequest("hls", target, MediaFile("manifest"))


def hls_playlist(target, spec):
    return PackagedRequest("hls", target, MediaFile("playlist", spec))


def hls_segment(target, spec, index, container="ts"):
    return PackagedRequest("hls", target, MediaFile("segment", spec, index, container))


def init_segment(protocol, target, spec):
    return PackagedRequest(protocol, target, MediaFile("init", spec))


def dash_manifest(target):
    return PackagedRequest("dash", target, MediaFile("manifest"))


def dash_fragment(target, spec, index):
    return PackagedRequest("dash", target, MediaFile("segment", spec, index))


def mss_manifest(target):
    return PackagedRequest("mss", target, SmoothFile("manifest"))


def mss_fragment(target, stream, bitrate, start):
    return PackagedRequest("mss", target, SmoothFile("segment", stream, bitrate, start))


def hds_manifest(target):
    return PackagedRequest("hds", target, MediaFile("manifest"))


def hds_fragment(target, spec, index):
    return PackagedRequest("hds", target, MediaFile("segment", spec, index))

ACCEPTED = [
    ("/hls/title_360p.mp4/master.m3u8", hls_master(ONE)),
    ("/hls/title_360p.mp4/index.m3u8", hls_playlist(ONE, TrackSpec())),
    ("/hls/title_360p.mp4/index-v1-a1.m3u8", hls_playlist(ONE, TrackSpec(None, 1, 1))),
    ("/hls/title_360p.mp4/index-a2.m3u8", hls_playlist(ONE, TrackSpec(None, None, 2))),
    ("/hls/title_360p.mp4/seg-1.ts", hls_segment(ONE, TrackSpec(), 0)),
    ("/hls/title_360p.mp4/seg-12-v1-a1.ts", hls_segment(ONE, TrackSpec(None, 1, 1), 11)),
    ("/hls/title_360p.mp4/seg-9999999999.ts", hls_segment(ONE, TrackSpec(), 9999999998)),
    ("/hls/a/b%20c/x.mp4/master.m3u8", hls_master(NESTED)),
    ("/hls/title_,360p,240p,180p,.mp4.urlset/master.m3u8", hls_master(SET3)),
    ("/hls/title_,360p,240p,180p,.mp4.urlset/index-f1-v1-a1.m3u8", hls_playlist(SET3, TrackSpec(1, 1, 1))),
    ("/hls/title_,360p,240p,180p,.mp4.urlset/seg-3-f2-v1-a1.ts", hls_segment(SET3, TrackSpec(2, 1, 1), 2)),
    ("/hls/title_,360p,.mp4.urlset/master.m3u8", hls_master(MediaTarget(("title_360p.mp4",), True))),
    ("/hls/d/t_,a,b,.mp4.urlset/master.m3u8", hls_master(MediaTarget(("d/t_a.mp4", "d/t_b.mp4"), True))),
    ("/hls/%74itle_360p.mp4/master.m3u8", hls_master(ONE)),
    ("/mp4/title_360p.mp4", Mp4Download("title_360p.mp4")),
    ("/mp4/a/caf%C3%A9.mp4", Mp4Download("a/café.mp4")),
    ("/status", StatusRequest()),
]


@pytest.mark.parametrize("path, expected", ACCEPTED)
def test_accepted(path, expected):
    assert parse_path(path) == expected


REJECTED = [
    # (path, code)
    ("/hls/title_360p.mp4/seg-0.ts", ErrorCode.BAD_REQUEST),
    ("/hls/title_360p.mp4/seg-01.ts", ErrorCode.BAD_REQUEST),
    ("/hls/title_360p.mp4/seg-00000000001.ts", ErrorCode.BAD_REQUEST),
    ("/hls/title_360p.mp4/seg-12345678901.ts", ErrorCode.BAD_REQUEST),
    ("/hls/title_360p.mp4/seg-.ts", ErrorCode.BAD_REQUEST),
    ("/hls/title_360p.mp4/seg-x.ts", ErrorCode.BAD_REQUEST),
    ("/hls/title_360p.mp4/seg--1.ts", ErrorCode.BAD_REQUEST),
    ("/hls/title_360p.mp4/seg-1-v0.ts", ErrorCode.BAD_REQUEST),
    ("/hls/title_360p.mp4/seg-1-a1-v1.ts", ErrorCode.BAD_REQUEST),
    ("/hls/title_360p.mp4/seg-1-v1-v1.ts", ErrorCode.BAD_REQUEST),
    ("/hls/title_360p.mp4/seg-1.mp4", ErrorCode.BAD_REQUEST),
    ("/hls/title_360p.mp4/index-x.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/title_360p.mp4/playlist.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/title_360p.mp4/", ErrorCode.BAD_REQUEST),
    ("/hls/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/", ErrorCode.BAD_REQUEST),
    ("/hls", ErrorCode.BAD_REQUEST),
    ("/hls/x,.mp4.urlset/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/,..%2Fb.mp4,c.mp4,.urlset/master.m3u8", ErrorCode.BAD_REQUEST),  # a url set's names: no '..' component
    ("/hls/,a%2F%2Fb.mp4,c.mp4,.urlset/master.m3u8", ErrorCode.BAD_REQUEST),  # nor an empty one
    ("/hls/,..,.urlset/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/,.hidden,.urlset/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/,.,.urlset/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/../etc/passwd/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/%2e%2e/etc/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/%2E%2e/etc/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/a/..%2f..%2fetc/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/a%5c..%5cb/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/a\\b/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/a%00.mp4/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls//etc/passwd/master.m3u8", ErrorCode.BAD_REQUEST),
    ("//etc/passwd", ErrorCode.BAD_REQUEST),
    ("/hls/./x.mp4/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/.hidden.mp4/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/%ff.mp4/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/hls/a%0a.mp4/master.m3u8", ErrorCode.BAD_REQUEST),
    ("/mp4/", ErrorCode.BAD_REQUEST),
    ("/mp4", ErrorCode.BAD_REQUEST),
    ("/mp4/../x", ErrorCode.BAD_REQUEST),
    ("/", ErrorCode.BAD_REQUEST),
    ("/flv/x.mp4/manifest.mpd", ErrorCode.NOT_FOUND),
    ("/dash/x.mp4/manifest.m3u8", ErrorCode.BAD_REQUEST),
    ("/dash/x.mp4/fragment-0-v1.m4s", ErrorCode.BAD_REQUEST),
    ("/dash/x.mp4/fragment-1-v1.mp4", ErrorCode.BAD_REQUEST),
    ("/dash/x.mp4/init-v1-v2.mp4", ErrorCode.BAD_REQUEST),
    ("/dash/manifest.mpd", ErrorCode.BAD_REQUEST),
    ("/mss/x.mp4/QualityLevels(abc)/Fragments(video=0)", ErrorCode.BAD_REQUEST),
    ("/mss/x.mp4/QualityLevels(100)/Fragments(video=-1)", ErrorCode.BAD_REQUEST),
    ("/mss/x.mp4/QualityLevels(100)/Fragments(vid%20eo=1)", ErrorCode.BAD_REQUEST),
    ("/mss/x.mp4/Fragments(video=1)", ErrorCode.BAD_REQUEST),
    ("/mss/manifest", ErrorCode.BAD_REQUEST),
    ("/hds/x.mp4/frag-v1-Seg2-Frag1", ErrorCode.BAD_REQUEST),
    ("/hds/x.mp4/frag-v1-Seg1-Frag0", ErrorCode.BAD_REQUEST),
    ("/hds/x.mp4/manifest.xml", ErrorCode.BAD_REQUEST),
    ("/status/x", ErrorCode.NOT_FOUND),
    ("relative/path", ErrorCode.BAD_REQUEST),
    ("/hls/" + "a" * 256 + "/master.m3u8", ErrorCode.BAD_REQUEST),
]


ACCEPTED_OTHER_PROTOCOLS = [
    ("/hls/a/x.mp4/init-v1-a1.mp4", init_segment("hls", MediaTarget(("a/x.mp4",), False), TrackSpec(None, 1, 1))),
    ("/hls/x.mp4/seg-3-v1.m4s", hls_segment(MediaTarget(("x.mp4",), False), TrackSpec(None, 1, None), 2, "fmp4")),
    ("/dash/x.mp4/manifest.mpd", dash_manifest(MediaTarget(("x.mp4",), False))),
    ("/dash/t_,a,b,.mp4.urlset/init-f2-v1.mp4",
     init_segment("dash", MediaTarget(("t_a.mp4", "t_b.mp4"), True), TrackSpec(2, 1, None))),
    ("/dash/x.mp4/fragment-12-a2.m4s", dash_fragment(MediaTarget(("x.mp4",), False), TrackSpec(None, None, 2), 11)),
    ("/mss/x.mp4/manifest", mss_manifest(MediaTarget(("x.mp4",), False))),
    ("/mss/d/x.mp4/QualityLevels(96000)/Fragments(audio_fra=20000000)",
     mss_fragment(MediaTarget(("d/x.mp4",), False), "audio_fra", 96000, 20000000)),
    ("/hds/x.mp4/manifest.f4m", hds_manifest(MediaTarget(("x.mp4",), False))),
    ("/hds/x.mp4/frag-v1-a1-Seg1-Frag7", hds_fragment(MediaTarget(("x.mp4",), False), TrackSpec(None, 1, 1), 6)),
]


@pytest.mark.parametrize("path, expected", ACCEPTED_OTHER_PROTOCOLS)
def test_accepted_other_protocols(path, expected):
    assert parse_path(path) == expected


# (path, delivery type a partner enables or disables, (protocol, type) metrics label)
MEDIA_KINDS = [
    ("/hls/a.mp4/master.m3u8", "hls", ("hls", "manifest")), ("/hls/a.mp4/index-v1-a1.m3u8", "hls", ("hls", "manifest")),
    ("/hls/a.mp4/seg-3-v1-a1.ts", "hls", ("hls", "segment")), ("/hls/a.mp4/seg-3-v1.m4s", "hls", ("hls", "segment")),
    ("/hls/a.mp4/init-v1.mp4", "hls", ("hls", "init")), ("/hls/a.mp4/encryption.key", "hls", ("hls", "key")),
    ("/dash/a.mp4/manifest.mpd", "dash", ("dash", "manifest")), ("/dash/a.mp4/init-a1.mp4", "dash", ("dash", "init")),
    ("/dash/a.mp4/fragment-7-v1.m4s", "dash", ("dash", "segment")), ("/mss/a.mp4/manifest", "mss", ("mss", "manifest")),
    ("/mss/a.mp4/QualityLevels(128000)/Fragments(audio=0)", "mss", ("mss", "segment")),
    ("/hds/a.mp4/manifest.f4m", "hds", ("hds", "manifest")),
    ("/hds/a.mp4/frag-v1-a1-Seg1-Frag2", "hds", ("hds", "segment")),
    ("/mp4/dir/a.mp4", "http", ("mp4", "mp4")),
]  # fmt: skip


@pytest.mark.parametrize("path, delivery_type, label", MEDIA_KINDS)
def test_media_requests_carry_their_delivery_type_and_label(path, delivery_type, label):
    """What access control and metrics read of a request, signed or not; a DASH init segment is DASH's."""
    for signed_path in (path, "/s/0_abcd1234/99-sig" + path):
        parsed = parse_path(signed_path)
        media = parsed.request if isinstance(parsed, Signed) else parsed
        assert isinstance(parsed, Signed) == (signed_path != path)
        assert media.delivery_type == delivery_type and parsed.metrics_label == media.metrics_label == label


def test_a_url_set_may_reach_into_subdirectories():
    """Captions in subs/ next to the media: a url set's names may hold a '/' (sent as %2F, one path segment)."""
    parsed = parse_path("/hls/m/,movie.mp4,subs%2Fmovie_eng.vtt,.urlset/master.m3u8")
    assert parsed.store_paths == ("m/movie.mp4", "m/subs/movie_eng.vtt")
    assert parsed.signed_name == "m/,movie.mp4,subs/movie_eng.vtt,.urlset"


def test_what_a_token_covers_and_which_files_are_read():
    packaged = parse_path("/dash/d/t_,a,b,.mp4.urlset/fragment-2-f2-v1.m4s")
    assert packaged.store_paths == ("d/t_a.mp4", "d/t_b.mp4") and packaged.signed_name == "d/t_,a,b,.mp4.urlset"
    download = parse_path("/mp4/a/caf%C3%A9.mp4")
    assert download.store_paths == ("a/café.mp4",) and download.signed_name == "a/café.mp4"
    assert download.is_download and not packaged.is_download


@pytest.mark.parametrize("path, label", [
    ("/status", ("other", "other")), ("/crossdomain.xml", ("other", "other")),
    ("/p/101/playManifest/entryId/0_abcd1234/format/applehttp/a.m3u8", ("playmanifest", "other")),
])  # fmt: skip
def test_other_endpoints_are_labelled_too(path, label):
    parsed = parse_path(path)
    assert isinstance(parsed, (StatusRequest, CrossDomainPolicy, PlayManifest)) and parsed.metrics_label == label


@pytest.mark.parametrize("path, code", REJECTED)
def test_rejected(path, code):
    with pytest.raises(PackagerError) as info:
        parse_path(path)
    assert info.value.code is code
    assert "\n" not in info.value.message


def test_url_set_file_limit():
    middles = ",".join(str(i) for i in range(40))
    with pytest.raises(PackagerError):
        parse_path(f"/hls/t_,{middles},.mp4.urlset/master.m3u8", max_url_set_files=32)
    assert len(parse_path(f"/hls/t_,{middles},.mp4.urlset/master.m3u8", max_url_set_files=40).target.paths) == 40


def test_huge_path_is_url_too_long():
    with pytest.raises(UrlTooLong):
        parse_path("/hls/" + "a/" * 3000 + "master.m3u8")


TOKENS = ["hls", "mp4", "status", "/", "/", "/", "..", ".", "%2e", "%2E", "%2f", "%5c", "\\", "%00", "%ff", ",", ",",
          ".urlset", "seg-", "index", "master.m3u8", "-v1", "-a1", "-f2", "-v", ".ts", ".m3u8", "0", "1", "9", "x.mp4",
          "%", "%C3%A9", "~", " ", "?", "#"]


def _check(path: str) -> None:
    try:
        parsed = parse_path(path)
    except PackagerError as e:
        assert e.code in (ErrorCode.BAD_REQUEST, ErrorCode.NOT_FOUND)
        assert "\n" not in e.message
        return
    paths = ()
    if isinstance(parsed, PackagedRequest):
        paths = parsed.target.paths
        if parsed.file.kind == "segment":
            assert parsed.file.index >= 0
    elif isinstance(parsed, Mp4Download):
        paths = (parsed.path,)
    else:
        assert isinstance(parsed, StatusRequest)
    for p in paths:
        assert not p.startswith("/")
        for part in p.split("/"):
            assert part and not part.startswith(".") and "\\" not in part and "\x00" not in part


@settings(max_examples=400)
@given(st.text())
def test_arbitrary_text_is_typed_or_4xx(text):
    _check("/" + text)
    _check(text)


@settings(max_examples=600)
@given(st.lists(st.sampled_from(TOKENS), max_size=14))
def test_arbitrary_token_soup_is_typed_or_4xx(tokens):
    _check("/" + "".join(tokens))
    _check("/hls/" + "".join(tokens))


RANGES = [
    ("bytes=0-99", 1000, ByteRange(0, 100)),
    ("bytes=100-", 1000, ByteRange(100, 1000)),
    ("bytes=-500", 1000, ByteRange(500, 1000)),
    ("bytes=-5000", 1000, ByteRange(0, 1000)),
    ("bytes=990-5000", 1000, ByteRange(990, 1000)),
    ("bytes=999-999", 1000, ByteRange(999, 1000)),
    ("BYTES = 1-2", 1000, ByteRange(1, 3)),
    ("bytes=0-1,5-6", 1000, None),  # multi-range: full body
    ("items=0-1", 1000, None),  # unknown unit: ignored
    ("garbage", 1000, None),
    # RFC 9110 §14.2: an invalid range-set is ignored (full 200), a last-pos past the end is clamped, however long
    ("bytes=5-2", 1000, None),
    ("bytes=-", 1000, None),
    ("bytes=abc", 1000, None),
    ("bytes=1-2-3", 1000, None),
    ("bytes=0-" + "9" * 30, 1000, ByteRange(0, 1000)),
    ("bytes=0-1,", 1000, ByteRange(0, 2)),  # empty list elements are ignored (§5.6.1.2)
]


@pytest.mark.parametrize("header, length, expected", RANGES)
def test_parse_range(header, length, expected):
    assert parse_range(header, length) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=-0", "bytes=" + "9" * 30 + "-", "bytes=" + "9" * 5000 + "-"])
def test_unsatisfiable_range(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)
