"""Pulls: a player asks for ``app/stream`` that nobody publishes here, the application has ``pull =
"rtmp://upstream/app"``, so the stream is played from the upstream and published into the relay (nginx-rtmp's
``pull``). One upstream connection serves every local player of the stream.

`Puller` is the server's ``pull`` hook. It claims the key in the relay at once and returns True, so the player is
subscribed and gets data as it arrives; a task connects an `RtmpClient`, plays the stream upstream and feeds its
messages to ``relay.metadata``/``relay.media``. The pull ends (unpublish → players get Play.UnpublishNotify, the
upstream connection is closed) when the upstream stream ends, stays silent for ``idle_timeout``, or when no player
has been left for ``grace`` seconds. An upstream StreamNotFound is remembered for ``not_found_ttl`` seconds: the
players asking meanwhile get StreamNotFound at once instead of a Play.Start followed by an end.
"""
from __future__ import annotations

import asyncio
import logging
import time

from rtmp.client import RtmpClient
from rtmp.config import RtmpConfig
from rtmp.errors import RtmpError
from rtmp.messages import MSG_DATA_AMF0
from rtmp.relay import Relay
from rtmp.session import Play, classify_media

__all__ = ["Puller"]

log = logging.getLogger("rtmp.pull")


class _Pull:
    """One upstream stream feeding one relay key; it is also the key's publisher object in the relay."""

    def __init__(self, owner: Puller, key: str, upstream: str, name: str) -> None:
        self.owner = owner
        self.key = key
        self.upstream = upstream
        self.name = name
        self.connected = False
        self.messages_in = 0
        self.bytes_in = 0
        self.started = time.monotonic()
        self.end_reason = ""

    def stats(self) -> dict:
        return {"upstream": f"{self.upstream.rstrip('/')}/{self.name}", "connected": self.connected,
                "messages_in": self.messages_in, "bytes_in": self.bytes_in,
                "uptime": round(time.monotonic() - self.started, 3)}

    async def run(self) -> None:
        owner, relay = self.owner, self.owner.relay
        client: RtmpClient | None = None
        try:
            client = await RtmpClient.connect(self.upstream, chunk_size=owner.chunk_size, timeout=owner.timeout)
            await client.play(self.name)
            self.connected = True
            log.info("rtmp pull %s: playing %s/%s", self.key, self.upstream, self.name)
            feeder = asyncio.create_task(self._feed(client))
            try:
                self.end_reason = await self._watch(feeder)
            finally:
                feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)
        except (RtmpError, OSError) as e:
            self.end_reason = str(e) or type(e).__name__
            if "StreamNotFound" in self.end_reason:
                owner.remember_not_found(self.key)
        finally:
            self.connected = False
            log.info("rtmp pull %s: ended: %s", self.key, self.end_reason)
            relay.unpublish(self.key, self)
            if owner._pulls.get(self.key) is self:
                del owner._pulls[self.key]
            if client is not None:
                await client.close()

    async def _feed(self, client: RtmpClient) -> str:
        relay, key = self.owner.relay, self.key
        while True:
            try:
                m = await asyncio.wait_for(client.read_message(), self.owner.idle_timeout)
            except EOFError as e:
                return f"upstream ended ({e})"
            except TimeoutError:
                return f"upstream silent for {self.owner.idle_timeout} s"
            self.messages_in += 1
            self.bytes_in += len(m.payload)
            if m.message_type_id == MSG_DATA_AMF0:
                relay.metadata(key, m)
            else:
                keyframe, sequence_header = classify_media(m)
                relay.media(key, m, keyframe=keyframe, sequence_header=sequence_header)

    async def _watch(self, feeder: asyncio.Task) -> str:
        """Wait for the feeder to end, or end the pull once no player has been there for ``grace`` seconds."""
        grace = self.owner.grace
        idle_since: float | None = None
        while True:
            done, _ = await asyncio.wait({feeder}, timeout=min(1.0, grace / 4))
            if done:
                return feeder.result()
            players = self.owner.relay.stats().get(self.key, {}).get("subscribers", 0)
            now = time.monotonic()
            if players:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since >= grace:
                return f"no players for {grace} s"


class Puller:
    """The ``pull`` hook of `RtmpServer`: ``await puller(play_event)``. ``stats()`` per pulled key."""

    def __init__(self, relay: Relay, config: RtmpConfig, *, grace: float = 5.0, timeout: float = 10.0,
                 idle_timeout: float = 30.0, not_found_ttl: float = 2.0, chunk_size: int = 4096) -> None:
        self.relay = relay
        self.config = config
        self.grace = grace
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.not_found_ttl = not_found_ttl
        self.chunk_size = chunk_size
        self._pulls: dict[str, _Pull] = {}
        self._tasks: set[asyncio.Task] = set()
        self._not_found: dict[str, float] = {}

    async def __call__(self, event: Play) -> bool:
        upstream = self.config.for_app(event.app).pull
        if not upstream:
            return False
        return self.pull_from(event, upstream, event.name)

    def pull_from(self, event: Play, upstream: str, name: str) -> bool:
        """Play ``name`` from ``upstream`` (rtmp://host[:port]/app) as the local stream of ``event`` (also used for
        an on_play callback's redirect to an rtmp:// URL, nginx-rtmp's notify pull)."""
        key = event.key
        if self.relay.is_published(key):
            return True
        if self._not_found.get(key, 0.0) > time.monotonic():
            return False
        pull = _Pull(self, key, upstream, name)
        if not self.relay.publish(key, pull):
            return False
        self._pulls[key] = pull
        task = asyncio.create_task(pull.run(), name=f"rtmp pull {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def remember_not_found(self, key: str) -> None:
        now = time.monotonic()
        self._not_found = {k: t for k, t in self._not_found.items() if t > now}
        self._not_found[key] = now + self.not_found_ttl

    def stats(self) -> dict[str, dict]:
        return {key: pull.stats() for key, pull in self._pulls.items()}

    async def close(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
