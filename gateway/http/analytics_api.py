"""``GET /api/v1/analytics`` (the admin API's auth, gateway/http/admin_api.py): audience series from the players' CMCD.

Query: ``stream=<key>`` (``entry:<id>``, ``file:<path>``, ``live:<app>/<stream>``), ``partner=<id>`` (the partner's
entries), else ``top=N`` (the N streams with most sessions, default 10); ``from``/``to`` in unix seconds or ISO 8601
(default: the last hour); ``scope=node`` (every worker of this node, the default) or ``scope=pool`` (every node of
``nodes``, sessions counted once); ``raw=1`` gives the mergeable export instead of the series (what nodes exchange).
The series' shape is gateway/ops/audience.py ``summarize``'s; docs/analytics.md describes every field.
"""
from __future__ import annotations

import asyncio
import functools
import math
import time
from datetime import datetime
from typing import Any

from aiohttp import web

from ..ops.audience import summarize
from ..ops.audience_node import AUDIENCE, AudienceNode

MAX_TOP = 1000
DEFAULT_TOP = 10
DEFAULT_MINUTES = 60
MAX_TIME = 1e11  # unix seconds: year 5138; past it (inf, nan, 1e308) a minute index means nothing  # without from: the last hour


class QueryError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def parse_query(params) -> tuple[dict[str, Any], dict[str, Any]]:
    """(export query, summary options) from the request's parameters; QueryError names the bad one."""
    unknown = sorted(set(params) - {"stream", "partner", "top", "from", "to", "scope", "raw"})
    if unknown:
        raise QueryError(unknown[0], f"unknown parameter {unknown[0]!r}")
    query: dict[str, Any] = {}
    for name, key in (("from", "start"), ("to", "end")):
        if params.get(name):
            query[key] = _time(name, params[name])
    if "start" in query and "end" in query and query["end"] < query["start"]:
        raise QueryError("to", "to is before from")
    options: dict[str, Any] = {}
    stream = params.get("stream")
    if stream:
        if len(stream) > 300:
            raise QueryError("stream", "stream is longer than 300 characters")
        query["streams"] = [stream]
        options["stream"] = stream
    if params.get("partner"):
        partner = _int("partner", params["partner"], 0, 2**31 - 1)
        query["partner"] = options["partner"] = partner
    if params.get("top") or not (stream or "partner" in options):
        options["top"] = _int("top", params.get("top") or str(DEFAULT_TOP), 1, MAX_TOP)
    scope = params.get("scope", "node")
    if scope not in ("node", "pool"):
        raise QueryError("scope", "scope must be node or pool")
    options["scope"] = scope
    options["raw"] = params.get("raw", "0") in ("1", "true")
    return query, options


def _time(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or abs(value) > MAX_TIME:
            raise QueryError(name, f"{name} must be unix seconds (0 to {MAX_TIME:g}) or an ISO 8601 time")
        return value
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(name, f"{name} must be unix seconds or an ISO 8601 time, got {text[:40]!r}") from None
    if moment.tzinfo is None:
        raise QueryError(name, f"{name}: an ISO 8601 time needs its zone (Z or +hh:mm)")
    return moment.timestamp()


def _int(name: str, text: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise QueryError(name, f"{name} must be an integer from {low} to {high}")
    return int(text)


async def analytics(request: web.Request, public: web.Application) -> dict:
    """The body of ``GET /api/v1/analytics``: raises QueryError (400) or LookupError (404, analytics off)."""
    node: AudienceNode = public[AUDIENCE]
    if not node.enabled:
        raise LookupError("analytics are off (analytics = false in the configuration)")
    query, options = parse_query(request.query)
    if "start" not in query:  # the last hour unless asked: a day of every stream takes seconds to merge
        query["start"] = time.time() - DEFAULT_MINUTES * node.settings.analytics_bucket_seconds
    if options["scope"] == "pool":
        raw, answered, missing = await node.pool_export(query)
        where = {"scope": "pool", "nodes": {"answered": answered, "missing": missing, "workers": raw["workers"]}}
    else:
        raw, missing = await node.node_export(query)
        where = {"scope": "node", "node": node.node_id, "missing_workers": missing, "workers": raw["workers"]}
    if options["raw"]:
        return raw
    body = await asyncio.get_running_loop().run_in_executor(None, functools.partial(
        summarize, raw, stream=options.get("stream"), partner=options.get("partner"), top=options.get("top")))
    return {**where, **body}
