"""Caches: LRU by bytes, single-flight, failures not cached, replaced files re-parsed; seen through /status too."""
from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from fixtures.generate import fixture_path
from gateway.origin.cache import ByteLRU, SingleFlightLRU
from packagers.errors import bad_data

from .conftest import URLSET, status

SEGMENT = "/hls/title_360p.mp4/seg-1-v1-a1.ts"


def builder(value: bytes, calls: list, delay: float = 0.0, fail: Exception | None = None):
    async def build() -> bytes:
        calls.append(value)
        await asyncio.sleep(delay)
        if fail is not None:
            raise fail
        return value

    return build


async def test_lru_evicts_least_recently_used_by_bytes():
    cache = ByteLRU(100)
    calls: list = []
    for key in "abc":
        await cache.get_or_build(key, builder(key.encode() * 40, calls))
    # a+b+c = 120 bytes > 100: 'a' went first
    assert "a" not in cache and "b" in cache and "c" in cache
    assert cache.counters.evictions == 1 and cache.weight == 80
    await cache.get_or_build("b", builder(b"", calls))  # hit: b becomes most recent
    await cache.get_or_build("d", builder(b"d" * 40, calls))
    assert "c" not in cache and "b" in cache and "d" in cache
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 4 and cache.stats()["bytes"] == 80


async def test_oversize_values_are_served_not_stored():
    cache = ByteLRU(10)
    calls: list = []
    assert await cache.get_or_build("big", builder(b"x" * 11, calls)) == b"x" * 11
    assert "big" not in cache and cache.counters.oversize == 1 and cache.weight == 0


async def test_capacity_zero_disables_storage():
    cache = ByteLRU(0)
    calls: list = []
    for _ in range(3):
        await cache.get_or_build("k", builder(b"v", calls))
    assert len(calls) == 3 and len(cache) == 0 and cache.counters.hits == 0


async def test_single_flight_builds_once_for_concurrent_misses():
    cache = ByteLRU(1000)
    calls: list = []
    results = await asyncio.gather(*(cache.get_or_build("k", builder(b"v", calls, 0.05)) for _ in range(100)))
    assert results == [b"v"] * 100
    assert len(calls) == 1
    assert cache.counters.misses == 1 and cache.counters.builds == 1 and cache.counters.coalesced == 99


async def test_failed_build_reaches_every_waiter_and_is_not_cached():
    cache: SingleFlightLRU = SingleFlightLRU(10, lambda v: 1)
    calls: list = []
    error = bad_data("test: broken")
    outcomes = await asyncio.gather(
        *(cache.get_or_build("k", builder(b"v", calls, 0.02, error)) for _ in range(10)), return_exceptions=True
    )
    assert all(o is error for o in outcomes) and len(calls) == 1
    assert "k" not in cache and cache.counters.failures == 1
    assert await cache.get_or_build("k", builder(b"ok", calls)) == b"ok"
    assert len(calls) == 2


async def test_a_cancelled_waiter_does_not_cancel_the_build():
    cache = ByteLRU(1000)
    calls: list = []
    first = asyncio.create_task(cache.get_or_build("k", builder(b"v", calls, 0.05)))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(cache.get_or_build("k", builder(b"v", calls, 0.05)))
    first.cancel()
    assert await second == b"v"
    assert "k" in cache and len(calls) == 1


async def test_second_fetch_is_a_hit(client):
    before = (await status(client))["segment_cache"]
    body1 = await (await client.get(SEGMENT)).read()
    body2 = await (await client.get(SEGMENT)).read()
    after = (await status(client))["segment_cache"]
    assert body1 == body2
    assert after["misses"] - before["misses"] == 1
    assert after["hits"] - before["hits"] == 1
    assert after["entries"] == 1 and after["bytes"] == len(body1)
    meta = (await status(client))["metadata_cache"]
    assert meta["misses"] == 1 and meta["entries"] == 1


async def test_eviction_with_a_tiny_capacity(make_client):
    client = await make_client(segment_cache_mb=1.5)  # ~1.57 MB: holds about two 360p segments of ~0.8 MB
    sizes = []
    for n in (1, 2):
        for f in (1, 2, 3):
            sizes.append(len(await (await client.get(f"{URLSET}/seg-{n}-f{f}-v1-a1.ts")).read()))
    cache = (await status(client))["segment_cache"]
    assert cache["capacity"] == int(1.5 * 1024 * 1024)
    assert cache["evictions"] >= 1
    assert cache["bytes"] <= cache["capacity"]
    assert cache["entries"] < 6


