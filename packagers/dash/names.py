"""DASH file names, both ways: what the MPD's SegmentTemplate calls each file, and what a URL's file name says it is.

    manifest.mpd                     the MPD; manifest<selectors>.mpd lists fewer (``-f2``, ``-a1``, ``-lfra``)
    init<suffix>.mp4                 a Representation's initialization segment (<suffix>: its track, ``-f2-v1``)
    fragment-<n><suffix>.m4s         its media segment n, counted from 1 (``$Number$``, @startNumber 1)
    sub-f<m>.vtt                     caption file m of a url set as one WebVTT file (a text AdaptationSet's BaseURL)
"""
from __future__ import annotations

import re

from ..errors import bad_request
from ..naming import MediaFile, TrackSpec, parse_segment_number, segment_number
from ..selection import Listing

MANIFEST_NAME = "manifest.mpd"
NUMBER_TEMPLATE = "$Number$"  # ISO/IEC 23009-1 §5.3.9.4.4: the player puts the segment number here
# the suffix is whatever TrackSpec.parse accepts; it says why it refuses the rest
_MANIFEST = re.compile(r"manifest(-.*)\.mpd")
_INIT = re.compile(r"init(.*)\.mp4")
_FRAGMENT = re.compile(r"fragment-([0-9]+)(.*)\.m4s")
_TEXT = re.compile(r"sub(.*)\.vtt")


def init_segment_name(spec: TrackSpec) -> str:
    return f"init{spec.suffix()}.mp4"


def _fragment(number: str, spec: TrackSpec) -> str:
    return f"fragment-{number}{spec.suffix()}.m4s"


def fragment_name(index: int, spec: TrackSpec) -> str:
    """URL file name of 0-based segment ``index``."""
    return _fragment(segment_number(index), spec)


def media_template(spec: TrackSpec) -> str:
    """SegmentTemplate@media: ``fragment_name`` with the number left to the player."""
    return _fragment(NUMBER_TEMPLATE, spec)


def text_name(spec: TrackSpec) -> str:
    return f"sub{spec.suffix()}.vtt"


def parse_name(name: str) -> MediaFile:
    """What a DASH file name names; BAD_REQUEST for any other name."""
    if name == MANIFEST_NAME:
        return MediaFile("manifest")
    if m := _MANIFEST.fullmatch(name):
        return MediaFile("manifest", listing=Listing.parse(m.group(1)))
    if m := _INIT.fullmatch(name):
        return MediaFile("init", TrackSpec.parse(m.group(1)))
    if m := _FRAGMENT.fullmatch(name):
        return MediaFile("segment", TrackSpec.parse(m.group(2)), parse_segment_number(m.group(1)))
    if m := _TEXT.fullmatch(name):
        return MediaFile("text", TrackSpec.parse(m.group(1)))
    raise bad_request("parse_dash: unknown DASH file name (manifest.mpd, init<tracks>.mp4, fragment-<n><tracks>.m4s)")
