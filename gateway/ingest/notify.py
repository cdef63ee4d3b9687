"""nginx-rtmp's callbacks (``on_connect``, ``on_publish``, ``on_play``, ``on_update``, ``on_publish_done``,
``on_play_done``, ``on_done``, ``on_record_done``): the `rtmp.hooks.Notify` hook, HTTP included.

Each call is a form-encoded POST (with ``notify_method = "get"``, a GET with the same fields as its query) with the
fields nginx-rtmp's notify module sends (``ngx_rtmp_notify_module.c``): the client's ``app``, ``flashver``,
``swfurl``, ``tcurl``, ``pageurl``, ``addr``, ``clientid``, then ``call`` and the call's own fields (publish:
``name``, ``type``; play: ``name``, ``start``, ``duration``, ``reset``; update: ``time``, ``timestamp``, ``name``;
record_done: ``recorder``, ``name``, ``path``; the done calls: ``name``), then every query argument of the stream
name. on_connect sends what nginx-rtmp's does: no clientid, an ``epoch``, the
query of the connect's app as arguments.

Answers, as nginx-rtmp reads them (``ngx_rtmp_notify_publish_handle`` / ``_play_handle``): 2xx goes on; 3xx with
``Location`` redirects (connect: another application; publish and play: another stream name); a Location
``rtmp://host[:port]/app[/stream]`` keeps the name asked for here (with ``notify_relay_redirect``, md5(Location) in
hex) and relays: publish goes on here and is pushed there, play pulls from there (the stream part defaults to the
local name). Anything else, no answer within ``timeout`` or a connection error refuses. An on_update answer other
than 2xx/3xx drops the client, its timeout or connection error only logs; with ``notify_update_strict`` anything
but 2xx drops. The done calls are fire-and-forget tasks: the teardown never waits for them, failures are logged.

With ``publish_auth = "callback"`` (``play_auth``), gateway/ingest/auth.py already made the on_publish (on_play) call
in its earlier form; it is not made twice.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import aiohttp

from rtmp.client import parse_rtmp_url
from rtmp.config import NOTIFY_CALLBACKS, ApplicationConfig, RtmpConfig
from rtmp.errors import RtmpError
from rtmp.hooks import Client, Redirect
from rtmp.pull import Puller
from rtmp.session import Connect, Play, Publish, StreamEvent

from .auth import query_args

__all__ = ["Notifier"]

log = logging.getLogger("gateway.ingest.notify")

_SETTING = {"connect": "on_connect", "publish": "on_publish", "play": "on_play", "update_publish": "on_update",
            "update_play": "on_update", "publish_done": "on_publish_done", "play_done": "on_play_done",
            "done": "on_done", "record_done": "on_record_done"}


def _u32(value: float) -> str:
    return str(int(value) & 0xFFFFFFFF)     # nginx-rtmp prints (uint32_t) casts: -2000 → 4294965296


class Notifier:
    """``rtmp.server.Notify`` for a config; ``record_done(path, info)`` may be called from any thread."""

    def __init__(self, config: RtmpConfig, store: Path | str, *, puller: Puller | None = None,
                 timeout: float = 5.0, locate: Callable[[str], str] | None = None) -> None:
        self.config = config
        self.store = Path(store)
        # where a finished recording is, for on_record_done's path: the local file, or its URL on a remote store
        self.locate = locate or (lambda path: str(self.store / path))
        self.puller = puller
        self.timeout = timeout
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        self._publishers: dict[str, tuple[Client, Publish]] = {}   # key → who published it (for record_done)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sent = 0
        self.failed = 0

    @staticmethod
    def wanted(config: RtmpConfig) -> bool:
        """Whether any application sets a callback this hook makes (not only auth.py's publish_auth = "callback")."""
        return any(getattr(app, name) and not (name in ("on_publish", "on_play")
                                               and getattr(app, f"{name[3:]}_auth") == "callback")
                   for app in (config.default, *config.applications.values()) for name in NOTIFY_CALLBACKS)

    def url(self, app: str, call: str) -> str | None:
        conf = self.config.for_app(app)
        if call in ("publish", "play") and getattr(conf, f"{call}_auth") == "callback":
            return None     # the auth hook's call (auth.py)
        return getattr(conf, _SETTING[call])

    def update_interval(self, app: str) -> float | None:
        conf = self.config.for_app(app)
        return conf.notify_update_timeout if conf.on_update else None

    # ------------------------------------------------------------------------------------------------ fields
    @staticmethod
    def fields(call: str, client: Client, event: StreamEvent | Connect | None, extra: dict) -> list[tuple[str, str]]:
        if isinstance(event, Connect):
            return [("app", event.app), ("flashver", event.flashver), ("swfurl", event.swfurl),
                    ("tcurl", event.tcurl), ("pageurl", event.pageurl), ("addr", client.addr),
                    ("epoch", str(extra.get("epoch", 0))), ("call", "connect"), *query_args("?" + event.args)]
        form = [("app", client.app), ("flashver", client.flashver), ("swfurl", client.swfurl),
                ("tcurl", client.tcurl), ("pageurl", client.pageurl), ("addr", client.addr),
                ("clientid", str(client.client_id)), ("call", call)]
        name = event.name if event is not None else ""
        if call == "publish":
            form += [("name", name), ("type", event.publish_type)]
        elif call == "play":
            form += [("name", name), ("start", _u32(event.start)), ("duration", _u32(event.duration)),
                     ("reset", "1" if event.reset else "0")]
        elif call.startswith("update"):
            form += [("time", str(extra.get("time", 0))), ("timestamp", str(extra.get("timestamp", 0))),
                     ("name", name)]
        elif call == "record_done":
            form += [("recorder", extra.get("recorder", "")), ("name", name), ("path", extra["path"])]
        elif name:
            form.append(("name", name))
        return form + (query_args(event.raw_name) if isinstance(event, (Publish, Play)) else [])

    # ------------------------------------------------------------------------------------------------ calls
    async def check(self, call: str, client: Client, event, extra: dict) -> None | str | Redirect:
        app = event.app if event is not None else client.app
        conf = self.config.for_app(app)
        url = self.url(app, call)
        update = call.startswith("update")
        if url is None:
            verdict = None
        else:
            if call == "connect":
                extra = {"epoch": int(time.time() * 1000) & 0xFFFFFFFF, **extra}
            verdict = await self._post(call, url, self.fields(call, client, event, extra), conf.notify_method,
                                       lenient=update and not conf.notify_update_strict,
                                       only_2xx=update and conf.notify_update_strict)
        if isinstance(verdict, Redirect) and not update and verdict.name.lower().startswith("rtmp://"):
            verdict = self._remote(call, event, verdict.name, conf)
        if update and isinstance(verdict, Redirect):
            verdict = None
        if call == "publish" and (verdict is None or isinstance(verdict, Redirect) and verdict.name == event.name):
            self._publishers.pop(event.key, None)
            self._publishers[event.key] = (client, event)
            if len(self._publishers) > 4096:   # bounded: the oldest streams' record_done loses its client fields
                self._publishers.pop(next(iter(self._publishers)))
        return verdict

    def _remote(self, call: str, event, url: str, conf: ApplicationConfig) -> None | str | Redirect:
        """A 3xx to an rtmp:// URL, as nginx-rtmp's notify reads it: publish is pushed there, play pulled from there.
        The local name is the one asked for, or md5(URL) with notify_relay_redirect; the remote stream is the URL's
        path after the application (the query kept), else the local name."""
        if call not in ("publish", "play"):
            return f"on_{call} redirect to {url} is not supported"
        try:
            target = parse_rtmp_url(url)
        except RtmpError:
            return f"on_{call} redirect to {url}: not rtmp://host[:port]/app[/stream]"
        local = hashlib.md5(url.encode()).hexdigest() if conf.notify_relay_redirect else event.name
        if call == "publish":
            log.info("notify: publish %s/%s pushed to %s", event.app, local, url)
            return Redirect(local, push=url)
        if self.puller is None:
            return f"on_{call} redirect to {url} is not supported"
        upstream = target.tc_url
        name = target.stream or local
        log.info("notify: play %s/%s pulls %s/%s", event.app, local, upstream, name)
        if not self.puller.pull_from(replace(event, name=local), upstream, name):
            return f"pull of {url} failed"
        return Redirect(local) if local != event.name else None

    async def _post(self, call: str, url: str, form: list[tuple[str, str]], method: str = "post", *,
                    lenient: bool = False, only_2xx: bool = False) -> None | str | Redirect:
        """One call; ``lenient``: a timeout or connection error is only logged (None), ``only_2xx``: a 3xx refuses
        too (the on_update flavours of notify_update_strict off / on)."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        name = _SETTING[call]
        self.sent += 1
        # GET: nginx-rtmp puts the same urlencoded fields in the request's query (after the URL's own)
        options = {"allow_redirects": False, "timeout": aiohttp.ClientTimeout(total=self.timeout)}
        request = self._http.get(url, params=form, **options) if method == "get" else \
            self._http.post(url, data=form, **options)
        try:
            async with request as response:
                await response.read()
                status, location = response.status, response.headers.get("Location", "")
        except asyncio.TimeoutError:
            self.failed += 1
            return None if lenient else f"{name} did not answer within {self.timeout:g} s"
        except aiohttp.ClientError as e:
            self.failed += 1
            log.warning("notify: %s %s failed: %s", name, url, e)
            return None if lenient else f"{name} failed: {type(e).__name__}: {e}"
        if 200 <= status < 300:
            return None
        if 300 <= status < 400 and not only_2xx:
            return Redirect(location) if location else None
        return f"{name} answered {status}"

    # ------------------------------------------------------------------------------------------------ done
    def done(self, call: str, client: Client, event: StreamEvent) -> None:
        url = self.url(event.app, call)
        if url is not None:
            self._spawn(call, url, self.fields(call, client, event, {}), self.config.for_app(event.app).notify_method)

    def record_done(self, path: str, info: dict) -> None:
        """From the recorder's worker thread: on_record_done with the finished file's path."""
        conf = self.config.for_app(info["app"])
        url = conf.on_record_done
        if url is None or self._loop is None:
            return
        known = self._publishers.get(info["key"])
        client, event = known if known is not None else (Client(0, "", info["app"], ""), None)
        if event is None:
            event = Publish(info["app"], info["stream"], 0, "live", info["stream"])
        form = self.fields("record_done", client, event, {"path": self.locate(path)})
        self._loop.call_soon_threadsafe(self._spawn, "record_done", url, form, conf.notify_method)

    def _spawn(self, call: str, url: str, form: list, method: str) -> None:
        task = asyncio.get_running_loop().create_task(self._post(call, url, form, method))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and isinstance(task.result(), str):
            log.warning("notify: %s", task.result())

    def stats(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "in_flight": len(self._tasks)}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self, grace: float = 2.0) -> None:
        """Give the done calls in flight ``grace`` seconds, then close the HTTP client."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None
