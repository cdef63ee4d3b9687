"""ServerSession driven by scripted client bytes (ClientHandshake + ChunkWriter + AMF0), as ffmpeg and OBS send them."""
from __future__ import annotations

import pytest

from packagers.codecs import amf0
from rtmp.chunk import ChunkReader, ChunkWriter
from rtmp.errors import RtmpError
from rtmp.handshake import ClientHandshake
from rtmp.messages import (MSG_AUDIO, MSG_COMMAND_AMF0, MSG_DATA_AMF0, MSG_SET_CHUNK_SIZE, MSG_USER_CONTROL,
                           MSG_VIDEO, MSG_WINDOW_ACK_SIZE, Message, PingRequest, PingResponse, SetBufferLength,
                           SetChunkSize, StreamBegin, UserControl, WindowAcknowledgementSize)
from rtmp.session import (Media, Metadata, Play, Publish, ServerSession, StopPlay, Unpublish, classify_media)

AVC_SEQ = bytes([0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F, 0xFF])
AVC_KEY = bytes([0x17, 1, 0, 0, 0]) + b"\x00\x00\x00\x05\x65abcd"
AVC_INTER = bytes([0x27, 1, 0, 0, 0]) + b"\x00\x00\x00\x05\x41abcd"
AAC_SEQ = bytes([0xAF, 0, 0x12, 0x10])
AAC_RAW = bytes([0xAF, 1]) + b"\x21" * 20


class ScriptedClient:
    """A client built from the tested layers: bytes for a session, and a reader for what the session answers."""

    def __init__(self, chunk_size: int = 128) -> None:
        self.hs = ClientHandshake()
        self.writer = ChunkWriter(chunk_size)
        self.reader = ChunkReader()
        self.tid = 0

    def handshake(self, session: ServerSession) -> None:
        s = session.feed(self.hs.start()).send
        c2 = self.hs.feed(s)
        assert self.hs.done
        out = session.feed(c2)
        assert out.send == b"" and out.events == [] and session.handshake_done

    def command(self, name: str, *args, stream_id: int = 0, obj=None) -> bytes:
        self.tid += 1
        payload = amf0.encode_all(name, float(self.tid), obj, *args)
        return self.writer.write(Message(3, 0, MSG_COMMAND_AMF0, stream_id, payload))

    def set_chunk_size(self, n: int) -> bytes:
        data = self.writer.write(SetChunkSize(n).to_message())
        self.writer.set_chunk_size(n)
        return data

    def connect(self, app: str = "live") -> bytes:
        return self.command("connect", obj={"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0",
                                             "tcUrl": f"rtmp://127.0.0.1/{app}"})

    def media(self, type_id: int, ts: int, payload: bytes, stream_id: int = 1) -> bytes:
        return self.writer.write(Message(4 if type_id == MSG_AUDIO else 6, ts, type_id, stream_id, payload))

    def data(self, *values, stream_id: int = 1) -> bytes:
        return self.writer.write(Message(4, 0, MSG_DATA_AMF0, stream_id, amf0.encode_all(*values)))

    def read(self, data: bytes) -> list[Message]:
        return self.reader.feed(data)


def commands(messages: list[Message]) -> list[list]:
    return [amf0.decode_all(m.payload) for m in messages if m.message_type_id == MSG_COMMAND_AMF0]


def publish_bytes(c: ScriptedClient, name: str = "test") -> bytes:
    return (c.connect() + c.command("releaseStream", name) + c.command("FCPublish", name)
            + c.command("createStream") + c.command("publish", name, "live", stream_id=1))


def test_connect_create_publish_step_by_step():
    s, c = ServerSession(0.0), ScriptedClient()
    c.handshake(s)
    out = s.feed(c.connect())
    msgs = c.read(out.send)
    types = [m.message_type_id for m in msgs]
    assert types[:3] == [MSG_WINDOW_ACK_SIZE, 6, MSG_SET_CHUNK_SIZE]
    assert WindowAcknowledgementSize.parse(msgs[0].payload).size == 2_500_000
    assert SetChunkSize.parse(msgs[2].payload).chunk_size == 4096 == s.chunk_size
    (result,) = commands(msgs)
    assert result[0] == "_result" and result[1] == 1.0
    assert result[3]["code"] == "NetConnection.Connect.Success" and result[3]["objectEncoding"] == 0
    assert "fmsVer" in result[2] and "capabilities" in result[2]
    assert s.app == "live" and out.events == []

    out = s.feed(c.command("createStream"))
    (res,) = commands(c.read(out.send))
    assert res[:2] == ["_result", 2.0] and res[3] == 1.0

    out = s.feed(c.command("publish", "test?key=1", "live", stream_id=1))
    assert out.send == b""
    (ev,) = out.events
    assert ev == Publish("live", "test", 1, "live", "test?key=1") and ev.key == "live/test"
    msgs = c.read(s.accept_publish())
    assert UserControl.parse(msgs[0].payload) == StreamBegin(1)
    (status,) = commands(msgs)
    assert status[0] == "onStatus" and status[3]["code"] == "NetStream.Publish.Start" and msgs[1].message_stream_id == 1


