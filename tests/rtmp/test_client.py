"""rtmp.client.RtmpClient on real sockets: against our RtmpServer (publish → play round trips, refusals), against a
scripted server that sends what real servers send (pings, window sizes, its own chunk size, a rejection), and against
a real nginx-rtmp."""
from __future__ import annotations

import asyncio
import random

import pytest

from packagers.codecs import amf0
from rtmp.chunk import ChunkReader, ChunkWriter
from rtmp.client import RtmpClient, parse_rtmp_url, set_data_frame
from rtmp.errors import RtmpError
from rtmp.handshake import ServerHandshake
from rtmp.messages import (MSG_ACKNOWLEDGEMENT, MSG_AUDIO, MSG_COMMAND_AMF0, MSG_DATA_AMF0, MSG_USER_CONTROL,
                           MSG_VIDEO, MSG_WINDOW_ACK_SIZE, Acknowledgement, LimitType, Message, PingRequest,
                           PingResponse, SetChunkSize, SetPeerBandwidth, StreamBegin, StreamEOF, UserControl,
                           WindowAcknowledgementSize)
from rtmp.relay import Relay
from rtmp.server import serve_rtmp
from tests.rtmp.nginx_rtmp import NginxRtmp, free_port
from tests.rtmp.test_session import AAC_SEQ, AVC_SEQ

T = 10.0    # hang guard for every wait


@pytest.fixture
async def server():
    srv = await serve_rtmp("127.0.0.1", 0, Relay())
    try:
        yield srv
    finally:
        await srv.close()


def media_script(rng: random.Random, base: int) -> list[Message]:
    """A publisher's messages: metadata, sequence headers, a key frame larger than any chunk size, audio and inter
    frames, timestamps from ``base`` (near 2**24 they need the extended timestamp field)."""
    def video(ts: int, key: bool, size: int) -> Message:
        return Message(6, ts, MSG_VIDEO, 1, bytes([0x17 if key else 0x27, 1, 0, 0, 0]) + rng.randbytes(size))

    def audio(ts: int) -> Message:
        return Message(4, ts, MSG_AUDIO, 1, bytes([0xAF, 1]) + rng.randbytes(rng.randrange(50, 400)))

    out = [Message(5, base, MSG_DATA_AMF0, 1, amf0.encode_all("onMetaData", {"width": 64.0, "height": 48.0})),
           Message(6, base, MSG_VIDEO, 1, AVC_SEQ), Message(4, base, MSG_AUDIO, 1, AAC_SEQ)]
    for i in range(40):
        ts = base + 40 * i
        out.append(video(ts, i % 20 == 0, 10_000 if i % 20 == 0 else rng.randrange(100, 3000)))
        out.append(audio(ts + 7))
    return out


def triples(messages: list[Message]) -> list[tuple[int, int, bytes]]:
    return [(m.message_type_id, m.timestamp, m.payload) for m in messages]


async def read_until_eof(player: RtmpClient) -> list[Message]:
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(player.read_message(), T))
        except EOFError:
            return got


@pytest.mark.parametrize("chunk_size", [128, 4096])
@pytest.mark.parametrize("base", [0, 0xFFFFFF - 500])
async def test_publish_play_round_trip_exact_payloads_and_timestamps(server, chunk_size, base):
    script = media_script(random.Random(chunk_size + base), base)
    pub = await RtmpClient.connect(f"rtmp://127.0.0.1:{server.port}/live", chunk_size=chunk_size, timeout=T)
    await pub.publish("rt")
    assert pub.stream_id == 1 and pub.chunk_size == chunk_size
    first, rest = script[:3 + 2 * 25], script[3 + 2 * 25:]     # join after the second key frame (#20)
    for m in first:
        await pub.send(m)
    while server.relay.stats()["live/rt"]["messages_in"] < len(first):
        await asyncio.sleep(0.01)

    player = await RtmpClient.connect(f"rtmp://127.0.0.1:{server.port}/live/ignored", chunk_size=chunk_size,
                                      timeout=T)
    await player.play("rt")
    for m in rest:
        await pub.send(m)
    await pub.close()
    got = await read_until_eof(player)
    await player.close()

    # The late joiner: metadata and sequence headers, then the GOP from key frame #20, then everything after it.
    key20 = 3 + 2 * 20
    expected = script[:3] + script[key20:]
    assert triples(got) == triples(expected)
    assert got[0].payload == script[0].payload      # "onMetaData", the @setDataFrame the client added is gone
    assert max(len(m.payload) for m in got) > 4096


async def test_busy_name_is_badname_and_missing_stream_is_stream_not_found(server):
    url = f"rtmp://127.0.0.1:{server.port}/live"
    first = await RtmpClient.connect(url, timeout=T)
    await first.publish("busy")
    second = await RtmpClient.connect(url, timeout=T)
    with pytest.raises(RtmpError, match="NetStream.Publish.BadName"):
        await second.publish("busy")
    nobody = await RtmpClient.connect(url, timeout=T)
    with pytest.raises(RtmpError, match="NetStream.Play.StreamNotFound"):
        await nobody.play("missing")
    # the first publisher is unaffected
    await first.send(Message(6, 0, MSG_VIDEO, 1, AVC_SEQ))
    for c in (first, second, nobody):
        await c.close()
    assert server.relay.stats() == {}