async def test_hundred_concurrent_gets_of_a_cold_segment_build_once(client):
    responses = await asyncio.gather(*(client.get(URLSET + "/seg-2-f1-v1-a1.ts") for _ in range(100)))
    bodies = [await r.read() for r in responses]
    assert all(r.status == 200 for r in responses)
    assert len(set(bodies)) == 1 and bodies[0][:1] == b"\x47"
    body = await status(client)
    assert body["segment_cache"]["misses"] == 1
    assert body["segment_cache"]["builds"] == 1
    assert body["segment_cache"]["hits"] + body["segment_cache"]["coalesced"] == 99
    # every file of the set is parsed once, and the set's plans are computed once
    assert body["metadata_cache"]["misses"] == 3
    assert body["media_set_cache"]["builds"] == 1


async def test_segment_cache_zero_builds_every_time(make_client):
    client = await make_client(segment_cache_mb=0)
    first = await (await client.get(SEGMENT)).read()
    second = await (await client.get(SEGMENT)).read()
    assert first == second
    cache = (await status(client))["segment_cache"]
    assert cache["builds"] == 2 and cache["hits"] == 0 and cache["entries"] == 0 and cache["capacity"] == 0


async def test_file_rewritten_on_disk_is_reparsed(make_client, store):
    client = await make_client(stat_cache_seconds=0)
    path = store / "title_360p.mp4"
    master = await (await client.get("/hls/title_360p.mp4/master.m3u8")).text()
    old_etag = (await client.get(SEGMENT)).headers["ETag"]
    assert "RESOLUTION=640x360" in master
    # replace in place with another rendition (new size, new mtime), as an operator re-upload would
    shutil.copyfile(fixture_path("title_180p.mp4"), path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    master = await (await client.get("/hls/title_360p.mp4/master.m3u8")).text()
    assert "RESOLUTION=320x180" in master
    segment = await client.get(SEGMENT)
    assert segment.status == 200 and segment.headers["ETag"] != old_etag
    assert (await segment.read()) == await (await client.get("/hls/title_180p.mp4/seg-1-v1-a1.ts")).read()
    meta = (await status(client))["metadata_cache"]
    assert meta["misses"] == 3  # original, replacement, and title_180p.mp4


async def test_same_size_same_mtime_replacement_is_noticed(make_client, store):
    """rsync -t keeps size and mtime; the inode changes, and so does the cache key."""
    client = await make_client(stat_cache_seconds=0)
    path = store / "title_240p.mp4"
    await client.get("/hls/title_240p.mp4/master.m3u8")
    st = os.stat(path)
    tmp = store / "title_240p.tmp"
    data = bytearray(path.read_bytes())
    tmp.write_bytes(bytes(data))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)
    await client.get("/hls/title_240p.mp4/master.m3u8")
    assert (await status(client))["metadata_cache"]["misses"] == 2


@pytest.mark.parametrize("path", ["/hls/title_360p.mp4/master.m3u8", "/hls/title_360p.mp4/index.m3u8"])
async def test_playlists_are_cached_too(client, path):
    await client.get(path)
    await client.get(path)
    assert (await status(client))["segment_cache"]["hits"] == 1


async def test_replacement_is_noticed_once_the_stat_cache_expires(make_client, store):
    client = await make_client(stat_cache_seconds=0.3)
    assert "640x360" in await (await client.get("/hls/title_360p.mp4/master.m3u8")).text()
    shutil.copyfile(fixture_path("title_180p.mp4"), store / "title_360p.mp4")
    # within the window the old identity is trusted, and everything keyed by it stays consistent
    assert "640x360" in await (await client.get("/hls/title_360p.mp4/master.m3u8")).text()
    await asyncio.sleep(0.4)
    assert "320x180" in await (await client.get("/hls/title_360p.mp4/master.m3u8")).text()


async def test_new_files_are_visible_at_once(client, store):
    assert (await client.get("/hls/late.mp4/master.m3u8")).status == 404
    shutil.copyfile(fixture_path("title_180p.mp4"), store / "late.mp4")
    assert (await client.get("/hls/late.mp4/master.m3u8")).status == 200


async def test_file_replaced_within_the_stat_window_is_read_consistently(make_client, store):
    """A build that finds the file changed under a trusted stat re-stats and packages the new file, never a mix."""
    client = await make_client(stat_cache_seconds=60)
    await client.get("/hls/title_360p.mp4/master.m3u8")  # trusts this identity for a minute
    shutil.copyfile(fixture_path("title_180p.mp4"), store / "title_360p.mp4")
    replaced = await client.get("/hls/title_360p.mp4/seg-1.ts")
    assert replaced.status == 200
    assert await replaced.read() == await (await client.get("/hls/title_180p.mp4/seg-1.ts")).read()
    assert "320x180" in await (await client.get("/hls/title_360p.mp4/master.m3u8")).text()


async def test_a_url_set_of_one_file_is_not_confused_with_the_file(client):
    single = await client.get("/hls/title_180p.mp4/master.m3u8")
    url_set = await client.get("/hls/title_,180p,.mp4.urlset/master.m3u8")
    assert "index-v1-a1.m3u8" in await single.text()
    assert "index-f1-v1-a1.m3u8" in await url_set.text()
    assert single.headers["ETag"] != url_set.headers["ETag"]
