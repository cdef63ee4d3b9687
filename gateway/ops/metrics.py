"""Prometheus metrics of one gateway node: ``GET /metrics`` in the text exposition format (prometheus-client).

What is measured, and why it is measured where it is:

- Requests: ``gateway_requests_total{protocol, type, status}`` and ``gateway_request_duration_seconds{protocol, type}``
  are recorded by the ``on_response_prepare`` hook, i.e. when the status line is about to be sent. The duration runs
  from ``metrics_middleware`` (the outermost middleware) to that moment: the gateway's own time to first byte, not the
  client's bandwidth. ``gateway_response_bytes_total`` adds the body length announced then (0 for HEAD and 304); a
  download the client aborts still counts in full.
- Stages (nginx-vod-module's perf counters are the model): ``gateway_stage_duration_seconds{stage}`` with stage =
  cache_lookup (response cache), parse (moov), plan (segment plans of a media set, then a segment's sample ranges
  and reads), read (coalesced preads), mux (segment muxer) and manifest (playlist/MPD writers). The timings are taken
  with ``time.perf_counter_ns`` around the existing calls in gateway/ (packagers/ stays pure) and reach us through
  ``Packaging.observe_stage`` and ``SingleFlightLRU.on_lookup``: plain callables, so that bench and unit tests can run
  the packaging path without prometheus.
- Aborted responses: ``gateway_responses_aborted_total{protocol, reason}``, counted where the response gives up
  (gateway/http/download.py closes a download whose file shrank or changed; gateway/http/packaged.py refuses a
  segment whose reads came back short), since the status line cannot tell.
- Caches: the counters of gateway/origin/cache.py are copied (as deltas) into prometheus counters after every response and
  at every scrape, so a scrape right after a response always includes it.
- Live: streams, publishers and viewers from the RTMP relay when ingest runs in this process, plus HTTP viewers
  (``LiveViewers``: distinct clients that fetched a stream's playlists in the last 30 s).

Several worker processes (``gateway serve --workers N``) are aggregated with prometheus-client's multiprocess mode:
the supervisor (gateway/runtime/workers.py) sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory before it forks the
workers and marks dead workers (``mark_process_dead``); every worker writes its values to mmap files there, and a
scrape answered by any worker merges all files (``MultiProcessCollector``). Gauges say how to merge (``livesum``: the
sum over the workers alive). Without the variable the node runs in single-process mode with a registry of its own
(plus process/GC metrics).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import weakref
from collections import deque
from typing import AsyncIterator

from aiohttp import web
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, gc_collector, platform_collector,
                               process_collector, values)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from packagers.errors import PackagerError

from .. import __version__
from ..http.connections import CONNECTIONS
from ..origin.packaging import PACKAGING
from ..ingest.service import INGEST
from ..origin.paths import split_path

log = logging.getLogger("gateway.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STAGES = ("cache_lookup", "parse", "plan", "read", "mux", "manifest")
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
REFRESH_SECONDS = 1.0  # how often gauges (cache sizes, live viewers) are republished for scrapes by other workers
VIEWER_WINDOW_SECONDS = 30.0
RECENT_ERRORS = 50
# when the request reached the app (perf_counter_ns); RequestKey since aiohttp 3.13, a plain string before
_START = web.RequestKey("metrics_start_ns", int) if hasattr(web, "RequestKey") else "gateway.ops.metrics.start_ns"
_MEDIA_PROTOCOLS = frozenset(("hls", "dash", "mss", "hds", "mp4", "live"))


# --- request classification: bounded label values from the raw path ---------------------------------------------

def classify(raw_path: str) -> tuple[str, str]:
    """(protocol, type) of a request path: protocol in hls|dash|mss|hds|mp4|live|playmanifest|other, type in
    manifest|segment|init|key|mp4|other. String tests on the file name only (no parsing, no errors): every path,
    malformed ones included, gets a label, and a label never holds anything the client chose."""
    parts = raw_path.split("?", 1)[0].split("/")[1:]
    if len(parts) >= 4 and parts[0] == "s":
        parts = parts[3:]  # /s/<entry>/<token>/<media URL>
    head, name = (parts[0], parts[-1]) if parts else ("", "")
    if head == "p":
        return "playmanifest", "other"
    if head not in _MEDIA_PROTOCOLS or len(parts) < 2:
        return "other", "other"
    if head == "mp4":
        return "mp4", "mp4"
    return head, _file_type(head, name)


def _file_type(protocol: str, name: str) -> str:
    if name.endswith((".m3u8", ".mpd", ".f4m")) or (protocol == "mss" and name in ("manifest", "Manifest")):
        return "manifest"
    if name.endswith(".mp4") and (name.startswith("init") or name.endswith("-init.mp4")):  # VOD, live
        return "init"
    if name.endswith(".key"):
        return "key"
    if name.endswith((".ts", ".m4s", ".aac")) or name.startswith("Fragments(") or "-Frag" in name:
        return "segment"
    return "other"


def client_id(request: web.BaseRequest) -> str:
    """Who is watching, for the HTTP viewer approximation: the first X-Forwarded-For hop (behind the load balancer)
    or the peer address, plus the user agent (several players behind one NAT count once per browser kind)."""
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
    return f"{forwarded or request.remote or '?'}|{request.headers.get('User-Agent', '')[:200]}"


# --- HTTP live viewers ---------------------------------------------------------------------------------------------

class LiveViewers:
    """Distinct clients per live stream (and per quality) that fetched a playlist/MPD in the last ``window`` seconds.

    HTTP players poll live playlists every target duration, so a client that stopped polling for 30 s has left.
    Qualities: the live packager (rtmp/live) repackages the published stream as it is, so its media playlist
    (``index.m3u8``) and its MPD are quality ``source``, like RTMP players; another media playlist name (renditions,
    if they ever exist) is its own quality. A master playlist counts for the stream only (its player then polls a
    media playlist). Per worker: with several workers a client whose requests land on two workers within the window
    counts twice (documented in docs/metrics.md).
    """

    def __init__(self, window: float = VIEWER_WINDOW_SECONDS, max_clients: int = 100_000):
        self.window = window
        self.max_clients = max_clients
        self._seen: dict[tuple[str, str, str], dict[str, float]] = {}  # (stream, protocol, quality) → client → time

    def saw(self, raw_path: str, client: str, now: float | None = None) -> None:
        try:
            parts = split_path(raw_path.split("?", 1)[0])
        except PackagerError:  # a malformed path was answered 4xx anyway
            return
        if len(parts) != 4 or parts[0] != "live":
            return
        name = parts[3]
        if name.endswith(".m3u8"):
            stem = name[: -len(".m3u8")]
            protocol, quality = "hls", ("" if stem == "master" else "source" if stem == "index" else stem)
        elif name.endswith(".mpd"):
            protocol, quality = "dash", "source"
        else:
            return
        clients = self._seen.setdefault((f"{parts[1]}/{parts[2]}", protocol, quality), {})
        if client in clients or len(clients) < self.max_clients:
            clients[client] = time.monotonic() if now is None else now

    def counts(self, now: float | None = None) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """({(stream, protocol): viewers}, {(stream, quality): viewers}), forgetting clients older than the window."""
        horizon = (time.monotonic() if now is None else now) - self.window
        by_stream: dict[tuple[str, str], set[str]] = {}
        by_quality: dict[tuple[str, str], set[str]] = {}
        for key in list(self._seen):
            clients = self._seen[key]
            for client in [c for c, t in clients.items() if t < horizon]:
                del clients[client]
            if not clients:
                del self._seen[key]
                continue
            stream, protocol, quality = key
            by_stream.setdefault((stream, protocol), set()).update(clients)
            if quality:
                by_quality.setdefault((stream, quality), set()).update(clients)
        return {k: len(v) for k, v in by_stream.items()}, {k: len(v) for k, v in by_quality.items()}


# --- the metrics of one process ------------------------------------------------------------------------------------

class GatewayMetrics:
    """The prometheus objects of one app, the mirrors of the cache counters, and the recent errors."""

    def __init__(self, multiproc_dir: str | None = None):
        self.multiproc_dir = multiproc_dir
        if multiproc_dir:
            if not os.path.isdir(multiproc_dir):
                raise RuntimeError(f"{MULTIPROC_ENV}={multiproc_dir} is not a directory")
            if not getattr(values.ValueClass, "_multiprocess", False):
                # prometheus_client chose its value class at import; it was imported before the variable was set
                values.ValueClass = values.get_value_class()
            self.registry = None
        else:
            self.registry = CollectorRegistry()
            process_collector.ProcessCollector(registry=self.registry)
            platform_collector.PlatformCollector(registry=self.registry)
            gc_collector.GCCollector(registry=self.registry)
        r, live = self.registry, {"multiprocess_mode": "livesum"}
        self.requests = Counter("gateway_requests", "HTTP responses by protocol, request type and status",
                                ["protocol", "type", "status"], registry=r)
        self.duration = Histogram("gateway_request_duration_seconds", "From the request reaching the app to its "
                                  "response headers", ["protocol", "type"], buckets=REQUEST_BUCKETS, registry=r)
        self.bytes_out = Counter("gateway_response_bytes", "Response body bytes (Content-Length of GET responses)",
                                 ["protocol", "type"], registry=r)
        self.aborted = Counter("gateway_responses_aborted", "Responses that could not be completed because their "
                               "file changed or a read failed (reason: truncated, changed, read_error)",
                               ["protocol", "reason"], registry=r)
        stage = Histogram("gateway_stage_duration_seconds", "Time of one packaging stage (nginx-vod perf counters)",
                          ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self._stages = {name: stage.labels(name) for name in STAGES}
        self.cache_counters = {
            name: Counter(f"gateway_response_cache_{name}", f"Response cache {name}", registry=r)
            for name in ("hits", "misses", "coalesced", "evictions")
        }
        self.cache_bytes = Gauge("gateway_response_cache_bytes", "Bytes held by the response cache", registry=r, **live)
        self.cache_entries = Gauge("gateway_response_cache_entries", "Entries in the response cache", registry=r,
                                   **live)
        self.cache_capacity = Gauge("gateway_response_cache_capacity_bytes", "Capacity of the response cache",
                                    registry=r, **live)
        self.metadata = {
            name: Counter(f"gateway_metadata_cache_{name}", f"Metadata cache {name} (parsed moov, media sets)",
                          ["cache"], registry=r)
            for name in ("hits", "misses")
        }
        self.live_streams = Gauge("gateway_live_streams", "RTMP streams known to the relay", registry=r, **live)
        self.live_publishers = Gauge("gateway_live_publishers", "RTMP streams with a publisher", registry=r, **live)
        self.rtmp_connections = Gauge("gateway_rtmp_connections", "Open RTMP connections", registry=r, **live)
        self.http_connections = Gauge("gateway_http_connections", "Open HTTP connections", registry=r, **live)
        events = Counter("gateway_http_connection_events", "HTTP connections closed or refused by the connection "
                         "bounds (gateway/http/connections.py), and accept() failures", ["event"], registry=r)
        self._connection_events = {name: events.labels(name.removeprefix("closed_")) for name in
                                   ("closed_header_timeout", "evicted", "refused_full", "refused_per_address",
                                    "accept_errors")}
        self.viewers = Gauge("gateway_live_viewers", "Viewers of a live stream: RTMP players, and HTTP clients that "
                             "fetched its playlists in the last 30 s", ["stream", "protocol"], registry=r, **live)
        self.quality_viewers = Gauge("gateway_live_quality_viewers", "Viewers of one quality of a live stream "
                                     "(RTMP players: quality 'source')", ["stream", "quality"], registry=r, **live)
        Gauge("gateway_build_info", "Version of the gateway", ["version"], registry=r,
              multiprocess_mode="max").labels(__version__).set(1)
        self._metadata_children = {cache: {name: c.labels(cache) for name, c in self.metadata.items()}
                                   for cache in ("presentation", "media_set")}
        self._children: dict[tuple, object] = {}  # label lookups of the per-response series, memoised
        self._baselines: dict[int, tuple[weakref.ref, dict[str, int]]] = {}  # id(CacheCounters) → what was copied
        self._published: dict[Gauge, set[tuple[str, ...]]] = {self.viewers: set(), self.quality_viewers: set()}
        self.live_viewers = LiveViewers()
        self.recent_errors: deque[dict] = deque(maxlen=RECENT_ERRORS)

    def observe_stage(self, stage: str, elapsed_ns: int) -> None:
        """``Packaging.observe_stage``: thread-safe (called from the I/O executor)."""
        self._stages[stage].observe(elapsed_ns / 1e9)

    # -- responses

    def _child(self, metric, *labels: str):
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record_response(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        protocol, kind = classify(request.rel_url.raw_path)
        status = response.status
        self._child(self.requests, protocol, kind, str(status)).inc()
        started = request.get(_START)
        if started is not None:
            self._child(self.duration, protocol, kind).observe((time.perf_counter_ns() - started) / 1e9)
        if request.method != "HEAD":
            length = response.content_length
            if length:
                self._child(self.bytes_out, protocol, kind).inc(length)
        if status >= 400:
            self.recent_errors.append(_error_entry(request, response))
        elif protocol == "live" and kind == "manifest":
            self.live_viewers.saw(request.rel_url.raw_path, client_id(request))

    def record_abort(self, request: web.BaseRequest, reason: str) -> None:
        """A response given up because of its file: a download closed mid-body, a segment refused with 503."""
        self._child(self.aborted, classify(request.rel_url.raw_path)[0], reason).inc()

    # -- pulled values: cache counters, gauges

    def sync_caches(self, packaging) -> None:
        """Copy what gateway/origin/cache.py counted since the last call (cheap: a few integer comparisons).

        What was copied is remembered per ``CacheCounters`` object, not per app: a reload that hands the running
        caches to the next app generation (gateway/runtime/serve.py ``carry_caches``) continues from there, and a fresh
        cache starts from zero."""
        self._mirror(packaging.responses.counters, self.cache_counters)
        for cache_name, cache in (("presentation", packaging.metadata.presentations),
                                  ("media_set", packaging.metadata.media_sets)):
            self._mirror(cache.counters, self._metadata_children[cache_name])

    def sync_connections(self, tracker) -> None:
        """The worker's connection tracker (`gateway serve` only): open connections and its counters' deltas."""
        if tracker is not None:
            self.http_connections.set(len(tracker.open))
            self._mirror(tracker.counters, self._connection_events)

    def _mirror(self, counters, targets: dict) -> None:
        entry = self._baselines.get(id(counters))
        if entry is None or entry[0]() is not counters:
            entry = self._baselines[id(counters)] = (weakref.ref(counters), {})
        copied = entry[1]
        for name, target in targets.items():
            now = getattr(counters, name)
            if now > copied.get(name, 0):
                target.inc(now - copied.get(name, 0))
                copied[name] = now

    def _forget_dead_caches(self) -> None:
        for key in [k for k, (ref, _) in self._baselines.items() if ref() is None]:
            del self._baselines[key]

    def refresh(self, packaging, ingest_stats: dict | None) -> None:
        """Republish every gauge of this process (timer and scrape)."""
        self._forget_dead_caches()
        self.sync_caches(packaging)
        cache = packaging.responses
        self.cache_bytes.set(cache.weight)
        self.cache_entries.set(len(cache))
        self.cache_capacity.set(cache.capacity)
        by_stream, by_quality = self.live_counts(ingest_stats)
        streams = (ingest_stats or {}).get("streams") or {}
        self.live_streams.set(len(streams))
        self.live_publishers.set(sum(1 for st in streams.values() if st.get("publishing")))
        self.rtmp_connections.set((ingest_stats or {}).get("connections", 0))
        self._publish(self.viewers, by_stream)
        self._publish(self.quality_viewers, by_quality)

    def live_counts(self, ingest_stats: dict | None) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """Viewers by (stream, protocol) and by (stream, quality): HTTP clients of this process, plus the RTMP players
        of the relay (protocol 'rtmp', quality 'source') when ingest runs here."""
        by_stream, by_quality = self.live_viewers.counts()
        for key, st in ((ingest_stats or {}).get("streams") or {}).items():
            players = _players(st)
            by_stream[(key, "rtmp")] = players
            by_quality[(key, "source")] = by_quality.get((key, "source"), 0) + players
        return by_stream, by_quality

    def _publish(self, gauge: Gauge, counts: dict[tuple[str, ...], int]) -> None:
        """Set the gauge's series to ``counts``; series that vanished go (single process) or drop to 0 (multiprocess
        mode cannot remove a series from its files)."""
        for labels, count in counts.items():
            gauge.labels(*labels).set(count)
        for labels in self._published[gauge] - counts.keys():
            if self.multiproc_dir:
                gauge.labels(*labels).set(0)
            else:
                gauge.remove(*labels)
        self._published[gauge] = set(counts) if not self.multiproc_dir else self._published[gauge] | set(counts)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """(body, content type) of every process (multiprocess mode) or of this one, in the format ``accept`` asks
        for: Prometheus text 0.0.4 by default, OpenMetrics when asked. Blocking: reads the mmap files."""
        encoder, content_type = choose_encoder(accept)
        if self.multiproc_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiproc_dir)
            return encoder(registry), content_type
        return encoder(self.registry), content_type


def _players(stream_stats: dict) -> int:
    players = stream_stats.get("players")
    if isinstance(players, (list, tuple)):
        return len(players)
    if isinstance(players, int):
        return players
    return int(stream_stats.get("subscribers", 0))


def _error_entry(request: web.BaseRequest, response: web.StreamResponse) -> dict:
    message = ""
    if isinstance(response, web.Response) and response.body is not None and isinstance(response.body, bytes):
        message = response.body[:300].decode("utf-8", "replace").strip()
    return {"time": time.time(), "status": response.status, "method": request.method,
            "path": request.path[:300], "message": message or (response.reason or "")}


# --- aiohttp wiring ------------------------------------------------------------------------------------------------

PROMETHEUS = web.AppKey("prometheus", GatewayMetrics)


@web.middleware
async def metrics_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Outermost middleware: stamps the start of the request for the duration histogram."""
    request[_START] = time.perf_counter_ns()
    return await handler(request)


