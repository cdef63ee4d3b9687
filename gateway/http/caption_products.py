"""What caption files of a url set produce (issue 13 part 4): their renditions in manifests, HLS WebVTT segments,
DASH WebVTT files and TTML-in-fMP4 (stpp) segments, all over the media segments' windows.

A caption file is parsed only when one of its own files is asked for (``caption_track``), so a broken one fails
those requests alone; manifests list caption files from their names. The windows are the first media file's plan,
in milliseconds; ``MediaSet.caption_offset_ms`` moves the cues of a clip.
"""
from __future__ import annotations

import re
from functools import partial

import numpy as np

from packagers.captions import MAX_BYTES as MAX_CAPTION_BYTES
from packagers.captions import (CaptionTrack, build_stpp_fragment, build_stpp_init, build_ttml, build_webvtt_file,
                                build_webvtt_segment, parse_captions)
from packagers.captions.files import CaptionRendition, CaptionSource
from packagers.errors import bad_data, not_found
from packagers.hls.playlists import choose_container, clip_shift, language_name, language_tag
from packagers.media_set import MediaSet
from packagers.mss.manifest import MANIFEST_TIMESCALE, TEXT_BITRATE, text_chunks
from packagers.naming import TrackSpec
from packagers.selection import language_code
from packagers.ts import TS_PTS_OFFSET

from ..catalog.access import AccessDenied, DeliveryContext
from ..origin.packaging import OpenedSet, Packaging
from ..origin.store import Store
from .product import Product
from .urls import PackagedRequest

VTT_TYPE = "text/vtt"
# parsed caption files up to this size stay with their media set (a two-hour film's are ~150 KB, ~1 MB parsed):
# the media set cache weighs what it holds when it stores it, not what is derived later, so what it can pin this way
# stays small; bigger files are parsed per request (their outputs are cached like any other)
KEEP_CAPTION_BYTES = 256 << 10
TICKS_PER_MS = MANIFEST_TIMESCALE // 1000


def caption_renditions(media_set: MediaSet, context: DeliveryContext) -> tuple[CaptionRendition, ...]:
    """The media set's caption files as manifests list them (none when a partner turned captions off); the
    catalog's language for a file wins over the one its name gives."""
    if not context.captions:
        return ()
    languages = media_set.narrowing.listing.languages  # master-leng.m3u8 lists English captions only
    out = []
    for k, source in enumerate(media_set.captions):
        code = caption_language(source, context)
        if languages is not None and language_code(code) not in languages:
            continue
        name = language_name(code) if code != "und" else f"Subtitles {k + 1}"
        out.append(CaptionRendition(TrackSpec(source.number), language_tag(code) if code != "und" else "", name,
                                    default=not out))
    return tuple(out)

def caption_language(source: CaptionSource, context: DeliveryContext) -> str:
    return context.caption_languages.get(source.source, source.language)

def caption_source(opened: OpenedSet, spec: TrackSpec, context: DeliveryContext) -> CaptionSource:
    if not context.captions:
        raise AccessDenied("product_for: captions are disabled for the partner of this media")
    source = opened.media_set.caption(spec)
    if source is None:
        raise not_found(f"product_for: '{spec.suffix()}' names no caption file of this url set")
    return source


def caption_track(store: Store, opened: OpenedSet, source: CaptionSource) -> CaptionTrack:
    """The parsed caption file (kept with the media set when small). Blocking. A broken file is BAD_DATA for the
    caption requests only: manifests list caption files without reading them."""
    file = opened.caption_files[source.number]

    def parse() -> CaptionTrack:
        if file.size > MAX_CAPTION_BYTES:
            raise bad_data(f"caption_track: {source.source} has {file.size} bytes, more than {MAX_CAPTION_BYTES}")
        with store.open(file) as reader:
            return parse_captions(reader.pread(0, file.size), source.source)

    if file.size > KEEP_CAPTION_BYTES:
        return parse()
    return opened.media_set.derived(("caption", source.number), parse)


