"""Prometheus writes gathered and flushed in one go (gateway/ops/pending.py) lose and add nothing.

Ground truth: prometheus-client's own ``observe``/``inc`` on a second registry, and the number of requests a real
`gateway serve` was sent concurrently (so that the batched path, not the lone-request flush, is the one measured).
"""
from __future__ import annotations

import asyncio
import random

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.ops.metrics import STAGE_BUCKETS
from gateway.ops.pending import PendingSamples
from tests.gateway.test_metrics import TITLE, delta, metrics_store, scrape, start_gateway, stop  # noqa: F401


def _series(registry: CollectorRegistry):
    counter = Counter("requests", "r", ["kind"], registry=registry)
    histogram = Histogram("duration_seconds", "d", ["kind"], buckets=STAGE_BUCKETS, registry=registry)
    return counter, histogram


def test_flushed_totals_equal_prometheus_one_write_at_a_time():
    direct, batched = CollectorRegistry(), CollectorRegistry()
    (c1, h1), (c2, h2) = _series(direct), _series(batched)
    pending = PendingSamples()
    rng = random.Random(7)
    # bucket bounds exactly, just above and below them, zero, and values past the last finite bound
    values = [b for b in STAGE_BUCKETS] + [b * 1.0001 for b in STAGE_BUCKETS] + [b * 0.9999 for b in STAGE_BUCKETS]
    values += [0.0, 3.5, 1e6] + [rng.expovariate(1000) for _ in range(500)]
    for i, v in enumerate(values):
        kind = "a" if i % 3 else "b"
        h1.labels(kind).observe(v)
        c1.labels(kind).inc(i % 5 + 1)
        pending.observe(h2.labels(kind), v)
        pending.inc(c2.labels(kind), i % 5 + 1)
        if i % 97 == 0:
            pending.flush()  # several flushes, as the event loop makes them
    pending.flush()
    assert not pending
    got, want = _samples(batched), _samples(direct)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if key[0].endswith("_sum"):  # the same values added in batches: equal up to float rounding
            assert abs(got[key] - value) <= 1e-12 * abs(value), key
        else:
            assert got[key] == value, key


def _samples(registry: CollectorRegistry) -> dict:
    return {(s.name, frozenset(s.labels.items())): s.value for family in registry.collect() for s in family.samples
            if not s.name.endswith("_created")}


def test_nothing_is_written_before_the_flush():
    registry = CollectorRegistry()
    counter, histogram = _series(registry)
    pending = PendingSamples()
    pending.inc(counter.labels("a"), 2)
    pending.observe(histogram.labels("a"), 0.5)
    assert registry.get_sample_value("requests_total", {"kind": "a"}) == 0
    assert registry.get_sample_value("duration_seconds_count", {"kind": "a"}) == 0
    pending.flush()
    assert registry.get_sample_value("requests_total", {"kind": "a"}) == 2
    assert registry.get_sample_value("duration_seconds_count", {"kind": "a"}) == 1


def test_concurrent_requests_are_all_counted(metrics_store, tmp_path, monkeypatch):
    """200 requests on 16 connections at once (responses recorded while others are in flight: the batched flush),
    then a scrape: every counter and histogram moved by exactly 200."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    proc, base = start_gateway(metrics_store, tmp_path / "gateway.log")
    url = base + TITLE + "/index-v1-a1.m3u8"

    async def load() -> list[int]:
        connector = aiohttp.TCPConnector(limit=16)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one() -> int:
                async with session.get(url) as r:
                    await r.read()
                    return r.status
            return await asyncio.gather(*(one() for _ in range(200)))

    try:
        assert asyncio.run(load()).count(200) == 200  # warm: the playlist is cached from now on
        before = scrape(base)
        assert asyncio.run(load()).count(200) == 200
        after = scrape(base)
    finally:
        stop(proc)
    labels = {"protocol": "hls", "type": "manifest"}
    assert delta(before, after, "gateway_requests_total", status="200", **labels) == 200
    assert delta(before, after, "gateway_request_duration_seconds_count", **labels) == 200
    assert delta(before, after, "gateway_request_duration_seconds_bucket", le="+Inf", **labels) == 200
    assert delta(before, after, "gateway_request_duration_seconds_sum", **labels) > 0
    assert delta(before, after, "gateway_stage_duration_seconds_count", stage="cache_lookup") == 200
    assert delta(before, after, "gateway_response_cache_hits_total") == 200
    assert delta(before, after, "gateway_response_bytes_total", **labels) > 0
