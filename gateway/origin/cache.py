"""LRU caches with single-flight: concurrent misses of one key await one build.

A popular segment that just fell out of every cache is requested by thousands of players within a second; without
single-flight each would parse, read and mux it again. The build runs as its own task, so a client that disconnects
does not cancel the work the others are waiting for. A failed build reaches every waiter and is not cached: the next
request tries again (the file may have been fixed).

``Caches`` groups the three caches a worker keeps (packaged responses, parsed metadata, file identities): a worker
builds them once and hands them to each app generation it starts, so a reload whose cache settings are unchanged
starts warm (gateway/runtime/serve.py).
"""
from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Awaitable, Callable, Generic, Hashable, TypeVar

from packagers.media_set import MediaSet
from packagers.model import Presentation, Track

from ..settings import Settings
from .store import FileIdentity

V = TypeVar("V")


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0  # lookups that started a build
    coalesced: int = 0  # lookups that joined a build already in flight
    builds: int = 0
    failures: int = 0
    evictions: int = 0
    oversize: int = 0  # built values larger than the whole capacity: served, never stored


class SingleFlightLRU(Generic[V]):
    """LRU bounded by total weight (``weigh(value)``, taken once at insertion) and optionally by entries; capacity 0
    disables storage and single-flight entirely."""

    def __init__(self, capacity: int, weigh: Callable[[V], int], max_entries: int | None = None,
                 on_lookup: Callable[[int], None] | None = None):
        self.capacity = capacity
        self.weigh = weigh
        self.max_entries = max_entries  # a second bound, on the number of entries (None: weight only)
        self.counters = CacheCounters()
        self.weight = 0
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._inflight: dict[Hashable, asyncio.Task] = {}
        self._on_lookup = on_lookup or _ignore  # told the ns of each lookup, build excluded (the stage timings)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    async def get_or_build(self, key: Hashable, build: Callable[[], Awaitable[V]]) -> V:
        if self.capacity <= 0:
            self.counters.misses += 1
            self.counters.builds += 1
            return await build()
        started = time.perf_counter_ns()
        value = self.peek(key, started)
        if value is not None:
            return value
        task = self._inflight.get(key)
        if task is None:
            self.counters.misses += 1
            task = asyncio.get_running_loop().create_task(self._build_and_store(key, build))
            task.add_done_callback(_retrieve_exception)
            self._inflight[key] = task
        else:
            self.counters.coalesced += 1
        self._on_lookup(time.perf_counter_ns() - started)
        return await asyncio.shield(task)

    def peek(self, key: Hashable, started: int | None = None) -> V | None:
        """The stored value (a hit, counted and timed like any lookup), or None without counting anything: the caller
        then asks ``get_or_build``, which counts the miss."""
        started = time.perf_counter_ns() if started is None else started
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        self.counters.hits += 1
        self._on_lookup(time.perf_counter_ns() - started)
        return entry[0]

    async def _build_and_store(self, key: Hashable, build: Callable[[], Awaitable[V]]) -> V:
        self.counters.builds += 1
        try:
            value = await build()
        except BaseException:
            self.counters.failures += 1
            raise
        finally:
            del self._inflight[key]
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: V) -> None:
        weight = self.weigh(value)
        if weight > self.capacity:
            self.counters.oversize += 1
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.weight -= old[1]
        self._entries[key] = (value, weight)
        self.weight += weight
        max_entries = len(self._entries) if self.max_entries is None else self.max_entries
        while self.weight > self.capacity or len(self._entries) > max_entries:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.weight -= evicted
            self.counters.evictions += 1

    def discard(self, match: Callable[[Hashable], bool]) -> int:
        """Remove the stored entries whose key ``match``es (a purge); in-flight builds finish and are stored."""
        gone = [key for key in self._entries if match(key)]
        for key in gone:
            self.weight -= self._entries.pop(key)[1]
        return len(gone)

    def stats(self) -> dict:
        c = self.counters
        return {
            "hits": c.hits, "misses": c.misses, "coalesced": c.coalesced, "builds": c.builds, "failures": c.failures,
            "evictions": c.evictions, "oversize": c.oversize, "entries": len(self._entries), "inflight": len(self._inflight),
            "bytes": self.weight, "capacity": self.capacity,
        }


def _ignore(_elapsed_ns: int) -> None:
    pass


def _retrieve_exception(task: asyncio.Task) -> None:
    """Mark a failed build's exception as seen even when every waiter went away."""
    if not task.cancelled():
        task.exception()


class ByteLRU(SingleFlightLRU[bytes]):
    """Packaged responses (segments, playlists) bounded in bytes."""

    def __init__(self, capacity_bytes: int, on_lookup: Callable[[int], None] | None = None):
        super().__init__(capacity_bytes, len, on_lookup=on_lookup)


class MetadataCache:
    """Parsed presentations keyed by file identity, and MediaSets keyed by (identities, segment duration).

    A file replaced on disk has a new identity (size, mtime_ns, inode), so it is parsed afresh; the stale entry ages
    out of the LRU. MediaSets are cached too because a url set's plans cost more than a lookup.

    Both caches are bounded in bytes (``weigh_presentation``, ``weigh_media_set``: the numpy arrays they hold plus a
    fixed overhead per object) as well as in entries: ``capacity_bytes`` is split in two equal halves, one per cache.
    A MediaSet's weight includes the presentations it holds (they stay alive as long as it does), so whatever the
    two caches keep, the arrays alive because of them weigh at most ``capacity_bytes``. A value heavier than its
    half is served and never stored.
    """

    def __init__(self, presentation_entries: int, media_set_entries: int, capacity_bytes: int):
        half = capacity_bytes // 2
        self.presentations: SingleFlightLRU[Presentation] = SingleFlightLRU(half, weigh_presentation,
                                                                            presentation_entries)
        self.media_sets: SingleFlightLRU[MediaSet] = SingleFlightLRU(capacity_bytes - half, weigh_media_set,
                                                                     media_set_entries)

    async def presentation(self, key: Hashable, load: Callable[[], Awaitable[Presentation]]) -> Presentation:
        return await self.presentations.get_or_build(key, load)

    async def media_set(self, key: Hashable, load: Callable[[], Awaitable[MediaSet]]) -> MediaSet:
        return await self.media_sets.get_or_build(key, load)

    def stats(self) -> dict:
        return {"presentations": self.presentations.stats(), "media_sets": self.media_sets.stats()}


