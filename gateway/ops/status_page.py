"""The node's dashboard at ``/``: server-rendered HTML, a little JS that polls JSON, and a built-in test player.

The page (``render_page``) carries the structure, the version and pid of this process, and quick links to a few media
files of the store. ``static/status.js`` fills in the numbers every 2 s from ``/status`` (caches, requests) and
``/status/dashboard`` (``serve_dashboard``: this worker's per-second series of the last 10 minutes, latency per
protocol, busiest entries and recent errors from gateway/ops/timeseries.py, recorded by ``record_for_dashboard`` in
the app's response hook; live streams with publisher, viewers and ingest bitrate history sampled by
``dashboard_state``), draws the charts on <canvas> itself, flags quick links whose moov does not parse
(``probe_files``) instead of offering them for playback, and plays any store path or
entry URL with hls.js or dash.js served from ``static/`` by this gateway (no CDN: the page works on an isolated
network, and the player is the version the tests ran).

Everything a client or a publisher chose (file names, request paths, error messages, stream names) is escaped: here
with ``html.escape``, in the browser by writing ``textContent`` only. A strict Content-Security-Policy (scripts from
this origin, no inline script or handler) is a second line of defence, not the first.
"""
from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import logging
import os
import time
from pathlib import Path
from typing import AsyncIterator
from urllib.parse import quote

from aiohttp import web
from aiohttp.web_fileresponse import FileResponse

from .. import __version__
from . import allocator
from .access_log import CACHE_RESULT
from .health import WORKER_INDEX
from .labels import request_label
from .metrics import _START, PROMETHEUS, ingest_stats
from .timeseries import Dashboard
from ..origin.packaging import PACKAGING
from ..origin.store import parse_presentation

log = logging.getLogger("gateway.status_page")

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain", ".md": "text/plain"}
STATIC_MAX_AGE = 86400  # URLs carry ?v=<version>: a new gateway version is a new URL
QUICK_LINKS = 12
SCAN_LIMIT = 2000  # directory entries looked at per directory for quick links (a store may hold millions)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
       "connect-src *; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'none'")
MEDIA_PROTOCOLS = frozenset(("hls", "dash", "mss", "hds", "mp4", "live"))  # what the busiest table counts
PROBE_SECONDS = 2.0  # the page waits this long for the quick links' probes; later results serve the next page load
PROBE_MEMO = 1024  # probe results kept (by file identity: a replaced file is probed again)
DASHBOARD = web.AppKey("dashboard", Dashboard)
PROBES = web.AppKey("probes", dict)


def media_files(root: str, limit: int = QUICK_LINKS) -> list[str]:
    """Up to ``limit`` store paths of .mp4 files, in name order, from the store root and its direct subdirectories.
    Hidden names are skipped (never served either). Blocking: runs in the I/O executor."""
    found: list[str] = []
    for prefix, directory in [("", root)] + [(d + "/", os.path.join(root, d)) for d in _subdirs(root)]:
        found += [prefix + name for name in _names(directory) if name.lower().endswith(".mp4")
                  and os.path.isfile(os.path.join(directory, name))]
        if len(found) >= limit:
            break
    return found[:limit]


def _names(directory: str) -> list[str]:
    try:
        with os.scandir(directory) as entries:
            return sorted(e.name for e in itertools.islice(entries, SCAN_LIMIT) if not e.name.startswith("."))
    except OSError:
        return []


def _subdirs(root: str) -> list[str]:
    return [n for n in _names(root) if n != "live" and os.path.isdir(os.path.join(root, n))]


def _quick_link(path: str, broken: str | None = None) -> str:
    e = html.escape
    if broken is not None:  # its moov does not parse: flagged, not offered for playback
        return (f'<li class="broken" data-broken="1"><code>{e(path)}</code> '
                f'<span class="error">broken: {e(broken)}</span></li>')
    url = quote(path, safe="/,")
    hls, dash, mp4 = e(f"/hls/{url}/master.m3u8"), e(f"/dash/{url}/manifest.mpd"), e(f"/mp4/{url}")
    return (f'<li><code>{e(path)}</code> '
            f'<button type="button" class="quick" data-src="{hls}" data-kind="hls">HLS</button> '
            f'<button type="button" class="quick" data-src="{dash}" data-kind="dash">DASH</button> '
            f'<a href="{mp4}">MP4</a></li>')


