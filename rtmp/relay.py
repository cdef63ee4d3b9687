"""Live fan-out hub, no I/O: one publisher per "app/stream" key, any number of subscribers, each with a bounded queue.

Per stream the relay keeps a GOP cache: the last metadata, the audio/video sequence headers, and every message since
the last video key frame (cleared at each key frame; bounded in bytes — past the bound the GOP is dropped until the
next key frame). A late joiner first gets metadata + sequence headers + the current GOP, so its first video frame is
a key frame that decodes at once.

Subscriber queues hold pre-serialised chunk bytes. Each message is serialised once per (outgoing chunk size, message
stream id) with type-0 headers (`ChunkWriter.serialize`) and the bytes are shared. A subscriber whose queue is full
drops everything except sequence headers/metadata until the next video key frame that fits (audio-only streams: the
next audio message), and its drops are counted: the publisher and the other subscribers never wait for it.
Timestamps are the publisher's, unchanged.

Taps (`RelayTap`: the live packager, the recorder, push relays) see every stream's messages as `Message` objects in
publisher order, synchronously and before the fan-out; a tap must only queue work. A tap that raises is logged and
counted, and the relay carries on without it for that message.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from packagers.codecs import amf0, flv
from rtmp.chunk import ChunkWriter
from rtmp.messages import MSG_AUDIO, MSG_VIDEO, Message
from rtmp.session import AUDIO_CSID, DATA_CSID, VIDEO_CSID

__all__ = ["Relay", "RelayTap", "Subscriber"]

log = logging.getLogger("rtmp.relay")


class RelayTap(Protocol):
    """An in-process consumer of published streams. ``on_message`` gets metadata (``onMetaData``, data message type)
    and audio/video messages with their classification; ``message.timestamp`` is the publisher's (ms)."""

    def on_publish(self, key: str) -> None: ...

    def on_message(self, key: str, message: Message, *, keyframe: bool, sequence_header: bool) -> None: ...

    def on_unpublish(self, key: str) -> None: ...



class Subscriber:
    """A bounded queue of bytes for one player. The owner (an I/O loop) drains it with ``pop_all()``; ``on_wakeup``
    is called when bytes are queued, ``on_unpublish`` when the publisher leaves (the owner queues its notice)."""

    def __init__(self, *, chunk_size: int = 4096, stream_id: int = 1, max_queue_bytes: int = 4 * 1024 * 1024,
                 on_wakeup: Callable[[], None] | None = None,
                 on_unpublish: Callable[[], None] | None = None, peer: str = "",
                 write: Callable[[bytes], bool] | None = None) -> None:
        self.peer = peer            # for stats only ("ip:port" of the player)
        self.client_id: int | None = None   # the server's id of the player's connection (stats, control API)
        self.chunk_size = chunk_size
        self.stream_id = stream_id
        self.form = (chunk_size, stream_id)  # what the bytes it is sent depend on
        # the owner's direct write: True when it took the bytes (its socket keeps up); used for batches that find
        # the queue empty, so a player that keeps up costs one call per batch
        self.write = write
        self.max_queue_bytes = max_queue_bytes
        self.on_wakeup = on_wakeup
        self.on_unpublish = on_unpublish
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.dropped = 0            # messages dropped because the queue was full
        self.bytes_out = 0          # bytes handed to the owner
        self.waiting_for_key = False

    def push(self, data: bytes, *, resume_point: bool, essential: bool = False) -> bool:
        """Queue ``data``; return False when it was dropped. ``essential`` data (sequence headers, metadata,
        end-of-stream notices) is always queued; other data is dropped while the queue is full and then until a
        ``resume_point`` (a key frame) fits."""
        if not essential:
            if self.waiting_for_key and not resume_point:
                self.dropped += 1
                return False
            if self.queued_bytes + len(data) > self.max_queue_bytes:
                self.waiting_for_key = True
                self.dropped += 1
                return False
            self.waiting_for_key = False
        self.queue.append(data)
        self.queued_bytes += len(data)
        if self.on_wakeup is not None:
            self.on_wakeup()
        return True

    def push_batch(self, data: bytes) -> bool:
        """Queue a batch of messages joined in ``data`` when each of them would be queued by ``push``: nothing is
        being skipped to a key frame and all of it fits. False (nothing queued): push them one by one instead."""
        if self.waiting_for_key or self.queued_bytes + len(data) > self.max_queue_bytes:
            return False
        if not self.queue and self.write is not None and self.write(data):
            self.bytes_out += len(data)
            return True
        self.queue.append(data)
        self.queued_bytes += len(data)
        if self.on_wakeup is not None:
            self.on_wakeup()
        return True

    def pop_all(self) -> list[bytes]:
        items = list(self.queue)
        self.queue.clear()
        self.bytes_out += self.queued_bytes
        self.queued_bytes = 0
        return items