async def test_connection_refused_and_bad_url():
    with pytest.raises(RtmpError, match="not rtmp://"):
        await RtmpClient.connect("http://127.0.0.1/live")
    with pytest.raises(OSError):    # nobody listens there
        await RtmpClient.connect(f"rtmp://127.0.0.1:{free_port()}/live", timeout=T)


def test_parse_rtmp_url_and_set_data_frame():
    u = parse_rtmp_url("rtmp://example.com/live/cam1?key=abc")
    assert (u.host, u.port, u.app, u.stream, u.tc_url) == ("example.com", 1935, "live", "cam1?key=abc",
                                                          "rtmp://example.com/live")
    u = parse_rtmp_url("rtmp://[::1]:1936/app")
    assert (u.host, u.port, u.app, u.stream, u.tc_url) == ("::1", 1936, "app", None, "rtmp://[::1]:1936/app")
    assert parse_rtmp_url("rtmp://h/app?token=1").app == "app?token=1"
    for bad in ("rtmp://h/", "rtmp:///app", "rtmps://h/app"):
        with pytest.raises(RtmpError):
            parse_rtmp_url(bad)
    meta = amf0.encode_all("onMetaData", {"width": 1.0})
    assert amf0.decode_all(set_data_frame(meta)) == ["@setDataFrame", "onMetaData", {"width": 1.0}]
    assert set_data_frame(amf0.encode_all("onTextData", {})) == amf0.encode_all("onTextData", {})


