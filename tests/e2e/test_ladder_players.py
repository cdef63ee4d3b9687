"""The transcoded ladder as players see it: the ffmpeg CLI publishes title_360p (640x360, 24 fps, 2-s GOP, B-frames,
repeated in one file) with ``-c copy`` to the gateway's RTMP ingest, whose application transcodes every publish to
``240p@300k`` and ``180p@200k``; the live output is low-latency HLS (fMP4 parts, the default).

- ffprobe (the CLI) reads each rendition's live segments over HTTP (init + media segments): its size is exactly the
  rendition's and its video bitrate (video packet bytes of >= 6 s of consecutive segments / their EXTINF sum) is
  within +-15 % of the configured rate.
- Every segment the source and both renditions list under the same media sequence number has the same EXTINF and
  starts with a key frame at the same pts, its key frames are at the same pts in every variant, and each rendition
  picture is the source's picture of the same pts (PyAV decodes them; the closest of the segment's pictures).
- In every variant each track's parts, taken as they are listed for 6 s, follow one another with no gap or overlap,
  and every variant carries the same audio samples at the same times (it is passed through to the renditions).
- The master playlist lists every variant with its RESOLUTION, CODECS matching its SPS, and BANDWIDTH.
- hls.js plays the source's master.m3u8 in headless Chromium and is made to switch levels (hls.nextLevel) to each
  level in turn: every level is switched to and shown at its height, playback keeps going, no stall, no fatal error.
- dash.js finds all three in the source's MPD (one video AdaptationSet) and plays it.
"""
from __future__ import annotations

import json
import re
import subprocess
import time

import av
import m3u8
import numpy as np
import pytest

from rtmp.config import ApplicationConfig, RtmpConfig
from tests.needs import needs_executable

from ..packagers.fmp4_tools import read_fragment
from .browser_player import fatal_errors, play_in_browser, require_browser, run_player, serve_player
from .test_live_players import LiveGateway, get, looped_source, playback_progress, publishing

pytestmark = [needs_executable("ffmpeg"), needs_executable("ffprobe")]

LADDER = {"240p": ((426, 240), 300_000), "180p": ((320, 180), 200_000)}
MEASURED_S = 6.0        # at least this much media per bitrate measurement
TOLERANCE = 0.15
PROFILES = {66: "Constrained Baseline", 77: "Main", 100: "High"}    # profile_idc → ffprobe's name (what x264 makes)


@pytest.fixture(scope="module")
def ladder_live(tmp_path_factory):
    """The gateway transcoding live/<stream> to 240p and 180p, ffmpeg publishing; yields (gateway, {variant: URL})
    once every variant lists 5 complete segments. The publish is of title_360p looped 20 times in one file (4 min,
    longer than this module runs): see looped_source for the late parts a loop of the CLI's input makes."""
    store = tmp_path_factory.mktemp("ladder-store")
    source = looped_source(tmp_path_factory.mktemp("ladder-source"), 20)
    config = RtmpConfig(applications={"live": ApplicationConfig(transcode=tuple(f"{n}@{r // 1000}k" for n, (_, r)
                                                                                in LADDER.items()))},
                        live_segment_duration_ms=2000, live_window=8, live_part_duration_ms=500)
    with LiveGateway(store, config) as gw, \
            publishing(gw, "lad", ["-c", "copy"], segments=2, source=source) as url:
        urls = {"source": url, **{name: f"{gw.base}/live/live/lad_{name}" for name in LADDER}}
        deadline = time.monotonic() + 60    # hang guard only
        while not all(len(complete(u)) >= 5 for u in urls.values()):
            assert time.monotonic() < deadline, "the renditions never listed 5 complete segments"
            time.sleep(0.5)
        yield gw, urls


def playlist(url: str) -> m3u8.M3U8:
    return m3u8.loads(get(f"{url}/index.m3u8")[2].decode())


