"""The RTMP control API of `gateway serve` (docs/rtmp.md, "Control API"): a JSON API under ``/rtmp/`` and
nginx-rtmp's ``rtmp_control`` paths under ``/control/``, answered the way nginx-rtmp answers them (plain text).

Off unless ``rtmp_control_token`` is set: then every path needs ``Authorization: Bearer <token>`` (or ``?token=``);
without a token configured they answer 404, like any unknown path. Only the process running the RTMP ingest
(worker 0) knows the streams; another answers 503.

JSON (GET lists, POST acts):
  GET  /rtmp/streams                              streams: codecs, bitrate, uptime, publisher and players (client ids)
  GET  /rtmp/clients                              connections: client id, address, role, stream, uptime, bytes
  POST /rtmp/clients/<id>/drop                    close that connection
  POST /rtmp/clients/<id>/redirect?name=<stream>  play (or publish) another stream of its application
  POST /rtmp/streams/<app>/<stream>/drop          close the publisher (its players get UnpublishNotify)
  POST /rtmp/streams/<app>/<stream>/record/start  record from the next key frame on
  POST /rtmp/streams/<app>/<stream>/record/stop   finish the recording: its MP4 in recordings/<app>/
nginx-rtmp (GET): /control/drop/publisher|subscriber|client, /control/redirect/publisher|subscriber|client
(``app``, ``name``, ``addr``, ``clientid``, ``newname``): the number of clients affected; /control/record/start|stop
(``app``, ``name``): the recording's path, or 204 when there is none.
"""
from __future__ import annotations

import asyncio
import hmac
import time
from pathlib import Path

from aiohttp import web

from ..ingest.service import INGEST, Ingest
from ..ops.app_keys import SETTINGS
from .errors import error_response

__all__ = ["add_rtmp_control_routes", "is_control_path", "stream_info"]

FILTERS = ("publisher", "subscriber", "client")
RECORD_START_WAIT = 10.0    # seconds record/start waits for the first key frame to name the file


def is_control_path(request: web.Request) -> bool:
    return request.path.startswith("/rtmp/")


