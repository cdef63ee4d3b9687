"""A real DRM info service for tests: an aiohttp app on a loopback port, in the test's event loop.

It answers nginx-vod-module's DRM info JSON (``drm_info_json``) for the entry ids it has keys for (404 for others),
asked by GET (``?entry_id=``) or POST (JSON ``{"entry_id": …}``), and can misbehave globally (``mode``) or per entry
(``modes``): see ``MODES``. Every request is recorded (``calls``), so tests count service calls.
"""
from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass

from aiohttp import web
from aiohttp.test_utils import TestServer

from packagers.drm.keys import MAX_ANSWER_BYTES, MediaKeys, drm_info_json

MODES = (
    "ok",  # the entry's keys
    "error",  # HTTP 500
    "hang",  # never answers (until the service closes)
    "slow",  # the keys after ``delay`` seconds
    "malformed",  # 200 with a body that is not JSON
    "short_kid",  # the keys with a first key id of 15 bytes
    "empty",  # 200 with []
    "oversize",  # 200 streaming JSON whitespace without end (chunked), until the client hangs up
    "oversize_declared",  # 200 with a Content-Length of MAX_ANSWER_BYTES + 1, then 1 byte and a stall
)
CHUNK = 64 * 1024
STREAM_LIMIT = 256 * 1024 * 1024  # an "endless" answer stops here, so a client that reads it all still ends


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: bytes
    content_type: str
    entry_id: str | None


class DrmService:
    def __init__(self, keys: dict[str, MediaKeys] | None = None, mode: str = "ok", delay: float = 0.5):
        self.keys: dict[str, MediaKeys] = dict(keys or {})
        self.mode = mode
        self.modes: dict[str, str] = {}  # per entry id, over ``mode``
        self.delay = delay
        self.calls: list[Call] = []
        self.streamed = 0  # bytes the "oversize" answers managed to write
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self._server.make_url("/drm/keys"))

    @property
    def requests(self) -> int:
        return len(self.calls)

    async def __aenter__(self) -> DrmService:
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        self._release.set()  # hanging and streaming handlers end, so the server closes at once
        await self._server.close()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        entry_id = request.query.get("entry_id")
        if request.method == "POST":
            try:
                entry_id = json.loads(body).get("entry_id")
            except (ValueError, AttributeError):
                entry_id = None
        self.calls.append(Call(request.method, request.path, dict(request.query), body, request.content_type,
                               entry_id))
        mode = self.modes.get(entry_id, self.mode)
        if mode == "hang":
            await self._release.wait()
            return web.Response(status=500)
        if mode == "slow":
            try:
                await asyncio.wait_for(self._release.wait(), self.delay)
            except TimeoutError:
                pass
        if mode == "error":
            return web.Response(status=500, text="the key server is down")
        if mode == "malformed":
            return web.Response(text='[{"key_id": "not json', content_type="application/json")
        if mode == "empty":
            return web.json_response([])
        if mode == "oversize":
            return await self._stream(request)
        if mode == "oversize_declared":  # the body stalls: only a client that believes the headers ends at once
            response = web.StreamResponse(headers={"Content-Type": "application/json",
                                                   "Content-Length": str(MAX_ANSWER_BYTES + 1)})
            await response.prepare(request)
            await response.write(b"[")
            await self._release.wait()
            return response
        keys = self.keys.get(entry_id)
        if keys is None:
            return web.Response(status=404, text=f"no keys for {entry_id!r}")
        answer = drm_info_json(keys)
        if mode == "short_kid":
            answer[0]["key_id"] = base64.b64encode(keys.keys[0].key_id[:15]).decode()
        return web.json_response(answer)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            while not self._release.is_set() and self.streamed < STREAM_LIMIT:
                await response.write(b" " * CHUNK)
                self.streamed += CHUNK
        except (ConnectionError, RuntimeError):  # the client hung up: what we expect of it
            pass
        return response
