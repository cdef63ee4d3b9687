"""The access log: one line per request, as text or as one JSON object per line (``--access-log-format``).

Fields: time (UTC), remote address, method, path, status, body bytes sent, duration in ms, the response-cache result
(``hit``, ``miss``, ``bypass``, or ``-`` where no cache is involved: errors, 304s, /status), the user agent and the
worker's pid. Handlers set the cache result on the request (``request[CACHE_RESULT]``): only the packaged path knows
whether its bytes came from the cache.

The query string is not logged: ``ks`` tokens and other credentials travel there. /health and /ready are logged at
DEBUG, since load balancers poll them every second or two. Lines go to stderr through their own handler (message
only, no logging prefix), so that a JSON line is exactly one JSON object.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .log_format import utc_time

__all__ = ["ACCESS_LOGGER", "AccessLogger", "CACHE_RESULT", "QUIET_PATHS", "configure_access_log"]

CACHE_RESULT = web.RequestKey("cache_result", str)  # hit | miss | bypass
QUIET_PATHS = frozenset({"/health", "/ready"})
ACCESS_LOGGER = "gateway.access"


class AccessLogger(AbstractAccessLogger):
    """aiohttp calls ``log`` once the response is sent; ``log_format`` is our format name (text or json)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_taken: float) -> None:
        path = request.rel_url.raw_path
        level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        record = {
            "time": utc_time(time.time()),
            "remote": request.remote or "-",
            "method": request.method,
            "path": path,
            "status": response.status,
            "bytes": body_bytes(request, response),
            "duration_ms": round(time_taken * 1000, 3),
            "cache": request.get(CACHE_RESULT, "-"),
            "user_agent": request.headers.get("User-Agent", ""),
            "pid": os.getpid(),
        }
        self.logger.log(level, format_record(record, self.log_format))

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG) or self.logger.isEnabledFor(logging.INFO)


def body_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """Body bytes sent: aiohttp counts status line and headers in ``body_length`` too, so we take the body's own size
    where the response knows it (a 206's part, nothing for HEAD), and the writer's count for streamed bodies."""
    if request.method == "HEAD" or response.status in (204, 304):
        return 0
    if response.content_length is not None and not response.chunked:
        return response.content_length if response.prepared else 0
    return response.body_length


def format_record(record: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(record, separators=(",", ":"))
    quoted = json.dumps  # path and user agent quoted with JSON escapes, so a line always splits the same way
    return (f"{record['time']} {record['remote']} {record['method']} {quoted(record['path'])} {record['status']} "
            f"{record['bytes']} {record['duration_ms']:.3f}ms {record['cache']} {quoted(record['user_agent'])} "
            f"pid={record['pid']}")


def configure_access_log(enabled: bool, fmt: str) -> tuple[logging.Logger | None, type[AccessLogger]]:
    """The logger and class for ``web.AppRunner(access_log=..., access_log_class=..., access_log_format=fmt)``.

    The logger writes bare lines to stderr and does not propagate (no second copy with the root logger's prefix); its
    level follows the root logger, so ``--log-level debug`` shows the health checks and ``warning`` hides requests.
    """
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(getattr(h, "_gateway_access", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._gateway_access = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    return (logger if enabled else None), AccessLogger
