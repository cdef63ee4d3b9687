"""Segments whose bytes are in the page cache are built on the event loop; the others, and every build on a file
system without non-blocking reads, in the executor (gateway/origin/packaging.py, Packaging.packaged).

The page cache is real: a file's pages are dropped with posix_fadvise(DONTNEED) to make its reads miss, and tmpfs
(/dev/shm) is a real file system that refuses RWF_NOWAIT. Which thread built a segment is recorded by wrapping the
app's own muxer call, and every body is compared with the one the executor builds.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.http import products
from gateway.http.app import make_app
from gateway.origin.packaging import PACKAGING
from gateway.origin.store import RWF_NOWAIT, Store, probe_nowait_reads
from gateway.settings import Settings

from .conftest import add_to_store

pytestmark = pytest.mark.skipif(not RWF_NOWAIT, reason="no RWF_NOWAIT on this platform: every build is in the executor")

LIBC = ctypes.CDLL(None, use_errno=True)

SEGMENTS = ("/hls/title_360p.mp4/seg-1-v1-a1.ts", "/dash/title_360p.mp4/fragment-2-v1.m4s",
            "/hls/title_360p.mp4/seg-2-v1-a1.m4s")


@pytest.fixture
def build_threads(monkeypatch) -> list[str]:
    """The name of the thread every segment build muxed on."""
    seen: list[str] = []
    real = products.build_segment

    def recording(*args, **kwargs):
        body = real(*args, **kwargs)
        seen.append(threading.current_thread().name)
        return body

    monkeypatch.setattr(products, "build_segment", recording)
    return seen


def resident_pages(path: Path) -> int:
    """How many of the file's pages are in the page cache, by mincore(2) on a mapping (mapping faults none in)."""
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as mapped:
        start = ctypes.c_char.from_buffer(mapped)
        vector = (ctypes.c_ubyte * pages)()
        try:
            if LIBC.mincore(ctypes.byref(start), ctypes.c_size_t(size), vector) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            del start
    return sum(v & 1 for v in vector)


def drop_from_page_cache(path: Path) -> None:
    """posix_fadvise(DONTNEED) until mincore shows none of the file's pages cached: the kernel skips pages it holds
    at that moment (in a CPU's LRU batch, under I/O), so a single call can leave some behind on a busy machine."""
    for _ in range(100):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        if resident_pages(path) == 0:
            return
        time.sleep(0.02)
    raise AssertionError(f"the kernel kept {resident_pages(path)} pages of {path} cached after 100 drops")


async def fetch(client, path: str) -> bytes:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.read()


async def test_cached_pages_are_built_on_the_loop_and_equal_the_executor_build(make_client, store, build_threads):
    client = await make_client(segment_cache_mb=0)
    (store / "title_360p.mp4").read_bytes()  # in the page cache
    inline = [await fetch(client, path) for path in SEGMENTS]
    assert client.app[PACKAGING].store.nowait_reads is True
    assert build_threads == ["MainThread"] * len(SEGMENTS)

    client.app[PACKAGING].store.nowait_reads = False  # as on NFS
    assert [await fetch(client, path) for path in SEGMENTS] == inline
    assert all(name.startswith("gateway-io") for name in build_threads[len(SEGMENTS):])


async def test_pages_not_in_the_page_cache_are_read_in_the_executor(make_client, store, build_threads):
    client = await make_client(segment_cache_mb=0)
    expected = await fetch(client, SEGMENTS[0])
    drop_from_page_cache(store / "title_360p.mp4")
    del build_threads[:]
    assert await fetch(client, SEGMENTS[0]) == expected
    assert build_threads[0].startswith("gateway-io")  # the loop's attempt stopped at the read, before muxing
    assert client.app[PACKAGING].store.nowait_reads is True  # a miss is not a refusal: the next one is tried again
    assert await fetch(client, SEGMENTS[0]) == expected and build_threads[1] == "MainThread"


async def test_segments_above_the_inline_limit_go_to_the_executor(make_client, store, build_threads, monkeypatch):
    client = await make_client(segment_cache_mb=0)
    (store / "title_360p.mp4").read_bytes()
    expected = await fetch(client, SEGMENTS[0])
    monkeypatch.setattr(products, "INLINE_READ_LIMIT", 1000)  # smaller than any segment of the fixture
    assert await fetch(client, SEGMENTS[0]) == expected
    assert build_threads[-1].startswith("gateway-io")


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no tmpfs at /dev/shm")
async def test_a_file_system_without_nonblocking_reads_builds_in_the_executor(build_threads):
    shm = Path("/dev/shm") / f"gateway-test-{os.getpid()}"
    shm.mkdir()
    try:
        add_to_store(shm, "title_360p.mp4")
        if probe_nowait_reads(Store(shm).identify("title_360p.mp4")):
            pytest.skip("this kernel's tmpfs answers RWF_NOWAIT")
        client = TestClient(TestServer(make_app(Settings(store=shm, segment_cache_mb=0))))
        await client.start_server()
        try:
            await fetch(client, SEGMENTS[0])
            assert client.app[PACKAGING].store.nowait_reads is False
            assert build_threads[0].startswith("gateway-io")
        finally:
            await client.close()
    finally:
        shutil.rmtree(shm)


async def test_encrypted_segments_are_built_in_the_executor(make_client, store, build_threads):
    """Encryption costs several clear builds: never on the loop, even with every page cached."""
    import subprocess
    import sys

    for args in (("partners", "add", "301", "--name", "DRM"),
                 ("partners", "set-profile", "301", "dash", "encryption=cenc"),
                 ("partners", "set-profile", "301", "hls", "encryption=cbcs"),
                 ("entries", "add", "0_drminl01", "--partner", "301", "--name", "drm", "--flavor", "title_360p.mp4")):
        subprocess.run([sys.executable, "-m", "gateway", *args, "--store", str(store)], check=True, capture_output=True)
    client = await make_client(segment_cache_mb=0)
    (store / "title_360p.mp4").read_bytes()
    for path in SEGMENTS[1:]:
        assert b"senc" in await fetch(client, path)
    assert len(build_threads) == 2 and all(name.startswith("gateway-io") for name in build_threads)
