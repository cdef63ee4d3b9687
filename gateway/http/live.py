"""Live HLS/DASH output (``/live/<app>/<stream>/<file>``) and the clock DASH players sync to (``/time``).

The files are written by the live packager (``rtmp.live``) into ``<store>/live/<app>/<stream>/`` on the shared
store, so *any* node behind the load balancer serves any live stream, whichever node the publisher is connected to:
no routing by stream, and a player keeps playing when the balancer moves it to another node. The price is the store's
propagation delay (NFS close-to-open: a file renamed into place is visible to the next open on another node; attribute
caching can delay a directory listing, which we never use). The alternative, routing players to the ingest node by
stream key, would save that delay but ties players to one node and needs a stream → node table in the balancer.

Only names the packager writes (``rtmp.live.LIVE_FILE``) under well-formed app/stream names are served; anything else
is 404, so nothing outside the live tree, no temporary file, no hidden file. A file is read whole through one
descriptor (open, fstat, read), so its body and ETag always belong to the same version even while the packager
renames a new playlist into place. Playlists and the MPD: ``max-age=1`` (a reload per second at most reaches the
origin); segments never change under a given name (the names carry the writer's id): the long segment max-age.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from aiohttp import web

from rtmp.live import LIVE_FILE, STREAM_NAME

from .errors import error_response
from ..ops.labels import REQUEST_LABEL, live_label
from ..origin.packaging import PACKAGING
from .responses import serve_packaged
from ..settings import SETTINGS

PLAYLIST_MAX_AGE = 1


def content_type(name: str) -> str:
    if name.endswith(".m3u8"):
        return "application/vnd.apple.mpegurl"
    if name.endswith(".mpd"):
        return "application/dash+xml"
    if name.endswith(".ts"):
        return "video/mp2t"
    return "audio/mp4" if "-a-" in name else "video/mp4"


def _read(path: str) -> tuple[bytes, int, int, int]:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        chunks, left = [], st.st_size
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st.st_ino, st.st_size, st.st_mtime_ns
    finally:
        os.close(fd)


async def serve_live(request: web.Request) -> web.StreamResponse:
    app, stream, name = (request.match_info[k] for k in ("app", "stream", "file"))
    request[REQUEST_LABEL] = live_label(name)  # the live grammar's label, whatever the answer
    if not (STREAM_NAME.fullmatch(app) and STREAM_NAME.fullmatch(stream) and LIVE_FILE.fullmatch(name)):
        return error_response(404, "NOT_FOUND", "serve_live: no such live file")
    path = os.path.join(request.app[SETTINGS].store, "live", app, stream, name)
    try:
        data, ino, size, mtime_ns = await request.app[PACKAGING].run(_read, path)
    except (FileNotFoundError, NotADirectoryError):
        return error_response(404, "NOT_FOUND", f"serve_live: {app}/{stream}/{name} does not exist (yet)")
    etag = f'"{ino:x}-{size:x}-{mtime_ns:x}"'
    playlist = name.endswith((".m3u8", ".mpd"))
    max_age = PLAYLIST_MAX_AGE if playlist else request.app[SETTINGS].segment_max_age

    async def body() -> bytes:
        return data

    return await serve_packaged(request, body, content_type=content_type(name), etag=etag,
                                last_modified=mtime_ns / 1e9, max_age=max_age)


async def serve_time(request: web.Request) -> web.Response:
    """urn:mpeg:dash:utc:http-iso:2014: the server's UTC time, ISO 8601 with milliseconds, never cached."""
    now = datetime.fromtimestamp(time.time(), timezone.utc)
    text = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return web.Response(text=text, content_type="text/plain", headers={"Cache-Control": "no-store"})


def add_live_routes(app: web.Application) -> None:
    """Before the catch-all route of ``gateway.http.app``; any method, as there: the middleware answers OPTIONS (CORS
    preflight) and refuses methods other than GET/HEAD."""
    app.router.add_route("*", "/live/{app}/{stream}/{file}", serve_live)
    app.router.add_route("*", "/time", serve_time)


__all__ = ["add_live_routes", "content_type", "serve_live", "serve_time"]
