"""Bounded HTTP connections per worker: header-read timeout, connection caps, rate-limited accept errors (issue 10).

Without bounds, 1,100 idle half-sent requests under a 1,024-descriptor limit locked every client out (slowloris) and
asyncio logged "accept() out of system resource" hundreds of thousands of times. Each accepted connection is wrapped
in a ``TrackedConnection`` (a protocol that forwards everything to aiohttp's ``RequestHandler``) and counted here:

- Header timeout: a connection must deliver a complete request head (line + headers, up to the blank line) within
  ``header_timeout`` of its start, or on a kept-alive connection of the first byte of its next request. The clock
  stops while a request is being handled, so a slow *reader* of a big body is never cut by it. The idle kept-alive
  timeout is aiohttp's own ``keepalive_timeout`` (gateway.runtime.serve passes it).
- ``max_connections`` per worker (0 = auto, ``auto_max_connections``): a new connection at the cap closes the
  connection idle the longest (idle = no request being handled: half-sent heads and idle keep-alive both count);
  when none is idle the new one gets a minimal ``503`` and is closed at once (nginx retries a 503 on another node;
  a bare close would look like a broken node).
- ``max_connections_per_address``: beyond it the new connection from that address gets the same 503.
- Accept errors (EMFILE, ENFILE, ...): asyncio reports each one to the loop's exception handler, up to ``backlog``
  times per loop tick; ``install`` logs them at most once a second with a count and passes everything else on.

"Busy" is exact: a middleware (added to each app generation) marks a connection busy from the moment its request
reaches the app until the request's task ends (after the body is written). The head scanner only drives the header
clock and the idle order, so a head that arrives while busy (pipelining) never ends a request early.
"""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import resource
from collections import OrderedDict

from aiohttp import web

__all__ = ["CONNECTIONS", "ConnectionCounters", "ConnectionTracker", "TrackedConnection", "auto_max_connections"]

log = logging.getLogger("gateway.connections")

ACCEPT_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
ACCEPT_LOG_INTERVAL = 1.0
FD_RESERVE = 128  # listening socket, pipes, epoll, logs, metrics files, catalog and live files, the supervisor's share
RTMP_RESERVE = 256  # RTMP publishers, players and push/pull sockets (worker 0), which this tracker does not count
HEAD_ENDS = (b"\n\r\n", b"\n\n")  # a blank line ends a request head (bare LF too, as lenient parsers allow)
_REFUSAL_BODY = b"SERVICE_UNAVAILABLE: too many connections, try again\n"
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
           b"Retry-After: 1\r\nConnection: close\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY))


def auto_max_connections(io_threads: int, rtmp: bool, soft_limit: int | None = None) -> int:
    """``max_connections = 0``: (soft RLIMIT_NOFILE − FD_RESERVE − io_threads − RTMP_RESERVE if RTMP) ÷ 2.

    Halved because a connection can hold a second descriptor: the file of the /mp4 download it is sending. The
    I/O threads each hold at most one file open while they read."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit < 0 or soft_limit == resource.RLIM_INFINITY:
        soft_limit = 1 << 20
    reserve = FD_RESERVE + io_threads + (RTMP_RESERVE if rtmp else 0)
    return max(16, (soft_limit - reserve) // 2)


@dataclasses.dataclass
class ConnectionCounters:
    """Since the worker started (gateway/ops/metrics.py mirrors them, like the caches' counters)."""

    accepted: int = 0
    closed_header_timeout: int = 0
    evicted: int = 0  # idle connections closed to admit a new one at max_connections
    refused_full: int = 0  # 503: at max_connections with every connection busy
    refused_per_address: int = 0  # 503: at max_connections_per_address
    accept_errors: int = 0  # accept() failures (EMFILE, ENFILE, ENOBUFS, ENOMEM)


class ConnectionTracker:
    """The HTTP connections of one worker (every app generation's), their caps and counters."""

    def __init__(self, settings, rtmp: bool = False):
        self.loop = asyncio.get_running_loop()
        self.open: dict[object, TrackedConnection] = {}  # transport → connection (the middleware's lookup)
        self.idle: OrderedDict[TrackedConnection, None] = OrderedDict()  # longest idle first
        self.per_address: dict[str, int] = {}
        self.counters = ConnectionCounters()
        self._accept_unlogged = 0
        self._accept_flush: asyncio.TimerHandle | None = None
        self._accept_last_log = float("-inf")
        self.configure(settings, rtmp)

    def configure(self, settings, rtmp: bool = False) -> None:
        """Apply (re)loaded settings; connections already open keep theirs until their next check."""
        self.header_timeout = settings.header_timeout
        self.max_connections = settings.max_connections or auto_max_connections(settings.io_threads, rtmp)
        self.max_per_address = settings.max_connections_per_address

    # -- admission and closing

    def admit(self, conn: TrackedConnection) -> bool:
        """A connection was just accepted: count it, or refuse it (503 + close); may evict the longest idle one."""
        if self.max_per_address and self.per_address.get(conn.address, 0) >= self.max_per_address:
            self.counters.refused_per_address += 1
            return self._refuse(conn)
        if len(self.open) >= self.max_connections:
            if not self.idle:
                self.counters.refused_full += 1
                return self._refuse(conn)
            victim = next(iter(self.idle))
            self.counters.evicted += 1
            self.close(victim)
        self.counters.accepted += 1
        self.open[conn.transport] = conn
        self.idle[conn] = None
        if conn.address is not None:
            self.per_address[conn.address] = self.per_address.get(conn.address, 0) + 1
        return True

    def _refuse(self, conn: TrackedConnection) -> bool:
        conn.transport.write(REFUSAL)
        conn.transport.close()  # frees the descriptor as soon as the 503 is flushed
        return False

    def close(self, conn: TrackedConnection) -> None:
        """Close an idle connection (evicted, or header timeout): forgotten now, the descriptor goes next tick."""
        self.forget(conn)
        conn.transport.close()

    def forget(self, conn: TrackedConnection) -> None:
        if self.open.pop(conn.transport, None) is None:
            return
        self.idle.pop(conn, None)
        if conn.address is not None:
            left = self.per_address.pop(conn.address) - 1
            if left:
                self.per_address[conn.address] = left
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    # -- request life (the middleware) and head progress (the connection)

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        conn = self.open.get(request.transport)
        if conn is not None:
            conn.busy += 1
            self.idle.pop(conn, None)
            # the task ends after the response body is written (aiohttp's finish_response runs in it)
            asyncio.current_task().add_done_callback(conn.request_done)
        return await handler(request)

    def head_completed(self, conn: TrackedConnection) -> None:
        if conn in self.idle:
            self.idle.move_to_end(conn)  # about to be busy: the last one to evict

    # -- accept errors

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Route the loop's exception reports through ``on_loop_exception``."""
        loop.set_exception_handler(self.on_loop_exception)

    def on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and exc.errno in ACCEPT_ERRNOS and "socket" in context):
            loop.default_exception_handler(context)
            return
        self.counters.accept_errors += 1
        self._accept_unlogged += 1
        self._last_accept_error = exc
        wait = self._accept_last_log + ACCEPT_LOG_INTERVAL - loop.time()
        if wait <= 0:
            self._log_accept_errors()
        elif self._accept_flush is None:
            self._accept_flush = loop.call_later(wait, self._log_accept_errors)

    def _log_accept_errors(self) -> None:
        if self._accept_flush is not None:
            self._accept_flush.cancel()
            self._accept_flush = None
        if self._accept_unlogged:
            log.error("gateway: accept() failed %d time(s) since the last report (%s); open connections %d, cap %d",
                      self._accept_unlogged, self._last_accept_error, len(self.open), self.max_connections)
            self._accept_unlogged = 0
            self._accept_last_log = self.loop.time()

    def stats(self) -> dict:
        return {"open": len(self.open), "idle": len(self.idle), "max_connections": self.max_connections,
                "max_connections_per_address": self.max_per_address, "header_timeout": self.header_timeout,
                **dataclasses.asdict(self.counters)}


