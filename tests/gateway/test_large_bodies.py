"""A segment leaves without being copied again: the transport gets a view of the very bytes the response cache
holds (gateway/http/responses.py ``LargeBodyResponse``), never a new object that joins headers and body.

The writes are recorded on the server side of a real connection (the app's transport), so the check is on what
reaches the socket layer, and the client checks the bytes it received."""
from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from gateway.http.app import make_app
from gateway.http.responses import LARGE_BODY
from gateway.origin.packaging import PACKAGING
from gateway.settings import Settings

SEGMENT = "/hls/title_360p.mp4/seg-2-v1-a1.ts"


async def recording_client(store) -> tuple[TestClient, list]:
    writes: list = []
    app = make_app(Settings(store=store))

    async def record(request, response) -> None:
        transport = request.transport
        if getattr(transport, "recorded_by_test", False):
            return
        write = transport.write

        def recording_write(data) -> None:
            writes.append(data)
            write(data)

        transport.write = recording_write
        transport.recorded_by_test = True

    app.on_response_prepare.append(record)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, writes


async def test_a_cached_segment_reaches_the_transport_as_a_view_of_the_cached_bytes(store):
    client, writes = await recording_client(store)
    try:
        first = await client.get(SEGMENT)
        body = await first.read()
        assert first.status == 200 and len(body) > LARGE_BODY
        writes.clear()
        for method in ("GET", "GET"):  # the full path's hit, then the fast path's
            again = await client.request(method, SEGMENT)
            assert again.status == 200 and await again.read() == body
        cache = client.app[PACKAGING].responses
        cached = [v for v, _ in cache._entries.values() if v == body]
        assert len(cached) == 1
        views = [w for w in writes if isinstance(w, memoryview) and w.obj is cached[0]]
        assert len(views) == 2, [type(w).__name__ for w in writes]
        copies = [w for w in writes if not isinstance(w, memoryview) and len(w) >= len(body)]
        assert not copies, "a write carried a copy of the body"
    finally:
        await client.close()


async def test_head_and_small_bodies_keep_one_write(store):
    client, writes = await recording_client(store)
    try:
        head = await client.head(SEGMENT)
        assert head.status == 200 and await head.read() == b"" and int(head.headers["Content-Length"]) > LARGE_BODY
        writes.clear()
        playlist = await client.get("/hls/title_360p.mp4/index-v1-a1.m3u8")
        text = await playlist.read()
        assert playlist.status == 200 and text.startswith(b"#EXTM3U")
        assert len(writes) == 1 and text in bytes(writes[0])  # headers and the small body in one send
    finally:
        await client.close()