# ---------------------------------------------------------------------------------------------- scripted server
class ScriptedServer:
    """A server driven by the test over a real socket (ServerHandshake + ChunkReader/ChunkWriter), recording every
    message the client sends; ``handler(peer)`` scripts one connection."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.server: asyncio.Server | None = None
        self.done: asyncio.Future | None = None
        self.tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> ScriptedServer:
        self.done = asyncio.get_running_loop().create_future()
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        for task in self.tasks:     # handlers still running (a server that never answers) end with the test
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()
        if self.done.done() and not self.done.cancelled():
            self.done.exception()   # retrieved: a failure the test did not look at is not logged at exit

    async def _accept(self, reader, writer) -> None:
        self.tasks.add(asyncio.current_task())
        peer = Peer(reader, writer)
        try:
            await peer.handshake()
            await self.handler(peer)
            if not self.done.done():
                self.done.set_result(peer)
        except Exception as e:
            if not self.done.done():
                self.done.set_exception(e)
        finally:
            writer.close()


class Peer:
    def __init__(self, reader, writer) -> None:
        self.r, self.w = reader, writer
        self.chunks_in = ChunkReader()
        self.out = ChunkWriter()
        self.received: list[Message] = []
        self.pending: list[Message] = []
        self.sent_bytes = 0    # after the handshake

    async def handshake(self) -> None:
        hs = ServerHandshake()
        while not hs.done:
            data = await asyncio.wait_for(self.r.read(65536), T)
            assert data
            self.w.write(hs.feed(data))
        self.pending += self.chunks_in.feed(hs.leftover)

    async def next(self, type_id: int | None = None) -> Message:
        while True:
            while not self.pending:
                data = await asyncio.wait_for(self.r.read(65536), T)
                if not data:
                    raise EOFError("client closed")
                self.pending += self.chunks_in.feed(data)
            m = self.pending.pop(0)
            self.received.append(m)
            if type_id is None or m.message_type_id == type_id:
                return m

    async def find(self, predicate) -> Message:
        """The first message received so far, or from now on, that satisfies ``predicate``."""
        seen = 0
        while True:
            for m in self.received[seen:]:
                if predicate(m):
                    return m
            seen = len(self.received)
            await self.next()

    async def command(self) -> list:
        return amf0.decode_all((await self.next(MSG_COMMAND_AMF0)).payload)

    def send(self, message: Message) -> None:
        data = self.out.write(message)
        self.sent_bytes += len(data)
        self.w.write(data)

    def reply(self, *values, stream_id: int = 0) -> None:
        self.send(Message(3, 0, MSG_COMMAND_AMF0, stream_id, amf0.encode_all(*values)))


async def test_scripted_server_ping_window_ack_peer_bandwidth_and_server_chunk_size():
    async def handler(peer: Peer) -> None:
        connect = await peer.command()
        assert connect[0] == "connect" and connect[2]["app"] == "app" and connect[2]["tcUrl"].endswith("/app")
        peer.send(WindowAcknowledgementSize(1000).to_message())
        peer.send(SetPeerBandwidth(5000, LimitType.DYNAMIC).to_message())
        peer.send(SetChunkSize(100).to_message())
        peer.out.set_chunk_size(100)
        peer.send(PingRequest(123456).to_message())
        peer.reply("_result", connect[1], {"fmsVer": "test"},
                   {"level": "status", "code": "NetConnection.Connect.Success", "description": "x" * 300})
        create = await peer.command()
        assert create[0] == "createStream"
        peer.reply("_result", create[1], None, 7.0)
        play = await peer.command()
        assert play[0] == "play" and play[3:5] == ["cam", -2000.0]
        peer.send(StreamBegin(7).to_message())
        peer.reply("onStatus", 0.0, None, {"level": "status", "code": "NetStream.Play.Start"}, stream_id=7)
        peer.send(Message(6, 5, MSG_VIDEO, 7, big))
        pong = await peer.find(lambda m: m.message_type_id == MSG_USER_CONTROL
                               and isinstance(UserControl.parse(m.payload), PingResponse))
        assert UserControl.parse(pong.payload) == PingResponse(123456)
        ack = await peer.find(lambda m: m.message_type_id == MSG_ACKNOWLEDGEMENT)
        peer.ack = Acknowledgement.parse(ack.payload).sequence_number
        peer.send(StreamEOF(7).to_message())

    big = bytes([0x17, 1, 0, 0, 0]) + random.Random(1).randbytes(5000)
    async with ScriptedServer(handler) as srv:
        client = await RtmpClient.connect(f"rtmp://127.0.0.1:{srv.port}/app", chunk_size=128, timeout=T)
        await client.play("cam")
        assert client.stream_id == 7
        m = await asyncio.wait_for(client.read_message(), T)
        assert (m.message_type_id, m.timestamp, m.payload) == (MSG_VIDEO, 5, big)    # read with the server's 100
        peer = await asyncio.wait_for(srv.done, T)
        with pytest.raises(EOFError, match="StreamEOF"):
            await asyncio.wait_for(client.read_message(), T)
        await client.close()
    window = [WindowAcknowledgementSize.parse(m.payload).size for m in peer.received
              if m.message_type_id == MSG_WINDOW_ACK_SIZE]
    assert window == [5000]     # the answer to Set Peer Bandwidth
    assert 1000 <= peer.ack <= peer.sent_bytes


async def test_scripted_server_rejects_connect():
    async def handler(peer: Peer) -> None:
        connect = await peer.command()
        peer.reply("_error", connect[1], None, {"level": "error", "code": "NetConnection.Connect.Rejected",
                                                "description": "go away"})
        await peer.w.drain()
        with pytest.raises(EOFError):   # the client hangs up
            await peer.next()

    async with ScriptedServer(handler) as srv:
        with pytest.raises(RtmpError, match="NetConnection.Connect.Rejected: go away"):
            await RtmpClient.connect(f"rtmp://127.0.0.1:{srv.port}/app", timeout=T)
        await asyncio.wait_for(srv.done, T)


async def test_scripted_server_that_never_answers_times_out():
    async def handler(peer: Peer) -> None:
        await peer.command()
        await asyncio.sleep(3)

    async with ScriptedServer(handler) as srv:
        with pytest.raises(RtmpError, match="no answer within 0.3 s"):
            await RtmpClient.connect(f"rtmp://127.0.0.1:{srv.port}/app", timeout=0.3)


# ---------------------------------------------------------------------------------------------- real nginx-rtmp
async def test_against_nginx_rtmp_publish_play_and_metadata(tmp_path):
    with NginxRtmp(tmp_path / "nginx") as nginx:
        player = await RtmpClient.connect(nginx.url("live"), timeout=T)
        await player.play("s")      # idle_streams on: Play.Start before anyone publishes
        pub = await RtmpClient.connect(nginx.url("live"), timeout=T)
        await pub.publish("s")
        script = media_script(random.Random(5), 1000)
        for m in script:
            await pub.send(m)
        await pub.close()
        got = await read_until_eof(player)       # nginx by default ends a player with StreamEOF only
        await player.close()
        strict = await RtmpClient.connect(nginx.url("strict"), timeout=T)
        with pytest.raises(RtmpError, match="NetStream.Play.StreamNotFound"):
            await strict.play("nothing")
        await strict.close()
        with pytest.raises(RtmpError, match="connection closed"):   # nginx hangs up on unknown applications
            await RtmpClient.connect(nginx.url("nosuchapp"), timeout=T)
    # nginx rebuilds onMetaData from what it parsed out of our @setDataFrame onMetaData
    meta = amf0.decode_all(got[0].payload)
    assert meta[0] == "onMetaData" and (meta[1]["width"], meta[1]["height"]) == (64.0, 48.0)
    # nginx holds a sequence header back until the first frame of its kind: compare audio and video separately
    for kind in (MSG_AUDIO, MSG_VIDEO):
        assert [x for x in triples(got) if x[0] == kind] == [x for x in triples(script) if x[0] == kind]
