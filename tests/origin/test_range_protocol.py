"""The range pool (gateway/origin/range_protocol.py): ranged GETs of a plain http:// origin received into one buffer
on pooled keep-alive connections. Against the real nginx origin, the aiohttp fault proxy, and a raw TCP origin
that answers exactly the bytes a fault needs. Every fault is played twice, once through the range pool and once
through aiohttp alone, and both must end the same way (the same bytes, or the same error, status, reason and
counts)."""
from __future__ import annotations

import asyncio
import re
import socket

import numpy as np
import pytest

from gateway.http.products import Scatter, build_segment
from gateway.origin import store as store_module
from gateway.origin.landing import Disarmed, Landing
from gateway.origin.origin_client import OriginChanged, OriginClient, OriginError, OriginOptions
from gateway.origin.store import parse_presentation
from gateway.origin.remote import RemoteStore
from gateway.origin.store import Store
from packagers.media_set import MediaSet
from packagers.naming import TrackSpec
from packagers.ts import TsMuxer

OPTIONS = OriginOptions(timeout=2.0, connect_timeout=2.0, tries=2, backoff=(0.01,), breaker_failures=100)


def clients(url: str, options: OriginOptions = OPTIONS) -> tuple[OriginClient, OriginClient]:
    """(through the range pool, through aiohttp only)"""
    fast, slow = OriginClient(url, options), OriginClient(url, options)
    slow._ranges = None
    assert fast._ranges is not None
    return fast, slow


async def outcome(client: OriginClient, url: str, start: int, stop: int, calls: int = 1, info=None):
    """What ``calls`` sequential reads end with: ("bytes", [bytes...]) or (error type, status, reason); and the
    error counts."""
    info = info or await client.head(url)
    try:
        got = [bytes(await client.get_range(url, info, start, stop)) for _ in range(calls)]
        result = ("bytes", got)
    except OriginError as e:
        result = ("OriginError", e.status, e.reason)
    except OriginChanged as e:
        result = ("OriginChanged", e.reason)
    counts = {k: v for k, v in client.stats().items() if k.startswith("errors_")}
    return result, counts


async def test_a_range_is_one_buffer_and_connections_are_kept_alive(origin):
    fast, _ = clients(origin.url)
    try:
        url = origin.url + "title_360p.mp4"
        data = (origin.root / "title_360p.mp4").read_bytes()
        info = await fast.head(url)
        mark = origin.mark()
        for start, stop in ((0, 1), (100, 200000), (len(data) - 1000, len(data)), (5, len(data))):
            chunks = await fast.get_range_chunks(url, info, start, stop)
            assert len(chunks) == 1 and type(chunks[0]) is bytes and chunks[0] == data[start:stop]
        assert [(x.method, x.range) for x in origin.since(mark)] == [
            ("GET", "bytes=0-0"), ("GET", "bytes=100-199999"), ("GET", f"bytes={len(data) - 1000}-{len(data) - 1}"),
            ("GET", f"bytes=5-{len(data) - 1}")]
        assert fast._ranges.opened == 1  # one keep-alive connection for the four GETs
    finally:
        await fast.close()


async def test_the_pool_holds_at_most_origin_connections_sockets(origin):
    fast, _ = clients(origin.url, OriginOptions(connections=3))
    try:
        url = origin.url + "title_240p.mp4"
        data = (origin.root / "title_240p.mp4").read_bytes()
        info = await fast.head(url)
        spans = [(i * 10000, i * 10000 + 50000) for i in range(24)]
        parts = await asyncio.gather(*(fast.get_range(url, info, a, b) for a, b in spans))
        assert all(p == data[a:b] for p, (a, b) in zip(parts, spans))
        assert 1 <= fast._ranges.opened <= 3 and len(fast._ranges._idle) <= 3
    finally:
        await fast.close()


async def test_a_replaced_object_is_origin_changed_on_both_paths(origin):
    fast, slow = clients(origin.url)
    try:
        url = origin.url + "moov_end.mp4"
        infos = [await c.head(url) for c in (fast, slow)]
        origin.replace("moov_end.mp4", "title_180p.mp4")  # another size and ETag: If-Match fails (412)
        for client, info in zip((fast, slow), infos):
            with pytest.raises(OriginChanged, match="replaced"):
                await client.get_range(url, info, 0, 1000)
        assert fast._ranges.opened == 1
    finally:
        await fast.close()
        await slow.close()


