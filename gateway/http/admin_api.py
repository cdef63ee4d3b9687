"""The admin API: JSON over HTTP under ``/api/v1/`` (docs/admin_api.md; the OpenAPI document at
``/api/v1/openapi.json`` is gateway/http/admin_openapi.py, and a test checks the two agree).

It is its own aiohttp application on its own listener (``admin_host:admin_port``, loopback by default), served by
worker 0 (the one that runs the RTMP ingest), never on the public port; off unless ``admin_token`` is set. Every
request needs ``Authorization: Bearer <admin_token>``. Catalog changes go through gateway/catalog/edits.py, as the
CLI's do (the same validation, lock and atomic writes), in the executor; live streams are the RTMP control API's
(gateway/http/rtmp_control.py), one implementation. 4xx bodies are JSON: ``{"error": CODE, "message": ...,
"field": ...}``, the field being the JSON key at fault when there is one.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import re
from typing import Any, Callable

from aiohttp import web

from delivery_profiles import ProfileError, select_delivery
from delivery_profiles.tokens import new_secret

from ..catalog.access import partner_config
from ..catalog.catalog import CatalogError, CatalogNotFound, Entry, Flavor, Partner, parse_entry, parse_partner
from ..catalog.edits import (change_entry, change_partner, create_entry, create_partner, new_id, remove_entry,
                             remove_partner)
from ..origin.packaging import PACKAGING
from ..ops.app_keys import SETTINGS
from .admin_openapi import openapi_document
from .analytics_api import QueryError, analytics

__all__ = ["make_admin_app"]

CURRENT = web.AppKey("current_app", Callable)  # () -> the worker's current public app (its catalog, packaging...)
PURGE = web.AppKey("purge", Callable)  # (store paths | None) -> None: every worker drops what it made of them
MAX_LIMIT = 1000
SECRET_SETTINGS = ("admin_token", "rtmp_control_token", "analytics_salt")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def make_admin_app(current: Callable[[], web.Application],
                   purge: Callable[[tuple[str, ...] | None], None] | None = None) -> web.Application:
    """``purge``: tells every worker to purge (through the supervisor); without it, this process's caches."""
    app = web.Application(middlewares=[_errors], client_max_size=1 << 20)
    app[CURRENT] = current
    app[PURGE] = purge or (lambda paths: current()[PACKAGING].purge(paths))
    r = app.router
    r.add_get("/api/v1/openapi.json", openapi)
    r.add_get("/api/v1/partners", list_partners)
    r.add_post("/api/v1/partners", add_partner)
    r.add_get("/api/v1/partners/{id}", show_partner)
    r.add_patch("/api/v1/partners/{id}", update_partner)
    r.add_delete("/api/v1/partners/{id}", delete_partner)
    r.add_get("/api/v1/entries", list_entries)
    r.add_post("/api/v1/entries", add_entry)
    r.add_get("/api/v1/entries/{id}", show_entry)
    r.add_patch("/api/v1/entries/{id}", update_entry)
    r.add_delete("/api/v1/entries/{id}", delete_entry)
    r.add_get("/api/v1/entries/{id}/delivery", delivery_preview)
    r.add_get("/api/v1/live/streams", live_streams)
    r.add_get("/api/v1/live/streams/{app}/{stream}", live_stream)
    r.add_post("/api/v1/live/streams/{app}/{stream}/drop", live_action)
    r.add_post("/api/v1/live/streams/{app}/{stream}/record/{action:start|stop}", live_action)
    r.add_get("/api/v1/cache", cache_stats)
    r.add_post("/api/v1/cache/purge", cache_purge)
    r.add_get("/api/v1/config", show_config)
    r.add_get("/api/v1/analytics", show_analytics)
    return app


