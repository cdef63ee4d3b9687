"""HTTP semantics: HEAD/GET parity, ranges, conditionals, CORS, methods, content types and caching headers."""
from __future__ import annotations

import pytest

from .conftest import URLSET

SEGMENT = "/hls/title_360p.mp4/seg-1-v1-a1.ts"
PLAYLIST = "/hls/title_360p.mp4/index.m3u8"
MASTER = URLSET + "/master.m3u8"
MP4 = "/mp4/title_240p.mp4"
RESOURCES = [MASTER, PLAYLIST, SEGMENT, MP4, URLSET + "/seg-2-f3-v1-a1.ts"]
ERRORS = ["/hls/missing.mp4/master.m3u8", "/hls/title_360p.mp4/seg-0.ts", "/nope", "/mp4/missing.mp4"]
VOLATILE = {"Date"}


def _headers(response) -> dict:
    return {k: v for k, v in response.headers.items() if k not in VOLATILE}


@pytest.mark.parametrize("path", RESOURCES + ERRORS + ["/status"])
async def test_head_matches_get(client, path):
    get = await client.get(path)
    body = await get.read()
    head = await client.head(path)
    assert await head.read() == b""
    assert head.status == get.status
    expected = _headers(get)
    if path == "/status":  # counters and uptime move between the two requests
        expected["Content-Length"] = head.headers["Content-Length"]
    assert _headers(head) == expected
    assert int(get.headers["Content-Length"]) == len(body)


@pytest.mark.parametrize(
    "path, content_type, cache",
    [
        (MASTER, "application/vnd.apple.mpegurl", "public, max-age=3600"),
        (PLAYLIST, "application/vnd.apple.mpegurl", "public, max-age=3600"),
        (SEGMENT, "video/MP2T", "public, max-age=86400"),
        (MP4, "video/mp4", "public, max-age=3600"),
    ],
)
async def test_content_type_and_cache_headers(client, path, content_type, cache):
    response = await client.get(path)
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Cache-Control"] == cache
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"].startswith('"')
    assert "Last-Modified" in response.headers


async def test_max_ages_are_settings(make_client):
    client = await make_client(segment_max_age=7, manifest_max_age=5)
    assert (await client.get(SEGMENT)).headers["Cache-Control"] == "public, max-age=7"
    assert (await client.get(PLAYLIST)).headers["Cache-Control"] == "public, max-age=5"


@pytest.mark.parametrize("path", RESOURCES)
@pytest.mark.parametrize("spec", ["bytes=0-0", "bytes=0-99", "bytes=100-", "bytes=-500", "bytes=-100000000", "bytes=7-7000"])
async def test_range_is_a_slice_of_the_full_body(client, path, spec):
    full = await (await client.get(path)).read()
    response = await client.get(path, headers={"Range": spec})
    part = await response.read()
    first, _, last = spec.removeprefix("bytes=").partition("-")
    if first:
        start, stop = int(first), (min(int(last) + 1, len(full)) if last else len(full))
    else:
        start, stop = max(0, len(full) - int(last)), len(full)
    assert response.status == 206
    assert part == full[start:stop]
    assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(full)}"
    assert int(response.headers["Content-Length"]) == stop - start
    head = await client.head(path, headers={"Range": spec})
    assert head.status == 206 and head.headers["Content-Range"] == response.headers["Content-Range"]


@pytest.mark.parametrize("path", RESOURCES)
@pytest.mark.parametrize("spec", ["bytes=100000000-", "bytes=-0"])  # invalid ones are ignored: test_ranges_rfc9110
async def test_unsatisfiable_range_is_416(client, path, spec):
    length = len(await (await client.get(path)).read())
    response = await client.get(path, headers={"Range": spec})
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{length}"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert int(response.headers["Content-Length"]) == len(await response.read())


@pytest.mark.parametrize("path", RESOURCES)
@pytest.mark.parametrize("spec", ["bytes=0-1,5-9", "pages=1-2", "nonsense"])
async def test_multi_range_and_other_units_get_the_full_body(client, path, spec):
    full = await (await client.get(path)).read()
    response = await client.get(path, headers={"Range": spec})
    assert response.status == 200
    assert await response.read() == full


