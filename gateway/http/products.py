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

import numpy as np

from packagers.captions.files import CaptionRendition
from packagers.captions.hls import add_subtitles, build_subtitle_playlist
from packagers.dash import mpd as dash
from packagers.drm.signaling import Protection
from packagers.errors import ErrorCode, PackagerError
from packagers.fmp4 import Fmp4Muxer, build_init_segment
from packagers.hds import build_f4m, fragment_muxer
from packagers.hds.f4m import FRAGMENT_CONTENT_TYPE, MANIFEST_CONTENT_TYPE
from packagers.hls import names as hls_names
from packagers.hls.iframes import KeyFrames, build_iframe_playlist
from packagers.hls.playlists import build_master_playlist, build_media_playlist, choose_container, clip_shift
from packagers.media_data import MediaSegment, TrackSegment, gather_runs, plan_reads
from packagers.media_set import MediaSet, Selection
from packagers.mss import MANIFEST_CONTENT_TYPE as MSS_MANIFEST_TYPE
from packagers.mss import build_smooth_manifest, locate_fragment
from packagers.model import Track
from packagers.ts import TS_PTS_OFFSET, ScatterBuild, TsMuxer
from packagers.ts.pes import HEADER_PROBE_BYTES, own_headers

from ..catalog.access import DeliveryContext
from ..catalog.delivery import encrypt_segment
from .protected import (fmp4_muxer, identity_key, init_segment, protection_key, sample_aes_mux,
                        with_session_keys)
from ..origin.packaging import OpenedSet, Packaging, ignore_stage
from ..origin.prefetch import Prefetch, fetched_first
from ..origin.store import FileIdentity, Store, WouldBlock
from .caption_products import (caption_renditions, caption_source, dash_text, hls_caption_segment, mss_text_fragment,
                               stpp_fragment, stpp_init)
from .product import Product, text_product
from .urls import PackagedRequest

# Segments whose samples are in the page cache are built on the event loop, as nginx-vod-module muxes on its own:
# a hop to the executor and back cost ~12 % of a cold TS segment's CPU. Bigger ones (4K, long segments) go to the
# executor so that one build never holds the loop for more than a few milliseconds (~1 ms per 1.6 MB of TS).
INLINE_READ_LIMIT = 8 * 1024 * 1024
# An I-frame playlist lays out every segment of its rendition (~0.2 ms each): past this many (16 h of 6-s segments,
# ~2 s of one I/O thread) a rendition gets none, so that no request can hold a thread for long.
MAX_IFRAME_SEGMENTS = 10_000
M3U8_TYPE = "application/vnd.apple.mpegurl"
TS_TYPE = "video/MP2T"


def build_segment(store: Store, file: FileIdentity, media_set: MediaSet, selection: Selection, index: int,
                  mux: Callable, observe_stage: Callable[[str, int], None] = ignore_stage,
                  nowait: bool = False, scatter: "Scatter | None" = None, tables: list | None = None,
                  requests: list | None = None) -> bytes:
    """Read one segment's samples with coalesced preads on one descriptor, then mux; or, with ``scatter``, let the
    muxer lay the segment out first and read each sample straight into its place. Blocking, unless ``nowait``:
    then WouldBlock before any muxing when a byte is not in the page cache or the segment is too big to be built
    on the event loop (INLINE_READ_LIMIT). ``tables`` and ``requests``: given by a prefetch that planned its reads
    from them (gateway/origin/prefetch.py), not worked out again."""
    t0 = perf_counter_ns()
    if tables is None:
        tables = media_set.segment_tables(selection, index)
    if nowait and sum(int(t.sizes.sum(dtype=np.int64)) for t in tables) > INLINE_READ_LIMIT:
        raise WouldBlock()
    t1 = perf_counter_ns()
    with store.open(file) as reader:
        job = scatter.prepare(index, tables) if scatter is not None else None
        if job is not None:
            with job:
                t2 = perf_counter_ns()
                reader.read_scatter(job.reads, nowait)
                t3 = perf_counter_ns()
                body = job.finish()
            if body is not None:
                body = scatter.post(body)
                _observe(observe_stage, t0, t1, (t3 - t2), perf_counter_ns() - t3 + t2 - t1)
                return body
        t1 = perf_counter_ns()
        if requests is None:
            requests = plan_reads(tables)
        buffers = reader.read_scratch(requests, nowait)  # valid in this thread until its next read: muxers copy out
        t2 = perf_counter_ns()
        body = mux(media_set.media_segment(selection, index, requests, buffers, tables))
    _observe(observe_stage, t0, t1, t2 - t1, perf_counter_ns() - t2)
    return body