@dataclass
class _Item:
    """One publisher message rewritten for players, with its serialisations by (chunk size, stream id)."""
    message: Message
    keyframe: bool
    essential: bool
    _bytes: dict = field(default_factory=dict)

    def bytes_for(self, chunk_size: int, stream_id: int) -> bytes:
        k = (chunk_size, stream_id)
        data = self._bytes.get(k)
        if data is None:
            m = self.message
            data = ChunkWriter.serialize(Message(m.chunk_stream_id, m.timestamp, m.message_type_id, stream_id,
                                                 m.payload), chunk_size)
            self._bytes[k] = data
        return data


@dataclass
class _Stream:
    key: str
    publisher: object | None
    started: float
    subscribers: list = field(default_factory=list)
    metadata: _Item | None = None
    video_header: _Item | None = None
    audio_header: _Item | None = None
    gop: list = field(default_factory=list)
    gop_bytes: int = 0
    gop_valid: bool = False
    has_video: bool = False
    bytes_in: int = 0
    messages_in: int = 0
    video_codec: str | None = None
    audio_codec: str | None = None
    dropped_gone: int = 0       # drops of subscribers that already left
    bytes_out_gone: int = 0
    video: dict = field(default_factory=dict)     # width, height, fps, encoder as declared by onMetaData
    window: deque = field(default_factory=deque)  # [second, payload bytes, video frames] per clock second
    first_in: float | None = None                 # clock of the first message: rates are measured from there
    pending: list = field(default_factory=list)   # items not yet fanned out (Relay's batching)


