"""The live packager (rtmp.live): the segmenter on synthetic messages (key-frame alignment, audio only, timestamp
wrap, codec change, interrupt), the writer on a real stream (TS and fMP4 read back with PyAV and pymp4: the published
samples, with exact, drift-free times), the sliding window on disk, and LivePackager threads across a republish.

Synthetic messages carry real sequence headers (a fixture's avcC and AudioSpecificConfig) and frames with well-formed
NAL length prefixes, at whole-ms times as FLV has them."""
from __future__ import annotations

import functools
import io
import re
import time
import xml.etree.ElementTree as ET

import av
import m3u8
import numpy as np
import pytest

from fixtures.generate import fixture_path
from packagers.mp4 import open_presentation
from rtmp.config import ApplicationConfig, RtmpConfig
from rtmp.flv import FlvDemuxer
from rtmp.live import LIVE_FILE, LivePackager, LiveSegmenter, LiveStreamWriter
from rtmp.messages import MSG_AUDIO, MSG_VIDEO, Message
from tests.packagers.fmp4_tools import read_fragment
from tests.rtmp.test_flv import flv_from_mp4, flv_messages

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
AUDIO_RATE = 44100
AAC_FRAME = bytes.fromhex("2100499002190023") + bytes(40)


@functools.lru_cache(maxsize=None)
def configs(name: str = "title_360p.mp4"):
    """(video, audio) CodecConfig of a fixture."""
    video, audio = (t.codec for t in open_presentation(fixture_path(name)).tracks)
    return video, audio


def video_header(ms: int = 0, name: str = "title_360p.mp4") -> Message:
    return Message(6, ms, MSG_VIDEO, 1, bytes([0x17, 0, 0, 0, 0]) + configs(name)[0].extradata)


def audio_header(ms: int = 0) -> Message:
    return Message(4, ms, MSG_AUDIO, 1, bytes([0xAF, 0]) + configs()[1].extradata)


def video_frame(ms: int, key: bool, cts: int = 0, index: int = 0) -> Message:
    nal = bytes([0x65 if key else 0x41]) + index.to_bytes(4, "big") + bytes(30)
    header = bytes([0x17 if key else 0x27, 1]) + cts.to_bytes(3, "big", signed=True)
    return Message(6, ms & 0xFFFFFFFF, MSG_VIDEO, 1, header + len(nal).to_bytes(4, "big") + nal)


def audio_frame(ms: int, index: int = 0) -> Message:
    return Message(4, ms & 0xFFFFFFFF, MSG_AUDIO, 1, bytes([0xAF, 1]) + AAC_FRAME + index.to_bytes(4, "big"))