def _observe(observe_stage: Callable[[str, int], None], t0: int, t1: int, read: int, mux: int) -> None:
    for stage, elapsed in (("plan", t1 - t0), ("read", read), ("mux", mux)):
        observe_stage(stage, elapsed)


@dataclass(frozen=True)
class Scatter:
    """A muxer that lays a segment out before reading it (``TsMuxer.prepare``), and what follows it (encryption)."""

    prepare: Callable[..., ScatterBuild | None]  # (index, tables[, payload buffers])
    post: Callable[[bytes], bytes] = lambda body: body


def _segment(packaging: Packaging, opened: OpenedSet, cache_key: Hashable, selection: Selection, index: int,
             mux: Callable, content_type: str, scatter: Scatter | None = None, inline: bool = True) -> Product:
    """``inline``: the build may run on the event loop when its bytes are in the page cache (not for encrypted
    segments: encryption costs 2-6x a clear build, too long to hold the loop for)."""
    opened.media_set.plan(selection).check_index(index)  # 404 past the end, before the cache
    if selection.track_files:  # the video of one file, the audio of another: read from both
        files = tuple(opened.files[i] for i in selection.track_files)
        build = partial(build_joined_segment, packaging.store, files, opened.media_set, selection, index, mux)
        return Product(cache_key, build, content_type, packaging.settings.segment_max_age)
    file = opened.files[selection.file_index]
    build = partial(build_segment, packaging.store, file, opened.media_set, selection, index, mux,
                    packaging.observe_stage, scatter=scatter)
    prefetch = None
    if inline and fetched_first(file):
        def build_from(store: Store, tables: list, requests: list) -> bytes:
            return build_segment(store, file, opened.media_set, selection, index, mux, packaging.observe_stage,
                                 scatter=scatter, nowait=True, tables=tables, requests=requests)

        prefetch = Prefetch(file, index, partial(opened.media_set.segment_tables, selection, index), build_from,
                            INLINE_READ_LIMIT, scatter, packaging.observe_stage)
    return Product(cache_key, build, content_type, packaging.settings.segment_max_age,
                   build_inline=partial(build, nowait=True) if inline else None, prefetch=prefetch)


def build_joined_segment(store: Store, files: tuple[FileIdentity, ...], media_set: MediaSet, selection: Selection,
                         index: int, mux: Callable) -> bytes:
    """Segment ``index`` of tracks from two files of the set (``-f1-v1-f2-a1``): each file's samples read on its own
    descriptor, then muxed as one segment. Blocking."""
    tables = media_set.segment_tables(selection, index)
    parts = []
    for file in dict.fromkeys(files):
        mine = [i for i, f in enumerate(files) if f == file]
        requests = plan_reads([tables[i] for i in mine])
        with store.open(file) as reader:
            buffers = reader.read_all(requests)  # bytes: the other file's read must not reuse them
        parts += [(i, TrackSegment(selection.tracks[i], tables[i], gather_runs(tables[i], requests, buffers)))
                  for i in mine]
    return mux(MediaSegment(index, tuple(part for _, part in sorted(parts, key=lambda p: p[0]))))


def _fmp4_type(selection: Selection) -> str:
    return dash.content_type("video" if any(t.kind == "video" for t in selection.tracks) else "audio")


# what BUILDERS hold: one parsed request (keyed by its protocol and file kind) → its Product; max-ages from settings
Builder = Callable[[PackagedRequest, OpenedSet, Packaging, DeliveryContext], Product]


def _manifest(protocol: str, write: Callable[[MediaSet], str], content_type: str) -> Builder:
    """The builder of a protocol's one manifest of the whole media set (cache key: protocol, "manifest")."""
    def build(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging, context: DeliveryContext) -> Product:
        return Product((protocol, "manifest"), text_product(packaging, write, opened.media_set), content_type,
                       packaging.settings.manifest_max_age)

    return build


def _hls_key(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
             context: DeliveryContext) -> Product:
    if parsed.file.key_id:  # a DRM key, identity key format (gateway/http/protected.py)
        key = identity_key(context, parsed.file.key_id)
        return Product(("hls", "key", parsed.file.key_id, *protection_key(context)), lambda: key,
                       "application/octet-stream", 0, private=True)
    aes_key = context.hls_key
    if aes_key is None:
        raise PackagerError(ErrorCode.NOT_FOUND, "product_for: this media is not encrypted")
    return Product(("hls", "key", *protection_key(context)), lambda: aes_key, "application/octet-stream", 0,
                   private=True)