def complete(url: str) -> dict[int, tuple[float, str, str]]:
    """{media sequence number: (EXTINF, segment URI, init segment URI)} of the complete segments a playlist lists
    (LL-HLS: the segment in progress has parts, no URI yet); {} while there is no playlist."""
    try:
        p = playlist(url)
    except OSError:
        return {}
    init = p.segment_map[-1].uri
    return {p.media_sequence + i: (s.duration, s.uri, init) for i, s in enumerate(p.segments) if s.uri}


def fetch(url: str, segments: list[tuple[float, str, str]], tmp_path, name: str):
    """A file of the init segment followed by ``segments``, fetched over HTTP."""
    path = tmp_path / f"{name}.mp4"
    path.write_bytes(get(f"{url}/{segments[0][2]}")[2] + b"".join(get(f"{url}/{uri}")[2] for _, uri, _ in segments))
    return path


def ffprobe(url: str, segments: list[tuple[float, str, str]], tmp_path, name: str) -> dict:
    """ffprobe's video stream and packets of the init segment followed by ``segments``."""
    path = fetch(url, segments, tmp_path, name)
    entries = "stream=codec_name,profile,level,width,height:packet=pts_time,size,flags"
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", entries, "-of", "json",
                          str(path)], capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)


def pictures(path) -> tuple[np.ndarray, np.ndarray]:
    """(pts in ms, pictures as 160x90 grey levels) of the video decoded from a fetched file."""
    with av.open(str(path)) as c:
        frames = [(round(f.time * 1000), f.reformat(width=160, height=90, format="gray").to_ndarray())
                  for f in c.decode(video=0)]
    return np.array([t for t, _ in frames]), np.stack([p for _, p in frames]).astype(np.float32)


def key_pts(probe: dict) -> list[int]:
    """Key-frame pts in ms."""
    return [round(float(p["pts_time"]) * 1000) for p in probe["packets"] if "K" in p["flags"]]


def test_each_rendition_has_its_size_and_bitrate(ladder_live, tmp_path):
    """ffprobe over >= 6 s of consecutive live segments: exact size, video bitrate within +-15 % of the rate."""
    _, urls = ladder_live
    for name, ((width, height), rate) in LADDER.items():
        listed = complete(urls[name])
        # every complete segment listed but the first (the rendition's rate control is still settling there)
        chosen = [listed[msn] for msn in sorted(listed)[1:]]
        assert sum(d for d, _, _ in chosen) >= MEASURED_S, listed
        probe = ffprobe(urls[name], chosen, tmp_path, name)
        stream = probe["streams"][0]
        assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", width, height)
        seconds = sum(d for d, _, _ in chosen)
        measured = sum(int(p["size"]) for p in probe["packets"]) * 8 / seconds
        print(f"\n{name}: {width}x{height}, {measured / 1000:.0f} kbit/s of video over {seconds:.1f} s "
              f"({len(chosen)} segments), configured {rate // 1000}k")
        assert abs(measured - rate) <= TOLERANCE * rate, (name, measured)


