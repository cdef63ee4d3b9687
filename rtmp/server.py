"""The asyncio edge of the RTMP package: sockets → `ServerSession` → `Relay`, and subscriber queues → sockets.

One task per connection reads, feeds the session, writes its replies and dispatches its events to the relay, in order.
A player gets a second task that drains its `Subscriber` queue (bytes serialised once by the relay). Any `RtmpError`
or socket error closes only that connection, with one log line. A connection that has not started publishing or
playing, or a publisher, that stays silent for ``idle_timeout`` seconds is closed; players may stay quiet.

Policy is injected by the composition root (``rtmp`` never imports ``gateway``):
- ``authorize(action, event, peer)``: awaited for every publish (action ``"publish"``) and play (``"play"``) before it
  is accepted; returns None to allow or a reason to refuse. A refused publisher gets ``NetStream.Publish.BadName``,
  a refused player ``NetStream.Play.Failed``; both are then closed.
- ``pull(event)``: awaited when a player asks for a stream nobody publishes here; returns True once it has claimed the
  key in the relay (an upstream pull), after which the player is subscribed as usual.
- ``notify`` (`Notify`, nginx-rtmp's callbacks): ``check(call, client, event, extra)`` is awaited for ``connect``
  (then the connect is held: nothing the client sent after it is looked at before the answer), ``publish`` and
  ``play`` (after ``authorize``) and every ``update_interval(app)`` seconds for ``update_publish``/``update_play``;
  it returns None (go on), a reason (refuse: ``NetConnection.Connect.Rejected``, ``NetStream.Publish.BadName``,
  ``NetStream.Play.Failed``, or for an update the client is dropped) or a `Redirect` (connect: another app; publish
  and play: another stream name). ``done(call, client, event)`` (``publish_done``, ``play_done``, ``done``) must not
  block: it is called while the stream is torn down.

Every connection has a client id (1, 2, ... per server, nginx-rtmp's ``clientid``); ``clients`` maps them to the live
connections, whose ``drop()`` and ``redirect(name)`` the control API uses.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from rtmp.errors import RtmpError
from rtmp.messages import MSG_DATA_AMF0
from rtmp.relay import Relay, Subscriber
from typing import Awaitable, Callable, Literal, Optional

from rtmp.session import Connect, Media, Metadata, Play, Publish, ServerSession, StopPlay, StreamEvent, Unpublish

__all__ = ["RtmpServer", "serve_rtmp", "Authorize", "Pull", "Notify", "Client", "Redirect"]

Authorize = Callable[[Literal["publish", "play"], StreamEvent, str], Awaitable[Optional[str]]]
Pull = Callable[[Play], Awaitable[bool]]

log = logging.getLogger("rtmp.server")


@dataclass(frozen=True)
class Client:
    """Who a connection is, as nginx-rtmp's callbacks describe it (``ngx_rtmp_netcall_http_format_session``)."""
    client_id: int
    addr: str           # the peer's IP
    app: str
    flashver: str = ""
    swfurl: str = ""
    tcurl: str = ""
    pageurl: str = ""
    args: str = ""      # the query of the connect's app


@dataclass(frozen=True)
class Redirect:
    """A callback's 3xx: go on under this name (an application for connect, a stream name for publish/play)."""
    name: str


class Notify(Protocol):
    async def check(self, call: str, client: Client, event: StreamEvent | Connect | None,
                    extra: dict) -> None | str | Redirect: ...

    def done(self, call: str, client: Client, event: StreamEvent) -> None: ...

    def update_interval(self, app: str) -> float | None: ...


