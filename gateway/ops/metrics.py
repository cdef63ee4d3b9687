"""Prometheus metrics of one gateway node: ``GET /metrics`` in the text exposition format (prometheus-client).

What is measured, and why it is measured where it is:

- Requests: ``gateway_requests_total{protocol, type, status}`` and ``gateway_request_duration_seconds{protocol, type}``
  are recorded by the ``on_response_prepare`` hook, i.e. when the status line is about to be sent. The duration runs
  from ``stamp_start`` (the first thing the app's middleware does) to that moment: the gateway's own time to first byte, not the
  client's bandwidth. ``gateway_response_bytes_total`` adds the body length announced then (0 for HEAD and 304); a
  download the client aborts still counts in full.
- Stages (nginx-vod-module's perf counters are the model): ``gateway_stage_duration_seconds{stage}`` with stage =
  cache_lookup (response cache), parse (moov), plan (segment plans of a media set, then a segment's sample ranges
  and reads), read (coalesced preads), mux (segment muxer) and manifest (playlist/MPD writers). The timings are taken
  with ``time.perf_counter_ns`` around the existing calls in gateway/ (packagers/ stays pure) and reach us through
  ``GatewayMetrics.observe_stage``, the plain callable the worker (or ``make_app``) gives ``Caches`` and ``Packaging``
  when it builds them, so that bench and unit tests can run the packaging path without prometheus.
- Aborted responses: ``gateway_responses_aborted_total{protocol, reason}``, counted where the response gives up
  (gateway/http/download.py closes a download whose file shrank or changed; gateway/http/packaged.py refuses a
  segment whose reads came back short), since the status line cannot tell.
- Caches: the counters of gateway/origin/cache.py are copied (as deltas) into prometheus counters when the writes of a
  response are flushed and at every scrape.
- Writes are gathered and flushed in one go (gateway/ops/pending.py): once per event-loop step that recorded responses,
  and before every scrape, so a scrape after a response includes it.
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
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, gc_collector, platform_collector,
                               process_collector, values)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from .. import __version__
from ..origin.cache import Caches
from .audience_node import AUDIENCE
from .labels import request_label
from .live_viewers import LiveViewers, client_id
from .pending import PendingSamples

log = logging.getLogger("gateway.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STAGES = ("cache_lookup", "parse", "plan", "read", "mux", "manifest")
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
REFRESH_SECONDS = 1.0  # how often gauges (cache sizes, live viewers) are republished for scrapes by other workers
# when the request reached the app (perf_counter_ns); RequestKey since aiohttp 3.13, a plain string before
_START = web.RequestKey("metrics_start_ns", int) if hasattr(web, "RequestKey") else "gateway.ops.metrics.start_ns"


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
        origin_errors = Counter("gateway_origin_errors", "Failed attempts on a remote store's origin, by kind "
                                "(timeout, connect, status_5xx, truncated, breaker: refused while the circuit is open)",
                                ["kind"], registry=r)
        self._origin = {  # mirrors of gateway.origin.origin_client.OriginCounts (a remote store only)
            "requests": Counter("gateway_origin_requests", "Requests sent to a remote store's origin", registry=r),
            "bytes": Counter("gateway_origin_bytes", "Body bytes read from a remote store's origin", registry=r),
            "shared": Counter("gateway_origin_shared", "Origin reads that joined an identical one in flight",
                              registry=r),
            "latency_ns": _Scaled(Counter("gateway_origin_request_seconds", "Time of the answered origin requests, "
                                          "summed (divide by gateway_origin_requests for a mean)", registry=r), 1e-9),
            **{f"errors_{kind}": origin_errors.labels(kind) for kind in ORIGIN_ERRORS},
        }
        self._fallback = {"fallbacks": Counter("gateway_store_fallbacks", "Files the store did not have, found on "
                                               "--fallback-store (gateway/origin/fallback.py)", registry=r)}
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
        self.transcode_cpu = Gauge("gateway_transcode_cpu_share", "Share of one CPU core a live ladder's process "
                                   "has spent, since its publish started, decoding the stream (rendition 'decode') and "
                                   "encoding each rendition", ["stream", "rendition"], registry=r, **live)
        Gauge("gateway_build_info", "Version of the gateway", ["version"], registry=r,
              multiprocess_mode="max").labels(__version__).set(1)
        self._metadata_children = {cache: {name: c.labels(cache) for name, c in self.metadata.items()}
                                   for cache in ("presentation", "media_set")}
        self._children: dict[tuple, object] = {}  # label lookups of the per-response series, memoised
        self._baselines: dict[int, tuple[weakref.ref, dict[str, int]]] = {}  # id(CacheCounters) → what was copied
        self._published: dict[Gauge, set[tuple[str, ...]]] = {self.viewers: set(), self.quality_viewers: set(),
                                                              self.transcode_cpu: set()}
        self.live_viewers = LiveViewers()
        self.pending = PendingSamples()
        self._flush_scheduled = False

    def observe_stage(self, stage: str, elapsed_ns: int) -> None:
        """The stage observer of ``Caches`` and ``Packaging``: thread-safe (called from the I/O executor)."""
        self.pending.observe(self._stages[stage], elapsed_ns / 1e9)

    # -- responses

    def _child(self, metric, *labels: str):
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record_response(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        protocol, kind = request_label(request)
        status = response.status
        pending = self.pending
        pending.inc(self._child(self.requests, protocol, kind, str(status)))
        started = request.get(_START)
        if started is not None:
            pending.observe(self._child(self.duration, protocol, kind), (time.perf_counter_ns() - started) / 1e9)
        if request.method != "HEAD":
            length = response.content_length
            if length:
                pending.inc(self._child(self.bytes_out, protocol, kind), length)
        if status < 400 and protocol == "live" and kind == "manifest":
            self.live_viewers.saw(request.rel_url.raw_path, client_id(request))

    def record_abort(self, request: web.BaseRequest, reason: str) -> None:
        """A response given up because of its file: a download closed mid-body, a segment refused with 503."""
        self.pending.inc(self._child(self.aborted, request_label(request)[0], reason))
        self.flush_soon(None)

    # -- flushing the gathered writes (gateway/ops/pending.py)

    def flush(self, caches: Caches | None) -> None:
        self._flush_scheduled = False
        self.pending.flush()
        if caches is not None:
            self.sync_caches(caches)

    def flush_soon(self, caches: Caches | None) -> None:
        """Flush at the start of the next event-loop step, once for every response recorded in this one (under load a
        step answers several requests; a lone request is flushed microseconds after its response left)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush, caches)

    # -- pulled values: cache counters, gauges

    def sync_caches(self, caches: Caches) -> None:
        """Copy what gateway/origin/cache.py counted since the last call (cheap: a few integer comparisons).

        What was copied is remembered per ``CacheCounters`` object, not per app: when a reload hands the worker's
        caches to the next app generation (gateway/runtime/serve.py) the counts continue from there, and a fresh
        cache starts from zero."""
        self._mirror(caches.responses.counters, self.cache_counters)
        for cache_name, cache in (("presentation", caches.metadata.presentations),
                                  ("media_set", caches.metadata.media_sets)):
            self._mirror(cache.counters, self._metadata_children[cache_name])

    def sync_connections(self, tracker) -> None:
        """The worker's connection tracker (`gateway serve` only): open connections and its counters' deltas."""
        if tracker is not None:
            self.http_connections.set(len(tracker.open))
            self._mirror(tracker.counters, self._connection_events)

    def sync_origin(self, counts) -> None:
        """A remote store's origin counters (``OriginCounts``) since the last call; None for a local store."""
        if counts is not None:
            self._mirror(counts, self._origin)
            if hasattr(counts, "fallbacks"):  # a FallbackStore's counts
                self._mirror(counts, self._fallback)

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

    def refresh(self, caches: Caches, ingest_stats: dict | None) -> None:
        """Republish every gauge of this process (timer and scrape)."""
        self._forget_dead_caches()
        self.flush(caches)
        cache = caches.responses
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
        ladders = (ingest_stats or {}).get("ladder") or {}
        self._publish(self.transcode_cpu, {(key, name): share for key, st in ladders.items()
                                           for name, share in st.get("cpu_share", {}).items()})

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


