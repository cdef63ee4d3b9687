"""Nothing outside the store is readable, whatever the wire bytes say.

Requests go out as raw bytes over a socket so that no client library normalises the path first.
"""
from __future__ import annotations

import asyncio
import os

import pytest

from gateway.origin.store import FileChanged, Store

from .conftest import add_to_store

SECRET = b"TOP-SECRET-CONTENT"


async def raw_request(client, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def get(target: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n".encode("latin-1")


@pytest.fixture
def outside(tmp_path, store):
    """A secret file and a real MP4 right next to the store, plus symlinks pointing at them from inside."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    add_to_store(tmp_path, "title_180p.mp4", "outside.mp4")
    (store / "sub").mkdir()
    os.symlink(tmp_path / "secret.txt", store / "link_secret.mp4")
    os.symlink(tmp_path / "outside.mp4", store / "link_outside.mp4")
    os.symlink(tmp_path, store / "sub" / "escape")
    os.symlink(store / "title_240p.mp4", store / "sub" / "inside_link.mp4")
    return tmp_path


# README: "400 malformed name" — components starting with '.' (plain or %-encoded dot segments), encoded slashes,
# backslashes or NUL, empty components, a url set split by a slash: refused by the URL grammar before any file access
MALFORMED = [
    "/mp4/../secret.txt",
    "/mp4/../../secret.txt",
    "/mp4/%2e%2e/secret.txt",
    "/mp4/%2E%2e/secret.txt",
    "/mp4/%2e%2E%2fsecret.txt",
    "/mp4/..%2fsecret.txt",
    "/mp4/..%2Fsecret.txt",
    "/mp4/sub/..%2f..%2fsecret.txt",
    "/mp4/..\\secret.txt",
    "/mp4/..%5csecret.txt",
    "/mp4/.%2e/secret.txt",
    "/mp4//etc/passwd",
    "/mp4/%2fetc%2fpasswd",
    "/mp4/%2Fetc/passwd",
    "//mp4/../secret.txt",
    "/mp4/sub/./../../secret.txt",
    "/mp4/secret.txt%00.mp4",
    "/mp4/./title_240p.mp4",
    "/hls/../outside.mp4/master.m3u8",
    "/hls/%2e%2e/outside.mp4/master.m3u8",
    "/hls/..%2foutside.mp4/master.m3u8",
    "/hls/%2e%2e,/outside,.mp4.urlset/master.m3u8",
    "/hls/,..%2foutside,.mp4.urlset/master.m3u8",
    "/hls/sub/,escape/outside,.mp4.urlset/master.m3u8",
    "http://test/mp4/../secret.txt",
]
# README: "404 missing file" — well-formed names that do not lead to a regular file inside the store: symlinks out of
# it, directories, and a literal "%2e%2e" name (%25 decodes once, to a harmless file name that does not exist)
NOT_IN_STORE = [
    "/mp4/%252e%252e/secret.txt",
    "/mp4/link_secret.mp4",
    "/mp4/sub/escape/secret.txt",
    "/mp4/sub/escape/outside.mp4",
    "/mp4/sub",
    "/hls/link_outside.mp4/master.m3u8",
    "/hls/link_outside.mp4/seg-1.ts",
    "/hls/sub/escape/outside.mp4/master.m3u8",
    "/hls/sub/escape/outside.mp4/seg-1.ts",
    "/hls/sub/escape/,outside,.mp4.urlset/master.m3u8",
]
TRAVERSALS = {**dict.fromkeys(MALFORMED, 400), **dict.fromkeys(NOT_IN_STORE, 404)}


@pytest.mark.parametrize("target", TRAVERSALS)
async def test_nothing_outside_the_store_is_readable(client, store, outside, target):
    status, headers, body = await raw_request(client, get(target))
    assert status == TRAVERSALS[target], (status, body[:200])
    assert SECRET not in body
    assert str(outside).encode() not in body
    assert headers["access-control-allow-origin"] == "*"


async def test_symlink_out_looks_exactly_like_a_missing_file(client, outside):
    _, _, link = await raw_request(client, get("/mp4/link_secret.mp4"))
    _, _, missing = await raw_request(client, get("/mp4/no_such_file.mp4"))
    assert link.replace(b"link_secret", b"X") == missing.replace(b"no_such_file", b"X")


async def test_symlink_inside_the_store_is_followed(client, outside):
    status, headers, body = await raw_request(client, get("/hls/sub/inside_link.mp4/seg-1.ts"))
    assert status == 200 and body[:1] == b"\x47"
    status, _, _ = await raw_request(client, get("/mp4/sub/inside_link.mp4", "HEAD"))
    assert status == 200


async def test_directories_and_special_files_are_not_found(client, store):
    os.mkfifo(store / "fifo.mp4")
    for target in ("/mp4/fifo.mp4", "/hls/fifo.mp4/master.m3u8", "/mp4/sub_dir", "/hls/sub_dir/master.m3u8"):
        (store / "sub_dir").mkdir(exist_ok=True)
        status, _, _ = await raw_request(client, get(target))
        assert status == 404, target


HOSTILE = [
    get("/hls/" + "a" * 5000 + "/master.m3u8"),  # long but under aiohttp's line limit → our 414
    get("/hls/" + "a" * 9000 + "/master.m3u8"),  # over aiohttp's 8190-byte request line limit → its 400
    get("/mp4/title_240p.mp4", extra="Range: bytes=" + "9" * 5000 + "-\r\n"),
    get("/mp4/title_240p.mp4", extra="Range: bytes=-" + "1" * 30 + "\r\n"),
    get("/hls/title_240p.mp4/seg-1.ts", extra="Range: bytes=\x01\x02-3\r\n"),
    get("/hls/title_240p.mp4/seg-1.ts", extra="Range: bytes=1-2, 3-\r\n"),
    get("/hls/title_240p.mp4/seg-1.ts", "BREW"),
    get("/hls/title_240p.mp4/seg-1.ts", "G3T"),
    get("/hls/title_240p.mp4/seg-1.ts", "DELETE"),
    get("/hls/title_240p.mp4/seg-%%%.ts"),
    get("/hls/title_240p.mp4/seg-%ZZ.ts"),
    get("/hls/title_240p.mp4/seg-1.ts?" + "x" * 6000),
    b"GET /hls/title_240p.mp4/seg-1.ts HTTP/9.9\r\nHost: test\r\nConnection: close\r\n\r\n",
    b"GET hls/x HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello on the plain port
]


@pytest.mark.parametrize("request_bytes", HOSTILE, ids=range(len(HOSTILE)))
async def test_hostile_requests_get_a_clean_answer(client, request_bytes):
    status, _, body = await raw_request(client, request_bytes)
    assert status < 500 or status == 505, body[:300]
    assert b"Traceback" not in body
    # and the server is still fine
    ok, _, seg = await raw_request(client, get("/hls/title_240p.mp4/seg-1.ts"))
    assert ok == 200 and seg[:1] == b"\x47"


def test_store_identify_refuses_escapes(store, outside):
    s = Store(store)
    for path in ("../secret.txt", "/etc/passwd", "link_secret.mp4", "sub/escape/outside.mp4", "sub", "", "a\x00b"):
        with pytest.raises(Exception) as info:
            s.identify(path)
        assert str(outside) not in str(info.value)
    assert s.identify("sub/inside_link.mp4").store_path == "title_240p.mp4"


def test_reader_notices_a_file_replaced_after_identification(store):
    s = Store(store)
    identity = s.identify("title_240p.mp4")
    (store / "title_240p.mp4").write_bytes(b"new content")
    with pytest.raises(FileChanged):
        s.open(identity)
