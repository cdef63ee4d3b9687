"""HTTP semantics shared by every endpoint: CORS, caching headers, conditional requests and byte ranges.

Packaged bodies (playlists, segments) are built whole and then sliced, so ranges, HEAD and conditionals behave
exactly as for a static file. One range per request: a multi-range request gets the full 200 (players never send
them, and multipart/byteranges would only add a code path). Ranges follow RFC 9110 §14 on every endpoint (/mp4's
decision is ours too, see gateway.http.download): an invalid range-set (``bytes=abc``, ``bytes=5-2``) is ignored → 200
(§14.2 lets a server ignore it); a last-pos at or past the end, however many digits, is clamped → 206; a valid but
unsatisfiable one (first-pos ≥ length, ``bytes=-0``) is 416 with ``Content-Range: bytes */len``.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Awaitable, Callable

from aiohttp import web

from .errors import error_response

ALLOWED_METHODS = "GET, HEAD, OPTIONS"
LICENSE_METHODS = "GET, HEAD, POST, OPTIONS"  # ClearKey license requests are POSTs
EXPOSED_HEADERS = "Content-Length, Content-Range, Content-Type, ETag, Last-Modified, Accept-Ranges, Date"
PREFLIGHT_MAX_AGE = 86400
_RANGE_SPEC = re.compile(r"\s*([0-9]*)\s*-\s*([0-9]*)\s*", re.ASCII)
_HUGE = 1 << 64  # stands for any position with more digits than a file size can have


class RangeNotSatisfiable(Exception):
    pass


@dataclass(frozen=True)
class ByteRange:
    start: int
    stop: int  # exclusive

    def content_range(self, length: int) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{length}"


def parse_range(header: str, length: int) -> ByteRange | None:
    """The one range of a Range header, None to answer the full body, or RangeNotSatisfiable (RFC 9110 §14.1.2)."""
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None  # unknown range units are ignored
    specs = [s for s in spec.split(",") if s.strip()]  # a list rule: empty elements are ignored (§5.6.1.2)
    if len(specs) != 1:
        return None  # multi-range: full 200, documented above; no range at all: invalid, ignored
    m = _RANGE_SPEC.fullmatch(specs[0])
    if not m or not (m[1] or m[2]):
        return None  # invalid range-spec: ignored (§14.2)
    if m[1]:
        start = _position(m[1])
        last = _position(m[2]) if m[2] else _HUGE
        if last < start:
            return None  # invalid int-range (§14.1.1): ignored
        if start >= length:
            raise RangeNotSatisfiable(header)
        return ByteRange(start, min(last, length - 1) + 1)
    suffix = _position(m[2])
    if suffix == 0 or length == 0:
        raise RangeNotSatisfiable(header)
    return ByteRange(max(0, length - suffix), length)


def _position(digits: str) -> int:
    """A byte position; beyond 19 significant digits it is just "past any file" (and int() of a header-long digit
    string would raise ValueError past Python's 4300-digit limit)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else _HUGE


def http_date(timestamp: float) -> str:
    return _http_date(int(timestamp))


@functools.lru_cache(maxsize=4096)
def _http_date(seconds: int) -> str:
    """Formatting a date costs ~2 µs; a node answers for a few thousand distinct mtimes at most."""
    return format_datetime(datetime.fromtimestamp(seconds, timezone.utc), usegmt=True)


def _parse_date(text: str) -> float | None:
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def if_range_holds(request: web.BaseRequest, etag: str, last_modified: float) -> bool:
    """Whether a Range may be honoured: no If-Range, or If-Range names the current representation (§13.1.5)."""
    value = request.headers.get("If-Range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == etag  # strong comparison: a weak validator never matches
    date = _parse_date(value)
    return date is not None and int(last_modified) <= date


def not_modified(request: web.BaseRequest, etag: str, last_modified: float) -> bool:
    """If-None-Match (weak comparison), else If-Modified-Since (§13.1.2, §13.1.3)."""
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        if inm.strip() == "*":
            return True
        wanted = {tag.strip().removeprefix("W/") for tag in inm.split(",")}
        return etag.removeprefix("W/") in wanted
    ims = request.headers.get("If-Modified-Since")
    if ims is not None:
        date = _parse_date(ims)
        return date is not None and int(last_modified) <= date
    return False


def cache_control(max_age: int) -> str:
    return f"public, max-age={max_age}" if max_age > 0 else "no-store"


def range_decision(request: web.BaseRequest, length: int, etag: str, last_modified: float) -> ByteRange | None:
    """The range to serve, None for the full body; raises RangeNotSatisfiable."""
    header = request.headers.get("Range")
    if header is None or not if_range_holds(request, etag, last_modified):
        return None
    return parse_range(header, length)


def range_not_satisfiable(length: int) -> web.Response:
    return error_response(416, "RANGE_NOT_SATISFIABLE", "no satisfiable byte range", Content_Range=f"bytes */{length}")


async def serve_packaged(
    request: web.BaseRequest,
    body: Callable[[], Awaitable[bytes]],
    *,
    content_type: str,
    etag: str,
    last_modified: float,
    max_age: int,
    private: bool = False,
) -> web.Response:
    """200/206/304/416 for a body built in memory, built only when the client has no valid copy.

    aiohttp drops the body of a HEAD response but keeps its Content-Length, so HEAD and GET share this path.
    ``private`` (keys): no shared cache may store it.
    """
    control = "private, no-store" if private else cache_control(max_age)
    validators = {"ETag": etag, "Last-Modified": http_date(last_modified), "Cache-Control": control}
    if not_modified(request, etag, last_modified):
        return web.Response(status=304, headers=validators)
    data = await body()
    try:
        byte_range = range_decision(request, len(data), etag, last_modified)
    except RangeNotSatisfiable:
        return range_not_satisfiable(len(data))
    headers = {**validators, "Accept-Ranges": "bytes"}
    if byte_range is None:
        return whole_body(data, content_type, headers)
    headers["Content-Range"] = byte_range.content_range(len(data))
    part = data[byte_range.start : byte_range.stop]
    return web.Response(status=206, body=part, content_type=content_type, headers=headers)


def whole_body(data: bytes, content_type: str, headers: dict[str, str]) -> web.Response:
    """The 200 of a packaged body: ``headers`` are its validators, Cache-Control and Accept-Ranges (what
    gateway/http/fast_path.py keeps to answer the same request again)."""
    response_class = LargeBodyResponse if len(data) >= LARGE_BODY else web.Response
    return response_class(body=data, content_type=content_type, headers=headers)


LARGE_BODY = 64 * 1024  # below this, one coalesced write of headers + body is cheaper than a second send()


class LargeBodyResponse(web.Response):
    """A response whose body goes to the transport as it is: the headers first, then a view of the body bytes.

    aiohttp coalesces headers and body into one new bytes object before writing (on Python < 3.12 its transport has
    no zero-copy writelines): a copy of the whole segment per response, cached or not. Writing them apart costs one
    more send() of a few hundred bytes; the body then reaches the socket from the very bytes the cache holds, and
    only what the socket does not take at once is copied into the transport's buffer."""

    async def write_eof(self, data: bytes = b"") -> None:
        body = self._body
        plain = (isinstance(body, bytes) and not self._eof_sent and self._compressed_body is None
                 and not getattr(self, "_must_be_empty_body", False) and self._req is not None
                 and self._req.method != "HEAD")
        if not plain:
            await super().write_eof(data)
            return
        self._payload_writer.send_headers()
        await web.StreamResponse.write(self, memoryview(body))
        await web.StreamResponse.write_eof(self)


def preflight(request: web.BaseRequest) -> web.Response:
    """CORS preflight: any origin, our methods (POST for ClearKey licenses), and whatever request headers the browser
    asks for (plus Range)."""
    asked = request.headers.get("Access-Control-Request-Headers", "")
    allowed = ["Range"] + [h.strip() for h in asked.split(",") if h.strip() and h.strip().lower() != "range"]
    methods = LICENSE_METHODS if request.rel_url.raw_path.endswith("/clearkey") else ALLOWED_METHODS
    return web.Response(
        status=204,
        headers={
            "Allow": methods,
            "Access-Control-Allow-Methods": methods,
            "Access-Control-Allow-Headers": ", ".join(allowed),
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
            "Cache-Control": f"public, max-age={PREFLIGHT_MAX_AGE}",
        },
    )


def add_common_headers(response: web.StreamResponse) -> None:
    """CORS and safe defaults on every response the app sends, errors included (the app's response hook)."""
    headers = response.headers
    headers.setdefault("Access-Control-Allow-Origin", "*")
    headers.setdefault("Access-Control-Expose-Headers", EXPOSED_HEADERS)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.status >= 400:
        headers.setdefault("Cache-Control", "no-store")
