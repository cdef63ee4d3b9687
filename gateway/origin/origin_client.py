"""One pooled async HTTP client per origin: HEAD/ranged GETs with timeouts, retries, a circuit breaker, single flight.

Everything here runs on the event loop that owns the ``aiohttp.ClientSession`` (created lazily on first use, so the
session belongs to the loop that serves requests). ``gateway.origin.remote`` bridges executor threads to it. The
ranged GETs of a plain ``http://`` origin go through this client's range pool instead (gateway/origin/
range_protocol.py: bodies received into one buffer, or into a scatter read's pieces), with the same retries,
breaker, counts and single flight; HEADs, other requests, https and unusual answers use the aiohttp session.

Failure model (what the handler sees):
- the origin answered 404 → ``OriginNotFound`` (the store turns it into NOT_FOUND like a missing local file);
- 412, a Content-Range naming another size, or a body shorter than announced → ``OriginChanged`` (FileChanged: 503
  and a retry on the new file; nothing read so far is used);
- connection errors, timeouts and 5xx are retried with backoff; when tries run out, or the breaker is open →
  ``OriginError`` with status 504 (timeout) or 502 (anything else) and a one-line reason.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Awaitable, Callable, Mapping

import aiohttp
from yarl import URL

from .errors import OriginChanged, OriginError, OriginNotFound
from .landing import Disarmed, Landing
from .range_protocol import RangePool, Unusual

log = logging.getLogger("gateway")

# (method, url, headers) -> headers to send: e.g. gateway.origin.s3's SigV4 signer
Signer = Callable[[str, str, Mapping[str, str]], Mapping[str, str]]


@dataclass(frozen=True)
class OriginInfo:
    """What a HEAD tells: the size and the validators of the object as the origin has it now."""

    size: int
    etag: str  # "" when the origin sends none
    last_modified: str  # the header as sent ("" when none)

    @property
    def mtime_ns(self) -> int:
        try:
            return int(parsedate_to_datetime(self.last_modified).timestamp()) * 1_000_000_000
        except (TypeError, ValueError, IndexError, OverflowError):
            return 0

    def conditions(self) -> dict[str, str]:
        """Headers that make a read fail (412) unless the object is still this one."""
        if self.etag and not self.etag.startswith("W/"):  # If-Match needs a strong comparison (RFC 9110 §13.1.1)
            return {"If-Match": self.etag}
        if self.last_modified:
            return {"If-Unmodified-Since": self.last_modified}
        return {}


@dataclass(frozen=True)
class OriginOptions:
    connect_timeout: float = 3.0  # seconds to open a connection
    timeout: float = 10.0  # seconds for one whole request (headers and body)
    connections: int = 64  # pooled connections per process (keep-alive)
    tries: int = 3  # attempts on connection errors, timeouts and 5xx
    backoff: tuple[float, ...] = (0.05, 0.2, 0.8)  # seconds before the 2nd, 3rd... attempt
    breaker_failures: int = 5  # consecutive failed attempts that open the breaker
    breaker_cooldown: float = 5.0  # seconds it stays open before one probe is let through

    def worst_case(self) -> float:
        """An upper bound on one call, retries included: what a blocked executor thread waits at most."""
        return self.tries * (self.connect_timeout + self.timeout) + sum(self.backoff[: self.tries]) + 5


class Breaker:
    """Closed → (``failures`` consecutive failures) open for ``cooldown`` → one probe (half open) → closed or
    open."""

    def __init__(self, failures: int, cooldown: float):
        self.failures, self.cooldown = failures, cooldown
        self.consecutive = 0
        self.open_until = 0.0
        self.probing = False
        self.opened = 0  # times it opened (stats)

    def admit(self) -> bool:
        if self.consecutive < self.failures:
            return True
        if time.monotonic() < self.open_until or self.probing:
            return False
        self.probing = True  # the one probe after the cool-down
        return True

    def success(self) -> None:
        self.consecutive, self.probing = 0, False

    def failure(self) -> None:
        self.consecutive += 1
        if self.consecutive >= self.failures and (self.probing or self.consecutive == self.failures):
            self.open_until = time.monotonic() + self.cooldown
            self.opened += 1
        self.probing = False

    @property
    def is_open(self) -> bool:
        return self.consecutive >= self.failures and time.monotonic() < self.open_until


class OriginCounts:
    """What one client counted (plain attributes: gateway/ops/metrics.py mirrors their growth)."""

    __slots__ = ("requests", "bytes", "shared", "latency_ns", "errors_timeout", "errors_connect", "errors_status_5xx",
                 "errors_truncated", "errors_breaker", "__weakref__")
    ERRORS = ("timeout", "connect", "status_5xx", "truncated", "breaker")

    def __init__(self) -> None:
        for name in self.__slots__[:-1]:
            setattr(self, name, 0)

    def add(self, name: str, n: int = 1) -> None:
        setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__[:-1]}


class OriginClient:
    """HEADs and ranged GETs against ``base_url`` (ends with "/"); ``name`` is what logs and errors call it."""

    def __init__(self, base_url: str, options: OriginOptions | None = None, signer: Signer | None = None, *,
                 fallback: bool = False):
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        # a fallback store's origin: every request says so (X-Gateway-Fallback), so that a gateway behind it does not
        # ask its own fallback in turn (gateway/origin/fallback.py, the loop guard)
        self.extra_headers = {"X-Gateway-Fallback": "1"} if fallback else {}
        self.options = options or OriginOptions()
        self.signer = signer
        self.name = URL(self.base_url).origin().human_repr()  # scheme://host:port, no path or query
        self.breaker = Breaker(self.options.breaker_failures, self.options.breaker_cooldown)
        self._session: aiohttp.ClientSession | None = None
        self._inflight: dict[tuple, asyncio.Future] = {}
        self._joined: dict[tuple, int] = {}  # callers that joined a flight (a landed range is copied for them)
        self.counts = OriginCounts()  # requests, bytes, errors by kind, shared (single-flight hits), latency
        self._warned_no_ranges = False
        # ranged GETs of a plain http:// origin: received into one buffer each (gateway/origin/range_protocol.py)
        self._ranges = RangePool(self.base_url, self.options.connections, self.options.connect_timeout) \
            if self.base_url.startswith("http://") and RANGE_POOL else None
        self._unusual = 0  # answers in a row left to aiohttp: at UNUSUAL_LIMIT, this origin's GETs all go there

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            o = self.options
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=o.connections, limit_per_host=o.connections,
                                               keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=o.timeout, sock_connect=o.connect_timeout),
                auto_decompress=False,  # ranges are of the stored bytes, never of a decoded body
                # a segment's range is read whole: a 64 KB buffer would pause and resume the socket ~25 times per MB
                read_bufsize=1 << 20,
                raise_for_status=False)
        return self._session

    async def close(self) -> None:
        if self._ranges is not None:
            self._ranges.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stats(self) -> dict:
        s = self.counts.as_dict()
        s["breaker_open"] = self.breaker.is_open
        s["breaker_opened"] = self.breaker.opened
        return s

    async def head(self, url: str) -> OriginInfo:
        """Size and validators of ``url`` (HEAD; a ``Range: bytes=0-0`` GET where HEAD is refused)."""
        async def fetch() -> OriginInfo:
            status, headers, _ = await self._request("HEAD", url, {})
            if status in (405, 501):
                status, headers, _ = await self._request("GET", url, {"Range": "bytes=0-0"})
            if status == 404 or status == 410:
                raise OriginNotFound(url)
            if status == 206:
                size = _content_range(headers.get("Content-Range", ""))[2]
            elif status == 200 and headers.get("Content-Length", "").isdigit():
                size = int(headers["Content-Length"])
            else:
                raise OriginError(502, f"origin {self.name} answered {status} to HEAD")
            if size is None:
                raise OriginError(502, f"origin {self.name} sent no usable size")
            return OriginInfo(size, headers.get("ETag", ""), headers.get("Last-Modified", ""))

        return await self._single_flight(("HEAD", url), fetch)

    async def get_range(self, url: str, info: OriginInfo, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the object ``info`` describes (stop clipped to its size by the caller)."""
        return joined(await self.get_range_chunks(url, info, start, stop))

    async def get_range_chunks(self, url: str, info: OriginInfo, start: int, stop: int,
                               landing: Landing | None = None) -> tuple[bytes, ...] | None:
        """``get_range`` as the chunks the socket gave: joining them is a copy of the whole range that a scatter
        read does not need. With ``landing`` (gateway/origin/landing.py) the range may be read straight into its
        pieces: then None (callers sharing that request get a copy)."""
        if stop <= start:
            return ()
        if landing is not None and (landing.start, landing.size) != (start, stop - start):
            landing = None  # a range clipped to the object's size: read, then found short, as without
        key = ("GET", url, info.etag, info.last_modified, start, stop)

        async def fetch() -> tuple[bytes, ...] | Landed:
            headers = {"Range": f"bytes={start}-{stop - 1}", **info.conditions()}
            status, got, body = await self._request("GET", url, headers, body=True, landing=landing, size=info.size)
            if status == 404 or status == 410:
                raise OriginNotFound(url)
            if status == 412:
                raise OriginChanged("replaced")
            if info.etag and got.get("ETag") and got["ETag"] != info.etag:  # an origin that ignores If-Match
                raise OriginChanged("replaced")
            if status == 206:
                first, _, total = _content_range(got.get("Content-Range", ""))
                if total is not None and total != info.size:
                    raise OriginChanged("replaced")
                if first != start:
                    raise OriginError(502, f"origin {self.name} answered another range than asked")
                if body is None:  # in the landing's pieces
                    return self._landed(key, landing)
                size = sum(map(len, body))
                if size > stop - start:  # more than asked (an origin rounding ranges up): only what was asked
                    body = (joined(body)[: stop - start],)
            elif status == 200:
                whole = joined(body)
                if len(whole) != info.size:
                    raise OriginChanged("replaced")
                if not self._warned_no_ranges:
                    self._warned_no_ranges = True
                    log.warning("origin %s ignores Range requests: whole files are read (slow)", self.name)
                body = (whole[start:stop],)
            else:
                raise OriginError(502, f"origin {self.name} answered {status} to a ranged GET")
            if sum(map(len, body)) < stop - start:
                self.counts.add("errors_truncated")
                raise OriginChanged("truncated")
            return body

        result = await self._single_flight(key, fetch)
        if isinstance(result, Landed):
            return None if result.landing is landing else (result.copy,)
        return result

    def _landed(self, key: tuple, landing: Landing) -> "Landed":
        """A range that landed: copied for the callers that joined its request, and no longer joinable (from here
        on the pieces are the leader's alone)."""
        task = self._inflight.get(key)
        if task is not None and task is asyncio.current_task():
            del self._inflight[key]
        copy = None
        if self._joined.pop(key, 0):
            try:
                copy = landing.gather()
            except (Disarmed, OSError) as e:
                raise OriginError(502, f"origin {self.name}: a shared range was abandoned ({e!r})") from None
        return Landed(landing, copy)

    async def probe(self, url: str) -> str | None:
        """None when the origin answers at all (any status below 500), else why not; one try, breaker counted."""
        try:
            status, _, _ = await self._request("HEAD", url, {}, tries=1)
        except OriginError as e:
            return e.reason
        return None if status < 500 else f"origin {self.name} answered {status}"

    async def _single_flight(self, key: tuple, fetch: Callable[[], Awaitable]):
        """Concurrent callers of the same key share one origin request (its result or its error). The request runs
        as a task of its own: a caller that goes away (a client disconnect cancels its handler) does not cancel it
        for the others."""
        task = self._inflight.get(key)
        if task is not None:
            self.counts.add("shared")
            self._joined[key] = self._joined.get(key, 0) + 1
        else:
            task = self._inflight[key] = asyncio.ensure_future(fetch())
            task.add_done_callback(functools.partial(self._done, key))
        return await asyncio.shield(task)

    def _done(self, key: tuple, task: asyncio.Future) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
            self._joined.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every caller went away

    async def send(self, method: str, url: str, headers: Mapping[str, str] | None = None, data: bytes = b"",
                   tries: int | None = None) -> tuple[int, Mapping[str, str], bytes]:
        """One whole request (a listing GET, a PUT with ``data``): (status, headers, body), retried as the reads are
        on connection errors, timeouts and 5xx. Not single-flight: writes and listings are the caller's to share."""
        status, got, body = await self._request(method, url, dict(headers or {}), body=True, tries=tries, data=data)
        return status, got, joined(body)

    async def _request(self, method: str, url: str, headers: dict[str, str], *, body: bool = False,
                       tries: int | None = None, data: bytes = b"", landing: Landing | None = None,
                       size: int = 0) -> tuple[int, Mapping[str, str], tuple[bytes, ...] | None]:
        """(status, headers, body) of the first attempt that is not a connection error, a timeout or a 5xx. ``size``:
        the object's, when known (the range pool never takes a longer body)."""
        tries = tries or self.options.tries
        fast = method == "GET" and body and not data and "Range" in headers and self._ranges is not None \
            and self._unusual < UNUSUAL_LIMIT and self._ranges.serves(url)
        if self.extra_headers:
            headers = {**headers, **self.extra_headers}
        if self.signer is not None:
            headers = dict(self.signer(method, url, headers, data) if data else self.signer(method, url, headers))
        reason, timed_out = "", False
        for attempt in range(tries):
            if attempt:
                await asyncio.sleep(self.options.backoff[min(attempt - 1, len(self.options.backoff) - 1)])
            if not self.breaker.admit():
                self.counts.add("errors_breaker")
                raise OriginError(502, f"origin {self.name} is failing: circuit open after "
                                       f"{self.breaker.consecutive} consecutive failures")
            started = time.perf_counter_ns()
            self.counts.add("requests")
            try:
                answer = await self._fast_get(url, headers, landing, size) if fast else None
                if answer is None:
                    answer = await self._aiohttp(method, url, headers, body, data)
                status, got, chunks = answer  # not ``data``: a retry sends the request's own body again
            except (asyncio.TimeoutError, TimeoutError):
                reason, timed_out, kind = f"origin {self.name} did not answer within {self.options.timeout:g} s", \
                    True, "timeout"
            except aiohttp.ClientPayloadError as e:  # body cut short of its Content-Length: the connection broke
                reason, timed_out, kind = f"origin {self.name} sent a truncated body ({type(e).__name__})", False, \
                    "truncated"
            except (aiohttp.ClientError, OSError) as e:
                reason, timed_out, kind = f"origin {self.name} unreachable: {type(e).__name__}", False, "connect"
            else:
                self.counts.add("latency_ns", time.perf_counter_ns() - started)
                self.counts.add("bytes", landing.size if chunks is None else sum(map(len, chunks)))
                if status < 500:
                    self.breaker.success()
                    return status, got, None if chunks is None else tuple(chunks)
                reason, timed_out, kind = f"origin {self.name} answered {status}", False, "status_5xx"
            self.counts.add(f"errors_{kind}")
            self.breaker.failure()
        raise OriginError(504 if timed_out else 502, reason + (f" ({tries} tries)" if tries > 1 else ""))

    async def _fast_get(self, url: str, headers: dict[str, str], landing: Landing | None = None, size: int = 0):
        """A ranged GET on the range pool; None when its answer is one for aiohttp (then asked again there)."""
        expect = (*((landing.start, landing.size) if landing is not None else (0, 0)), size)
        try:
            async with asyncio.timeout(self.options.timeout):
                answer = await self._ranges.get(url, headers, landing, expect)
            self._unusual = 0  # a plain answer: an odd one now and then never turns the pool off
            return answer
        except Unusual as e:
            self._unusual += 1
            if self._unusual == UNUSUAL_LIMIT:
                log.warning("origin %s: its answers go through aiohttp from now on (%s)", self.name, e)
            return None

    async def _aiohttp(self, method: str, url: str, headers: dict[str, str], body: bool, data: bytes):
        # encoded=True: the path goes out exactly as built (and as a signer signed it), never re-quoted
        async with self.session().request(method, URL(url, encoded=True), headers=headers,
                                          data=data or None, allow_redirects=False) as r:
            if body and method != "HEAD":
                _widen_reads(r)
                chunks = [chunk async for chunk in r.content.iter_any()]
            else:
                chunks = []
            return r.status, r.headers, chunks

    async def send_fresh(self, method: str, url: str, headers: Mapping[str, str] | None,
                         body: Callable[[], object], tries: int | None = None) -> tuple[int, Mapping[str, str], bytes]:
        """``send`` with a body made anew for each attempt by ``body()``: bytes (signed, as ``send``), or for an
        unsigned origin an async iterable (a file streamed, never whole in memory; give its Content-Length in
        ``headers``). A streamed body cannot be sent twice, so each attempt is one ``_request`` try, with the same
        backoff between them as the reads."""
        tries = tries or self.options.tries
        failed: OriginError | None = None
        for attempt in range(tries):
            if attempt:
                await asyncio.sleep(self.options.backoff[min(attempt - 1, len(self.options.backoff) - 1)])
            data = body()
            if self.signer is not None and not isinstance(data, bytes):
                raise TypeError("OriginClient.send_fresh: a signed origin needs a bytes body (the signature hashes it)")
            try:
                status, got, chunks = await self._request(method, url, dict(headers or {}), body=True, tries=1,
                                                          data=data)
            except OriginError as e:
                failed = e
                continue
            return status, got, joined(chunks)
        raise OriginError(failed.status, f"{failed.reason} ({tries} tries)")


