"""Audience analytics of one node and of the pool: the per-worker ``Audience`` (gateway/ops/audience.py), fed by the
app's response hook, and the gathering of every worker's and every node's minutes into one answer.

- Recording (``AudienceNode.record``, from gateway/http/app.py's one response hook): the http layer has put the
  request's stream on it (``AUDIENCE_STREAM``: ``entry:<id>``, ``file:<path>``, ``live:<app>/<stream>``, with the
  entry's partner); this adds the CMCD the player sent (query ``CMCD=`` and the four ``CMCD-*`` headers,
  gateway/ops/cmcd.py), its player/browser from the User-Agent, the bytes announced and the status. A request
  without CMCD counts under its client (first X-Forwarded-For hop or peer, plus User-Agent), as the viewer estimate
  did: old players still count. Nothing here can fail a response: a bad value is ignored and counted.
  Requests are counted in batches: the hook only files the request under (stream, kind, raw CMCD, User-Agent,
  client, status) with a count and bytes; identical requests (a player's repeated playlists) share one entry. The
  batch goes into the minutes (``Audience.record``, once per entry with its count, at the entry's first request's
  time) ``BATCH_SECONDS`` after it opened, when it holds ``BATCH_GROUPS`` entries or a minute ends, and before
  anything reads them. That cut the hook on a cached master.m3u8 from 6.1 to 2.2 µs in-process (16-19 µs to ~4 µs in
  a loaded server, where the per-request code runs cache-cold): docs/performance.md.
- A node: each worker process keeps its own minutes (requests of one player land on several workers), and serves
  them to its siblings on an abstract Unix socket named after the node's port and the worker's index
  (``\\0gateway-audience-<port>-<index>``: no file, gone with the process). ``node_export`` merges every worker's
  export; a worker that does not answer within ``SIBLING_TIMEOUT`` is reported missing, never waited for.
- The pool: ``pool_export`` asks every node of ``nodes`` (settings) for its node export over its admin API (same
  token), concurrently, each bounded by ``PEER_TIMEOUT``; sessions are counted once across nodes because every node
  hashes session ids with the same key (``analytics_salt``). A node that does not answer is listed in ``missing``.
  This node is recognised among the answers by its ``node`` id (host name and port); if the list does not name it,
  its own export is added.
- A SIGHUP reload keeps the worker's ``AudienceNode`` (gateway/runtime/serve.py hands it to the next app
  generation, as it does the metrics) and applies the new bounds with ``configure``.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import socket
import time
from time import perf_counter_ns
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web

from ..settings import Settings, parse_node
from .audience import Audience, merge_exports, summarize
from .audience_metrics import exposition
from .cmcd import parse_cmcd
from .labels import REQUEST_LABEL
from .live_viewers import client_id
from .user_agents import player_of

log = logging.getLogger("gateway.analytics")

# the request's stream: (stream key, partner id or None), put there by the http layer
AUDIENCE = web.AppKey("audience", object)  # the worker's AudienceNode (gateway/http/app.py)
AUDIENCE_STREAM = (web.RequestKey("audience_stream", tuple) if hasattr(web, "RequestKey")
                   else "gateway.ops.audience.stream")
RECORDED_KINDS = frozenset(("manifest", "segment", "init", "key"))
SIBLING_TIMEOUT = 1.0  # seconds a sibling worker gets to send its export (a local socket: milliseconds)
PEER_TIMEOUT = 3.0  # seconds a peer node gets: the pool answer never waits longer for a node
SHARED_SECONDS = 1.0  # /status/audience and /metrics answers reused this long
BATCH_GROUPS = 1024  # distinct requests a batch holds before it is counted
BATCH_SECONDS = 1.0  # the longest a request waits to be counted
MEMO_ENTRIES = 4096  # parsed CMCD and User-Agents remembered (cleared when full)
MEMO_KEY_CHARS = 2048  # a query and CMCD headers longer than this in all are parsed every time, never remembered
MAX_AGENT_CHARS = 512  # of a User-Agent, kept to classify it (what follows names no browser)
STATUS_STREAMS = 10  # streams the status page charts
MAX_EXPORT_BYTES = 256 << 20  # a sibling's or peer's export larger than this is refused (a bounded node is far below)
_FIXED_SALT = b"gateway-analytics-v1"


def salt_of(settings: Settings) -> bytes:
    """The key of the session hashes: ``analytics_salt``, else derived from ``admin_token`` (a pool shares its
    config, so every node derives the same), else a fixed key."""
    if settings.analytics_salt:
        return settings.analytics_salt.encode()
    if settings.admin_token:
        return hashlib.sha256(b"analytics:" + settings.admin_token.encode()).digest()[:16]
    return _FIXED_SALT


def _bounds(settings: Settings) -> dict[str, Any]:
    return {"window_minutes": settings.analytics_window_minutes, "bucket_seconds": settings.analytics_bucket_seconds,
            "max_bytes": int(settings.analytics_memory_mb * 1024 * 1024), "max_streams": settings.analytics_streams,
            "salt": salt_of(settings)}


def sibling_socket(port: int, index: int) -> str:
    return f"\0gateway-audience-{port}-{index}"


class AudienceNode:
    """One worker's audience: the minutes it recorded, and how to reach its siblings' and the pool's."""

    def __init__(self, settings: Settings, *, worker_index: int = 0, workers: int = 1, port: int | None = None):
        self.settings = settings
        self.enabled = settings.analytics
        self.audience = Audience(**_bounds(settings))
        self.worker_index, self.workers = worker_index, workers
        self.port = port if port is not None else settings.port
        self.node_id = f"{socket.gethostname()}:{self.port}"
        self._server: web.AppRunner | None = None
        self._reports: dict[tuple, Any] = {}  # CMCD strings → parsed report (record)
        self._players: dict[str | None, str] = {}  # User-Agent → player
        # requests not counted yet: (stream, kind, CMCD, User-Agent, client, status) → [requests, bytes, first
        # request's time, parsed CMCD]; counted at most BATCH_SECONDS later, or before anything reads the audience
        self._batch: dict[tuple, list] = {}
        self._batch_minute = 0
        self._batch_until = 0.0  # when the batch's minute ends: a request from then on is another minute's
        self._flush_timer: asyncio.TimerHandle | None = None
        self.record_ns = self.timed = 0  # time spent recording, and the requests recorded
        self._shared: dict[tuple, tuple[float, asyncio.Future]] = {}  # public answers: at most ~1,441 keys

    def configure(self, settings: Settings, workers: int | None = None) -> None:
        """A reload: the new bounds; the minutes recorded so far stay (unless the bucket length or key changed)."""
        self.flush()  # counted under the bounds they came under
        self.settings, self.enabled = settings, settings.analytics
        self.audience.configure(**_bounds(settings))
        if workers is not None:
            self.workers = workers

    # -- recording (every response: cheap)

    def record(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        try:  # every response passes here: no Mapping.get (a Python-level call), no request_label
            stream, kind = request[AUDIENCE_STREAM], request[REQUEST_LABEL][1]
        except KeyError:  # not a media request (the http layer labels every request it names a stream for)
            return
        if kind not in RECORDED_KINDS or not self.enabled:
            return
        started = perf_counter_ns()
        get = request.headers.get
        # a player repeats the same CMCD on many requests (its playlists, every header shard but CMCD-Request):
        # parsed once, keyed by the raw query and headers. Transient, bounded, never exported (they hold the sid)
        key = (request.query_string, get("CMCD-Request"), get("CMCD-Object"), get("CMCD-Status"),
               get("CMCD-Session"))
        report = self._reports.get(key)
        if report is None:
            report, key = self._parse(key, request.headers)
        user_agent = get("User-Agent")
        if user_agent is not None and len(user_agent) > MAX_AGENT_CHARS:
            user_agent = user_agent[:MAX_AGENT_CHARS]
        client = "" if report.values.get("sid") else client_id(request)
        nbytes = (response.content_length or 0) if request.method != "HEAD" else 0
        group = (stream, kind, key, user_agent, client, response.status)
        counted = self._batch.get(group)
        if counted is None or time.time() >= self._batch_until:  # (a repeat in the next minute is that minute's)
            self._open_group(group, report, nbytes)
        else:
            counted[0] += 1
            counted[1] += nbytes
        self.record_ns += perf_counter_ns() - started  # what collection costs, for `gateway bench analytics`
        self.timed += 1

    def _parse(self, key: tuple, headers) -> tuple[Any, tuple]:
        """The report of a CMCD not seen lately, and the key its requests batch under: the raw strings, remembered,
        or (oversized: a query or header of kilobytes) the report's identity, so that neither the memo nor a batch
        holds megabytes of them."""
        report = parse_cmcd(cmcd_query(key[0]) if "CMCD=" in key[0] else None, headers)
        if sum(len(part) for part in key if part) > MEMO_KEY_CHARS:
            return report, ("", id(report))  # the batch holds the report: the id stays unique while it is there
        if len(self._reports) >= MEMO_ENTRIES:
            self._reports.clear()
        self._reports[key] = report
        return report, key

    def _open_group(self, group: tuple, report: Any, nbytes: int) -> None:
        """The first request of its kind in this batch: timed (its minute, a startup's start or end)."""
        now = time.time()
        minute = int(now // self.audience_bucket)
        batch = self._batch
        if batch and (minute != self._batch_minute or len(batch) >= BATCH_GROUPS):
            self.flush()
        self._batch_minute, self._batch_until = minute, (minute + 1) * self.audience_bucket
        self._batch[group] = [1, nbytes, now, report]
        if self._flush_timer is None:
            try:
                self._flush_timer = asyncio.get_running_loop().call_later(BATCH_SECONDS, self.flush)
            except RuntimeError:  # no event loop (a tool, a test): count at once
                self.flush()

    def flush(self) -> None:
        """Count the batch's requests into the audience: a group of identical requests is counted as one with its
        multiplicity (a player's repeated playlist requests cost one record), in the order they first came."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._batch = self._batch, {}
        if not batch:
            return
        started = perf_counter_ns()
        record, players = self.audience.record, self._players
        for (stream, kind, _, user_agent, client, status), (count, nbytes, now, report) in batch.items():
            player = players.get(user_agent)
            if player is None:
                player = player_of(user_agent)
                if len(players) >= MEMO_ENTRIES:
                    players.clear()
                players[user_agent] = player
            record(stream[0], stream[1], kind, report, client, player, nbytes, status, now=now, count=count)
        self.record_ns += perf_counter_ns() - started

    # -- a node: every worker's minutes

    async def start(self) -> None:
        """Serve this worker's export to its siblings (gateway serve with several workers)."""
        if self._server is not None:
            return
        app = web.Application()
        app.router.add_get("/export", self._serve_export)
        self._server = web.AppRunner(app, access_log=None)
        await self._server.setup()
        try:
            await web.UnixSite(self._server, sibling_socket(self.port, self.worker_index)).start()
        except OSError as e:  # a previous process of this worker index still holds the name: siblings miss us
            log.warning("analytics: worker %d cannot serve its siblings: %s", self.worker_index, e)

    async def metrics_text(self) -> str:
        """The node's current minute for /metrics (gateway/ops/audience_metrics.py), at most once a second."""
        async def text() -> str:
            bucket = self.settings.analytics_bucket_seconds
            raw, _ = await self.node_export({"start": time.time() // bucket * bucket})
            return exposition(await _off_loop(summarize, raw), self.settings.analytics_metrics_streams)

        return await self.shared(("metrics",), text)

    async def shared(self, key: tuple, make) -> Any:
        """``make()``'s answer, computed once for every caller within SHARED_SECONDS (callers that arrive while it
        runs wait for the same one): what public URLs gather from the workers costs the node once a second."""
        now = time.monotonic()
        entry = self._shared.get(key)
        if entry is None or entry[0] < now:
            entry = self._shared[key] = (now + SHARED_SECONDS, asyncio.ensure_future(make()))
        return await asyncio.shield(entry[1])

    async def close(self) -> None:
        self.flush()
        if self._server is not None:
            await self._server.cleanup()
            self._server = None

    async def _serve_export(self, request: web.Request) -> web.Response:
        return web.json_response(self.local_export(query_of(request.query)))

    def local_export(self, query: dict[str, Any]) -> dict:
        """This worker's minutes that ``query`` asks for: from/to in unix seconds (the minutes holding them)."""
        self.flush()
        bucket = self.audience_bucket
        start, end = query.get("start"), query.get("end")
        export = self.audience.export(None if start is None else int(start // bucket),
                                      None if end is None else int(end // bucket) + 1,
                                      query.get("streams"), query.get("partner"))
        export["stats"] = self.stats()
        return export

    def stats(self) -> dict:
        """This worker's bound and counters (the API shows every worker's: memory within its bound, drops)."""
        audience = self.audience
        return {"worker": self.worker_index, "memory_bytes": audience.memory_bytes(), "record_ns": self.record_ns,
                "recorded": self.timed,
                "max_bytes": int(self.settings.analytics_memory_mb * 1024 * 1024), **audience.counters}

    @property
    def audience_bucket(self) -> int:
        return self.settings.analytics_bucket_seconds

    async def node_export(self, query: dict[str, Any]) -> tuple[dict, list[str]]:
        """Every worker's minutes merged, and the workers that did not answer."""
        exports, missing = [self.local_export(query)], []
        siblings = [i for i in range(self.workers) if i != self.worker_index]
        answers = await asyncio.gather(*(self._sibling(i, query) for i in siblings), return_exceptions=True)
        for index, answer in zip(siblings, answers):
            if isinstance(answer, BaseException):
                missing.append(f"worker {index}: {_reason(answer)}")
            else:
                exports.append(answer)
        merged = await _off_loop(merge_exports, exports)
        merged["node"] = self.node_id
        merged["workers"] = sorted((e["stats"] for e in exports if isinstance(e.get("stats"), dict)),
                                   key=lambda s: s.get("worker", 0))
        return merged, missing

    async def _sibling(self, index: int, query: dict[str, Any]) -> dict:
        connector = aiohttp.UnixConnector(path=sibling_socket(self.port, index))
        timeout = aiohttp.ClientTimeout(total=SIBLING_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async with session.get("http://worker/export", params=_params(query)) as response:
                response.raise_for_status()
                return await _bounded_json(response)

    # -- the pool: every node's minutes

    async def pool_export(self, query: dict[str, Any]) -> tuple[dict, list[str], list[dict]]:
        """Every node's minutes merged (sessions once), the nodes that answered and the ones that did not."""
        peers = [peer_admin_url(node, self.settings) for node in self.settings.nodes]
        timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT)
        headers = {"Authorization": f"Bearer {self.settings.admin_token}"}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            answers = await asyncio.gather(*(self._peer(session, url, query) for url in peers),
                                           return_exceptions=True)
        exports: dict[str, dict] = {}
        stats: dict[str, list] = {}
        answered, missing = [], []
        for node, answer in zip(self.settings.nodes, answers):
            if isinstance(answer, BaseException):
                missing.append({"node": node, "error": _reason(answer)})
                continue
            answered.append(node)
            exports.setdefault(str(answer.get("node", node)), answer)  # a node listed twice counts once
            stats[str(answer.get("node", node))] = answer.get("workers", [])
        if self.node_id not in exports:  # the list does not name this node (or its answer was lost): add ours
            exports[self.node_id], missed_workers = await self.node_export(query)
            answered.append(f"{self.node_id} (this node)")
            missing += [{"node": self.node_id, "error": m} for m in missed_workers]
            stats[self.node_id] = exports[self.node_id]["workers"]
        merged = await _off_loop(merge_exports, list(exports.values()))
        merged["workers"] = stats
        return merged, answered, missing

    async def _peer(self, session: aiohttp.ClientSession, url: str, query: dict[str, Any]) -> dict:
        params = {**_params(query), "scope": "node", "raw": "1"}
        async with session.get(url, params=params) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            return await _bounded_json(response)


def cmcd_query(query_string: str) -> str | None:
    """The ``CMCD=`` argument of a raw query string, decoded (without parsing the others)."""
    at = query_string.find("CMCD=")
    while at > 0 and query_string[at - 1] != "&":  # the tail of another argument's name (xCMCD=)
        at = query_string.find("CMCD=", at + 1)
    if at < 0:
        return None
    end = query_string.find("&", at)
    value = query_string[at + 5:] if end < 0 else query_string[at + 5:end]
    return unquote(value) if "%" in value else value


def peer_admin_url(node: str, settings: Settings) -> str:
    host, _, admin_host, admin_port = parse_node(node)
    host, port = admin_host or host, admin_port or settings.admin_port
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/api/v1/analytics"


def query_of(params) -> dict[str, Any]:
    """The export's arguments from query parameters (from/to in unix seconds, stream, partner)."""
    query: dict[str, Any] = {}
    for name, key in (("from", "start"), ("to", "end")):
        if params.get(name):
            query[key] = float(params[name])
    if params.get("stream"):
        query["streams"] = [params["stream"]]
    if params.get("partner"):
        query["partner"] = int(params["partner"])
    return query


def _params(query: dict[str, Any]) -> dict[str, str]:
    params = {}
    for key, name in (("start", "from"), ("end", "to")):
        if query.get(key) is not None:
            params[name] = repr(float(query[key]))
    if query.get("streams"):
        params["stream"] = query["streams"][0]
    if query.get("partner") is not None:
        params["partner"] = str(query["partner"])
    return params


async def _off_loop(fn, *args, **kwargs):
    """Merging and summarising many minutes takes milliseconds to seconds: never on the loop serving players."""
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kwargs))


async def _bounded_json(response: aiohttp.ClientResponse) -> dict:
    if (response.content_length or 0) > MAX_EXPORT_BYTES:
        raise RuntimeError(f"export of {response.content_length} bytes refused")
    body = bytearray()
    async for chunk in response.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > MAX_EXPORT_BYTES:
            raise RuntimeError("export too large")
    data = json.loads(body)
    if not isinstance(data, dict):
        raise RuntimeError("export is not a JSON object")
    return data


def _reason(error: BaseException) -> str:
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return "timed out"
    return (str(error) or type(error).__name__)[:200]


async def serve_status_audience(request: web.Request) -> web.Response:
    """``/status/audience``: the status page's charts (gateway/ops/static/status.js): the node's busiest streams of
    the last ``minutes`` (default 60, at most 1440), as the admin API's series. Nothing a client could not see on the
    page already: stream names, counts, no address or session id."""
    node: AudienceNode = request.app[AUDIENCE]
    if not node.enabled:
        return web.json_response({"enabled": False, "streams": []}, headers={"Cache-Control": "no-store"})
    text = request.query.get("minutes", "60")
    minutes = min(int(text), 1440) if text.isdigit() and len(text) <= 4 and int(text) > 0 else 60

    async def answer() -> dict:
        start = time.time() - minutes * node.settings.analytics_bucket_seconds
        raw, missing = await node.node_export({"start": start})
        body = await _off_loop(summarize, raw, top=STATUS_STREAMS)
        return {"enabled": True, "missing_workers": missing, "workers": raw["workers"], **body}

    # a public URL: however often it is asked, a node gathers and summarises at most once a second per length
    return web.json_response(await node.shared(("status", minutes), answer), headers={"Cache-Control": "no-store"})