@pytest.mark.parametrize("mode", ["pass", "truncate", "short", "no_ranges", "500"])
async def test_fault_proxy_answers_end_alike_on_both_paths(origin, fault_proxy, mode):
    fast, slow = clients(fault_proxy.url)
    try:
        url = fault_proxy.url + "title_240p.mp4"
        infos = [await fast.head(url), await slow.head(url)]
        fault_proxy.mode = mode
        got = [await outcome(c, url, 1000, 301000, info=i) for c, i in zip((fast, slow), infos)]
        assert got[0] == got[1]
        if mode in ("pass", "no_ranges"):
            assert got[0][0] == ("bytes", [(origin.root / "title_240p.mp4").read_bytes()[1000:301000]])
        assert fast._ranges.opened >= 1 and fast._unusual == 0
    finally:
        await fast.close()
        await slow.close()


class RawOrigin:
    """A raw TCP origin of one object: each request's answer is written as ``mode`` says, byte for byte."""

    def __init__(self, data: bytes, mode: str):
        self.data, self.mode = data, mode
        self.requests = 0
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/media/"

    async def start(self) -> "RawOrigin":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.requests += 1
                if not await self._answer(head, writer):
                    return
        finally:
            writer.close()

    async def _answer(self, head: bytes, writer: asyncio.StreamWriter) -> bool:
        """False: close the connection."""
        data, mode = self.data, self.mode
        found = re.search(rb"\r\nRange: bytes=(\d+)-(\d+)", head, re.I)
        etag = b'ETag: "fixed"\r\n'
        if head.startswith(b"HEAD ") or not found:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(data), etag))
            return True
        a, b = int(found.group(1)), int(found.group(2)) + 1
        part = data[a:b]
        ranged = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %d-%d/%d\r\n%s" % (a, b - 1, len(data), etag)
        if mode == "silent":
            await asyncio.sleep(30)
            return False
        if mode == "close_before":
            return False
        if mode == "close_mid_head":
            writer.write(b"HTTP/1.1 206 Part")
            return False
        if mode == "close_mid_body":
            writer.write(ranged + b"Content-Length: %d\r\n\r\n" % len(part) + part[: len(part) // 3])
            return False
        if mode == "huge_length":  # a hostile length: the pool must not allocate it (aiohttp streams what comes)
            writer.write(ranged + b"Content-Length: %d\r\n\r\n" % 10 ** 15 + part)
            return False
        if mode == "whole":  # Range ignored
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(data), etag) + data)
            return True
        if mode in ("chunked", "chunked_and_length"):  # the second also says a Content-Length, which chunked overrides
            size = len(part) // 2
            length = b"Content-Length: %d\r\n" % len(part) if mode == "chunked_and_length" else b""
            chunks = b"%x\r\n" % size + part[:size] + b"\r\n" + b"%x\r\n" % (len(part) - size) + part[size:]
            writer.write(ranged + length + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"\r\n0\r\n\r\n")
            return True
        if mode == "early_hints":
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
        if mode == "bad_status":
            writer.write(b"HTTP/1.1 2x6 Partial Content\r\nContent-Length: %d\r\n\r\n" % len(part) + part)
            return True
        if mode == "another_range":
            ranged = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %d-%d/%d\r\n%s" % (
                a + 1, b, len(data), etag)
        if mode == "connection_close":
            writer.write(ranged + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(part) + part)
            return False
        answer = ranged + b"Content-Length: %d\r\n\r\n" % len(part) + part
        if mode == "dribble":  # a slow origin: the body in 20 KB writes, each after a pause
            for at in range(0, len(answer), 20000):
                writer.write(answer[at: at + 20000])
                await writer.drain()
                await asyncio.sleep(0.005)
            return True
        if mode == "garbage_after":  # bytes after the body in the same write: pipelined garbage
            answer += b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\njunk!"
        writer.write(answer)
        await writer.drain()
        if mode == "close_idle":  # the origin drops a keep-alive connection the client has just pooled
            return False
        return True


