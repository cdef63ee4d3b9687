"""The asyncio edge of the RTMP package: sockets → `ServerSession` → `Relay`, and subscriber queues → sockets.

One task per connection reads, feeds the session, writes its replies and dispatches its events to the relay, in order.
A player gets a second task that drains its `Subscriber` queue (bytes serialised once by the relay). Any `RtmpError`
or socket error closes only that connection, with one log line. A connection that has not started publishing or
playing, or a publisher, that stays silent for ``idle_timeout`` seconds is closed; players may stay quiet.

Policy (``authorize``, ``pull``, ``push``, ``notify``: nginx-rtmp's callbacks) is injected by the composition root and
applied by rtmp/hooks.py (`ConnectionHooks`, mixed into each connection).

Every connection has a client id (1, 2, ... per server, nginx-rtmp's ``clientid``); ``clients`` maps them to the live
connections, whose ``drop()`` and ``redirect(name)`` the control API uses.
"""
from __future__ import annotations

import asyncio
import logging
import time

from rtmp.errors import RtmpError
from rtmp.hooks import Authorize, Client, ConnectionHooks, Notify, Pull, Push, Redirect
from rtmp.relay import Relay, Subscriber
from rtmp.session import Connect, Media, Metadata, Play, Publish, ServerSession, StopPlay, Unpublish

__all__ = ["RtmpServer", "serve_rtmp", "Authorize", "Pull", "Push", "Notify", "Client", "Redirect"]

log = logging.getLogger("rtmp.server")
CLOSE_WAIT = 5.0  # seconds close() waits for cancelled connections before aborting their sockets


class _Connection(ConnectionHooks):
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
        self.publish_since = (0.0, 0)  # (monotonic time, session bytes_in) when the publish was accepted
        self.play_key: str | None = None
        self.play_since = 0.0
        self.subscriber: Subscriber | None = None
        self.wakeup = asyncio.Event()
        self.pump: asyncio.Task | None = None
        self.backlogged = False
        self.closing = False
        self.high_water = writer.transport.get_write_buffer_limits()[1]

    async def run(self) -> None:
        relay = self.server.relay
        self.server.clients[self.client_id] = self
        try:
            while True:
                idle = self.server.idle_timeout if self.play_key is None else None
                try:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancel that comes as the
                    # read completes, and the server's close() would then wait for this task forever
                    async with asyncio.timeout(idle):
                        data = await self.reader.read(65536)
                except TimeoutError:
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

    async def _dispatch(self, event, relay: Relay) -> bool:
        """Act on one session event; False when the connection must be closed (a refused publish or play)."""
        s = self.session
        if isinstance(event, Connect):
            return await self._admit_connect(event, relay)
        if isinstance(event, (Publish, Play)):
            event = await self._admit(event)
            if event is None:
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
                self.publish_since = (time.monotonic(), s.bytes_in)
                self.writer.write(s.accept_publish(event))
                log.info("rtmp %s: publishing %s", self.peer, event.key)
                self._published(event)
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
            self.play_since = time.monotonic()
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
            started, bytes_before = self.publish_since
            log.info("rtmp %s: publish of %s ended after %.1f s, %d bytes received", self.peer, self.publish_key,
                     time.monotonic() - started, self.session.bytes_in - bytes_before)
            relay.unpublish(self.publish_key, self)
            self.publish_key = None
            self._stop_updates()
            self._done("publish_done", self.publish_event)

    def _end_play(self, relay: Relay) -> None:
        if self.play_key is not None and self.subscriber is not None:
            log.info("rtmp %s: player of %s left after %.1f s, %d bytes sent", self.peer, self.play_key,
                     time.monotonic() - self.play_since, self.subscriber.bytes_out)
            relay.unsubscribe(self.play_key, self.subscriber)
            self.play_key = None
            self._stop_updates()
            if self.pump is not None:
                self.pump.cancel()
                self.pump = None
            self._done("play_done", self.play_event)

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
            self._end_publish(relay)
        self._end_play(relay)
        self._stop_updates()


class RtmpServer:
    """Owns the listening socket and the live connections. ``port`` is the bound port (useful with port 0)."""

    def __init__(self, relay: Relay | None = None, *, idle_timeout: float = 30.0,
                 queue_bytes: int = 4 * 1024 * 1024, authorize: Authorize | None = None,
                 pull: Pull | None = None, fan_out_delay: float = 0.0, notify: Notify | None = None,
                 push: Push | None = None) -> None:
        self.relay = relay if relay is not None else Relay()
        # > 0: the relay batches each stream's messages for this long (Relay's docstring) and every batch is written
        # to each player at once; 0: each message is written in the loop turn that read it
        self.fan_out_delay = fan_out_delay
        self.idle_timeout = idle_timeout
        self.queue_bytes = queue_bytes
        self.authorize = authorize
        self.pull = pull
        self.push = push
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
            _, stuck = await asyncio.wait(list(self._tasks), timeout=CLOSE_WAIT)
            if stuck:  # a cancel lost in a library's wait: end their reads by closing the sockets, then cancel again
                log.warning("rtmp: %d connection(s) did not stop when cancelled; aborting their sockets", len(stuck))
                for client in list(self.clients.values()):
                    client.writer.transport.abort()
                for t in stuck:
                    t.cancel()
                await asyncio.wait(stuck, timeout=CLOSE_WAIT)
        if self.server is not None:
            await self.server.wait_closed()


async def serve_rtmp(host: str, port: int, relay: Relay | None = None, **options) -> RtmpServer:
    """Start listening; return the `RtmpServer` (its ``.server`` is the `asyncio.Server`, ``.port`` the bound port)."""
    server = RtmpServer(relay, **options)
    await server.start(host, port)
    return server
