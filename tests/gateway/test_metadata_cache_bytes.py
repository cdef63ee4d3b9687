"""Issue 10 part 2: the metadata caches (parsed presentations, media sets) are bounded in bytes, weighed by the real
size of the numpy arrays they keep alive, as well as in entries (``--metadata-cache-mb``)."""
from __future__ import annotations

import asyncio
import gc
import json
import shutil
import weakref

import numpy as np
import pytest

from fixtures.generate import fixture_path
from gateway.origin.cache import (MEDIA_SET_OVERHEAD, PRESENTATION_OVERHEAD, TRACK_OVERHEAD, MetadataCache,
                           weigh_media_set, weigh_presentation)  # fmt: skip
from packagers.media_set import MediaSet
from packagers.model import CodecConfig, Presentation, SampleTable, Track
from packagers.mp4 import read_presentation
from packagers.naming import TrackSpec

from .processes import get

FIXTURES = ("title_180p.mp4", "two_audio.mp4", "audio_only.mp4", "hevc.mp4")


def parse(name: str) -> Presentation:
    data = fixture_path(name).read_bytes()
    return read_presentation(lambda o, n: data[o : o + n], len(data), name)


def arrays_in(obj, seen: set[int] | None = None) -> dict[int, np.ndarray]:
    """Every numpy array reachable from ``obj`` through attributes, tuples, lists and dicts (by id): an independent
    walk of the object graph, not the cache's own accounting."""
    seen = set() if seen is None else seen
    found: dict[int, np.ndarray] = {}
    if id(obj) in seen:
        return found
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        found[id(obj)] = obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            found.update(arrays_in(item, seen))
    elif isinstance(obj, dict):
        for item in obj.values():
            found.update(arrays_in(item, seen))
    elif hasattr(obj, "__dict__"):
        for item in vars(obj).values():
            found.update(arrays_in(item, seen))
    return found


def config_bytes(presentations) -> int:
    return sum(len(t.codec.extradata) + sum(map(len, t.codec.parameter_sets)) for p in presentations for t in p.tracks)


@pytest.mark.parametrize("name", FIXTURES)
def test_presentation_weight_is_its_arrays_nbytes(name):
    presentation = parse(name)
    arrays = arrays_in(presentation)
    assert len(arrays) == 6 * len(presentation.tracks)  # the SampleTable columns, nothing else
    for a in arrays.values():  # each column owns its buffer: nbytes is the memory it holds
        assert a.base is None or (isinstance(a.base, np.ndarray) and a.base.nbytes == a.nbytes)
    expected = (sum(a.nbytes for a in arrays.values()) + config_bytes([presentation])
                + PRESENTATION_OVERHEAD + TRACK_OVERHEAD * len(presentation.tracks))  # fmt: skip
    assert weigh_presentation(presentation) == expected


def test_media_set_weight_counts_the_ranges_it_will_memoize():
    """Weighed once at insertion, a MediaSet must already count the sample ranges requests add to it later."""
    presentations = [parse("title_180p.mp4"), parse("two_audio.mp4")]
    media_set = MediaSet(presentations, 4000, is_url_set=True)
    weight = weigh_media_set(media_set)
    for f, p in enumerate(presentations, start=1):  # every track of every file, as requests would
        for kind, tracks in (("v", p.video_tracks), ("a", p.audio_tracks)):
            for n in range(1, len(tracks) + 1):
                spec = TrackSpec(f, n, None) if kind == "v" else TrackSpec(f, None, n)
                selection = media_set.resolve(spec)
                media_set.sample_ranges(selection, selection.tracks[0])
    arrays = arrays_in(media_set)
    tracks = sum(len(p.tracks) for p in presentations)
    expected = (sum(a.nbytes for a in arrays.values()) + config_bytes(presentations) + MEDIA_SET_OVERHEAD
                + PRESENTATION_OVERHEAD * len(presentations) + TRACK_OVERHEAD * tracks)  # fmt: skip
    assert weight == expected


def run(coro):
    return asyncio.run(coro)


async def load_into(cache: MetadataCache, key, presentation: Presentation) -> Presentation:
    async def load() -> Presentation:
        return presentation

    return await cache.presentation(key, load)


