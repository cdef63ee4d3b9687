"""clipFrom/clipTo in every protocol, against the source decoded by ffmpeg (PyAV).

Each protocol's segments of a clip are read back with the independent readers of test_cross_protocol (ffmpeg's TS
demuxer, pymp4 for fMP4, FLV tags read by hand for HDS) as (payload, presentation time); the video payloads are then
decoded by ffmpeg's H.264 decoder. Ground truth is the source file decoded by ffmpeg: the picture the clip shows at
its time 0 must be the source's picture at clipFrom (frame MD5), every source picture up to clipTo must follow in
order, and each manifest's duration must be clipTo - clipFrom within one frame. The clipped MP4 download is checked
the same way through ffmpeg's own MP4 demuxer (which applies our edit list) and ffprobe.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import xml.etree.ElementTree as ET

import av
import m3u8
import pytest

from fixtures.generate import fixture_path
from packagers.ts import TS_PTS_OFFSET
from tests.needs import needs_executable

from .http import get
from ..packagers.fmp4_tools import read_fragment
from .test_cross_protocol import dash_segments, hds_segments, hls_fmp4_segments, mss_segments, ts_segments

NAME = "title_180p.mp4"  # 24 fps, a key frame every 2 s, B-frames
CLIP_FROM, CLIP_TO = 3521, 9000  # mid-frame, mid-GOP; 2 segments of --segment-duration 4
FRAME = 1 / 24
CLIP = f"clipFrom/{CLIP_FROM}/clipTo/{CLIP_TO}/{NAME}"


def digest(frame: av.VideoFrame) -> str:
    return hashlib.md5(frame.to_ndarray(format="yuv420p").tobytes()).hexdigest()


@pytest.fixture(scope="module")
def source() -> list[tuple[float, str]]:
    """(presentation seconds, MD5) of every picture of the source, in presentation order."""
    with av.open(str(fixture_path(NAME))) as container:
        return [(float(f.time), digest(f)) for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def extradata() -> bytes:
    with av.open(str(fixture_path(NAME))) as container:
        return bytes(container.streams.video[0].codec_context.extradata)


def expected(source: list[tuple[float, str]]) -> list[str]:
    """The pictures a clip shows: the one on screen at clipFrom, then every one presented before clipTo."""
    start = max(t for t, _ in source if t <= CLIP_FROM / 1000 + 1e-9)
    return [d for t, d in source if start - 1e-9 <= t < CLIP_TO / 1000 - 1e-9]


def decode(samples: list[tuple[tuple[bytes, ...], float]], extradata: bytes) -> list[tuple[float, str]]:
    """(presentation seconds, MD5) of the pictures ffmpeg decodes from NAL units given in decode order."""
    codec = av.CodecContext.create("h264", "r")
    codec.extradata = extradata
    times = {}
    out = []
    for i, (nals, t) in enumerate(samples):
        packet = av.Packet(b"".join(len(n).to_bytes(4, "big") + n for n in nals))
        packet.pts = packet.dts = i  # ffmpeg reorders by pts: the order of presentation times
        times[i] = t
        out += codec.decode(packet)
    out += codec.decode(None)
    return sorted((times[f.pts], digest(f)) for f in out)


def shown(pictures: list[tuple[float, str]], end: float, offset: float = 0.0) -> list[str]:
    """The pictures presented between the clip's time 0 and its ``end`` (half a frame of rounding allowed), after
    taking ``offset`` away. A reference frame presented after clipTo may be in the stream (a B-frame before clipTo
    needs it); playback ends before it."""
    return [d for t, d in pictures if -FRAME / 2 < t - offset < end - FRAME / 2]


def video_samples(segments: list[dict]) -> list:
    return [sample for segment in segments for sample in segment["video"]]


def test_hls_ts_clip_starts_with_the_picture_at_clip_from(gateway_ts_url, source, extradata):
    playlist = m3u8.loads(get(f"{gateway_ts_url}/hls/{CLIP}/index-v1-a1.m3u8").decode())
    assert playlist.segments[0].uri.startswith("seg-1-")  # numbering restarts inside the clip
    assert abs(sum(s.duration for s in playlist.segments) - clip_seconds(source)) < FRAME
    pictures = decode(video_samples(ts_segments(gateway_ts_url, "h264", CLIP)), extradata)
    assert shown(pictures, clip_seconds(source)) == expected(source)
    assert pictures[0][0] < -FRAME  # the key frame before clipFrom is there to decode from, before time 0


@pytest.mark.parametrize("protocol", ["hls-fmp4", "dash", "mss", "hds"])
def test_every_protocol_shows_the_same_clip(protocol, gateway_url, gateway_fmp4_url, gateway_ts_url, source,
                                            extradata):
    reference = ts_segments(gateway_ts_url, "h264", CLIP)
    count = len(reference)
    assert count == 2
    offset = 0.0
    if protocol == "hls-fmp4":
        segments = hls_fmp4_segments(gateway_fmp4_url, "h264", count, CLIP)
        # the clip's times moved later so that no frame is before 0 (MSE drops those): EXT-X-START says by how much
        start = m3u8.loads(get(f"{gateway_fmp4_url}/hls/{CLIP}/index-v1.m3u8").decode()).start
        assert start.precise == "YES" and start.time_offset > 0
        offset = start.time_offset
    elif protocol == "dash":
        segments = dash_segments(gateway_url, "h264", count, CLIP)  # presentationTimeOffset taken away
    elif protocol == "mss":
        segments = mss_segments(gateway_url, "h264", count, CLIP)
    else:
        segments = hds_segments(gateway_url, "h264", count, CLIP)
        offset = segments[0]["video"][0][1] - reference[0]["video"][0][1]  # FLV times cannot be negative
    pictures = decode(video_samples(segments), extradata)
    assert shown(pictures, clip_seconds(source), offset) == expected(source)
    assert abs(manifest_seconds(protocol, gateway_url) - clip_seconds(source)) < FRAME


def clip_seconds(source: list[tuple[float, str]]) -> float:
    start = max(t for t, _ in source if t <= CLIP_FROM / 1000 + 1e-9)
    return CLIP_TO / 1000 - start


def manifest_seconds(protocol: str, base: str) -> float:
    if protocol == "hls-fmp4":
        return sum(s.duration for s in m3u8.loads(get(f"{base}/hls/{CLIP}/index-v1.m3u8").decode()).segments)
    if protocol == "dash":
        text = ET.fromstring(get(f"{base}/dash/{CLIP}/manifest.mpd")).get("mediaPresentationDuration")
        return float(re.fullmatch(r"PT([0-9.]+)S", text).group(1))
    if protocol == "mss":
        return int(ET.fromstring(get(f"{base}/mss/{CLIP}/manifest")).get("Duration")) / 10_000_000
    return float(re.search(r"<duration>([0-9.]+)</duration>", get(f"{base}/hds/{CLIP}/manifest.f4m").decode())[1])


@needs_executable("ffprobe")
def test_clipped_mp4_plays_from_the_picture_at_clip_from(gateway_url, source):
    data = get(f"{gateway_url}/mp4/{NAME}/clipFrom/{CLIP_FROM}/clipTo/{CLIP_TO}")
    with av.open(io.BytesIO(data)) as container:  # ffmpeg's MP4 demuxer applies the edit list
        pictures = [digest(f) for f in container.decode(video=0)]
    assert pictures == expected(source)
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_type,duration", "-of", "json", "-"],
        input=data, capture_output=True, check=True).stdout)
    assert abs(float(probe["format"]["duration"]) - clip_seconds(source)) < FRAME
    assert sorted(s["codec_type"] for s in probe["streams"]) == ["audio", "video"]
    for stream in probe["streams"]:
        assert abs(float(stream["duration"]) - clip_seconds(source)) < FRAME


def test_clipped_mp4_answers_ranges_from_its_layout(gateway_url):
    url = f"{gateway_url}/mp4/clipTo/5000/{NAME}"  # the parameter may come before the path, as in nginx-vod
    whole = get(url)
    import urllib.request
    request = urllib.request.Request(url, headers={"Range": "bytes=1000-40999"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 1000-40999/{len(whole)}"
        assert response.read() == whole[1000:41000]


def test_clip_from_past_the_end_is_a_clear_400(gateway_url):
    import urllib.error
    for url in (f"{gateway_url}/hls/clipFrom/60000/{NAME}/master.m3u8", f"{gateway_url}/mp4/{NAME}/clipFrom/60000",
                f"{gateway_url}/dash/{NAME}/clipFrom/5000/clipTo/4000/manifest.mpd",
                f"{gateway_url}/hls/{NAME}/clipFrom/ten/master.m3u8"):
        with pytest.raises(urllib.error.HTTPError) as raised:
            get(url)
        assert raised.value.code == 400, url
        assert b"clip" in raised.value.read().lower()


@pytest.mark.browser
def test_clipped_mp4_plays_in_chromium(gateway_url, source):
    from .browser_player import fatal_errors, play_in_browser, require_browser

    require_browser()
    report = play_in_browser(f"{gateway_url}/mp4/{NAME}/clipFrom/{CLIP_FROM}/clipTo/{CLIP_TO}", seconds=3,
                             timeout=40, kind="native")
    assert report["ok"] and not fatal_errors(report), report
    assert abs(report["duration"] - clip_seconds(source)) < FRAME and report["videoWidth"] == 320


def moved_on_a_stall(report: dict) -> bool:
    """hls.js said it moved the playhead itself (a nudge on a stall, a seek over a buffer hole)."""
    return any(e.get("details") in ("bufferNudgeOnStall", "bufferSeekOverHole") for e in report.get("errors", []))


@pytest.mark.browser
@pytest.mark.parametrize("kind, container", [("hls", "ts"), ("shaka", "ts"), ("hls", "fmp4"), ("shaka", "fmp4")])
def test_hls_players_start_on_the_picture_at_clip_from(gateway_ts_url, gateway_fmp4_url, kind, container):
    """MPEG-TS players put a playlist's earliest timestamp (the key frame before clipFrom, decode order) at 0, and a
    clip's fMP4 times are moved later by the same decode-only span (MSE drops frames before 0): EXT-X-START with
    PRECISE=YES must name where presentation time 0 (clipFrom) is, and the players start there."""
    from .browser_player import fatal_errors, play_in_browser, require_browser

    require_browser()
    base = gateway_ts_url if container == "ts" else gateway_fmp4_url
    playlist = m3u8.loads(get(f"{base}/hls/{CLIP}/index-v1{'-a1' if container == 'ts' else ''}.m3u8").decode())
    offset, precise = playlist.start.time_offset, playlist.start.precise
    first = get(f"{base}/hls/{CLIP}/{playlist.segments[0].uri}")
    if container == "ts":
        with av.open(io.BytesIO(first), format="mpegts") as c:
            earliest = min(p.dts for p in c.demux() if p.dts is not None)
        assert offset == pytest.approx((TS_PTS_OFFSET - earliest) / 90000, abs=0.001)
    else:  # the key frame before clipFrom is presented at 0, clipFrom at the offset
        (traf,) = read_fragment(first)
        assert traf.presentation.min() == 0 and offset == pytest.approx(1.5, abs=0.001)  # key frames every 2 s
    assert precise == "YES"
    for _ in range(3):
        report = play_in_browser(f"{base}/hls/{CLIP}/master.m3u8", seconds=offset + 2, timeout=40, kind=kind)
        assert report["ok"] and not fatal_errors(report), report
        events = [e["what"] for e in report["events"]]
        playing = next(i for i, what in enumerate(events) if what.startswith("playing"))
        # where the player put the playhead: its last seek before playback (to EXT-X-START; a gap skip would be a
        # later seek), else where it played from. The picture at clipFrom is on screen from the offset for one frame:
        # a player starting anywhere in it shows it
        seeks = [float(what.split("@")[1]) for what in events[:playing] if what.startswith("seeking @")]
        started = seeks[-1] if seeks else float(events[playing].split("@")[1])
        if offset - 0.005 <= started < offset + FRAME or not moved_on_a_stall(report):
            break
        # hls.js's stall watchdog nudged the playhead at 0 before its start seek ran, then refused that seek
        # ("already seeking") and skipped the hole to the buffer instead: a busy machine (CI saw seeking @0.100 then
        # @1.560), not where EXT-X-START puts the player. Play again; a miss without a nudge fails at once
    assert offset - 0.005 <= started < offset + FRAME, (events, report.get("errors"))
    # and playback began there: 'playing' is noted when the page's busy main thread gets to it, frames later at worst
    assert offset - 0.005 <= float(events[playing].split("@")[1]) < offset + 0.25, events