# GATEWAY_ORIGIN_RANGE_POOL=0: every request through aiohttp (`gateway bench origin --both-paths` compares the two)
RANGE_POOL = os.environ.get("GATEWAY_ORIGIN_RANGE_POOL", "1") != "0"


@dataclass(frozen=True)
class Landed:
    """A range read into ``landing``'s pieces; ``copy``: its bytes for the callers that shared the request."""

    landing: Landing
    copy: bytes | None


UNUSUAL_LIMIT = 3  # answers in a row that the range pool leaves to aiohttp (chunked...) before it stops trying
RECV_SIZE = 1 << 20  # bytes per recv() on an origin connection (asyncio's default is 256 KB)


def _widen_reads(response: aiohttp.ClientResponse) -> None:
    """Let the connection's transport read up to RECV_SIZE per recv(): a 1.5 MB range in 2 recv calls and parser
    callbacks rather than 6 (the setting stays with the pooled connection)."""
    transport = response.connection.transport if response.connection is not None else None
    if transport is not None and getattr(transport, "max_size", RECV_SIZE) < RECV_SIZE:
        transport.max_size = RECV_SIZE


def joined(chunks: tuple[bytes, ...]) -> bytes:
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # b"" for none


def _content_range(value: str) -> tuple[int | None, int | None, int | None]:
    """(first, last, complete length) of ``bytes a-b/n``; None where absent or "*"."""
    try:
        unit, _, rest = value.strip().partition(" ")
        span, _, total = rest.partition("/")
        first, _, last = span.partition("-")
        return (int(first) if first.isdigit() else None, int(last) if last.isdigit() else None,
                int(total) if total.isdigit() else None)
    except ValueError:
        return None, None, None