class Relay:
    """Streams by key: one publisher, its caches (metadata, sequence headers, current GOP) and its subscribers.

    Fan-out. Every message is serialised once per (chunk size, stream id) and queued to every subscriber. With
    ``batch`` (a function that runs a callback a few milliseconds later, e.g. ``loop.call_later``), messages are
    gathered per stream and handed to each subscriber as one joined buffer per batch: one queue operation and one
    socket write per player per batch instead of per message, the part of fan-out that grows with players (3 Mbit/s
    is ~75 messages/s). A subscriber that cannot take a whole batch (full queue, skipping to a key frame) gets its
    messages one by one, with the same drop rules. A join and an unpublish hand out the pending batch
    first, so ordering is what it would be without batching (one who leaves forgoes it).
    """

    def __init__(self, *, gop_cache_bytes: int = 16 * 1024 * 1024, clock: Callable[[], float] = time.monotonic,
                 taps: Sequence[RelayTap] = (), batch: Callable[[Callable[[], None]], object] | None = None) -> None:
        self.gop_cache_bytes = gop_cache_bytes
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self.taps: list[RelayTap] = list(taps)
        self.tap_errors = 0
        self.batch = batch

    def add_tap(self, tap: RelayTap) -> None:
        self.taps.append(tap)

    def _tell(self, method: str, key: str, *args, **kwargs) -> None:
        for tap in self.taps:
            try:
                getattr(tap, method)(key, *args, **kwargs)
            except Exception:   # one broken consumer must not stop the publisher or the others
                self.tap_errors += 1
                log.exception("rtmp relay: tap %r failed in %s(%s)", tap, method, key)

    def is_published(self, key: str) -> bool:
        st = self._streams.get(key)
        return st is not None and st.publisher is not None

    # -------------------------------------------------------------------------------------------- membership
    def publish(self, key: str, publisher: object) -> bool:
        """Claim ``key`` for ``publisher``; False when another publisher holds it (→ NetStream.Publish.BadName)."""
        st = self._streams.get(key)
        if st is not None and st.publisher is not None:
            return False
        if st is None:
            self._streams[key] = _Stream(key, publisher, self._clock())
        else:   # subscribers waiting from a previous publisher keep their place; the caches start afresh
            self._streams[key] = _Stream(key, publisher, self._clock(), subscribers=st.subscribers)
        self._tell("on_publish", key)
        return True

    def is_publisher(self, key: str, publisher: object) -> bool:
        st = self._streams.get(key)
        return st is not None and st.publisher is publisher

    def unpublish(self, key: str, publisher: object | None = None) -> None:
        """End the stream (only if ``publisher`` holds it, when given); subscribers are told via ``on_unpublish``
        and stay attached, so a new publisher on the same key resumes them."""
        st = self._streams.get(key)
        if st is None or st.publisher is None or (publisher is not None and st.publisher is not publisher):
            return
        self._flush_pending(st)
        st.publisher = None
        self._tell("on_unpublish", key)
        for sub in list(st.subscribers):
            if sub.on_unpublish is not None:
                sub.on_unpublish()
        if not st.subscribers:
            del self._streams[key]
        else:
            self._streams[key] = _Stream(key, None, st.started, subscribers=st.subscribers,
                                         dropped_gone=st.dropped_gone, bytes_out_gone=st.bytes_out_gone)

    def subscribe(self, key: str, sub: Subscriber) -> bool:
        """Attach ``sub`` and queue the cache (metadata, sequence headers, current GOP); False when nobody publishes
        ``key`` (→ NetStream.Play.StreamNotFound)."""
        st = self._streams.get(key)
        if st is None or st.publisher is None:
            return False
        self._flush_pending(st)  # the GOP cache below already holds those messages
        st.subscribers.append(sub)
        for item in (st.metadata, st.video_header, st.audio_header):
            if item is not None:
                sub.push(item.bytes_for(sub.chunk_size, sub.stream_id), resume_point=True, essential=True)
        if st.gop_valid:
            for item in st.gop:
                sub.push(item.bytes_for(sub.chunk_size, sub.stream_id), resume_point=item.keyframe)
        elif st.has_video:
            sub.waiting_for_key = True   # nothing decodable cached: start at the next key frame
        return True

    def headers(self, key: str) -> list[Message]:
        """The cached metadata and sequence headers of a published stream, as received (a tap that starts
        mid-stream, e.g. a recording started by the control API, decodes from them)."""
        st = self._streams.get(key)
        if st is None or st.publisher is None:
            return []
        return [item.message for item in (st.metadata, st.video_header, st.audio_header) if item is not None]

    def video_snapshot(self, key: str) -> tuple[bytes, list[tuple[int, bytes]]] | None:
        """The video sequence header's payload and the cached GOP's video messages as (timestamp, payload): what a
        picture of "now" decodes from (live thumbnails). None when ``key`` has no decodable GOP cached here."""
        st = self._streams.get(key)
        if st is None or st.publisher is None or st.video_header is None or not st.gop_valid:
            return None
        frames = [(i.message.timestamp, i.message.payload) for i in st.gop if i.message.message_type_id == MSG_VIDEO]
        return (st.video_header.message.payload, frames) if frames else None

    def unsubscribe(self, key: str, sub: Subscriber) -> None:
        st = self._streams.get(key)
        if st is None or sub not in st.subscribers:
            return
        st.subscribers.remove(sub)
        st.dropped_gone += sub.dropped
        st.bytes_out_gone += sub.bytes_out + sub.queued_bytes
        if st.publisher is None and not st.subscribers:
            del self._streams[key]

    # -------------------------------------------------------------------------------------------- data
    def metadata(self, key: str, message: Message) -> None:
        st = self._streams.get(key)
        if st is None or st.publisher is None:
            return
        item = _Item(Message(DATA_CSID, message.timestamp, message.message_type_id, 0, message.payload), False, True)
        st.metadata = item
        st.video = _declared_video(message.payload)
        self._count_in(st, message, self._clock(), False)
        self._tell("on_message", key, message, keyframe=False, sequence_header=False)
        self._fan_out(st, item)

    def media(self, key: str, message: Message, *, keyframe: bool, sequence_header: bool) -> None:
        st = self._streams.get(key)
        if st is None or st.publisher is None:
            return
        video = message.message_type_id == MSG_VIDEO
        csid = VIDEO_CSID if video else AUDIO_CSID if message.message_type_id == MSG_AUDIO else DATA_CSID
        resume = keyframe or (not video and not st.has_video)
        item = _Item(Message(csid, message.timestamp, message.message_type_id, 0, message.payload), resume,
                     sequence_header)
        self._count_in(st, message, self._clock(), video and not sequence_header)
        self._tell("on_message", key, message, keyframe=keyframe, sequence_header=sequence_header)
        if video:
            st.has_video = True
        if sequence_header:
            if video:
                st.video_header = item
                st.video_codec = flv.video_tag_header(message.payload).codec_name
            else:
                st.audio_header = item
                st.audio_codec = flv.audio_tag_header(message.payload).codec_name
        else:
            self._cache(st, item, video and keyframe)
        self._fan_out(st, item)

    def _cache(self, st: _Stream, item: _Item, video_keyframe: bool) -> None:
        if video_keyframe:
            st.gop = []
            st.gop_bytes = 0
            st.gop_valid = True
        elif not st.has_video:      # audio only: keep a short window so a joiner starts right away
            st.gop_valid = True
        if not st.gop_valid:
            return
        size = len(item.message.payload)
        if st.gop_bytes + size > self.gop_cache_bytes:
            if st.has_video:
                st.gop, st.gop_bytes, st.gop_valid = [], 0, False
                return
            while st.gop and st.gop_bytes + size > self.gop_cache_bytes:
                st.gop_bytes -= len(st.gop.pop(0).message.payload)
        st.gop.append(item)
        st.gop_bytes += size

    @staticmethod
    def _count_in(st: _Stream, message: Message, now: float, frame: bool) -> None:
        """Totals, and per-second buckets of the last ``RATE_WINDOW`` seconds for the measured bitrate and fps."""
        size = len(message.payload)
        if st.first_in is None:
            st.first_in = now
        st.bytes_in += size
        st.messages_in += 1
        second = int(now)
        w = st.window
        if w and w[-1][0] == second:
            w[-1][1] += size
            w[-1][2] += frame
        else:
            w.append([second, size, int(frame)])
            while w[0][0] <= second - RATE_WINDOW:
                w.popleft()

    def _fan_out(self, st: _Stream, item: _Item) -> None:
        if self.batch is None:
            for sub in st.subscribers:
                sub.push(item.bytes_for(sub.chunk_size, sub.stream_id), resume_point=item.keyframe,
                         essential=item.essential)
            return
        st.pending.append(item)
        if len(st.pending) == 1:
            self.batch(lambda: self._flush_pending(st))

    @staticmethod
    def _flush_pending(st: _Stream) -> None:
        """Hand the stream's pending messages to every subscriber (see the class docstring)."""
        batch, st.pending = st.pending, []
        if not batch:
            return
        joined: dict[tuple[int, int], bytes] = {}
        for sub in st.subscribers:
            form = sub.form
            data = joined.get(form)
            if data is None:
                data = joined[form] = b"".join([item.bytes_for(*form) for item in batch])
            if not sub.push_batch(data):
                for item in batch:
                    sub.push(item.bytes_for(*form), resume_point=item.keyframe, essential=item.essential)

    # -------------------------------------------------------------------------------------------- stats
    def stats(self) -> dict[str, dict]:
        """Per stream: totals, codecs, declared resolution/fps (onMetaData), measured bitrate (bit/s of FLV payload)
        and fps over the last ``RATE_WINDOW`` seconds, the publisher's and each player's peer and counters."""
        now = self._clock()
        return {key: {
            "publishing": st.publisher is not None,
            "publisher": getattr(st.publisher, "peer", None) if st.publisher is not None else None,
            "publisher_id": getattr(st.publisher, "client_id", None) if st.publisher is not None else None,
            "subscribers": len(st.subscribers),
            "players": [{"peer": s.peer, "client_id": s.client_id, "bytes_out": s.bytes_out,
                         "queued_bytes": s.queued_bytes, "drops": s.dropped} for s in st.subscribers],
            "bytes_in": st.bytes_in,
            "messages_in": st.messages_in,
            "bytes_out": st.bytes_out_gone + sum(s.bytes_out + s.queued_bytes for s in st.subscribers),
            "drops": st.dropped_gone + sum(s.dropped for s in st.subscribers),
            "uptime": round(now - st.started, 3),
            "video_codec": st.video_codec,
            "audio_codec": st.audio_codec,
            "gop_cache_bytes": st.gop_bytes,
            "width": st.video.get("width"),
            "height": st.video.get("height"),
            "declared_fps": st.video.get("fps"),
            "encoder": st.video.get("encoder"),
            **_rates(st.window, now, now - (st.first_in if st.first_in is not None else now)),
        } for key, st in self._streams.items()}


