"""nginx-rtmp's callbacks (``on_connect``, ``on_publish``, ``on_play``, ``on_update``, ``on_publish_done``,
``on_play_done``, ``on_done``, ``on_record_done``): the `rtmp.server.Notify` hook, HTTP included.

Each call is a form-encoded POST with the fields nginx-rtmp's notify module sends (``ngx_rtmp_notify_module.c``):
the client's ``app``, ``flashver``, ``swfurl``, ``tcurl``, ``pageurl``, ``addr``, ``clientid``, then ``call`` and the
call's own fields (publish: ``name``, ``type``; play: ``name``, ``start``, ``duration``, ``reset``; update:
``time``, ``timestamp``, ``name``; record_done: ``recorder``, ``name``, ``path``; the done calls: ``name``), then
every query argument of the stream name. on_connect sends what nginx-rtmp's does: no clientid, an ``epoch``, the
query of the connect's app as arguments.

Answers, as nginx-rtmp reads them: 2xx goes on; 3xx with ``Location`` redirects (connect: another application;
publish: another stream name; play: another local stream, or with an ``rtmp://host[:port]/app/stream`` URL the
stream is pulled from there under the name asked for); anything else, no answer within ``timeout`` or a connection
error refuses. An on_update refusal (an answer other than 2xx/3xx) drops the client; its timeout or connection error
only logs (nginx-rtmp's ``notify_update_strict off``). The done calls are fire-and-forget tasks: the teardown never
waits for them, failures are logged.

With ``publish_auth = "callback"`` (``play_auth``), gateway/ingest/auth.py already made the on_publish (on_play) call
in its earlier form; it is not made twice.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from rtmp.config import NOTIFY_CALLBACKS, RtmpConfig
from rtmp.pull import Puller
from rtmp.server import Client, Redirect
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
                 timeout: float = 5.0) -> None:
        self.config = config
        self.store = Path(store)
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
        url = self.url(app, call)
        if url is None:
            verdict = None
        else:
            if call == "connect":
                extra = {"epoch": int(time.time() * 1000) & 0xFFFFFFFF, **extra}
            verdict = await self._post(call, url, self.fields(call, client, event, extra))
        if isinstance(verdict, Redirect) and verdict.name.lower().startswith("rtmp://"):
            verdict = self._remote(call, event, verdict.name)
        if call.startswith("update") and isinstance(verdict, Redirect):
            verdict = None
        if call == "publish" and verdict is None:
            self._publishers.pop(event.key, None)
            self._publishers[event.key] = (client, event)
            if len(self._publishers) > 4096:   # bounded: the oldest streams' record_done loses its client fields
                self._publishers.pop(next(iter(self._publishers)))
        return verdict

    def _remote(self, call: str, event, url: str) -> None | str:
        """A 3xx to an rtmp:// URL: play pulls from it (under the name asked for), as nginx-rtmp's notify does."""
        parts = urlsplit(url)
        app, _, name = parts.path.strip("/").rpartition("/")
        if call != "play" or self.puller is None or not app or not name:
            return f"on_{call} redirect to {url} is not supported"
        upstream = f"rtmp://{parts.netloc}/{app}"
        log.info("notify: play %s pulls %s/%s", event.key, upstream, name)
        if not self.puller.pull_from(event, upstream, name):
            return f"pull of {url} failed"
        return None

    async def _post(self, call: str, url: str, form: list[tuple[str, str]]) -> None | str | Redirect:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        name = _SETTING[call]
        self.sent += 1
        try:
            async with self._http.post(url, data=form, allow_redirects=False,
                                       timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                await response.read()
                status, location = response.status, response.headers.get("Location", "")
        except asyncio.TimeoutError:
            self.failed += 1
            return None if call.startswith("update") else f"{name} did not answer within {self.timeout:g} s"
        except aiohttp.ClientError as e:
            self.failed += 1
            log.warning("notify: %s %s failed: %s", name, url, e)
            return None if call.startswith("update") else f"{name} failed: {type(e).__name__}: {e}"
        if 200 <= status < 300:
            return None
        if 300 <= status < 400:
            return Redirect(location) if location else None
        return f"{name} answered {status}"

    # ------------------------------------------------------------------------------------------------ done
    def done(self, call: str, client: Client, event: StreamEvent) -> None:
        url = self.url(event.app, call)
        if url is not None:
            self._spawn(call, url, self.fields(call, client, event, {}))

    def record_done(self, path: str, info: dict) -> None:
        """From the recorder's worker thread: on_record_done with the finished file's path."""
        url = self.config.for_app(info["app"]).on_record_done
        if url is None or self._loop is None:
            return
        known = self._publishers.get(info["key"])
        client, event = known if known is not None else (Client(0, "", info["app"], ""), None)
        if event is None:
            event = Publish(info["app"], info["stream"], 0, "live", info["stream"])
        form = self.fields("record_done", client, event, {"path": str(self.store / path)})
        self._loop.call_soon_threadsafe(self._spawn, "record_done", url, form)

    def _spawn(self, call: str, url: str, form: list) -> None:
        task = asyncio.get_running_loop().create_task(self._post(call, url, form))
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