def test_cache_of_real_presentations_stays_within_its_bytes_and_evicts_lru_first():
    presentations = {name: parse(name) for name in FIXTURES}
    weights = {name: weigh_presentation(p) for name, p in presentations.items()}
    # the presentations' half holds title_180p, audio_only and hevc; two_audio then needs two of them to go
    half = weights["title_180p.mp4"] + weights["two_audio.mp4"]
    three = weights["title_180p.mp4"] + weights["audio_only.mp4"] + weights["hevc.mp4"]
    assert three <= half
    cache = MetadataCache(1024, 1024, 2 * half)

    async def scenario():
        for name in ("title_180p.mp4", "audio_only.mp4", "hevc.mp4"):
            await load_into(cache, name, presentations[name])
        assert cache.presentations.weight == three and cache.presentations.counters.evictions == 0
        await load_into(cache, "title_180p.mp4", presentations["title_180p.mp4"])  # a hit: now the most recent
        await load_into(cache, "two_audio.mp4", presentations["two_audio.mp4"])

    run(scenario())
    stats = cache.stats()["presentations"]
    assert stats["hits"] == 1 and stats["evictions"] == 2 and stats["capacity"] == half
    assert set(cache.presentations._entries) == {"title_180p.mp4", "two_audio.mp4"}  # LRU first; the hit survived
    assert stats["bytes"] == weights["title_180p.mp4"] + weights["two_audio.mp4"] <= half


def big_presentation(samples: int, name: str) -> Presentation:
    """What the issue's 8 KB sparse file parses to: tracks claiming ``samples`` one-byte samples each."""
    n = samples
    table = SampleTable(np.arange(n, dtype=np.uint64), np.ones(n, np.uint32), np.arange(n, dtype=np.int64) * 1024,
                        np.zeros(n, np.int32), np.full(n, 1024, np.uint32), np.ones(n, bool))
    codec = CodecConfig("mp4a", "mp4a.40.2", extradata=b"\x12\x10", sample_rate=44100, channels=2)
    return Presentation((Track(1, "audio", 44100, codec, table, source=name),), source=name)


def test_issue_scenario_many_huge_presentations_stay_within_the_budget():
    """The issue: a 1,024-entry cache of presentations of millions of samples each held many GB. With a byte budget
    the cache keeps what fits, and what it dropped is freed."""
    budget = 64 << 20
    cache = MetadataCache(1024, 1024, budget)
    refs = []

    async def scenario():
        for k in range(6):
            presentation = big_presentation(1 << 20, f"sparse{k}.mp4")  # 29 MiB of columns each
            refs.append(weakref.ref(presentation))
            assert await load_into(cache, k, presentation) is presentation
            del presentation
            assert cache.presentations.weight <= budget // 2

    run(scenario())
    gc.collect()
    alive = [r for r in refs if r() is not None]
    stats = cache.stats()["presentations"]
    assert stats["entries"] == len(alive) == 1 and stats["evictions"] == 5
    assert stats["bytes"] <= stats["capacity"] == budget // 2


def test_a_value_larger_than_the_capacity_is_served_and_not_stored():
    cache = MetadataCache(1024, 1024, 16 << 20)
    huge = big_presentation(1 << 20, "huge.mp4")  # 29 MiB > the 8 MiB half

    async def scenario():
        assert await load_into(cache, "huge", huge) is huge
        assert await load_into(cache, "huge", huge) is huge

    run(scenario())
    stats = cache.stats()["presentations"]
    assert stats["oversize"] == 2 and stats["entries"] == 0 and stats["bytes"] == 0 and stats["misses"] == 2


def test_entry_cap_still_applies():
    cache = MetadataCache(2, 1024, 256 << 20)
    presentation = parse("audio_only.mp4")

    async def scenario():
        for k in range(4):
            await load_into(cache, k, presentation)

    run(scenario())
    stats = cache.stats()["presentations"]
    assert stats["entries"] == 2 and stats["evictions"] == 2
    assert stats["bytes"] == 2 * weigh_presentation(presentation)


def test_gateway_serve_keeps_metadata_within_metadata_cache_mb(tmp_path, gateways):
    """A real `gateway serve --metadata-cache-mb 1` asked for the playlists of 16 distinct files (~40 KB of
    metadata each, twice: presentation and media set; 640 KB > either half) reports at most 1 MiB of metadata,
    having evicted."""
    store = tmp_path / "store"
    store.mkdir()
    names = []
    for k in range(8):
        for fixture in ("title_180p.mp4", "two_audio.mp4"):
            name = f"{k}_{fixture}"
            shutil.copyfile(fixture_path(fixture), store / name)
            names.append(name)
    # a short catalog ttl: a file new to the catalog's identity index may wait up to one ttl (gateway.catalog.access)
    gw = gateways("--metadata-cache-mb", "1", "--workers", "1", "--catalog-ttl", "0.1", store=store)
    for name in names:
        status, _, _ = get(gw.base, f"/hls/{name}/index.m3u8")
        assert status == 200
    status, _, body = get(gw.base, "/status")
    assert status == 200
    stats = json.loads(body)
    presentations, media_sets = stats["metadata_cache"], stats["media_set_cache"]
    assert presentations["capacity"] + media_sets["capacity"] == 1 << 20
    assert presentations["bytes"] + media_sets["bytes"] <= 1 << 20
    assert presentations["evictions"] > 0 and media_sets["evictions"] > 0
    assert presentations["misses"] == len(names)