def test_obs_order_set_chunk_size_before_connect_and_fcpublish():
    s, c = ServerSession(0.0), ScriptedClient()
    c.handshake(s)
    data = c.set_chunk_size(4096) + publish_bytes(c)
    out = s.feed(data)
    cmds = commands(c.read(out.send))
    assert [x[0] for x in cmds] == ["_result", "_result", "onFCPublish", "_result"]
    assert [e.key for e in out.events] == ["live/test"]
    # Media after accept: a 6000-byte frame needs the peer's 4096 chunk size to parse.
    s.accept_publish()
    big = bytes([0x17, 1, 0, 0, 0]) + bytes(6000)
    out = s.feed(c.media(MSG_VIDEO, 40, big))
    (ev,) = out.events
    assert isinstance(ev, Media) and ev.message.payload == big and ev.is_keyframe and not ev.is_sequence_header


def test_pipelined_everything_in_one_write_including_media_and_metadata():
    s, c = ServerSession(0.0), ScriptedClient()
    data = c.hs.start()
    s_reply = s.feed(data[:700]).send + s.feed(data[700:]).send
    c2 = c.hs.feed(s_reply)
    stream = (publish_bytes(c)
              + c.data("@setDataFrame", "onMetaData", amf0.EcmaArray(width=160.0, height=90.0))
              + c.media(MSG_VIDEO, 0, AVC_SEQ) + c.media(MSG_AUDIO, 0, AAC_SEQ)
              + c.media(MSG_VIDEO, 0, AVC_KEY) + c.media(MSG_AUDIO, 23, AAC_RAW) + c.media(MSG_VIDEO, 66, AVC_INTER))
    out = s.feed(c2 + stream)
    kinds = [type(e).__name__ for e in out.events]
    assert kinds == ["Publish", "Metadata", "Media", "Media", "Media", "Media", "Media"]
    meta = out.events[1]
    assert isinstance(meta, Metadata)
    assert amf0.decode_all(meta.message.payload) == ["onMetaData", {"width": 160.0, "height": 90.0}]
    flags = [(e.is_keyframe, e.is_sequence_header) for e in out.events[2:]]
    assert flags == [(False, True), (False, True), (True, False), (False, False), (False, False)]
    assert [e.message.timestamp for e in out.events[2:]] == [0, 0, 0, 23, 66]


def test_byte_at_a_time_gives_the_same_events():
    s, c = ServerSession(0.0), ScriptedClient()
    hs = c.hs.start()
    reply = b"".join(s.feed(hs[i:i + 1]).send for i in range(len(hs)))
    c2 = c.hs.feed(reply)
    data = c2 + publish_bytes(c) + c.media(MSG_VIDEO, 0, AVC_KEY)
    events = []
    for i in range(len(data)):
        events += s.feed(data[i:i + 1]).events
    assert [type(e).__name__ for e in events] == ["Publish", "Media"]


def test_play_reject_and_accept_and_unpublish_notify():
    s, c = ServerSession(0.0), ScriptedClient()
    c.handshake(s)
    out = s.feed(c.connect() + c.command("createStream") + c.command("getStreamLength", "x", stream_id=1)
                 + c.command("play", "x", -2000.0, stream_id=1)
                 + c.writer.write(SetBufferLength(1, 3000).to_message()))
    assert out.events == [Play("live", "x", 1, -2000.0, "x")]
    cmds = commands(c.read(out.send))
    assert [x[0] for x in cmds] == ["_result", "_result", "_result"]
    (st,) = commands(c.read(s.reject_play()))
    assert st[3]["code"] == "NetStream.Play.StreamNotFound" and st[3]["level"] == "error"
    with pytest.raises(RtmpError):
        s.accept_play()
    out = s.feed(c.command("play", "x", -2000.0, stream_id=1))
    msgs = c.read(s.accept_play())
    assert UserControl.parse(msgs[0].payload) == StreamBegin(1)
    assert [x[3]["code"] for x in commands(msgs)] == ["NetStream.Play.Reset", "NetStream.Play.Start"]
    media = c.read(s.send_media(Message(6, 1234, MSG_VIDEO, 0, AVC_KEY)))
    assert media == [Message(6, 1234, MSG_VIDEO, 1, AVC_KEY)]
    notify = c.read(s.unpublish_notify())
    assert commands(notify)[0][3]["code"] == "NetStream.Play.UnpublishNotify"
    out = s.feed(c.command("deleteStream", 1.0))
    assert out.events == [StopPlay("live", "x")]


