"""What players see: ffmpeg (PyAV) and hls.js in Chromium play the gateway's HLS; every segment decodes."""
from __future__ import annotations

import io

from urllib.parse import urljoin

import av
import m3u8
import pytest

from fixtures.generate import fixture_path

from .http import get, media_playlists
from .browser_player import fatal_errors, play_in_browser, require_browser

URLSET = "/hls/title_,360p,240p,180p,.mp4.urlset/master.m3u8"
MASTERS = {
    "title_360p.mp4": "/hls/title_360p.mp4/master.m3u8",
    "two_audio.mp4": "/hls/two_audio.mp4/master.m3u8",
    "audio_only.mp4": "/hls/audio_only.mp4/master.m3u8",
    "hevc.mp4": "/hls/hevc.mp4/master.m3u8",
    "moov_end.mp4": "/hls/moov_end.mp4/master.m3u8",
    "no_bframes.mp4": "/hls/no_bframes.mp4/master.m3u8",
}




def source_frame_counts(name: str) -> dict[str, int]:
    with av.open(str(fixture_path(name))) as c:
        counts = {"video": 0, "audio": 0}
        for packet in c.demux():
            if packet.size:
                counts[packet.stream.type] += 1
        return counts




@pytest.mark.parametrize("name", sorted(MASTERS))
def test_every_segment_decodes_with_pyav(gateway_url, name):
    """Each segment on its own (a player may start anywhere) decodes without error; frames add up to the source."""
    decoded = {"video": 0, "audio": 0}
    for playlist_url in media_playlists(gateway_url + MASTERS[name]):
        playlist = m3u8.loads(get(playlist_url).decode())
        init = get(urljoin(playlist_url, playlist.segment_map[0].uri)) if playlist.segment_map else None
        for segment in playlist.segments:
            data = get(urljoin(playlist_url, segment.uri))
            # fMP4 (EXT-X-MAP) segments decode after their init segment, MPEG-TS ones alone
            source_io = io.BytesIO(init + data) if init else io.BytesIO(data)
            with av.open(source_io, format="mp4" if init else "mpegts") as c:
                c.streams.video and setattr(c.streams.video[0].codec_context, "skip_frame", "DEFAULT")
                for frame in c.decode(*c.streams):
                    decoded["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
    source = source_frame_counts(name)
    assert decoded["video"] == source["video"]
    # every audio track is carried by exactly one playlist (muxed variant or EXT-X-MEDIA rendition)
    assert decoded["audio"] == source["audio"]


@pytest.mark.parametrize("path", [URLSET, MASTERS["two_audio.mp4"], MASTERS["audio_only.mp4"], MASTERS["hevc.mp4"]])
def test_whole_stream_plays_through_av_open_master(gateway_url, path):
    """ffmpeg's HLS demuxer follows the master to every variant and plays to the end."""
    with av.open(gateway_url + path, options={"http_persistent": "0"}, timeout=60) as c:
        streams = [s for s in c.streams if s.type in ("video", "audio")]
        assert streams
        seconds = {}
        frames = 0
        for frame in c.decode(*streams):
            frames += 1
            key = frame.__class__.__name__
            if frame.time is not None:
                seconds[key] = max(seconds.get(key, 0.0), frame.time)
    assert frames > 0
    assert max(seconds.values()) >= 7.5, seconds  # every fixture is 8 s or longer


@pytest.mark.browser
@pytest.mark.parametrize("path", [URLSET, MASTERS["two_audio.mp4"], MASTERS["audio_only.mp4"]])
def test_hls_js_plays_in_chromium(gateway_url, path):
    require_browser()
    report = play_in_browser(gateway_url + path, seconds=3.0, timeout=60)
    assert report["ok"], report
    assert report["currentTime"] >= 3.0
    assert not fatal_errors(report), report["errors"]
    if "audio_only" not in path:
        assert report["totalVideoFrames"] >= 60, report
    assert report.get("audioDecodedBytes", 1) > 0, report


@pytest.mark.browser
def test_hls_js_reports_failure_for_a_missing_entry(gateway_url):
    """Negative control: the same harness fails when the gateway answers 404."""
    require_browser()
    report = play_in_browser(gateway_url + "/hls/nope.mp4/master.m3u8", seconds=1.0, timeout=20)
    assert not report["ok"]
