"""The transcoded ladder (rtmp.live.ladder) on real sockets: the ffmpeg CLI publishes title_360p to an application with
``transcode = ["240p@300k", "180p@200k"]``; a real RTMP client (PyAV, ffmpeg's RTMP protocol) plays a rendition;
the live packager writes each rendition's HLS like any stream's; PyAV decodes those at their sizes with key frames
at the source's times; a rendition taller than the source is not made; a crashed transcoding process unpublishes
its renditions and leaves the source playing; a change of the source's video configuration starts a new period
in every rendition too."""
from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
from dataclasses import replace

import av
import m3u8
import pytest

from fixtures.generate import fixture_path
from rtmp.config import ApplicationConfig, RtmpConfig
from rtmp.live import LivePackager
from rtmp.live.ladder import LadderTap
from rtmp.messages import MSG_VIDEO
from rtmp.relay import Relay
from rtmp.server import serve_rtmp
from tests.needs import needs_executable
from tests.rtmp.test_flv import flv_messages
from tests.rtmp.test_server_ffmpeg import ffmpeg_publish, stop, wait_until

pytestmark = needs_executable("ffmpeg")

LADDER = ("720p@2500k", "240p@300k", "180p@200k")


@pytest.fixture
async def ladder(tmp_path):
    config = RtmpConfig(default=ApplicationConfig(low_latency=False),
                        applications={"live": ApplicationConfig(transcode=LADDER, low_latency=False)},
                        live_segment_duration_ms=2000, live_window=20)
    relay = Relay()
    tap = LadderTap(relay, config, asyncio.get_running_loop())
    packager = LivePackager(tmp_path / "live", config)
    relay.add_tap(tap)
    relay.add_tap(packager)
    server = await serve_rtmp("127.0.0.1", 0, relay)
    try:
        yield server, relay, tap, tmp_path / "live" / "live"
    finally:
        await server.close()
        await tap.close()
        await asyncio.to_thread(packager.close)


def hls_audio(directory) -> list[tuple[int, bytes]]:
    """(pts in 90-kHz ticks, ADTS frame) of every AAC frame of a live stream's whole HLS output (a PES may carry
    several: each frame after the first is 1024 samples later, to within a tick)."""
    playlist = m3u8.loads((directory / "index.m3u8").read_text())
    data = b"".join((directory / s.uri).read_bytes() for s in playlist.segments)
    frames = []
    with av.open(io.BytesIO(data), format="mpegts") as c:
        stream = c.streams.audio[0]
        step = 1024 * 90_000 // stream.rate
        for packet in c.demux(stream):
            payload, at, pts = bytes(packet), 0, packet.pts
            while at < len(payload):
                size = (payload[at + 3] & 3) << 11 | payload[at + 4] << 3 | payload[at + 5] >> 5
                frames.append((pts, payload[at:at + size]))
                at, pts = at + size, pts + step
    return frames


def hls_frames(directory) -> tuple[list, list[int]]:
    """(decoded video frames, key-frame pts in ms) of a live stream's whole HLS output (MPEG-TS)."""
    playlist = m3u8.loads((directory / "index.m3u8").read_text())
    data = b"".join((directory / s.uri).read_bytes() for s in playlist.segments)
    frames, keys = [], []
    with av.open(io.BytesIO(data), format="mpegts") as c:
        for packet in c.demux(video=0):
            if packet.is_keyframe and packet.pts is not None:
                keys.append(round(packet.pts * packet.time_base * 1000))
            frames += packet.decode()
    return frames, keys


