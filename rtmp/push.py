"""Push relays: every stream published in an application with ``push`` targets is re-published to each target
(``rtmp://host[:port]/app[/stream]``; without a stream part the stream keeps its name), like nginx-rtmp's ``push``.

`PushRelay` is a `RelayTap`. For each (stream, target) a task connects an `RtmpClient`, publishes, and then subscribes
to the relay like a player: a `Subscriber` with a bounded queue, filled with bytes the relay serialises once for the
client's chunk size and stream id. The publisher never waits for a target: a slow target's queue drops to the next
key frame (counted), a dead one is reconnected with capped exponential backoff (1, 2, 4 .. 30 s) while the stream is
published, and each new connection starts at the relay's GOP cache (metadata, sequence headers, current GOP).

Metadata: players receive ``onMetaData``; a publisher must send ``@setDataFrame onMetaData`` (nginx-rtmp accepts both,
Wowza and CDN ingests expect the latter), so the target queue rewrites that one message type.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from rtmp.chunk import ChunkReader, ChunkWriter
from rtmp.client import RtmpClient, parse_rtmp_url, set_data_frame
from rtmp.config import RtmpConfig
from rtmp.errors import RtmpError
from rtmp.messages import MSG_DATA_AMF0, Message
from rtmp.relay import Relay, Subscriber
from rtmp.session import DATA_CSID

__all__ = ["PushRelay"]

log = logging.getLogger("rtmp.push")


class _TargetQueue(Subscriber):
    """A push target's queue: the relay's bytes, metadata rewritten for a publisher, nothing more once stopped (a new
    publisher of the same key inherits the relay's subscriber list until this queue is unsubscribed)."""
    stopped = False

    def push(self, data: bytes, *, resume_point: bool, essential: bool = False) -> bool:
        if self.stopped:
            return False
        # A type-0 message on the data chunk stream with type id 18 (bytes 0 and 7): the relay's onMetaData.
        if essential and data[0] == DATA_CSID and data[7] == MSG_DATA_AMF0:
            (m,) = ChunkReader(self.chunk_size).feed(data)
            data = ChunkWriter.serialize(replace(m, payload=set_data_frame(m.payload)), self.chunk_size)
        return super().push(data, resume_point=resume_point, essential=essential)

    def push_batch(self, data: bytes) -> bool:
        """Never whole: a batch would skip ``push`` (the stop and the metadata rewrite above). A stream has a few
        push targets, not thousands of players: message by message costs nothing here."""
        return False


class _Push:
    """One stream → one target, for as long as the stream is published."""

    def __init__(self, owner: PushRelay, key: str, target: str) -> None:
        self.owner = owner
        self.key = key
        self.target = target
        url = parse_rtmp_url(target)
        self.connect_url = url.tc_url
        self.name = url.stream or key.partition("/")[2]
        self.stopped = False
        self.client: RtmpClient | None = None
        self._give_up_handle: asyncio.TimerHandle | None = None
        self.wakeup = asyncio.Event()
        self.stop_event = asyncio.Event()
        self.queue: _TargetQueue | None = None
        self.connected = False
        self.connects = 0
        self.reconnects = 0
        self.bytes = 0          # sent to the target, over all connections
        self.drops = 0          # messages dropped because the target was too slow
        self.last_error: str | None = None
        self.task: asyncio.Task | None = None

    def stop(self) -> None:
        """End after flushing what is queued; a target that does not take it within ``flush_timeout`` is dropped."""
        if self.stopped:
            return
        self.stopped = True
        if self.queue is not None:
            self.queue.stopped = True
        self.stop_event.set()
        self.wakeup.set()
        if self.client is not None:
            self._give_up_handle = asyncio.get_running_loop().call_later(self.owner.flush_timeout, self._give_up)

    def _give_up(self) -> None:
        if self.client is not None and not self.client.closed:
            log.warning("rtmp push %s -> %s: target did not take the rest of the stream within %s s, dropped",
                        self.key, self.target, self.owner.flush_timeout)
            self.client.abort()

    def stats(self) -> dict:
        q = self.queue
        return {"stream": self.key, "target": self.target, "connected": self.connected, "connects": self.connects,
                "reconnects": self.reconnects, "bytes": self.bytes + (q.bytes_out if q else 0),
                "drops": self.drops + (q.dropped if q else 0), "last_error": self.last_error}

    async def run(self) -> None:
        relay, owner = self.owner.relay, self.owner
        delay = owner.backoff_initial
        while not self.stopped:
            client: RtmpClient | None = None
            connected_at = None
            try:
                client = self.client = await RtmpClient.connect(self.connect_url, chunk_size=owner.chunk_size,
                                                                timeout=owner.timeout)
                await client.publish(self.name)
                if self.stopped:
                    break
                self.queue = _TargetQueue(chunk_size=client.chunk_size, stream_id=client.stream_id,
                                          max_queue_bytes=owner.queue_bytes, on_wakeup=self.wakeup.set,
                                          on_unpublish=self.stop)
                if not relay.subscribe(self.key, self.queue):
                    break   # the stream ended while we were connecting
                self.connected, self.connects = True, self.connects + 1
                connected_at = time.monotonic()
                log.info("rtmp push %s -> %s: publishing", self.key, self.target)
                await self._pump(client, self.queue)
            except (RtmpError, OSError, EOFError, TimeoutError) as e:
                self.last_error = str(e) or type(e).__name__
                log.warning("rtmp push %s -> %s: %s", self.key, self.target, self.last_error)
            finally:
                self.connected = False
                if self.queue is not None:
                    relay.unsubscribe(self.key, self.queue)
                    self.bytes += self.queue.bytes_out
                    self.drops += self.queue.dropped
                    self.queue = None
                if client is not None:
                    await client.close()
                    self.client = None
            if self.stopped:
                break
            if connected_at is not None and time.monotonic() - connected_at >= owner.backoff_max:
                delay = owner.backoff_initial    # it worked for a while: retry quickly
            try:
                await asyncio.wait_for(self.stop_event.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, owner.backoff_max)
            if not self.stopped:
                self.reconnects += 1
        if self._give_up_handle is not None:
            self._give_up_handle.cancel()

    async def _pump(self, client: RtmpClient, queue: _TargetQueue) -> None:
        """Send queued bytes until the stream stops (then flush and return) or the target fails (raise)."""
        watcher = asyncio.create_task(client.wait_closed())
        watcher.add_done_callback(lambda _: self.wakeup.set())
        try:
            while True:
                await self.wakeup.wait()
                self.wakeup.clear()
                items = queue.pop_all()
                if items:
                    try:
                        await asyncio.wait_for(client.send_raw(b"".join(items)), self.owner.stall_timeout)
                    except TimeoutError:
                        raise RtmpError(f"target stopped reading for {self.owner.stall_timeout} s") from None
                if self.stopped:
                    return
                if client.closed:
                    raise ConnectionError(f"target closed the connection: {client.close_reason}")
        finally:
            watcher.cancel()


class PushRelay:
    """The relay tap that runs push targets; ``stats()`` per (stream, target), ``close()`` stops them all."""

    def __init__(self, relay: Relay, config: RtmpConfig, *, queue_bytes: int = 4 * 1024 * 1024,
                 chunk_size: int = 4096, timeout: float = 10.0, backoff_initial: float = 1.0,
                 backoff_max: float = 30.0, stall_timeout: float = 30.0, flush_timeout: float = 2.0) -> None:
        self.relay = relay
        self.config = config
        self.queue_bytes = queue_bytes
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stall_timeout = stall_timeout     # a target that takes nothing for this long is reconnected
        self.flush_timeout = flush_timeout     # after unpublish, time a target gets to take the queued rest
        self._pushes: dict[str, list[_Push]] = {}
        self._tasks: set[asyncio.Task] = set()

    # RelayTap: called synchronously by the relay, so only bookkeeping and task creation here.
    def on_publish(self, key: str) -> None:
        for target in self.config.for_app(key.partition("/")[0]).push:
            self.push_to(key, target)

    def push_to(self, key: str, target: str) -> None:
        """Relay the published stream ``key`` to ``target`` until it is unpublished: a configured target, or an
        on_publish callback's redirect to an rtmp:// URL (nginx-rtmp's notify push; rtmp.hooks)."""
        push = _Push(self, key, target)
        push.task = asyncio.get_running_loop().create_task(push.run(), name=f"rtmp push {key} -> {target}")
        self._tasks.add(push.task)
        push.task.add_done_callback(self._tasks.discard)
        self._pushes.setdefault(key, []).append(push)

    def on_message(self, key: str, message: Message, *, keyframe: bool, sequence_header: bool) -> None:
        pass    # the target queues get the relay's serialised bytes

    def on_unpublish(self, key: str) -> None:
        for push in self._pushes.pop(key, ()):
            push.stop()     # flushes what is queued, says goodbye to the target, ends

    def stats(self) -> dict[str, dict]:
        return {f"{p.key} -> {p.target}": p.stats() for pushes in self._pushes.values() for p in pushes}

    async def close(self) -> None:
        for pushes in self._pushes.values():
            for push in pushes:
                push.stop()
        self._pushes.clear()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.flush_timeout + 1.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