def _guard(handler):
    """Token check (404 when the API is off, 401 without a token, 403 with a wrong one), then the ingest (503)."""
    async def guarded(request: web.Request) -> web.StreamResponse:
        expected = request.app[SETTINGS].rtmp_control_token
        if expected is None:
            return error_response(404, "NOT_FOUND", "no such path")
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.query.get("token")
        if not given:
            return error_response(401, "UNAUTHORIZED", "the control API needs a token",
                                  **{"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return error_response(403, "FORBIDDEN", "wrong token")
        ingest = request.app.get(INGEST)
        if ingest is None:
            return error_response(503, "NO_INGEST", "this process does not run the RTMP ingest")
        return await handler(request, ingest)
    return guarded


def _no_store(response: web.StreamResponse) -> web.StreamResponse:
    response.headers["Cache-Control"] = "no-store"
    return response


def _json(body: dict, status: int = 200) -> web.Response:
    return _no_store(web.json_response(body, status=status))


def _text(body: str | None) -> web.Response:
    return _no_store(web.Response(text=body) if body is not None else web.Response(status=204))


# ------------------------------------------------------------------------------------------------ JSON
async def list_streams(request: web.Request, ingest: Ingest) -> web.Response:
    return _json({"streams": {key: stream_info(ingest, key) for key in ingest.relay.stats()}})


def stream_info(ingest: Ingest, key: str) -> dict | None:
    """One stream's stats (codecs, bitrate, uptime, players) with its publisher's connection; None if not there."""
    st = ingest.relay.stats().get(key)
    if st is None:
        return None
    publisher = ingest.server.clients.get(st["publisher_id"])
    return {**st, "publisher": publisher.info() if publisher is not None else st["publisher"]}


async def list_clients(request: web.Request, ingest: Ingest) -> web.Response:
    return _json({"clients": [c.info() for c in list(ingest.server.clients.values())]})


def _client(request: web.Request, ingest: Ingest):
    try:
        return ingest.server.clients.get(int(request.match_info["id"]))
    except ValueError:
        return None


async def drop_client(request: web.Request, ingest: Ingest) -> web.Response:
    client = _client(request, ingest)
    if client is None:
        return error_response(404, "NOT_FOUND", "no such client")
    client.drop("control API")
    return _json({"dropped": 1})


async def redirect_client(request: web.Request, ingest: Ingest) -> web.Response:
    client, name = _client(request, ingest), request.query.get("name", "")
    if not name:
        return error_response(400, "BAD_REQUEST", "redirect needs ?name=<stream>")
    if client is None:
        return error_response(404, "NOT_FOUND", "no such client")
    return _json({"redirected": int(client.redirect(name))})


def _key(request: web.Request) -> str:
    return f"{request.match_info['app']}/{request.match_info['stream']}"


async def drop_stream(request: web.Request, ingest: Ingest) -> web.Response:
    return _json({"dropped": _walk(ingest, "publisher", lambda c: c.drop("control API"), *_key(request).split("/"))})


async def record_stream(request: web.Request, ingest: Ingest) -> web.Response:
    key, action = _key(request), request.match_info["action"]
    if not ingest.relay.is_published(key):
        return error_response(404, "NOT_FOUND", f"{key} is not published")
    path = await (_record_start if action == "start" else _record_stop)(ingest, key)
    store = Path(ingest.parts["recorder"].store)
    return _json({"stream": key, "recording": action == "start",
                  "path": Path(path).relative_to(store).as_posix() if path else None})


# ------------------------------------------------------------------------------------------------ recording
async def _record_start(ingest: Ingest, key: str) -> str | None:
    """Start recording ``key``; the path its file will have once finished (None when no key frame came in time)."""
    recorder = ingest.parts["recorder"]
    recorder.start(key, ingest.relay.headers(key))
    deadline = time.monotonic() + RECORD_START_WAIT
    while time.monotonic() < deadline:
        recording, path = recorder.current_file(key)
        if path is not None or not recording:
            return str(recorder.store / path) if path else None
        await asyncio.sleep(0.05)
    return None


async def _record_stop(ingest: Ingest, key: str) -> str | None:
    """Finish the recording of ``key``; the finished file's path, once it is in place."""
    recorder = ingest.parts["recorder"]
    worker = recorder.stop(key)
    if worker is None:
        return None
    await asyncio.to_thread(worker.join, 60)
    path = recorder.last_recorded.get(key)
    return str(recorder.store / path) if path else None


# ------------------------------------------------------------------------------------------------ nginx-rtmp
def _walk(ingest: Ingest, which: str, act, app: str | None = None, name: str | None = None,
          addr: str | None = None, clientid: str | None = None) -> int:
    """nginx-rtmp's control walk: the connections matching the filters, each acted on; how many."""
    count = 0
    for conn in list(ingest.server.clients.values()):
        key = conn.publish_key or conn.play_key
        if key is None or (which == "publisher" and conn.publish_key is None) or \
                (which == "subscriber" and conn.play_key is None):
            continue
        c_app, _, c_name = key.partition("/")
        if (app and app != c_app) or (name and name != c_name) or (addr and addr != conn.addr) or \
                (clientid and clientid != str(conn.client_id)):
            continue
        act(conn)
        count += 1
    return count


async def nginx_control(request: web.Request, ingest: Ingest) -> web.Response:
    section, method, q = request.match_info["section"], request.match_info["method"], request.query
    if section == "record":
        app, name = q.get("app"), q.get("name")
        if method not in ("start", "stop") or not app or not name or not ingest.relay.is_published(f"{app}/{name}"):
            return _no_store(web.Response(status=500 if method not in ("start", "stop") else 204))
        return _text(await (_record_start if method == "start" else _record_stop)(ingest, f"{app}/{name}"))
    if method not in FILTERS:
        return _no_store(web.Response(status=500, text="Undefined filter"))
    filters = {k: q.get(k) for k in ("app", "name", "addr", "clientid")}
    if section == "drop":
        return _text(str(_walk(ingest, method, lambda c: c.drop("control API"), **filters)))
    newname = q.get("newname")
    if not newname:
        return _no_store(web.Response(status=500, text="newname not specified"))
    return _text(str(_walk(ingest, method, lambda c: c.redirect(newname), **filters)))


def add_rtmp_control_routes(app: web.Application) -> None:
    app.router.add_get("/rtmp/streams", _guard(list_streams))
    app.router.add_get("/rtmp/clients", _guard(list_clients))
    app.router.add_post("/rtmp/clients/{id}/drop", _guard(drop_client))
    app.router.add_post("/rtmp/clients/{id}/redirect", _guard(redirect_client))
    app.router.add_post("/rtmp/streams/{app}/{stream}/drop", _guard(drop_stream))
    app.router.add_post("/rtmp/streams/{app}/{stream}/record/{action:start|stop}", _guard(record_stream))
    app.router.add_get("/control/{section:drop|record|redirect}/{method}", _guard(nginx_control))
