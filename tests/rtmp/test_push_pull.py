"""Push relays and pulls against a real nginx-rtmp-module, with the real ffmpeg CLI as publisher.

Ground truth: what ffmpeg published, recorded by a relay tap (or, for a pull, by a second player on nginx itself), and
PyAV's demux of the source file. Players are our RtmpClient (exact messages). nginx-rtmp holds sequence headers back
until the first frame of their kind and rebuilds onMetaData, so frames are compared per kind (audio, video) and
sequence headers by payload.
"""
from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import av
import pytest

from gateway.ingest.service import start_ingest
from gateway.settings import Settings
from packagers.codecs import amf0
from rtmp.client import RtmpClient
from rtmp.config import ApplicationConfig, RtmpConfig
from rtmp.errors import RtmpError
from rtmp.messages import MSG_AUDIO, MSG_DATA_AMF0, MSG_VIDEO, Message
from rtmp.pull import Puller
from rtmp.push import PushRelay
from rtmp.relay import Relay
from rtmp.server import serve_rtmp
from rtmp.session import ServerSession, classify_media
from tests.needs import needs_executable
from tests.rtmp.nginx_rtmp import NginxRtmp, skip_without_nginx

pytestmark = needs_executable("ffmpeg")

T = 30.0    # hang guard


class Recorder:
    """A relay tap: every message publishers sent, with its arrival time (the ground truth of a push)."""

    def __init__(self) -> None:
        self.messages: dict[str, list[Message]] = {}
        self.arrivals: dict[str, list[float]] = {}

    def on_publish(self, key: str) -> None:
        self.messages.setdefault(key, [])
        self.arrivals.setdefault(key, [])

    def on_message(self, key: str, message: Message, *, keyframe: bool, sequence_header: bool) -> None:
        self.messages[key].append(message)
        self.arrivals[key].append(time.monotonic())

    def on_unpublish(self, key: str) -> None:
        pass


@pytest.fixture(scope="module")
def source():
    """The fixture file and the set of its packets' bytes (PyAV), which every relayed frame must be one of."""
    from fixtures.generate import fixture_path
    path = str(fixture_path("title_360p.mp4"))
    with av.open(path) as f:
        return path, {bytes(p) for p in f.demux() if p.size}