async def record_response(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: every response the app sends, errors included."""
    metrics = request.app.get(PROMETHEUS)
    if metrics is not None:
        metrics.record_response(request, response)
        metrics.sync_caches(request.app[PACKAGING])


def ingest_stats(app: web.Application) -> dict | None:
    """The RTMP server's stats (``Ingest.stats()``) when ingest runs in this process, else None."""
    running = app.get(INGEST)
    return running.stats() if running is not None else None


# Multiprocess mode keeps one set of metric objects per process: prometheus-client stores their values in per-process
# files keyed by name and labels, so two objects of one name in a process (two app generations during a reload)
# would overwrite each other's counts. A global, because the storage it mirrors is per process too.
_PROCESS_METRICS: dict[tuple[int, str], GatewayMetrics] = {}


def metrics_for_this_process() -> GatewayMetrics:
    """Multiprocess mode: this process's metrics (shared by its app generations); otherwise new ones for one app."""
    multiproc_dir = os.environ.get(MULTIPROC_ENV) or None
    if multiproc_dir is None:
        return GatewayMetrics(None)
    key = (os.getpid(), multiproc_dir)
    if key not in _PROCESS_METRICS:
        _PROCESS_METRICS[key] = GatewayMetrics(multiproc_dir)
    return _PROCESS_METRICS[key]


async def metrics_state(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the packaging state): create the metrics, hook the stage timers, republish gauges."""
    metrics = metrics_for_this_process()
    packaging = app[PACKAGING]
    packaging.observe_stage = metrics.observe_stage
    packaging.responses.on_lookup = lambda ns: metrics.observe_stage("cache_lookup", ns)
    app[PROMETHEUS] = metrics

    async def refresh_forever() -> None:
        while True:
            try:
                metrics.refresh(packaging, ingest_stats(app))
                metrics.sync_connections(app.get(CONNECTIONS))
            except Exception:
                log.exception("metrics: refreshing the gauges failed")
            await asyncio.sleep(REFRESH_SECONDS)

    task = asyncio.get_running_loop().create_task(refresh_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve_metrics(request: web.Request) -> web.Response:
    metrics, packaging = request.app[PROMETHEUS], request.app[PACKAGING]
    metrics.refresh(packaging, ingest_stats(request.app))
    metrics.sync_connections(request.app.get(CONNECTIONS))
    body, content_type = await packaging.run(metrics.exposition, request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
