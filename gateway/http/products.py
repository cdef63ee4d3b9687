"""What each packaged URL produces: a cache key, a blocking builder, a content type and a max-age.

One table for every protocol, so the handler stays the same for HLS, DASH, MSS and HDS: resolve the track selection
(and 404 a segment past the end) *before* touching the cache, then let the response cache run the builder once.
Manifest builders get plain data (the MediaSet); segment builders read the coalesced byte ranges and run a muxer.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from time import perf_counter_ns
from typing import Callable, Hashable

from packagers.dash import mpd as dash
from packagers.errors import ErrorCode, PackagerError
from packagers.fmp4 import Fmp4Muxer, build_init_segment
from packagers.hds import build_f4m, fragment_muxer
from packagers.hds.f4m import FRAGMENT_CONTENT_TYPE, MANIFEST_CONTENT_TYPE
from packagers.hls.playlists import build_master_playlist, build_media_playlist, choose_container
from packagers.media_set import MediaSet, Selection
from packagers.mss import MANIFEST_CONTENT_TYPE as MSS_MANIFEST_TYPE
from packagers.mss import build_smooth_manifest, locate_fragment
from packagers.ts import TsMuxer

from ..catalog.access import DeliveryContext
from ..catalog.delivery import HLS_KEY_NAME, encrypt_segment
from ..origin.packaging import OpenedSet, Packaging, ignore_stage, timed
from ..origin.store import FileIdentity, Store
from .urls import (DashFragment, DashManifest, HdsFragment, HdsManifest, HlsKey, HlsMaster, HlsMediaPlaylist,
                   HlsSegment, InitSegment, MssFragment, MssManifest, PackagedRequest)

M3U8_TYPE = "application/vnd.apple.mpegurl"
TS_TYPE = "video/MP2T"


@dataclass(frozen=True)
class Product:
    key: Hashable  # canonical: two URLs naming the same bytes share one cache entry and ETag
    build: Callable[[], bytes]  # blocking; runs in the executor
    content_type: str
    max_age: int
    private: bool = False  # keys: never stored by shared caches


def build_segment(store: Store, file: FileIdentity, media_set: MediaSet, selection: Selection, index: int,
                  mux: Callable, observe_stage: Callable[[str, int], None] = ignore_stage) -> bytes:
    """Read one segment's samples with coalesced preads on one descriptor, then mux. Blocking."""
    t0 = perf_counter_ns()
    tables, requests = media_set.segment_job(selection, index)
    t1 = perf_counter_ns()
    with store.open(file) as reader:
        buffers = reader.read_scratch(requests)  # valid in this thread until its next read: muxers copy out
        t2 = perf_counter_ns()
        body = mux(media_set.media_segment(selection, index, requests, buffers, tables))
    t3 = perf_counter_ns()
    for stage, elapsed in (("plan", t1 - t0), ("read", t2 - t1), ("mux", t3 - t2)):
        observe_stage(stage, elapsed)
    return body


def _segment(packaging: Packaging, opened: OpenedSet, selection: Selection, index: int, mux: Callable) -> Callable:
    opened.media_set.plan(selection).check_index(index)  # 404 past the end, before the cache
    file = opened.files[selection.file_index]
    return partial(build_segment, packaging.store, file, opened.media_set, selection, index, mux,
                   packaging.observe_stage)


def _text(packaging: Packaging, fn: Callable[..., str], *args) -> Callable[[], bytes]:
    return lambda: timed(packaging.observe_stage, "manifest", fn, *args).encode()


def _fmp4_type(selection: Selection) -> str:
    return dash.content_type("video" if any(t.kind == "video" for t in selection.tracks) else "audio")