def render_page(version: str, pid: int, files: list[str], settings: dict[str, object],
                broken: dict[str, str] | None = None, worker: int = 0) -> str:
    e = html.escape
    v = quote(version)
    broken = broken or {}
    links = "\n".join(_quick_link(f, broken.get(f)) for f in files) or "<li>No .mp4 file in the store root.</li>"
    facts = " · ".join(f"{e(k)} {e(str(val))}" for k, val in settings.items())
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>media gateway {e(version)}: status</title>
<link rel="stylesheet" href="/static/status.css?v={v}">
<script src="/static/status.js?v={v}" defer></script>
</head>
<body data-version="{e(version)}">
<header>
  <h1>media gateway</h1>
  <p>version {e(version)} · pid {pid} · worker {worker} · up <span id="uptime">…</span> · {facts}</p>
  <p class="muted-h">Charts and tables: this worker process only (each of <code>--workers N</code> keeps its own
    numbers for the last minutes; /metrics adds up all workers).</p>
  <p class="links"><a href="/status">/status</a> <a href="/metrics">/metrics</a>
    <span id="poll-error" class="error" role="status"></span></p>
  <noscript><p>The numbers need JavaScript: read <a href="/status">/status</a> or <a href="/metrics">/metrics</a>.</p>
  </noscript>
</header>
<main>
<section class="card">
  <h2>Response cache</h2>
  <p class="big"><span id="cache-hit-ratio">…</span> <small>hit ratio</small></p>
  <dl>
    <dt>hits</dt><dd id="cache-hits">…</dd>
    <dt>misses</dt><dd id="cache-misses">…</dd>
    <dt>coalesced</dt><dd id="cache-coalesced">…</dd>
    <dt>evictions</dt><dd id="cache-evictions">…</dd>
    <dt>entries</dt><dd id="cache-entries">…</dd>
    <dt>size</dt><dd><span id="cache-bytes">…</span> of <span id="cache-capacity">…</span></dd>
  </dl>
  <h3>Metadata cache</h3>
  <dl>
    <dt>moov hits</dt><dd id="meta-hits">…</dd>
    <dt>moov misses</dt><dd id="meta-misses">…</dd>
    <dt>entries</dt><dd id="meta-entries">…</dd>
  </dl>
</section>
<section class="card">
  <h2>Requests</h2>
  <dl>
    <dt>2xx</dt><dd id="req-2xx">…</dd>
    <dt>3xx</dt><dd id="req-3xx">…</dd>
    <dt>4xx</dt><dd id="req-4xx">…</dd>
    <dt>5xx</dt><dd id="req-5xx">…</dd>
  </dl>
</section>
<section class="card wide">
  <h2>Traffic <small>(last 10 minutes, per second; worker <span id="dash-worker">…</span> answered)</small></h2>
  <div class="charts">
    <figure><figcaption>requests/s <span id="rate-now" class="now"></span></figcaption>
      <canvas id="chart-requests" class="chart" width="560" height="140"></canvas></figure>
    <figure><figcaption>egress <span id="egress-now" class="now"></span></figcaption>
      <canvas id="chart-egress" class="chart" width="560" height="140"></canvas></figure>
    <figure><figcaption>cache hit ratio (10 s bins)</figcaption>
      <canvas id="chart-hit-ratio" class="chart" width="560" height="140"></canvas></figure>
  </div>
  <p class="muted">In the window: <span id="win-requests">…</span> requests, <span id="win-errors">…</span> errors,
    <span id="win-bytes">…</span> sent.</p>
</section>
<section class="card">
  <h2>Latency <small>(to response headers, last 10 minutes)</small></h2>
  <table>
    <thead><tr><th>protocol</th><th>requests</th><th>p50 ms</th><th>p95 ms</th></tr></thead>
    <tbody id="latency"></tbody>
  </table>
</section>
<section class="card">
  <h2>Busiest entries <small>(since start, approximate)</small></h2>
  <table>
    <thead><tr><th>entry</th><th>requests</th></tr></thead>
    <tbody id="busiest"></tbody>
  </table>
</section>
<section class="card wide">
  <h2>Live streams</h2>
  <table>
    <thead><tr><th>stream</th><th>publishing</th><th>RTMP players</th><th>HLS viewers</th><th>DASH viewers</th>
      <th>by quality</th><th>transcode (CPU share per rendition)</th><th>publisher</th><th>encoder</th>
      <th>uptime</th><th>codecs</th><th>resolution</th><th>ingest</th></tr></thead>
    <tbody id="live-streams"></tbody>
  </table>
  <p id="live-none" class="muted">No live stream on this process (RTMP ingest off, or nothing published).</p>
  <p class="muted">HLS/DASH viewers: distinct clients that fetched the stream's playlists in the last 30 s.</p>
  <figure><figcaption>ingest bitrate per stream</figcaption>
    <canvas id="chart-ingest" class="chart" width="1100" height="140"></canvas></figure>