# ------------------------------------------------------------------------------------------------ plumbing
@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    public = request.app[CURRENT]()
    token = public[SETTINGS].admin_token
    given = request.headers.get("Authorization", "")
    given = given[7:].strip() if given.lower().startswith("bearer ") else ""
    try:
        if not token:
            raise ApiError(404, "NOT_FOUND", "the admin API is off (no admin_token)")
        if not given:
            raise ApiError(401, "UNAUTHORIZED", "the admin API needs Authorization: Bearer <admin_token>")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(403, "FORBIDDEN", "wrong token")
        return await handler(request)
    except ApiError as e:
        return _error(e.status, e.code, e.message, e.field)
    except CatalogNotFound as e:
        return _error(404, "NOT_FOUND", _message(e.message))
    except (CatalogError, ProfileError) as e:
        text = str(e)
        return _error(409 if "already exists" in text or "still has" in text else 422, "INVALID", _message(text),
                      _field(text))
    except web.HTTPException as e:
        return _error(e.status, "HTTP_%d" % e.status, e.reason)


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body = {"error": code, "message": message, **({"field": field} if field else {})}
    response = web.json_response(body, status=status, headers={"Cache-Control": "no-store"})
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _message(text: str) -> str:
    return re.sub(r"^[a-z_]+: ", "", text)


def _field(text: str) -> str | None:
    """The key a catalog message names: ``entries/0_x.json: flavors[1].path: ...`` -> ``flavors[1].path``."""
    found = re.match(r"(?:partners|entries)/[^:]+: ([A-Za-z_][A-Za-z0-9_.\[\]]*): ", text)
    return found.group(1) if found and found.group(1) != "(document)" else None


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"},
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


async def _body(request: web.Request) -> dict:
    try:
        doc = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "BAD_REQUEST", "the body must be a JSON object") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "BAD_REQUEST", "the body must be a JSON object")
    return doc


def _parts(request: web.Request):
    public = request.app[CURRENT]()
    from .app import CATALOG

    catalog = public[CATALOG]
    return catalog, catalog.files, public[PACKAGING]


async def _run(request: web.Request, fn, *args):
    """A blocking catalog operation in the executor (handlers then re-read the catalog: read-your-writes)."""
    return await asyncio.get_running_loop().run_in_executor(_parts(request)[2].executor, lambda: fn(*args))


async def _view(request: web.Request, fresh: bool = False):
    catalog, _, packaging = _parts(request)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(packaging.executor, catalog.refresh if fresh else catalog.view)


def _page(request: web.Request, items: list) -> dict:
    try:
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "BAD_REQUEST", "offset and limit are integers", "offset") from None
    if offset < 0 or not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "BAD_REQUEST", f"offset >= 0 and 1 <= limit <= {MAX_LIMIT}", "limit")
    return {"items": items[offset: offset + limit], "total": len(items), "offset": offset, "limit": limit}


def _int_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isdigit():
        raise ApiError(404, "NOT_FOUND", f"no partner {text!r}")
    return int(text)


def _partner_json(partner: Partner) -> dict:
    return partner.to_json(show_secret=False)


# ------------------------------------------------------------------------------------------------ partners
async def openapi(request: web.Request) -> web.Response:
    return _json(openapi_document())


async def list_partners(request: web.Request) -> web.Response:
    view = await _view(request)
    return _json(_page(request, [_partner_json(p) for p in view.partners()]))


async def show_partner(request: web.Request) -> web.Response:
    view = await _view(request, fresh=True)
    return _json(_partner_json(view.partner(_int_id(request))))


async def add_partner(request: web.Request) -> web.Response:
    doc = await _body(request)
    doc.setdefault("secret", new_secret())
    doc.setdefault("delivery", {})
    partner = parse_partner(doc, f"partners/{doc.get('id')}.json")
    _, files, _ = _parts(request)
    await _run(request, create_partner, files, partner)
    await _view(request, fresh=True)
    return _json(_partner_json(partner), 201)


async def update_partner(request: web.Request) -> web.Response:
    doc = await _body(request)
    unknown = set(doc) - {"name", "secret", "delivery"}
    if unknown:
        raise ApiError(422, "INVALID", f"unknown key {sorted(unknown)[0]!r}: name, secret, delivery may change",
                       sorted(unknown)[0])

    def change(partner: Partner) -> Partner:
        merged = {**partner.to_json(), **doc}
        return parse_partner(merged, f"partners/{partner.id}.json")

    _, files, _ = _parts(request)
    partner = await _run(request, change_partner, files, _int_id(request), change)
    await _view(request, fresh=True)
    return _json(_partner_json(partner))


