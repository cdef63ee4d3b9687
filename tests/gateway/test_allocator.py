"""gateway/ops/allocator.py: segment-sized bodies built in executor threads and freed on the event loop reuse memory
instead of faulting in fresh pages (measured: ~370 minor faults per 1.6 MB TS segment with glibc's defaults)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from .processes import gateways, get  # noqa: F401  (fixture)

# What a worker does with every cold segment, reduced to the allocation pattern: 16 executor threads each build a
# fresh 1.6 MB body, the main thread frees them once "sent". Prints the minor page faults per body, steady state.
CHURN = textwrap.dedent("""
    import resource, sys
    from concurrent.futures import ThreadPoolExecutor
    from gateway.ops import allocator
    if sys.argv[1] == "tuned":
        print(allocator.tune_allocator(), allocator.state)
    def build(i):
        return bytes([i & 0xFF]) * 1_600_000
    with ThreadPoolExecutor(16) as pool:
        for _ in range(3):
            list(pool.map(build, range(32)))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            bodies = list(pool.map(build, range(16)))
            del bodies
        print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (20 * 16))
""")


def churn(mode: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", CHURN, mode], env={**clean, **env}, capture_output=True, text=True,
                         check=True, timeout=120)
    return out.stdout.split("\n")


def test_tuned_allocator_reuses_freed_bodies_instead_of_faulting_pages_in():
    plain = float(churn("plain")[0])
    if plain < 50:
        pytest.skip(f"this C library already reuses freed bodies ({plain:.0f} faults per body): nothing to show")
    applied, faults = churn("tuned")[:2]
    assert applied.startswith("True tuned: 2 arenas")
    # a 1.6 MB body is 390 pages: the plain run faults most of them in again (~360), the tuned one almost none
    # (0-10, depending on how the 16 threads' bodies interleave in the arenas)
    assert float(faults) < plain / 10


def test_operator_malloc_settings_win():
    applied = churn("tuned", MALLOC_ARENA_MAX="4")[0]
    assert applied == "False the environment's MALLOC_* settings"


# A worker-sized heap (200,000 long-lived containers), then a request path's churn of short-lived ones: prints the
# collections of each generation during the churn.
COLLECTIONS = textwrap.dedent("""
    import gc, sys
    from gateway.ops import allocator
    heap = [{"n": i} for i in range(200_000)]
    if sys.argv[1] == "tuned":
        allocator.tune_collector()
    before = [s["collections"] for s in gc.get_stats()]
    for _ in range(100):
        churn = [[i] for i in range(2_000)]
    print(*(s["collections"] - b for s, b in zip(gc.get_stats(), before)))
""")


def test_tuned_collector_leaves_the_long_lived_heap_alone():
    def collections(mode: str) -> list[int]:
        out = subprocess.run([sys.executable, "-c", COLLECTIONS, mode], capture_output=True, text=True, check=True,
                             timeout=120)
        return [int(n) for n in out.stdout.split()]

    plain, tuned = collections("plain"), collections("tuned")
    # 200,000 allocations: the default threshold (700) collects the young generation ~285 times, the tuned one 10
    assert sum(plain) > 200 and sum(tuned) <= 11
    assert tuned[2] == 0  # no full walk of the heap


def test_serve_workers_run_tuned(gateways, store):
    gw = gateways(store=store)
    status, _, body = get(gw.base, "/status/dashboard")
    dashboard = json.loads(body)
    assert status == 200 and dashboard["allocator"].startswith("tuned: 2 arenas")
    assert "objects frozen at start, thresholds (20000, 20, 20)" in dashboard["collector"]
