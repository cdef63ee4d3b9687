"""asyncio RTMP client for one stream (publish or play), on the sans-I/O pieces: `ClientHandshake`, `ChunkReader`/
`ChunkWriter`, AMF0. Push relays publish with it to other servers; pulls play from an upstream.

One background task reads the socket for the whole connection. It answers the protocol itself — Acknowledgements once
the server's Window Acknowledgement Size is reached, Ping responses, a Window Ack Size after Set Peer Bandwidth (spec
1.0 §5.4) — lets the `ChunkReader` apply the server's Set Chunk Size, resolves command results, and queues a player's
media in a bounded queue: a consumer that stops reading stops the socket reads, and TCP pushes back on the server.

Media goes out with type-0 chunk headers (`ChunkWriter.serialize`) on the chunk streams the server session uses
(audio 4, data 5, video 6), so `send` and `send_raw` (a relay's pre-serialised bytes) can share one connection: the
only compressed headers this client writes are its control (2) and command (3) chunk streams.

Errors: `RtmpError` for protocol failures, refusals (the server's code is in the message, e.g.
``NetConnection.Connect.Rejected``, ``NetStream.Publish.BadName``) and unanswered requests; `OSError` when the TCP
connection fails; `ConnectionError` when sending on a closed connection.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from packagers.codecs import amf0
from rtmp.chunk import ChunkReader, ChunkWriter
from rtmp.errors import RtmpError
from rtmp.handshake import ClientHandshake
from rtmp.messages import (MSG_AUDIO, MSG_COMMAND_AMF0, MSG_COMMAND_AMF3, MSG_DATA_AMF0, MSG_DATA_AMF3,
                           MSG_SET_PEER_BANDWIDTH, MSG_VIDEO, MSG_WINDOW_ACK_SIZE, AckTracker, Message, PingRequest,
                           SetBufferLength, SetChunkSize, StreamEOF, WindowAcknowledgementSize, is_control,
                           parse_control)
from rtmp.session import AUDIO_CSID, COMMAND_CSID, DATA_CSID, VIDEO_CSID

__all__ = ["RtmpClient", "RtmpUrl", "parse_rtmp_url", "set_data_frame", "DEFAULT_PORT"]

log = logging.getLogger("rtmp.client")

DEFAULT_PORT = 1935
SET_DATA_FRAME = amf0.encode("@setDataFrame")
ON_METADATA = amf0.encode("onMetaData")
# A player's stream has ended: nginx-rtmp sends only StreamEOF by default, Play.UnpublishNotify with publish_notify
# on, Play.Stop with play_restart on; our server sends StreamEOF + UnpublishNotify.
_END_CODES = frozenset({"NetStream.Play.UnpublishNotify", "NetStream.Play.Stop", "NetStream.Play.Complete"})
_END = object()     # queue marker: the played stream ended


@dataclass(frozen=True)
class RtmpUrl:
    """``rtmp://host[:port]/app[/stream]``; ``stream`` keeps its ``?query`` (stream keys travel there)."""
    netloc: str
    host: str
    port: int
    app: str
    stream: str | None

    @property
    def tc_url(self) -> str:
        return f"rtmp://{self.netloc}/{self.app}"


def parse_rtmp_url(url: str) -> RtmpUrl:
    parts = urlsplit(url)
    app, _, stream = parts.path.strip("/").partition("/")
    if parts.scheme != "rtmp" or not parts.hostname or not app:
        raise RtmpError(f"parse_rtmp_url: {url!r} is not rtmp://host[:port]/app[/stream]")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise RtmpError(f"parse_rtmp_url: bad port in {url!r}") from None
    if parts.query:
        if stream:
            stream = f"{stream}?{parts.query}"
        else:   # rtmp://host/app?token: the query belongs to the application (Wowza-style connect auth)
            app = f"{app}?{parts.query}"
    return RtmpUrl(parts.netloc.rpartition("@")[2], parts.hostname, port, app, stream or None)


def set_data_frame(payload: bytes) -> bytes:
    """A publisher sends metadata as ``@setDataFrame onMetaData {...}`` (the FMLE convention that nginx-rtmp, Wowza
    and the big CDNs expect); players receive ``onMetaData {...}``. Other data payloads are returned unchanged."""
    return SET_DATA_FRAME + payload if payload.startswith(ON_METADATA) else payload


