"""The browser harness itself, proved on content made without the gateway (ffmpeg's own HLS muxer).

If these fail, a failing gateway browser test says nothing about the gateway; if they pass, the harness can both
pass (real playback, cross-origin like the gateway) and fail (404, missing CORS).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fixtures.generate import fixture_path
from tests.e2e.browser_player import fatal_errors, play_in_browser, require_browser, serve_directory
from tests.needs import missing, require_executable

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _browser():
    require_browser()


def ffmpeg_package(tmp_path_factory, name: str, *args: str) -> Path:
    """The 12 s H.264 + AAC fixture packaged by the ffmpeg CLI itself (``args`` end with the output path's name)."""
    require_executable("ffmpeg")
    out = tmp_path_factory.mktemp(name)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(fixture_path("title_180p.mp4")), "-c", "copy",
         *args[:-1], str(out / args[-1])],
        check=True, stdin=subprocess.DEVNULL, timeout=120,
    )
    return out


@pytest.fixture(scope="module")
def ffmpeg_hls(tmp_path_factory) -> Path:
    """A 12 s H.264 + AAC stream cut into 2 s MPEG-TS segments by the ffmpeg CLI."""
    out = ffmpeg_package(tmp_path_factory, "ffmpeg_hls", "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
                         "index.m3u8")
    assert len(list(out.glob("*.ts"))) >= 5
    return out


@pytest.fixture(scope="module")
def hls_origin(ffmpeg_hls) -> str:
    """The stream on its own loopback port with CORS: another origin than the player page, like the gateway."""
    with serve_directory(ffmpeg_hls, cors=True) as base:
        yield base


def test_hls_js_plays_cross_origin(hls_origin):
    r = play_in_browser(f"{hls_origin}/index.m3u8", seconds=3.0, timeout=40.0)
    assert r["support"]["h264"] and r["support"]["aac"], f"this Chromium lacks H.264/AAC in MSE: {r}"
    assert r["ok"], r
    assert r["currentTime"] >= 3.0
    assert r["totalVideoFrames"] > 0
    assert fatal_errors(r) == [], r
    assert r["levels"] == 1
    assert r["duration"] == pytest.approx(12.0, abs=0.5)
    assert (r["videoWidth"], r["videoHeight"]) == (320, 180)
    assert r["audioDecodedBytes"] > 0, "the AAC track was not decoded"


def test_native_hls_plays_cross_origin(hls_origin):
    """Chromium's own HLS player (no MSE library): a second, independent client for the same stream."""
    r = play_in_browser(f"{hls_origin}/index.m3u8", kind="native")
    if not r["support"]["nativeHls"]:
        missing(f"Chromium {r.get('browserVersion')} has no native HLS")
    assert r["ok"], r
    assert r["totalVideoFrames"] > 0 and fatal_errors(r) == [], r


def test_missing_manifest_fails(hls_origin):
    r = play_in_browser(f"{hls_origin}/no-such.m3u8", seconds=3.0, timeout=20.0)
    assert r["ok"] is False
    assert r["currentTime"] == 0
    fatal = fatal_errors(r)
    assert fatal and fatal[0]["details"] == "manifestLoadError" and fatal[0]["code"] == 404, r


def test_missing_cors_fails(ffmpeg_hls):
    """Without Access-Control-Allow-Origin the player must fail: proves the requests really are cross-origin."""
    with serve_directory(ffmpeg_hls, cors=False) as base:
        r = play_in_browser(f"{base}/index.m3u8", seconds=3.0, timeout=20.0)
    assert r["ok"] is False
    assert any(e["details"] == "manifestLoadError" for e in fatal_errors(r)), r


@pytest.fixture(scope="module")
def dash_origin(tmp_path_factory) -> str:
    """ffmpeg's own DASH muxer output (SegmentTemplate + SegmentTimeline) on a CORS origin."""
    out = ffmpeg_package(tmp_path_factory, "ffmpeg_dash", "-map", "0", "-f", "dash", "-seg_duration", "2",
                         "-use_timeline", "1", "-use_template", "1", "manifest.mpd")
    with serve_directory(out, cors=True) as base:
        yield base


@pytest.mark.parametrize("kind", ["dash", "shaka"])
def test_dash_players_play_cross_origin(dash_origin, kind):
    r = play_in_browser(f"{dash_origin}/manifest.mpd", kind=kind, seconds=3.0, timeout=40.0)
    assert r["ok"], r
    assert r["totalVideoFrames"] > 0 and fatal_errors(r) == [], r
    assert r["audioDecodedBytes"] > 0, r


@pytest.mark.parametrize("kind", ["dash", "shaka", "mss"])
def test_dash_players_fail_on_missing_manifest(dash_origin, kind):
    r = play_in_browser(f"{dash_origin}/nope.mpd", kind=kind, seconds=2.0, timeout=25.0)
    assert r["ok"] is False and fatal_errors(r), r