@pytest.mark.parametrize("path", RESOURCES)
async def test_if_range(client, path):
    first = await client.get(path)
    full = await first.read()
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    for validator in (etag, modified):
        ok = await client.get(path, headers={"Range": "bytes=0-9", "If-Range": validator})
        assert ok.status == 206 and await ok.read() == full[:10]
    for stale in ('"other"', "W/" + etag, "Thu, 01 Jan 1970 00:00:00 GMT"):
        response = await client.get(path, headers={"Range": "bytes=0-9", "If-Range": stale})
        assert response.status == 200 and await response.read() == full


@pytest.mark.parametrize("path", RESOURCES)
async def test_conditional_get_is_304(client, path):
    first = await client.get(path)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    for headers in ({"If-None-Match": etag}, {"If-None-Match": f'"x", W/{etag}'}, {"If-Modified-Since": modified},
                    {"If-None-Match": "*"}, {"If-None-Match": etag, "Range": "bytes=x"}):
        response = await client.get(path, headers=headers)
        assert response.status == 304, headers
        assert await response.read() == b""
        assert response.headers["ETag"] == etag
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    changed = await client.get(path, headers={"If-None-Match": '"something-else"'})
    assert changed.status == 200


async def test_etags_differ_per_resource_and_are_stable(client):
    tags = [(await client.get(p)).headers["ETag"] for p in RESOURCES]
    assert len(set(tags)) == len(tags)
    assert [(await client.get(p)).headers["ETag"] for p in RESOURCES] == tags
    # index.m3u8 is index-v1-a1.m3u8 for a file with one video and one audio track: one representation, one ETag
    alias = await client.get("/hls/title_360p.mp4/index-v1-a1.m3u8")
    assert alias.headers["ETag"] == tags[1]


@pytest.mark.parametrize("path", RESOURCES + ERRORS + ["/status", "/hls/title_360p.mp4/seg-99.ts"])
async def test_cors_on_every_response(client, path):
    for method in ("GET", "HEAD"):
        response = await client.request(method, path)
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        exposed = response.headers["Access-Control-Expose-Headers"]
        for name in ("Content-Length", "Content-Range", "ETag"):
            assert name in exposed


async def test_preflight(client):
    response = await client.options(
        SEGMENT,
        headers={"Origin": "https://player.example", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "range, x-playback-session-id"},
    )
    assert response.status == 204
    h = response.headers
    assert h["Access-Control-Allow-Origin"] == "*"
    assert h["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"
    allowed = [x.strip().lower() for x in h["Access-Control-Allow-Headers"].split(",")]
    assert "range" in allowed and "x-playback-session-id" in allowed
    assert int(h["Access-Control-Max-Age"]) > 0
    # a preflight for a path that does not exist is still answered: the real request gets the 404
    assert (await client.options("/hls/missing.mp4/master.m3u8")).status == 204


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "TRACE", "PROPFIND", "CONNECT"])
@pytest.mark.parametrize("path", [SEGMENT, "/status", "/nope"])
async def test_other_methods_are_405(client, method, path):
    response = await client.request(method, path, data=b"x" if method in ("POST", "PUT") else None)
    assert response.status == 405
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert (await response.text()).startswith("METHOD_NOT_ALLOWED: ")


async def test_methods_the_http_parser_does_not_know_are_400(client):
    """llhttp refuses unknown methods before any handler runs; aiohttp answers 400 (without our headers)."""
    response = await client.request("BREW", SEGMENT)
    assert response.status == 400


async def test_status_document(client):
    await client.get(SEGMENT)
    await client.get("/hls/missing.mp4/master.m3u8")
    response = await client.get("/status")
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["version"]
    assert body["uptime_seconds"] >= 0
    assert body["requests"]["2xx"] >= 1 and body["requests"]["4xx"] >= 1
    for key in ("hits", "misses", "evictions", "entries", "bytes", "capacity", "builds"):
        assert key in body["segment_cache"]
    for key in ("hits", "misses", "entries"):
        assert key in body["metadata_cache"]
