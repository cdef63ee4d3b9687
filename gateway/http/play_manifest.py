"""``/p/<partner>/playManifest/...``: the platform decides how an entry is delivered (Kaltura's API).

The decision follows ``delivery_profiles.select_delivery`` over the partner's profiles (system defaults ⊕ the
partner's override, read from the shared catalog on every call, so an edit on disk changes the next decision of every
node). The answer is a 302 to the delivery URL (the url set manifest of the entry's flavors, or the MP4 for ``http``),
or with ``?responseFormat=json`` the decision itself. Secured entries need a valid ``ks`` and get signed URLs.
``/clipFrom/<ms>/clipTo/<ms>`` (either alone) make it a clip's URL (the delivery decision stays the entry's).
"""
from __future__ import annotations

import time

from aiohttp import web

from delivery_profiles import KALTURA_FORMAT, select_delivery
from delivery_profiles.tokens import verify_ks
from packagers.errors import bad_request

from ..catalog.access import DRM_SCHEMES, AccessDenied, catalog_view, partner_config
from ..catalog.catalog import Entry, Partner
from ..catalog.delivery import license_url, media_url, signed
from ..origin.packaging import PACKAGING
from ..origin.paths import MediaTarget
from .urls import PlayManifest

DECISION_CACHE_CONTROL = "no-store"  # depends on the user agent, the catalog of the moment and expiring tokens


def _flavors(entry: Entry, wanted: tuple[str, ...]):
    """The media flavors asked for (all by default); caption files are not flavors one picks."""
    if not wanted:
        return entry.media_flavors
    by_id = {f.id: f for f in entry.media_flavors}
    unknown = [f for f in wanted if f not in by_id]
    if unknown:
        from packagers.errors import not_found

        raise not_found(f"play_manifest: entry {entry.id} has no flavor {unknown[0]}")
    return tuple(by_id[f] for f in wanted)


def drm_info(partner: Partner, entry: Entry, delivery_type: str, expires: int) -> dict:
    """``{"drm": {...}}`` when the delivery is DRM-protected: the scheme, where keys come from and, for keys the
    gateway derives, the ClearKey license URL a player's EME setup needs (Kaltura players get it the same way)."""
    config = partner_config(partner)
    encryption = config.profile(delivery_type).encryption
    if encryption not in DRM_SCHEMES:
        return {}
    info = {"scheme": encryption, "keySource": "service" if config.drm.service_url else "derived"}
    if not config.drm.service_url:
        info["licenseUrl"] = license_url(entry.id, partner.secret, expires)
    return {"drm": info}


async def serve_play_manifest(request: web.Request, pm: PlayManifest) -> web.Response:
    packaging = request.app[PACKAGING]
    view = await catalog_view(request.app, packaging.run)
    partner = view.partner(pm.partner_id)
    entry = view.entry(pm.entry_id, pm.partner_id)
    now = time.time()
    if entry.secured:
        if not pm.ks:
            raise AccessDenied(f"play_manifest: entry {entry.id} is secured: a ks is required")
        verify_ks(partner.secret, pm.ks, partner.id, now, entry.id)
    flavors = _flavors(entry, pm.flavor_ids)
    paths = [f.path for f in flavors]
    opened = await packaging.open(MediaTarget(tuple(paths), len(paths) > 1))
    captions = [f.path for f in entry.flavors if f.is_caption]
    duration = max(p.duration_seconds for p in opened.media_set.presentations)
    decision = select_delivery(partner_config(partner), duration_seconds=duration, secured=entry.secured,
                               requested_format=pm.format or None, user_agent=request.headers.get("User-Agent"))
    if not pm.clip.is_whole and not partner_config(partner).allows("clipping"):
        raise AccessDenied(f"play_manifest: clipping is disabled for partner {partner.id}")
    if pm.clip.from_ms >= duration * 1000:
        raise bad_request(f"play_manifest: clipFrom {pm.clip.from_ms} ms is at or past the end of entry {entry.id} "
                          f"({duration:.3f} s)")
    target, url = media_url(decision.type, paths + captions, pm.clip)
    expires = None
    if view.needs_signing(entry):  # secured, or a file in common with a secured entry (which wins)
        expires = int(now) + packaging.settings.signed_url_ttl
        url = signed(url, entry.id, target, partner.secret, expires)
    if request.query.get("responseFormat") == "json":
        body = {
            "entryId": entry.id, "partnerId": partner.id, "deliveryType": decision.type,
            "format": KALTURA_FORMAT[decision.type], "url": url, "reason": decision.reason,
            "preference": list(decision.preference), "secured": entry.secured, "expires": expires,
            "duration": round(duration, 3),
            "flavors": [
                {"id": f.id, "path": f.path, "bitrate": max((t.average_bitrate for t in p.tracks), default=0),
                 "width": max((t.codec.width for t in p.video_tracks), default=0),
                 "height": max((t.codec.height for t in p.video_tracks), default=0)}
                for f, p in zip(flavors, opened.media_set.presentations)
            ],
            **drm_info(partner, entry, decision.type, int(now) + packaging.settings.signed_url_ttl),
        }
        return web.json_response(body, headers={"Cache-Control": DECISION_CACHE_CONTROL})
    return web.Response(status=302, text=f"{decision.type}: {url}\n",
                        headers={"Location": url, "Cache-Control": DECISION_CACHE_CONTROL})