def av_stream(start_ms: int, seconds: float, *, fps: float = 25, gop: int = 30, audio: bool = True,
              video: bool = True, headers: bool = True) -> list[Message]:
    """Headers, then video (key frame every ``gop`` frames) and AAC frames interleaved in time order, as ffmpeg
    sends them; times are whole ms like FLV's."""
    out = []
    if headers:
        out += ([video_header(start_ms)] if video else []) + ([audio_header(start_ms)] if audio else [])
    timed = []
    if video:
        n = int(seconds * fps)
        ms = [start_ms + int(i * 1000 // fps) for i in range(n)]    # (fps may be fractional: 30000 / 1001)
        timed += [(ms[i], 1, video_frame(ms[i], i % gop == 0, 0, i)) for i in range(n)]
    if audio:
        n = int(seconds * AUDIO_RATE / 1024)
        timed += [(start_ms + round(i * 1024 * 1000 / AUDIO_RATE), 0,
                   audio_frame(start_ms + round(i * 1024 * 1000 / AUDIO_RATE), i)) for i in range(n)]
    timed.sort(key=lambda t: (t[0], t[1]))
    return out + [m for _, _, m in timed]


def run_segmenter(messages, target_ms=2000, segmenter=None, t0=1_000_000.0):
    seg = segmenter or LiveSegmenter(target_ms, source="live/test")
    cuts = []
    for m in messages:
        cuts += seg.feed(m, time.monotonic(), t0 + m.timestamp / 1000)
    return seg, cuts


# ---------------------------------------------------------------------------------------------------- segmenter
def test_cuts_at_the_first_key_frame_after_the_target():
    # 25 fps, a key frame every 30 frames (1.2 s): with a 2 s target, cuts fall on the key frames at 2.4 s, 4.8 s...
    seg, cuts = run_segmenter(av_stream(0, 10, fps=25, gop=30))
    cuts += seg.finish(time.monotonic())
    video = [c.tracks[0] for c in cuts]
    audio = [c.tracks[1] for c in cuts]
    assert [c.track.kind for c in video] == ["video"] * len(cuts) and len(cuts) == 5
    assert all(v.samples.keyframe[0] for v in video)
    assert [int(v.samples.dts[0]) for v in video] == [i * 216_000 for i in range(5)]
    assert [v.duration for v in video[:-1]] == [216_000] * 4                # 2.4 s on the 90 kHz clock, exactly
    assert sum(len(v.samples) for v in video) == 250                        # no frame lost or doubled
    assert sum(len(a.samples) for a in audio) == int(10 * AUDIO_RATE / 1024)
    for v, a, nxt in zip(video, audio, video[1:]):
        assert a.samples.dts[-1] * 90000 < nxt.samples.dts[0] * AUDIO_RATE   # audio before the cut stays before it
    # audio snapped onto the 1024-sample grid: consecutive, no drift from the ms rounding of FLV times
    dts = np.concatenate([a.samples.dts for a in audio])
    assert (np.diff(dts) == 1024).all()
    assert all(a.start + a.duration == b.start for a, b in zip(audio, audio[1:]))
    assert all(c.new_period == (i == 0) for i, c in enumerate(cuts)) and {c.period for c in cuts} == {0}


def test_audio_only_cuts_on_time():
    seg, cuts = run_segmenter(av_stream(5000, 9, video=False))
    cuts += seg.finish(time.monotonic())
    assert all(len(c.tracks) == 1 and c.tracks[0].track.kind == "audio" for c in cuts)
    seconds = [c.main.duration / AUDIO_RATE for c in cuts]
    assert all(2.0 <= s < 2.0 + 1024 / AUDIO_RATE + 1e-9 for s in seconds[:-1]), seconds
    assert cuts[0].main.start == 0                                           # media time 0 = the first frame
    assert all(a.main.start + a.main.duration == b.main.start for a, b in zip(cuts, cuts[1:]))


def test_timestamps_wrap_without_a_break():
    start = 2**32 - 3000
    seg, cuts = run_segmenter(av_stream(start, 8, fps=25, gop=25))
    cuts += seg.finish(time.monotonic())
    assert {c.period for c in cuts} == {0} and not seg.dropped
    video = np.concatenate([c.tracks[0].samples.dts for c in cuts])
    assert (np.diff(video) == 3600).all()                                   # 40 ms at 90 kHz across the wrap
    assert sum(c.main.duration for c in cuts[:-1]) == int(cuts[-1].main.samples.dts[0])


def test_frames_before_the_first_key_frame_are_dropped():
    messages = av_stream(0, 4, fps=25, gop=50, audio=False)
    messages = messages[:1] + [video_frame(-40 * i, False) for i in (3, 2, 1)][::-1] + messages[1:]
    seg, cuts = run_segmenter(messages)
    cuts += seg.finish(time.monotonic())
    assert seg.dropped["waiting for a key frame"] == 3
    assert cuts[0].tracks[0].samples.keyframe[0] and sum(len(c.main.samples) for c in cuts) == 100


def test_new_codec_configuration_starts_a_new_period():
    first = av_stream(0, 4, fps=25, gop=25)
    second = [video_header(4000, "title_240p.mp4")] + av_stream(4000, 4, fps=25, gop=25, headers=False)
    seg, cuts = run_segmenter(first + second)
    cuts += seg.finish(time.monotonic())
    periods = [c.period for c in cuts]
    assert periods == sorted(periods) and set(periods) == {0, 1}
    firsts = [c for c in cuts if c.new_period]
    assert [c.period for c in firsts] == [0, 1]
    assert (firsts[0].period_tracks[0].codec.height, firsts[1].period_tracks[0].codec.height) == (360, 240)
    assert firsts[1].main.start == 0 and firsts[1].tracks[0].samples.keyframe[0]


def test_interrupt_resumes_at_the_next_key_frame():
    messages = av_stream(0, 6, fps=25, gop=25)
    split = next(i for i, m in enumerate(messages) if m.timestamp >= 2500)
    seg, cuts = run_segmenter(messages[:split])
    cuts += seg.interrupt(time.monotonic())
    _, more = run_segmenter(messages[split:], segmenter=seg)
    more += seg.finish(time.monotonic())
    assert more[0].new_period and more[0].period == 1
    assert more[0].tracks[0].samples.keyframe[0]
    assert seg.dropped["waiting for a key frame"] > 0                       # frames of the GOP cut short by the gap


# ---------------------------------------------------------------------------------------------------- writer
_START_CODE = re.compile(b"\x00\x00\x00\x01|\x00\x00\x01")


def _published(nal: bytes, hevc: bool) -> bool:
    """Not a parameter set or access unit delimiter: those the TS muxer adds; what the publisher sent is the rest."""
    return (nal[0] >> 1) & 0x3F not in (32, 33, 34, 35) if hevc else nal[0] & 0x1F not in (7, 8, 9)


def annexb_nals(data: bytes, hevc: bool = False) -> list[bytes]:
    return [n for n in _START_CODE.split(data) if n and _published(n, hevc)]


def avcc_nals(data: bytes, size: int = 4, hevc: bool = False) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + size], "big")
        nal = data[pos + size:pos + size + n]
        if _published(nal, hevc):
            out.append(nal)
        pos += size + n
    return out