</section>
<section class="card wide">
  <h2>Audience <small>(players' CMCD reports, this node's workers, last hour per minute)</small>
    <select id="audience-stream" aria-label="stream"></select></h2>
  <table>
    <thead><tr><th>stream</th><th>sessions</th><th>sent</th><th>rebuffer events</th><th>players</th></tr></thead>
    <tbody id="audience"></tbody>
  </table>
  <p id="audience-none" class="muted">No stream watched in the last hour (or analytics off).</p>
  <div class="charts">
    <figure><figcaption>viewers (sessions per minute)</figcaption>
      <canvas id="chart-viewers" class="chart" width="560" height="140"></canvas></figure>
    <figure><figcaption>quality mix (sessions per rendition, kbps)</figcaption>
      <canvas id="chart-quality" class="chart" width="560" height="140"></canvas></figure>
    <figure><figcaption>rebuffering (share of segment requests after a stall)</figcaption>
      <canvas id="chart-rebuffer" class="chart" width="560" height="140"></canvas></figure>
    <figure><figcaption>startup time (p50, first manifest to first segment)</figcaption>
      <canvas id="chart-startup" class="chart" width="560" height="140"></canvas></figure>
  </div>
  <p class="muted">Sessions are CMCD session ids, else client address + browser (players without CMCD);
    see docs/analytics.md. <code>GET /api/v1/analytics</code> has the whole pool.</p>
</section>
<section class="card wide">
  <h2>Test player</h2>
  <form id="player-form" autocomplete="off">
    <input id="player-src" type="text" size="60" spellcheck="false"
      placeholder="store path (title.mp4) or URL (/hls/title.mp4/master.m3u8, /p/…/a.mpd)">
    <select id="player-kind">
      <option value="auto">auto</option><option value="hls">HLS (hls.js)</option>
      <option value="dash">DASH (dash.js)</option>
    </select>
    <button id="player-play" type="submit">Play</button>
  </form>
  <p class="muted">Playing <code id="player-url">nothing</code> <span id="player-status"></span></p>
  <video id="player-video" controls muted playsinline></video>
  <h3>Store files</h3>
  <ul id="quick-links">
{links}
  </ul>
</section>
<section class="card wide">
  <h2>Recent errors <small>(this process, newest first)</small></h2>
  <table>
    <thead><tr><th>time (UTC)</th><th>status</th><th>request</th><th>message</th><th>code</th></tr></thead>
    <tbody id="recent-errors"></tbody>
  </table>
  <p id="errors-none" class="muted">No error response yet.</p>