async def test_renditions_are_live_streams_with_the_source_key_frames(ladder):
    server, relay, tap, out = ladder
    publisher = ffmpeg_publish(server.port, str(fixture_path("title_360p.mp4")), seconds=8)
    try:
        await wait_until(lambda: relay.is_published("live/test_240p"), 30, "the 240p rendition")

        def play() -> tuple[int, tuple[int, int]]:
            with av.open(f"rtmp://127.0.0.1:{server.port}/live/test_240p", options={"rw_timeout": "5000000"},
                         timeout=10) as c:
                frames = []
                for frame in c.decode(video=0):
                    frames.append((frame.width, frame.height))
                    if len(frames) >= 24:
                        return len(frames), frames[-1]
            return len(frames), frames[-1]

        count, size = await asyncio.wait_for(asyncio.to_thread(play), 30)
        assert count >= 24 and size == (426, 240)

        def variants():
            path = out / "test" / "master.m3u8"
            return m3u8.loads(path.read_text()).playlists if path.exists() else []

        await wait_until(lambda: len(variants()) == 3, 20, "the source's master playlist to list the renditions")
        listed = {p.uri: p.stream_info for p in variants()}
        assert {uri: info.resolution for uri, info in listed.items()} == {
            "index.m3u8": (640, 360), "../test_240p/index.m3u8": (426, 240), "../test_180p/index.m3u8": (320, 180)}
        bandwidths = [p.stream_info.bandwidth for p in variants()]
        assert bandwidths == sorted(bandwidths, reverse=True)
        assert all(info.codecs.startswith("avc1.") and "mp4a.40.2" in info.codecs for info in listed.values())
        code = await asyncio.to_thread(publisher.wait, 30)
        assert code == 0, stop(publisher)
        await wait_until(lambda: not tap.jobs, 30, "the transcoder to finish")
    finally:
        stop(publisher)
    await wait_until(lambda: (out / "test_180p" / "index.m3u8").exists()
                     and "#EXT-X-ENDLIST" in (out / "test_180p" / "index.m3u8").read_text(), 30, "the renditions' HLS")
    assert not relay.is_published("live/test_720p") and not (out / "test_720p").exists()   # no upscaling
    source_frames, source_keys = hls_frames(out / "test")
    assert len(source_keys) >= 3
    source_audio = hls_audio(out / "test")
    for name, size in (("test_240p", (426, 240)), ("test_180p", (320, 180))):
        frames, keys = hls_frames(out / name)
        assert {(f.width, f.height) for f in frames} == {size}
        assert keys == source_keys, name                                     # switching points line up
        assert abs(len(frames) - len(source_frames)) <= 3                    # (the last frames may still be in flight)
        # the source's audio, passed through: from the first key frame on (not from when the rendition's first
        # picture came back), at the same times (a frame after a PES's first is timed here to within a tick)
        audio = hls_audio(out / name)
        assert [a for _, a in audio] == [a for _, a in source_audio], name
        assert max(abs(t - u) for (t, _), (u, _) in zip(audio, source_audio)) <= 1, name
    stats = tap.stats()
    assert stats == {} or all(not s["failed"] for s in stats.values())


async def test_a_crashed_transcoder_drops_its_renditions_not_the_source(ladder):
    server, relay, tap, out = ladder
    publisher = ffmpeg_publish(server.port, str(fixture_path("title_360p.mp4")), seconds=12)
    try:
        await wait_until(lambda: relay.is_published("live/test_180p"), 30, "the 180p rendition")
        os.kill(tap.jobs["live/test"].process.pid, signal.SIGKILL)
        await wait_until(lambda: not relay.is_published("live/test_180p") and not relay.is_published("live/test_240p"),
                         15, "the renditions to be unpublished")
        assert relay.is_published("live/test") and publisher.poll() is None          # the source goes on
        before = relay.stats()["live/test"]["messages_in"] if "messages_in" in relay.stats()["live/test"] else None
        await asyncio.sleep(1.0)
        assert relay.is_published("live/test")
        if before is not None:
            assert relay.stats()["live/test"]["messages_in"] > before
    finally:
        stop(publisher)


