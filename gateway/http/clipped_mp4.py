"""``/mp4/<path>/clipFrom/<ms>/clipTo/<ms>`` (or ``/tracks/v2-a3/``, ``/shift/``): a progressive MP4 of part of a
file, streamed from its layout.

``packagers.mp4.clip`` lays the file out (a new moov, then the samples' bytes in source order); the layout is kept
with the clipped media set, so a player's many Range requests cost a lookup and the preads of the bytes asked for.
The body goes out in pieces of at most PIECE bytes, each read in the executor, so a long clip never sits in memory
and a slow client holds no thread. Conditional requests, HEAD and single ranges behave as for the file itself.
"""
from __future__ import annotations

from aiohttp import web

from packagers.media_set import MediaSet
from packagers.mp4.clip import ClippedMp4, build_clipped_mp4

from ..origin.packaging import PACKAGING
from ..origin.store import FileIdentity, Store
from .responses import RangeNotSatisfiable, cache_control, http_date, not_modified, range_decision, \
    range_not_satisfiable
from .urls import Mp4Download

MP4_TYPE = "video/mp4"
PIECE = 1 << 20  # bytes read per executor job
KEEP_LAYOUT_BYTES = 256 << 10


async def serve_clipped_mp4(request: web.Request, download: Mp4Download) -> web.StreamResponse:
    packaging = request.app[PACKAGING]
    opened = await packaging.open(download.target)
    layout: ClippedMp4 = await packaging.run(clipped_layout, opened.media_set)
    etag = opened.etag(("mp4", "clip"))
    headers = {"ETag": etag, "Last-Modified": http_date(opened.last_modified), "Accept-Ranges": "bytes",
               "Cache-Control": cache_control(packaging.settings.segment_max_age)}
    if not_modified(request, etag, opened.last_modified):
        return web.Response(status=304, headers=headers)
    try:
        byte_range = range_decision(request, layout.size, etag, opened.last_modified)
    except RangeNotSatisfiable:
        return range_not_satisfiable(layout.size)
    start, stop = (0, layout.size) if byte_range is None else (byte_range.start, byte_range.stop)
    response = web.StreamResponse(status=200 if byte_range is None else 206, headers=headers)
    response.content_type = MP4_TYPE
    response.content_length = stop - start
    if byte_range is not None:
        response.headers["Content-Range"] = byte_range.content_range(layout.size)
    await response.prepare(request)
    if request.method != "HEAD":
        file = opened.files[0]
        while start < stop:
            end = min(stop, start + PIECE)
            await response.write(await packaging.run(read_range, packaging.store, file, layout, start, end))
            start = end
    await response.write_eof()
    return response


def clipped_layout(media_set: MediaSet) -> ClippedMp4:
    """The layout, kept with the media set when its moov is small (clips of a few minutes): the media set cache
    weighs what it holds when it stores it, so what it may pin later stays small; a longer clip's layout is made
    again per request (~20 ms for an hour of a 2-hour file's 480k samples). Blocking."""
    kept = media_set.derived_value(("mp4", "clip"))
    if kept is not None:
        return kept
    layout = build_clipped_mp4(media_set.presentations[0])
    if len(layout.head) <= KEEP_LAYOUT_BYTES:
        media_set.derived(("mp4", "clip"), lambda: layout)
    return layout


def read_range(store: Store, file: FileIdentity, layout: ClippedMp4, start: int, stop: int) -> bytes:
    """Bytes [start, stop) of the clipped file: from its head, or preads of the source. Blocking."""
    parts = []
    with store.open(file) as reader:
        for source, offset, size in layout.pieces(start, stop):
            parts.append(layout.head[offset:offset + size] if source < 0 else reader.pread(source + offset, size))
    return b"".join(parts)

