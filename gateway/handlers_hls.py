"""HLS endpoints: master playlist, media playlists and MPEG-TS segments, packaged on the fly from MP4."""
from __future__ import annotations

from functools import partial
from typing import Callable

from aiohttp import web

from packagers.hls import build_master_playlist, build_media_playlist

from .packaging import PACKAGING, build_ts_segment
from .responses import serve_packaged
from .urls import HlsMaster, HlsMediaPlaylist, HlsRequest, HlsSegment

M3U8_TYPE = "application/vnd.apple.mpegurl"
TS_TYPE = "video/MP2T"


async def serve_hls(request: web.Request, hls: HlsRequest) -> web.Response:
    packaging = request.app[PACKAGING]
    settings = packaging.settings
    opened = await packaging.open(hls.target)
    media_set = opened.media_set
    build: Callable[[], bytes]
    if isinstance(hls, HlsMaster):
        key: tuple = ("master",)
        build = lambda: build_master_playlist(media_set).encode()  # noqa: E731
        content_type, max_age = M3U8_TYPE, settings.manifest_max_age
    else:
        # Canonical keys: index.m3u8 and index-v1-a1.m3u8 of a file with one of each share one cache entry and ETag.
        selection = media_set.resolve(hls.spec)
        canonical = selection.spec.suffix()
        if isinstance(hls, HlsMediaPlaylist):
            key = ("index", canonical)
            build = lambda: build_media_playlist(media_set, selection).encode()  # noqa: E731
            content_type, max_age = M3U8_TYPE, settings.manifest_max_age
        else:
            assert isinstance(hls, HlsSegment)
            media_set.plan(selection).check_index(hls.index)  # 404 past the end, before touching the cache
            key = ("seg", hls.index, canonical, settings.hls_container)
            file = opened.files[selection.file_index]
            build = partial(build_ts_segment, packaging.store, file, media_set, selection, hls.index)
            content_type, max_age = TS_TYPE, settings.segment_max_age
    return await serve_packaged(
        request,
        lambda: packaging.packaged(opened, key, build),
        content_type=content_type,
        etag=opened.etag(key),
        last_modified=opened.last_modified,
        max_age=max_age,
    )