def _hls_master(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
                context: DeliveryContext) -> Product:
    container = choose_container(opened.media_set, context.hls_container)
    iframes = _iframes_allowed(container, context)
    subtitles = caption_renditions(opened.media_set, context)
    build = text_product(packaging, master_playlist, packaging.store, opened, container, iframes, subtitles,
                         context.protection)
    return Product(("hls", "master", container, iframes, subtitles, *protection_key(context)), build, M3U8_TYPE,
                   packaging.settings.manifest_max_age)


def _iframes_allowed(container: str, context: DeliveryContext) -> bool:
    """I-frame playlists: MPEG-TS, not encrypted (a range cannot be deciphered alone), not turned off by the partner."""
    return container == "ts" and context.hls_key is None and context.protection is None and context.hls_iframes


def master_playlist(store: Store, opened: OpenedSet, container: str, iframes: bool,
                    subtitles: tuple[CaptionRendition, ...] = (), protection: Protection | None = None) -> str:
    """The HLS master playlist; with ``iframes``, video variants get I-frame playlists where ``offers_iframes``;
    with ``protection``, EXT-X-SESSION-KEY lines. Blocking."""
    media_set = opened.media_set
    iframe_files = frozenset() if not iframes else frozenset(
        i for i, p in enumerate(media_set.presentations)
        if p.video_tracks and offers_iframes(store, opened.files[i], p.video_tracks[0], media_set.plans[i].count))
    master = add_subtitles(build_master_playlist(opened.media_set, container, iframe_files, protection), subtitles)
    return with_session_keys(master, protection)


def offers_iframes(store: Store, file: FileIdentity, video: Track, segments: int) -> bool:
    """Whether a video track's TS segments can be laid out from its sample tables (``TsMuxer.key_frame_ranges``):
    its first key frame (its first 64 KB, read here) carries no AUD or SPS of its own, and it has at most
    MAX_IFRAME_SEGMENTS segments (an I-frame playlist lays out every one). Blocking."""
    keys = np.flatnonzero(video.samples.keyframe)
    if not len(keys) or video.codec.nal_length_size != 4 or segments > MAX_IFRAME_SEGMENTS:
        return False
    first = int(keys[0])
    with store.open(file) as reader:
        head = reader.pread(int(video.samples.offsets[first]), min(int(video.samples.sizes[first]), HEADER_PROBE_BYTES))
    return not own_headers(video, head)


def _hls_iframes(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
                 context: DeliveryContext) -> Product:
    media_set = opened.media_set
    if not _iframes_allowed(choose_container(media_set, context.hls_container), context):
        raise PackagerError(ErrorCode.NOT_FOUND, "product_for: I-frame playlists are served for unencrypted MPEG-TS "
                            "where the partner's hls profile has not turned them off")
    selection = media_set.resolve(parsed.file.spec)
    if selection.tracks[0].kind != "video":
        raise PackagerError(ErrorCode.NOT_FOUND, "product_for: an I-frame playlist needs a video track")
    muxer = packaging.muxer(media_set, selection, "ts", TsMuxer)
    build = text_product(packaging, iframe_playlist, packaging.store, opened.files[selection.file_index], media_set,
                  selection, muxer)
    return Product(("hls", "iframes", selection.spec.suffix()), build, M3U8_TYPE,
                   packaging.settings.manifest_max_age)


def iframe_playlist(store: Store, file: FileIdentity, media_set: MediaSet, selection: Selection,
                    muxer: TsMuxer) -> str:
    """Every key frame of the selection's video as a byte range of its TS segment, from the sample tables. Blocking."""
    if not offers_iframes(store, file, selection.tracks[0], media_set.plan(selection).count):
        raise PackagerError(ErrorCode.NOT_FOUND, "iframe_playlist: this video's samples carry their own AUD or "
                            "parameter sets, or 2-byte NAL lengths (its segments' layout is known only once built), or "
                            f"has more than {MAX_IFRAME_SEGMENTS} segments")
    parts = []
    for index in range(media_set.plan(selection).count):
        found = muxer.key_frame_ranges(media_set.segment_tables(selection, index))
        if found is None:
            raise PackagerError(ErrorCode.NOT_FOUND, "iframe_playlist: the segments' layout needs their bytes")
        parts.append((np.full(len(found[0]), index), *found))
    segment, pts, start, size = (np.concatenate(column) for column in zip(*parts))
    end = float(media_set.plan(selection).durations().sum())
    return build_iframe_playlist(selection.spec, KeyFrames(segment, (pts - TS_PTS_OFFSET) / 90000, start, size, end))


