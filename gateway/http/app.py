"""The aiohttp application: one catch-all route, the URL grammar as the router, shared state in AppKeys.

``make_app(settings, ...)`` builds the app from its parts: a `gateway serve` worker hands it the ones that outlive an
app generation (caches, metrics, connection tracker, worker index, ingest); an app made without them (tests,
embedders) builds its own caches and metrics, so each owns its state and nothing lives in module globals. The store,
catalog and counters are created in ``cleanup_ctx``. Nothing is assigned into the parts once they are built.
"""
from __future__ import annotations

import functools
import time
from collections import Counter
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import AsyncIterator

from aiohttp import web

from .. import __version__
from .errors import error_response, response_for_exception
from .fast_path import FastAnswers
from .packaged import PACKAGED_ANSWER, serve_packaged_request
from .clipped_mp4 import serve_clipped_mp4
from .download import serve_mp4
from .thumbnails import THUMBNAIL_SLOTS, serve_thumbnail, thumbnail_slots
from .live import add_live_routes
from .rtmp_control import add_rtmp_control_routes, is_control_path
from ..origin.cache import Caches
from ..origin.packaging import PACKAGING, Packaging
from .responses import ALLOWED_METHODS, add_common_headers, cache_control, preflight
from ..ops.app_keys import SETTINGS
from ..settings import Settings
from ..origin.store import FileChanged
from ..origin.fallback import FALLBACK_HEADER, NO_FALLBACK
from ..catalog.access import CATALOG, IDENTITY_WATCH, IdentityWatch, authorize, catalog_view
from ..catalog.catalog import open_catalog
from ..catalog.drm import KEY_SOURCE, KeySource
from ..ingest.service import INGEST, Ingest
from .play_manifest import serve_play_manifest
from ..ops.metrics import (METRICS_SOURCES, PROMETHEUS, GatewayMetrics, MetricsSources, metrics_for_this_process,
                           metrics_state, record_response, serve_metrics, stamp_start)
from ..ops.status_page import (dashboard_state, record_for_dashboard, serve_dashboard, serve_static,
                               serve_status_page)
from ..ops.health import WORKER_INDEX, add_health_routes
from .connections import CONNECTIONS, ConnectionTracker
from ..ops.access_log import CACHE_RESULT
from ..ops.labels import REQUEST_LABEL
from ..ops.audience_node import AUDIENCE, AUDIENCE_STREAM, AudienceNode, serve_status_audience
from .urls import (ClearKeyLicense, CrossDomainPolicy, GatewayRequest, PlayManifest, Signed, StatusRequest,
                   ThumbRequest, parse_path)
from .clearkey import serve_clearkey


@dataclass
class Metrics:
    started: float = field(default_factory=time.monotonic)
    responses: Counter = field(default_factory=Counter)  # by status class: "2xx", "3xx", ...

    def uptime(self) -> float:
        return time.monotonic() - self.started


METRICS = web.AppKey("metrics", Metrics)
FAST_ANSWERS = web.AppKey("fast_answers", FastAnswers)
# aiohttp refuses a request line or header over 8190 bytes with 400; players' CMCD (query or CMCD-* headers) may come
# long and must never change an answer (issue 18): 16 KB, as the rendered nginx's large_client_header_buffers
HEADER_LIMITS = {"max_line_size": 16384, "max_field_size": 16384}
CACHES = web.AppKey("caches", Caches)  # this generation's caches (the admin API's stats)
# Media here is public unless signed (issue 4), like the CORS policy: any domain may load it.
CROSSDOMAIN_XML = (
    '<?xml version="1.0"?>\n<!DOCTYPE cross-domain-policy SYSTEM "http://www.adobe.com/xml/dtds/cross-domain-policy.dtd">\n'
    '<cross-domain-policy><allow-access-from domain="*" secure="false"/></cross-domain-policy>\n'
)


