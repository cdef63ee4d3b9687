"""Fuzzing what reads untrusted bytes, beyond the per-module fuzz tests (AMF0 decode:
tests/packagers/codecs/test_amf0.py; test_chunk.py: ChunkReader): the handshakes, and a whole `ServerSession` —
arbitrary bytes after a valid handshake, after connect and after publish, and well-framed messages of any type with
arbitrary bodies. The only exception allowed out is RtmpError (the server closes that connection), every reply parses,
and whatever reaches the relay (metadata, media) is handled without error."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from packagers.codecs import amf0
from rtmp.chunk import ChunkReader
from rtmp.errors import RtmpError
from rtmp.handshake import HANDSHAKE_SIZE, ClientHandshake, ServerHandshake
from rtmp.messages import Message
from rtmp.relay import Relay, Subscriber
from rtmp.session import Media, Metadata, Publish, ServerSession, classify_media
from tests.rtmp.test_session import ScriptedClient, publish_bytes

FUZZ = settings(max_examples=400)


def pieces(data: bytes, step: int) -> list[bytes]:
    return [data[i:i + step] for i in range(0, len(data), step)] or [b""]


# ------------------------------------------------------------------------------------------------------ handshake

@FUZZ
@given(st.binary(max_size=4000), st.integers(1, 2000))
def test_server_handshake_arbitrary_bytes_only_rtmp_error(data, step):
    hs = ServerHandshake()
    try:
        for piece in pieces(data, step):
            out = hs.feed(piece)
            assert out in (b"",) or len(out) == 1 + 2 * HANDSHAKE_SIZE
    except RtmpError as e:
        assert str(e).startswith("ServerHandshake.feed")


@FUZZ
@given(st.binary(max_size=4000), st.integers(1, 2000))
def test_client_handshake_arbitrary_bytes_only_rtmp_error(data, step):
    hs = ClientHandshake()
    hs.start()
    try:
        for piece in pieces(data, step):
            out = hs.feed(piece)
            assert out == b"" or len(out) == HANDSHAKE_SIZE
    except RtmpError as e:
        assert str(e).startswith("ClientHandshake.feed")


# ------------------------------------------------------------------------------------------------------ session

def session_after(stage: str) -> tuple[ServerSession, ScriptedClient]:
    s, c = ServerSession(0.0), ScriptedClient()
    c.handshake(s)
    if stage == "connect":
        s.feed(c.connect())
    elif stage == "publish":
        out = s.feed(publish_bytes(c))
        assert isinstance(out.events[-1], Publish)
        s.accept_publish()
    return s, c


class RelaySink:
    """Takes the session's events the way rtmp.server does (publish, metadata, media) into a real Relay with a
    subscriber, so fuzzed media and metadata also exercise classification, caching, fan-out and stats."""

    def __init__(self) -> None:
        self.relay = Relay(gop_cache_bytes=64 * 1024)
        self.relay.publish("live/test", self)
        self.sub = Subscriber(max_queue_bytes=32 * 1024)
        self.relay.subscribe("live/test", self.sub)

    def take(self, events: list) -> None:
        for e in events:
            if isinstance(e, Media):
                self.relay.media("live/test", e.message, keyframe=e.is_keyframe, sequence_header=e.is_sequence_header)
            elif isinstance(e, Metadata):
                self.relay.metadata("live/test", e.message)
        ChunkReader(self.sub.chunk_size).feed(b"".join(self.sub.pop_all()))   # what a player gets still parses
        self.relay.stats()


def feed_checked(s: ServerSession, data: bytes, step: int, sink: RelaySink | None = None) -> None:
    replies = ChunkReader()
    try:
        for piece in pieces(data, step):
            out = s.feed(piece)
            replies.feed(out.send)      # a reply the client cannot parse would be our bug
            if sink is not None:
                sink.take(out.events)
    except RtmpError as e:
        assert "\n" not in str(e)


@FUZZ
@given(stage=st.sampled_from(["handshake", "connect", "publish"]), data=st.binary(max_size=3000),
       step=st.integers(1, 1500))
def test_session_arbitrary_bytes_after_each_stage_only_rtmp_error(stage, data, step):
    s, _ = session_after(stage)
    feed_checked(s, data, step, RelaySink() if stage == "publish" else None)


amf_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8)
command_names = st.sampled_from(["connect", "createStream", "releaseStream", "FCPublish", "publish", "play",
                                 "FCUnpublish", "deleteStream", "closeStream", "getStreamLength", "_checkbw", "pause"])
bodies = st.one_of(
    st.binary(max_size=300),
    st.tuples(command_names, st.lists(amf_values, max_size=4)).map(
        lambda t: amf0.encode_all(t[0], 2.0, *t[1])),
    st.tuples(st.sampled_from(["@setDataFrame", "onMetaData"]), st.lists(amf_values, max_size=3)).map(
        lambda t: amf0.encode_all(t[0], *t[1])),
    st.binary(min_size=1, max_size=40).map(lambda b: bytes([0x17, 0]) + b),     # AVC sequence-header-like
    st.binary(min_size=1, max_size=40).map(lambda b: bytes([0x80 | 0x10]) + b"hvc1" + b),   # E-RTMP video
    st.binary(min_size=1, max_size=40).map(lambda b: bytes([0x90]) + b"Opus" + b),          # E-RTMP audio
)
messages = st.lists(st.tuples(st.integers(1, 22), st.integers(0, 2**32 - 1), st.integers(0, 3), bodies),
                    min_size=1, max_size=12)


@FUZZ
@given(stage=st.sampled_from(["handshake", "connect", "publish"]), msgs=messages, step=st.integers(1, 700))
def test_session_well_framed_messages_of_any_type_only_rtmp_error(stage, msgs, step):
    """Valid chunking, so the fuzz reaches command handling, control parsing, metadata and media classification."""
    s, c = session_after(stage)
    w = c.writer
    wire = b"".join(w.write(Message(3 + (i % 5), ts, type_id, stream_id, body))
                    for i, (type_id, ts, stream_id, body) in enumerate(msgs))
    feed_checked(s, wire, step, RelaySink() if stage == "publish" else None)


@given(st.binary(max_size=64), st.sampled_from([8, 9, 18]))
def test_classify_media_never_raises(payload, type_id):
    key, seq = classify_media(Message(4, 0, type_id, 1, payload))
    assert isinstance(key, bool) and isinstance(seq, bool)

