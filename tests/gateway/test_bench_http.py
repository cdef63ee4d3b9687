"""`gateway bench http` as a user runs it: a real subprocess, real servers, real load, JSON checked for coherence.

Figures are never asserted (machines differ): only that every row and yardstick is there, that something was served,
and that each printed ratio is the row's own figure over its yardstick's.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from fixtures.generate import RECIPES, cache_dir, recipe_key
from gateway.tools.measure import MB

BENCH_FILE = "bench_720p_10min.mp4"
ROWS = ("master_m3u8", "hls_ts_segment")


def bench_file_cached() -> bool:
    stem, _, ext = BENCH_FILE.rpartition(".")
    return (cache_dir() / f"{stem}.{recipe_key(RECIPES[BENCH_FILE])}.{ext}").exists()


# ~10 s once the 720p file is cached; its first encode takes ~2 min
pytestmark = [] if bench_file_cached() else [pytest.mark.slow]


def gateway_command() -> list[str]:
    exe = shutil.which("gateway")
    return [exe] if exe else [sys.executable, "-m", "gateway"]


@pytest.fixture(scope="module")
def figures() -> dict:
    out = subprocess.run(gateway_command() + ["bench", "http", "--seconds", "0.5", "--rows", ",".join(ROWS), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_the_asked_rows_are_there_and_served_requests(figures):
    assert set(figures["rows"]) == set(ROWS)
    for name in ROWS:
        row = figures["rows"][name]
        assert row["requests"] > 0 and row["req_per_s"] > 0, (name, row)
        assert row["req_per_s"] == pytest.approx(row["requests"] / row["seconds"]), name
        assert row["cpu_ms_per_request"] > 0, (name, row)  # the worker's /proc CPU time moved under load
        assert row["server_core_busy"] > 0, (name, row)
        assert row["body_bytes"] > 0 and row["target"] and row["before"], (name, row)
    assert figures["rows"]["hls_ts_segment"]["urls_cycled"] > 1  # cold rows cycle over many segments
    assert figures["rows"]["hls_ts_segment"]["server"] == "cold"
    assert figures["rows"]["master_m3u8"]["server"] == "cached"


def test_every_yardstick_is_measured_in_the_same_run(figures):
    yard = figures["yardsticks"]
    assert yard["memcpy"]["MB_per_s"] > 0
    assert yard["file_read"]["MB_per_s"] > 0
    assert yard["empty_aiohttp"]["req_per_s"] > 0 and yard["empty_aiohttp"]["body_bytes"] == 500
    # measured at the start and at the end of the run; the better pass is the one kept
    for name, key in (("memcpy", "MB_per_s"), ("file_read", "MB_per_s"), ("empty_aiohttp", "req_per_s")):
        assert len(yard[name]["passes"]) == 2 and yard[name][key] == max(yard[name]["passes"]), name
    if os.access(shutil.which("nginx") or "/usr/sbin/nginx", os.X_OK):
        assert yard["nginx_sendfile"]["req_per_s"] > 0
        assert yard["nginx_sendfile"]["body_bytes"] > 100_000  # a whole TS segment's bytes
        assert yard["nginx_sendfile"]["req_per_s"] == max(yard["nginx_sendfile"]["passes"])
    else:
        assert yard["nginx_sendfile"]["skipped"]


def test_each_ratio_is_the_figure_over_its_yardstick(figures):
    yard = figures["yardsticks"]
    master = figures["rows"]["master_m3u8"]
    assert master["yardstick"] == "empty_aiohttp" and master["ratio_of"] == "req_per_s"
    assert master["ratio"] == pytest.approx(master["req_per_s"] / yard["empty_aiohttp"]["req_per_s"], abs=5e-5)
    assert master["cpu_ratio"] == pytest.approx(
        yard["empty_aiohttp"]["cpu_ms_per_request"] / master["cpu_ms_per_request"], abs=5e-5)
    segment = figures["rows"]["hls_ts_segment"]
    assert segment["yardstick"] == "memcpy" and segment["ratio_of"] == "MB_per_s"
    assert segment["MB_per_s"] == pytest.approx(segment["req_per_s"] * segment["body_bytes"] / MB)
    assert segment["ratio"] == pytest.approx(segment["MB_per_s"] / yard["memcpy"]["MB_per_s"], abs=5e-5)
    assert segment["target_met"] == (segment["req_per_s"] >= 614.4)


def test_peak_memory_is_reported_beside_the_configured_caches(figures):
    memory = figures["memory"]
    assert set(memory) == {"cold", "cached"}  # the cached server also hands nginx its segment bytes
    assert memory["cold"]["segment_cache_MB"] == 0
    assert memory["cached"]["segment_cache_MB"] > 0
    for kind, m in memory.items():
        assert m["peak_rss_MB"] > 0 and m["metadata_cache_MB"] > 0, (kind, m)
        # the stated bound (docs/performance.md): the caches plus a constant, and the worker stayed under it
        constant = m["bound_MB"] - m["segment_cache_MB"] - m["metadata_cache_MB"]
        assert 100 < constant < 1000 and m["peak_rss_MB"] <= m["bound_MB"], (kind, m)


def test_workers_scaling_is_measured_only_with_a_core_left_for_the_load(figures):
    scaling = figures["workers_scaling"]
    cores = len(os.sched_getaffinity(0))
    if cores < 3:
        assert scaling["workers"] is None and "N + 1" in scaling["note"]
    else:
        assert scaling["workers"] == cores - 1 and scaling["req_per_s"] > 0
        assert scaling["ratio_to_n_times_one"] == pytest.approx(
            scaling["req_per_s"] / (scaling["workers"] * scaling["one_worker_req_per_s"]), rel=1e-3)


def test_a_gateway_of_two_workers_is_loaded_and_timed_over_both(tmp_path):
    """The pieces the scaling row uses, on any machine: two workers found, both serve, CPU summed over both."""
    from gateway.tools.load import load, start_gateway

    from .conftest import add_to_store

    store = tmp_path / "store"
    store.mkdir()
    add_to_store(store, "title_360p.mp4")
    server = start_gateway(store, 0.0, 64, tmp_path, workers=2)
    try:
        assert len(server.workers) == 2 and server.pid in server.workers
        result = load(server.base, ["/hls/title_360p.mp4/seg-1-v1-a1.ts"], 1, server.workers, tmp_path,
                      core=0, threads=2)
        assert result.requests > 0 and result.cpu_seconds > 0
    finally:
        server.stop()
