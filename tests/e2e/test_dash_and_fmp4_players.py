"""DASH and HLS-fMP4 from a real `gateway serve`: dash.js, shaka-player and hls.js in Chromium; ffmpeg (ffprobe's
DASH demuxer, PyAV's HLS demuxer) decoding every frame."""
from __future__ import annotations

import json
import shutil
import subprocess

import av
import m3u8
import pytest

from fixtures.generate import fixture_path

from .browser_player import fatal_errors, in_ci, plays_at_once, require_browser

URLSET = "title_,360p,240p,180p,.mp4.urlset"


def source_frames(name: str) -> dict[str, int]:
    with av.open(str(fixture_path(name))) as c:
        counts: dict[str, int] = {}
        for p in c.demux():
            if p.size:
                counts[f"{p.stream.type}{p.stream.index}"] = counts.get(f"{p.stream.type}{p.stream.index}", 0) + 1
        return counts


PATHS = [URLSET, "two_audio.mp4", "audio_only.mp4"]


@pytest.fixture(scope="module")
def reports(gateway_url, gateway_fmp4_url):
    """Every browser play of this module (3 s of media each), two at a time: {(player, path): Future of its report}."""
    require_browser()
    plays = {(kind, path): dict(manifest_url=f"{gateway_url}/dash/{path}/manifest.mpd", kind=kind, seconds=3.0,
                                timeout=60) for kind in ("dash", "shaka") for path in PATHS}
    plays.update({("hls", path): dict(manifest_url=f"{gateway_fmp4_url}/hls/{path}/master.m3u8", seconds=3.0,
                                      timeout=60) for path in PATHS})
    return plays_at_once(plays)


@pytest.mark.browser
@pytest.mark.parametrize("kind", ["dash", "shaka"])
@pytest.mark.parametrize("path", PATHS)
def test_dash_plays_in_dash_js_and_shaka(reports, kind, path):
    report = reports[(kind, path)].result()
    assert report["ok"], report
    assert not fatal_errors(report), report["errors"]
    assert report["currentTime"] >= 3.0
    if path != "audio_only.mp4":
        assert report["totalVideoFrames"] >= 48, report
    assert report.get("audioDecodedBytes", 1) > 0, report
    if path == URLSET:
        assert report["levels"] == 3, report["levelInfo"]


@pytest.mark.browser
@pytest.mark.parametrize("path", PATHS)
def test_hls_fmp4_plays_in_hls_js(reports, path):
    report = reports[("hls", path)].result()
    assert report["ok"], report
    assert not fatal_errors(report), report["errors"]
    if path != "audio_only.mp4":
        assert report["totalVideoFrames"] >= 48, report


@pytest.mark.parametrize("name", ["title_180p.mp4", "two_audio.mp4", "hevc.mp4", "audio_only.mp4"])
def test_dash_decodes_every_frame_with_ffprobe(gateway_url, name):
    """ffmpeg's DASH demuxer (system ffprobe: PyAV's bundled ffmpeg has none) counts every frame of every
    representation. One representation per run: the demuxer ends all streams when the shortest ends."""
    if shutil.which("ffprobe") is None:
        (pytest.fail if in_ci() else pytest.skip)("needs the ffprobe CLI (installed by scripts/install-test-deps.sh)")
    url = f"{gateway_url}/dash/{name}/manifest.mpd"
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", url],
                                      capture_output=True, check=True, timeout=120).stdout)
    counts = []
    for stream in probe["streams"]:
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", str(stream["index"]), "-count_frames",
             "-show_entries", "stream=nb_read_frames", "-of", "json", url],
            capture_output=True, timeout=180, text=True)
        assert out.returncode == 0 and not out.stderr.strip(), out.stderr
        counts.append((stream["codec_type"], int(json.loads(out.stdout)["streams"][0]["nb_read_frames"])))
    source = source_frames(name)
    assert sorted(n for k, n in counts if k == "video") == sorted(n for k, n in source.items() if k.startswith("video"))
    # AAC: ffmpeg drops the priming frame declared by presentationTimeOffset/edit, or keeps it: allow one
    audio_src = sorted(n for k, n in source.items() if k.startswith("audio"))
    audio_out = sorted(n for k, n in counts if k == "audio")
    assert len(audio_out) == len(audio_src) and all(abs(a - b) <= 1 for a, b in zip(audio_out, audio_src)), counts


@pytest.mark.parametrize("name", ["title_180p.mp4", "hevc.mp4", "two_audio.mp4"])
def test_hls_fmp4_plays_through_pyav(gateway_fmp4_url, name):
    with av.open(f"{gateway_fmp4_url}/hls/{name}/master.m3u8", timeout=60) as c:
        streams = [s for s in c.streams if s.type in ("video", "audio")]
        frames = {"video": 0, "audio": 0}
        for frame in c.decode(*streams):
            frames["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
    source = source_frames(name)
    video = sum(n for k, n in source.items() if k.startswith("video"))
    assert frames["video"] == video and frames["audio"] > 0, (frames, source)


def test_hevc_defaults_to_fmp4_hls(gateway_url):
    """--hls-container auto (the default): HEVC is offered as fMP4 (EXT-X-MAP), H.264 as MPEG-TS."""
    from .http import get, media_playlists

    hevc = m3u8.loads(get(media_playlists(f"{gateway_url}/hls/hevc.mp4/master.m3u8")[0]).decode())
    avc = m3u8.loads(get(media_playlists(f"{gateway_url}/hls/title_180p.mp4/master.m3u8")[0]).decode())
    assert [m.uri.rpartition(".")[2] for m in hevc.segment_map] == ["mp4"]
    assert hevc.segments and {s.uri.rpartition(".")[2] for s in hevc.segments} == {"m4s"}
    assert not avc.segment_map
    assert avc.segments and {s.uri.rpartition(".")[2] for s in avc.segments} == {"ts"}
