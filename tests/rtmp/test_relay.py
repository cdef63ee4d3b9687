"""Relay: GOP cache for late joiners, bounded queues that drop to the next key frame, one serialisation per chunk size."""
from __future__ import annotations

from packagers.codecs import amf0
from rtmp.chunk import ChunkReader
from rtmp.messages import MSG_AUDIO, MSG_DATA_AMF0, MSG_VIDEO, Message
from rtmp.relay import Relay, Subscriber
from rtmp.session import classify_media

AVC_SEQ = bytes([0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F, 0xFF])
AAC_SEQ = bytes([0xAF, 0, 0x12, 0x10])


def key_frame(i: int, size: int = 50) -> bytes:
    return bytes([0x17, 1, 0, 0, 0]) + i.to_bytes(4, "big") + bytes(size)


def inter_frame(i: int, size: int = 50) -> bytes:
    return bytes([0x27, 1, 0, 0, 0]) + i.to_bytes(4, "big") + bytes(size)


def send(relay: Relay, key: str, type_id: int, ts: int, payload: bytes) -> None:
    m = Message(6, ts, type_id, 1, payload)
    k, seq = classify_media(m)
    relay.media(key, m, keyframe=k, sequence_header=seq)


def received(sub: Subscriber, reader: ChunkReader | None = None) -> list[Message]:
    reader = reader or ChunkReader(sub.chunk_size)
    return reader.feed(b"".join(sub.pop_all()))


def start(relay: Relay, key: str = "live/a") -> None:
    assert relay.publish(key, "pub")
    relay.metadata(key, Message(5, 0, MSG_DATA_AMF0, 1, amf0.encode_all("onMetaData", {"width": 160.0})))
    send(relay, key, MSG_VIDEO, 0, AVC_SEQ)
    send(relay, key, MSG_AUDIO, 0, AAC_SEQ)


def test_duplicate_publish_refused_and_unknown_stream_not_found():
    r = Relay()
    assert r.publish("live/a", "p1")
    assert not r.publish("live/a", "p2")
    assert not r.subscribe("live/none", Subscriber())
    r.unpublish("live/a", "p2")                 # not the owner: no effect
    assert not r.publish("live/a", "p3")
    r.unpublish("live/a", "p1")
    assert r.publish("live/a", "p3")


def test_late_joiner_gets_metadata_sequence_headers_then_current_gop():
    r = Relay()
    start(r)
    for i in range(30):                       # two GOPs of 15 frames, with audio in between
        send(r, "live/a", MSG_VIDEO, i * 66, key_frame(i) if i % 15 == 0 else inter_frame(i))
        send(r, "live/a", MSG_AUDIO, i * 66 + 10, bytes([0xAF, 1]) + bytes(10))
    sub = Subscriber(chunk_size=4096, stream_id=1)
    assert r.subscribe("live/a", sub)
    msgs = received(sub)
    assert [m.message_type_id for m in msgs[:3]] == [MSG_DATA_AMF0, MSG_VIDEO, MSG_AUDIO]
    assert msgs[1].payload == AVC_SEQ and msgs[2].payload == AAC_SEQ
    first_video = msgs[3]
    assert first_video.payload == key_frame(15) and first_video.timestamp == 15 * 66
    assert len(msgs) == 3 + 30                 # frames 15..29 and their audio
    assert all(m.message_stream_id == 1 for m in msgs)
    # Live messages follow.
    send(r, "live/a", MSG_VIDEO, 30 * 66, key_frame(30))
    assert [m.payload for m in received(sub)] == [key_frame(30)]


def test_one_serialisation_per_chunk_size_shared_between_subscribers():
    r = Relay()
    start(r)
    a, b, c = Subscriber(chunk_size=4096), Subscriber(chunk_size=4096), Subscriber(chunk_size=128)
    for s in (a, b, c):
        assert r.subscribe("live/a", s)
        s.pop_all()
    send(r, "live/a", MSG_VIDEO, 0, key_frame(0, 1000))
    (da,), (db,), (dc,) = a.pop_all(), b.pop_all(), c.pop_all()
    assert da is db                           # the very same bytes object
    assert dc != da
    assert ChunkReader(128).feed(dc)[0].payload == ChunkReader(4096).feed(da)[0].payload == key_frame(0, 1000)


def test_slow_subscriber_drops_until_next_key_frame_without_blocking_others():
    r = Relay()
    start(r)
    slow = Subscriber(max_queue_bytes=1500)
    fast = Subscriber()
    assert r.subscribe("live/a", slow) and r.subscribe("live/a", fast)
    fast_reader, slow_reader = ChunkReader(4096), ChunkReader(4096)
    received(fast, fast_reader)
    received(slow, slow_reader)
    sent = []
    for i in range(40):
        payload = key_frame(i, 200) if i % 10 == 0 else inter_frame(i, 200)
        send(r, "live/a", MSG_VIDEO, i * 40, payload)
        sent.append(payload)
        assert len(received(fast, fast_reader)) == 1     # the fast one gets everything at once
        if i == 25:                                      # the slow one drains once, mid-GOP
            got = [m.payload for m in received(slow, slow_reader)]
            assert got == sent[:len(got)] and 0 < len(got) < 10
    assert slow.dropped > 0 and fast.dropped == 0
    got = [m.payload for m in received(slow, slow_reader)]
    # After the drain at frame 25 it resumed exactly at the key frame 30, not at frame 26.
    assert got[0] == key_frame(30, 200)
    assert r.stats()["live/a"]["drops"] == slow.dropped


def test_unpublish_notifies_subscribers_and_stats():
    r = Relay(clock=iter(range(100)).__next__)
    start(r)
    notified = []
    sub = Subscriber(on_unpublish=lambda: notified.append(True))
    assert r.subscribe("live/a", sub)
    st = r.stats()["live/a"]
    assert st["publishing"] and st["subscribers"] == 1 and st["video_codec"] == "avc" and st["audio_codec"] == "aac"
    assert st["bytes_in"] > 0 and st["bytes_out"] > 0
    r.unpublish("live/a", "pub")
    assert notified == [True]
    assert not r.subscribe("live/a", Subscriber())
    r.unsubscribe("live/a", sub)
    assert r.stats() == {}


def test_gop_cache_is_bounded_in_bytes():
    r = Relay(gop_cache_bytes=1000)
    start(r)
    send(r, "live/a", MSG_VIDEO, 0, key_frame(0, 300))
    for i in range(1, 10):
        send(r, "live/a", MSG_VIDEO, i * 40, inter_frame(i, 300))
    assert r.stats()["live/a"]["gop_cache_bytes"] <= 1000
    sub = Subscriber()
    r.subscribe("live/a", sub)
    msgs = received(sub)
    assert len(msgs) == 3                        # only metadata + headers: the GOP overflowed, so none is served
    send(r, "live/a", MSG_VIDEO, 400, inter_frame(10))
    assert received(sub) == []                   # waits for a key frame
    send(r, "live/a", MSG_VIDEO, 440, key_frame(11))
    assert [m.payload for m in received(sub)] == [key_frame(11)]