async def delete_partner(request: web.Request) -> web.Response:
    catalog, files, _ = _parts(request)
    force = request.query.get("force", "").lower() in ("1", "true", "yes")
    removed = await _run(request, remove_partner, files, _int_id(request), lambda: catalog.refresh().entries(), force)
    await _view(request, fresh=True)
    return _json({"removed": _int_id(request), "entries_removed": removed})


# ------------------------------------------------------------------------------------------------ entries
async def list_entries(request: web.Request) -> web.Response:
    view = await _view(request)
    partner = request.query.get("partner_id")
    secured = request.query.get("secured")
    text = request.query.get("q", "").lower()
    entries = view.entries(int(partner) if partner and partner.isdigit() else None)
    if partner and not partner.isdigit():
        raise ApiError(400, "BAD_REQUEST", "partner_id is an integer", "partner_id")
    if secured is not None:
        entries = tuple(e for e in entries if e.secured == (secured.lower() in ("1", "true", "yes")))
    if text:
        entries = tuple(e for e in entries if text in e.name.lower() or text in e.id
                        or any(text in p.lower() for p in e.paths))
    return _json(_page(request, [e.to_json() for e in entries]))


async def show_entry(request: web.Request) -> web.Response:
    view = await _view(request, fresh=True)
    entry = view.entry(request.match_info["id"])
    return _json({**entry.to_json(), "shares_files_with": [e.id for e in view.shares_with(entry)],
                  "needs_signing": view.needs_signing(entry)})


def _flavors(entry_id: str, items: Any) -> list[dict]:
    """Flavor objects of a request: a missing id is generated (as the CLI does)."""
    if not isinstance(items, list):
        raise ApiError(422, "INVALID", "flavors must be a list of {path, id?, tags?}", "flavors")
    partition = entry_id[:1] if entry_id[:1].isdigit() else "0"
    return [{**item, "id": item.get("id") or new_id(partition)} if isinstance(item, dict) else item
            for item in items]


async def add_entry(request: web.Request) -> web.Response:
    doc = await _body(request)
    force = bool(doc.pop("force", False))
    entry_id = str(doc.get("id", ""))
    doc["flavors"] = _flavors(entry_id, doc.get("flavors"))
    doc.setdefault("secured", False)
    entry = parse_entry(doc, f"entries/{entry_id}.json")
    _, files, packaging = _parts(request)
    warnings = await _run(request, create_entry, files, packaging.store, entry, force)
    await _view(request, fresh=True)
    return _json({"entry": entry.to_json(), "warnings": warnings}, 201)


async def update_entry(request: web.Request) -> web.Response:
    doc = await _body(request)
    force = bool(doc.pop("force", False))
    unknown = set(doc) - {"name", "secured", "flavors", "partner_id"}
    if unknown:
        raise ApiError(422, "INVALID", f"unknown key {sorted(unknown)[0]!r}: name, secured, flavors, partner_id may "
                       f"change", sorted(unknown)[0])
    entry_id = request.match_info["id"]
    if "flavors" in doc:
        doc["flavors"] = _flavors(entry_id, doc["flavors"])

    def change(entry: Entry) -> Entry:
        return parse_entry({**entry.to_json(), **doc}, f"entries/{entry.id}.json")

    _, files, packaging = _parts(request)
    entry, warnings = await _run(request, change_entry, files, packaging.store, entry_id, change, force)
    await _view(request, fresh=True)
    return _json({"entry": entry.to_json(), "warnings": warnings})


async def delete_entry(request: web.Request) -> web.Response:
    _, files, _ = _parts(request)
    entry = await _run(request, remove_entry, files, request.match_info["id"])
    await _view(request, fresh=True)
    return _json({"removed": entry.id})