def test_key_frames_and_segments_line_up_across_variants(ladder_live, tmp_path):
    """Same EXTINF per media sequence number, the same key-frame pts (each segment starting with one), and at each
    pts the same picture: every rendition picture looks most like the source picture of the same pts (of all the
    segment's source pictures; a live packager starts each stream's timeline at its own first key frame, so equal
    pts alone would not show a rendition that started a GOP late or slipped a frame)."""
    _, urls = ladder_live
    listed = {name: complete(url) for name, url in urls.items()}
    common = sorted(set.intersection(*(set(v) for v in listed.values())))
    assert len(common) >= 3, listed
    for msn in common:
        durations = {name: v[msn][0] for name, v in listed.items()}
        assert len(set(durations.values())) == 1, (msn, durations)
        keys, seen = {}, {}
        for name, url in urls.items():
            probe = ffprobe(url, [listed[name][msn]], tmp_path, f"{name}-{msn}")
            assert "K" in probe["packets"][0]["flags"], (name, msn)        # a segment starts on a key frame
            keys[name] = key_pts(probe)
            seen[name] = pictures(tmp_path / f"{name}-{msn}.mp4")
        print(f"segment {msn}: key frames at {keys['source']} ms, EXTINF {durations['source']}")
        assert keys["source"] and all(k == keys["source"] for k in keys.values()), (msn, keys)
        source_pts, source = seen["source"]
        for name in LADDER:
            pts, renditions = seen[name]
            # mean absolute difference of every rendition picture (rows) to every source picture (both 160x90 grey)
            distance = np.stack([np.abs(source - picture).mean(axis=(1, 2)) for picture in renditions])
            matched = source_pts[distance.argmin(axis=1)]
            assert len(pts) >= len(source_pts) - 1 and np.array_equal(matched, pts), (name, msn, pts, matched)


def listed_parts(url: str) -> dict[tuple[int, int], str]:
    """{(media sequence number, part index): part URI} of the parts a playlist lists now."""
    p = playlist(url)
    return {(p.media_sequence + i, j): part.uri for i, s in enumerate(p.segments) for j, part in enumerate(s.parts)}


def test_parts_tile_every_track_and_every_variant_has_the_same_audio(ladder_live):
    """A player appending a variant's parts in order never meets a hole: each part of each track starts where the
    one before it ended (tfdt against tfdt + the durations of the part before; no part skipped in between: the
    numbering is checked to be gapless too). The audio is passed through to the renditions, so over the span every
    variant has, each must hold the source's audio samples at the same times, none lost or moved."""
    _, urls = ladder_live
    parts: dict[str, dict[tuple[int, int], list]] = {name: {} for name in urls}
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        for name, url in urls.items():
            for key, uri in listed_parts(url).items():
                if key not in parts[name]:
                    parts[name][key] = read_fragment(get(f"{url}/{uri}")[2])
        time.sleep(0.2)
    audio = {}
    for name, got in parts.items():
        keys = sorted(got)
        assert len(keys) >= 12, (name, keys)    # 6 s of 0.5-s parts, over at least two segment boundaries
        for before, after in zip(keys, keys[1:]):
            assert after in ((before[0], before[1] + 1), (before[0] + 1, 0)), (name, "a part was missed", before)
            ends = {t.track_id: int(t.decode[-1] + t.durations[-1]) for t in got[before]}
            starts = {t.track_id: int(t.decode[0]) for t in got[after]}
            assert starts == ends, (name, before, after, ends, starts)
        samples = [t for key in keys for t in got[key] if t.track_id != 1]
        audio[name] = (np.concatenate([t.decode for t in samples]),
                       [t.payload[o:o + n] for t in samples for o, n in zip(np.cumsum(t.sizes) - t.sizes, t.sizes)])
    start = max(times[0] for times, _ in audio.values())
    end = min(times[-1] for times, _ in audio.values())
    span = {name: [(int(t), payload) for t, payload in zip(times, payloads) if start <= t <= end]
            for name, (times, payloads) in audio.items()}
    assert len(span["source"]) >= 100, span["source"][:3]     # AAC at 44.1/48 kHz: > 2 s of frames
    for name in LADDER:
        assert span[name] == span["source"], name


