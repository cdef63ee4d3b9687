"""A response that cannot be completed closes its connection (issue 10 part 3).

Real `gateway serve` processes and raw sockets: a /mp4/ download whose file is truncated or rewritten in place ends
its connection (EOF, never a hang, never a reused connection), is counted in /metrics; a same-content replacement by
rename is served whole. Segment reads cut short by an in-place truncation raise FileChanged (503), never a segment
built from short bytes.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixtures.generate import fixture_path
from gateway.origin.packaging import parse_presentation
from gateway.origin.store import FileChanged, Store
from packagers.media_set import MediaSet
from packagers.naming import TrackSpec

from .processes import BIG_FILE_MB, HANG_GUARD, get

# Longer than a truncation takes to show (under a second) and shorter than the server's keep-alive timeout: a
# response left open after its body stopped short makes recv() time out here, and the test fails.
CLIENT_TIMEOUT = 20.0
KEEPALIVE = ("--keepalive-timeout", str(int(HANG_GUARD * 2)))
BIG = BIG_FILE_MB << 20
# Ahead of what the server has sent when the file is cut: the client's first read plus loopback socket buffers (64 KB
# receive buffer here, at most tcp_wmem's 4 MB default maximum on the send side)
FIRST_READ = 256 << 10
CUT_BETWEEN_PIECES = 16 << 20  # past the piece being sent: found by the fstat between pieces
CUT_WITHIN_PIECE = 6 << 20  # inside the first 8 MB piece: sendfile itself comes back short


@pytest.fixture
def big_store(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # --workers gives the workers their own
    store = tmp_path / "store"
    store.mkdir()
    with open(store / "big.mp4", "wb") as f:  # /mp4/ serves bytes, it does not parse them
        f.write(os.urandom(BIG))
    shutil.copyfile(fixture_path("title_360p.mp4"), store / "title_360p.mp4")
    return store


class RawConnection:
    """A kept-alive HTTP/1.1 connection with a small receive buffer, read only as far as asked."""

    def __init__(self, port: int):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.settimeout(CLIENT_TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        self.buffer = b""

    def send(self, *paths: str) -> None:
        """One GET per path, written at once (pipelined when several)."""
        self.sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: test\r\n\r\n".encode() for p in paths))

    def _recv(self) -> bytes:
        """Bytes, or b"" when the server ended the connection; socket.timeout (a test failure) if it hangs."""
        try:
            return self.sock.recv(1 << 16)
        except ConnectionResetError:
            return b""

    def head(self) -> tuple[int, int]:
        """(status, Content-Length) of the next response."""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self._recv()
            assert chunk, f"connection closed before a response head: {self.buffer[:200]!r}"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 "), head[:100]
        return int(head.split()[1]), int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)[1])

    def body(self, n: int) -> bytes:
        """Up to ``n`` bytes of body (fewer only if the connection ends first)."""
        data = bytearray(self.buffer)
        while len(data) < n:
            chunk = self._recv()
            if not chunk:
                break
            data += chunk
        self.buffer = bytes(data[n:])
        return bytes(data[:n])

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        data, self.buffer = bytearray(self.buffer), b""
        while chunk := self._recv():
            data += chunk
        return bytes(data)

    def close(self) -> None:
        self.sock.close()


def scrape(base: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def aborted(base: str, reason: str, protocol: str = "mp4") -> float:
    return scrape(base).get(("gateway_responses_aborted_total", frozenset({"protocol": protocol, "reason": reason}.items())),
                            0.0)


def started_download(gw, *paths: str):
    """A raw kept-alive connection that sent ``paths`` (pipelined) and read the first 200 head and FIRST_READ bytes."""
    conn = RawConnection(gw.port)
    try:
        conn.send(*paths)
        assert conn.head() == (200, BIG)
        return conn, conn.body(FIRST_READ)
    except BaseException:
        conn.close()
        raise


def test_download_truncated_in_place_ends_its_connection_and_is_counted(gateways, big_store):
    original = (big_store / "big.mp4").read_bytes()
    gw = gateways("--workers", "2", *KEEPALIVE, store=big_store)
    conn, first = started_download(gw, "/mp4/big.mp4")
    try:
        os.truncate(big_store / "big.mp4", CUT_BETWEEN_PIECES)  # in place: the descriptor being sent shrinks
        body = first + conn.rest()  # a hang here is socket.timeout: the bug this test is about
    finally:
        conn.close()
    assert len(body) <= CUT_BETWEEN_PIECES  # at most what the file still has, then the end of the connection
    assert body == original[: len(body)]
    # any worker answers the scrape; each reports the one abort (multiprocess metrics)
    for _ in range(4):
        assert aborted(gw.base, "truncated") == 1
    assert f"GET /mp4/big.mp4 aborted after {len(body)} of {BIG} body bytes: the file shrank to" in gw.log.read_text()
    status, _, small = get(gw.base, "/mp4/title_360p.mp4")  # the node serves on
    assert status == 200 and small == (big_store / "title_360p.mp4").read_bytes()


def test_pipelined_response_never_appears_inside_an_aborted_body(gateways, big_store):
    original = (big_store / "big.mp4").read_bytes()
    gw = gateways(*KEEPALIVE, store=big_store)
    conn, first = started_download(gw, "/mp4/big.mp4", "/mp4/title_360p.mp4")
    try:
        os.truncate(big_store / "big.mp4", CUT_WITHIN_PIECE)
        rest = conn.rest()
    finally:
        conn.close()
    # the first body stops short and is only the file's bytes: no second status line inside it, nothing after it
    body = first + rest
    assert body == original[:CUT_WITHIN_PIECE]
    assert aborted(gw.base, "truncated") == 1
    assert "aborted after 6291456 of 50331648 body bytes: a read came back short" in gw.log.read_text()


def test_download_rewritten_in_place_with_the_same_size_is_aborted(gateways, big_store):
    original = (big_store / "big.mp4").read_bytes()
    gw = gateways(*KEEPALIVE, store=big_store)
    conn, first = started_download(gw, "/mp4/big.mp4")
    try:
        with open(big_store / "big.mp4", "r+b") as f:  # same size, new bytes near the end, new mtime
            f.seek(BIG - (4 << 20))
            f.write(b"\0" * (1 << 20))
        body = first + conn.rest()
    finally:
        conn.close()
    assert len(body) < BIG - (4 << 20)  # closed at the next piece boundary, before the rewritten bytes
    assert body == original[: len(body)]
    assert aborted(gw.base, "changed") == 1


def test_same_content_replaced_by_rename_during_download_is_served_whole(gateways, big_store):
    expected = hashlib.sha256((big_store / "big.mp4").read_bytes()).hexdigest()
    gw = gateways(*KEEPALIVE, store=big_store)
    conn, first = started_download(gw, "/mp4/big.mp4")
    try:
        shutil.copyfile(big_store / "big.mp4", big_store / ".big.mp4.tmp")
        os.replace(big_store / ".big.mp4.tmp", big_store / "big.mp4")  # a new inode: the old one is still read
        body = first + conn.body(BIG - len(first))
        assert hashlib.sha256(body).hexdigest() == expected
        conn.send("/mp4/title_360p.mp4")  # the connection was kept alive and is still good
        status, length = conn.head()
        assert status == 200 and conn.body(length) == (big_store / "title_360p.mp4").read_bytes()
    finally:
        conn.close()
    for reason in ("truncated", "changed", "read_error"):
        assert aborted(gw.base, reason) == 0


# --- packaged responses: segment reads ------------------------------------------------------------------------------

@pytest.fixture
def segment_reads(tmp_path: Path):
    """(store, identity, read requests of segment 2) of a real file."""
    root = tmp_path / "store"
    root.mkdir()
    shutil.copyfile(fixture_path("title_360p.mp4"), root / "t.mp4")
    store = Store(root)
    identity = store.identify("t.mp4")
    media_set = MediaSet([parse_presentation(store, identity)], 6000)
    selection = media_set.resolve(TrackSpec())
    _, requests = media_set.segment_job(selection, 1)
    return store, identity, requests


def test_segment_reads_cut_short_by_an_in_place_truncation_are_file_changed(segment_reads):
    store, identity, requests = segment_reads
    with store.open(identity) as reader:
        assert [len(v) for v in reader.read_scratch(requests)] == [r.size for r in requests]
        os.truncate(identity.real_path, requests[-1].offset + 1)  # after identification and opening
        with pytest.raises(FileChanged) as info:
            reader.read_scratch(requests)
        assert info.value.reason == "truncated"
        with pytest.raises(FileChanged):
            reader.pread(requests[-1].offset, requests[-1].size)


def test_segment_reads_of_a_file_rewritten_in_place_are_file_changed(segment_reads):
    store, identity, requests = segment_reads
    with store.open(identity) as reader:
        with open(identity.real_path, "r+b") as f:  # same size, other bytes
            f.seek(requests[0].offset)
            f.write(b"\0" * requests[0].size)
        os.utime(identity.real_path, ns=(identity.mtime_ns + 10**9, identity.mtime_ns + 10**9))
        with pytest.raises(FileChanged) as info:
            reader.read_scratch(requests)
        assert info.value.reason == "changed"


def test_reads_past_the_identified_end_stay_short(segment_reads):
    """A file that is truncated at rest (identified so) is BAD_DATA for the packager, not a change: reads are short."""
    store, identity, _ = segment_reads
    with store.open(identity) as reader:
        assert reader.pread(identity.size - 10, 100) == Path(identity.real_path).read_bytes()[-10:]
        assert reader.pread(identity.size + 5, 100) == b""


def test_truncated_file_with_a_fresh_cached_stat_never_gets_a_short_segment(gateways, big_store):
    """Metadata and stat cached, then the file shrinks in place: the reader notices (FileChanged), the request is
    retried on the new file, which is now really truncated: its moov names sample data past the end, BAD_DATA."""
    gw = gateways("--stat-cache-seconds", "60", store=big_store)
    name = "/hls/title_360p.mp4"
    assert get(gw.base, name + "/index.m3u8")[0] == 200
    os.truncate(big_store / "title_360p.mp4", (big_store / "title_360p.mp4").stat().st_size // 2)
    status, headers, body = get(gw.base, name + "/seg-2.ts")
    assert status == 500 and body.startswith(b"BAD_DATA: ") and b"past the end of the file" in body, body[:200]


async def test_a_download_sends_only_the_inode_it_authorized(tmp_path):
    """The name leads to another inode than the one checked (replaced in between): 503 FILE_CHANGED, no media byte.
    In a server the window is the instant between a fresh stat and the open; here the identity is made stale."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.http.download import StoreFileResponse

    store = Store(tmp_path)
    (tmp_path / "public.mp4").write_bytes(b"public bytes")
    checked = store.identify("public.mp4")
    (tmp_path / "secret.mp4").write_bytes(b"secret bytes")
    os.replace(tmp_path / "secret.mp4", tmp_path / "public.mp4")  # same name, another inode
    async def stale_identity(request):
        return StoreFileResponse(checked, None, {"Content-Type": "video/mp4"})

    async def fresh_identity(request):
        return StoreFileResponse(store.identify("public.mp4"), None, {})

    app = web.Application()
    app.router.add_get("/f", stale_identity)
    app.router.add_get("/fresh", fresh_identity)
    async with TestClient(TestServer(app)) as client:
        stale = await client.get("/f")
        assert stale.status == 503 and stale.headers["Retry-After"] == "1"
        assert (await stale.read()).startswith(b"FILE_CHANGED: ")
        fresh = await client.get("/fresh")
        assert fresh.status == 200 and await fresh.read() == b"secret bytes"
