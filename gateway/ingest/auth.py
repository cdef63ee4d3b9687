"""Who may publish and play RTMP streams: the ``authorize`` hook of `rtmp.server.RtmpServer`, built from each
application's ``publish_auth`` / ``play_auth`` (rtmp/config.py). ``rtmp/`` only awaits the hook; the catalog, the
partner secrets and HTTP live here.

Modes (per application and per action):

* ``none``: everyone may.
* ``key``: the stream name carries ``?key=<token>`` (``rtmp://host/app/stream?key=...``). A publish key is
  `delivery_profiles.tokens.stream_key` over ``"app/stream"``; a play key is the same kind of token over
  ``"rtmp-play:app/stream"``, so a key handed to viewers never lets anyone publish. Both are signed with the secret of
  the application's ``partner_id`` in the catalog and carry their expiry (``gateway stream-key`` issues them). A
  publish key is only checked when the publish starts: a stream outlives its key, like a signed URL's download.
* ``callback``: an HTTP POST to ``on_publish`` / ``on_play`` with nginx-rtmp's form fields (``call``, ``app``,
  ``name``, ``addr``, ``type`` or ``start``, then every query argument of the stream name, so ``?token=...`` reaches
  the callback as ``token``). A 2xx answer allows; any other status (redirects are not followed), a timeout or a
  connection error refuses — a broken auth service keeps streams out rather than letting everyone in.

A refusal is a reason string; the server answers ``NetStream.Publish.BadName`` / ``NetStream.Play.Failed`` with it,
logs it and closes that connection only.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal
from urllib.parse import parse_qsl

import aiohttp

from delivery_profiles.tokens import TokenError, sign_path, stream_key, verify_path, verify_stream_key
from rtmp.config import RtmpConfig
from rtmp.session import Play, Publish

from ..catalog.catalog import Catalog, CatalogNotFound

__all__ = ["IngestAuth", "publish_key", "play_key", "query_args", "stream_key_urls", "PLAY_PREFIX"]

log = logging.getLogger("gateway.ingest_auth")

PLAY_PREFIX = "rtmp-play:"   # play keys sign "rtmp-play:app/stream"; publish keys (tokens.stream_key) "rtmp:app/stream"


def publish_key(secret: str, app_stream: str, expires: int) -> str:
    return stream_key(secret, app_stream, expires)


def play_key(secret: str, app_stream: str, expires: int) -> str:
    return sign_path(secret, PLAY_PREFIX + app_stream, expires)


def query_args(raw_name: str) -> list[tuple[str, str]]:
    """The query arguments of a stream name (``"cam?key=a&x=1"`` → ``[("key", "a"), ("x", "1")]``)."""
    _, _, query = raw_name.partition("?")
    return parse_qsl(query, keep_blank_values=True)


class IngestAuth:
    """Callable as ``authorize(action, event, peer)``; ``close()`` releases the HTTP client of the callbacks."""

    def __init__(self, config: RtmpConfig, catalog: Catalog | None, *, callback_timeout: float = 5.0,
                 clock=time.time) -> None:
        self.config = config
        self.catalog = catalog
        self.callback_timeout = callback_timeout
        self.clock = clock
        self._http: aiohttp.ClientSession | None = None

    async def __call__(self, action: Literal["publish", "play"], event: Publish | Play, peer: str) -> str | None:
        app = self.config.for_app(event.app)
        mode = app.publish_auth if action == "publish" else app.play_auth
        if mode == "none":
            return None
        if mode == "key":
            return await self._check_key(action, event, app.partner_id)
        return await self._callback(action, event, peer, app.on_publish if action == "publish" else app.on_play)

    # ------------------------------------------------------------------------------------------------ key
    async def _check_key(self, action: str, event: Publish | Play, partner_id: int | None) -> str | None:
        keys = [v for k, v in query_args(event.raw_name) if k == "key"]
        if not keys:
            return "missing stream key (?key=...)"
        if self.catalog is None or partner_id is None:
            return "no catalog to check stream keys against"
        try:
            # the catalog may stat/read files on the shared store: never on the event loop
            partner = await asyncio.to_thread(self.catalog.partner, partner_id)
        except CatalogNotFound:
            return f"unknown partner {partner_id}"
        try:
            if action == "publish":
                verify_stream_key(partner.secret, event.key, keys[-1], self.clock())
            else:
                verify_path(partner.secret, PLAY_PREFIX + event.key, keys[-1], self.clock())
        except TokenError as e:
            return f"bad stream key: {e.reason}"
        return None

    # ------------------------------------------------------------------------------------------------ callback
    async def _callback(self, action: str, event: Publish | Play, peer: str, url: str | None) -> str | None:
        if url is None:   # rtmp.config refuses this combination at load; belt and braces
            return f"no on_{action} URL configured"
        addr = peer.rsplit(":", 1)[0].strip("[]")
        form = [("call", action), ("app", event.app), ("name", event.name), ("addr", addr)]
        form.append(("type", event.publish_type) if isinstance(event, Publish) else ("start", f"{event.start:g}"))
        form += query_args(event.raw_name)
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            async with self._http.post(url, data=form, allow_redirects=False,
                                       timeout=aiohttp.ClientTimeout(total=self.callback_timeout)) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"on_{action} answered {response.status}"
        except asyncio.TimeoutError:
            return f"on_{action} did not answer within {self.callback_timeout:g} s"
        except aiohttp.ClientError as e:
            return f"on_{action} failed: {type(e).__name__}: {e}"

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def stream_key_urls(secret: str, app_stream: str, base_url: str, ttl: int, play: bool = False,
                    now: float | None = None) -> dict[str, str]:
    """What an encoder (or a player) needs: the full URL, and OBS's split into server + stream key."""
    expires = int(time.time() if now is None else now) + ttl
    key = (play_key if play else publish_key)(secret, app_stream, expires)
    app, stream = app_stream.split("/")
    server = f"{base_url.rstrip('/')}/{app}"
    return {"url": f"{server}/{stream}?key={key}", "server": server, "stream_key": f"{stream}?key={key}",
            "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))}
