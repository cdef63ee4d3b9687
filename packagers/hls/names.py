"""HLS file names (nginx-vod-module's), both ways: what the playlist writers call each file, and what a URL's file
name says it is.

    master.m3u8                      every rendition (master playlist); master<selectors>.m3u8 lists fewer
                                     (``-f1``, ``-v1-a2``, ``-a0``, ``-leng``: packagers.selection.Listing)
    index<suffix>.m3u8               one media playlist; <suffix> is the track selection (``-v1-a1``)
    seg-<n><suffix>.ts               segment n, counted from 1, MPEG-TS
    seg-<n><suffix>.m4s              the same segment as fMP4 (RFC 8216 §3.3)
    seg-<n>-f<m>.vtt                 WebVTT segment n of caption file m of a url set (§3.5)
    init<suffix>.mp4                 the fMP4 init segment of a media playlist (EXT-X-MAP)
    iframes<suffix>.m3u8             the I-frame playlist of a TS variant (byte ranges of its segments)
    encryption.key                   the AES-128 key of an encrypted entry's segments
    key-<key id>.key                 a SAMPLE-AES / cbcs / cenc key (identity key format), by its key id in hex
"""
from __future__ import annotations

import re

from ..errors import bad_request
from ..naming import MediaFile, TrackSpec, parse_segment_number, segment_number
from ..selection import Listing

MASTER_PLAYLIST_NAME = "master.m3u8"
KEY_NAME = "encryption.key"
# the suffix is whatever TrackSpec.parse accepts; it says why it refuses the rest
_MASTER = re.compile(r"master(-.*)\.m3u8")
_MEDIA_PLAYLIST = re.compile(r"index(.*)\.m3u8")
_IFRAME_PLAYLIST = re.compile(r"iframes(.*)\.m3u8")
_SEGMENT = re.compile(r"seg-([0-9]+)(.*)\.(ts|m4s|vtt)")
_INIT = re.compile(r"init(.*)\.mp4")
_DRM_KEY = re.compile(r"key-([0-9a-f]{32})\.key")
_CONTAINER_OF_EXTENSION = {"ts": "ts", "m4s": "fmp4", "vtt": "vtt"}


def media_playlist_name(spec: TrackSpec) -> str:
    return f"index{spec.suffix()}.m3u8"


def iframe_playlist_name(spec: TrackSpec) -> str:
    return f"iframes{spec.suffix()}.m3u8"


def segment_name(index: int, spec: TrackSpec, extension: str = "ts") -> str:
    """URL file name of 0-based segment ``index`` (extension ts or m4s)."""
    return f"seg-{segment_number(index)}{spec.suffix()}.{extension}"


def init_segment_name(spec: TrackSpec) -> str:
    """URL file name of the fMP4 init segment of a media playlist (EXT-X-MAP)."""
    return f"init{spec.suffix()}.mp4"


def key_name(key_id: bytes) -> str:
    """URL file name of a DRM key (identity key format) by its key id: video and audio may have different keys."""
    return f"key-{key_id.hex()}.key"


def parse_name(name: str) -> MediaFile:
    """What an HLS file name names; BAD_REQUEST for any other name."""
    if name == MASTER_PLAYLIST_NAME:
        return MediaFile("manifest")
    if m := _MASTER.fullmatch(name):
        return MediaFile("manifest", listing=Listing.parse(m.group(1)))
    if name == KEY_NAME:
        return MediaFile("key")
    if m := _DRM_KEY.fullmatch(name):
        return MediaFile("key", key_id=m.group(1))
    if m := _MEDIA_PLAYLIST.fullmatch(name):
        return MediaFile("playlist", TrackSpec.parse(m.group(1)))
    if m := _IFRAME_PLAYLIST.fullmatch(name):
        return MediaFile("iframes", TrackSpec.parse(m.group(1)))
    if m := _SEGMENT.fullmatch(name):
        return MediaFile("segment", TrackSpec.parse(m.group(2)), parse_segment_number(m.group(1)),
                         _CONTAINER_OF_EXTENSION[m.group(3)])
    if m := _INIT.fullmatch(name):
        return MediaFile("init", TrackSpec.parse(m.group(1)))
    raise bad_request(
        "parse_hls: unknown HLS file name (master.m3u8, index<tracks>.m3u8, iframes<tracks>.m3u8, "
        "seg-<n><tracks>.ts|.m4s, init<tracks>.mp4, encryption.key, key-<key id>.key)"
    )
