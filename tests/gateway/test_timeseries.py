"""The status page's in-memory series (gateway/ops/timeseries.py) against plain numpy on random data.

Percentile tolerance: the sketch keeps log-scale buckets of width 10**(1/PER_DECADE) (≈ 1.122) and interpolates inside
the bucket that holds the rank, so its answer and numpy's (linear between order statistics) lie in the same or an
adjacent bucket: relative error below one bucket width, 12.2 %. Observed errors are a few percent.
"""
from __future__ import annotations

import numpy as np
import pytest

from gateway.ops.timeseries import (BUCKETS, FIELDS, LATENCY_MIN_NS, MINUTES, PER_DECADE, PROTOCOL_INDEX,
                                    Dashboard, IngestHistory, LatencySketch, SecondRing, TopK, error_code,
                                    percentiles)

BUCKET_WIDTH = 10 ** (1 / PER_DECADE) - 1


def test_second_ring_matches_bincount_with_gaps_and_wraparound():
    rng = np.random.default_rng(1)
    seconds = np.sort(rng.choice(np.arange(10_000, 11_500), size=6000))  # 1500 s (wraps the 600-s ring), gaps
    nbytes = rng.integers(0, 2_000_000, size=len(seconds))
    error, hit, miss = (rng.random((3, len(seconds))) < [[0.1], [0.5], [0.3]])
    ring = SecondRing()
    for s, b, e, h, m in zip(seconds.tolist(), nbytes.tolist(), error.tolist(), hit.tolist(), miss.tolist()):
        ring.add(s, b, e, h, m)
    for now in (int(seconds[-1]), int(seconds[-1]) + 1, int(seconds[-1]) + 300, int(seconds[-1]) + 700):
        got = ring.window(now)
        lo = now - 599
        keep = seconds >= lo
        expected = np.stack([np.bincount(seconds[keep] - lo, weights=w[keep], minlength=600).astype(np.int64)
                             for w in (np.ones(len(seconds)), nbytes, error, hit, miss)], axis=1)
        assert got.shape == (600, len(FIELDS))
        np.testing.assert_array_equal(got, expected[:600])


@pytest.mark.parametrize("seed,n", [(2, 200), (3, 5_000), (4, 100_000)])
def test_percentiles_match_numpy_within_one_bucket(seed, n):
    rng = np.random.default_rng(seed)
    ns = np.exp(rng.normal(np.log(2e6), 1.5, size=n)).astype(np.int64) + LATENCY_MIN_NS  # ~2 ms, heavy tail
    sketch = LatencySketch()
    for v in ns.tolist():
        sketch.add(100, PROTOCOL_INDEX["hls"], v)
    merged = sketch.merged(100)
    assert merged[PROTOCOL_INDEX["hls"]].sum() == n and merged.sum() == n
    qs = (0.5, 0.9, 0.95, 0.99)
    got = np.array(percentiles(merged[PROTOCOL_INDEX["hls"]], qs))
    expected = np.percentile(ns, [100 * q for q in qs])
    np.testing.assert_allclose(got, expected, rtol=BUCKET_WIDTH)


def test_latency_sketch_forgets_minutes_out_of_the_window_and_clamps_the_range():
    sketch = LatencySketch()
    sketch.add(1000, 0, 5_000_000)  # 5 ms, minute 1000
    sketch.add(1003, 0, 50_000_000)
    sketch.add(1003, 6, 1)  # below the range: bucket 0
    sketch.add(1003, 6, 10 ** 13)  # above: the last bucket
    assert sketch.merged(1003)[0].sum() == 2
    assert sketch.merged(1000 + MINUTES)[0].sum() == 1  # minute 1000 has left the 10-minute window
    assert percentiles(sketch.merged(1000 + MINUTES)[0], (0.5,))[0] == pytest.approx(5e7, rel=BUCKET_WIDTH)
    low, high = percentiles(sketch.merged(1003)[6], (0.25, 0.99))
    assert low == LATENCY_MIN_NS and high == pytest.approx(1e11)
    assert percentiles(np.zeros(BUCKETS, np.int64), (0.5,)) == [None]


def test_top_k_keeps_the_heavy_hitters_and_bounds_its_overestimate():
    rng = np.random.default_rng(5)
    keys = rng.zipf(1.3, size=50_000) % 5000  # a few very busy entries, a long tail
    top = TopK(k=20)
    for k in keys.tolist():
        top.add(f"/hls/{k}.mp4")
    assert len(top.counts) <= 40
    true = np.bincount(keys)
    for key, count in top.top():
        t = true[int(key[5:-4])]
        assert t <= count <= t + top.floor  # never under, over by at most floor
    heavy = {f"/hls/{k}.mp4" for k in np.flatnonzero(true > top.floor)}
    assert heavy <= set(top.counts) and len(heavy) >= 5
    assert [key for key, _ in top.top(5)] == [f"/hls/{k}.mp4" for k in np.argsort(-true, kind="stable")[:5]]


def test_top_k_is_exact_below_its_capacity():
    top = TopK(k=4)
    for key in "aabbbcdddd":
        top.add(key)
    assert top.top() == [("d", 4), ("b", 3), ("a", 2), ("c", 1)] and top.floor == 0


def test_ingest_history_bitrate_and_a_new_publisher():
    h = IngestHistory()
    for second, total in [(10, 0), (11, 1000), (12, 3000), (14, 7000)]:
        h.sample(second, {"live/a": {"bytes_in": total}, "live/b": {"bytes_in": 0}})
    assert h.bitrate("live/a") == (11, [8000, 16000, 16000])  # 4000 bytes over 2 s
    h.sample(15, {"live/a": {"bytes_in": 500}})  # the counter restarted (republish); live/b is gone
    assert h.bitrate("live/a") == (None, []) and "live/b" not in h.samples
    h.sample(16, {"live/a": {"bytes_in": 1500}})
    assert h.bitrate("live/a") == (16, [8000])


def test_dashboard_snapshot_and_error_codes():
    now = [1_000_000.5]
    d = Dashboard(clock=lambda: now[0])
    d.record("hls", 200, 1000, "miss", 2_000_000, "/hls/a.mp4")
    d.record("hls", 200, 1000, "hit", 1_000_000, "/hls/a.mp4")
    d.record("thumb", 404, 0, None, 500_000, None)
    d.error(404, "GET", "/thumb/x.mp4/thumb-1.jpg", "NOT_FOUND: no such file 'x.mp4'")
    now[0] += 1
    snap = d.snapshot()
    assert snap["end"] == 1_000_001
    assert [snap["series"][f][-2] for f in FIELDS] == [3, 2000, 1, 1, 1]
    assert snap["latency"]["hls"]["count"] == 2 and snap["latency"]["other"]["count"] == 1
    assert snap["busiest"] == [{"entry": "/hls/a.mp4", "count": 2}]
    assert snap["errors"][0]["code"] == "NOT_FOUND" and snap["errors"][0]["url"] == "/thumb/x.mp4/thumb-1.jpg"
    assert error_code("Internal Server Error") == "" and error_code("BAD_DATA: x") == "BAD_DATA"
