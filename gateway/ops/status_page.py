"""The node's dashboard at ``/``: server-rendered HTML, a little JS that polls JSON, and a built-in test player.

The page (``render_page``) carries the structure, the version and pid of this process, and quick links to a few media
files of the store. ``static/status.js`` fills in the numbers every 2 s from ``/status`` (caches, requests) and
``/status/dashboard`` (``serve_dashboard``: recent errors, live streams with viewers), and plays any store path or
entry URL with hls.js or dash.js served from ``static/`` by this gateway (no CDN: the page works on an isolated
network, and the player is the version the tests ran).

Everything a client or a publisher chose (file names, request paths, error messages, stream names) is escaped: here
with ``html.escape``, in the browser by writing ``textContent`` only. A strict Content-Security-Policy (scripts from
this origin, no inline script or handler) is a second line of defence, not the first.
"""
from __future__ import annotations

import html
import itertools
import os
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from aiohttp.web_fileresponse import FileResponse

from .. import __version__
from . import allocator
from .metrics import PROMETHEUS, ingest_stats
from ..origin.packaging import PACKAGING

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain", ".md": "text/plain"}
STATIC_MAX_AGE = 86400  # URLs carry ?v=<version>: a new gateway version is a new URL
QUICK_LINKS = 12
SCAN_LIMIT = 2000  # directory entries looked at per directory for quick links (a store may hold millions)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
       "connect-src *; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'none'")


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


def _quick_link(path: str) -> str:
    e = html.escape
    url = quote(path, safe="/,")
    hls, dash, mp4 = e(f"/hls/{url}/master.m3u8"), e(f"/dash/{url}/manifest.mpd"), e(f"/mp4/{url}")
    return (f'<li><code>{e(path)}</code> '
            f'<button type="button" class="quick" data-src="{hls}" data-kind="hls">HLS</button> '
            f'<button type="button" class="quick" data-src="{dash}" data-kind="dash">DASH</button> '
            f'<a href="{mp4}">MP4</a></li>')


def render_page(version: str, pid: int, files: list[str], settings: dict[str, object]) -> str:
    e = html.escape
    v = quote(version)
    links = "\n".join(_quick_link(f) for f in files) or "<li>No .mp4 file in the store root.</li>"
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
  <p>version {e(version)} · pid {pid} · up <span id="uptime">…</span> · {facts}</p>
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
  <h2>Live streams</h2>
  <table>
    <thead><tr><th>stream</th><th>publishing</th><th>RTMP players</th><th>HLS viewers</th><th>DASH viewers</th>
      <th>by quality</th><th>transcode (CPU share per rendition)</th></tr></thead>
    <tbody id="live-streams"></tbody>
  </table>
  <p id="live-none" class="muted">No live stream on this process (RTMP ingest off, or nothing published).</p>
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
    <thead><tr><th>time (UTC)</th><th>status</th><th>request</th><th>message</th></tr></thead>
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
    s = packaging.settings
    settings = {"segments": f"{s.segment_duration_ms / 1000:g} s", "HLS": s.hls_container}
    body = render_page(__version__, os.getpid(), files, settings)
    return web.Response(text=body, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP})


async def serve_dashboard(request: web.Request) -> web.Response:
    """What /status lacks for the page: recent errors and live streams with viewers (JSON, newest error first)."""
    metrics = request.app[PROMETHEUS]
    stats = ingest_stats(request.app)
    by_stream, by_quality = metrics.live_counts(stats)
    streams = (stats or {}).get("streams") or {}
    ladders = (stats or {}).get("ladder") or {}
    names = sorted(set(streams) | {s for s, _ in by_stream} | {s for s, _ in by_quality})
    live = [{
        "stream": name,
        "publishing": bool(streams.get(name, {}).get("publishing")),
        "rtmp_players": by_stream.get((name, "rtmp"), 0),
        "hls_viewers": by_stream.get((name, "hls"), 0),
        "dash_viewers": by_stream.get((name, "dash"), 0),
        "qualities": {q: n for (s, q), n in sorted(by_quality.items()) if s == name},
        # the ladder made of it: share of a core its process spent decoding ("decode") and per rendition
        "transcode": dict(sorted((ladders.get(name) or {}).get("cpu_share", {}).items())),
    } for name in names]
    body = {"version": __version__, "pid": os.getpid(), "allocator": allocator.state, "collector": allocator.collector,
            "ingest": stats is not None, "live": live,
            "errors": list(reversed(metrics.recent_errors))}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def serve_static(request: web.Request) -> web.StreamResponse:
    """Files of gateway/ops/static by exact name: the page's JS/CSS, the vendored players and their licenses."""
    name = request.match_info["name"]
    content_type = STATIC_TYPES.get(os.path.splitext(name)[1])
    path = STATIC_DIR / name
    if content_type is None or name.startswith(".") or "/" in name or not path.is_file():
        raise web.HTTPNotFound(reason="no such static file")
    return FileResponse(path, headers={"Content-Type": f"{content_type}; charset=utf-8",
                                       "Cache-Control": f"public, max-age={STATIC_MAX_AGE}"})