def test_the_master_playlist_lists_every_rendition(ladder_live, tmp_path):
    """RESOLUTION exact, CODECS naming the profile and level of the rendition's own SPS (as ffprobe reads it) and
    AAC, BANDWIDTH above the rendition's video rate."""
    _, urls = ladder_live
    variants = {p.uri: p.stream_info for p in m3u8.loads(get(f"{urls['source']}/master.m3u8")[2].decode()).playlists}
    assert {uri: info.resolution for uri, info in variants.items()} == {
        "index.m3u8": (640, 360), **{f"../lad_{n}/index.m3u8": size for n, (size, _) in LADDER.items()}}
    for uri, info in variants.items():
        assert re.fullmatch(r"avc1\.[0-9a-f]{6},mp4a\.40\.2", info.codecs), (uri, info.codecs)
    for name, url in urls.items():
        uri = "index.m3u8" if name == "source" else f"../lad_{name}/index.m3u8"
        stream = ffprobe(url, [next(iter(complete(url).values()))], tmp_path, name)["streams"][0]
        profile_idc, level_idc = int(variants[uri].codecs[5:7], 16), int(variants[uri].codecs[9:11], 16)
        assert (PROFILES[profile_idc], level_idc) == (stream["profile"], stream["level"]), (name, variants[uri].codecs)
    for name, (_, rate) in LADDER.items():     # BANDWIDTH: the peak, video and audio: above the video's rate
        assert variants[f"../lad_{name}/index.m3u8"].bandwidth > rate


@pytest.mark.slow
@pytest.mark.browser
def test_hls_js_switches_between_every_level_without_a_stall(ladder_live):
    """hls.js plays the lowest level, then is made to switch up twice and down again (nextLevel every 4 s): each
    level is switched to and shown at its size, playback advances all along, no stall, no error."""
    require_browser()
    _, urls = ladder_live
    heights = sorted([360] + [size[1] for size, _ in LADDER.values()])      # hls.js orders levels by bitrate
    order = [0, 1, 2, 0]
    with serve_player() as player:
        report = run_player(f"{player}?switch={','.join(map(str, order))}&switchEvery=4",
                            f"{urls['source']}/master.m3u8", kind="hls", seconds=1e9, timeout=30)
    events = [e["what"] for e in report["events"]]
    print("\n" + "\n".join(events) + "\nappended:\n" + "\n".join(report["appended"]))
    assert not fatal_errors(report), report["errors"]
    assert [info["height"] for info in report["levelInfo"]] == heights, report["levelInfo"]
    assert not [e for e in report["errors"] if "stall" in e.get("details", "").lower()], report["errors"]
    playing = events.index(next(e for e in events if e.startswith("playing")))
    assert not [e for e in events[playing:] if e.startswith(("waiting", "stalled"))], events
    # hls.js's own switches between our requests: each window must end on the level asked for. A fragment of the
    # old level that was in flight when nextLevel flushed the buffer may still be appended and play for a moment
    # (seen once: 0, 1, 0, 1 after the request for 1; no resize: the viewer never saw it), so not every step is
    # asserted, only where each request lands; what the viewer saw is asserted exactly below
    windows: list[list[int]] = [[]]
    for e in events:
        if e.startswith("switch request "):
            windows.append([])
        elif m := re.fullmatch(r"level switched to (\d+)", e):
            windows[-1].append(int(m[1]))
    assert [w[-1] if w else None for w in windows] == order, windows
    shown = [int(m[1]) for e in events if (m := re.fullmatch(r"resize \d+x(\d+) @.*", e))]
    assert shown == [heights[level] for level in order], shown
    assert playback_progress(report) >= 12.0, report


@pytest.mark.browser
def test_dash_js_sees_every_rendition_in_the_source_mpd(ladder_live):
    """The source's MPD lists the renditions as Representations of its video AdaptationSet: dash.js offers all
    three (at their sizes) and plays, low latency, without a fatal error."""
    require_browser()
    gw, urls = ladder_live
    report = play_in_browser(f"{urls['source']}/manifest.mpd", kind="dash", seconds=1e9, timeout=14)
    assert not fatal_errors(report), report["errors"]
    assert report["levels"] == 3, report
    assert sorted((lvl["width"], lvl["height"]) for lvl in report["levelInfo"]) == [
        (320, 180), (426, 240), (640, 360)]
    assert playback_progress(report) >= 3.0, report
