"""``/health`` (the process runs) and ``/ready`` (this process should get traffic), for load balancers.

/health touches nothing: 200 ``ok`` as long as the event loop answers. /ready is 200 only when the caches are set
up and the store answers: a ``stat`` and the first directory entry of the store root (and, with ``ready_file``, one
byte of that file, which proves data reads rather than cached attributes) run in the I/O executor. The store is NFS
in production: a hung mount blocks that thread, so the request waits at most ``ready_timeout`` and answers 503 with
the reason — it never hangs, and while a probe is stuck no second one is started (a balancer polling every second
must not eat the thread pool). Results are reused for ``READY_CACHE_SECONDS``. While the process drains after
SIGTERM, /ready answers 503 ``draining`` so that balancers stop sending new requests.

Both answer ``no-store`` and carry ``X-Gateway-Worker: <pid>``, which tells which worker process answered.
"""
from __future__ import annotations

import asyncio
import os
import time

from aiohttp import web

from ..origin.packaging import PACKAGING
from .app_keys import SETTINGS

__all__ = ["READINESS", "READY_CACHE_SECONDS", "Readiness", "WORKER_INDEX", "add_health_routes", "probe_store"]

READY_CACHE_SECONDS = 1.0
WORKER_HEADER = "X-Gateway-Worker"


def probe_store(root: str, ready_file: str | None) -> None:
    """Blocking: raise OSError (or block, on a hung mount) unless the store answers a stat, a listing and a read."""
    os.stat(root)
    with os.scandir(root) as entries:
        next(entries, None)
    if ready_file:
        with open(os.path.join(root, ready_file), "rb") as f:
            f.read(1)


class Readiness:
    """The draining flag and the single-flight, cached, time-bounded store probe of one app."""

    def __init__(self) -> None:
        self.draining = False
        self._reason: str | None = None
        self._valid_until = 0.0
        self._probe: asyncio.Future | None = None
        self._probe_started = 0.0
        self.fallback_state: str | None = None  # "ok" or why not, with a --fallback-store (never makes /ready 503)
        self._fallback_probe: asyncio.Future | None = None

    async def check(self, app: web.Application) -> str | None:
        """None when ready, else why not."""
        if self.draining:
            return "draining: the process is shutting down"
        packaging = app.get(PACKAGING)
        if packaging is None:
            return "starting: caches are not set up yet"
        now = time.monotonic()
        if now >= self._valid_until:
            fallback = getattr(packaging.store, "fallback", None)
            if fallback is None:
                self._reason = await self._probe_store(app, packaging)
            else:
                self._reason, self.fallback_state = await asyncio.gather(
                    self._probe_store(app, packaging), self._probe_fallback(app, packaging, fallback))
            self._valid_until = time.monotonic() + READY_CACHE_SECONDS
        return self._reason

    async def _probe_store(self, app: web.Application, packaging) -> str | None:
        settings = app[SETTINGS]
        store = getattr(packaging.store, "primary", packaging.store)  # with a fallback store: the primary decides
        if self._probe is None or self._probe.done():
            loop = asyncio.get_running_loop()
            if hasattr(store, "probe"):  # a remote store: its origin answers (gateway/origin/remote.py)
                self._probe = asyncio.ensure_future(_origin_probe(store, settings.ready_file))
            else:
                self._probe = loop.run_in_executor(packaging.executor, probe_store, store.root, settings.ready_file)
            self._probe.add_done_callback(_retrieve)
            self._probe_started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(self._probe), settings.ready_timeout)
        except TimeoutError:
            stuck = time.monotonic() - self._probe_started
            return f"store: no answer within {settings.ready_timeout:g} s (check running for {stuck:.1f} s)"
        except OSError as e:
            return f"store: {e.strerror or type(e).__name__}"  # no path: messages never show the store root
        return None

    async def _probe_fallback(self, app: web.Application, packaging, store) -> str:
        """The fallback store's state for /ready's body: "ok" or why not (the same bounded, single-flight probe)."""
        timeout = app[SETTINGS].ready_timeout
        if self._fallback_probe is None or self._fallback_probe.done():
            if hasattr(store, "probe"):
                self._fallback_probe = asyncio.ensure_future(_origin_probe(store, None))
            else:
                self._fallback_probe = asyncio.get_running_loop().run_in_executor(packaging.executor, probe_store,
                                                                                  store.root, None)
            self._fallback_probe.add_done_callback(_retrieve)
        try:
            await asyncio.wait_for(asyncio.shield(self._fallback_probe), timeout)
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except OSError as e:
            return e.strerror or type(e).__name__
        return "ok"


async def _origin_probe(store, ready_file: str | None) -> None:
    reason = await store.probe(ready_file)
    if reason is not None:
        raise OSError(0, reason)  # strerror: the one line /ready shows


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


READINESS = web.AppKey("readiness", Readiness)
WORKER_INDEX = web.AppKey("worker_index", int)  # make_app's worker_index (0 unless `gateway serve` says)


def _headers() -> dict[str, str]:
    return {"Cache-Control": "no-store", WORKER_HEADER: str(os.getpid())}


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers=_headers())


async def ready(request: web.Request) -> web.Response:
    app = request.app
    reason = await app[READINESS].check(app)
    body = {"ready": reason is None, "worker": app.get(WORKER_INDEX, 0), "pid": os.getpid()}
    if reason is not None:
        body["reason"] = reason
    if app[READINESS].fallback_state is not None:
        body["fallback"] = app[READINESS].fallback_state
    return web.json_response(body, status=200 if reason is None else 503, headers=_headers())


def add_health_routes(app: web.Application) -> None:
    """Register /health and /ready (before the catch-all route) and the app's readiness state."""
    app[READINESS] = Readiness()
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
