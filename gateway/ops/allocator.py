"""How a worker manages memory: glibc malloc settings so that segment-sized bodies reuse freed memory instead of
faulting in fresh pages, and a cyclic garbage collector that does not walk the whole server for every segment.

A cold segment is a new 1-2 MB ``bytes`` built in an executor thread and freed on the event loop once sent. With
glibc's defaults every one of the 16 I/O threads gets its own arena, and a freed multi-megabyte block at the top of
an arena is handed back to the kernel (trimmed) or was ``mmap``-ed to begin with, so the next body of that size
faults in every page again: measured ~370 minor faults and ~0.8 ms of CPU per 1.6 MB TS segment, a quarter of the
request (docs/performance.md). nginx allocates from pools it keeps; the settings below do the same for malloc:

- at most ``ARENAS`` arenas: threads share them (the GIL serialises most allocation anyway), and memory freed by one
  request is there for the next instead of sitting in one of 16 arenas;
- blocks up to ``MMAP_THRESHOLD`` (glibc's maximum, 32 MB) come from the arenas, not from a fresh ``mmap``;
- up to ``TRIM_THRESHOLD`` of free memory at the top of an arena is kept rather than returned.

The bound this adds to a worker's memory is ARENAS x TRIM_THRESHOLD of free space kept at most (128 MB), part of the
worker's stated bound (``memory_bound_mb``, docs/performance.md). An operator's own ``MALLOC_*`` environment
settings win: nothing is changed when one is set. Other C libraries (musl) have no ``mallopt``: nothing to do there.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

from packagers.ts.muxer import PAYLOAD_BUFFER_KEEP

from ..origin.prefetch import POOLED_PAYLOADS
from ..origin.store import SCRATCH_KEEP

ARENAS = 2
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 64 * 1024 * 1024
# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
TUNED = f"tuned: {ARENAS} arenas, mmap above {MMAP_THRESHOLD >> 20} MB, trim above {TRIM_THRESHOLD >> 20} MB"
state = "defaults"  # what this process runs with, shown in /status/dashboard


def tune_allocator() -> bool:
    """Apply the settings above to this process (call it before any executor thread starts). True when applied."""
    global state
    if any(name.startswith("MALLOC_") for name in os.environ):
        state = "the environment's MALLOC_* settings"
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        state = "defaults: no mallopt in this C library"
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success, 0 on an invalid value
    applied = all([mallopt(M_ARENA_MAX, ARENAS), mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                   mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)])
    state = TUNED if applied else "defaults: mallopt refused the settings"
    return applied


# A cold TS segment allocates a few thousand tracked objects (views, lists), so with the default threshold of 700
# the collector ran every request or two and, every tenth time, walked the worker's whole heap (aiohttp, the catalog,
# metrics): ~13 % of a cold TS segment's CPU (docs/performance.md). Objects alive once the worker is ready are frozen
# (never walked again) and young objects are collected every 20,000 allocations: cycles are rare on the request path
# (nothing there relies on the collector to free memory promptly), so this delays little.
COLLECTOR_THRESHOLDS = (20_000, 20, 20)
collector = "defaults"  # shown in /status/dashboard


def tune_collector() -> str:
    """Freeze what the worker holds once it is ready, and collect less often. Call it once, when ready."""
    global collector
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    collector = f"{gc.get_freeze_count()} objects frozen at start, thresholds {COLLECTOR_THRESHOLDS}"
    return collector


# An idle worker measures ~50 MB (Python, aiohttp, numpy, prometheus-client); the rest covers what grows with use
# and is bounded elsewhere: remembered validators (1024 x 64 ETags), parsed URLs (2,048), connection buffers.
WORKER_BASE_MB = 96


def memory_bound_mb(segment_cache_mb: float, metadata_cache_mb: float, io_threads: int,
                    remote: bool = False) -> float:
    """What a VOD worker's resident memory stays under: its caches, a base, what each thread that builds segments
    (the executor's and the event loop's) keeps between builds, and the free memory malloc keeps; with a ``remote``
    store, the payload buffers the loop's prefetched TS builds keep (gateway/origin/prefetch.py). A segment bigger
    than the kept buffers adds about three times its size while it is being built; RTMP ingest is not counted."""
    per_thread = (SCRATCH_KEEP + PAYLOAD_BUFFER_KEEP) / 2**20
    pooled = POOLED_PAYLOADS * PAYLOAD_BUFFER_KEEP / 2**20 if remote else 0.0
    return (segment_cache_mb + metadata_cache_mb + WORKER_BASE_MB + (io_threads + 1) * per_thread + pooled
            + ARENAS * TRIM_THRESHOLD / 2**20)
