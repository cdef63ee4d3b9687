"""Low-latency HLS end to end: the ffmpeg CLI publishes title_360p re-encoded with a 1-s GOP (as a live encoder
does) to the gateway's RTMP ingest, with the default application settings (low latency on, 0.5-s parts); hls.js in
low-latency mode plays it in headless Chromium and its own latency estimate (``hls.latency``) is sampled for a
minute; plain hls.js and ffmpeg's HLS demuxer (PyAV) play the same playlist; blocking playlist reloads are answered
as soon as the part they wait for is written."""
from __future__ import annotations

import os
import time
import urllib.request

import av
import m3u8
import numpy as np
import pytest

from rtmp.config import RtmpConfig
from tests.needs import needs_executable

from .browser_player import fatal_errors, play_in_browser, require_browser
from .test_live_players import LiveGateway, get, playback_progress, publishing

pytestmark = needs_executable("ffmpeg")

PART_S = 0.5


@pytest.fixture(scope="module")
def ll_live(tmp_path_factory):
    """The gateway (default settings: low latency) with ffmpeg publishing rtmp://.../live/ll, 1-s GOP; yields
    (gateway, stream URL, store) once 2 segments exist."""
    store = tmp_path_factory.mktemp("ll-store")
    config = RtmpConfig(live_segment_duration_ms=2000, live_window=6, live_part_duration_ms=int(PART_S * 1000))
    encode = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "24", "-keyint_min", "24",
              "-sc_threshold", "0", "-c:a", "copy"]
    with LiveGateway(store, config) as gw, publishing(gw, "ll", encode, segments=2) as url:
        yield gw, url, store / "live" / "live" / "ll"


def test_the_playlist_is_low_latency_hls(ll_live):
    _, url, _ = ll_live
    status, headers, body = get(f"{url}/index.m3u8")
    p = m3u8.loads(body.decode())
    assert p.server_control.can_block_reload == "YES" and p.part_inf.part_target == pytest.approx(PART_S)
    assert p.preload_hint is not None and p.segment_map
    assert all(s.duration <= p.target_duration for s in p.segments if s.uri)
    for s in p.segments:
        assert all(part.duration <= PART_S for part in s.parts)
    # a 1-s GOP at 24 fps: every part is 12 frames (0.5 s), so every key frame starts one (a player joins a second
    # ahead at most; the old 11-frame parts met a key frame only at each segment's start)
    for s in [s for s in p.segments if s.uri]:
        assert [part.duration for part in s.parts] == [PART_S] * 4
        assert [part.independent == "YES" for part in s.parts] == [True, False, True, False]
    assert get(f"{url}/{p.segment_map[-1].uri}")[1]["Content-Type"] == "video/mp4"


@pytest.mark.slow
@pytest.mark.browser
def test_hls_js_low_latency_mode_stays_within_2_5_s(ll_live):
    """A minute of hls.js in low-latency mode (its default with an LL playlist): p95 of hls.latency < 2.5 s."""
    require_browser()
    _, url, _ = ll_live
    report = play_in_browser(f"{url}/master.m3u8", seconds=1e9, timeout=75, config={"lowLatencyMode": True})
    assert not fatal_errors(report), report["errors"]
    latency = np.array(report["latency"])
    progress = playback_progress(report)
    assert len(latency) >= 100 and progress >= 50, report   # samples every 0.5 s over ~60 s of playback
    p50, p95 = np.percentile(latency, 50), np.percentile(latency, 95)
    print(f"\nhls.js low-latency mode: latency p50 {p50:.2f} s, p95 {p95:.2f} s, max {latency.max():.2f} s "
          f"over {progress:.0f} s played, {report['totalVideoFrames']} frames")
    # (a failure says why: a stall shows in errors, a slow join in the events' times)
    assert p95 < 2.5, {"errors": report["errors"], "events": report["events"][:12], "first": latency[:6].tolist()}


@pytest.mark.browser
def test_plain_hls_js_plays_the_same_playlist(ll_live):
    require_browser()
    _, url, _ = ll_live
    report = play_in_browser(f"{url}/master.m3u8", seconds=1e9, timeout=16, config={"lowLatencyMode": False})
    assert not fatal_errors(report), report["errors"]
    assert playback_progress(report) >= 4.0, report
    assert (report["videoWidth"], report["videoHeight"]) == (640, 360) and report["audioDecodedBytes"] > 0


def test_ffmpeg_reads_the_low_latency_playlist(ll_live):
    """ffmpeg's HLS demuxer ignores the LL tags and reads the fMP4 segments: video and audio decode, in order."""
    _, url, _ = ll_live
    pts, audio = [], 0
    with av.open(f"{url}/index.m3u8", timeout=10) as container:
        video = container.streams.video[0]
        for packet in container.demux(video, container.streams.audio[0]):
            if packet.stream.type == "audio":
                audio += len(packet.decode())
            else:
                pts += [f.pts for f in packet.decode()]
            if len(pts) >= 100:
                break
    assert len(pts) >= 100 and audio >= 50
    assert np.diff(pts).min() > 0           # pictures come out in presentation order, none twice, across segments


def test_blocking_reload_answers_when_the_part_is_written(ll_live):
    """_HLS_msn/_HLS_part for the next part: the answer lists it and comes within one part duration of the part
    file being renamed into place (its mtime; same machine clock). Measured over several parts."""
    _, url, directory = ll_live
    lags = []
    for _ in range(6):
        p = m3u8.loads(get(f"{url}/index.m3u8")[2].decode())
        hint = p.preload_hint.uri                            # <tid>-<msn>.<part>.m4s
        msn, part = (int(x) for x in hint.split("-")[1].split(".")[:2])
        with urllib.request.urlopen(f"{url}/index.m3u8?_HLS_msn={msn}&_HLS_part={part}", timeout=10) as r:
            body = r.read().decode()
            answered = time.time()
        assert f'URI="{hint}"' in body and "#EXT-X-PART:" in body.split(f'URI="{hint}"')[0].rsplit("\n", 1)[-1]
        lags.append(answered - os.stat(directory / hint).st_mtime)
    print(f"\nblocking reload answered {np.median(lags) * 1000:.0f} ms (median), {max(lags) * 1000:.0f} ms (max) "
          f"after the part was written")
    assert np.median(lags) < PART_S


@pytest.mark.slow
@pytest.mark.browser
def test_dash_js_plays_low_latency_dash_chunk_by_chunk(ll_live):
    """dash.js on the same stream's MPD: it switches to its low-latency mode (the MPD's availabilityTimeOffset and
    availabilityTimeComplete="false"), fetches the segment in progress chunked, and its latency stays low."""
    require_browser()
    _, url, _ = ll_live
    report = play_in_browser(f"{url}/manifest.mpd", kind="dash", seconds=1e9, timeout=45)
    assert not fatal_errors(report), report["errors"]
    latency = np.array(report["latency"])
    progress = playback_progress(report)
    assert len(latency) >= 50 and progress >= 30, report
    p50, p95 = np.percentile(latency, 50), np.percentile(latency, 95)
    print(f"\ndash.js low-latency mode: latency p50 {p50:.2f} s, p95 {p95:.2f} s, max {latency.max():.2f} s "
          f"over {progress:.0f} s played, {report['totalVideoFrames']} frames")
    assert p95 < 3.0     # (plain live DASH of the same stream: 4.6 s)
