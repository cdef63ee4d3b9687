"""Operating the RTMP server on real sockets: /status numbers against what ffmpeg sent, idle publishers, hostile
connections, slow players and duplicate publishers — one bad connection never hurts the others."""
from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fixtures.generate import fixture_path
from gateway.http.app import make_app
from gateway.ingest.service import Ingest
from gateway.settings import Settings
from packagers.codecs import amf0
from rtmp.chunk import ChunkReader, ChunkWriter
from rtmp.config import RtmpConfig
from rtmp.handshake import ClientHandshake
from rtmp.messages import MSG_AUDIO, MSG_COMMAND_AMF0, MSG_VIDEO, Message
from rtmp.relay import Relay
from rtmp.server import RtmpServer
from rtmp.session import classify_media
from tests.needs import needs_executable
from tests.rtmp.test_server_ffmpeg import RawClient, stop, wait_until
from tests.rtmp.test_session import AVC_KEY, AVC_SEQ, publish_bytes

pytestmark = needs_executable("ffmpeg")


class Recorder:
    """A relay tap: every published message per key (ground truth for players), and the stream's last stats."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        relay.add_tap(self)
        self.published: dict[str, list[tuple[int, int, bytes]]] = defaultdict(list)
        self.final: dict[str, dict] = {}

    def on_publish(self, key: str) -> None:
        pass

    def on_message(self, key: str, message: Message, *, keyframe: bool, sequence_header: bool) -> None:
        self.published[key].append((message.message_type_id, message.timestamp, message.payload))

    def on_unpublish(self, key: str) -> None:
        self.final[key] = self.relay.stats()[key]   # the relay restarts the stream's counters after this


async def start_server(**options) -> tuple[RtmpServer, Recorder]:
    server = RtmpServer(Relay(), **options)
    await server.start("127.0.0.1", 0)
    return server, Recorder(server.relay)


def ffmpeg(port: int, *inputs: str, name: str = "test", extra: tuple = ()) -> subprocess.Popen:
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *inputs, *extra, "-f", "flv",
                             f"rtmp://127.0.0.1:{port}/live/{name}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def lavfi_source(seconds: float) -> tuple[str, ...]:
    return ("-re", "-f", "lavfi", "-i", "testsrc=size=160x90:rate=15", "-f", "lavfi", "-i",
            "sine=frequency=440:sample_rate=44100", "-t", str(seconds), "-c:v", "libx264", "-g", "15", "-bf", "0",
            "-c:a", "aac")


async def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    _, err = await asyncio.wait_for(asyncio.to_thread(proc.communicate), timeout)
    return proc.returncode, err.decode(errors="replace")


async def play_all(client: RawClient) -> list[tuple[int, int, bytes]]:
    """Every audio/video/data message until the publisher leaves (UnpublishNotify)."""
    got = []
    while True:
        m = await client.next_message(timeout=20)
        if m.message_type_id == MSG_COMMAND_AMF0:
            values = amf0.decode_all(m.payload)
            if values[0] == "onStatus" and values[3]["code"] == "NetStream.Play.UnpublishNotify":
                return got
            continue
        if m.message_type_id in (MSG_AUDIO, MSG_VIDEO):
            got.append((m.message_type_id, m.timestamp, m.payload))


def is_tail_of(received: list, published: list) -> int:
    """Assert ``received`` = the cached sequence headers, then exactly the published audio/video messages from some
    point to the end; return that point."""
    media = [p for p in published if p[0] in (MSG_AUDIO, MSG_VIDEO)]
    headers = [p for p in media if classify_media(Message(6, p[1], p[0], 1, p[2]))[1]]
    n = 0
    while n < min(2, len(received)) and received[n] in headers:
        n += 1
    body = received[n:]
    start = media.index(body[0])
    assert body == media[start:], "a player missed or reordered published messages"
    return start


def closing_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rtmp.server" and ": closing: " in r.getMessage()]


# ------------------------------------------------------------------------------------------------------ status

def test_rates_over_the_window_with_a_fake_clock():
    now = [100.0]
    r = Relay(clock=lambda: now[0])
    assert r.publish("live/a", "pub")
    r.metadata("live/a", Message(5, 0, 18, 1, amf0.encode_all("onMetaData", amf0.EcmaArray(
        width=1280.0, height=720.0, framerate=29.97, videocodecid=7.0))))
    for i in range(300):          # 10 s at 30 fps, 1000-byte frames → 240 kbit/s
        now[0] = 100.0 + i / 30
        r.media("live/a", Message(6, i * 33, MSG_VIDEO, 1, bytes([0x27, 1]) + bytes(998)), keyframe=False,
                sequence_header=False)
    now[0] = 110.0
    st = r.stats()["live/a"]
    assert (st["width"], st["height"], st["declared_fps"]) == (1280, 720, 29.97)
    assert st["fps"] == pytest.approx(30, rel=0.05) and st["bitrate"] == pytest.approx(240_000, rel=0.05)
    assert st["bytes_in"] == 300_000 + len(amf0.encode_all("onMetaData", amf0.EcmaArray(
        width=1280.0, height=720.0, framerate=29.97, videocodecid=7.0)))
    now[0] = 120.0                # silent publisher: the window empties
    st = r.stats()["live/a"]
    assert st["fps"] == 0 and st["bitrate"] == 0


async def test_status_over_http_matches_what_ffmpeg_sent(tmp_path: Path):
    """ffmpeg publishes the 640x360 24 fps fixture (-c copy); two players join; /status (the gateway's HTTP app)
    shows the codecs, the fixture's resolution, the players with their peers; the byte count equals ffmpeg's own."""
    server, rec = await start_server()
    (tmp_path / "store").mkdir()
    http = TestClient(TestServer(make_app(Settings(store=tmp_path / "store"),
                                          ingest=Ingest(server, server.relay, RtmpConfig()))))
    await http.start_server()
    progress = tmp_path / "progress.txt"
    pub = ffmpeg(server.port, "-re", "-i", str(fixture_path("title_360p.mp4")), "-t", "4", "-c", "copy",
                 extra=("-progress", str(progress)))
    players = []
    try:
        await wait_until(lambda: server.relay.is_published("live/test"), 20, "the publisher")
        for _ in range(2):
            c = await RawClient.connect(server.port)
            assert (await c.play("test"))["code"] == "NetStream.Play.Start"
            players.append((c, asyncio.create_task(play_all(c))))
        peers = {f"127.0.0.1:{c.w.get_extra_info('sockname')[1]}" for c, _ in players}
        await asyncio.sleep(2.5)
        response = await http.get("/status")
        assert response.status == 200
        rtmp = (await response.json())["rtmp"]
        code, err = await finish(pub)
        assert code == 0, err
        received = [await asyncio.wait_for(t, 20) for _, t in players]
    finally:
        stop(pub)
        for c, _ in players:
            c.close()
        await http.close()
        await server.close()
    st = rtmp["streams"]["live/test"]
    print(f"\n/status rtmp live/test while playing: {st}")
    assert rtmp["connections"] == 3
    assert st["publishing"] and st["publisher"].startswith("127.0.0.1:") and st["publisher"] not in peers
    assert (st["video_codec"], st["audio_codec"]) == ("avc", "aac")
    assert (st["width"], st["height"], st["declared_fps"]) == (640, 360, 24)
    assert st["subscribers"] == 2 and {p["peer"] for p in st["players"]} == peers
    assert st["bitrate"] > 0 and st["fps"] > 0 and st["uptime"] > 1
    assert all(p["drops"] == 0 for p in st["players"]) and st["drops"] == 0
    # At the end of the stream: FLV bytes ffmpeg wrote = 13-byte header + (11-byte tag header + body + 4) per tag.
    final = rec.final["live/test"]
    total_size = int([line for line in progress.read_text().splitlines() if line.startswith("total_size=")][-1][11:])
    assert final["bytes_in"] + 15 * final["messages_in"] + 13 == total_size
    assert final["bytes_in"] == sum(len(p) for _, _, p in rec.published["live/test"])
    for got in received:
        is_tail_of(got, rec.published["live/test"])
    print(f"ffmpeg wrote {total_size} FLV bytes = {final['messages_in']} messages, {final['bytes_in']} payload bytes")


async def test_status_of_a_real_gateway_serve_with_rtmp(tmp_path: Path):
    """The CLI wiring: `gateway serve --rtmp-port` shows the ingest's stream in its /status."""
    import json
    import urllib.request

    from tests.e2e.conftest import free_port, start_gateway
    (tmp_path / "store").mkdir()
    rtmp_port = free_port()
    proc, base = await asyncio.to_thread(start_gateway, tmp_path / "store", tmp_path / "gateway.log",
                                         "--rtmp-port", str(rtmp_port))
    pub = ffmpeg(rtmp_port, *lavfi_source(4))

    def rtmp_status() -> dict:
        with urllib.request.urlopen(base + "/status", timeout=5) as r:
            return json.load(r)["rtmp"]

    try:
        await wait_until(lambda: pub.poll() is not None or
                         (rtmp_status()["streams"].get("live/test") or {}).get("fps") is not None, 30, "the stream")
        st = rtmp_status()["streams"]["live/test"]
        code, err = await finish(pub)
        # The consumers report beside the streams: the live packager's segments and their latency.
        await wait_until(lambda: (rtmp_status()["live"]["streams"].get("live/test") or {}).get("ended"), 20,
                         "the live packager to end the stream")
        live = rtmp_status()["live"]
    finally:
        stop(pub)
        proc.terminate()
        proc.wait(10)
    assert code == 0, err
    assert (st["width"], st["height"], st["video_codec"], st["audio_codec"]) == (160, 90, "avc", "aac")
    assert st["publishing"] and st["messages_in"] > 0
    packaged = live["streams"]["live/test"]
    assert packaged["segments"] >= 2 and packaged["errors"] == 0
    assert live["segment_latency_ms"]["count"] >= 1 and live["segment_latency_ms"]["p50"] >= 0
    print(f"\nlive packaging of a 4 s publish: {packaged}")


# ------------------------------------------------------------------------------------------------------ idle

async def test_idle_publisher_is_dropped_and_its_key_freed(caplog):
    caplog.set_level(logging.INFO, logger="rtmp.server")
    server, _ = await start_server(idle_timeout=0.5)
    try:
        idle = await RawClient.connect(server.port)
        idle.w.write(publish_bytes(idle.c))
        assert (await idle.wait_status())["code"] == "NetStream.Publish.Start"
        idle.w.write(idle.c.media(MSG_VIDEO, 0, AVC_SEQ))      # then nothing
        with pytest.raises(EOFError):
            while True:
                await idle.next_message(timeout=10)
        assert not server.relay.is_published("live/test")
        assert any("idle for" in r.getMessage() for r in caplog.records)
        # The key is free again; a publisher that keeps sending stays.
        active = await RawClient.connect(server.port)
        active.w.write(publish_bytes(active.c))
        assert (await active.wait_status())["code"] == "NetStream.Publish.Start"
        for i in range(8):
            active.w.write(active.c.media(MSG_VIDEO, i * 200, AVC_KEY))
            await asyncio.sleep(0.2)
        assert server.relay.is_published("live/test")
        # A player that only listens is never idle.
        player = await RawClient.connect(server.port)
        assert (await player.play("test"))["code"] == "NetStream.Play.Start"
        await asyncio.sleep(1.0)
        assert server.stats()["streams"]["live/test"]["subscribers"] == 1
        for c in (idle, active, player):
            c.close()
    finally:
        await server.close()


# ------------------------------------------------------------------------------------------------------ hostile

def _handshaken(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    hs = ClientHandshake()
    s.sendall(hs.start())
    while not hs.done:
        data = s.recv(65536)
        assert data
        c2 = hs.feed(data)
        if c2:
            s.sendall(c2)
    return s


def _closed(s: socket.socket) -> bool:
    s.settimeout(10)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def hostile_bytes() -> dict[str, bytes]:
    w = ChunkWriter()
    connect = w.write(Message(3, 0, MSG_COMMAND_AMF0, 0, amf0.encode_all(
        "connect", 1.0, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"})))
    big = b"".join(bytes([0x00 | csid]) + b"\x00\x00\x00" + b"\xff\xff\xff" + b"\x09" + b"\x01\x00\x00\x00"
                   + bytes(128) for csid in range(3, 9))
    return {
        "malformed chunk": bytes([0x40 | 9]) + bytes(7),                     # type 1 on a fresh chunk stream
        "bad AMF": ChunkWriter().write(Message(3, 0, MSG_COMMAND_AMF0, 0, b"\x02\x00\x10conn")),
        "AMF without a command name": ChunkWriter().write(Message(3, 0, MSG_COMMAND_AMF0, 0, amf0.encode_all(1.0))),
        "oversized messages": connect + big,                                 # 6 x 16 MB declared: > 64 MB pending
        "bad chunk size": ChunkWriter().write(Message(2, 0, 1, 0, b"\x00\x00\x00\x00")),
    }


async def test_hostile_connections_close_alone_while_ffmpeg_and_a_player_carry_on(caplog):
    caplog.set_level(logging.INFO, logger="rtmp.server")
    server, rec = await start_server()
    pub = ffmpeg(server.port, *lavfi_source(5))
    try:
        await wait_until(lambda: len(rec.published["live/test"]) > 5, 20, "ffmpeg's first messages")
        player = await RawClient.connect(server.port)
        assert (await player.play("test"))["code"] == "NetStream.Play.Start"
        playing = asyncio.create_task(play_all(player))

        def attack() -> None:
            for what, data in hostile_bytes().items():
                s = _handshaken(server.port)
                s.sendall(data)
                assert _closed(s), what
                s.close()
            s = socket.create_connection(("127.0.0.1", server.port))   # not even RTMP
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _closed(s)
            s.close()

        await asyncio.to_thread(attack)
        code, err = await finish(pub)
        received = await asyncio.wait_for(playing, 20)
        player.close()
    finally:
        stop(pub)
        await server.close()
    assert code == 0 and "rror" not in err, err
    lines = closing_lines(caplog)
    print("\n" + "\n".join(lines))
    assert len(lines) == 6
    assert any("type 1 chunk on chunk stream 9 without a previous type 0 header" in x for x in lines)
    assert any("partial messages would exceed" in x for x in lines)
    assert any("unsupported RTMP version 71" in x for x in lines)      # "G" of GET
    assert is_tail_of(received, rec.published["live/test"]) < len(rec.published["live/test"]) // 2
    assert server.errors == 0


# ------------------------------------------------------------------------------------------------------ slow player

class SlowReader:
    """A player on a blocking socket with a 4 KB receive buffer that reads 2 KB every 50 ms (~40 KB/s)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.bytes = 0
        self.stopped = threading.Event()

    def play(self, name: str = "test") -> dict:
        from tests.rtmp.test_session import ScriptedClient
        c = ScriptedClient()
        self.sock.sendall(c.hs.start())
        while not c.hs.done:
            c2 = c.hs.feed(self.sock.recv(65536))
            if c2:
                self.sock.sendall(c2)
        self.sock.sendall(c.connect() + c.command("createStream") + c.command("play", name, -2000.0, stream_id=1))
        reader, pending = ChunkReader(), c.hs.leftover
        while True:
            for m in reader.feed(pending):
                if m.message_type_id == MSG_COMMAND_AMF0 and amf0.decode_all(m.payload)[0] == "onStatus":
                    status = amf0.decode_all(m.payload)[3]
                    if status["code"] != "NetStream.Play.Reset":
                        return status
            pending = self.sock.recv(4096)

    def crawl(self) -> None:
        while not self.stopped.is_set():
            try:
                data = self.sock.recv(2048)
            except (socket.timeout, OSError):
                return
            if not data:
                return
            self.bytes += len(data)
            time.sleep(0.05)


@pytest.mark.parametrize("fan_out_delay", [0.0, 0.02], ids=["per-message", "batched"])
async def test_slow_player_drops_alone_publisher_and_normal_player_unaffected(fan_out_delay):
    """With per-message writes and with the relay's batches (what `gateway serve` runs: fan_out_ms = 20), whose
    batches go straight to the socket until it backs up."""
    server, rec = await start_server(queue_bytes=256 * 1024, fan_out_delay=fan_out_delay)
    assert (server.relay.batch is not None) == (fan_out_delay > 0)
    # ~8 Mbit/s (noisy Sorenson H.263 is cheap to encode): enough to fill the slow player's kernel socket buffer
    # (autotuned to a megabyte or more on loopback) and then its 256 KB relay queue within a few seconds.
    pub = ffmpeg(server.port, "-re", "-f", "lavfi", "-i", "testsrc2=s=480x270:r=25", "-vf", "noise=alls=20:allf=t",
                 "-t", "6", "-c:v", "flv1", "-q:v", "6", "-g", "25")
    slow = None
    try:
        await wait_until(lambda: server.relay.is_published("live/test"), 20, "the publisher")
        normal = await RawClient.connect(server.port)
        assert (await normal.play("test"))["code"] == "NetStream.Play.Start"
        playing = asyncio.create_task(play_all(normal))
        slow = SlowReader(server.port)
        assert (await asyncio.to_thread(slow.play))["code"] == "NetStream.Play.Start"
        crawling = asyncio.create_task(asyncio.to_thread(slow.crawl))
        slow_peer = f"127.0.0.1:{slow.sock.getsockname()[1]}"
        normal_peer = f"127.0.0.1:{normal.w.get_extra_info('sockname')[1]}"
        t0 = time.monotonic()
        last = {}
        while pub.poll() is None:      # the stream's stats as they were just before the publisher left
            last = server.relay.stats()["live/test"]
            await asyncio.sleep(0.1)
        code, err = await finish(pub)
        took = time.monotonic() - t0
        received = await asyncio.wait_for(playing, 20)
        normal.close()
    finally:
        stop(pub)
        if slow is not None:
            slow.stopped.set()
            slow.sock.close()
        await server.close()
    await crawling
    assert code == 0, err
    by_peer = {p["peer"]: p for p in last["players"]}
    slow_stats, normal_stats = by_peer[slow_peer], by_peer[normal_peer]
    print(f"\nslow player: read {slow.bytes} B, drops {slow_stats['drops']}, queued {slow_stats['queued_bytes']} B; "
          f"normal player: {len(received)} messages, drops {normal_stats['drops']}; publisher ran {took:.1f} s "
          f"after the slow player joined")
    assert normal_stats["drops"] == 0
    assert slow_stats["drops"] > 0 and last["drops"] == slow_stats["drops"]
    assert slow_stats["queued_bytes"] <= 256 * 1024
    is_tail_of(received, rec.published["live/test"])


# ------------------------------------------------------------------------------------------------------ duplicate

async def test_duplicate_ffmpeg_publish_is_refused_badname_first_carries_on(caplog):
    caplog.set_level(logging.INFO, logger="rtmp.server")
    server, rec = await start_server()
    first = ffmpeg(server.port, *lavfi_source(4))
    try:
        await wait_until(lambda: len(rec.published["live/test"]) > 5, 20, "the first publisher")
        n = len(rec.published["live/test"])
        code2, err2 = await finish(ffmpeg(server.port, *lavfi_source(1)))
        code, err = await finish(first)
    finally:
        stop(first)
        await server.close()
    assert code2 != 0 and "live/test is already published" in err2
    assert code == 0, err
    assert len(rec.published["live/test"]) > n + 20      # the first kept publishing
    assert any("publish live/test refused (NetStream.Publish.BadName): busy" in r.getMessage()
               for r in caplog.records)


# ------------------------------------------------------------------------------------------------------ bench

async def test_bench_rtmp_smoke():
    """`gateway bench rtmp` end to end with 5 players for a second: it runs and its figures are consistent."""
    from gateway.tools.bench_rtmp import measure, render
    row = await measure(5, 1.0, kbps=1000, samplers=2, warmup=0.3)
    print("\n" + render([row]))
    assert row["players"] == row["subscribers"] == 5 and row["drops"] == 0
    assert row["lag_ms"]["samples"] > 10 and row["lag_ms"]["max"] >= row["lag_ms"]["95"] >= row["lag_ms"]["50"]
    assert row["server_cpu_per_s"] > 0 and row["players_per_core"] > 0
    assert 0.5 < row["publisher_mbps"] < 2 and row["player_mbps_min"] > 0.5
    assert row["joiners"] >= 1 and row["joins"] == row["joiners"]  # every late joiner got video, then left