def make_app(settings: Settings, ingest: Ingest | None = None, *, caches: Caches | None = None,
             metrics: GatewayMetrics | None = None, connections: ConnectionTracker | None = None,
             worker_index: int = 0, audience: AudienceNode | None = None) -> web.Application:
    """The app of one generation. ``ingest``: the running RTMP ingest of this process, if any (its stats appear in
    /status as "rtmp" and in /metrics). The worker's parts, built once per worker process (gateway/runtime/serve.py):
    ``caches`` (built with ``metrics.observe_stage`` as their observer), ``metrics`` (one per process: see
    gateway/ops/metrics.py), ``connections`` (its middleware marks connections busy while a request runs) and
    ``worker_index``, ``audience`` (the worker's analytics, gateway/ops/audience_node.py). Left out, the app builds its
    own caches, metrics and analytics."""
    if metrics is None:
        metrics = metrics_for_this_process()
    if caches is None:
        caches = Caches(settings, metrics.observe_stage)
    executor = ThreadPoolExecutor(settings.io_threads, thread_name_prefix="gateway-io")
    busy = [connections.middleware] if connections is not None else []  # outermost: the whole request is busy time
    app = web.Application(middlewares=[*busy, http_middleware], handler_args=HEADER_LIMITS)
    app[SETTINGS] = settings
    app[WORKER_INDEX] = worker_index
    app[PROMETHEUS] = metrics
    app[CACHES] = caches
    app[AUDIENCE] = audience if audience is not None else AudienceNode(settings, worker_index=worker_index)
    app[METRICS_SOURCES] = MetricsSources(caches, executor, connections,
                                          ingest.stats if ingest is not None else None,
                                          origin_counts=functools.partial(_origin_counts, app))
    if connections is not None:
        app[CONNECTIONS] = connections
    if ingest is not None:
        app[INGEST] = ingest
    app.cleanup_ctx.append(functools.partial(_gateway_state, executor=executor, caches=caches,
                                             observe_stage=metrics.observe_stage))
    app.cleanup_ctx.append(metrics_state)
    app.cleanup_ctx.append(dashboard_state)  # the status page's in-memory series (gateway/ops/timeseries.py)
    app.on_response_prepare.append(_on_response_prepare)
    add_health_routes(app)  # /health, /ready: before the catch-all
    app.router.add_get("/metrics", serve_metrics)  # Prometheus (gateway/ops/metrics.py)
    app.router.add_get("/", serve_status_page)  # the dashboard and test player (gateway/ops/status_page.py)
    app.router.add_get("/status/dashboard", serve_dashboard)
    app.router.add_get("/status/audience", serve_status_audience)  # the page's audience charts
    app.router.add_get("/static/{name}", serve_static)
    add_live_routes(app)  # /live/<app>/<stream>/<file> and /time, before the catch-all
    add_rtmp_control_routes(app)  # /rtmp/... and nginx-rtmp's /control/... (off without rtmp_control_token)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


async def _gateway_state(app: web.Application, executor: Executor, caches: Caches,
                         observe_stage) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[PACKAGING] = Packaging(settings, executor, caches, observe_stage)
    app[CATALOG] = open_catalog(settings, app[PACKAGING].store)
    app[IDENTITY_WATCH] = IdentityWatch(app[CATALOG])
    app[FAST_ANSWERS] = FastAnswers(app[CATALOG], caches.stats, caches.responses)
    app[METRICS] = Metrics()
    app[THUMBNAIL_SLOTS] = thumbnail_slots(settings.thumbnail_decodes)
    app[KEY_SOURCE] = KeySource()
    yield
    await app[KEY_SOURCE].close()
    if hasattr(app[PACKAGING].store, "aclose"):  # a remote store's pooled origin connections
        await app[PACKAGING].store.aclose()
    executor.shutdown(wait=False, cancel_futures=True)


def _origin_counts(app: web.Application):
    """The counters of a remote store's origin client (gateway/origin/origin_client.py), None for a local store."""
    packaging = app.get(PACKAGING)
    client = getattr(packaging.store, "client", None) if packaging is not None else None
    return client.counts if client is not None else None


async def _on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """The one response hook (one signal handler instead of three: it runs for every response): CORS and safe
    defaults, the /status counters, the Prometheus metrics, the status page's series."""
    add_common_headers(response)
    request.app[METRICS].responses[f"{response.status // 100}xx"] += 1
    record_response(request, response)
    record_for_dashboard(request, response)
    request.app[AUDIENCE].record(request, response)