DATA = bytes(range(256)) * 2000  # 512 000 bytes


@pytest.mark.parametrize("mode", ["pass", "close_before", "close_mid_head", "close_mid_body", "whole", "chunked",
                                  "chunked_and_length",
                                  "early_hints", "bad_status", "another_range", "connection_close", "garbage_after",
                                  "close_idle", "dribble", "silent", "huge_length"])
async def test_raw_faults_end_alike_on_both_paths(mode):
    raw = await RawOrigin(DATA, mode).start()
    options = OPTIONS if mode != "silent" else OriginOptions(timeout=0.5, tries=1, backoff=(0.01,))
    fast, slow = clients(raw.url, options)
    try:
        url = raw.url + "object.bin"
        got = [await outcome(c, url, 1000, 301000, calls=3) for c in (fast, slow)]
        if mode == "garbage_after":
            # aiohttp takes the garbage for the next answer on that connection (a 200 of 5 bytes: "replaced"); the
            # range pool drops a connection that sent bytes nobody asked for. Neither ever returns wrong bytes.
            assert got[1][0] in (got[0][0], ("OriginChanged", "replaced")), got[1]
            got[1] = got[0]
        assert got[0] == got[1], got
        if mode in ("pass", "whole", "chunked", "connection_close", "garbage_after", "close_idle", "early_hints",
                    "dribble"):
            assert got[0][0] == ("bytes", [DATA[1000:301000]] * 3)
        if mode in ("close_mid_body", "close_before", "close_mid_head", "silent", "another_range", "huge_length"):
            assert got[0][0][0] == "OriginError"
        assert fast._ranges.opened >= 1
        # answers the range pool does not parse are asked again through aiohttp (each attempt)
        left = mode in ("chunked", "chunked_and_length", "early_hints", "bad_status", "huge_length")
        assert (fast._unusual >= 1) if left else (fast._unusual == 0), fast._unusual
        if mode in ("pass", "garbage_after"):
            # kept alive when the answer was clean; garbage after a body closes that connection (not reused)
            assert fast._ranges.opened == (1 if mode == "pass" else 3)
    finally:
        await fast.close()
        await slow.close()
        await raw.close()


