"""Who may fetch a media URL, and with which partner's delivery settings.

Every media request (manifest, segment, key, MP4) is checked against the shared catalog: a file that belongs to a
secured entry is served only under ``/s/<entry>/<token>/`` with a token that the entry's partner signed over the
media target and an expiry; anything else gets 403 with the reason and no media byte. A file of a catalog entry is
packaged with its partner's delivery profile (segment duration, HLS container, AES-128); other store files with the
server's settings. If any entry owning a file is secured, the file is secured: a public entry cannot open a hole.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from delivery_profiles import SYSTEM_DEFAULTS, DeliveryConfig, merge
from delivery_profiles.tokens import TokenError, verify_path

from aiohttp import web

from .catalog import Catalog, CatalogView, Entry, Partner
from .delivery import hls_key
from .settings import Settings
from .urls import (DashFragment, DashManifest, HdsFragment, HdsManifest, MediaRequest, Mp4Download, MssFragment,
                   MssManifest, Signed, media_target_name)


CATALOG = web.AppKey("catalog", Catalog)


async def catalog_view(app: web.Application, run) -> CatalogView:
    """The catalog as of now: from memory while fresh (no thread hop on the hot path), else refreshed in ``run``
    (the executor), since a refresh stats the shared store."""
    catalog = app[CATALOG]
    return catalog.view() if not catalog.due() else await run(catalog.view)


class AccessDenied(Exception):
    """403: the message says why (one line), never anything about the media."""


@dataclass(frozen=True)
class DeliveryContext:
    """How this request's media is packaged: the server's settings, or those of the owning entry's partner."""

    segment_duration_ms: int
    hls_container: str
    entry: Entry | None = None
    partner: Partner | None = None
    hls_key: bytes | None = None  # AES-128 key when the entry's HLS segments are encrypted


def _protocol(request: MediaRequest) -> str:
    if isinstance(request, Mp4Download):
        return "http"
    if isinstance(request, (DashManifest, DashFragment)):
        return "dash"
    if isinstance(request, (MssManifest, MssFragment)):
        return "mss"
    if isinstance(request, (HdsManifest, HdsFragment)):
        return "hds"
    return "hls"


def _paths(request: MediaRequest) -> tuple[str, ...]:
    return (request.path,) if isinstance(request, Mp4Download) else request.target.paths


def partner_config(partner: Partner) -> DeliveryConfig:
    return merge(SYSTEM_DEFAULTS, partner.delivery)


def authorize(view: CatalogView, settings: Settings, request: MediaRequest, signed: Signed | None,
              real_paths: tuple[str, ...] = (), now: float | None = None) -> DeliveryContext:
    """The delivery context of an allowed request; AccessDenied otherwise.

    ``real_paths`` are the files' store-relative realpaths: a symlink in the store must not reach a secured file
    under another name, so ownership is looked up under both names."""
    now = time.time() if now is None else now
    names = tuple(zip(_paths(request), real_paths or _paths(request)))

    def owners_of(path: str, real: str) -> dict[str, Entry]:
        return {e.id: e for name in {path, real} for e in view.entries_for_path(name)}

    owners = {k: e for path, real in names for k, e in owners_of(path, real).items()}
    secured = [e for e in owners.values() if e.secured]
    entry: Entry | None = None
    if signed is not None:
        entry = view.by_entry.get(signed.entry_id)
        if entry is None:
            raise AccessDenied(f"authorize: signed URL names unknown entry {signed.entry_id}")
        missing = [path for path, real in names if entry.id not in owners_of(path, real)]
        if missing:
            raise AccessDenied(f"authorize: entry {entry.id} does not contain {missing[0]}")
        partner = view.partner(entry.partner_id)
        try:
            verify_path(partner.secret, media_target_name(request), signed.token, now)
        except TokenError as e:
            raise AccessDenied(f"authorize: {e}") from None
    elif secured:
        raise AccessDenied(f"authorize: {media_target_name(request)} belongs to secured entry {secured[0].id}: "
                           "use the signed URL that playManifest issues")
    else:
        entry = next(iter(owners.values()), None)
    if entry is None:
        return DeliveryContext(settings.segment_duration_ms, settings.hls_container)
    partner = view.partner(entry.partner_id)
    profile = partner_config(partner).profile(_protocol(request))
    key = None
    if entry.secured and signed is not None and profile.encryption == "aes-128":
        key = hls_key(partner.secret, entry.id)
    # AES-128 whole-segment encryption is applied to MPEG-TS only (an encrypted EXT-X-MAP would need explicit IVs)
    container = "ts" if key is not None else profile.hls_container
    return DeliveryContext(profile.segment_duration_ms, container, entry, partner, key)