class RtmpClient:
    """One RTMP connection that publishes or plays one stream. Create it with ``await RtmpClient.connect(url)``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: RtmpUrl, *,
                 chunk_size: int, timeout: float, media_queue: int = 1024) -> None:
        self.url = url
        self.chunk_size = chunk_size    # of the bytes we send: what a relay serialises with
        self.stream_id = 0              # from createStream
        self.timeout = timeout
        self._r, self._w = reader, writer
        self._in = ChunkReader()
        self._out = ChunkWriter()
        self._ack = AckTracker(0)
        self._window_sent = 0
        self._tid = 1
        self._calls: dict[float, asyncio.Future] = {}
        self._statuses: asyncio.Queue = asyncio.Queue()
        self._media: asyncio.Queue = asyncio.Queue(media_queue)
        self._reader_task: asyncio.Task | None = None
        self._closed = asyncio.Event()
        self.close_reason = ""
        self._publish_name: str | None = None
        self._playing = False
        self._play_started = False
        self._ended = False
        self.end_reason = ""
        self.bytes_in = 0

    # -------------------------------------------------------------------------------------------- setup
    @classmethod
    async def connect(cls, url: str, *, chunk_size: int = 4096, timeout: float = 10.0) -> RtmpClient:
        """TCP connect, handshake, Set Chunk Size, ``connect(app, tcUrl)``; raises `RtmpError` on refusal."""
        u = parse_rtmp_url(url)
        SetChunkSize(chunk_size)    # validates
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(u.host, u.port)
                self = cls(reader, writer, u, chunk_size=chunk_size, timeout=timeout)
                try:
                    leftover = await self._handshake()
                    self._reader_task = asyncio.create_task(self._read_loop(leftover))
                    self._w.write(self._out.write(SetChunkSize(chunk_size).to_message()))
                    self._out.set_chunk_size(chunk_size)
                    name, values = await self._call("connect", obj={
                        "app": u.app, "type": "nonprivate", "flashVer": "FMLE/3.0 (compatible; media-gateway)",
                        "tcUrl": u.tc_url, "fpad": False, "capabilities": 15.0, "audioCodecs": 4071.0,
                        "videoCodecs": 252.0, "videoFunction": 1.0})
                except BaseException:
                    await self.close()
                    raise
        except TimeoutError:
            raise RtmpError(f"RtmpClient.connect: {url}: no answer within {timeout} s") from None
        info = values[1] if len(values) > 1 and isinstance(values[1], dict) else {}
        code = info.get("code", "")
        if name != "_result" or code != "NetConnection.Connect.Success":
            await self.close()
            raise RtmpError(f"RtmpClient.connect: {url}: {code or name}: {info.get('description', '')}")
        return self

    async def _handshake(self) -> bytes:
        hs = ClientHandshake()
        self._w.write(hs.start())
        while not hs.done:
            data = await self._r.read(65536)
            if not data:
                raise RtmpError(f"RtmpClient.connect: {self.url.tc_url}: connection closed during the handshake")
            reply = hs.feed(data)
            if reply:
                self._w.write(reply)
        return hs.leftover

    async def publish(self, name: str) -> None:
        """releaseStream, FCPublish, createStream, publish(name, "live"); returns at NetStream.Publish.Start."""
        if self._publish_name is not None or self._playing:
            raise RtmpError("RtmpClient.publish: this connection already publishes or plays")
        self._publish_name = name
        self._command("releaseStream", float(self._next_tid()), None, name)
        self._command("FCPublish", float(self._next_tid()), None, name)
        await self._create_stream()
        self._command("publish", 0.0, None, name, "live", stream_id=self.stream_id)
        await self._wait_status("NetStream.Publish.Start", "publish", name)

    async def play(self, name: str) -> None:
        """createStream, play(name, -2000) (live, or recorded if there is no live stream); returns at Play.Start."""
        if self._publish_name is not None or self._playing:
            raise RtmpError("RtmpClient.play: this connection already publishes or plays")
        await self._create_stream()
        self._playing = True
        self._command("play", 0.0, None, name, -2000.0, stream_id=self.stream_id)
        self._w.write(self._out.write(SetBufferLength(self.stream_id, 3000).to_message()))
        await self._wait_status("NetStream.Play.Start", "play", name)

    async def _create_stream(self) -> None:
        name, values = await self._call("createStream")
        if name != "_result" or len(values) < 2 or not isinstance(values[1], (int, float)):
            raise RtmpError(f"RtmpClient.createStream: unexpected answer {name} {values!r}")
        self.stream_id = int(values[1])

    # -------------------------------------------------------------------------------------------- media
    async def send(self, message: Message) -> None:
        """Send a publisher's audio, video or data message on our stream (timestamp and payload as given)."""
        if self._publish_name is None:
            raise RtmpError("RtmpClient.send: publish() first")
        t = message.message_type_id
        csid = AUDIO_CSID if t == MSG_AUDIO else VIDEO_CSID if t == MSG_VIDEO else DATA_CSID
        payload = set_data_frame(message.payload) if t == MSG_DATA_AMF0 else message.payload
        await self.send_raw(ChunkWriter.serialize(Message(csid, message.timestamp, t, self.stream_id, payload),
                                                  self.chunk_size))

    async def send_raw(self, data: bytes) -> None:
        """Send bytes already chunked for this connection (type-0 headers, our chunk size and stream id)."""
        if self._closed.is_set():
            raise ConnectionError(f"RtmpClient.send_raw: connection closed: {self.close_reason}")
        self._w.write(data)
        await self._w.drain()

    async def read_message(self) -> Message:
        """The next audio, video or ``onMetaData`` message of the played stream (``@setDataFrame`` removed).
        Raises EOFError once the stream ended (StreamEOF, Play.UnpublishNotify/Stop, connection closed)."""
        while True:
            if self._ended and self._media.empty():
                raise EOFError(f"RtmpClient.read_message: stream ended: {self.end_reason}")
            item = await self._media.get()
            if item is not _END:
                return item

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Returns when the connection is gone (closed by either side)."""
        await self._closed.wait()

    async def close(self) -> None:
        """Say goodbye (FCUnpublish/deleteStream) when still connected, then close the socket."""
        if not self._closed.is_set() and self.stream_id:
            if self._publish_name is not None:
                self._command("FCUnpublish", float(self._next_tid()), None, self._publish_name)
            self._command("deleteStream", float(self._next_tid()), None, float(self.stream_id))
        self._finish("closed by the client")
        task = self._reader_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._w.close()     # buffered bytes (the goodbye) are still flushed before the socket closes
        try:
            await asyncio.wait_for(self._w.wait_closed(), 2.0)
        except (OSError, TimeoutError):
            self.abort()    # a peer that reads nothing would keep the socket and its buffer forever

    def abort(self) -> None:
        """Drop the connection at once, unsent bytes included (a blocked `send_raw` raises ConnectionError)."""
        self._finish("aborted by the client")
        self._w.transport.abort()

    # -------------------------------------------------------------------------------------------- commands
    def _next_tid(self) -> int:
        self._tid += 1
        return self._tid

    def _command(self, name: str, tid: float, obj, *args, stream_id: int = 0) -> None:
        try:
            payload = amf0.encode_all(name, tid, obj, *args)
        except amf0.Amf0Error as e:     # arguments AMF0 cannot carry: the caller's error, reported as before
            raise RtmpError(str(e)) from None
        self._w.write(self._out.write(Message(COMMAND_CSID, 0, MSG_COMMAND_AMF0, stream_id, payload)))

    async def _call(self, name: str, *args, obj=None) -> tuple[str, list]:
        """Send a command and wait for its ``_result``/``_error``: (that name, the values after the transaction id)."""
        if self._closed.is_set():
            raise RtmpError(f"RtmpClient.{name}: connection closed: {self.close_reason}")
        tid = float(1 if name == "connect" else self._next_tid())
        future = asyncio.get_running_loop().create_future()
        self._calls[tid] = future
        self._command(name, tid, obj, *args)
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            raise RtmpError(f"RtmpClient.{name}: no answer within {self.timeout} s") from None
        finally:
            self._calls.pop(tid, None)

    async def _wait_status(self, success: str, what: str, name: str) -> None:
        """Wait for onStatus ``success``; an error-level status (or the connection closing) raises with its code."""
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    info = await self._statuses.get()
                    if info is None:
                        self._statuses.put_nowait(None)     # keep the marker for any later waiter
                        raise RtmpError(f"RtmpClient.{what}: {name}: connection closed: {self.close_reason}")
                    code = str(info.get("code", ""))
                    if code == success:
                        return
                    if info.get("level") == "error" or code.endswith((".Failed", ".BadName", ".StreamNotFound",
                                                                       ".Rejected")):
                        raise RtmpError(f"RtmpClient.{what}: {name}: {code}: {info.get('description', '')}")
                    # Play.Reset, Play.PublishNotify, Data.Start and the like: informational
        except TimeoutError:
            raise RtmpError(f"RtmpClient.{what}: {name}: no {success} within {self.timeout} s") from None

    # -------------------------------------------------------------------------------------------- input
    async def _read_loop(self, leftover: bytes) -> None:
        reason = "connection closed by the server"
        try:
            if leftover:
                await self._on_bytes(leftover)
            while True:
                data = await self._r.read(65536)
                if not data:
                    break
                await self._on_bytes(data)
        except (RtmpError, amf0.Amf0Error) as e:     # a malformed command from the server is a protocol failure
            reason = str(e)
            log.warning("rtmp client %s: %s", self.url.tc_url, e)
        except (ConnectionError, OSError) as e:
            reason = f"connection lost: {e}"
        except Exception as e:  # a bug here must still end the connection, not leave waiters hanging
            reason = f"client error: {e!r}"
            log.exception("rtmp client %s: reader failed", self.url.tc_url)
        finally:
            self._finish(reason)

    async def _on_bytes(self, data: bytes) -> None:
        self.bytes_in += len(data)
        ack = self._ack.received(len(data))
        if ack is not None:
            self._w.write(self._out.write(ack.to_message()))
        for m in self._in.feed(data):
            await self._on_message(m)

    async def _on_message(self, m: Message) -> None:
        t = m.message_type_id
        if is_control(t):
            ctl = parse_control(t, m.payload)   # Set Chunk Size and Abort were applied by the ChunkReader
            if t == MSG_WINDOW_ACK_SIZE:
                self._ack.set_window(ctl.size)
            elif t == MSG_SET_PEER_BANDWIDTH and ctl.size != self._window_sent:
                self._window_sent = ctl.size
                self._w.write(self._out.write(WindowAcknowledgementSize(ctl.size).to_message()))
            elif isinstance(ctl, PingRequest):
                self._w.write(self._out.write(ctl.ping_response().to_message()))
            elif isinstance(ctl, StreamEOF) and self._play_started and ctl.stream_id == self.stream_id:
                self._end("StreamEOF")
            return
        if t in (MSG_COMMAND_AMF0, MSG_COMMAND_AMF3):
            body = m.payload[1:] if t == MSG_COMMAND_AMF3 and m.payload[:1] == b"\x00" else m.payload
            self._on_command(amf0.decode_all(body))
        elif not self._playing or self._ended:
            return
        elif t in (MSG_AUDIO, MSG_VIDEO):
            if m.payload:
                await self._media.put(m)
        elif t in (MSG_DATA_AMF0, MSG_DATA_AMF3):
            body = m.payload[1:] if t == MSG_DATA_AMF3 and m.payload[:1] == b"\x00" else m.payload
            if body.startswith(SET_DATA_FRAME):
                body = body[len(SET_DATA_FRAME):]
            if body.startswith(ON_METADATA):    # |RtmpSampleAccess, onTextData, ...: not a relay's business
                await self._media.put(Message(DATA_CSID, m.timestamp, MSG_DATA_AMF0, m.message_stream_id, body))
        # Aggregate messages (Wowza) and shared objects are not supported; nginx-rtmp and our server send neither.

    def _on_command(self, values: list) -> None:
        if not values or not isinstance(values[0], str):
            raise RtmpError("RtmpClient: command message without a command name")
        name = values[0]
        if name in ("_result", "_error"):
            future = self._calls.get(values[1] if len(values) > 1 else None)
            if future is not None and not future.done():
                future.set_result((name, values[2:]))
        elif name == "onStatus":
            info = values[3] if len(values) > 3 and isinstance(values[3], dict) else {}
            code = info.get("code")
            if code == "NetStream.Play.Start" and self._playing:
                self._play_started = True   # here, in message order, so a StreamEOF right behind it counts
            if self._play_started and code in _END_CODES:
                self._end(code)
            self._statuses.put_nowait(info)
            while self._statuses.qsize() > 64:  # nobody waits on them once publishing/playing: keep a few
                self._statuses.get_nowait()
        # onBWDone, onFCPublish, ...: nothing to do

    def _end(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        self.end_reason = reason
        try:
            self._media.put_nowait(_END)
        except asyncio.QueueFull:
            pass    # read_message sees _ended once the consumer has drained the queue

    def _finish(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason
        self._closed.set()
        self._end(reason)
        self._statuses.put_nowait(None)
        for future in self._calls.values():
            if not future.done():
                future.set_exception(RtmpError(f"RtmpClient: {self.url.tc_url}: connection closed before the answer: "
                                                f"{reason}"))
