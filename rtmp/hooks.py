"""The policy side of an RTMP connection (split from rtmp/server.py, which keeps the bytes): admission of connects,
publishes and plays, nginx-rtmp's periodic on_update and done calls, an on_publish push redirect, and what the control
API sees of a connection and does to it (``info``, ``drop``, ``redirect``).

Policy is injected by the composition root (``rtmp`` never imports ``gateway``):
- ``authorize(action, event, peer)``: awaited for every publish (action ``"publish"``) and play (``"play"``) before it
  is accepted; returns None to allow or a reason to refuse. A refused publisher gets ``NetStream.Publish.BadName``,
  a refused player ``NetStream.Play.Failed``; both are then closed.
- ``pull(event)``: awaited when a player asks for a stream nobody publishes here; returns True once it has claimed the
  key in the relay (an upstream pull), after which the player is subscribed as usual.
- ``push(key, url)``: called once a publish that its on_publish callback redirected to ``rtmp://host[:port]/app[/name]``
  is accepted; relays the stream there until it is unpublished (nginx-rtmp's notify push). Without it such a
  redirect refuses the publish.
- ``notify`` (`Notify`, nginx-rtmp's callbacks): ``check(call, client, event, extra)`` is awaited for ``connect``
  (then the connect is held: nothing the client sent after it is looked at before the answer), ``publish`` and
  ``play`` (after ``authorize``) and every ``update_interval(app)`` seconds for ``update_publish``/``update_play``;
  it returns None (go on), a reason (refuse: ``NetConnection.Connect.Rejected``, ``NetStream.Publish.BadName``,
  ``NetStream.Play.Failed``, or for an update the client is dropped) or a `Redirect` (connect: another app; publish
  and play: another stream name; publish with ``push``: also relay the stream to that URL). ``done(call, client,
  event)`` (``publish_done``, ``play_done``, ``done``) must not block: it is called while the stream is torn down.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable, Literal, Optional, Protocol

from rtmp.messages import MSG_DATA_AMF0
from rtmp.session import Connect, Play, Publish, StreamEvent

if TYPE_CHECKING:
    from rtmp.relay import Relay

__all__ = ["Authorize", "Pull", "Push", "Notify", "Client", "Redirect", "ConnectionHooks"]

Authorize = Callable[[Literal["publish", "play"], StreamEvent, str], Awaitable[Optional[str]]]
Pull = Callable[[Play], Awaitable[bool]]
Push = Callable[[str, str], None]

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
    """A callback's 3xx: go on under this name (an application for connect, a stream name for publish/play); for a
    publish, ``push`` is an rtmp:// URL the stream is also relayed to."""
    name: str
    push: str | None = None


class Notify(Protocol):
    async def check(self, call: str, client: Client, event: StreamEvent | Connect | None,
                    extra: dict) -> None | str | Redirect: ...

    def done(self, call: str, client: Client, event: StreamEvent) -> None: ...

    def update_interval(self, app: str) -> float | None: ...


class ConnectionHooks:
    """Mixed into `rtmp.server._Connection`: uses its ``server``, ``session``, ``writer``, ``peer``, ``addr``,
    ``client_id``, ``started``, stream state (``publish_key``, ``play_key``, ``publish_event``, ``play_event``,
    ``subscriber``, ``updates``, ``last_timestamp``) and its ``_dispatch``, ``_start_play``, ``_end_publish``,
    ``_end_play``."""

    push_url: str | None = None     # an on_publish push redirect, started once the publish is accepted

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

    # ------------------------------------------------------------------------------------------------ admission
    async def _admit_connect(self, event: Connect, relay: Relay) -> bool:
        """on_connect; then the events held behind the connect are dispatched. False: close the connection."""
        s = self.session
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

    async def _admit(self, event: Publish | Play) -> Publish | Play | None:
        """authorize, then on_publish/on_play: the request to go on with (renamed by a redirect), or None once it
        has been refused (the refusal is written)."""
        s = self.session
        action = "publish" if isinstance(event, Publish) else "play"
        self.push_url = None
        reason = await self._refused(action, event)
        if reason is None and self.server.notify is not None:
            verdict = await self._check(action, event)
            if isinstance(verdict, Redirect):
                if verdict.push and isinstance(event, Publish):
                    if self.server.push is None:
                        reason = f"on_publish redirect to {verdict.push} is not supported here"
                    else:
                        log.info("rtmp %s: publish %s pushed to %s", self.peer, event.key, verdict.push)
                        self.push_url = verdict.push
                if reason is None and verdict.name != event.name:
                    log.info("rtmp %s: %s %s redirected to %s", self.peer, action, event.key, verdict.name)
                    event = s.rename(event, verdict.name)
            elif verdict is not None:
                reason = verdict
        if reason is None:
            return event
        code = "NetStream.Publish.BadName" if isinstance(event, Publish) else "NetStream.Play.Failed"
        log.info("rtmp %s: %s %s refused (%s): %s", self.peer, action, event.key, code, reason)
        self.server.refused += 1
        if isinstance(event, Publish):
            self.writer.write(s.reject_publish(code, reason, request=event))
        else:
            self.writer.write(s.reject_play(code, reason, request=event))
        return None

    def _published(self, event: Publish) -> None:
        """The publish is in the relay: on_update starts, and a push redirect (its end is the relay's unpublish)."""
        self._start_updates("update_publish", event)
        url, self.push_url = self.push_url, None
        if url is not None:
            try:
                self.server.push(event.key, url)
            except Exception:   # the local publish goes on, as nginx-rtmp's does when its push fails
                log.exception("rtmp %s: push of %s to %s failed", self.peer, event.key, url)

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

    # ------------------------------------------------------------------------------------------------ on_update
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

    # ------------------------------------------------------------------------------------------------ control API
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