class TrackedConnection(asyncio.Protocol):
    """One accepted connection: forwards every protocol call to aiohttp's handler and keeps the header clock."""

    __slots__ = ("tracker", "handler", "transport", "address", "admitted", "busy", "head_since", "tail", "timer")

    def __init__(self, tracker: ConnectionTracker, handler: asyncio.Protocol):
        self.tracker = tracker
        self.handler = handler
        self.transport = None
        self.address: str | None = None
        self.admitted = False
        self.busy = 0  # requests between reaching the app and the end of their response
        self.head_since: float | None = None  # when the pending request head started; None: none pending
        self.tail = b""  # the last bytes seen
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = peer[0] if isinstance(peer, tuple) else None
        if not self.tracker.admit(self):
            return  # refused: aiohttp never sees it
        self.admitted = True
        self.head_since = self.tracker.loop.time()  # the clock runs from the start, before any byte
        self._arm()
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        self._scan(data)
        self.handler.data_received(data)

    def eof_received(self):
        return self.handler.eof_received() if self.admitted else None

    def connection_lost(self, exc) -> None:
        if self.admitted:
            self.tracker.forget(self)
            self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.handler.resume_writing()

    def _scan(self, data: bytes) -> None:
        """Find the end of request heads (a blank line); bytes after the last one start the next head."""
        joined = self.tail + data  # the tail is 2 bytes: a blank line split across two reads is still found
        end = -1
        for mark in HEAD_ENDS:
            at = joined.rfind(mark)
            if at >= 0:
                end = max(end, at + len(mark))
        self.tail = joined[-2:]
        if end >= 0:
            self.head_since = self.tracker.loop.time() if end < len(joined) else None
            self.tracker.head_completed(self)
        elif self.head_since is None:
            self.head_since = self.tracker.loop.time()
        if self.head_since is not None:
            self._arm()

    def request_done(self, _task=None) -> None:
        self.busy -= 1
        if self.busy or self.transport not in self.tracker.open:
            return
        self.tracker.idle[self] = None  # idle again, the newest
        if self.head_since is not None:  # part of the next head came while busy: its clock starts now
            self.head_since = self.tracker.loop.time()
            self._arm()

    def _arm(self) -> None:
        if self.timer is None:
            self.timer = self.tracker.loop.call_at(self.head_since + self.tracker.header_timeout, self._check)

    def _check(self) -> None:
        self.timer = None
        if self.head_since is None or self.busy or self.transport not in self.tracker.open:
            return  # re-armed when the next head starts or the request ends
        deadline = self.head_since + self.tracker.header_timeout
        if self.tracker.loop.time() >= deadline:
            self.tracker.counters.closed_header_timeout += 1
            log.debug("gateway: %s: no complete request head within %g s, closing", self.address,
                      self.tracker.header_timeout)
            self.tracker.close(self)
        else:
            self.timer = self.tracker.loop.call_at(deadline, self._check)


CONNECTIONS = web.AppKey("connections", ConnectionTracker)
