"""RTMP chunk stream (spec 1.0 §5.3), sans-I/O: `ChunkReader` turns received bytes into `Message`s, `ChunkWriter`
turns `Message`s into bytes.

Timestamps are absolute milliseconds modulo 2**32; deltas accumulate modulo 2**32 (a 24-bit header field overflows
into the extended timestamp after 0xFFFFFE ms, about 4.66 h; the 32-bit value wraps after about 49.7 days).

Extended timestamps in type-3 chunks: when the last type 0/1/2 header of a chunk stream carried an extended timestamp,
every type-3 chunk of that stream carries the 4-byte extended timestamp too — both continuation chunks of a message and
a type-3 chunk starting a new message. That is what ffmpeg, librtmp (OBS) and nginx-rtmp write and read, and it is the
reader's default (``extended_in_type3="always"``). Some old servers omit it in continuation chunks; the opt-in
``extended_in_type3="auto"`` mode accepts both by comparing the next 4 bytes with the expected value (the value of the
header's extended field, which is what repeating writers send). It is opt-in because it is a heuristic: a payload
whose 4 bytes at a chunk boundary equal that value would be mistaken for a repeated field.
"""
from __future__ import annotations

from dataclasses import dataclass

from rtmp.errors import RtmpError
from rtmp.messages import (MAX_CHUNK_SIZE, MSG_ABORT, MSG_SET_CHUNK_SIZE, U32_MASK, Abort, Message,
                           SetChunkSize)

__all__ = ["ChunkReader", "ChunkWriter", "Message", "DEFAULT_CHUNK_SIZE", "MIN_CSID", "MAX_CSID"]

DEFAULT_CHUNK_SIZE = 128
MIN_CSID = 2
MAX_CSID = 65599
MAX_MESSAGE_LENGTH_FIELD = 0xFFFFFF
EXTENDED = 0xFFFFFF
_HEADER_SIZE = (11, 7, 3, 0)


def _check_chunk_size(n: int, who: str) -> int:
    if not isinstance(n, int) or not 1 <= n <= MAX_CHUNK_SIZE:
        raise RtmpError(f"{who}: chunk size {n!r} outside 1..0x7FFFFFFF")
    return n


@dataclass(slots=True)
class _InStream:
    timestamp: int       # absolute timestamp of the last message started on this chunk stream
    delta: int           # last timestamp field: the delta (type 1/2) or the absolute timestamp (type 0), §5.3.1.2.4
    length: int
    type_id: int
    stream_id: int
    extended: bool       # the last type 0/1/2 header used the extended timestamp field
    pending: bytearray | None = None
    remaining: int = 0