class StatCache:
    """File identities seen in the last ``ttl`` seconds, so that cache hits skip the thread hop of a stat.

    A replaced file is noticed at most ``ttl`` later (nginx's ``open_file_cache_valid`` plays the same role).
    Only successful stats are kept: a file that appears is served at once.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, FileIdentity]] = OrderedDict()

    def get(self, paths: tuple[str, ...]) -> tuple[FileIdentity, ...] | None:
        now = time.monotonic()
        found = []
        for path in paths:
            entry = self._entries.get(path)
            if entry is None or entry[0] < now:
                return None
            found.append(entry[1])
        return tuple(found)

    def clear(self) -> None:
        self._entries.clear()

    def forget(self, path: str) -> None:
        self._entries.pop(path, None)

    def put(self, files: tuple[FileIdentity, ...]) -> None:
        if self.ttl <= 0:
            return
        expires = time.monotonic() + self.ttl
        for file in files:
            self._entries.pop(file.path, None)
            self._entries[file.path] = (expires, file)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class Caches:
    """The response cache, the metadata cache and the stat cache of one worker, bounded by ``settings``.

    ``observe_stage(stage, ns)`` is told the time of every response-cache lookup as stage ``cache_lookup`` (the
    worker's metrics, so caches carried across a reload keep reporting into the same metrics); hits and misses are
    the caches' own counters.
    """

    def __init__(self, settings: Settings, observe_stage: Callable[[str, int], None] | None = None):
        self.bounds = cache_bounds(settings)
        on_lookup = None if observe_stage is None else functools.partial(observe_stage, "cache_lookup")
        self.responses = ByteLRU(settings.segment_cache_bytes, on_lookup=on_lookup)
        self.metadata = MetadataCache(settings.metadata_cache_entries, settings.media_set_cache_entries,
                                      settings.metadata_cache_bytes)
        self.stats = StatCache(settings.stat_cache_seconds)

    def purge(self, files: frozenset[str] | None) -> dict[str, int]:
        """Drop what was made from these files (their resolved paths or URLs, ``FileIdentity.real_path``; None:
        everything): packaged responses, parsed presentations and media sets, trusted stats."""
        def made_from(keys: tuple) -> bool:
            return files is None or any(k[0] in files for k in keys)

        purged = {"responses": self.responses.discard(lambda key: made_from(key[0])),
                  "media_sets": self.metadata.media_sets.discard(lambda key: made_from(key[0])),
                  "presentations": self.metadata.presentations.discard(lambda key: made_from((key,)))}
        self.stats.clear()
        return purged

    def fits(self, settings: Settings) -> bool:
        """Whether these caches can serve an app with ``settings``: the same store and the same bounds. Cache keys
        hold the file identities and every setting that changes the bytes (segment duration, container,
        encryption), so entries stay valid across a reload; max-ages are applied per response, not cached."""
        return cache_bounds(settings) == self.bounds


def cache_bounds(settings: Settings) -> tuple:
    """The settings that choose what the caches hold and how much."""
    return (settings.store, settings.origin, settings.segment_cache_mb, settings.metadata_cache_entries,
            settings.media_set_cache_entries, settings.metadata_cache_mb, settings.stat_cache_seconds)


# Python objects around the arrays (Track, CodecConfig, SampleTable, array headers, dicts), measured with
# tracemalloc on the fixtures: ~4 KB per track, ~2 KB per MediaSet; rounded up.
TRACK_OVERHEAD = 4096
PRESENTATION_OVERHEAD = 1024
MEDIA_SET_OVERHEAD = 2048
_COLUMNS = ("offsets", "sizes", "dts", "cts", "durations", "keyframe")


def weigh_track(track: Track) -> int:
    """The sample table's columns, the codec configuration bytes and the fixed overhead of one track."""
    columns = sum(getattr(track.samples, name).nbytes for name in _COLUMNS)
    config = len(track.codec.extradata) + sum(len(ps) for ps in track.codec.parameter_sets)
    return TRACK_OVERHEAD + columns + config


def weigh_presentation(presentation: Presentation) -> int:
    return PRESENTATION_OVERHEAD + sum(weigh_track(t) for t in presentation.tracks)


def weigh_media_set(media_set: MediaSet) -> int:
    """Its presentations, the plans' boundaries (shared plans once) and, up front, the per-track sample ranges the
    media set memoizes as requests come (int64, one per segment + 1, for every track of every file): the weight is
    taken once, at insertion, so what may still grow is counted now."""
    plans = {id(plan): plan for plan in media_set.plans}.values()
    ranges = sum(8 * (plan.count + 1) * len(p.tracks) for plan, p in zip(media_set.plans, media_set.presentations))
    return (MEDIA_SET_OVERHEAD + sum(plan.boundaries.nbytes for plan in plans) + ranges
            + sum(weigh_presentation(p) for p in media_set.presentations))
