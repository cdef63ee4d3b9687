"""``/s/<entry>/<token>/clearkey``: the W3C ClearKey license of an entry whose keys the gateway derives.

A browser's ClearKey CDM POSTs ``{"kids": [<base64url key id>...], "type": "temporary"}`` (W3C EME §9.1.3) and gets
``{"keys": [{"kty": "oct", "kid": ..., "k": ...}], "type": "temporary"}`` for the key ids it asked that protect the
entry. GET answers every key of the entry (players configured with keys up front). The token (from playManifest,
``gateway urls``) signs ``clearkey:<entry>`` with the partner secret and an expiry; partners whose keys come from a
DRM info service license them through their own DRM servers, not here.
"""
from __future__ import annotations

import base64
import binascii
import json
import time

from aiohttp import web

from delivery_profiles.tokens import TokenError, verify_path
from packagers.errors import bad_request, not_found

from ..catalog.access import AccessDenied, catalog_view, partner_config
from ..catalog.delivery import license_prefix
from ..catalog.drm import derived_keys
from ..origin.packaging import PACKAGING
from .urls import ClearKeyLicense

MAX_LICENSE_REQUEST = 16 * 1024  # a license request names a few key ids


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _key_ids(body: bytes) -> list[bytes]:
    try:
        request = json.loads(body)
        kids = request["kids"]
        if not isinstance(kids, list) or not all(isinstance(k, str) for k in kids) or len(kids) > 64:
            raise ValueError
        return [base64.urlsafe_b64decode(k + "=" * (-len(k) % 4)) for k in kids]
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        raise bad_request('serve_clearkey: expected {"kids": [<base64url key id>, ...]} (W3C ClearKey)') from None


async def serve_clearkey(request: web.Request, lic: ClearKeyLicense) -> web.Response:
    packaging = request.app[PACKAGING]
    view = await catalog_view(request.app, packaging.run)
    entry = view.by_entry.get(lic.entry_id)
    if entry is None:
        raise AccessDenied(f"serve_clearkey: unknown entry {lic.entry_id}")
    partner = view.partner(entry.partner_id)
    try:
        verify_path(partner.secret, license_prefix(entry.id), lic.token, time.time())
    except TokenError as e:
        raise AccessDenied(f"serve_clearkey: {e}") from None
    if partner_config(partner).drm.service_url:
        raise not_found(f"serve_clearkey: partner {partner.id} gets its keys from its DRM service: its players ask "
                        "its DRM license servers")
    keys = derived_keys(partner.secret, entry.id)
    wanted = None
    if request.method == "POST":
        if (request.content_length or 0) > MAX_LICENSE_REQUEST:
            raise bad_request(f"serve_clearkey: a license request is at most {MAX_LICENSE_REQUEST} bytes")
        wanted = _key_ids(await request.content.read(MAX_LICENSE_REQUEST + 1))
    found = [k for k in keys.keys if wanted is None or k.key_id in wanted]
    if not found:
        raise not_found(f"serve_clearkey: none of the key ids asked protects entry {entry.id}")
    body = {"keys": [{"kty": "oct", "kid": b64url(k.key_id), "k": b64url(k.key)} for k in found], "type": "temporary"}
    return web.json_response(body, headers={"Cache-Control": "no-store"})