class ChunkReader:
    """Incremental chunk stream parser. ``feed(data)`` returns the messages completed by ``data``.

    Set Chunk Size (type 1) and Abort (type 2) are applied by the reader itself as soon as they complete (before the
    next chunk is parsed) and are still returned. Limits, all raising `RtmpError`: ``max_message_size`` (declared
    message length), ``max_chunk_streams`` (chunk streams with state), ``max_pending_bytes`` (sum of declared lengths of
    partially received messages) — so memory stays bounded whatever the peer sends.
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE, *, max_message_size: int = 16 * 1024 * 1024,
                 max_chunk_streams: int = 64, max_pending_bytes: int = 64 * 1024 * 1024,
                 extended_in_type3: str = "always") -> None:
        if extended_in_type3 not in ("always", "auto"):
            raise RtmpError(f"ChunkReader: extended_in_type3 must be 'always' or 'auto', got {extended_in_type3!r}")
        self.chunk_size = _check_chunk_size(chunk_size, "ChunkReader")
        self.max_message_size = max_message_size
        self.max_chunk_streams = max_chunk_streams
        self.max_pending_bytes = max_pending_bytes
        self._auto_extended = extended_in_type3 == "auto"
        self._streams: dict[int, _InStream] = {}
        self._buf = bytearray()
        self._reserved = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed (an incomplete chunk)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        pos = 0
        try:
            while True:
                new_pos = self._parse_chunk(pos, out)
                if new_pos is None:
                    break
                pos = new_pos
        finally:
            del self._buf[:pos]
        return out

    def _parse_chunk(self, pos: int, out: list[Message]) -> int | None:
        """Parse one whole chunk at ``pos``; return the position after it, or None when it is not complete yet.
        No state changes before the whole chunk is available."""
        buf = self._buf
        n = len(buf)
        if pos >= n:
            return None
        b0 = buf[pos]
        fmt = b0 >> 6
        csid = b0 & 0x3F
        p = pos + 1
        if csid == 0:
            if n < p + 1:
                return None
            csid = 64 + buf[p]
            p += 1
        elif csid == 1:
            if n < p + 2:
                return None
            csid = 64 + buf[p] + (buf[p + 1] << 8)
            p += 2
        if n < p + _HEADER_SIZE[fmt]:
            return None

        st = self._streams.get(csid)
        if st is None:
            if fmt != 0:
                raise RtmpError(f"ChunkReader.feed: type {fmt} chunk on chunk stream {csid} without a previous "
                                f"type 0 header")
            if len(self._streams) >= self.max_chunk_streams:
                raise RtmpError(f"ChunkReader.feed: more than {self.max_chunk_streams} chunk streams")
        new_message = st is None or st.pending is None
        if fmt != 3 and not new_message:
            raise RtmpError(f"ChunkReader.feed: type {fmt} chunk on chunk stream {csid} while a message is "
                            f"in progress")

        if fmt == 3:
            field = st.delta
            length, type_id, stream_id, extended = st.length, st.type_id, st.stream_id, st.extended
        else:
            field = int.from_bytes(buf[p:p + 3], "big")
            extended = field == EXTENDED
            if fmt <= 1:
                length = int.from_bytes(buf[p + 3:p + 6], "big")
                type_id = buf[p + 6]
            else:
                length, type_id = st.length, st.type_id
            if fmt == 0:
                stream_id = int.from_bytes(buf[p + 7:p + 11], "little")
            else:
                stream_id = st.stream_id
            p += _HEADER_SIZE[fmt]

        if extended:
            if n < p + 4:
                return None
            value = int.from_bytes(buf[p:p + 4], "big")
            if fmt != 3 or not self._auto_extended or value == field:
                field = value
                p += 4

        if new_message:
            if length > self.max_message_size:
                raise RtmpError(f"ChunkReader.feed: message length {length} on chunk stream {csid} exceeds "
                                f"{self.max_message_size}")
            if self._reserved + length > self.max_pending_bytes:
                raise RtmpError(f"ChunkReader.feed: partial messages would exceed {self.max_pending_bytes} bytes")
            piece = min(self.chunk_size, length)
        else:
            piece = min(self.chunk_size, st.remaining)
        end = p + piece
        if n < end:
            return None

        # The whole chunk is here: commit.
        if new_message:
            if fmt == 0:
                timestamp = field
            else:
                timestamp = (st.timestamp + field) & U32_MASK
            if st is None:
                st = _InStream(timestamp, field, length, type_id, stream_id, extended)
                self._streams[csid] = st
            else:
                st.timestamp, st.delta, st.length, st.type_id, st.stream_id = (timestamp, field, length, type_id,
                                                                               stream_id)
                st.extended = extended
            st.pending = bytearray()
            st.remaining = length
            self._reserved += length
        st.pending += buf[p:end]
        st.remaining -= piece
        if st.remaining == 0:
            payload = bytes(st.pending)
            st.pending = None
            self._reserved -= st.length
            out.append(Message(csid, st.timestamp, st.type_id, st.stream_id, payload))
            if st.type_id == MSG_SET_CHUNK_SIZE:
                self.chunk_size = SetChunkSize.parse(payload).chunk_size
            elif st.type_id == MSG_ABORT:
                self._abort(Abort.parse(payload).chunk_stream_id)
        return end

    def _abort(self, csid: int) -> None:
        st = self._streams.get(csid)
        if st is not None and st.pending is not None:
            self._reserved -= st.length
            st.pending = None
            st.remaining = 0


@dataclass(slots=True)
class _OutStream:
    timestamp: int
    delta: int
    length: int
    type_id: int
    stream_id: int
    extended: bool


def _check_message(message: Message) -> None:
    if not MIN_CSID <= message.chunk_stream_id <= MAX_CSID:
        raise RtmpError(f"ChunkWriter.write: chunk stream id {message.chunk_stream_id} outside 2..65599")
    if not 0 <= message.timestamp <= U32_MASK:
        raise RtmpError(f"ChunkWriter.write: timestamp {message.timestamp} outside 0..2**32-1")
    if not 0 <= message.message_type_id <= 0xFF:
        raise RtmpError(f"ChunkWriter.write: message type id {message.message_type_id} outside 0..255")
    if not 0 <= message.message_stream_id <= U32_MASK:
        raise RtmpError(f"ChunkWriter.write: message stream id {message.message_stream_id} outside 0..2**32-1")
    if len(message.payload) > MAX_MESSAGE_LENGTH_FIELD:
        raise RtmpError(f"ChunkWriter.write: payload of {len(message.payload)} bytes exceeds 0xFFFFFF")


def _basic_header(fmt: int, csid: int) -> bytes:
    if csid <= 63:
        return bytes([(fmt << 6) | csid])
    if csid <= 319:
        return bytes([fmt << 6, csid - 64])
    c = csid - 64
    return bytes([(fmt << 6) | 1, c & 0xFF, c >> 8])


def _encode(message: Message, fmt: int, field: int, extended: bool, chunk_size: int) -> bytes:
    """Chunks of one message: a ``fmt`` header carrying timestamp ``field``, then type-3 continuations (repeating
    the extended timestamp when it is used, as ffmpeg/librtmp/nginx-rtmp expect)."""
    csid = message.chunk_stream_id
    payload = message.payload
    length = len(payload)
    ts_field = (EXTENDED if extended else field).to_bytes(3, "big")
    ext = field.to_bytes(4, "big") if extended else b""
    if fmt == 0:
        header = (_basic_header(0, csid) + ts_field + length.to_bytes(3, "big") + bytes([message.message_type_id])
                  + message.message_stream_id.to_bytes(4, "little") + ext)
    elif fmt == 1:
        header = _basic_header(1, csid) + ts_field + length.to_bytes(3, "big") + bytes([message.message_type_id]) + ext
    elif fmt == 2:
        header = _basic_header(2, csid) + ts_field + ext
    else:
        header = _basic_header(3, csid) + ext
    parts = [header, payload[:chunk_size]]
    if length > chunk_size:
        cont = _basic_header(3, csid) + ext
        mv = memoryview(payload)
        for off in range(chunk_size, length, chunk_size):
            parts.append(cont)
            parts.append(mv[off:off + chunk_size])
    return b"".join(parts)


class ChunkWriter:
    """Serialises messages into chunks with per-chunk-stream header compression.

    Header choice per message: type 0 the first time a chunk stream is used, when its message stream changes or when
    the timestamp goes backwards (delta >= 2**31); type 3 when length, type and delta all repeat; type 2 when length and
    type repeat; type 1 otherwise. Deltas are modulo 2**32, so a timestamp wrapping past 2**32 stays a small delta.

    Changing the chunk size: write a `SetChunkSize` message first (it goes out with the old size), then call
    ``set_chunk_size``.
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = _check_chunk_size(chunk_size, "ChunkWriter")
        self._streams: dict[int, _OutStream] = {}

    def set_chunk_size(self, n: int) -> None:
        self.chunk_size = _check_chunk_size(n, "ChunkWriter.set_chunk_size")

    def write(self, message: Message) -> bytes:
        _check_message(message)
        csid, ts, length = message.chunk_stream_id, message.timestamp, len(message.payload)
        st = self._streams.get(csid)
        fmt = 0
        delta = ts
        if st is not None and st.stream_id == message.message_stream_id:
            delta = (ts - st.timestamp) & U32_MASK
            if delta < 0x80000000:
                if length == st.length and message.message_type_id == st.type_id:
                    fmt = 3 if delta == st.delta else 2
                else:
                    fmt = 1
            else:
                delta = ts
        extended = st.extended if fmt == 3 else delta >= EXTENDED
        data = _encode(message, fmt, delta, extended, self.chunk_size)
        self._streams[csid] = _OutStream(ts, delta, length, message.message_type_id, message.message_stream_id,
                                         extended)
        return data

    @staticmethod
    def serialize(message: Message, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
        """Serialise ``message`` with a type-0 (absolute) first header, independent of any connection's state.

        For fan-out: a relay serialises a message once per outgoing chunk size and sends the same bytes to every
        connection with that chunk size. Type 0 is used because the header compression state (previous timestamp,
        length, type per chunk stream) differs between connections; a type 0 header is valid on any of them. After
        sending such bytes on a connection that also uses ``write``, call that writer's ``sent_serialized(message)``.
        """
        _check_message(message)
        _check_chunk_size(chunk_size, "ChunkWriter.serialize")
        return _encode(message, 0, message.timestamp, message.timestamp >= EXTENDED, chunk_size)

    def sent_serialized(self, message: Message) -> None:
        """Record that ``serialize(message)`` bytes were sent, so later ``write`` calls compress against them."""
        ts = message.timestamp
        self._streams[message.chunk_stream_id] = _OutStream(ts, ts, len(message.payload), message.message_type_id,
                                                            message.message_stream_id, ts >= EXTENDED)