def hls_caption_segment(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
                         context: DeliveryContext) -> Product:
    """WebVTT segment n of a caption file: the cues of media segment n's window, mapped onto the media's timeline
    (X-TIMESTAMP-MAP: MPEG-TS time TS_PTS_OFFSET, fMP4 time 0, is presentation time 0)."""
    source, index, media_set = caption_source(opened, parsed.file.spec, context), parsed.file.index, opened.media_set
    plan = media_set.plans[0]
    plan.check_index(index)
    start, end = (int(plan.boundaries[i]) * 1000 // plan.timescale for i in (index, index + 1))
    # where media presentation time 0 is: TS_PTS_OFFSET in MPEG-TS; in fMP4, 0, moved by a clip's shift
    ts = choose_container(media_set, context.hls_container) == "ts"
    mpegts = TS_PTS_OFFSET if ts else round(clip_shift(media_set) * 90000)

    def build() -> bytes:
        track = caption_track(packaging.store, opened, source)
        return build_webvtt_segment(track, start, end, media_set.caption_offset_ms, mpegts).encode()

    return Product(("hls", "vtt", index, source.number, mpegts), build, VTT_TYPE, packaging.settings.segment_max_age)

def stpp_init(opened: OpenedSet, packaging: Packaging, context: DeliveryContext, spec: TrackSpec) -> Product:
    source = caption_source(opened, spec, context)
    language = caption_language(source, context)
    return Product(("dash", "stpp-init", source.number, language), partial(build_stpp_init, language),
                   "application/mp4", packaging.settings.segment_max_age)


def stpp_fragment(opened: OpenedSet, packaging: Packaging, context: DeliveryContext, spec: TrackSpec,
                   index: int) -> Product:
    """Fragment n of a caption file as TTML in fMP4 (DASH smpte-tt): the cues of media segment n's window."""
    source, media_set = caption_source(opened, spec, context), opened.media_set
    plan = media_set.plans[0]
    plan.check_index(index)
    start, end = (int(plan.boundaries[i]) * 1000 // plan.timescale for i in (index, index + 1))
    language = language_tag(caption_language(source, context))

    def build() -> bytes:
        track = caption_track(packaging.store, opened, source)
        ttml = build_ttml(track, start, end, media_set.caption_offset_ms, language)
        return build_stpp_fragment(index + 1, start, end - start, ttml)

    return Product(("dash", "stpp", index, source.number, language), build, "application/mp4",
                   packaging.settings.segment_max_age)

def dash_text(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
               context: DeliveryContext) -> Product:
    """A caption file as one WebVTT file (the text AdaptationSet's BaseURL), cut to the media set's duration."""
    source, media_set = caption_source(opened, parsed.file.spec, context), opened.media_set
    duration_ms = int(max(p.duration_seconds for p in media_set.presentations) * 1000)

    def build() -> bytes:
        track = caption_track(packaging.store, opened, source)
        return build_webvtt_file(track, media_set.caption_offset_ms, duration_ms).encode()

    return Product(("dash", "text", source.number), build, VTT_TYPE, packaging.settings.segment_max_age)


def mss_text_fragment(parsed: PackagedRequest, opened: OpenedSet, packaging: Packaging,
                      context: DeliveryContext) -> Product:
    """``QualityLevels(1000)/Fragments(text_fN=<t>)``: the cues of media segment n's window as TTML in a Smooth
    fragment (tfxd, no styp), times relative to the fragment's start as Smooth clients read them."""
    file, media_set = parsed.file, opened.media_set
    number = re.fullmatch(r"text_f([0-9]{1,3})", file.stream)
    source = caption_source(opened, TrackSpec(int(number.group(1))), context) if number else None
    bounds = text_chunks(media_set)
    index = int(np.searchsorted(bounds[:-1], file.start))
    if source is None or file.bitrate != TEXT_BITRATE or index >= len(bounds) - 1 or bounds[index] != file.start:
        raise not_found(f"mss_text_fragment: no {file.stream} fragment of bitrate {file.bitrate} at {file.start}")
    start, end = int(bounds[index]) // TICKS_PER_MS, int(bounds[index + 1]) // TICKS_PER_MS
    language = language_tag(caption_language(source, context))

    def build() -> bytes:
        track = caption_track(packaging.store, opened, source)
        ttml = build_ttml(track, 0, end - start, media_set.caption_offset_ms + start, language)
        return build_stpp_fragment(index + 1, start, end - start, ttml, MANIFEST_TIMESCALE, tfxd=True, styp=False)

    return Product(("mss", "text", index, source.number, language), build, "application/mp4",
                   packaging.settings.segment_max_age)