# --- aiohttp wiring ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricsSources:
    """What the metrics of one app read besides the requests, handed over by the app factory (gateway/http/app.py
    ``make_app``), so that nothing here looks into the app keys of the layers above."""

    caches: Caches  # the worker's caches: their counters and sizes
    executor: Executor  # runs the exposition, which is blocking (multiprocess mode reads every worker's files)
    connections: object | None = None  # the worker's ConnectionTracker (`gateway serve`): `.open`, `.counters`
    ingest_stats: Callable[[], dict] | None = None  # ``Ingest.stats`` when the RTMP ingest runs in this process
    origin_counts: Callable[[], object | None] | None = None  # a remote store's OriginCounts (None when local)

    def ingest(self) -> dict | None:
        return self.ingest_stats() if self.ingest_stats is not None else None

    def refresh(self, metrics: GatewayMetrics) -> None:
        metrics.refresh(self.caches, self.ingest())
        metrics.sync_connections(self.connections)
        if self.origin_counts is not None:
            metrics.sync_origin(self.origin_counts())


class _Scaled:
    """A counter fed in other units (nanoseconds into seconds)."""

    def __init__(self, counter, factor: float):
        self.counter, self.factor = counter, factor

    def inc(self, amount: float) -> None:
        self.counter.inc(amount * self.factor)