def test_reject_publish_badname_and_unpublish_events():
    s, c = ServerSession(0.0), ScriptedClient()
    c.handshake(s)
    s.feed(publish_bytes(c))
    (st,) = commands(c.read(s.reject_publish("NetStream.Publish.BadName", "busy")))
    assert st[3] == {"level": "error", "code": "NetStream.Publish.BadName", "description": "busy"}
    # After a refusal, media are not reported; a new publish is allowed.
    assert s.feed(c.media(MSG_VIDEO, 0, AVC_KEY)).events == []
    (ev,) = s.feed(c.command("publish", "other", "live", stream_id=1)).events
    assert ev.name == "other"
    s.accept_publish()
    out = s.feed(c.command("FCUnpublish", "other") + c.command("deleteStream", 1.0))
    assert out.events == [Unpublish("live", "other")]


def test_ping_and_acknowledgements():
    s, c = ServerSession(0.0), ScriptedClient()
    c.handshake(s)
    c.read(s.feed(c.connect()).send)
    msgs = c.read(s.feed(c.writer.write(PingRequest(777).to_message())).send)
    assert [UserControl.parse(m.payload) for m in msgs if m.message_type_id == MSG_USER_CONTROL] == [PingResponse(777)]
    # The client asks for an ack every 1000 bytes; after publishing 3000 bytes of media we owe at least one.
    c.read(s.feed(c.writer.write(WindowAcknowledgementSize(1000).to_message()) + c.command("createStream")
                  + c.command("publish", "t", "live", stream_id=1)).send)
    c.read(s.accept_publish())
    acks = []
    for i in range(6):
        acks += [m for m in c.read(s.feed(c.media(MSG_AUDIO, i * 23, AAC_RAW * 25)).send) if m.message_type_id == 3]
    seqs = [int.from_bytes(a.payload, "big") for a in acks]
    assert len(seqs) >= 2 and seqs == sorted(seqs) and 1000 <= seqs[-1] <= s.bytes_in


@pytest.mark.parametrize("bad", [
    b"\x06" + bytes(1536),                      # wrong RTMP version
])
def test_bad_handshake_raises(bad):
    with pytest.raises(RtmpError):
        ServerSession(0.0).feed(bad)


def test_malformed_and_oversized_messages_raise_rtmp_error():
    s, c = ServerSession(0.0, max_message_size=10_000), ScriptedClient()
    c.handshake(s)
    with pytest.raises(RtmpError):
        s.feed(c.command("createStream"))   # before connect
    s, c = ServerSession(0.0, max_message_size=10_000), ScriptedClient()
    c.handshake(s)
    with pytest.raises(RtmpError):
        s.feed(c.writer.write(Message(3, 0, MSG_COMMAND_AMF0, 0, b"\x02\x00\x10conn")))   # truncated AMF0
    s, c = ServerSession(0.0, max_message_size=10_000), ScriptedClient()
    c.handshake(s)
    with pytest.raises(RtmpError):
        s.feed(c.media(MSG_VIDEO, 0, bytes(20_000)))


def test_classify_e_rtmp_video_and_audio():
    def v(payload):
        return classify_media(Message(6, 0, MSG_VIDEO, 1, payload))
    # E-RTMP: IsExHeader | frame type 1 | packet type; fourcc follows
    assert v(bytes([0x80 | 0x10 | 0]) + b"hvc1") == (False, True)        # SequenceStart
    assert v(bytes([0x80 | 0x10 | 1]) + b"hvc1") == (True, False)        # CodedFrames, key
    assert v(bytes([0x80 | 0x20 | 3]) + b"av01") == (False, False)       # CodedFramesX, inter
    assert v(AVC_SEQ) == (False, True) and v(AVC_KEY) == (True, False) and v(AVC_INTER) == (False, False)
    assert classify_media(Message(4, 0, MSG_AUDIO, 1, AAC_SEQ)) == (False, True)
    assert classify_media(Message(4, 0, MSG_AUDIO, 1, bytes([0x90]) + b"Opus")) == (False, True)
    assert classify_media(Message(4, 0, MSG_AUDIO, 1, bytes([0x2F, 0xFF]))) == (False, False)   # mp3


def test_publish_and_its_end_in_one_read_still_get_their_answer():
    """A short publish (or a client that pipelines its teardown) delivers Publish … Unpublish from one feed(); the
    answer to the publish is still owed and must not raise, and the session ends up not publishing."""
    s, c = ServerSession(0.0), ScriptedClient()
    c.handshake(s)
    out = s.feed(publish_bytes(c) + c.media(MSG_VIDEO, 0, AVC_KEY) + c.command("FCUnpublish", "test")
                 + c.command("deleteStream", 1.0))
    publish, media, end = out.events
    assert isinstance(publish, Publish) and isinstance(media, Media) and end == Unpublish("live", "test")
    c.read(out.send)
    (st,) = commands(c.read(s.accept_publish(publish)))[-1:]
    assert st[3]["code"] == "NetStream.Publish.Start"
    assert s.publishing is None and not s.publish_accepted
    with pytest.raises(RtmpError):
        s.accept_publish()      # nothing pending any more