def source_samples(name: str, kind: str) -> list[bytes]:
    path = fixture_path(name)
    raw = path.read_bytes()
    track = next(t for t in open_presentation(path).tracks if t.kind == kind)
    return [raw[int(o):int(o) + int(n)] for o, n in zip(track.samples.offsets, track.samples.sizes)]


FRAMES = {"title_360p": (288, 518), "hevc": (192, 346)}   # video, audio frames of the fixtures


@pytest.fixture(scope="module", params=["title_360p", "hevc"])
def packaged(request, tmp_path_factory):
    """A fixture as ffmpeg publishes it (FLV tags; E-RTMP for HEVC), through the segmenter and the writer, all
    segments kept."""
    tmp = tmp_path_factory.mktemp("live")
    messages = flv_messages(flv_from_mp4(request.param, tmp))
    out = tmp / "out"
    writer = LiveStreamWriter(out, target_ms=2000, window=100)
    seg, cuts = run_segmenter(messages)
    for cut in cuts + seg.finish(time.monotonic()):
        writer.add(cut)
    writer.end()
    demuxer = FlvDemuxer()
    flv = [s for m in messages for s in demuxer.feed(m)]
    return out, flv, request.param


def test_hls_segments_carry_the_published_samples_with_exact_times(packaged):
    """H.264 in MPEG-TS segments; HEVC in fMP4 segments (EXT-X-MAP: browsers play HEVC from fMP4 only)."""
    out, flv, name = packaged
    hevc = name == "hevc"
    playlist = m3u8.load(str(out / "index.m3u8"))
    assert playlist.is_endlist and playlist.media_sequence == 1 and len(playlist.segments) == (4 if hevc else 6)
    assert all(s.uri.endswith(".m4s" if hevc else ".ts") for s in playlist.segments)
    assert (playlist.segment_map[0].uri.endswith("-0-init.mp4") and playlist.version == 6) if hevc else \
        (not playlist.segment_map and playlist.version == 3)
    data = b"".join((out / s.uri).read_bytes() for s in playlist.segments)
    if hevc:
        data = (out / playlist.segment_map[0].uri).read_bytes() + data
    fmt = None if hevc else "mpegts"
    video, audio = [], []
    with av.open(io.BytesIO(data), format=fmt) as c:
        for p in c.demux():
            if p.size:
                (video if p.stream.type == "video" else audio).append((bytes(p), p.pts))
    nals = (lambda d: avcc_nals(d, hevc=True)) if hevc else annexb_nals
    assert [nals(d) for d, _ in video] == [avcc_nals(s, hevc=hevc) for s in source_samples(f"{name}.mp4", "video")]
    adts = 0 if hevc else 7                                                 # TS: ADTS header + raw frame
    assert [d[adts:] for d, _ in audio] == source_samples(f"{name}.mp4", "audio")
    with av.open(io.BytesIO(data), format=fmt) as c:
        assert sum(1 for _ in c.decode(video=0)) == FRAMES[name][0]
    flv_video = [s for s in flv if s.kind == "video"]
    published = np.array([(s.dts + s.cts) * 90 for s in flv_video])
    got = np.array([pts for _, pts in video])
    assert (got - got[0] == published - published[0]).all()                 # the same clock, across all segments
    durations = [s.duration for s in playlist.segments]
    last_key = flv_video[48 * (len(durations) - 1)]                         # GOP: 2 s at 24 fps
    assert last_key.keyframe
    assert sum(durations[:-1]) == pytest.approx((last_key.dts - flv_video[0].dts) / 1000, abs=1e-3)


