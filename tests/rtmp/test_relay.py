"""Relay: GOP cache for late joiners, bounded queues that drop to the next key frame, one serialisation per chunk size."""
from __future__ import annotations

import pytest

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


class ManualBatches:
    """Relay(batch=...) with batches run when the test says (the server passes loop.call_later)."""

    def __init__(self) -> None:
        self.due: list = []

    def __call__(self, flush) -> None:
        self.due.append(flush)

    def run(self) -> None:
        due, self.due = self.due, []
        for flush in due:
            flush()


def slow_and_fast(r: Relay) -> tuple[Subscriber, ChunkReader, Subscriber, ChunkReader]:
    """A started stream with a player whose queue holds ~7 frames and one that keeps up, their joins drained."""
    start(r)
    slow, fast = Subscriber(max_queue_bytes=1500), Subscriber()
    assert r.subscribe("live/a", slow) and r.subscribe("live/a", fast)
    slow_reader, fast_reader = ChunkReader(4096), ChunkReader(4096)
    received(slow, slow_reader)
    received(fast, fast_reader)
    return slow, slow_reader, fast, fast_reader


def gop_frame(i: int) -> bytes:
    return key_frame(i, 200) if i % 10 == 0 else inter_frame(i, 200)


@pytest.mark.parametrize("batched", [False, True])
def test_slow_subscriber_drops_until_next_key_frame_without_blocking_others(batched):
    """Unbatched, and with the relay's batches (every 3 frames): the same drop rules."""
    batches = ManualBatches()
    r = Relay(batch=batches if batched else None)
    slow, slow_reader, fast, fast_reader = slow_and_fast(r)
    sent, fast_got = [], []
    for i in range(40):
        payload = gop_frame(i)
        send(r, "live/a", MSG_VIDEO, i * 40, payload)
        sent.append(payload)
        if i % 3 == 2:
            batches.run()
        fast_got += [m.payload for m in received(fast, fast_reader)]
        if not batched:
            assert len(fast_got) == i + 1  # the fast one gets everything at once
        if i == 25:  # the slow one drains once, mid-GOP
            got = [m.payload for m in received(slow, slow_reader)]
            assert got == sent[:len(got)] and 0 < len(got) < 10
    batches.run()
    fast_got += [m.payload for m in received(fast, fast_reader)]
    assert fast_got == sent and slow.dropped > 0 and fast.dropped == 0
    got = [m.payload for m in received(slow, slow_reader)]
    # After the drain at frame 25 it resumed exactly at the key frame 30 (not at frame 26), then in order until its
    # queue filled up again
    assert got[0] == key_frame(30, 200) and got == sent[30 : 30 + len(got)]
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


def media_script(n: int = 60) -> list[tuple[int, int, bytes]]:
    """A GOP-structured stream: video every 33 ms (key frame every 20), audio every 23 ms, sizes that vary."""
    out = []
    for i in range(n):
        out.append((MSG_VIDEO, i * 33, key_frame(i, 300 + 37 * i) if i % 20 == 0 else inter_frame(i, 100 + 11 * i)))
        out.append((MSG_AUDIO, i * 23, bytes([0xAF, 1]) + bytes(30 + i % 7)))
    return out


def test_batched_fan_out_sends_the_same_bytes_in_the_same_order_with_one_write_per_batch():
    batches = ManualBatches()
    plain, batched = Relay(), Relay(batch=batches)
    start(plain)
    start(batched)
    writes: list[bytes] = []
    p_sub = Subscriber()
    # as the server's connection: batches straight to the socket, and what gets queued drained on wakeup
    b_sub = Subscriber(write=lambda data: writes.append(data) or True,
                       on_wakeup=lambda: writes.append(b"".join(b_sub.pop_all())))
    assert plain.subscribe("live/a", p_sub) and batched.subscribe("live/a", b_sub)
    head = b"".join(writes)  # the cache queued at the join (written by the owner after its Play reply)
    writes.clear()
    for n, (type_id, ts, payload) in enumerate(media_script()):
        send(plain, "live/a", type_id, ts, payload)
        send(batched, "live/a", type_id, ts, payload)
        if n % 5 == 4:  # a batch of five messages
            batches.run()
    batches.run()
    assert head + b"".join(writes) == b"".join(p_sub.pop_all())
    # 120 messages in 24 batches: the first one message by message (the joiner found no GOP cached and waits for the
    # key frame that opens it, the per-message rule), then one write per batch
    assert len(writes) == 5 + 23 and not b_sub.queue


def test_a_join_or_an_unpublish_hands_out_the_pending_batch_first():
    batches = ManualBatches()
    r = Relay(batch=batches)
    start(r)
    first = Subscriber()
    assert r.subscribe("live/a", first)
    received(first)
    send(r, "live/a", MSG_VIDEO, 0, key_frame(0))
    send(r, "live/a", MSG_VIDEO, 33, inter_frame(1))  # pending: not yet fanned out
    late = Subscriber()
    assert r.subscribe("live/a", late)  # the pending batch goes to `first`; `late` gets it from the GOP cache
    assert [m.payload for m in received(first)] == [key_frame(0), inter_frame(1)]
    late_got = [m.payload for m in received(late)]
    assert late_got[-2:] == [key_frame(0), inter_frame(1)] and late_got.count(key_frame(0)) == 1
    send(r, "live/a", MSG_VIDEO, 66, inter_frame(2))
    order = []
    first.on_unpublish = lambda: order.append([m.payload for m in received(first)])
    r.unpublish("live/a", "pub")
    assert order == [[inter_frame(2)]]  # delivered before the end-of-stream notice
    assert [m.payload for m in received(late)] == [inter_frame(2)]  # to every subscriber
    batches.run()  # the scheduled flush finds nothing left
    assert received(first) == [] and received(late) == []
