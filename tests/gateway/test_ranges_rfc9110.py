"""Range requests per RFC 9110 §14 on /mp4/ and on a packaged segment, against a real `gateway serve` (issue 10 part 8).

An invalid range-set is ignored (200, the whole body), a last-pos at or past the end is clamped whatever its size
(206), a valid but unsatisfiable range is 416 with ``Content-Range: bytes */<length>``. The oracle is independent of
the server: the file's bytes (/mp4/) or the segment's full 200 body, sliced here.
"""
from __future__ import annotations

import http.client
import shutil

import pytest

from fixtures.generate import fixture_path

from .processes import HANG_GUARD, Gateway

FILE = "title_240p.mp4"
URLS = ["/mp4/" + FILE, f"/hls/{FILE}/seg-1.ts"]
TWO_63 = str(2**63)

# (Range header, expected) where expected is "full" (200), "416", or (first, last) with last possibly None (to the
# end), or a negative first (a suffix of that many bytes); "L" in a header is the body length
CASES = [
    ("bytes=abc", "full"),  # the example: invalid → ignored
    ("bytes=x-y", "full"),
    ("bytes=--1", "full"),
    ("bytes=5-2", "full"),  # last-pos < first-pos: an invalid int-range (§14.1.1)
    ("bytes=1-2-3", "full"),
    ("bytes=-", "full"),
    ("bytes=", "full"),
    ("items=0-1", "full"),  # a unit we do not know: ignored (§14.2)
    ("bytes=0-1,5-9", "full"),  # multi-range: the documented full 200 (gateway/http/responses.py)
    ("bytes=0-" + TWO_63, (0, None)),  # the example: last-pos ≥ 2^63 is clamped
    ("bytes=7-" + "9" * 19, (7, None)),
    ("bytes=10-" + "9" * 5000, (10, None)),  # past Python's int() digit limit
    ("bytes=0-L", (0, None)),  # last-pos == length: clamped
    ("bytes=100-199", (100, 199)),
    ("Bytes=3-4", (3, 4)),  # units are case-insensitive
    ("bytes=0-1,", (0, 1)),  # empty list elements are ignored (§5.6.1.2): one range
    ("bytes=-100", (-100, None)),
    ("bytes=-" + TWO_63, (0, None)),  # a suffix longer than the body: all of it
    ("bytes=L-", "416"),  # first-pos ≥ length: unsatisfiable
    ("bytes=" + TWO_63 + "-", "416"),
    ("bytes=" + "9" * 5000 + "-", "416"),
    ("bytes=-0", "416"),  # a zero-length suffix is unsatisfiable (§14.1.1)
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranges")
    store = root / "store"
    store.mkdir()
    shutil.copyfile(fixture_path(FILE), store / FILE)
    gw = Gateway(root / "gateway.log", store=store)
    try:
        yield gw, (store / FILE).read_bytes()
    finally:
        gw.close()


def request(gw: Gateway, path: str, method: str = "GET", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=HANG_GUARD)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", URLS)
@pytest.mark.parametrize("header, expected", CASES, ids=[c[0][:24] for c in CASES])
def test_range_per_rfc9110(server, path, header, expected):
    gw, file_bytes = server
    if path.startswith("/mp4/"):
        full = file_bytes  # the oracle is the file itself
    else:
        status, _, full = request(gw, path)
        assert status == 200
    length = len(full)
    header = header.replace("=L", f"={length}").replace("-L", f"-{length}")
    status, headers, body = request(gw, path, headers={"Range": header})
    if expected == "full":
        assert (status, body) == (200, full)
        assert "Content-Range" not in headers
    elif expected == "416":
        assert status == 416
        assert headers["Content-Range"] == f"bytes */{length}"
    else:
        first, last = expected
        start = max(0, length + first) if first < 0 else first
        stop = length if last is None else min(last + 1, length)
        assert status == 206
        assert headers["Content-Range"] == f"bytes {start}-{stop - 1}/{length}"
        assert body == full[start:stop]
        assert int(headers["Content-Length"]) == stop - start
    head_status, head_headers, head_body = request(gw, path, "HEAD", {"Range": header})
    assert (head_status, head_body) == (status, b"")
    assert head_headers.get("Content-Range") == headers.get("Content-Range")
