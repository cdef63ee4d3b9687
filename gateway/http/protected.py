"""Encrypted products (issue 14): which muxer builds a protected segment, the init segment's protection, and the
keys an HLS player may fetch (identity key format). ``products`` asks here whenever the request's delivery context
carries a ``Protection`` (the partner's profile says sample-aes, cenc or cbcs and the keys were found).

A segment of the clear lead is built clear: in fMP4 it names the clear sample entry the protected init segment keeps
second (tfhd sample_description_index 2), in MPEG-TS it is plain TS (the playlist's EXT-X-KEY comes after it).
"""
from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from typing import Callable

from packagers.drm.cenc import TrackProtection
from packagers.drm.sample_aes import SampleAesMuxer
from packagers.drm.signaling import Protection, sample_aes_iv
from packagers.hls.keys import session_key_lines
from packagers.errors import not_found
from packagers.fmp4 import Fmp4Muxer, build_init_segment
from packagers.media_set import MediaSet, Selection
from packagers.model import Track
from packagers.ts import TsMuxer

from ..catalog.access import DeliveryContext
from ..catalog.drm import KeySource
from ..origin.packaging import OpenedSet


async def protect(source: KeySource, context: DeliveryContext, media_set: MediaSet) -> DeliveryContext:
    """The context with its ``Protection``: the entry's keys from the partner's DRM service (or derived from its
    secret), the clear lead and the HLS key format of its DRM settings.

    SAMPLE-AES MPEG-TS is defined for H.264 only: a set with HEVC video gets Apple's other SAMPLE-AES, 'cbcs' in
    fMP4 (the same keys, and METHOD=SAMPLE-AES in its playlists)."""
    drm, scheme, container = context.drm, context.encryption, context.hls_container
    if scheme == "sample-aes" and any(t.codec.codec == "hevc" for p in media_set.presentations for t in p.video_tracks):
        scheme, container = "cbcs", "fmp4"
    keys = await source.keys(context.partner, context.entry, drm)
    protection = Protection(scheme, keys, drm.clear_lead_segments, drm.hls_key_format, clearkey=not drm.service_url)
    return replace(context, protection=protection, hls_container=container)


def protection_key(context: DeliveryContext) -> tuple:
    """The cache-key part of encryption: products encrypted differently (or not at all) never share an entry."""
    if context.protection is not None:
        return ("drm", *context.protection.cache_key)
    return ("aes-128", context.entry.id) if context.hls_key is not None else ()


def track_protection(protection: Protection, tracks: tuple[Track, ...]) -> list[TrackProtection]:
    scheme = protection.scheme
    return [TrackProtection.of(t, scheme, protection.keys.for_kind(t.kind)) for t in tracks]


def streams(opened: OpenedSet, selection: Selection) -> list[bytes]:
    """What names each track's source for its IVs: the file (as stored) and the track id."""
    files = selection.track_files or (selection.file_index,) * len(selection.tracks)
    return [f"{opened.files[f].store_path}#{t.track_id}".encode() for f, t in zip(files, selection.tracks)]


def fmp4_muxer(protection: Protection, opened: OpenedSet, selection: Selection, index: int, *,
               styp: bool = True, tfxd: bool = False, non_negative: bool = False,
               shift: Fraction = Fraction(0)) -> Fmp4Muxer:
    """The muxer of fMP4 segment ``index`` of a protected set: encrypting, or clear (sample entry 2) in the lead."""
    options = dict(styp=styp, tfxd=tfxd, non_negative=non_negative, shift=shift)
    if not protection.encrypted(index):
        return Fmp4Muxer(selection.tracks, description_index=2, **options)
    return Fmp4Muxer(selection.tracks, protection=track_protection(protection, selection.tracks),
                     streams=streams(opened, selection), **options)


def init_segment(protection: Protection, tracks: tuple[Track, ...]) -> Callable[[], bytes]:
    return lambda: build_init_segment(tracks, track_protection(protection, tracks), protection.keys,
                                      clear_entry=protection.clear_lead > 0)


def sample_aes_mux(protection: Protection, tracks: tuple[Track, ...], index: int) -> Callable:
    """MPEG-TS SAMPLE-AES: the samples encrypted first, then a TS muxer that announces encrypted streams."""
    if not protection.encrypted(index):
        return TsMuxer(tracks).build
    key = protection.segment_key({t.kind for t in tracks})
    return SampleAesMuxer(tracks, key.key, sample_aes_iv(key)).build


def identity_key(context: DeliveryContext, key_id: str) -> bytes:
    """The key an HLS playlist names by ``key-<key id>.key`` (identity key format only: a FairPlay set's keys go
    through the player's key server, never through here)."""
    protection = context.protection
    if protection is None or protection.key_format != "identity":
        raise not_found("identity_key: this media has no identity key")
    key = protection.keys.by_key_id(bytes.fromhex(key_id))
    if key is None:
        raise not_found(f"identity_key: no key {key_id} protects this media")
    return key.key


def with_session_keys(master: str, protection: Protection | None) -> str:
    """A master playlist with EXT-X-SESSION-KEY lines after its header (§4.3.4.5)."""
    if protection is None:
        return master
    lines = master.split("\n")
    at = next((i for i, line in enumerate(lines) if line.startswith("#EXT-X-INDEPENDENT-SEGMENTS")), 1) + 1
    return "\n".join(lines[:at] + session_key_lines(protection) + lines[at:])