def _hls_playlist(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
                  context: DeliveryContext) -> Product:
    media_set = opened.media_set
    if media_set.caption(parsed.file.spec) is not None:  # a caption file's playlist: WebVTT segments
        caption_source(opened, parsed.file.spec, context)
        build = text_product(packaging, build_subtitle_playlist, parsed.file.spec, media_set.plans[0].durations())
        return Product(("hls", "subs", parsed.file.spec.file), build, M3U8_TYPE, packaging.settings.manifest_max_age)
    container = choose_container(media_set, context.hls_container)
    selection = media_set.resolve(parsed.file.spec)
    extension = "ts" if container == "ts" else "m4s"
    key_uri = hls_names.KEY_NAME if context.hls_key is not None else None
    build = text_product(packaging, build_media_playlist, media_set, selection, extension, container, key_uri,
                         context.protection)
    return Product(("hls", "index", selection.spec.suffix(), container, *protection_key(context)), build, M3U8_TYPE,
                   packaging.settings.manifest_max_age)


def _hls_segment(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
                 context: DeliveryContext) -> Product:
    file, aes_key, protection = parsed.file, context.hls_key, context.protection
    if file.container == "vtt":
        return hls_caption_segment(parsed, opened, packaging, context)
    selection = opened.media_set.resolve(file.spec)
    cache_key = ("hls", "seg", file.index, selection.spec.suffix(), file.container, *protection_key(context))
    if protection is not None:  # SAMPLE-AES TS or Common Encryption fMP4 (never the scatter path: sizes change)
        want = "ts" if protection.scheme == "sample-aes" else "fmp4"
        if file.container != want:
            raise PackagerError(ErrorCode.NOT_FOUND, f"product_for: this media is served as {want} only")
        if want == "ts":
            mux, content_type = sample_aes_mux(protection, selection.tracks, file.index), TS_TYPE
        else:
            mux = fmp4_muxer(protection, opened, selection, file.index, shift=clip_shift(opened.media_set)).build
            content_type = _fmp4_type(selection)
        return _segment(packaging, opened, cache_key, selection, file.index, mux, content_type, inline=False)
    if file.container == "ts":
        ts_muxer = packaging.muxer(opened.media_set, selection, "ts", TsMuxer)
    scatter = None
    if file.container == "ts" and aes_key is not None:
        # IV = media sequence number: the playlist starts at EXT-X-MEDIA-SEQUENCE:1
        clear, encrypt = ts_muxer.build, partial(encrypt_segment, aes_key, file.index + 1)
        mux, content_type = (lambda segment: encrypt(clear(segment))), TS_TYPE
        scatter = Scatter(ts_muxer.prepare, encrypt)
    elif aes_key is not None:
        raise PackagerError(ErrorCode.NOT_FOUND, "product_for: encrypted HLS is served as MPEG-TS only")
    elif file.container == "ts":
        mux, content_type, scatter = ts_muxer.build, TS_TYPE, Scatter(ts_muxer.prepare)
    else:
        # presentation times exactly as in TS (minus TS_PTS_OFFSET): tfdt = dts, signed composition offsets
        # a clip's decode-only frames at times >= 0 for MSE players; the playlist's EXT-X-START names clipFrom
        mux = Fmp4Muxer(selection.tracks, shift=clip_shift(opened.media_set)).build
        content_type = _fmp4_type(selection)
    return _segment(packaging, opened, cache_key, selection, file.index, mux, content_type, scatter)


def _dash_manifest(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
                   context: DeliveryContext) -> Product:
    text, text_format = caption_renditions(opened.media_set, context), packaging.settings.dash_subtitle_format
    build = text_product(packaging, partial(dash.build_mpd, text=text, text_format=text_format,
                                            protection=context.protection), opened.media_set)
    return Product(("dash", "manifest", text, text_format, *protection_key(context)), build, dash.MPD_CONTENT_TYPE,
                   packaging.settings.manifest_max_age)