def ffmpeg_publish(url: str, path: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", path,
                             "-t", str(seconds), "-c", "copy", "-f", "flv", url],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def finish(proc: subprocess.Popen) -> tuple[int, str]:
    """ffmpeg's exit status and errors; it gets a moment to close its connection after the last packet (in a thread:
    the event loop keeps serving it)."""
    try:
        _, err = await asyncio.to_thread(proc.communicate, timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    return proc.returncode, err.decode(errors="replace")


async def wait_until(cond, what: str, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def collect(player: RtmpClient, into: list[Message]) -> list[Message]:
    """Everything the player gets until its stream ends."""
    while True:
        try:
            into.append(await player.read_message())
        except EOFError:
            return into


def frames(messages: list[Message], kind: int) -> list[tuple[int, bytes]]:
    """(timestamp, payload) of the audio or video frames, sequence headers left out."""
    return [(m.timestamp, m.payload) for m in messages
            if m.message_type_id == kind and not classify_media(m)[1]]


def headers(messages: list[Message]) -> set[bytes]:
    return {m.payload for m in messages if m.message_type_id in (MSG_AUDIO, MSG_VIDEO) and classify_media(m)[1]}


def assert_tail(got: list, sent: list, what: str) -> int:
    """``got`` is ``sent[i:]`` for some i: nothing missing, altered, reordered or added up to the end. Returns i."""
    assert got, f"{what}: nothing received"
    assert got[0] in sent, f"{what}: first frame {got[0][0]} ms was never sent"
    i = sent.index(got[0])
    assert got == sent[i:], f"{what}: {len(got)} frames received, {len(sent) - i} sent from the join point"
    return i


def assert_from_source(messages: list[Message], source_packets: set[bytes]) -> None:
    """The FLV bodies carry the source file's packets verbatim (AVC NALUs: 5-byte header, raw AAC: 2-byte header;
    ffmpeg's closing AVC end-of-sequence tag has no body)."""
    for m in messages:
        if m.message_type_id in (MSG_AUDIO, MSG_VIDEO) and m.payload[1] == 1:
            body = m.payload[5:] if m.message_type_id == MSG_VIDEO else m.payload[2:]
            assert body in source_packets, f"a {len(body)}-byte frame at {m.timestamp} ms is not in the source"


async def start_player(url: str, name: str) -> tuple[RtmpClient, list[Message], asyncio.Task]:
    player = await RtmpClient.connect(url, timeout=T)
    await player.play(name)
    got: list[Message] = []
    return player, got, asyncio.create_task(collect(player, got))


# ------------------------------------------------------------------------------------------------------- push
async def test_push_ffmpeg_stream_to_nginx_two_targets_exact_frames(tmp_path, source):
    path, source_packets = source
    with NginxRtmp(tmp_path / "nginx") as nginx:
        config = RtmpConfig(applications={"live": ApplicationConfig(
            live=False, push=(nginx.url("live"), nginx.url("live", "copy")))})
        (tmp_path / "store").mkdir()
        ingest = await start_ingest(Settings(store=tmp_path / "store"), config, "127.0.0.1", 0)
        recorder = Recorder()
        ingest.relay.add_tap(recorder)
        push = next(t for t in ingest.relay.taps if isinstance(t, PushRelay))
        try:
            # Players wait on nginx first (idle_streams): they see the push from its very first message.
            same, got_same, task_same = await start_player(nginx.url("live"), "test")
            renamed, got_renamed, task_renamed = await start_player(nginx.url("live"), "copy")
            t0 = time.monotonic()
            pub = ffmpeg_publish(f"rtmp://127.0.0.1:{ingest.port}/live/test", path, 4)
            stats: dict = {}
            while not (task_same.done() and task_renamed.done()):
                stats = push.stats() or stats
                await asyncio.wait({task_same, task_renamed}, timeout=0.1)
                assert time.monotonic() - t0 < T, "players did not see the end of the stream"
            code, err = await finish(pub)
            for c in (same, renamed):
                await c.close()
        finally:
            await ingest.close()
    assert code == 0, err
    published = recorder.messages["live/test"]
    for got, name in ((got_same, "live/test"), (got_renamed, "live/copy")):
        for kind in (MSG_VIDEO, MSG_AUDIO):     # all of them: the push connected during ffmpeg's start-up
            assert assert_tail(frames(got, kind), frames(published, kind), f"{name} {kind.name}") == 0
        assert headers(got) == headers(published)
        assert_from_source(got, source_packets)
        # nginx rebuilt onMetaData from ours: the @setDataFrame metadata we pushed reached it
        meta = next(amf0.decode_all(m.payload) for m in got if m.message_type_id == MSG_DATA_AMF0)
        assert (meta[1]["width"], meta[1]["height"]) == (640.0, 360.0)
    video = frames(got_same, MSG_VIDEO)
    assert classify_media(next(m for m in got_same if m.message_type_id == MSG_VIDEO and
                               not classify_media(m)[1]))[0], "first video frame is not a key frame"
    print(f"\npush: {len(published)} messages published, {len(video)} video frames relayed to each of 2 nginx "
          f"targets; push stats {sorted((k, v['bytes'], v['drops']) for k, v in stats.items())}")
    assert all(v["drops"] == 0 and v["connects"] == 1 for v in stats.values()) and len(stats) == 2


async def test_push_target_down_at_first_reconnects_and_publisher_never_stalls(tmp_path, source):
    skip_without_nginx()
    path, source_packets = source
    nginx = NginxRtmp(tmp_path / "nginx")       # its port is reserved, nothing listens yet
    recorder = Recorder()
    relay = Relay(taps=[recorder])
    config = RtmpConfig(applications={"live": ApplicationConfig(live=False, push=(nginx.url("live"),))})
    push = PushRelay(relay, config, backoff_initial=0.5, backoff_max=2.0)
    relay.add_tap(push)
    server = await serve_rtmp("127.0.0.1", 0, relay)
    player = None
    try:
        pub = ffmpeg_publish(f"rtmp://127.0.0.1:{server.port}/live/test", path, 6)
        # attempts at 0, 0.5 and 1.5 s fail; the next is at 3.5 s, after the publisher's second key frame (2 s GOP)
        await wait_until(lambda: any(s["reconnects"] >= 2 for s in push.stats().values()), "failed push attempts")
        failed = next(iter(push.stats().values()))
        nginx.start()
        up_at = time.monotonic()
        player, got, task = await start_player(nginx.url("live"), "test")
        await wait_until(lambda: any(s["connected"] for s in push.stats().values()), "the push to reconnect")
        published_before_connect = len(recorder.messages["live/test"])
        t0, stats = time.monotonic(), failed
        while not task.done():      # the push's stats live as long as the stream: keep the last ones
            stats = next(iter(push.stats().values()), stats)
            await asyncio.wait({task}, timeout=0.1)
            assert time.monotonic() - t0 < T, "the nginx player did not see the end of the stream"
        code, err = await finish(pub)
    finally:
        if player is not None:
            await player.close()
        await server.close()
        await push.close()
        nginx.stop()
    assert code == 0, err
    published = recorder.messages["live/test"]
    for kind in (MSG_VIDEO, MSG_AUDIO):
        assert_tail(frames(got, kind), frames(published, kind), kind.name)
    assert headers(got) == headers(published)
    assert_from_source(got, source_packets)
    first_video = next(m for m in got if m.message_type_id == MSG_VIDEO and not classify_media(m)[1])
    assert classify_media(first_video)[0]
    # The reconnected push started at the relay's cached GOP: with frames published before it connected.
    assert first_video.timestamp <= published[published_before_connect - 1].timestamp
    assert failed["last_error"] and failed["connects"] == 0 and stats["connects"] == 1 and stats["drops"] == 0
    # The publisher's pace, measured at the relay: media time over wall time, and the longest pause between messages.
    arrivals = recorder.arrivals["live/test"]
    media_ms = published[-1].timestamp - published[0].timestamp
    wall = arrivals[-1] - arrivals[0]
    first_frame = next(i for i, m in enumerate(published) if m.message_type_id == MSG_VIDEO and classify_media(m)[0])
    gap = max(b - a for a, b in zip(arrivals[first_frame:], arrivals[first_frame + 1:]))   # after ffmpeg's start-up
    joined = first_video.timestamp - published[0].timestamp
    print(f"\nreconnect: {failed['reconnects'] + 1} attempts failed ({failed['last_error'][:50]}...), target up "
          f"{up_at - arrivals[0]:.2f} s after the first message; nginx got the stream from media time {joined} ms "
          f"(the cached GOP; the publisher was at {published[published_before_connect - 1].timestamp} ms when the "
          f"push connected); publisher: {media_ms / 1000 / wall:.2f}x real time over {wall:.1f} s, longest gap "
          f"between messages {gap * 1000:.0f} ms")


async def test_push_target_that_stops_reading_never_blocks_the_publisher():
    """A target that accepts the publish and then reads nothing: its queue drops to key frames, counted; the
    publisher and a local player get everything."""
    release = asyncio.Event()
    writers = []

    async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        session = ServerSession()
        while session.publishing is None or not session.publish_accepted:
            data = await reader.read(65536)
            if not data:
                return
            out = session.feed(data)
            writer.write(out.send)
            if session.publishing is not None and not session.publish_accepted:
                writer.write(session.accept_publish())
        await release.wait()    # never read again

    target = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    relay = Relay()
    config = RtmpConfig(applications={"live": ApplicationConfig(
        live=False, push=(f"rtmp://127.0.0.1:{target.sockets[0].getsockname()[1]}/in",))})
    push = PushRelay(relay, config, queue_bytes=256 * 1024)
    relay.add_tap(push)
    server = await serve_rtmp("127.0.0.1", 0, relay)
    try:
        pub = await RtmpClient.connect(f"rtmp://127.0.0.1:{server.port}/live", timeout=T)
        await pub.publish("s")
        await wait_until(lambda: any(s["connected"] for s in push.stats().values()), "the push connection")
        player, got, task = await start_player(f"rtmp://127.0.0.1:{server.port}/live", "s")
        frame = bytes(64 * 1024)
        n = 200     # 12.5 MB: more than the kernel buffers between the push and the stalled target
        t0 = time.monotonic()
        for i in range(n):
            await asyncio.wait_for(pub.send(Message(6, 40 * i, MSG_VIDEO, 1,
                                                    bytes([0x17 if i % 10 == 0 else 0x27, 1, 0, 0, 0]) + frame)), T)
        sent_in = time.monotonic() - t0
        await wait_until(lambda: relay.stats()["live/s"]["messages_in"] == n, "the relay to get every message")
        stats = next(iter(push.stats().values()))
        await pub.close()
        await asyncio.wait_for(task, T)
        await player.close()
    finally:
        await server.close()
        await push.close()
        release.set()
        for w in writers:
            w.close()
        target.close()
        await target.wait_closed()
    print(f"\nstalled target: publisher sent {n} x 64 KB in {sent_in * 1000:.0f} ms "
          f"({n * 64 / 1024 / sent_in:.0f} MB/s); push queue dropped {stats['drops']} messages, "
          f"sent {stats['bytes'] / 1e6:.1f} MB")
    assert stats["drops"] > 0
    assert len(frames(got, MSG_VIDEO)) == n     # the local player lost nothing


# ------------------------------------------------------------------------------------------------------- pull
async def test_pull_from_nginx_gives_the_same_frames_as_nginx_itself(tmp_path, source):
    path, source_packets = source
    with NginxRtmp(tmp_path / "nginx") as nginx:
        config = RtmpConfig(applications={"edge": ApplicationConfig(live=False, pull=nginx.url("live"))})
        (tmp_path / "store").mkdir()
        ingest = await start_ingest(Settings(store=tmp_path / "store"), config, "127.0.0.1", 0)
        direct = via_gateway = None
        try:
            direct, got_direct, task_direct = await start_player(nginx.url("live"), "test")
            pub = ffmpeg_publish(nginx.url("live", "test"), path, 5)
            # join the gateway mid-stream, after a second of video reached nginx's own player
            await wait_until(lambda: len(frames(got_direct, MSG_VIDEO)) > 1 and
                             frames(got_direct, MSG_VIDEO)[-1][0] - frames(got_direct, MSG_VIDEO)[0][0] >= 1000,
                             "a second of video on nginx")
            t0 = time.monotonic()
            via_gateway, got_gateway, task_gateway = await start_player(f"rtmp://127.0.0.1:{ingest.port}/edge",
                                                                        "test")
            await wait_until(lambda: any(m.message_type_id == MSG_VIDEO for m in got_gateway), "pulled video")
            first_video_after = time.monotonic() - t0
            pulls = ingest.server.pull.stats()
            await asyncio.wait_for(asyncio.gather(task_direct, task_gateway), T)
            code, err = await finish(pub)
            await wait_until(lambda: not ingest.server.pull.stats() and not ingest.relay.is_published("edge/test"),
                             "the pull to end with the upstream")
        finally:
            for c in (direct, via_gateway):
                if c is not None:
                    await c.close()
            await ingest.close()
    assert code == 0, err
    assert pulls["edge/test"]["connected"]
    for kind in (MSG_VIDEO, MSG_AUDIO):
        joined = assert_tail(frames(got_gateway, kind), frames(got_direct, kind), f"pulled {kind.name}")
        assert joined > 0, "the gateway player should have joined mid-stream"
    assert headers(got_gateway) == headers(got_direct)
    assert_from_source(got_gateway, source_packets)
    first_video = next(m for m in got_gateway if m.message_type_id == MSG_VIDEO and not classify_media(m)[1])
    assert classify_media(first_video)[0]
    print(f"\npull: {len(frames(got_gateway, MSG_VIDEO))} of {len(frames(got_direct, MSG_VIDEO))} video frames "
          f"(joined mid-stream), identical to nginx's own player; first pulled video {first_video_after * 1000:.0f} "
          f"ms after the play request")


async def test_pull_stream_not_found_and_grace_period_after_last_player(tmp_path):
    with NginxRtmp(tmp_path / "nginx") as nginx:
        relay = Relay()
        config = RtmpConfig(applications={"strict": ApplicationConfig(live=False, pull=nginx.url("strict")),
                                          "edge": ApplicationConfig(live=False, pull=nginx.url("live"))})
        puller = Puller(relay, config, grace=0.5, not_found_ttl=2.0)
        server = await serve_rtmp("127.0.0.1", 0, relay, pull=puller)
        url = f"rtmp://127.0.0.1:{server.port}"
        try:
            # nginx (idle_streams off) says StreamNotFound: the first player hears the end, the next one NotFound
            first = await RtmpClient.connect(f"{url}/strict", timeout=T)
            await first.play("missing")
            with pytest.raises(EOFError, match="StreamEOF|UnpublishNotify"):
                await asyncio.wait_for(first.read_message(), T)
            second = await RtmpClient.connect(f"{url}/strict", timeout=T)
            with pytest.raises(RtmpError, match="NetStream.Play.StreamNotFound"):
                await second.play("missing")
            # nobody publishes edge/idle upstream, but nginx lets us wait for it; the pull lives while a player does
            player = await RtmpClient.connect(f"{url}/edge", timeout=T)
            await player.play("idle")
            await wait_until(lambda: puller.stats().get("edge/idle", {}).get("connected"), "the upstream play")
            await asyncio.sleep(1.0)    # twice the grace period: still there, a player is watching
            assert "edge/idle" in puller.stats()
            await player.close()
            left = time.monotonic()
            await wait_until(lambda: not puller.stats() and "edge/idle" not in relay.stats(), "the pull to end", 5)
            ended_after = time.monotonic() - left
            for c in (first, second):
                await c.close()
        finally:
            await server.close()
            await puller.close()
    print(f"\npull ended {ended_after * 1000:.0f} ms after the last player left (grace 500 ms)")
    assert ended_after >= 0.5


def test_push_target_queue_rewrites_metadata_and_stops_under_batched_fan_out():
    """With the relay's batches (gateway serve's default), a push target's queue still gets every message through
    its own ``push``: onMetaData sent after it joined becomes @setDataFrame, and a stopped queue takes nothing."""
    from rtmp.chunk import ChunkReader
    from rtmp.push import _TargetQueue

    due: list = []
    relay = Relay(batch=due.append)
    assert relay.publish("live/a", "pub")
    queue = _TargetQueue()
    assert relay.subscribe("live/a", queue)
    relay.metadata("live/a", Message(5, 0, MSG_DATA_AMF0, 1, amf0.encode_all("onMetaData", {"width": 160.0})))
    relay.media("live/a", Message(6, 0, MSG_VIDEO, 1, bytes([0x17, 1, 0, 0, 0]) + bytes(20)), keyframe=True,
                sequence_header=False)
    due.pop()()
    got = ChunkReader(queue.chunk_size).feed(b"".join(queue.pop_all()))
    assert amf0.decode_all(got[0].payload)[:2] == ["@setDataFrame", "onMetaData"]
    assert [m.message_type_id for m in got] == [MSG_DATA_AMF0, MSG_VIDEO]
    queue.stopped = True
    relay.media("live/a", Message(6, 40, MSG_VIDEO, 1, bytes([0x27, 1, 0, 0, 0]) + bytes(20)), keyframe=False,
                sequence_header=False)
    due.pop()()
    assert queue.pop_all() == []
