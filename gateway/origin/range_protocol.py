"""Ranged GETs of a plain ``http://`` origin received straight into one buffer of the answer's Content-Length.

aiohttp's parser copies every body chunk into a new ``bytes`` and a range is then a tuple of chunks; here an asyncio
``BufferedProtocol`` lets the socket's ``recv_into`` write the body into one preallocated buffer (the only copy out
of the kernel), on keep-alive connections pooled per origin (at most ``limit`` sockets, idle ones reused LIFO).
The status line and headers are parsed minimally; anything this path does not handle (chunked or encoded bodies,
1xx, no or several Content-Lengths, HTTP/1.0, a malformed head) raises ``Unusual`` having closed the connection,
and ``OriginClient`` asks again through aiohttp, so such answers give exactly aiohttp's outcome. Failures raise the
exceptions aiohttp raises for them (``ClientPayloadError`` for a body cut short, ``ServerDisconnectedError``,
``ClientConnectorError``, ``TimeoutError``): the client's retries, breaker and counts treat both paths alike.
A scatter read's range (a ``Landing``: the TS muxer's pieces) is read with ``readv`` straight into those pieces
when the answer is the 206 asked for: gateway/origin/landing.py.
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from typing import Mapping

import aiohttp
import numpy as np
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict
from yarl import URL

from .landing import Disarmed, Landing
from .unfilled import unfilled

HEAD_READ = 2048  # bytes per recv until the head is parsed: whatever body comes with it is copied once
MAX_HEAD = 64 * 1024  # a longer head is not an origin's answer to a range: aiohttp decides
KEEPALIVE = 15.0  # seconds an idle connection is kept (origins close theirs after 20-75 s)

class Unusual(Exception):
    """An answer this path leaves to aiohttp (the connection is closed; nothing was returned)."""


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection, one request at a time: ``request`` sends it and waits for the whole answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self._scratch = bytearray(HEAD_READ)
        self._head = bytearray()
        self._body: bytes | None = None
        self._view: memoryview | None = None
        self._filled = 0
        self._reading = False  # an answer is expected: bytes outside one are not ours to interpret
        self._answer: asyncio.Future | None = None
        self._status = 0
        self._headers: CIMultiDict | None = None
        self.keep = False
        self._sock = None
        self._landing: Landing | None = None  # where a 206 of the expected range goes (gateway/origin/landing.py)
        self._expect = (0, 0, 0)  # (first byte, length) of the range asked, the object's size (0: not known)
        self._landing_fd = -1  # reading into the landing: the transport is paused, this fd is watched instead
        self._dup = -1  # the socket's second descriptor (asyncio lets no one else watch a transport's own)
        self.landed = False

    # --- asyncio callbacks -------------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self._sock = transport.get_extra_info("socket")

    def get_buffer(self, sizehint: int):
        if self._view is not None:
            return self._view[self._filled:]
        return self._scratch

    def buffer_updated(self, n: int) -> None:
        if self._view is not None:
            self._filled += n
            if self._filled == len(self._view):
                self._done()
            else:
                self._ack()
            return
        if not self._reading:  # unsolicited bytes (pipelined garbage): the framing cannot be trusted any more
            self._close()
            return
        self._head += memoryview(self._scratch)[:n]
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._fail(Unusual("head too long"))
            return
        try:
            length = self._parse(bytes(self._head[:end]).decode("latin-1"))
        except Unusual as e:
            self._fail(e)
            return
        rest = memoryview(self._head)[end + 4:]
        if len(rest) > length:  # more than the answer: pipelined garbage
            rest.release()
            self._fail(Unusual("bytes after the body"))
            return
        if self._landing is not None and self._lands(length):
            self._land(rest)
            return
        self._body, self._view = unfilled(length)
        self._view[: len(rest)] = rest
        self._filled = len(rest)
        rest.release()
        if self._filled == length:
            self._done()

    def eof_received(self) -> bool:
        return False  # close: a half-closed origin connection is of no use

    def connection_lost(self, exc) -> None:
        self.lost = True
        in_body = self._view is not None or self._landing_fd >= 0
        self._stop_landing()
        if self._dup >= 0:  # before the transport closes its own: the connection ends with it
            os.close(self._dup)
            self._dup = -1
        if self._answer is not None and not self._answer.done():
            if in_body:
                error = aiohttp.ClientPayloadError("Response payload is not completed")
            else:
                error = aiohttp.ServerDisconnectedError()
            self._answer.set_exception(error)

    # --- the request -------------------------------------------------------------------------------------------
    async def request(self, data: bytes, landing: Landing | None = None, expect: tuple[int, int, int] = (0, 0, 0)
                      ) -> tuple[int, CIMultiDict, bytes | None]:
        """(status, headers, body); body None when it landed in ``landing`` (a 206 of ``expect``)."""
        self._head.clear()
        self._body = None
        self._landing, self._expect, self.landed = landing, expect, False
        self._filled, self._reading, self.keep = 0, True, False
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        try:
            await self._answer
        finally:
            self._reading = False
            self._answer = None
            self._landing = None
            if self._landing_fd >= 0:  # cancelled (a timeout) while landing: the pieces are not to be touched
                self._stop_landing()
                self._close()
        body, self._body = self._body, None
        return self._status, self._headers, None if self.landed else body

    def _parse(self, head: str) -> int:
        """The body's length; status and headers kept. Unusual for anything but a plain HTTP/1.1 answer."""
        lines = head.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if version != "HTTP/1.1" or not code.isdigit() or rest[3:4] not in ("", " "):
            raise Unusual("status line")
        status = int(code)
        if status < 200:
            raise Unusual("1xx")
        headers = CIMultiDict()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or not name.isprintable():
                raise Unusual("header line")  # obs-fold, a space before the colon, junk
            headers.add(name, value.strip(" \t"))
        if "Transfer-Encoding" in headers or headers.get("Content-Encoding", "identity").lower() != "identity":
            raise Unusual("coding")
        lengths = headers.getall("Content-Length", [])
        if status in (204, 304) and not lengths:
            length = 0
        elif len(lengths) != 1 or not lengths[0].isdigit():
            raise Unusual("length")
        else:
            length = int(lengths[0])
        # a body longer than the object (a hostile or broken length), or an error page longer than a head: never
        # allocated here; aiohttp's path decides (and reads it as a stream)
        limit = self._expect[2] if status < 300 else MAX_HEAD
        if limit and length > limit:
            raise Unusual("longer than the object")
        self._status, self._headers = status, headers
        self.keep = "close" not in headers.get("Connection", "").lower()
        return length

    # --- landing: the body read straight into a scatter read's pieces -------------------------------------------
    def _lands(self, length: int) -> bool:
        start, size, _ = self._expect
        return self._status == 206 and length == size and \
            self._headers.get("Content-Range", "").startswith(f"bytes {start}-")

    def _land(self, rest: memoryview) -> None:
        landing = self._landing
        try:
            if len(rest):
                landing.put(np.frombuffer(rest, dtype=np.uint8).__array_interface__["data"][0], len(rest))
        except (Disarmed, OSError) as e:
            rest.release()
            self._fail(aiohttp.ClientPayloadError(f"the body could not land: {e!r}"))
            return
        rest.release()
        # the body is usually in the socket already (loopback, a near origin): read it now, and only when the
        # socket runs dry switch to watching it (a dup'd fd, the transport paused: ~75 µs of event-loop calls)
        if not self._read_landing(self._sock.fileno()) or self._answer is None:
            return
        if self._dup < 0:
            self._dup = os.dup(self._sock.fileno())
        self._landing_fd = self._dup
        self.transport.pause_reading()
        asyncio.get_running_loop().add_reader(self._landing_fd, self._land_ready)

    def _land_ready(self) -> None:
        if self._landing is not None:
            self._read_landing(self._landing_fd)

    def _read_landing(self, fd: int) -> bool:
        """``readv`` into the landing until it is full or the socket has nothing more; True when it is to be
        waited for (EAGAIN), False when the answer is over (landed or failed)."""
        landing = self._landing
        while landing.filled < landing.size:
            try:
                n = landing.readv(fd)
            except Disarmed:
                self._fail(aiohttp.ClientPayloadError("the body's reader went away"))
                return False
            if n == 0:  # the origin closed the connection before the end of the body
                self._fail(aiohttp.ClientPayloadError("Response payload is not completed"))
                return False
            if n < 0:
                if -n in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    self._ack()
                    return True
                self._fail(aiohttp.ClientOSError(-n, os.strerror(-n)))
                return False
        self._landed()
        return False

    def _landed(self) -> None:
        self._stop_landing()
        self.landed, self._reading = True, False
        if not self.transport.is_closing():
            self.transport.resume_reading()
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(None)

    def _stop_landing(self) -> None:
        if self._landing_fd >= 0:
            try:
                asyncio.get_running_loop().remove_reader(self._landing_fd)
            except RuntimeError:  # no running loop: closing at exit
                pass
            self._landing_fd = -1

    def _ack(self) -> None:
        """ACK what was read at once: an origin may hold the body's tail until its data is acknowledged (Nagle, a
        full send buffer), and Linux delays ACKs up to 40 ms (a cold TS segment from loopback nginx took ~48 ms
        through aiohttp, 8 ms here; 4 ms from a local directory)."""
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:  # not TCP as expected: ACKs as the kernel sees fit
            pass

    def _done(self) -> None:
        self._view.release()
        self._view, self._reading = None, False  # a recv beyond the body now reads into the scratch (and closes)
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(None)

    def _fail(self, error: Exception) -> None:
        self._stop_landing()
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self._close()

    def _close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class RangePool:
    """The keep-alive connections to one ``http://`` origin (at most ``limit``), and ``get`` on them."""

    def __init__(self, base_url: str, limit: int, connect_timeout: float):
        url = URL(base_url)
        self.host, self.port = url.raw_host, url.port or 80
        authority = url.raw_host if ":" not in url.raw_host else f"[{url.raw_host}]"
        self.host_header = authority if url.is_default_port() else f"{authority}:{url.port}"
        self.prefix = f"http://{url.raw_authority}/"
        self.limit, self.connect_timeout = limit, connect_timeout
        self._idle: list[_Connection] = []
        self.opened = 0  # connections made (tests: keep-alive reuse and the bound)
        self.landed = 0  # ranges read straight into a scatter read's pieces
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def serves(self, url: str) -> bool:
        return url.startswith(self.prefix)

    async def get(self, url: str, headers: Mapping[str, str], landing: Landing | None = None,
                  expect: tuple[int, int, int] = (0, 0, 0)) -> tuple[int, CIMultiDict, tuple[bytes, ...] | None]:
        """(status, headers, (body,)) of one GET of ``url`` (under ``prefix``); a reused connection the origin had
        closed meanwhile is replaced once, as aiohttp does for idempotent requests."""
        lines = [f"GET {url[len(self.prefix) - 1:]} HTTP/1.1\r\nHost: {self.host_header}\r\n"]
        lines += [f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "host"]
        data = "".join(lines).encode("latin-1") + b"\r\n"
        slots = self._bind()
        async with slots:
            for fresh in (False, True):
                conn = None if fresh else self._reuse()
                reused = conn is not None
                if conn is None:
                    conn = await self._connect()
                ok = False
                try:
                    if landing is not None:
                        landing.reset()
                    status, got, body = await conn.request(data, landing, expect)
                    ok = True
                except aiohttp.ServerDisconnectedError:
                    if reused and not fresh:
                        continue
                    raise
                finally:
                    if ok and conn.keep and not conn.lost:
                        conn.idle_since = time.monotonic()
                        self._idle.append(conn)
                    else:
                        conn._close()
                if body is None:
                    self.landed += 1
                    return status, got, None
                return status, got, (body,)
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in self._idle:
            conn._close()
        self._idle.clear()

    def _bind(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a client used from another loop (tests): that loop's sockets are not ours
            self._idle.clear()
            self._loop, self._slots = loop, asyncio.Semaphore(self.limit)
        return self._slots

    def _reuse(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.lost and now - conn.idle_since < KEEPALIVE:
                return conn
            conn._close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
                self.opened += 1
        except OSError as e:
            key = ConnectionKey(self.host, self.port, False, True, None, None, None, None)
            raise aiohttp.ClientConnectorError(key, e) from None
        return conn