ORIGIN_ERRORS = ("timeout", "connect", "status_5xx", "truncated", "breaker")
PROMETHEUS = web.AppKey("prometheus", GatewayMetrics)
METRICS_SOURCES = web.AppKey("metrics_sources", MetricsSources)


def stamp_start(request: web.Request) -> None:
    """The start of the request for the duration histogram: called first thing by the app's middleware."""
    request[_START] = time.perf_counter_ns()


def record_response(request: web.Request, response: web.StreamResponse) -> None:
    """Every response the app sends, errors included (called by the app's response hook)."""
    metrics = request.app[PROMETHEUS]
    metrics.record_response(request, response)
    metrics.flush_soon(request.app[METRICS_SOURCES].caches)


def ingest_stats(app: web.Application) -> dict | None:
    """The RTMP server's stats (``Ingest.stats()``) when ingest runs in this process, else None."""
    return app[METRICS_SOURCES].ingest()


# Multiprocess mode keeps one set of metric objects per process: prometheus-client stores their values in per-process
# files keyed by name and labels, so two objects of one name in a process (two app generations during a reload)
# would overwrite each other's counts. A `gateway serve` worker asks once and hands the result to every generation;
# this guard remains for apps that make_app builds on its own in a process that has the variable set (embedders).
# A global, because the storage it mirrors is per process too.
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
    """cleanup_ctx: republish the gauges every REFRESH_SECONDS while the app runs."""
    metrics, sources = app[PROMETHEUS], app[METRICS_SOURCES]

    async def refresh_forever() -> None:
        while True:
            try:
                sources.refresh(metrics)
            except Exception:
                log.exception("metrics: refreshing the gauges failed")
            await asyncio.sleep(REFRESH_SECONDS)

    task = asyncio.get_running_loop().create_task(refresh_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve_metrics(request: web.Request) -> web.Response:
    metrics, sources = request.app[PROMETHEUS], request.app[METRICS_SOURCES]
    sources.refresh(metrics)
    body, content_type = await asyncio.get_running_loop().run_in_executor(sources.executor, metrics.exposition,
                                                                          request.headers.get("Accept"))
    audience = request.app.get(AUDIENCE)
    if audience is not None and audience.enabled:  # the node's current minute (every worker's), not this worker's
        lines = (await audience.metrics_text()).encode()
        eof = body.rfind(b"# EOF\n")  # OpenMetrics ends with it: the lines go before
        body = body[:eof] + lines + body[eof:] if eof >= 0 and body.endswith(b"# EOF\n") else body + lines
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