def pieces_of(size: int, seed: int):
    """A destination buffer and iovec rows scattering ``size`` bytes over it in ~600 pieces with holes between."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 2 * size // 600, 600)
    lengths = lengths[np.cumsum(lengths) <= size]
    lengths = np.append(lengths, size - lengths.sum()).astype(np.int64)
    lengths = lengths[lengths > 0]
    dest = np.zeros(size + 16 * len(lengths), dtype=np.uint8)
    at = np.cumsum(lengths + 16) - lengths - 16 + 8  # 8 untouched bytes before and after each piece
    rows = np.stack([at + dest.__array_interface__["data"][0], lengths], axis=1).astype(np.int64)
    return dest, at, lengths, rows


async def test_a_scatter_range_lands_in_its_pieces_and_is_copied_for_sharers(origin):
    fast, _ = clients(origin.url)
    try:
        url = origin.url + "title_360p.mp4"
        data = (origin.root / "title_360p.mp4").read_bytes()
        info = await fast.head(url)
        start, size = 12345, 700000
        dest, at, lengths, rows = pieces_of(size, 1)
        landing = Landing(rows, start, size)
        mark = origin.mark()
        mine, other = await asyncio.gather(fast.get_range_chunks(url, info, start, start + size, landing),
                                           fast.get_range_chunks(url, info, start, start + size))
        assert mine is None  # landed: nothing to copy
        assert other == (data[start: start + size],)  # the request was shared: a copy for the other caller
        assert len(origin.since(mark)) == 1
        got = b"".join(bytes(dest[a: a + n]) for a, n in zip(at.tolist(), lengths.tolist()))
        assert got == data[start: start + size]
        assert not dest[:8].any() and not dest[at[-1] + lengths[-1]:].any()  # nothing written outside the pieces
        landing.disarm()
        again = Landing(rows, start, size)
        again.disarm()  # the owner gave up: nothing lands, the read fails
        with pytest.raises(OriginError, match="truncated"):
            await fast.get_range_chunks(url, info, start, start + size, again)
    finally:
        await fast.close()


@pytest.mark.parametrize("mode", ["pass", "dribble", "close_mid_body"])
async def test_a_range_lands_whether_its_body_is_there_at_once_or_comes_slowly(mode):
    """The body that follows the head is read at once while the socket has it ("pass": one write); a body that comes
    in 20 KB writes with pauses ("dribble") makes the landing wait on the socket and go on; either way the pieces
    hold exactly the range and the connection is kept for the next GET. A body cut short fails the read."""
    raw = await RawOrigin(DATA, mode).start()
    fast, _ = clients(raw.url)
    try:
        url = raw.url + "object.bin"
        info = await fast.head(url)
        start, size = 1000, 300000
        for attempt in range(3):
            dest, at, lengths, rows = pieces_of(size, attempt)
            landing = Landing(rows, start, size)
            if mode == "close_mid_body":
                with pytest.raises(OriginError):
                    await fast.get_range_chunks(url, info, start, start + size, landing)
                continue
            assert await fast.get_range_chunks(url, info, start, start + size, landing) is None  # landed
            got = b"".join(bytes(dest[a: a + n]) for a, n in zip(at.tolist(), lengths.tolist()))
            assert got == DATA[start: start + size], attempt
            landing.disarm()
        if mode != "close_mid_body":
            assert fast._ranges.landed == 3 and fast._ranges.opened == 1  # one keep-alive connection for all
    finally:
        await fast.close()
        await raw.close()


async def test_ts_segments_land_in_the_muxer_layout_and_equal_local_ones(origin):
    """The TS muxer's scatter reads from the range pool: each range read straight into the payload's pieces."""
    remote, local = RemoteStore(origin.url), Store(origin.root)
    try:
        file = (await remote.identify_all(["title_240p.mp4"]))[0]

        def build_both() -> list[tuple[bytes, bytes]]:
            media_set = MediaSet([parse_presentation(remote, file)], 4000, False)
            selection = media_set.resolve(TrackSpec())
            muxer, local_file = TsMuxer(selection.tracks), local.identify("title_240p.mp4")
            return [(build_segment(remote, file, media_set, selection, i, muxer.build, scatter=Scatter(muxer.prepare)),
                     build_segment(local, local_file, media_set, selection, i, muxer.build))
                    for i in range(media_set.plan(selection).count)]

        pairs = await asyncio.get_running_loop().run_in_executor(None, build_both)
        assert len(pairs) >= 3 and all(a == b for a, b in pairs)
        assert remote.client._ranges.landed >= len(pairs)  # every segment's ranges landed (none was copied)
    finally:
        await remote.aclose()


def test_a_landing_keeps_its_own_gaps_and_refuses_writes_once_disarmed():
    """Bytes between samples (rows aimed at the store's shared junk buffer) land in the landing's own gap buffer,
    so the copy made for sharers is exact whatever another read writes there; a disarmed landing reads nothing."""
    dest, at, lengths, rows = pieces_of(100000, 2)
    rows[1::3, 0] = store_module._SKIPPED_AT  # every third piece is a gap between samples
    payload = bytes(np.random.default_rng(3).integers(0, 256, 100000, dtype=np.uint8))
    a, b = socket.socketpair()
    try:
        a.sendall(payload)
        b.setblocking(False)
        landing = Landing(rows, 0, 100000)
        while landing.filled < landing.size:
            assert landing.readv(b.fileno()) > 0
        store_module._SKIPPED[:] = b"\xee" * len(store_module._SKIPPED)  # another read's gap bytes
        assert landing.gather() == payload
        again = Landing(rows, 0, 100000)
        a.sendall(payload[:1000])
        again.disarm()
        with pytest.raises(Disarmed):
            again.readv(b.fileno())
        assert b.recv(2000) == payload[:1000]  # nothing was read
    finally:
        a.close()
        b.close()
