"""`gateway serve` at run time: the worker process (aiohttp app + RTMP ingest) under gateway.runtime.workers' supervisor.

A worker owns one SO_REUSEPORT listening socket and one asyncio server on it for its whole life; each accepted
connection goes to the app generation current at that moment (``Worker.new_connection``). That is how a reload
keeps every connection (nginx keeps its sockets across reloads the same way): the new generation takes the new
connections at once, and the old one only finishes its own — in-flight responses get ``shutdown_grace``, idle
keep-alive connections are closed. The socket is never closed or re-registered, so nothing waiting in its accept
queue is lost. (Giving each generation its own asyncio server on a ``dup`` of the socket, then closing the old one,
reset or stranded tens of connections per hundred reloads under load: measured, and reproduced with bare asyncio.)
A reload starts with the running caches when the store and the cache sizes did not change: it is not a cold start.
The worker builds the parts that outlive a generation (caches, metrics, connection tracker) and hands them to
``make_app``; nothing is assigned into an app or its caches after it is built.
Every accepted connection is also wrapped and counted by the worker's ``ConnectionTracker`` (gateway/http/connections.py:
header-read timeout, connection caps, rate-limited accept errors), which outlives the generations as the socket does.

SIGTERM/SIGINT: /ready turns 503 (``draining``), after ``drain_delay`` the socket is closed (new connections are
refused from then on), RTMP sessions are closed, in-flight responses get ``shutdown_grace`` seconds, then exit 0.

Worker 0 also runs the RTMP ingest when ``rtmp_port`` is set: the relay is in memory, so publishers and players
must meet in one process; that process also serves HTTP (its /status has the "rtmp" section) and keeps its ingest
across reloads (RTMP settings need a restart). Live HLS/DASH output goes to the store, so any worker serves it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Callable

from rtmp.config import RtmpConfig

from ..ops.access_log import configure_access_log
from ..ops.allocator import tune_allocator, tune_collector
from .config_file import ServeConfig
from ..http.connections import ConnectionTracker, TrackedConnection
from ..origin.cache import Caches
from ..settings import Settings
from .workers import Address, Supervisor

__all__ = ["serve", "serve_config", "run_worker", "shown_host"]

log = logging.getLogger("gateway.serve")

LISTEN_BACKLOG = 1024
# asyncio accepts up to `backlog` connections per loop tick before any of them reaches the connection tracker; a
# small batch keeps a burst within the descriptors the auto cap leaves free (gateway/http/connections.py), instead of
# EMFILE and a 1 s accept pause. The kernel's queue stays LISTEN_BACKLOG (listen() again after create_server).
ACCEPT_BATCH = 64
SETTLE_SECONDS = 0.5  # see retire()


def serve(settings: Settings, on_listening: Callable[[str], None], rtmp_port: int = 0,
          rtmp_config: RtmpConfig | None = None) -> int:
    """Run one worker with these settings until SIGINT/SIGTERM (``gateway demo`` and embedders);
    ``on_listening`` gets the base URL once the port listens (port 0 resolved)."""
    config = ServeConfig(settings=settings, rtmp_port=rtmp_port, rtmp=rtmp_config or RtmpConfig())
    return serve_config(config, on_listening)


def serve_config(config: ServeConfig, on_listening: Callable[[str], None],
                 reload: Callable[[], ServeConfig] | None = None) -> int:
    """Run ``config.workers`` workers until SIGINT/SIGTERM; SIGHUP calls ``reload`` for the new configuration."""

    def announce(address: Address, infos: dict) -> None:
        shown = shown_host(address.host)
        on_listening(f"http://{shown}:{address.port}")
        rtmp_port = infos.get(0, {}).get("rtmp_port")
        if rtmp_port:
            print(f"gateway: RTMP ingest on rtmp://{shown}:{rtmp_port}/<app>/<stream>", flush=True)
        admin = infos.get(0, {}).get("admin")
        if admin:
            print(f"gateway: admin API on {admin}", flush=True)

    return Supervisor(config, run_worker, announce, reload).run()


def shown_host(host: str) -> str:
    return "localhost" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)


def run_worker(index: int, config: ServeConfig, control: Connection, address: Address) -> int:
    """The body of a forked worker process: its own event loop until it is told to stop."""
    tune_allocator()  # before the executor's threads exist
    return asyncio.run(Worker(index, config, control, address).run())


def listen(address: Address) -> socket.socket:
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address.sockaddr)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class Generation:
    """One app with its runner (set up, no site: the worker's server hands it connections)."""

    config: ServeConfig
    app: object
    runner: object
    caches: Caches  # the worker's caches this generation serves from (the next one keeps them if they fit)


class Worker:
    def __init__(self, index: int, config: ServeConfig, control: Connection, address: Address):
        self.index = index
        self.config = config
        self.control = control
        self.address = address
        self.ingest = None
        self.admin = None  # the admin API's runner (worker 0, when configured)
        self.admin_url: str | None = None
        self.current: Generation | None = None
        self.connections: ConnectionTracker | None = None  # every generation's connections: caps, header timeout
        self.metrics = None  # GatewayMetrics, one per process, shared by every generation (gateway/ops/metrics.py)
        self.audience = None  # AudienceNode, one per process, kept across reloads (gateway/ops/audience_node.py)
        self.server: asyncio.Server | None = None
        self.retiring: set[asyncio.Task] = set()  # old generations finishing their in-flight responses
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()  # the supervisor got a second SIGTERM/SIGINT: skip the rest of the drain delay
        self.lock = asyncio.Lock()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        logging.getLogger().setLevel(self.config.log_level.upper())
        try:
            from ..ops.metrics import metrics_for_this_process
            self.metrics = metrics_for_this_process()
            from ..ops.audience_node import AudienceNode
            self.audience = AudienceNode(self.config.settings, worker_index=self.index, workers=self.config.workers,
                                         port=self.address.port)
            await self.audience.start()
            self.connections = ConnectionTracker(self.config.settings, rtmp=self._runs_rtmp(self.config))
            self.connections.install(loop)  # accept errors: one log line a second at most
            self.sock = listen(self.address)
            if self.index == 0 and self.config.rtmp_port:
                from ..ingest.service import start_ingest  # started first so that the app can show its stats (/status "rtmp")
                settings = self.config.settings
                self.ingest = await start_ingest(settings, self.config.rtmp, settings.host, self.config.rtmp_port)
            self.current = await self.start_generation(self.config)
            await self.start_admin()
            self.server = await loop.create_server(self.new_connection, sock=self.sock, backlog=ACCEPT_BATCH)
            self.sock.listen(LISTEN_BACKLOG)
        except Exception as e:
            log.error("gateway: worker %d could not start: %s", self.index, e)
            self._send(("failed", str(e)))
            await self.close_ingest()
            return 1
        tune_collector()  # after the first generation: what it holds lives as long as the worker
        self._send(("ready", {"pid": os.getpid(), "rtmp_port": self.ingest.port if self.ingest else None,
                              "admin": self.admin_url}))
        loop.add_reader(self.control.fileno(), self.on_control)
        await self.stop.wait()
        await self.shutdown()
        return 0

    async def start_admin(self) -> None:
        """The admin API's listener (gateway/http/admin_api.py): worker 0 only, with a token and a port set."""
        settings = self.config.settings
        if self.index != 0 or not settings.admin_port or not settings.admin_token:
            return
        from aiohttp import web

        from ..http.admin_api import make_admin_app

        self.admin = web.AppRunner(make_admin_app(lambda: self.current.app, purge=lambda files: self._send(
            ("purge", files))), access_log=None)
        await self.admin.setup()
        await web.TCPSite(self.admin, settings.admin_host, settings.admin_port).start()
        self.admin_url = f"http://{shown_host(settings.admin_host)}:{settings.admin_port}/api/v1/"

    def purge(self, paths: tuple[str, ...] | None) -> None:
        """Drop what this worker's caches made from these store files (None: everything), as the admin API asked."""
        from ..origin.packaging import PACKAGING

        counts = self.current.app[PACKAGING].purge(paths)
        log.info("cache purge: worker %d dropped %d response(s), %d parsed file(s), %d plan(s) of %s", self.index,
                 counts["responses"], counts["presentations"], counts["media_sets"],
                 "every file" if paths is None else ", ".join(paths)[:300])

    def new_connection(self):
        """The protocol for a connection just accepted: a request handler of the current generation, tracked."""
        return TrackedConnection(self.connections, self.current.runner.server())

    def _runs_rtmp(self, config: ServeConfig) -> bool:
        return self.index == 0 and bool(config.rtmp_port)

    def _send(self, message) -> None:
        try:
            self.control.send(message)
        except OSError:
            pass  # the supervisor is gone; EOF on the pipe stops us

    def on_control(self) -> None:
        try:
            kind, payload = self.control.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.control.fileno())
            log.warning("gateway: worker %d: supervisor gone, stopping", self.index)
            self.stop.set()
            return
        if kind == "hurry":
            self.hurry.set()
        elif kind == "purge":
            self.purge(payload)
        elif kind == "reload":
            task = asyncio.get_running_loop().create_task(self.reload(payload))
            self.retiring.add(task)
            task.add_done_callback(self.retiring.discard)

    async def start_generation(self, config: ServeConfig) -> Generation:
        from aiohttp import web

        from ..http.app import make_app

        settings = config.settings
        running = self.current.caches if self.current is not None else None
        # a reload keeps the warm caches unless the store or the cache bounds changed
        caches = running if running is not None and running.fits(settings) else \
            Caches(settings, self.metrics.observe_stage)
        app = make_app(settings, ingest=self.ingest, caches=caches, metrics=self.metrics,
                       connections=self.connections, worker_index=self.index, audience=self.audience)
        access_log, access_log_class = configure_access_log(settings.access_log, settings.access_log_format)
        runner = web.AppRunner(app, access_log=access_log, access_log_class=access_log_class,
                               access_log_format=settings.access_log_format, shutdown_timeout=config.shutdown_grace,
                               keepalive_timeout=settings.keepalive_timeout)
        try:
            await runner.setup()  # cleanup_ctx ran: the app's packaging and catalog exist
        except BaseException:
            await runner.cleanup()
            raise
        return Generation(config, app, runner, caches)

    async def reload(self, config: ServeConfig) -> None:
        async with self.lock:
            if self.stop.is_set():
                return
            old = self.current
            try:
                self.current = await self.start_generation(config)
            except Exception:
                log.exception("gateway: worker %d: reload failed, keeping the running configuration", self.index)
                return
            self.config = config
            self.connections.configure(config.settings, rtmp=self._runs_rtmp(config))
            self.audience.configure(config.settings, config.workers)
            logging.getLogger().setLevel(config.log_level.upper())
            log.info("gateway: worker %d (pid %d): configuration reloaded", self.index, os.getpid())
        await retire(old.runner)  # not under the lock: a SIGTERM must not wait for it

    async def shutdown(self) -> None:
        from ..ops.health import READINESS

        async with self.lock:
            generation = self.current
            generation.app[READINESS].draining = True
            if self.config.drain_delay > 0:
                log.info("gateway: worker %d: draining for %g s before closing the port", self.index,
                         self.config.drain_delay)
                try:
                    await asyncio.wait_for(self.hurry.wait(), self.config.drain_delay)
                except TimeoutError:
                    pass
            self.server.close()  # closes the socket: from now on the port refuses new connections
            if self.admin is not None:
                await self.admin.cleanup()
            await self.close_ingest()
            await retire(generation.runner)
            await self.audience.close()
        if self.retiring:
            await asyncio.gather(*self.retiring, return_exceptions=True)

    async def close_ingest(self) -> None:
        if self.ingest is not None:
            ingest, self.ingest = self.ingest, None
            await ingest.close()


async def retire(runner) -> None:
    """Once no new connection reaches ``runner``: let just-accepted ones send their request, finish in-flight ones.

    aiohttp's ``cleanup`` closes every connection that has no request in progress, including one accepted a moment
    ago whose request bytes have not been read yet: its client would see the connection closed without a response.
    Waiting ``SETTLE_SECONDS`` first lets those requests arrive and count as in flight.
    """
    await asyncio.sleep(SETTLE_SECONDS)
    await runner.cleanup()
