"""HDS file names, both ways: what the F4M tells a player to request, and what a URL's file name says it is.

    manifest.f4m                     the F4M manifest; manifest<selectors>.f4m lists fewer (``-a1``, ``-f1-v2``)
    frag<suffix>-Seg1-Frag<n>        fragment n (counted from 1) of the rendition <suffix> (``-v1-a1``)

The F4M's ``<media url>`` is ``frag<suffix>-``: the player appends ``Seg<segment>-Frag<n>`` (nginx-vod-module's
hds_fragment_file_name_prefix is ``frag``). Every fragment lives in segment 1: the bootstrap has one segment run.
"""
from __future__ import annotations

import re

from ..errors import bad_request
from ..naming import MediaFile, TrackSpec, parse_segment_number, segment_number
from ..selection import Listing

MANIFEST_NAME = "manifest.f4m"
FRAGMENT_PREFIX = "frag"
SEGMENT_NUMBER = 1  # every fragment lives in segment 1 (one segment run, see ``bootstrap``)
# the suffix is whatever TrackSpec.parse accepts; it says why it refuses the rest
_MANIFEST = re.compile(r"manifest(-.*)\.f4m")
_FRAGMENT = re.compile(rf"{FRAGMENT_PREFIX}(.*)-Seg{SEGMENT_NUMBER}-Frag([0-9]+)")


def fragment_url(spec: TrackSpec) -> str:
    """The ``<media url>`` of a rendition: ``frag-v1-a1-`` (a player requests it + ``Seg1-Frag<n>``)."""
    return f"{FRAGMENT_PREFIX}{spec.suffix()}-"


def fragment_name(index: int, spec: TrackSpec) -> str:
    """URL file name of 0-based fragment ``index``: ``frag-f2-v1-a1-Seg1-Frag3`` for index 2."""
    return f"{fragment_url(spec)}Seg{SEGMENT_NUMBER}-Frag{segment_number(index)}"


def parse_name(name: str) -> MediaFile:
    """What an HDS file name names; BAD_REQUEST for any other name (a segment other than 1 included). Whether the
    fragment exists is for the plan to say (NOT_FOUND past the end)."""
    if name == MANIFEST_NAME:
        return MediaFile("manifest")
    if m := _MANIFEST.fullmatch(name):
        return MediaFile("manifest", listing=Listing.parse(m.group(1)))
    if m := _FRAGMENT.fullmatch(name):
        return MediaFile("segment", TrackSpec.parse(m.group(1)), parse_segment_number(m.group(2)))
    raise bad_request("parse_hds: unknown HDS file name (manifest.f4m or frag<tracks>-Seg1-Frag<n>)")
