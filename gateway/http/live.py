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

Low-latency HLS (``gateway.http.live_wait``): ``index.m3u8`` with ``_HLS_msn``/``_HLS_part``/``_HLS_skip`` is held
until it lists the part asked for (or answers the delta update), and a request for a part that does not exist yet
but is the playlist's preload hint is held until it does; ``index_delta.m3u8`` is served only that way. A plain
``index.m3u8`` of a low-latency stream waits for its hinted part too (one PART-TARGET at most): players start a
PART-HOLD-BACK behind the edge they are given, so a playlist a part old would keep them a part further behind.
"""
from __future__ import annotations

import os
import re
import time
from datetime import datetime, timezone

from aiohttp import web

from packagers.errors import bad_request, not_found
from packagers.hls.ll_directives import parse_part_name
from packagers.thumbs import encode_jpeg, latest_from_gop, latest_from_segment
from packagers.thumbs.names import ThumbFile, parse_thumb_name
from rtmp.live import LIVE_FILE, MEDIA_PLAYLIST, STREAM_NAME

from .errors import error_response
from .live_chunked import serve_growing_segment
from .live_wait import (DELTA_PLAYLIST, PLAYLIST_MAX_AGE, live_waits_state, read_whole, serve_fresh_playlist,
                        serve_hinted_part, serve_ll_playlist)
from ..ingest.service import INGEST
from ..ops.audience_node import AUDIENCE_STREAM
from ..ops.labels import REQUEST_LABEL, live_label
from ..origin.packaging import PACKAGING
from .responses import serve_packaged
from ..ops.app_keys import SETTINGS
from .thumbnails import JPEG_TYPE, THUMBNAIL_SLOTS

DIRECTIVES = ("_HLS_msn", "_HLS_part", "_HLS_skip")


def content_type(name: str) -> str:
    if name.endswith(".m3u8"):
        return "application/vnd.apple.mpegurl"
    if name.endswith(".mpd"):
        return "application/dash+xml"
    if name.endswith(".ts"):
        return "video/mp2t"
    return "audio/mp4" if "-a-" in name else "video/mp4"


async def serve_live(request: web.Request) -> web.StreamResponse:
    app, stream, name = (request.match_info[k] for k in ("app", "stream", "file"))
    request[REQUEST_LABEL] = live_label(name)  # the live grammar's label, whatever the answer
    if STREAM_NAME.fullmatch(app) and STREAM_NAME.fullmatch(stream):
        request[AUDIENCE_STREAM] = (f"live:{app}/{stream}", None)  # the analytics' stream (ops/audience_node.py)
    if name.startswith("thumb-") and STREAM_NAME.fullmatch(app) and STREAM_NAME.fullmatch(stream):
        return await serve_live_thumbnail(request, app, stream, parse_thumb_name(name))
    if not (STREAM_NAME.fullmatch(app) and STREAM_NAME.fullmatch(stream) and LIVE_FILE.fullmatch(name)) \
            or name == DELTA_PLAYLIST:
        return error_response(404, "NOT_FOUND", "serve_live: no such live file")
    directory = os.path.join(request.app[SETTINGS].store, "live", app, stream)
    if name == MEDIA_PLAYLIST:
        if any(k in request.query for k in DIRECTIVES):
            return await serve_ll_playlist(request, directory)
        fresh = await serve_fresh_playlist(request, directory)
        if fresh is not None:
            return fresh
    path = os.path.join(directory, name)
    try:
        data, ino, size, mtime_ns = await request.app[PACKAGING].run(read_whole, path)
    except (FileNotFoundError, NotADirectoryError):
        part = parse_part_name(name)
        if part is not None:    # perhaps the preload hint: held until it is written
            return await serve_hinted_part(request, directory, name, part)
        growing = await serve_growing_segment(request, directory, name)   # LL-DASH: sent as it is written
        if growing is not None:
            return growing
        return error_response(404, "NOT_FOUND", f"serve_live: {app}/{stream}/{name} does not exist (yet)")
    etag = f'"{ino:x}-{size:x}-{mtime_ns:x}"'
    playlist = name.endswith((".m3u8", ".mpd"))
    max_age = PLAYLIST_MAX_AGE if playlist else request.app[SETTINGS].segment_max_age

    async def body() -> bytes:
        return data

    return await serve_packaged(request, body, content_type=content_type(name), etag=etag,
                                last_modified=mtime_ns / 1e9, max_age=max_age)


async def serve_live_thumbnail(request: web.Request, app: str, stream: str, thumb: ThumbFile) -> web.Response:
    """``thumb-now[-w<W>][-h<H>].jpg``: the newest picture, from this process's GOP cache when the stream is published
    here, else from the newest segment on the shared store (any node). Never cached for more than a second."""
    if thumb.offset_ms is not None:
        raise bad_request("serve_live_thumbnail: a live stream has thumb-now.jpg only")
    ingest = request.app.get(INGEST)
    snapshot = ingest.relay.video_snapshot(f"{app}/{stream}") if ingest is not None else None
    packaging = request.app[PACKAGING]
    if snapshot is not None:
        def build() -> bytes:
            return encode_jpeg(latest_from_gop(*snapshot), thumb.width, thumb.height)
    else:
        directory = os.path.join(request.app[SETTINGS].store, "live", app, stream)
        segment = await packaging.run(_newest_segment, directory)

        def build() -> bytes:
            return encode_jpeg(latest_from_segment(*segment), thumb.width, thumb.height)
    async with request.app[THUMBNAIL_SLOTS]:
        jpeg = await packaging.run(build)
    return web.Response(body=jpeg, content_type=JPEG_TYPE, headers={"Cache-Control": f"max-age={PLAYLIST_MAX_AGE}"})


_MAP = re.compile(r'#EXT-X-MAP:URI="([^"]+)"')


def _newest_segment(directory: str) -> tuple[bytes, str]:
    """(bytes, container format) of the last segment the live media playlist lists: MPEG-TS, or fMP4 after the
    init segment of its EXT-X-MAP (low-latency and HEVC playlists). Blocking."""
    try:
        playlist = read_whole(os.path.join(directory, MEDIA_PLAYLIST))[0].decode("utf-8", "replace")
    except (FileNotFoundError, NotADirectoryError):
        raise not_found("serve_live_thumbnail: this stream is not live (no playlist)") from None
    lines = [line.strip() for line in playlist.splitlines() if line.strip()]
    names = [i for i, line in enumerate(lines) if not line.startswith("#")]
    newest = lines[names[-1]] if names else ""
    if not LIVE_FILE.fullmatch(newest) or not newest.endswith((".ts", ".m4s")):
        raise not_found("serve_live_thumbnail: the live playlist lists no segment yet")
    maps = [m[1] for line in lines[: names[-1]] if (m := _MAP.match(line))]
    try:
        if newest.endswith(".ts"):
            return read_whole(os.path.join(directory, newest))[0], "mpegts"
        if not maps or not LIVE_FILE.fullmatch(maps[-1]):
            raise not_found("serve_live_thumbnail: the live playlist names no init segment")
        init = read_whole(os.path.join(directory, maps[-1]))[0]
        return init + read_whole(os.path.join(directory, newest))[0], "mp4"
    except FileNotFoundError:
        raise not_found("serve_live_thumbnail: the newest segment is gone; retry") from None


async def serve_time(request: web.Request) -> web.Response:
    """urn:mpeg:dash:utc:http-iso:2014: the server's UTC time, ISO 8601 with milliseconds, never cached."""
    now = datetime.fromtimestamp(time.time(), timezone.utc)
    text = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return web.Response(text=text, content_type="text/plain", headers={"Cache-Control": "no-store"})


def add_live_routes(app: web.Application) -> None:
    """Before the catch-all route of ``gateway.http.app``; any method, as there: the middleware answers OPTIONS (CORS
    preflight) and refuses methods other than GET/HEAD."""
    app.router.add_route("*", "/live/{app}/{stream}/{file}", serve_live)
    app.cleanup_ctx.append(live_waits_state)  # after make_app's packaging state: the pollers use its executor
    app.router.add_route("*", "/time", serve_time)


__all__ = ["add_live_routes", "content_type", "serve_live", "serve_time"]