class _Connection:
    def __init__(self, server: RtmpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.session = ServerSession(time.monotonic(), hold_connect=server.notify is not None)
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.addr = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        server.connections_total += 1
        self.client_id = server.connections_total
        self.started = time.monotonic()
        self.publish_event: Publish | None = None   # the accepted publish / play (what done-callbacks describe)
        self.play_event: Play | None = None
        self.updates: asyncio.Task | None = None
        self.last_timestamp = 0
        self.publish_key: str | None = None
        self.play_key: str | None = None
        self.subscriber: Subscriber | None = None
        self.wakeup = asyncio.Event()
        self.pump: asyncio.Task | None = None
        self.backlogged = False
        self.closing = False
        self.high_water = writer.transport.get_write_buffer_limits()[1]

    @property
    def client(self) -> Client:
        c = self.session.connect_fields
        return Client(self.client_id, self.addr, self.session.app, *((c.flashver, c.swfurl, c.tcurl, c.pageurl, c.args)
                                                                      if c is not None else ()))

    def info(self) -> dict:
        """For the control API: who, what, since when."""
        event = self.publish_event or self.play_event
        return {"client_id": self.client_id, "addr": self.addr, "peer": self.peer, "app": self.session.app,
                "role": "publisher" if self.publish_key else "player" if self.play_key else "idle",
                "stream": event.key if event is not None and (self.publish_key or self.play_key) else None,
                "flashver": self.client.flashver, "uptime": round(time.monotonic() - self.started, 3),
                "bytes_in": self.session.bytes_in,
                "bytes_out": self.subscriber.bytes_out if self.subscriber is not None else None}

    def drop(self, reason: str) -> None:
        """Close the connection now (control API, a refused on_update): the read loop ends and tears down."""
        log.info("rtmp %s: dropped: %s", self.peer, reason)
        self.writer.transport.abort()

    async def run(self) -> None:
        relay = self.server.relay
        self.server.clients[self.client_id] = self
        try:
            while True:
                idle = self.server.idle_timeout if self.play_key is None else None
                try:
                    data = await asyncio.wait_for(self.reader.read(65536), idle)
                except asyncio.TimeoutError:
                    log.info("rtmp %s: idle for %.0f s, closing", self.peer, idle)
                    return
                if not data:
                    return
                out = self.session.feed(data, time.monotonic())
                if out.send:
                    self.writer.write(out.send)
                for event in out.events:
                    if not await self._dispatch(event, relay):
                        await self.writer.drain()
                        return
                await self.writer.drain()
        except RtmpError as e:
            log.warning("rtmp %s: closing: %s", self.peer, e)
        except (ConnectionError, OSError) as e:
            log.info("rtmp %s: connection lost: %s", self.peer, e)
        finally:
            self.server.clients.pop(self.client_id, None)
            self._leave(relay)
            if self.pump is not None:
                self.pump.cancel()
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def _refused(self, action: Literal["publish", "play"], event: StreamEvent) -> str | None:
        authorize = self.server.authorize
        if authorize is None:
            return None
        try:
            return await authorize(action, event, self.peer)
        except Exception as e:  # a broken policy refuses rather than letting everyone in
            log.exception("rtmp %s: authorize(%s %s) failed", self.peer, action, event.key)
            return f"authorization failed: {e}"

    async def _check(self, call: str, event, extra: dict | None = None) -> None | str | Redirect:
        try:
            return await self.server.notify.check(call, self.client, event, extra or {})
        except Exception as e:  # a broken hook refuses, like a broken authorize
            log.exception("rtmp %s: notify %s failed", self.peer, call)
            return f"on_{call} failed: {e}"

    def _done(self, call: str, event: StreamEvent) -> None:
        notify = self.server.notify
        if notify is None:
            return
        for name in (call, "done"):
            try:
                notify.done(name, self.client, event)
            except Exception:   # fire-and-forget: never in the way of the teardown
                log.exception("rtmp %s: notify %s failed", self.peer, name)

    async def _dispatch(self, event, relay: Relay) -> bool:
        """Act on one session event; False when the connection must be closed (a refused publish or play)."""
        s = self.session
        if isinstance(event, Connect):
            verdict = await self._check("connect", event)
            if isinstance(verdict, str):
                log.info("rtmp %s: connect to %s refused: %s", self.peer, event.app, verdict)
                self.server.refused += 1
                self.writer.write(s.reject_connect(verdict))
                return False
            out = s.accept_connect(verdict.name if isinstance(verdict, Redirect) else None)
            self.writer.write(out.send)
            for held in out.events:
                if not await self._dispatch(held, relay):
                    return False
            return True
        if isinstance(event, (Publish, Play)):
            action = "publish" if isinstance(event, Publish) else "play"
            reason = await self._refused(action, event)
            if reason is None and self.server.notify is not None:
                verdict = await self._check(action, event)
                if isinstance(verdict, Redirect):
                    log.info("rtmp %s: %s %s redirected to %s", self.peer, action, event.key, verdict.name)
                    event = s.rename(event, verdict.name)
                elif verdict is not None:
                    reason = verdict
            if reason is not None:
                code = "NetStream.Publish.BadName" if isinstance(event, Publish) else "NetStream.Play.Failed"
                log.info("rtmp %s: %s %s refused (%s): %s", self.peer, action, event.key, code, reason)
                self.server.refused += 1
                if isinstance(event, Publish):
                    self.writer.write(s.reject_publish(code, reason, request=event))
                else:
                    self.writer.write(s.reject_play(code, reason, request=event))
                return False
        if isinstance(event, Play) and not relay.is_published(event.key) and self.server.pull is not None:
            try:
                await self.server.pull(event)
            except Exception:
                log.exception("rtmp %s: pull of %s failed", self.peer, event.key)
        if isinstance(event, Media):
            if self.publish_key is not None:
                self.last_timestamp = event.message.timestamp
                relay.media(self.publish_key, event.message, keyframe=event.is_keyframe,
                            sequence_header=event.is_sequence_header)
        elif isinstance(event, Metadata):
            if self.publish_key is not None:
                relay.metadata(self.publish_key, event.message)
        elif isinstance(event, Publish):
            if relay.publish(event.key, self):
                self.publish_key = event.key
                self.publish_event = event
                self.writer.write(s.accept_publish(event))
                log.info("rtmp %s: publishing %s", self.peer, event.key)
                self._start_updates("update_publish", event)
            else:
                self.writer.write(s.reject_publish("NetStream.Publish.BadName", f"{event.key} is already published",
                                                    request=event))
                log.info("rtmp %s: publish %s refused (NetStream.Publish.BadName): busy", self.peer, event.key)
        elif isinstance(event, Play):
            if self._start_play(event):
                self._start_updates("update_play", event)
        elif isinstance(event, Unpublish):
            self._end_publish(relay)
        elif isinstance(event, StopPlay):
            self._end_play(relay)
        return True

    def _start_play(self, event: Play) -> bool:
        s = self.session
        sub = Subscriber(chunk_size=s.chunk_size, stream_id=event.stream_id,
                         max_queue_bytes=self.server.queue_bytes, on_wakeup=self._on_queued,
                         on_unpublish=self._on_unpublish, peer=self.peer, write=self._write_batch)
        sub.client_id = self.client_id
        self.subscriber = sub
        self.backlogged = True      # the cache queued by subscribe() must follow the Play.Start reply
        if self.server.relay.subscribe(event.key, sub):
            self.writer.write(s.accept_play(event))
            self.play_key = event.key
            self.play_event = event
            self.pump = asyncio.create_task(self._pump())
            self.backlogged = False
            self._flush()
            log.info("rtmp %s: playing %s", self.peer, event.key)
            return True
        self.subscriber, self.backlogged = None, False
        self.writer.write(s.reject_play("NetStream.Play.StreamNotFound", f"{event.key} is not published",
                                         request=event))
        return False

    def _end_publish(self, relay: Relay) -> None:
        if self.publish_key is not None:
            relay.unpublish(self.publish_key, self)
            self.publish_key = None
            self._stop_updates()
            self._done("publish_done", self.publish_event)

    def _end_play(self, relay: Relay) -> None:
        if self.play_key is not None and self.subscriber is not None:
            relay.unsubscribe(self.play_key, self.subscriber)
            self.play_key = None
            self._stop_updates()
            if self.pump is not None:
                self.pump.cancel()
                self.pump = None
            self._done("play_done", self.play_event)

    def redirect(self, name: str) -> bool:
        """Move this player (or publisher) to stream ``name`` of its application (control API; nginx-rtmp's
        redirect: the stream is closed and played, or published, again under the new name). A publisher's cached
        metadata and sequence headers go along, so the new stream's players can decode. False when it neither
        plays nor publishes."""
        relay = self.server.relay
        published = self.session.publishing
        if self.publish_key is not None and published is not None:
            headers = relay.headers(self.publish_key)
            self._end_publish(relay)
            new = self.session.rename(published, name)
            if not relay.publish(new.key, self):
                self.drop(f"redirect: {new.key} is already published")
                return True
            self.publish_key, self.publish_event = new.key, new
            log.info("rtmp %s: publish redirected from %s to %s", self.peer, published.key, new.key)
            for m in headers:
                if m.message_type_id == MSG_DATA_AMF0:
                    relay.metadata(new.key, m)
                else:
                    relay.media(new.key, m, keyframe=False, sequence_header=True)
            self._start_updates("update_publish", new)
            return True
        event = self.session.playing
        if self.play_key is None or event is None:
            return False
        self._end_play(self.server.relay)
        new = self.session.rename(event, name)
        log.info("rtmp %s: redirected from %s to %s", self.peer, event.key, new.key)
        if self._start_play(new):
            self._start_updates("update_play", new)
        return True

    def _start_updates(self, call: str, event: StreamEvent) -> None:
        notify = self.server.notify
        interval = notify.update_interval(event.app) if notify is not None else None
        if interval:
            self.updates = asyncio.create_task(self._updates(call, event, interval))

    def _stop_updates(self) -> None:
        if self.updates is not None and self.updates is not asyncio.current_task():
            self.updates.cancel()
        self.updates = None

    async def _updates(self, call: str, event: StreamEvent, interval: float) -> None:
        """nginx-rtmp's on_update: every ``interval`` s while the stream runs; a refusal drops the client."""
        started = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            verdict = await self._check(call, event, {"time": int(time.monotonic() - started),
                                                       "timestamp": self.last_timestamp})
            if isinstance(verdict, str):
                self.server.refused += 1
                self.drop(verdict)
                return

    def _on_unpublish(self) -> None:
        if self.subscriber is not None and self.session.playing is not None:
            self.subscriber.push(self.session.unpublish_notify(), resume_point=True, essential=True)

    # A player's bytes are written from the relay's fan-out while its socket keeps up: once per relay batch when
    # the relay batches (RtmpServer.fan_out_delay), else once per publisher read (`RtmpServer.schedule_flush`
    # gathers them with one call_soon): no task switch and one send() per player per batch or read. Once the
    # transport buffers past its high-water mark the player is "backlogged": the relay queue (bounded, drops to the
    # next key frame) takes over and the pump task drains it at the socket's pace.
    def _on_queued(self) -> None:
        if not self.backlogged:
            if self.server.relay.batch is not None:
                self._flush()  # a whole batch, already gathered: write it now
            else:
                self.server.schedule_flush(self)

    def _write_batch(self, data: bytes) -> bool:
        """A relay batch straight to the socket, unless the player is backlogged (then the relay queues it)."""
        if self.backlogged:
            return False
        transport = self.writer.transport
        if not transport.is_closing():
            transport.write(data)
            if transport.get_write_buffer_size() > self.high_water:
                self.backlogged = True
                self.wakeup.set()
        return True

    def _flush(self) -> None:
        sub = self.subscriber
        transport = self.writer.transport
        if sub is None or transport.is_closing():
            return
        items = sub.pop_all()
        if items:
            self.writer.write(b"".join(items))
        if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            self.backlogged = True
            self.wakeup.set()

    async def _pump(self) -> None:
        sub = self.subscriber
        assert sub is not None
        try:
            while True:
                await self.wakeup.wait()
                self.wakeup.clear()
                await self.writer.drain()
                while sub.queue:
                    self.writer.write(b"".join(sub.pop_all()))
                    await self.writer.drain()
                self.backlogged = False
        except (ConnectionError, OSError) as e:
            log.info("rtmp %s: player write failed: %s", self.peer, e)
            self.writer.close()

    def _leave(self, relay: Relay) -> None:
        if self.publish_key is not None:
            log.info("rtmp %s: stream %s ended", self.peer, self.publish_key)
            self._end_publish(relay)
        self._end_play(relay)
        self._stop_updates()


class RtmpServer:
    """Owns the listening socket and the live connections. ``port`` is the bound port (useful with port 0)."""

    def __init__(self, relay: Relay | None = None, *, idle_timeout: float = 30.0,
                 queue_bytes: int = 4 * 1024 * 1024, authorize: Authorize | None = None,
                 pull: Pull | None = None, fan_out_delay: float = 0.0, notify: Notify | None = None) -> None:
        self.relay = relay if relay is not None else Relay()
        # > 0: the relay batches each stream's messages for this long (Relay's docstring) and every batch is written
        # to each player at once; 0: each message is written in the loop turn that read it
        self.fan_out_delay = fan_out_delay
        self.idle_timeout = idle_timeout
        self.queue_bytes = queue_bytes
        self.authorize = authorize
        self.pull = pull
        self.notify = notify
        self.clients: dict[int, _Connection] = {}   # client id → live connection (control API)
        self.refused = 0
        self._dirty: dict[_Connection, None] = {}    # players with queued bytes, flushed once per loop turn
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.connections_total = 0
        self.errors = 0

    def schedule_flush(self, connection: _Connection) -> None:
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._flush_dirty)
        self._dirty[connection] = None

    def _flush_dirty(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for connection in dirty:
            if not connection.backlogged:
                connection._flush()

    async def start(self, host: str, port: int) -> asyncio.Server:
        if self.fan_out_delay > 0 and self.relay.batch is None:
            loop = asyncio.get_running_loop()
            self.relay.batch = lambda flush: loop.call_later(self.fan_out_delay, flush)
        self.server = await asyncio.start_server(self._accept, host, port)
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await _Connection(self, reader, writer).run()
        except asyncio.CancelledError:
            pass    # close(): the connection's finally already ran; end the task quietly (asyncio logs cancelled ones)
        except Exception:  # never let one connection's bug reach the others or the loop
            self.errors += 1
            log.exception("rtmp: connection handler failed")
        finally:
            if task is not None:
                self._tasks.discard(task)

    def stats(self) -> dict:
        return {"connections": len(self._tasks), "connections_total": self.connections_total,
                "refused": self.refused, "errors": self.errors, "streams": self.relay.stats()}

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


async def serve_rtmp(host: str, port: int, relay: Relay | None = None, **options) -> RtmpServer:
    """Start listening; return the `RtmpServer` (its ``.server`` is the `asyncio.Server`, ``.port`` the bound port)."""
    server = RtmpServer(relay, **options)
    await server.start(host, port)
    return server
