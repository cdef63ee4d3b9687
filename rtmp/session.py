"""One server-side RTMP connection, sans-I/O (Adobe RTMP spec 1.0 §5, §7): bytes in → `SessionOutput(send, events)`.

``ServerSession.feed(data)`` runs the handshake, then the chunk stream; it answers protocol control and the
NetConnection commands itself (connect, releaseStream, FCPublish, createStream, getStreamLength, ping) and reports what
needs a decision elsewhere as events: `Publish`, `Play` (the caller answers with ``accept_publish``/``reject_publish``,
``accept_play``/``reject_play``, which return bytes to send), `Unpublish`, `StopPlay`, `Metadata`, `Media`.

Every complete message in the buffer is processed in order, so pipelined clients (everything in one write) never wait.
Events come out in the order of the messages that caused them; a caller that handles them in order (e.g. accepts the
publish before looking at the next `Media` event) sees exactly what a one-message-at-a-time client would cause.

Media going to a player is written by the relay as bytes serialised once (``ChunkWriter.serialize``, type-0 headers) on
chunk streams the session never compresses against (`AUDIO_CSID`, `VIDEO_CSID`, `DATA_CSID`), so shared bytes and
this connection's own writer never disagree about header state.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from packagers.codecs import amf0, flv
from rtmp.chunk import ChunkReader, ChunkWriter
from rtmp.errors import RtmpError
from rtmp.handshake import ServerHandshake
from rtmp.messages import (MSG_AUDIO, MSG_COMMAND_AMF0, MSG_COMMAND_AMF3, MSG_DATA_AMF0,
                           MSG_DATA_AMF3, MSG_USER_CONTROL, MSG_VIDEO, MSG_WINDOW_ACK_SIZE, AckTracker, LimitType,
                           Message, PingRequest, SetChunkSize, SetPeerBandwidth, StreamBegin, StreamEOF,
                           WindowAcknowledgementSize, is_control, parse_control)

__all__ = ["ServerSession", "SessionOutput", "Connect", "Publish", "Play", "Unpublish", "StopPlay", "Metadata", "Media",
           "classify_media", "COMMAND_CSID", "AUDIO_CSID", "VIDEO_CSID", "DATA_CSID", "OUT_CHUNK_SIZE",
           "WINDOW_ACK_SIZE"]

COMMAND_CSID = 3
AUDIO_CSID = 4
DATA_CSID = 5
VIDEO_CSID = 6
OUT_CHUNK_SIZE = 4096
WINDOW_ACK_SIZE = 2_500_000


# ------------------------------------------------------------------------------------------------------ events
@dataclass(frozen=True, slots=True)
class StreamEvent:
    """An event about the stream ``<app>/<name>`` (the relay's key)."""

    app: str
    name: str  # stream name without its query string ("test" for "test?key=...")

    @property
    def key(self) -> str:
        return f"{self.app}/{self.name}"


@dataclass(frozen=True, slots=True)
class Connect:
    """A ``connect`` held for a decision (``ServerSession(hold_connect=True)``): answer with ``accept_connect`` or
    ``reject_connect``. The fields are the command object's, as nginx-rtmp's on_connect sends them."""
    app: str
    args: str       # the query of the app ("live?x=1" → "x=1")
    flashver: str
    swfurl: str
    tcurl: str
    pageurl: str


@dataclass(frozen=True, slots=True)
class Publish(StreamEvent):
    stream_id: int
    publish_type: str  # "live", "record", "append"
    raw_name: str


@dataclass(frozen=True, slots=True)
class Play(StreamEvent):
    stream_id: int
    start: float
    raw_name: str
    duration: float = 0.0   # play's optional arguments, for nginx-rtmp's on_play fields
    reset: bool = False


@dataclass(frozen=True, slots=True)
class Unpublish(StreamEvent):
    pass


@dataclass(frozen=True, slots=True)
class StopPlay(StreamEvent):
    pass


@dataclass(frozen=True, slots=True)
class Metadata:
    """``@setDataFrame onMetaData {...}`` from a publisher, re-encoded as what players receive: ``onMetaData {...}``
    (the original bytes after the first AMF0 value, untouched)."""
    message: Message


@dataclass(frozen=True, slots=True)
class Media:
    message: Message
    is_keyframe: bool
    is_sequence_header: bool


@dataclass(slots=True)
class SessionOutput:
    send: bytes = b""
    events: list = field(default_factory=list)


def classify_media(message: Message) -> tuple[bool, bool]:
    """(is_keyframe, is_sequence_header) of an FLV audio/video message body, as `packagers.codecs.flv` reads its
    header (legacy and E-RTMP; a sequence header is not counted as a key frame; audio is never a key frame)."""
    if message.message_type_id == MSG_VIDEO:
        video = flv.video_tag_header(message.payload)
        return (video.is_keyframe, video.is_sequence_header) if video is not None else (False, False)
    if message.message_type_id == MSG_AUDIO:
        audio = flv.audio_tag_header(message.payload)
        return False, audio is not None and audio.is_sequence_header
    return False, False


def _status(level: str, code: str, description: str, **extra) -> dict:
    return {"level": level, "code": code, "description": description, **extra}


# ------------------------------------------------------------------------------------------------------ session
class ServerSession:
    """The server side of one RTMP connection. ``now`` (seconds, any clock) is kept as ``last_activity``."""

    def __init__(self, now: float = 0.0, *, chunk_size: int = OUT_CHUNK_SIZE, window_ack_size: int = WINDOW_ACK_SIZE,
                 max_message_size: int = 16 * 1024 * 1024, hold_connect: bool = False) -> None:
        self._handshake = ServerHandshake(time_ms=0)
        self._reader = ChunkReader(max_message_size=max_message_size)
        self._writer = ChunkWriter()
        self._ack = AckTracker(0)
        self._out_chunk_size = chunk_size
        self._window = window_ack_size
        self.started = now
        self.last_activity = now
        self.connected = False
        self.app = ""
        self.tc_url = ""
        self.connect_fields: Connect | None = None
        # hold_connect: ``connect`` is reported as a `Connect` event and answered only by accept_connect(); the
        # messages behind it wait (an on_connect callback decides before anything else of the client is looked at)
        self.hold_connect = hold_connect
        self._held: list[Message] | None = None
        self._next_stream_id = 1
        self._streams: set[int] = set()
        self.publishing: Publish | None = None   # a publish request seen (accepted or pending)
        self.publish_accepted = False
        self.playing: Play | None = None
        self.bytes_in = 0

    # -------------------------------------------------------------------------------------------- input
    @property
    def chunk_size(self) -> int:
        """The chunk size of bytes we send (what a relay must serialise with)."""
        return self._writer.chunk_size

    @property
    def handshake_done(self) -> bool:
        return self._handshake.done

    def feed(self, data: bytes, now: float | None = None) -> SessionOutput:
        """Consume received bytes; raise `RtmpError` on any protocol violation (the caller closes the connection)."""
        if now is not None:
            self.last_activity = now
        out = SessionOutput()
        send: list[bytes] = []
        if not self._handshake.done:
            reply = self._handshake.feed(data)
            if reply:
                send.append(reply)
            if not self._handshake.done:
                out.send = b"".join(send)
                return out
            data = self._handshake.leftover
            self._handshake.leftover = b""
        if data:
            self.bytes_in += len(data)
            ack = self._ack.received(len(data))
            self._process(list(self._reader.feed(data)), send, out.events)
            if ack is not None:
                send.append(self._writer.write(ack.to_message()))
        out.send = b"".join(send)
        return out

    def _process(self, messages: list[Message], send: list[bytes], events: list) -> None:
        for i, message in enumerate(messages):
            if self._held is not None:          # a held connect: the rest waits for accept_connect()
                self._held.extend(messages[i:])
                return
            try:
                self._on_message(message, send, events)
            except amf0.Amf0Error as e:     # the shared codec's error is, here, a protocol violation
                raise RtmpError(str(e)) from None

    def _on_message(self, m: Message, send: list[bytes], events: list) -> None:
        t = m.message_type_id
        if is_control(t):
            ctl = parse_control(t, m.payload)   # Set Chunk Size/Abort were already applied by the reader
            if t == MSG_WINDOW_ACK_SIZE:
                self._ack.set_window(ctl.size)
            elif t == MSG_USER_CONTROL and isinstance(ctl, PingRequest):
                send.append(self._writer.write(ctl.ping_response().to_message()))
            # Acknowledgement, SetPeerBandwidth, SetBufferLength, PingResponse, unknown events: nothing to do.
            return
        if t in (MSG_COMMAND_AMF0, MSG_COMMAND_AMF3):
            body = m.payload[1:] if t == MSG_COMMAND_AMF3 and m.payload[:1] == b"\x00" else m.payload
            self._on_command(m, amf0.decode_all(body), send, events)
        elif t in (MSG_DATA_AMF0, MSG_DATA_AMF3):
            body = m.payload[1:] if t == MSG_DATA_AMF3 and m.payload[:1] == b"\x00" else m.payload
            self._on_data(m, body, events)
        elif t in (MSG_AUDIO, MSG_VIDEO):
            if self.publishing is not None and m.payload:
                key, seq = classify_media(m)
                events.append(Media(m, key, seq))
        # Aggregate, shared objects and other types are ignored (never sent by ffmpeg/OBS publishers).

    def _on_data(self, m: Message, body: bytes, events: list) -> None:
        if self.publishing is None:
            return
        first, pos = amf0.decode(body, 0)
        if first == "@setDataFrame":
            body = body[pos:]
            first, _ = amf0.decode(body, 0)
        if first == "onMetaData":
            events.append(Metadata(Message(DATA_CSID, m.timestamp, MSG_DATA_AMF0, m.message_stream_id, bytes(body))))

    def _on_command(self, m: Message, values: list, send: list[bytes], events: list) -> None:
        if not values or not isinstance(values[0], str):
            raise RtmpError("ServerSession.feed: command message without a command name")
        name = values[0]
        tid = values[1] if len(values) > 1 and isinstance(values[1], (int, float)) else 0.0
        args = values[3:]
        if name == "connect":
            self._connect(values[2] if len(values) > 2 else None, tid, send, events)
            return
        if not self.connected:
            raise RtmpError(f"ServerSession.feed: command {name!r} before connect")
        if name == "createStream":
            sid = self._next_stream_id
            self._next_stream_id += 1
            self._streams.add(sid)
            send.append(self._command(0, "_result", tid, None, float(sid)))
        elif name == "releaseStream":
            send.append(self._command(0, "_result", tid, None))
        elif name == "FCPublish":
            stream = args[0] if args and isinstance(args[0], str) else ""
            send.append(self._command(0, "onFCPublish", 0.0, None,
                                      _status("status", "NetStream.Publish.Start", stream)))
        elif name == "publish":
            raw = args[0] if args and isinstance(args[0], str) else ""
            ptype = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
            if self.publishing is not None or self.playing is not None:
                raise RtmpError("ServerSession.feed: publish on a connection that already publishes or plays")
            self.publishing = Publish(self.app, raw.split("?", 1)[0], m.message_stream_id, ptype, raw)
            events.append(self.publishing)
        elif name == "play":
            raw = args[0] if args and isinstance(args[0], str) else ""
            start = float(args[1]) if len(args) > 1 and isinstance(args[1], (int, float)) else -2000.0
            if self.publishing is not None or self.playing is not None:
                raise RtmpError("ServerSession.feed: play on a connection that already publishes or plays")
            duration = float(args[2]) if len(args) > 2 and isinstance(args[2], (int, float)) else 0.0
            reset = bool(args[3]) if len(args) > 3 and isinstance(args[3], (bool, int, float)) else False
            self.playing = Play(self.app, raw.split("?", 1)[0], m.message_stream_id, start, raw, duration, reset)
            events.append(self.playing)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            self._stop(events)
        elif name == "getStreamLength":
            send.append(self._command(0, "_result", tid, None, 0.0))
        # Anything else (_checkbw, receiveAudio, pause, ...) is ignored, like nginx-rtmp does for unknown calls.

    def _connect(self, obj, tid: float, send: list[bytes], events: list) -> None:
        if self.connected or self._held is not None:
            raise RtmpError("ServerSession.feed: connect received twice")
        if not isinstance(obj, dict):
            raise RtmpError("ServerSession.feed: connect without a command object")
        text = {k: v if isinstance(v, str) else "" for k, v in ((k, obj.get(k, "")) for k in
                                                                ("app", "flashVer", "swfUrl", "tcUrl", "pageUrl"))}
        app, _, args = text["app"].partition("?")
        self.app = app.strip("/")
        self.tc_url = text["tcUrl"]
        self.connect_fields = Connect(self.app, args, text["flashVer"], text["swfUrl"], text["tcUrl"], text["pageUrl"])
        self._connect_tid = tid
        if self.hold_connect:
            self._held = []
            events.append(self.connect_fields)
            return
        send.append(self._connect_reply())

    def accept_connect(self, app: str | None = None) -> SessionOutput:
        """Answer the held connect (``app``: another application, an on_connect redirect), then process what the
        client sent behind it."""
        if self._held is None:
            raise RtmpError("ServerSession.accept_connect: no connect held")
        if app is not None:
            self.app = app.strip("/")
        held, self._held = self._held, None
        out = SessionOutput()
        send = [self._connect_reply()]
        self._process(held, send, out.events)
        out.send = b"".join(send)
        return out

    def reject_connect(self, description: str) -> bytes:
        """``_error`` NetConnection.Connect.Rejected for the held connect (the caller closes the connection)."""
        self._held = None
        return self._command(0, "_error", self._connect_tid, None,
                             _status("error", "NetConnection.Connect.Rejected", description))

    def _connect_reply(self) -> bytes:
        self.connected = True
        w = self._writer
        send: list[bytes] = []
        send.append(w.write(WindowAcknowledgementSize(self._window).to_message()))
        send.append(w.write(SetPeerBandwidth(self._window, LimitType.DYNAMIC).to_message()))
        send.append(w.write(SetChunkSize(self._out_chunk_size).to_message()))
        w.set_chunk_size(self._out_chunk_size)
        send.append(self._command(0, "_result", self._connect_tid, {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                                  _status("status", "NetConnection.Connect.Success", "Connection succeeded.",
                                          objectEncoding=0.0)))
        return b"".join(send)

    def _stop(self, events: list) -> None:
        if self.publishing is not None:
            events.append(Unpublish(self.publishing.app, self.publishing.name))
            self.publishing = None
            self.publish_accepted = False
        elif self.playing is not None:
            events.append(StopPlay(self.playing.app, self.playing.name))
            self.playing = None

    # -------------------------------------------------------------------------------------------- output
    def _command(self, stream_id: int, *values) -> bytes:
        return self._writer.write(Message(COMMAND_CSID, 0, MSG_COMMAND_AMF0, stream_id, amf0.encode_all(*values)))

    def _on_status(self, stream_id: int, level: str, code: str, description: str) -> bytes:
        return self._command(stream_id, "onStatus", 0.0, None, _status(level, code, description))

    def accept_publish(self, request: Publish | None = None) -> bytes:
        """Answer ``request`` (default: the pending one). Passing the event matters when one read carried both the
        publish and its end (FCUnpublish/deleteStream): the session has moved on, the answer is still owed."""
        p = self._require(request or self.publishing, "accept_publish")
        self.publish_accepted = self.publishing is p
        return (self._writer.write(StreamBegin(p.stream_id).to_message())
                + self._on_status(p.stream_id, "status", "NetStream.Publish.Start", f"{p.raw_name} is now published."))

    def reject_publish(self, code: str = "NetStream.Publish.BadName", description: str = "",
                       request: Publish | None = None) -> bytes:
        p = self._require(request or self.publishing, "reject_publish")
        if self.publishing is p:
            self.publishing = None
        return self._on_status(p.stream_id, "error", code, description or f"{p.name} is already published.")

    def accept_play(self, request: Play | None = None) -> bytes:
        p = self._require(request or self.playing, "accept_play")
        return (self._writer.write(StreamBegin(p.stream_id).to_message())
                + self._on_status(p.stream_id, "status", "NetStream.Play.Reset", f"Playing and resetting {p.name}.")
                + self._on_status(p.stream_id, "status", "NetStream.Play.Start", f"Started playing {p.name}."))

    def reject_play(self, code: str = "NetStream.Play.StreamNotFound", description: str = "",
                    request: Play | None = None) -> bytes:
        p = self._require(request or self.playing, "reject_play")
        if self.playing is p:
            self.playing = None
        return self._on_status(p.stream_id, "error", code, description or f"No such stream: {p.name}.")

    def rename(self, request: Publish | Play, name: str) -> Publish | Play:
        """``request`` under another stream name of the same application (an on_publish/on_play redirect, the
        control API's redirect); the query of the original name is kept. It replaces the pending request."""
        base, _, query = request.raw_name.partition("?")
        raw = name if "?" in name or not query else f"{name}?{query}"
        new = replace(request, name=raw.split("?", 1)[0], raw_name=raw)
        if self.publishing is request:
            self.publishing = new
        if self.playing is request:
            self.playing = new
        return new

    def unpublish_notify(self) -> bytes:
        """StreamEOF + onStatus NetStream.Play.UnpublishNotify for a player whose publisher left. Serialised with
        type-0 headers on the data chunk stream so that it can be queued among relay bytes."""
        p = self._require(self.playing, "unpublish_notify")
        status = amf0.encode_all("onStatus", 0.0, None,
                                 _status("status", "NetStream.Play.UnpublishNotify", f"{p.name} is now unpublished."))
        return (ChunkWriter.serialize(StreamEOF(p.stream_id).to_message(), self.chunk_size)
                + ChunkWriter.serialize(Message(DATA_CSID, 0, MSG_COMMAND_AMF0, p.stream_id, status), self.chunk_size))

    def send_media(self, message: Message) -> bytes:
        """Bytes carrying one audio/video/data message to this player (for a single subscriber; the relay shares
        `ChunkWriter.serialize` bytes between players instead)."""
        p = self._require(self.playing, "send_media")
        csid = {MSG_AUDIO: AUDIO_CSID, MSG_VIDEO: VIDEO_CSID}.get(message.message_type_id, DATA_CSID)
        return ChunkWriter.serialize(Message(csid, message.timestamp, message.message_type_id, p.stream_id,
                                             message.payload), self.chunk_size)

    @staticmethod
    def _require(value, who: str):
        if value is None:
            raise RtmpError(f"ServerSession.{who}: no such request pending")
        return value
