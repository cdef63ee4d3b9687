"""The aiohttp application: one catch-all route, the URL grammar as the router, shared state in AppKeys.

``make_app(settings)`` builds the app; the thread pool, store, caches and counters are created in ``cleanup_ctx`` so
each app (and each test) owns its state and nothing lives in module globals.
"""
from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import AsyncIterator

from aiohttp import web

from .. import __version__
from .errors import error_response, response_for_exception
from .packaged import serve_packaged_request
from .download import serve_mp4
from .live import add_live_routes
from ..origin.packaging import PACKAGING, Packaging
from .responses import ALLOWED_METHODS, add_common_headers, cache_control, preflight
from ..settings import SETTINGS, Settings
from ..origin.store import FileChanged
from ..catalog.access import CATALOG, IDENTITY_WATCH, IdentityWatch, authorize, catalog_view
from ..catalog.catalog import Catalog
from ..ingest.service import INGEST, Ingest
from .play_manifest import serve_play_manifest
from ..ops.metrics import metrics_middleware, metrics_state, record_response, serve_metrics
from ..ops.status_page import serve_dashboard, serve_static, serve_status_page
from ..ops.health import add_health_routes
from .connections import CONNECTIONS
from ..ops.access_log import CACHE_RESULT
from .urls import CrossDomainPolicy, GatewayRequest, Mp4Download, PlayManifest, Signed, StatusRequest, parse_path


@dataclass
class Metrics:
    started: float = field(default_factory=time.monotonic)
    responses: Counter = field(default_factory=Counter)  # by status class: "2xx", "3xx", ...

    def uptime(self) -> float:
        return time.monotonic() - self.started


METRICS = web.AppKey("metrics", Metrics)
# Media here is public unless signed (issue 4), like the CORS policy: any domain may load it.
CROSSDOMAIN_XML = (
    '<?xml version="1.0"?>\n<!DOCTYPE cross-domain-policy SYSTEM "http://www.adobe.com/xml/dtds/cross-domain-policy.dtd">\n'
    '<cross-domain-policy><allow-access-from domain="*" secure="false"/></cross-domain-policy>\n'
)


def make_app(settings: Settings, ingest: Ingest | None = None) -> web.Application:
    """``ingest``: the running RTMP ingest of this process, if any (its stats appear in /status as "rtmp")."""
    app = web.Application(middlewares=[metrics_middleware, http_middleware])
    app[SETTINGS] = settings
    if ingest is not None:
        app[INGEST] = ingest
    app.cleanup_ctx.append(_gateway_state)
    app.cleanup_ctx.append(metrics_state)  # after _gateway_state: it hooks the packaging stages
    app.on_response_prepare.append(add_common_headers)
    app.on_response_prepare.append(_count_response)
    app.on_response_prepare.append(record_response)
    add_health_routes(app)  # /health, /ready: before the catch-all
    app.router.add_get("/metrics", serve_metrics)  # Prometheus (gateway/ops/metrics.py)
    app.router.add_get("/", serve_status_page)  # the dashboard and test player (gateway/ops/status_page.py)
    app.router.add_get("/status/dashboard", serve_dashboard)
    app.router.add_get("/static/{name}", serve_static)
    add_live_routes(app)  # /live/<app>/<stream>/<file> and /time, before the catch-all
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


async def _gateway_state(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    executor = ThreadPoolExecutor(settings.io_threads, thread_name_prefix="gateway-io")
    app[PACKAGING] = Packaging(settings, executor)
    app[CATALOG] = Catalog(settings.store, settings.catalog, settings.catalog_ttl)
    app[IDENTITY_WATCH] = IdentityWatch(app[CATALOG])
    app[METRICS] = Metrics()
    yield
    executor.shutdown(wait=False, cancel_futures=True)


async def _count_response(request: web.Request, response: web.StreamResponse) -> None:
    request.app[METRICS].responses[f"{response.status // 100}xx"] += 1


@web.middleware
async def http_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Methods, CORS preflight and the exception → response mapping for every route."""
    if request.method == "OPTIONS":
        return preflight(request)
    if request.method not in ("GET", "HEAD"):
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
    parsed = parse_path(request.rel_url.raw_path, request.app[SETTINGS].max_url_set_files)
    try:
        return await _serve(request, parsed)
    except FileChanged as changed:
        # Replaced since we last stat'ed it: forget the stale identity and answer from the new file (once).
        request.app[PACKAGING].stats.forget(changed.path)
        return await _serve(request, parsed)


async def _serve(request: web.Request, parsed: GatewayRequest) -> web.StreamResponse:
    if isinstance(parsed, StatusRequest):
        return serve_status(request)
    if isinstance(parsed, PlayManifest):
        return await serve_play_manifest(request, parsed)
    if isinstance(parsed, CrossDomainPolicy):
        return web.Response(text=CROSSDOMAIN_XML, content_type="text/x-cross-domain-policy",
                            headers={"Cache-Control": cache_control(86400)})
    signed = None
    if isinstance(parsed, Signed):
        signed, parsed = parsed, parsed.request
    packaging = request.app[PACKAGING]
    view = await catalog_view(request.app, packaging.run)
    paths = (parsed.path,) if isinstance(parsed, Mp4Download) else parsed.target.paths
    # 404 for missing files; names and inodes for the ownership check (fresh for downloads: see identify_all)
    files = await packaging.identify_all(paths, fresh=isinstance(parsed, Mp4Download))
    view = await request.app[IDENTITY_WATCH].view(view, files, packaging.run)  # a file linked since the index?
    context = authorize(view, request.app[SETTINGS], parsed, signed, files)
    if isinstance(parsed, Mp4Download):
        request[CACHE_RESULT] = "bypass"  # the file itself (sendfile), never the response cache
        response = await serve_mp4(request, files[0])
    else:
        response = await serve_packaged_request(request, parsed, context)
    if signed is not None:
        # signed bytes: no shared cache may keep them, and no copy may outlive the token
        remaining = max(0, signed_expiry(signed.token) - int(time.time()))
        response.headers["Cache-Control"] = f"private, max-age={remaining}"
    return response


def signed_expiry(token: str) -> int:
    head = token.partition("-")[0]
    return int(head) if head.isdigit() else 0


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
    connections = request.app.get(CONNECTIONS)  # set by `gateway serve` (gateway/runtime/serve.py)
    if connections is not None:
        body["connections"] = connections.stats()
    ingest = request.app.get(INGEST)
    if ingest is not None:
        body["rtmp"] = ingest.stats()
    return web.json_response(body, headers={"Cache-Control": "no-store"})
