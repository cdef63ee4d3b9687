"""``/thumb/<path>/thumb-<ms>[-w<W>][-h<H>].jpg``: a video frame as a JPEG (nginx-vod-module's thumb module).

The frame is found in the cached sample tables (``packagers.thumbs.locate``), its samples are read with preads, and
PyAV decodes and encodes it in the I/O pool. Decoding is CPU work that releases the GIL only in parts, so at most
``thumbnail_decodes`` run at once (default: one per core) and the others queue, leaving the pool's other threads to
stats and reads; a scrubber's burst of thumbnails cannot starve playback. Results go through the response cache
(single flight: a thumbnail asked for by many players at once is decoded once) and carry the segments' caching
headers: a given file's frame at a given time never changes.
"""
from __future__ import annotations

import asyncio
import os
from functools import partial

from aiohttp import web

from packagers.errors import ErrorCode, PackagerError
from packagers.media_set import Selection
from packagers.naming import TrackSpec
from packagers.thumbs import decode_frame, encode_jpeg, locate, sample_reads
from packagers.thumbs.names import ThumbFile

from ..catalog.access import DeliveryContext
from ..ops.access_log import CACHE_RESULT
from ..origin.packaging import PACKAGING
from ..origin.store import FileIdentity, Store
from .responses import serve_packaged
from .urls import ThumbRequest

JPEG_TYPE = "image/jpeg"
# the decode slots of one app (an asyncio.Semaphore sized by the settings), made with the app's other state
class ThumbnailSlots:
    """At most ``size`` decodes at once; the others wait here, on the event loop. Counts what /status shows: decodes
    running and waiting now, and the most that ever ran at once (never more than ``size``)."""

    def __init__(self, size: int):
        self.size = size
        self._semaphore = asyncio.Semaphore(size)
        self.decoding = self.waiting = self.peak_decoding = self.peak_waiting = 0

    async def __aenter__(self) -> None:
        self.waiting += 1
        self.peak_waiting = max(self.peak_waiting, self.waiting)
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.decoding += 1
        self.peak_decoding = max(self.peak_decoding, self.decoding)

    async def __aexit__(self, *exc) -> None:
        self.decoding -= 1
        self._semaphore.release()

    def stats(self) -> dict:
        return {"slots": self.size, "decoding": self.decoding, "waiting": self.waiting,
                "peak_decoding": self.peak_decoding, "peak_waiting": self.peak_waiting}


THUMBNAIL_SLOTS = web.AppKey("thumbnail_slots", ThumbnailSlots)


def thumbnail_slots(decodes: int) -> ThumbnailSlots:
    return ThumbnailSlots(decodes or os.cpu_count() or 1)


async def serve_thumbnail(request: web.Request, parsed: ThumbRequest, context: DeliveryContext) -> web.StreamResponse:
    packaging = request.app[PACKAGING]
    opened = await packaging.open(parsed.target, context.segment_duration_ms)
    thumb = parsed.file
    selection = opened.media_set.resolve(TrackSpec(thumb.spec.file, thumb.spec.video or 1, None))
    if not selection.tracks or selection.tracks[0].kind != "video":
        raise PackagerError(ErrorCode.NOT_FOUND, "serve_thumbnail: no video track to take a thumbnail of")
    accurate = packaging.settings.thumbnail_mode == "accurate"
    key = ("thumb", thumb.offset_ms, thumb.width, thumb.height, selection.spec.suffix(), accurate)
    build = partial(build_thumbnail, packaging.store, opened.files[selection.file_index], selection, thumb, accurate)
    slots = request.app[THUMBNAIL_SLOTS]

    async def make() -> bytes:
        async with slots:  # queued here, on the event loop, not in a thread
            return await packaging.run(build)

    async def body() -> bytes:
        cache = packaging.responses
        hit = cache.capacity > 0 and opened.cache_key(key) in cache
        request[CACHE_RESULT] = "hit" if hit else ("miss" if cache.capacity > 0 else "bypass")
        return await cache.get_or_build(opened.cache_key(key), make)

    return await serve_packaged(request, body, content_type=JPEG_TYPE, etag=opened.etag(key),
                                last_modified=opened.last_modified, max_age=packaging.settings.segment_max_age)


def build_thumbnail(store: Store, file: FileIdentity, selection: Selection, thumb: ThumbFile, accurate: bool) -> bytes:
    """Locate, read, decode, encode. Blocking (the I/O pool)."""
    track = selection.tracks[0]
    frames = locate(track, thumb.offset_ms, accurate)
    with store.open(file) as reader:
        samples = reader.read_all(sample_reads(track, frames.first, frames.target))
    return encode_jpeg(decode_frame(track, frames.first, frames.target, samples), thumb.width, thumb.height)