</section>
</main>
</body>
</html>
"""


async def serve_status_page(request: web.Request) -> web.Response:
    packaging = request.app[PACKAGING]
    files = await packaging.run(media_files, packaging.store.root)
    broken = await probe_files(request.app, files)
    s = packaging.settings
    settings = {"segments": f"{s.segment_duration_ms / 1000:g} s", "HLS": s.hls_container}
    body = render_page(__version__, os.getpid(), files, settings, broken, request.app.get(WORKER_INDEX, 0))
    return web.Response(text=body, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP})


async def probe_files(app: web.Application, files: list[str]) -> dict[str, str]:
    """The quick links whose moov does not parse, with why. Bounded: at most QUICK_LINKS files, results kept by file
    identity (a good or broken file is parsed once until it changes), and the page waits PROBE_SECONDS at most (a
    probe still running then answers the next load). Parsed here, not through the metadata cache: looking at the
    page must not change the cache numbers it shows."""
    packaging, memo = app[PACKAGING], app[PROBES]

    async def probe(path: str) -> str | None:
        try:
            (file,) = await packaging.identify_all((path,))
        except Exception:
            return None  # gone or unreadable right now: a request would say so; not "broken media"
        key = file.cache_key
        if key not in memo:
            try:
                await packaging.run(parse_presentation, packaging.store, file, packaging.limits)
                memo[key] = None
            except Exception as exc:  # anything that stops playback: flag it, with the first line of why
                code = getattr(exc, "code", None)
                code = getattr(code, "name", code) or type(exc).__name__  # PackagerError's code is an enum
                why = (str(getattr(exc, "message", exc)).splitlines() or [""])[0][:160]
                root = getattr(packaging.store, "root", None)
                memo[key] = f"{code}: {why.replace(root, '') if isinstance(root, str) and root else why}"
            while len(memo) > PROBE_MEMO:
                memo.pop(next(iter(memo)))
        return memo[key]

    tasks = {asyncio.ensure_future(probe(f)): f for f in files}
    if not tasks:
        return {}
    done, _ = await asyncio.wait(tasks, timeout=PROBE_SECONDS)
    return {tasks[t]: t.result() for t in done if t.exception() is None and t.result() is not None}


async def serve_dashboard(request: web.Request) -> web.Response:
    """What /status lacks for the page: the per-second series, latency, busiest entries, recent errors (newest
    first) and live streams with viewers, publisher and ingest history. This worker's numbers only."""
    metrics = request.app[PROMETHEUS]
    dashboard = request.app[DASHBOARD]
    stats = ingest_stats(request.app)
    by_stream, by_quality = metrics.live_counts(stats)
    streams = (stats or {}).get("streams") or {}
    ladders = (stats or {}).get("ladder") or {}
    names = sorted(set(streams) | {s for s, _ in by_stream} | {s for s, _ in by_quality})
    live = []
    for name in names:
        st = streams.get(name, {})
        start, bitrate = dashboard.ingest.bitrate(name)
        live.append({
            "stream": name,
            "publishing": bool(st.get("publishing")),
            "rtmp_players": by_stream.get((name, "rtmp"), 0),
            "hls_viewers": by_stream.get((name, "hls"), 0),
            "dash_viewers": by_stream.get((name, "dash"), 0),
            "qualities": {q: n for (s, q), n in sorted(by_quality.items()) if s == name},
            # the ladder made of it: share of a core its process spent decoding ("decode") and per rendition
            "transcode": dict(sorted((ladders.get(name) or {}).get("cpu_share", {}).items())),
            "publisher": st.get("publisher"), "encoder": st.get("encoder"), "uptime": st.get("uptime"),
            "video_codec": st.get("video_codec"), "audio_codec": st.get("audio_codec"),
            "width": st.get("width"), "height": st.get("height"), "bitrate": st.get("bitrate"),
            "ingest": {"start": start, "step": 1, "bps": bitrate},  # sampled once a second (dashboard_state)
        })
    body = {"version": __version__, "pid": os.getpid(), "worker": request.app.get(WORKER_INDEX, 0),
            "allocator": allocator.state, "collector": allocator.collector,
            "ingest": stats is not None, "live": live, **dashboard.snapshot()}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def record_for_dashboard(request: web.Request, response: web.StreamResponse) -> None:
    """One response into the page's series (called by the app's one response hook, for every response: cheap)."""
    dashboard = request.app.get(DASHBOARD)
    if dashboard is None:  # answered before the app's state is up (none in practice)
        return
    protocol, _ = request_label(request)
    status = response.status
    length = (response.content_length or 0) if request.method != "HEAD" else 0
    started = request.get(_START)
    entry = None
    if status < 400 and protocol in MEDIA_PROTOCOLS:
        path = request.path  # the entry: the file for /mp4/, the directory of the manifest or segment otherwise
        entry = (path if protocol == "mp4" else path.rpartition("/")[0])[:200]
    dashboard.record(protocol, status, length, request.get(CACHE_RESULT),
                     time.perf_counter_ns() - started if started is not None else None, entry)
    if status >= 400:
        body = response.body if isinstance(response, web.Response) else None
        message = body[:300].decode("utf-8", "replace").strip() if isinstance(body, bytes) else ""
        dashboard.error(status, request.method, request.path, message or (response.reason or ""))


async def dashboard_state(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the page's series, and a task that samples the relay's byte counters once a second."""
    app[DASHBOARD] = dashboard = Dashboard()
    app[PROBES] = {}

    async def sample_forever() -> None:
        while True:
            try:
                stats = ingest_stats(app)
                if stats is not None:
                    dashboard.ingest.sample(int(dashboard.clock()), stats.get("streams") or {})
            except Exception:
                log.exception("status page: sampling the live streams failed")
            await asyncio.sleep(1.0)

    task = asyncio.get_running_loop().create_task(sample_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve_static(request: web.Request) -> web.StreamResponse:
    """Files of gateway/ops/static by exact name: the page's JS/CSS, the vendored players and their licenses."""
    name = request.match_info["name"]
    content_type = STATIC_TYPES.get(os.path.splitext(name)[1])
    path = STATIC_DIR / name
    if content_type is None or name.startswith(".") or "/" in name or not path.is_file():
        raise web.HTTPNotFound(reason="no such static file")
    return FileResponse(path, headers={"Content-Type": f"{content_type}; charset=utf-8",
                                       "Cache-Control": f"public, max-age={STATIC_MAX_AGE}"})