def _init(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
          context: DeliveryContext) -> Product:
    if parsed.protocol == "dash" and opened.media_set.caption(parsed.file.spec) is not None:
        return stpp_init(opened, packaging, context, parsed.file.spec)
    selection = opened.media_set.resolve(parsed.file.spec)
    # identical for HLS and DASH: one cache entry
    protection = context.protection
    build = partial(build_init_segment, selection.tracks) if protection is None else \
        init_segment(protection, selection.tracks)
    return Product(("init", selection.spec.suffix(), *protection_key(context)), build, _fmp4_type(selection),
                   packaging.settings.segment_max_age)


def _dash_fragment(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
                   context: DeliveryContext) -> Product:
    if opened.media_set.caption(parsed.file.spec) is not None:
        return stpp_fragment(opened, packaging, context, parsed.file.spec, parsed.file.index)
    selection = opened.media_set.resolve(parsed.file.spec)
    if len(selection.tracks) != 1:
        raise PackagerError(ErrorCode.BAD_REQUEST, "product_for: a DASH fragment carries one track (-vN or -aN)")
    # DASH timelines cannot be negative: AAC priming moves into presentationTimeOffset (declared in the MPD)
    index, protection = parsed.file.index, context.protection
    mux = (Fmp4Muxer(selection.tracks, non_negative=True) if protection is None else
           fmp4_muxer(protection, opened, selection, index, non_negative=True)).build
    cache_key = ("dash", "frag", parsed.file.index, selection.spec.suffix(), *protection_key(context))
    return _segment(packaging, opened, cache_key, selection, parsed.file.index, mux, _fmp4_type(selection),
                    inline=protection is None)


def _mss_manifest(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
                  context: DeliveryContext) -> Product:
    text = caption_renditions(opened.media_set, context)
    build = text_product(packaging, partial(build_smooth_manifest, text=text, protection=context.protection),
                         opened.media_set)
    return Product(("mss", "manifest", text, *protection_key(context)), build, MSS_MANIFEST_TYPE,
                   packaging.settings.manifest_max_age)


def _mss_fragment(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
                  context: DeliveryContext) -> Product:
    file = parsed.file
    if file.stream.startswith("text_"):
        return mss_text_fragment(parsed, opened, packaging, context)
    selection, index = locate_fragment(opened.media_set, file.stream, file.bitrate, file.start)
    # moof (with tfxd) + mdat, no styp: Smooth clients build the init segment from the manifest
    protection = context.protection
    mux = (Fmp4Muxer(selection.tracks, styp=False, tfxd=True) if protection is None else
           fmp4_muxer(protection, opened, selection, index, styp=False, tfxd=True)).build
    cache_key = ("mss", "frag", index, selection.spec.suffix(), *protection_key(context))
    return _segment(packaging, opened, cache_key, selection, index, mux, _fmp4_type(selection),
                    inline=protection is None)


def _hds_fragment(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
                  context: DeliveryContext) -> Product:
    selection = opened.media_set.resolve(parsed.file.spec)
    if sum(t.kind == "audio" for t in selection.tracks) > 1 or selection.track_files:
        raise PackagerError(ErrorCode.BAD_REQUEST, "product_for: an HDS fragment carries one audio track (FLV), of "
                            "the video's file")
    mux = fragment_muxer(opened.media_set, selection).build  # one timeline for every rendition of the set
    cache_key = ("hds", "frag", parsed.file.index, selection.spec.suffix())
    return _segment(packaging, opened, cache_key, selection, parsed.file.index, mux, FRAGMENT_CONTENT_TYPE)


BUILDERS: dict[tuple[str, str], Builder] = {
    ("hls", "key"): _hls_key,
    ("hls", "manifest"): _hls_master,
    ("hls", "playlist"): _hls_playlist,
    ("hls", "iframes"): _hls_iframes,
    ("hls", "segment"): _hls_segment,
    ("hls", "init"): _init,
    ("dash", "manifest"): _dash_manifest,
    ("dash", "text"): dash_text,
    ("dash", "init"): _init,
    ("dash", "segment"): _dash_fragment,
    ("mss", "manifest"): _mss_manifest,
    ("mss", "segment"): _mss_fragment,
    ("hds", "manifest"): _manifest("hds", build_f4m, MANIFEST_CONTENT_TYPE),
    ("hds", "segment"): _hds_fragment,
}


def product_for(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging, context: DeliveryContext) -> Product:
    builder = BUILDERS.get((parsed.protocol, parsed.file.kind))
    if builder is None:
        raise PackagerError(ErrorCode.UNSUPPORTED,
                            f"product_for: {parsed.protocol} {parsed.file.kind} is not served yet")
    return builder(parsed, opened, packaging, context)