def product_for(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging, context: DeliveryContext) -> Product:
    settings = packaging.settings
    media_set = opened.media_set
    manifest_age, segment_age = settings.manifest_max_age, settings.segment_max_age
    aes_key = context.hls_key
    aes = ("aes-128", context.entry.id) if aes_key is not None else ()  # encrypted and clear bytes never share a key

    if isinstance(parsed, HlsKey):
        if aes_key is None:
            raise PackagerError(ErrorCode.NOT_FOUND, "product_for: this media is not encrypted")
        return Product(("hls", "key", *aes), lambda: aes_key, "application/octet-stream", 0, private=True)
    if isinstance(parsed, (HlsMaster, HlsMediaPlaylist)):
        container = choose_container(media_set, context.hls_container)
        if isinstance(parsed, HlsMaster):
            build = _text(packaging, build_master_playlist, media_set, container)
            return Product(("hls", "master", container), build, M3U8_TYPE, manifest_age)
        selection = media_set.resolve(parsed.spec)
        extension = "ts" if container == "ts" else "m4s"
        key_uri = HLS_KEY_NAME if aes_key is not None else None
        build = _text(packaging, build_media_playlist, media_set, selection, extension, container, key_uri)
        return Product(("hls", "index", selection.spec.suffix(), container, *aes), build, M3U8_TYPE, manifest_age)
    if isinstance(parsed, HlsSegment):
        selection = media_set.resolve(parsed.spec)
        if parsed.container == "ts" and aes_key is not None:
            # IV = media sequence number: the playlist starts at EXT-X-MEDIA-SEQUENCE:1
            clear = TsMuxer(selection.tracks).build
            mux, content_type = (lambda segment: encrypt_segment(aes_key, segment.index + 1, clear(segment))), TS_TYPE
        elif aes_key is not None:
            raise PackagerError(ErrorCode.NOT_FOUND, "product_for: encrypted HLS is served as MPEG-TS only")
        elif parsed.container == "ts":
            mux, content_type = TsMuxer(selection.tracks).build, TS_TYPE
        else:
            # presentation times exactly as in TS (minus TS_PTS_OFFSET): tfdt = dts, signed composition offsets
            mux, content_type = Fmp4Muxer(selection.tracks).build, _fmp4_type(selection)
        cache_key = ("hls", "seg", parsed.index, selection.spec.suffix(), parsed.container, *aes)
        return Product(cache_key, _segment(packaging, opened, selection, parsed.index, mux), content_type, segment_age)
    if isinstance(parsed, InitSegment):
        selection = media_set.resolve(parsed.spec)
        # identical for HLS and DASH: one cache entry
        build = partial(build_init_segment, selection.tracks)
        return Product(("init", selection.spec.suffix()), build, _fmp4_type(selection), segment_age)

    if isinstance(parsed, DashManifest):
        return Product(("dash", "manifest"),
                       _text(packaging, dash.build_mpd, media_set), dash.MPD_CONTENT_TYPE, manifest_age)
    if isinstance(parsed, DashFragment):
        selection = media_set.resolve(parsed.spec)
        if len(selection.tracks) != 1:
            raise PackagerError(ErrorCode.BAD_REQUEST, "product_for: a DASH fragment carries one track (-vN or -aN)")
        # DASH timelines cannot be negative: AAC priming moves into presentationTimeOffset (declared in the MPD)
        mux = Fmp4Muxer(selection.tracks, non_negative=True).build
        cache_key = ("dash", "frag", parsed.index, selection.spec.suffix())
        return Product(cache_key, _segment(packaging, opened, selection, parsed.index, mux), _fmp4_type(selection),
                       segment_age)

    if isinstance(parsed, MssManifest):
        return Product(("mss", "manifest"),
                       _text(packaging, build_smooth_manifest, media_set), MSS_MANIFEST_TYPE, manifest_age)
    if isinstance(parsed, MssFragment):
        selection, index = locate_fragment(media_set, parsed.stream, parsed.bitrate, parsed.start)
        # moof (with tfxd) + mdat, no styp: Smooth clients build the init segment from the manifest
        mux = Fmp4Muxer(selection.tracks, styp=False, tfxd=True).build
        cache_key = ("mss", "frag", index, selection.spec.suffix())
        return Product(cache_key, _segment(packaging, opened, selection, index, mux), _fmp4_type(selection), segment_age)

    if isinstance(parsed, HdsManifest):
        return Product(("hds", "manifest"),
                       _text(packaging, build_f4m, media_set), MANIFEST_CONTENT_TYPE, manifest_age)
    if isinstance(parsed, HdsFragment):
        selection = media_set.resolve(parsed.spec)
        mux = fragment_muxer(media_set, selection).build  # one timeline for every rendition of the set
        cache_key = ("hds", "frag", parsed.index, selection.spec.suffix())
        return Product(cache_key, _segment(packaging, opened, selection, parsed.index, mux), FRAGMENT_CONTENT_TYPE,
                       segment_age)

    raise PackagerError(ErrorCode.UNSUPPORTED, f"product_for: {type(parsed).__name__} is not served yet")