def test_dash_fragments_tile_the_timeline(packaged):
    out, flv, name = packaged
    mpd = ET.parse(out / "manifest.mpd").getroot()
    assert mpd.get("type") == "dynamic" and mpd.get("mediaPresentationDuration") and not mpd.get("minimumUpdatePeriod")
    for rep in mpd.iterfind(".//d:Representation", NS):
        template = rep.find("d:SegmentTemplate", NS)
        times, t = [], None
        for s in template.iterfind("d:SegmentTimeline/d:S", NS):
            t = int(s.get("t", t))
            for _ in range(int(s.get("r", 0)) + 1):
                times.append((t, int(s.get("d"))))
                t += int(s.get("d"))
        assert len(times) == (4 if name == "hevc" else 6)
        frags = [read_fragment((out / template.get("media").replace("$Time$", str(start))).read_bytes())[0]
                 for start, _ in times]
        for (start, duration), frag, nxt in zip(times, frags, frags[1:] + [None]):
            assert int(frag.presentation.min()) == start
            if nxt is not None:     # decode times continue exactly from fragment to fragment
                assert int(frag.decode[-1] + frag.durations[-1]) == int(nxt.decode[0])
                assert start + duration == int(nxt.presentation.min())
        kind = "video" if rep.get("id") == "v" else "audio"
        assert b"".join(f.payload for f in frags) == b"".join(source_samples(f"{name}.mp4", kind))
        init = (out / template.get("initialization")).read_bytes()
        with av.open(io.BytesIO(init + b"".join((out / template.get("media").replace("$Time$", str(s))).read_bytes()
                                                  for s, _ in times))) as c:
            frames = sum(1 for _ in c.decode(c.streams[0]))
        assert frames == FRAMES[name][kind == "audio"]


def test_window_slides_and_old_files_are_deleted(tmp_path):
    writer = LiveStreamWriter(tmp_path / "s", target_ms=1000, window=3, keep_extra=2)
    seg, cuts = run_segmenter(av_stream(0, 12.4, fps=25, gop=25), target_ms=1000)
    for cut in cuts:
        writer.add(cut)
    assert writer.segments_written == 12
    playlist = m3u8.loads((tmp_path / "s" / "index.m3u8").read_text())
    assert playlist.media_sequence == 10 and [s.uri for s in playlist.segments] == [
        f"{writer.tid}-{n}.ts" for n in (10, 11, 12)]
    assert playlist.target_duration >= max(s.duration for s in playlist.segments)
    assert not playlist.is_endlist
    ts_files = sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "s").glob("*.ts"))
    assert ts_files == [8, 9, 10, 11, 12]                                   # window + 2 for late players
    assert len(list((tmp_path / "s").glob("*-v-*.m4s"))) == 5 and len(list((tmp_path / "s").glob("*-a-*.m4s"))) == 5
    assert all(LIVE_FILE.fullmatch(p.name) for p in (tmp_path / "s").iterdir())
    assert writer.stats()["latency_ms"]["count"] == 12


