"""Prometheus writes gathered on the hot path and applied in one go (gateway/ops/metrics.py).

In multiprocess mode (`gateway serve`) every prometheus-client write takes a lock, checks the process id (a system
call) and writes an mmap'ed file: about 5 µs on this machine, and a cached playlist made eight of them (request
counter, duration histogram = sum + bucket, bytes, the stage histogram, the cache counters' mirror), a sixth of its
whole cost. Here a write is a dict update under a lock (stage timings come from the I/O threads too); ``flush``
applies the totals, one prometheus write per series and bucket touched since the last flush.

When: ``GatewayMetrics`` flushes once per event-loop step that recorded responses (``loop.call_soon``: under load one
step answers several requests, a lone request is flushed microseconds after its response left), and before every
scrape and gauge refresh.
"""
from __future__ import annotations

import threading
from bisect import bisect_left


class PendingSamples:
    """Counter increments and histogram observations not yet written to their prometheus series."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._increments: dict[object, float] = {}  # counter child → amount
        self._observations: dict[object, list] = {}  # histogram child → [sum, count per bucket...]

    def inc(self, counter, amount: float = 1.0) -> None:
        with self._lock:
            self._increments[counter] = self._increments.get(counter, 0.0) + amount

    def observe(self, histogram, value: float) -> None:
        # the bucket Histogram.observe picks: the first upper bound >= value (the last bound is +Inf)
        bucket = bisect_left(histogram._upper_bounds, value)
        with self._lock:
            totals = self._observations.get(histogram)
            if totals is None:
                totals = self._observations[histogram] = [0.0] * (len(histogram._upper_bounds) + 1)
            totals[0] += value
            totals[bucket + 1] += 1

    def __bool__(self) -> bool:
        return bool(self._increments or self._observations)

    def flush(self) -> None:
        """Write everything gathered so far. Histograms are written through their ``_sum`` and ``_buckets`` values,
        what ``Histogram.observe`` writes one observation at a time (prometheus-client has no bulk observe)."""
        with self._lock:
            increments, self._increments = self._increments, {}
            observations, self._observations = self._observations, {}
        for counter, amount in increments.items():
            counter.inc(amount)
        for histogram, totals in observations.items():
            histogram._sum.inc(totals[0])
            for bucket, count in zip(histogram._buckets, totals[1:]):
                if count:
                    bucket.inc(count)