@web.middleware
async def http_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Methods, CORS preflight and the exception → response mapping for every route."""
    stamp_start(request)
    # the loop guard: a request read by another gateway's fallback never asks this gateway's fallback (set for
    # every request, so a kept-alive connection's next request does not inherit it)
    NO_FALLBACK.set(FALLBACK_HEADER in request.headers)
    if request.method == "OPTIONS":
        return preflight(request)
    if request.method not in ("GET", "HEAD") and not (request.method == "POST" and (is_license_path(request)
                                                                                   or is_control_path(request))):
        return error_response(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed", Allow=ALLOWED_METHODS)
    try:
        return await handler(request)
    except Exception as exc:  # CancelledError is a BaseException and propagates
        packaging = request.app[PACKAGING]
        response = response_for_exception(exc, request, hide=(packaging.store.root, str(packaging.settings.store)))
        if response.status == 404 and packaging.settings.not_found_max_age > 0:
            response.headers["Cache-Control"] = cache_control(packaging.settings.not_found_max_age)
        return response


async def dispatch(request: web.Request) -> web.StreamResponse:
    fast = request.app[FAST_ANSWERS].answer(request)
    if fast is not None:  # the same plain request as before, nothing it depends on changed (gateway/http/fast_path.py)
        response, request[REQUEST_LABEL], stream = fast
        if stream is not None:
            request[AUDIENCE_STREAM] = stream
        request[CACHE_RESULT] = "hit"
        return response
    parsed = parse_path(request.rel_url.raw_path, request.app[SETTINGS].max_url_set_files)
    request[REQUEST_LABEL] = parsed.metrics_label  # what the grammar parsed labels the metrics (gateway/ops/metrics.py)
    try:
        return await _serve(request, parsed)
    except FileChanged as changed:
        # Replaced since we last stat'ed it: forget the stale identity and answer from the new file (once).
        request.app[PACKAGING].stats.forget(changed.path)
        return await _serve(request, parsed)


async def _serve(request: web.Request, parsed: GatewayRequest) -> web.StreamResponse:
    endpoint = _ENDPOINTS.get(type(parsed))
    if endpoint is not None:
        return await endpoint(request, parsed)
    signed, media = (parsed, parsed.request) if isinstance(parsed, Signed) else (None, parsed)
    packaging = request.app[PACKAGING]
    view = await catalog_view(request.app, packaging.run)
    # 404 for missing files; names and inodes for the ownership check (fresh for downloads: see identify_all)
    files = await packaging.identify_all(media.store_paths, fresh=media.is_download)
    view = await request.app[IDENTITY_WATCH].view(view, files, packaging.run)  # a file linked since the index?
    context = authorize(view, request.app[SETTINGS], media, signed, files)
    stream = request[AUDIENCE_STREAM] = audience_stream(media, context)
    if media.is_download:
        request[CACHE_RESULT] = "bypass"  # the file itself (sendfile), never the response cache
        if media.clip.is_whole and media.narrowing.is_default:
            response = await serve_mp4(request, files[0])
        else:
            response = await serve_clipped_mp4(request, media)
    elif isinstance(media, ThumbRequest):
        response = await serve_thumbnail(request, media, context)
    else:
        response = await serve_packaged_request(request, media, context)
    answer = request.get(PACKAGED_ANSWER)
    if answer is not None and signed is None:
        request.app[FAST_ANSWERS].remember(request.rel_url.raw_path, answer, view, media.metrics_label, stream)
    if signed is not None:
        # signed bytes: no shared cache may keep them, and no copy may outlive the token
        remaining = max(0, signed_expiry(signed.token) - int(time.time()))
        response.headers["Cache-Control"] = f"private, max-age={remaining}"
    return response


def audience_stream(media, context) -> tuple[str, int | None]:
    """The analytics' stream of a media request: its entry (with the partner), else the file or url set it names."""
    entry = context.entry
    if entry is not None:
        return f"entry:{entry.id}", entry.partner_id
    return f"file:{media.target.name}"[:300], None


def signed_expiry(token: str) -> int:
    head = token.partition("-")[0]
    return int(head) if head.isdigit() else 0


async def _serve_status(request: web.Request, parsed: StatusRequest) -> web.Response:
    return serve_status(request)


async def _serve_crossdomain(request: web.Request, parsed: CrossDomainPolicy) -> web.Response:
    return web.Response(text=CROSSDOMAIN_XML, content_type="text/x-cross-domain-policy",
                        headers={"Cache-Control": cache_control(86400)})


# the endpoints that are not media (no catalog, no store files); every other request is a media request
_ENDPOINTS = {StatusRequest: _serve_status, PlayManifest: serve_play_manifest, CrossDomainPolicy: _serve_crossdomain,
              ClearKeyLicense: serve_clearkey}


def is_license_path(request: web.Request) -> bool:
    """POST is for ClearKey license requests only (``/s/<entry>/<token>/clearkey``)."""
    path = request.rel_url.raw_path
    return path.startswith("/s/") and path.endswith("/clearkey") and path.count("/") == 4


def serve_status(request: web.Request) -> web.Response:
    packaging, metrics = request.app[PACKAGING], request.app[METRICS]
    metadata = packaging.metadata.stats()
    body = {
        "version": __version__,
        "uptime_seconds": round(metrics.uptime(), 3),
        "requests": {cls: metrics.responses.get(cls, 0) for cls in ("1xx", "2xx", "3xx", "4xx", "5xx")},
        "segment_cache": packaging.responses.stats(),
        "metadata_cache": metadata["presentations"],
        "media_set_cache": metadata["media_sets"],
        "settings": {
            "segment_duration_ms": packaging.settings.segment_duration_ms,
            "segment_cache_mb": packaging.settings.segment_cache_mb,
            "hls_container": packaging.settings.hls_container,
        },
    }
    body["thumbnails"] = request.app[THUMBNAIL_SLOTS].stats()
    body["drm_keys"] = request.app[KEY_SOURCE].stats()
    connections = request.app.get(CONNECTIONS)  # given to make_app by `gateway serve` (gateway/runtime/serve.py)
    if connections is not None:
        body["connections"] = connections.stats()
    ingest = request.app.get(INGEST)
    if ingest is not None:
        body["rtmp"] = ingest.stats()
    return web.json_response(body, headers={"Cache-Control": "no-store"})