# ---------------------------------------------------------------------------------------------------- packager
def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def publish(packager: LivePackager, key: str, messages) -> None:
    packager.on_publish(key)
    for m in messages:
        keyframe = m.message_type_id == MSG_VIDEO and m.payload[0] >> 4 == 1 and m.payload[1] == 1
        header = m.payload[1] == 0
        packager.on_message(key, m, keyframe=keyframe, sequence_header=header)
    packager.on_unpublish(key)
    wait_for(lambda: not packager.stats()["streams"][key]["publishing"])


def test_republish_continues_with_a_discontinuity_and_a_new_period(tmp_path):
    config = RtmpConfig(live_segment_duration_ms=1000, live_window=10)
    packager = LivePackager(tmp_path / "live", config)
    try:
        publish(packager, "live/cam", av_stream(0, 4.2, fps=25, gop=25))
        out = tmp_path / "live" / "live" / "cam"
        first = m3u8.loads((out / "index.m3u8").read_text())
        assert first.is_endlist and len(first.segments) == 5
        mpd = ET.parse(out / "manifest.mpd").getroot()
        assert mpd.get("mediaPresentationDuration") and mpd.get("minimumUpdatePeriod") is None
        publish(packager, "live/cam", av_stream(0, 3.2, fps=25, gop=25))       # the encoder restarts its clock
        second = m3u8.loads((out / "index.m3u8").read_text())
        assert second.is_endlist and second.media_sequence == 1 and len(second.segments) == 9
        assert [s.discontinuity for s in second.segments] == [False] * 5 + [True] + [False] * 3
        assert second.segments[5].program_date_time is not None
        periods = ET.parse(out / "manifest.mpd").getroot().findall("d:Period", NS)
        assert [p.get("id") for p in periods] == ["0", "1"]
        starts = [float(p.get("start")[2:-1]) for p in periods]
        assert starts[1] >= starts[0] + 4.0                                  # after the first period's media
        for element in ET.parse(out / "manifest.mpd").getroot().iter():
            for name in ("initialization",):
                if element.get(name):
                    assert (out / element.get(name)).exists()
        stats = packager.stats()
        assert stats["streams"]["live/cam"]["segments"] == 9 and stats["segment_latency_ms"]["count"] == 9
    finally:
        packager.close()


def test_only_live_applications_and_safe_names_are_packaged(tmp_path):
    config = RtmpConfig(applications={"vod": ApplicationConfig(live=False)})
    packager = LivePackager(tmp_path / "live", config)
    try:
        packager.on_publish("vod/cam")
        packager.on_publish("live/../../etc")
        packager.on_publish("live/.hidden")
        assert packager.stats()["streams"] == {} and packager.skipped_names == 2
        assert not (tmp_path / "live").exists()
    finally:
        packager.close()


def test_queue_bound_drops_media_but_never_sequence_headers(tmp_path):
    """A worker queue bounded at 1 KiB cannot take a 4 KiB frame: every frame is dropped (the publisher is never
    held up), the sequence headers still go through, and the drops are counted."""
    packager = LivePackager(tmp_path / "live", RtmpConfig(), max_queue_bytes=1024)
    big = Message(6, 0, MSG_VIDEO, 1, bytes([0x17, 1, 0, 0, 0]) + (4091).to_bytes(4, "big") + b"\x65" + bytes(4090))
    try:
        packager.on_publish("live/big")
        for m in (video_header(), audio_header()):
            packager.on_message("live/big", m, keyframe=False, sequence_header=True)
        for i in range(20):
            packager.on_message("live/big", Message(6, 40 * i, MSG_VIDEO, 1, big.payload), keyframe=True,
                                sequence_header=False)
        stream = packager.stats()["streams"]["live/big"]
        assert stream["dropped_messages"] == 20
        wait_for(lambda: packager.stats()["streams"]["live/big"]["backlog_bytes"] == 0)
        worker = packager._workers["live/big"]
        assert worker.segmenter.demuxer.video is not None and worker.segmenter.demuxer.audio is not None
    finally:
        packager.close()
    assert packager.stats()["streams"]["live/big"]["segments"] == 0