async def test_a_transcoder_that_falls_behind_sheds_renditions_then_stops(tmp_path, caplog):
    """Overload (here: any backlog at all counts): the largest rendition goes first, then the next; with none left
    the process is stopped, so the stream's video is not queued for it without bound. The source plays on."""
    config = RtmpConfig(applications={"live": ApplicationConfig(transcode=LADDER[1:], live=False)})
    relay = Relay()
    tap = LadderTap(relay, config, asyncio.get_running_loop(), max_backlog_ms=1)
    relay.add_tap(tap)
    server = await serve_rtmp("127.0.0.1", 0, relay)
    publisher = ffmpeg_publish(server.port, str(fixture_path("title_360p.mp4")), seconds=6)
    try:
        await wait_until(lambda: "live/test" in tap.jobs, 20, "the transcoder to start")
        job = tap.jobs["live/test"]
        await wait_until(lambda: "live/test" not in tap.jobs, 20, "the transcoder to stop")
        assert list(job.failed) == ["240p", "180p"]                       # the largest first
        assert "dropped" in job.failed["240p"] and job.process.exitcode == 0
        assert relay.is_published("live/test") and publisher.poll() is None
        assert not relay.is_published("live/test_240p") and not relay.is_published("live/test_180p")
        assert "stopping the transcoder" in caplog.text
    finally:
        stop(publisher)
        await server.close()
        await tap.close()


async def test_a_source_configuration_change_starts_a_new_period_in_every_rendition(tmp_path):
    """The source's video configuration changes within a publish (a new SPS at the same size, as an encoder that
    restarts its output sends): its packager starts a new period (EXT-X-DISCONTINUITY, a timeline from that key
    frame). The rendition's new encoder gives the same avcC as before, yet it must start a new period at the same
    key frame: same segments, durations, discontinuities and first times as the source's."""
    source = str(fixture_path("title_360p.mp4"))
    encode = ["-an", "-c:v", "libx264", "-bf", "0", "-g", "48", "-sc_threshold", "0", "-f", "flv"]
    for name, profile in (("a", "high"), ("b", "baseline")):   # 4 s each, 2-s GOPs: whole GOPs only
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", source, "-t", "4", *encode[:-2], "-profile:v", profile,
                        *encode[-2:], str(tmp_path / f"{name}.flv")], check=True, timeout=60)
    a, b = (flv_messages(tmp_path / f"{name}.flv") for name in "ab")
    messages = [m for m in a + [replace(m, timestamp=m.timestamp + 4000) for m in b] if m.message_type_id == MSG_VIDEO]

    config = RtmpConfig(default=ApplicationConfig(low_latency=False),
                        applications={"live": ApplicationConfig(transcode=("240p@300k",), low_latency=False)},
                        live_segment_duration_ms=2000, live_window=20)
    relay = Relay()
    tap = LadderTap(relay, config, asyncio.get_running_loop(), max_backlog_ms=10**9)   # (fed faster than real time)
    packager = LivePackager(tmp_path / "live", config)
    relay.add_tap(tap)
    relay.add_tap(packager)
    publisher = object()
    try:
        assert relay.publish("live/cfg", publisher)
        for m in messages:
            relay.media("live/cfg", m, keyframe=m.payload[0] >> 4 == 1, sequence_header=m.payload[1] == 0)
            await asyncio.sleep(0.002)
        await wait_until(lambda: tap.jobs["live/cfg"].last_out is not None
                         and tap.jobs["live/cfg"].last_out >= messages[-1].timestamp - 200, 60, "the transcoder")
        relay.unpublish("live/cfg", publisher)
        await wait_until(lambda: not tap.jobs, 30, "the transcoder to finish")
    finally:
        await tap.close()
        await asyncio.to_thread(packager.close)
    out = tmp_path / "live" / "live"

    def segments(name: str) -> list[tuple[bool, float, int]]:
        """(discontinuity, EXTINF, first video pts in ms) of each segment."""
        found = []
        for s in m3u8.loads((out / name / "index.m3u8").read_text()).segments:
            with av.open(str(out / name / s.uri)) as c:
                first = next(p for p in c.demux(video=0) if p.pts is not None)
                found.append((s.discontinuity, s.duration, round(first.pts * first.time_base * 1000)))
        return found

    expected = segments("cfg")
    assert [d for d, _, _ in expected] == [False, False, True, False], expected
    assert segments("cfg_240p") == expected