RATE_WINDOW = 5   # seconds of per-second buckets behind the measured bitrate and fps


def _rates(window: deque, now: float, age: float) -> dict:
    """Bitrate and frame rate over the buckets of the last ``RATE_WINDOW`` s (the current, partial one included)."""
    first = int(now) - RATE_WINDOW + 1
    span = min(float(RATE_WINDOW) - 1 + (now - int(now)), age)
    recent = [b for b in window if b[0] >= first]
    if span <= 0.2:     # too young to say
        return {"bitrate": None, "fps": None}
    return {"bitrate": round(sum(b[1] for b in recent) * 8 / span),
            "fps": round(sum(b[2] for b in recent) / span, 2)}


def _declared_video(payload: bytes) -> dict:
    """width/height/framerate and the encoder's name from an ``onMetaData`` body (ffmpeg and OBS write them); {} when
    absent or unreadable."""
    try:
        values = amf0.decode_all(payload)
    except amf0.Amf0Error:
        return {}
    meta = values[1] if len(values) > 1 and isinstance(values[1], dict) else {}
    out = {}
    for name, key in (("width", "width"), ("height", "height"), ("fps", "framerate")):
        v = meta.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e6:
            out[name] = int(v) if name != "fps" else round(float(v), 3)
    encoder = meta.get("encoder")  # ffmpeg: "Lavf61.7.100", OBS: "obs-output module (libobs version ...)"
    if isinstance(encoder, str) and encoder:
        out["encoder"] = encoder[:100]
    return out

