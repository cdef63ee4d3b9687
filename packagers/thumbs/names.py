"""Thumbnail file names, both ways (nginx-vod-module README, "Filename structure"):

    thumb-<offset>[-w<W>][-h<H>][<tracks>].jpg    the video frame presented at <offset> ms, optionally resized
    thumb-now[-w<W>][-h<H>][<tracks>].jpg         live only: the newest frame (our extension, offset None)

``<tracks>`` is the usual ``-f2-v1`` suffix (``packagers.naming.TrackSpec``). Numbers are canonical (no leading
zeros), so that one picture has one URL and one cache key.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import bad_request
from ..naming import MAX_SEGMENT_DIGITS, TrackSpec

MAX_OFFSET_DIGITS = MAX_SEGMENT_DIGITS  # ~115 days in ms: beyond any file, and bounded before int()
MAX_DIMENSION = 4096  # pixels; a larger JPEG is a memory cost, not a thumbnail
LIVE_OFFSET = "now"
# the suffix is whatever TrackSpec.parse accepts; it says why it refuses the rest
_THUMB = re.compile(r"thumb-([0-9]+|now)(?:-w([0-9]+))?(?:-h([0-9]+))?(.*)\.jpg")


@dataclass(frozen=True)
class ThumbFile:
    offset_ms: int | None  # None: thumb-now (live, newest frame)
    width: int | None = None
    height: int | None = None
    spec: TrackSpec = TrackSpec()


def thumb_name(offset_ms: int | None, width: int | None = None, height: int | None = None,
               spec: TrackSpec = TrackSpec()) -> str:
    offset = LIVE_OFFSET if offset_ms is None else str(offset_ms)
    resize = (f"-w{width}" if width is not None else "") + (f"-h{height}" if height is not None else "")
    return f"thumb-{offset}{resize}{spec.suffix()}.jpg"


def _canonical(digits: str, what: str, max_digits: int) -> int:
    if len(digits) > 1 and digits.startswith("0"):
        raise bad_request(f"parse_thumb_name: {what} has leading zeros in '{digits}'")
    if len(digits) > max_digits:
        raise bad_request(f"parse_thumb_name: {what} longer than {max_digits} digits")
    return int(digits)


def _dimension(digits: str | None, what: str) -> int | None:
    if digits is None:
        return None
    value = _canonical(digits, what, len(str(MAX_DIMENSION)))
    if not 1 <= value <= MAX_DIMENSION:
        raise bad_request(f"parse_thumb_name: {what} {value} outside 1..{MAX_DIMENSION}")
    return value


def parse_thumb_name(name: str) -> ThumbFile:
    """What a thumbnail file name asks for; BAD_REQUEST for any other name."""
    m = _THUMB.fullmatch(name)
    if m is None:
        raise bad_request("parse_thumb_name: unknown thumbnail name (thumb-<ms>[-w<W>][-h<H>][<tracks>].jpg)")
    offset, width, height, suffix = m.groups()
    offset_ms = None if offset == LIVE_OFFSET else _canonical(offset, "offset", MAX_OFFSET_DIGITS)
    return ThumbFile(offset_ms, _dimension(width, "width"), _dimension(height, "height"), TrackSpec.parse(suffix))