async def delivery_preview(request: web.Request) -> web.Response:
    """What playManifest would decide for this entry and user agent (no URL is signed, nothing is served)."""
    view = await _view(request)
    entry = view.entry(request.match_info["id"])
    partner = view.partner(entry.partner_id)
    _, _, packaging = _parts(request)
    from ..origin.packaging import MediaTarget

    paths = tuple(f.path for f in entry.flavors if not f.is_caption)
    opened = await packaging.open(MediaTarget(paths, len(paths) > 1))
    duration = max(p.duration_seconds for p in opened.media_set.presentations)
    decision = select_delivery(partner_config(partner), duration_seconds=duration, secured=entry.secured,
                               requested_format=request.query.get("format") or None,
                               user_agent=request.query.get("user_agent") or request.headers.get("User-Agent"))
    return _json({"entry_id": entry.id, "partner_id": partner.id, "duration": round(duration, 3),
                  "delivery_type": decision.type, "reason": decision.reason,
                  "preference": list(decision.preference), "signed": view.needs_signing(entry)})


# ------------------------------------------------------------------------------------------------ live, cache, config
def _ingest(request: web.Request):
    from ..ingest.service import INGEST

    ingest = request.app[CURRENT]().get(INGEST)
    if ingest is None:
        raise ApiError(503, "NO_INGEST", "this gateway runs no RTMP ingest (rtmp_port)")
    return ingest


async def live_streams(request: web.Request) -> web.Response:
    from .rtmp_control import list_streams

    return await list_streams(request, _ingest(request))


async def live_stream(request: web.Request) -> web.Response:
    from .rtmp_control import stream_info

    ingest = _ingest(request)
    key = f"{request.match_info['app']}/{request.match_info['stream']}"
    info = stream_info(ingest, key)
    if info is None:
        raise ApiError(404, "NOT_FOUND", f"{key} is not published")
    return _json(info)


async def live_action(request: web.Request) -> web.Response:
    from .rtmp_control import drop_stream, record_stream

    ingest = _ingest(request)
    handler = record_stream if "action" in request.match_info else drop_stream
    return await handler(request, ingest)


async def cache_stats(request: web.Request) -> web.Response:
    from .app import CACHES

    caches = request.app[CURRENT]()[CACHES]
    return _json({"scope": "worker 0 (each worker has its own caches)", "responses": caches.responses.stats(),
                  "metadata": caches.metadata.stats()})


async def cache_purge(request: web.Request) -> web.Response:
    """``{"paths": [...]}``, ``{"entry_id": ...}`` (its flavor files) or ``{"all": true}``: every worker drops the
    packaged responses, parsed files and plans made of them, and stats them afresh (202: the workers do it as the
    message reaches them, a moment later)."""
    doc = await _body(request)
    if doc.get("all") is True:
        paths = None
    elif "entry_id" in doc:
        view = await _view(request, fresh=True)
        paths = view.entry(str(doc["entry_id"])).paths
    elif isinstance(doc.get("paths"), list) and doc["paths"] and all(isinstance(p, str) for p in doc["paths"]):
        paths = tuple(doc["paths"])
    else:
        raise ApiError(422, "INVALID", 'give {"paths": [store paths]}, {"entry_id": id} or {"all": true}', "paths")
    request.app[PURGE](paths)
    return _json({"purging": "every file" if paths is None else list(paths)}, 202)


async def show_config(request: web.Request) -> web.Response:
    settings = request.app[CURRENT]()[SETTINGS]
    values = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name in SECRET_SETTINGS and value:
            value = "<redacted>"
        values[field.name] = value if isinstance(value, (int, float, str, bool, type(None))) else \
            list(value) if isinstance(value, tuple) else str(value)
    return _json({"settings": values})


async def show_analytics(request: web.Request) -> web.Response:
    """Audience series (gateway/http/analytics_api.py)."""
    try:
        return _json(await analytics(request, request.app[CURRENT]()))
    except QueryError as e:
        raise ApiError(400, "INVALID", str(e), e.field) from None
    except LookupError as e:
        raise ApiError(404, "NOT_FOUND", str(e)) from None
