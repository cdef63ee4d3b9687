"""What each packaged URL produces: a cache key, a blocking builder, a content type and a max-age.

One table for every protocol, so the handler stays the same for HLS, DASH, MSS and HDS: resolve the track selection
(and 404 a segment past the end) *before* touching the cache, then let the response cache run the builder once.
Manifest builders get plain data (the MediaSet); segment builders read the coalesced byte ranges and run a muxer.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Hashable

from packagers.hds import build_f4m, fragment_muxer
from packagers.hds.f4m import FRAGMENT_CONTENT_TYPE, MANIFEST_CONTENT_TYPE
from packagers.hls import build_master_playlist, build_media_playlist
from packagers.media_set import MediaSet, Selection
from packagers.ts import TsMuxer

from .packaging import OpenedSet, Packaging
from .store import FileIdentity, Store
from .urls import HdsFragment, HdsManifest, HlsMaster, HlsMediaPlaylist, HlsSegment, PackagedRequest

M3U8_TYPE = "application/vnd.apple.mpegurl"
TS_TYPE = "video/MP2T"


@dataclass(frozen=True)
class Product:
    key: Hashable  # canonical: two URLs naming the same bytes share one cache entry and ETag
    build: Callable[[], bytes]  # blocking; runs in the executor
    content_type: str
    max_age: int


def build_segment(store: Store, file: FileIdentity, media_set: MediaSet, selection: Selection, index: int,
                  mux: Callable) -> bytes:
    """Read one segment's samples with coalesced preads on one descriptor, then mux. Blocking."""
    requests = media_set.segment_reads(selection, index)
    with store.open(file) as reader:
        buffers = reader.read_all(requests)
    return mux(media_set.media_segment(selection, index, requests, buffers))


def _segment(packaging: Packaging, opened: OpenedSet, selection: Selection, index: int, mux: Callable) -> Callable:
    opened.media_set.plan(selection).check_index(index)  # 404 past the end, before the cache
    file = opened.files[selection.file_index]
    return partial(build_segment, packaging.store, file, opened.media_set, selection, index, mux)


def _text(fn: Callable[..., str], *args) -> Callable[[], bytes]:
    return lambda: fn(*args).encode()


def product_for(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging) -> Product:
    settings = packaging.settings
    media_set = opened.media_set
    manifest_age, segment_age = settings.manifest_max_age, settings.segment_max_age

    if isinstance(parsed, HlsMaster):
        return Product(("hls", "master"), _text(build_master_playlist, media_set), M3U8_TYPE, manifest_age)
    if isinstance(parsed, HlsMediaPlaylist):
        selection = media_set.resolve(parsed.spec)
        key = ("hls", "index", selection.spec.suffix())
        return Product(key, _text(build_media_playlist, media_set, selection), M3U8_TYPE, manifest_age)
    if isinstance(parsed, HlsSegment) and parsed.container == "ts":
        selection = media_set.resolve(parsed.spec)
        mux = TsMuxer(selection.tracks).build
        key = ("hls", "seg", parsed.index, selection.spec.suffix(), "ts")
        return Product(key, _segment(packaging, opened, selection, parsed.index, mux), TS_TYPE, segment_age)

    if isinstance(parsed, HdsManifest):
        return Product(("hds", "manifest"), _text(build_f4m, media_set), MANIFEST_CONTENT_TYPE, manifest_age)
    if isinstance(parsed, HdsFragment):
        selection = media_set.resolve(parsed.spec)
        mux = fragment_muxer(media_set, selection).build  # one timeline for every rendition of the set
        key = ("hds", "frag", parsed.index, selection.spec.suffix())
        return Product(key, _segment(packaging, opened, selection, parsed.index, mux), FRAGMENT_CONTENT_TYPE,
                       segment_age)

    from packagers.errors import ErrorCode, PackagerError

    raise PackagerError(ErrorCode.UNSUPPORTED, f"product_for: {type(parsed).__name__} is not served yet")
