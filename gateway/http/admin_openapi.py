"""The admin API's OpenAPI 3.1 document (served at ``/api/v1/openapi.json``). tests/gateway/test_admin_api.py checks
that every route of gateway/http/admin_api.py is here and every path here is routed, and validates the API's
answers against these schemas."""
from __future__ import annotations

import functools

from .. import __version__

ERROR = {"$ref": "#/components/schemas/Error"}


def _answers(ok: dict | None, *errors: int, status: str = "200", description: str = "done") -> dict:
    responses = {status: {"description": description,
                          **({"content": {"application/json": {"schema": ok}}} if ok else {})}}
    for code in (401, 403, *errors):
        responses[str(code)] = {"description": {400: "bad request", 401: "no token", 403: "wrong token",
                                                404: "not found", 409: "conflict", 422: "invalid",
                                                503: "no RTMP ingest"}[code],
                                "content": {"application/json": {"schema": ERROR}}}
    return responses


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _page(item: str) -> dict:
    return {"type": "object", "required": ["items", "total", "offset", "limit"],
            "properties": {"items": {"type": "array", "items": _ref(item)}, "total": {"type": "integer"},
                           "offset": {"type": "integer"}, "limit": {"type": "integer"}}}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


PAGING = [{"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
          {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}]
ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
STREAM = [{"name": "app", "in": "path", "required": True, "schema": {"type": "string"}},
          {"name": "stream", "in": "path", "required": True, "schema": {"type": "string"}}]
ENTRY_PROPERTIES = {"id": {"type": "string"}, "partner_id": {"type": "integer"}, "name": {"type": "string"},
                    "secured": {"type": "boolean"}, "flavors": {"type": "array", "items": _ref("Flavor")}}
WRITTEN = {"type": "object", "required": ["entry", "warnings"],
           "properties": {"entry": _ref("Entry"), "warnings": {"type": "array", "items": {"type": "string"}}}}


ANALYTICS_QUERY = [
    {"name": "stream", "in": "query", "schema": {"type": "string", "maxLength": 300},
     "description": "entry:<id>, file:<path> or live:<app>/<stream>"},
    {"name": "partner", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {"name": "top", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
     "description": "the N streams with most sessions (default 10 without stream or partner)"},
    {"name": "from", "in": "query", "schema": {"type": "string"}, "description": "unix seconds or ISO 8601"},
    {"name": "to", "in": "query", "schema": {"type": "string"}, "description": "unix seconds or ISO 8601"},
    {"name": "scope", "in": "query", "schema": {"enum": ["node", "pool"]}},
    {"name": "raw", "in": "query", "schema": {"enum": ["0", "1"]},
     "description": "the mergeable export nodes exchange, not the series"}]
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}
_DISTRIBUTION = {"type": "object", "required": ["count"], "properties": {
    "count": {"type": "integer"}, "p50": {"type": ["number", "null"]}, "p90": {"type": ["number", "null"]}}}
ANALYTICS_MINUTE = {
    "type": "object",
    "required": ["t", "sessions", "by_rendition", "by_player", "bytes", "requests", "errors", "rebuffer",
                 "startup_seconds", "buffer_ms", "throughput_kbps"],
    "properties": {"t": {"type": "integer", "description": "the minute's start, unix seconds"},
                   "sessions": {"type": "integer"}, "by_rendition": _COUNTS, "by_player": _COUNTS,
                   "bytes": {"type": "integer"}, "requests": {"type": "integer"}, "errors": {"type": "integer"},
                   "object_types": _COUNTS, "cmcd_requests": {"type": "integer"},
                   "estimated_requests": {"type": "integer"}, "cmcd_invalid": {"type": "integer"},
                   "rebuffer": {"type": "object", "required": ["events", "sessions", "ratio"]},
                   "startup_seconds": _DISTRIBUTION, "buffer_ms": _DISTRIBUTION, "throughput_kbps": _DISTRIBUTION}}
ANALYTICS = {
    "type": "object", "required": ["scope", "bucket_seconds", "streams"],
    "properties": {
        "scope": {"enum": ["node", "pool"]}, "bucket_seconds": {"type": "integer"},
        "nodes": {"type": "object", "properties": {"answered": {"type": "array"}, "missing": {"type": "array"}}},
        "streams": {"type": "array", "items": {
            "type": "object", "required": ["stream", "partner", "totals", "minutes"],
            "properties": {"stream": {"type": "string"}, "partner": {"type": ["integer", "null"]},
                           "totals": {"type": "object", "required": ["sessions", "bytes", "requests"]},
                           "minutes": {"type": "array", "items": ANALYTICS_MINUTE}}}}}}


@functools.cache
def openapi_document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "media gateway admin API", "version": __version__,
                 "description": "Partners and entries of the catalog, delivery decisions, live streams, caches and "
                                "the effective configuration (docs/admin_api.md)."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/openapi.json": {"get": {"summary": "this document", "responses": _answers(None)}},
            "/api/v1/partners": {
                "get": {"summary": "partners, paged", "parameters": PAGING,
                        "responses": _answers(_page("Partner"), 400)},
                "post": {"summary": "a new partner (a secret is generated unless given)",
                         "requestBody": _body(_ref("NewPartner")),
                         "responses": _answers(_ref("Partner"), 400, 409, 422, status="201", description="created")},
            },
            "/api/v1/partners/{id}": {
                "parameters": ID,
                "get": {"summary": "one partner (secret redacted)", "responses": _answers(_ref("Partner"), 404)},
                "patch": {"summary": "change name, secret or delivery", "requestBody": _body(_ref("PartnerChange")),
                          "responses": _answers(_ref("Partner"), 400, 404, 422)},
                "delete": {"summary": "remove a partner; refused while it has entries unless force=true (which "
                                      "removes them too)",
                           "parameters": [{"name": "force", "in": "query", "schema": {"type": "boolean"}}],
                           "responses": _answers(_ref("Removed"), 404, 409)},
            },
            "/api/v1/entries": {
                "get": {"summary": "entries, paged and filtered",
                        "parameters": [*PAGING, {"name": "partner_id", "in": "query", "schema": {"type": "integer"}},
                                       {"name": "secured", "in": "query", "schema": {"type": "boolean"}},
                                       {"name": "q", "in": "query", "schema": {"type": "string"},
                                        "description": "text in the id, name or a flavor path"}],
                        "responses": _answers(_page("Entry"), 400)},
                "post": {"summary": "a new entry; media flavors are read as a request would and refused when they "
                                    "cannot be served, unless force",
                         "requestBody": _body(_ref("NewEntry")),
                         "responses": _answers(WRITTEN, 400, 409, 422, status="201", description="created")},
            },
            "/api/v1/entries/{id}": {
                "parameters": ID,
                "get": {"summary": "one entry, with the entries it shares files with",
                        "responses": _answers(_ref("EntryDetail"), 404)},
                "patch": {"summary": "change name, secured, partner_id or flavors (the whole list)",
                          "requestBody": _body(_ref("EntryChange")), "responses": _answers(WRITTEN, 400, 404, 422)},
                "delete": {"summary": "remove an entry (its files stay in the store)",
                           "responses": _answers(_ref("Removed"), 404)},
            },
            "/api/v1/entries/{id}/delivery": {
                "parameters": [*ID, {"name": "user_agent", "in": "query", "schema": {"type": "string"}},
                               {"name": "format", "in": "query", "schema": {"type": "string"}}],
                "get": {"summary": "what playManifest would decide for this entry and user agent",
                        "responses": _answers(_ref("Delivery"), 400, 404)},
            },
            "/api/v1/live/streams": {"get": {"summary": "published RTMP streams",
                                             "responses": _answers({"type": "object"}, 503)}},
            "/api/v1/live/streams/{app}/{stream}": {
                "parameters": STREAM,
                "get": {"summary": "one stream: codecs, bitrate, publisher, players",
                        "responses": _answers({"type": "object"}, 404, 503)}},
            "/api/v1/live/streams/{app}/{stream}/drop": {
                "parameters": STREAM,
                "post": {"summary": "close the publisher", "responses": _answers({"type": "object"}, 503)}},
            "/api/v1/live/streams/{app}/{stream}/record/{action}": {
                "parameters": [*STREAM, {"name": "action", "in": "path", "required": True,
                                         "schema": {"enum": ["start", "stop"]}}],
                "post": {"summary": "start or stop recording", "responses": _answers({"type": "object"}, 404, 503)}},
            "/api/v1/cache": {"get": {"summary": "cache statistics of worker 0",
                                      "responses": _answers({"type": "object"})}},
            "/api/v1/cache/purge": {"post": {
                "summary": "every worker drops what its caches made of these store files (or of all)",
                "requestBody": _body({"type": "object", "properties": {
                    "paths": {"type": "array", "items": {"type": "string"}}, "entry_id": {"type": "string"},
                    "all": {"type": "boolean"}}}),
                "responses": _answers({"type": "object", "required": ["purging"]}, 400, 404, 422, status="202",
                                      description="sent to every worker")}},
            "/api/v1/config": {"get": {"summary": "the effective settings, secrets redacted",
                                       "responses": _answers({"type": "object", "required": ["settings"]})}},
            "/api/v1/analytics": {"get": {
                "summary": "audience series per stream and minute from the players' CMCD (docs/analytics.md)",
                "parameters": ANALYTICS_QUERY,
                "responses": _answers(_ref("Analytics"), 400, 404)}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"],
                          "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                                         "field": {"type": "string", "description": "the JSON key at fault"}}},
                "Partner": {"type": "object", "required": ["id", "name", "secret", "delivery"],
                            "additionalProperties": False,
                            "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                                           "secret": {"type": "string", "description": "redacted: its last 4"},
                                           "delivery": {"type": "object"}}},
                "NewPartner": {"type": "object", "required": ["id", "name"],
                               "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                                              "secret": {"type": "string", "minLength": 32},
                                              "delivery": {"type": "object"}}},
                "PartnerChange": {"type": "object", "additionalProperties": False,
                                  "properties": {"name": {"type": "string"}, "secret": {"type": "string"},
                                                 "delivery": {"type": "object"}}},
                "Flavor": {"type": "object", "required": ["id", "path"],
                           "properties": {"id": {"type": "string"}, "path": {"type": "string"},
                                          "tags": {"type": "array", "items": {"type": "string"}}}},
                "Entry": {"type": "object", "required": ["id", "partner_id", "name", "secured", "flavors"],
                          "additionalProperties": False, "properties": ENTRY_PROPERTIES},
                "EntryDetail": {"type": "object", "additionalProperties": False,
                                "required": ["id", "partner_id", "name", "secured", "flavors", "shares_files_with",
                                             "needs_signing"],
                                "properties": {**ENTRY_PROPERTIES,
                                               "shares_files_with": {"type": "array", "items": {"type": "string"},
                                                                     "description": "entries with a file in common"},
                                               "needs_signing": {"type": "boolean"}}},
                "NewEntry": {"type": "object", "required": ["id", "partner_id", "name", "flavors"],
                             "properties": {"id": {"type": "string"}, "partner_id": {"type": "integer"},
                                            "name": {"type": "string"}, "secured": {"type": "boolean"},
                                            "force": {"type": "boolean"},
                                            "flavors": {"type": "array", "items": {
                                                "type": "object", "required": ["path"],
                                                "properties": {"id": {"type": "string"},
                                                               "path": {"type": "string"},
                                                               "tags": {"type": "array",
                                                                        "items": {"type": "string"}}}}}}},
                "EntryChange": {"type": "object",
                                "properties": {"name": {"type": "string"}, "secured": {"type": "boolean"},
                                               "partner_id": {"type": "integer"}, "force": {"type": "boolean"},
                                               "flavors": {"type": "array"}}},
                "Removed": {"type": "object", "required": ["removed"]},
                "Analytics": ANALYTICS,
                "Delivery": {"type": "object",
                             "required": ["entry_id", "partner_id", "duration", "delivery_type", "reason",
                                          "preference", "signed"],
                             "properties": {"delivery_type": {"enum": ["http", "hls", "dash", "mss", "hds"]},
                                            "preference": {"type": "array", "items": {"type": "string"}},
                                            "signed": {"type": "boolean"}}},
            },
        },
    }
