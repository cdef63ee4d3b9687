"""What the status page charts, kept in memory by each worker for the last minutes (``Dashboard``).

Recorded by the app's one response hook (gateway/http/app.py ``_on_response_prepare``), so the per-response path is a
handful of integer additions on plain Python attributes and lists: the current second's counters and the current
minute's latency histograms are accumulated there and copied into fixed numpy rings once per second / minute (the
first response of the next one pays, O(1) either way). Reading (``/status/dashboard``, every 2 s per open page) is
vectorised numpy over the rings.

- ``SecondRing``: requests, bytes sent, errors, cache hits and misses per wall-clock second, last ``SECONDS``.
- ``LatencySketch``: per protocol and minute, a histogram on fixed log-scale buckets (``PER_DECADE`` per decade from
  ``LATENCY_MIN_NS``), last ``MINUTES``: p50/p95 are read from the merged minutes with log interpolation inside the
  bucket, so the error is below one bucket's width (a factor 10**(1/PER_DECADE) ≈ 1.12).
- ``TopK``: the busiest entries (space-saving, bounded: counts may overstate by ``floor``, never understate).
- ``IngestHistory``: each live stream's relay byte counter sampled once a second → ingest bitrate per second.
Numbers are this worker's only (``gateway serve --workers N`` keeps N sets); the page says which worker answered.
"""
from __future__ import annotations

import math
import re
import time
from collections import deque

import numpy as np

SECONDS = 600
MINUTES = 10
FIELDS = ("requests", "bytes", "errors", "hits", "misses")
PROTOCOLS = ("hls", "dash", "mss", "hds", "mp4", "live", "other")
PROTOCOL_INDEX = {p: i for i, p in enumerate(PROTOCOLS)}
LATENCY_MIN_NS = 10_000  # 10 µs: below it, bucket 0
PER_DECADE = 20
DECADES = 7  # up to 100 s; above it, the last bucket
BUCKETS = PER_DECADE * DECADES + 2
RECENT_ERRORS = 50
TOP_K = 20
INGEST_STREAMS = 64  # streams whose bitrate history is kept (more: the least recently seen go)
_LOG_MIN = math.log10(LATENCY_MIN_NS)
_CODE = re.compile(r"[A-Z][A-Z0-9_]{1,40}")


class SecondRing:
    """Per-second counters of ``FIELDS`` for the last ``seconds`` seconds."""

    def __init__(self, seconds: int = SECONDS):
        self.seconds = seconds
        self.values = np.zeros((seconds, len(FIELDS)), np.int64)
        self.stamps = np.full(seconds, -1, np.int64)  # the second each row holds (stale rows read as 0)
        self.second = -1
        self.current = [0] * len(FIELDS)  # the open second, not yet in the ring

    def add(self, second: int, nbytes: int, error: bool, hit: bool, miss: bool) -> None:
        if second != self.second:
            self._close(second)
        c = self.current
        c[0] += 1
        c[1] += nbytes
        c[2] += error
        c[3] += hit
        c[4] += miss

    def _close(self, second: int) -> None:
        if self.second >= 0:
            row = self.second % self.seconds
            self.values[row] = self.current
            self.stamps[row] = self.second
        self.second, self.current = second, [0] * len(FIELDS)

    def window(self, now: int) -> np.ndarray:
        """(seconds, fields) counts of the seconds ``now - seconds + 1 .. now``, oldest first."""
        secs = np.arange(now - self.seconds + 1, now + 1, dtype=np.int64)
        rows = secs % self.seconds
        out = np.where((self.stamps[rows] == secs)[:, None], self.values[rows], 0)
        if now - self.seconds < self.second <= now:
            out[self.second - now - 1] += self.current
        return out


class LatencySketch:
    """Per protocol, per minute: counts on log-scale buckets of the response time (ns)."""

    def __init__(self, minutes: int = MINUTES):
        self.minutes = minutes
        self.counts = np.zeros((minutes, len(PROTOCOLS), BUCKETS), np.int64)
        self.stamps = np.full(minutes, -1, np.int64)
        self.minute = -1
        self.current = [[0] * BUCKETS for _ in PROTOCOLS]

    def add(self, minute: int, protocol: int, ns: int) -> None:
        if minute != self.minute:
            self._close(minute)
        b = int((math.log10(ns) - _LOG_MIN) * PER_DECADE) + 1 if ns >= LATENCY_MIN_NS else 0
        self.current[protocol][b if b < BUCKETS else BUCKETS - 1] += 1

    def _close(self, minute: int) -> None:
        if self.minute >= 0:
            row = self.minute % self.minutes
            self.counts[row] = self.current
            self.stamps[row] = self.minute
        self.minute, self.current = minute, [[0] * BUCKETS for _ in PROTOCOLS]

    def merged(self, now_minute: int) -> np.ndarray:
        """(protocols, buckets): the last ``minutes`` minutes, the open one included."""
        mins = np.arange(now_minute - self.minutes + 1, now_minute + 1, dtype=np.int64)
        rows = mins % self.minutes
        total = np.where((self.stamps[rows] == mins)[:, None, None], self.counts[rows], 0).sum(axis=0)
        if now_minute - self.minutes < self.minute <= now_minute:
            total += np.asarray(self.current, np.int64)
        return total


def bucket_edges() -> np.ndarray:
    """Lower edges (ns) of buckets 1 .. BUCKETS-1; bucket b spans [edges[b-1], edges[b])."""
    return 10.0 ** (_LOG_MIN + np.arange(BUCKETS - 1) / PER_DECADE)


_EDGES = bucket_edges()


def percentiles(counts: np.ndarray, qs: tuple[float, ...]) -> list[float | None]:
    """The ``qs`` quantiles (0..1) of a histogram from ``LatencySketch``, in ns; None when it is empty. Inside a bucket
    the rank is interpolated on the log scale (values are spread evenly in log time, the buckets' own geometry)."""
    cum = np.cumsum(counts)
    total = int(cum[-1]) if len(cum) else 0
    if total == 0:
        return [None for _ in qs]
    ranks = np.asarray(qs, float) * total
    b = np.minimum(np.searchsorted(cum, ranks, side="left"), len(counts) - 1)
    b = np.where(counts[b] == 0, np.searchsorted(cum, ranks, side="right"), b)  # a rank on an empty bucket's edge
    below = np.where(b > 0, cum[np.maximum(b - 1, 0)], 0)
    frac = np.clip((ranks - below) / np.maximum(counts[b], 1), 0.0, 1.0)
    lower = _EDGES[np.clip(b - 1, 0, len(_EDGES) - 1)]
    value = lower * 10.0 ** (frac / PER_DECADE)
    value = np.where(b == 0, _EDGES[0], np.where(b >= BUCKETS - 1, _EDGES[-1], value))  # out of range: clamp
    return [float(v) for v in value]


class TopK:
    """Approximate top-k counter (space-saving with batched eviction): at most ``2 * k`` keys; when full, the ``k``
    largest stay and the largest count dropped becomes ``floor``, which a new key starts from (so a count is an
    overestimate by at most ``floor``, and any key seen more than ``floor`` times is kept). Amortised O(1) per add."""

    def __init__(self, k: int = TOP_K):
        self.k = k
        self.counts: dict[str, int] = {}
        self.floor = 0

    def add(self, key: str) -> None:
        counts = self.counts
        c = counts.get(key)
        if c is not None:
            counts[key] = c + 1
            return
        if len(counts) >= 2 * self.k:
            ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
            self.floor = max(self.floor, ranked[self.k][1])
            self.counts = counts = dict(ranked[:self.k])
        counts[key] = self.floor + 1

    def top(self, n: int | None = None) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n or self.k]


class IngestHistory:
    """Each live stream's relay byte counter (``bytes_in``), sampled once a second: bitrate per second."""

    def __init__(self, seconds: int = SECONDS):
        self.seconds = seconds
        self.samples: dict[str, deque] = {}

    def sample(self, second: int, streams: dict[str, dict]) -> None:
        for key, st in streams.items():
            samples = self.samples.pop(key, None) or deque(maxlen=self.seconds + 1)
            if samples and st.get("bytes_in", 0) < samples[-1][1]:
                samples.clear()  # a new publisher: its counter starts again
            if not samples or samples[-1][0] != second:
                samples.append((second, int(st.get("bytes_in", 0))))
            self.samples[key] = samples  # re-inserted: the dict's order is "least recently seen first"
        for key in [k for k in self.samples if k not in streams]:
            del self.samples[key]
        while len(self.samples) > INGEST_STREAMS:
            del self.samples[next(iter(self.samples))]

    def bitrate(self, key: str) -> tuple[int | None, list[int]]:
        """(second of the first value, bit/s per second since): the counter's increase between samples."""
        samples = self.samples.get(key)
        if not samples or len(samples) < 2:
            return None, []
        a = np.asarray(samples, np.int64)
        dt = np.maximum(np.diff(a[:, 0]), 1)
        return int(a[1, 0]), (np.diff(a[:, 1]) * 8 // dt).tolist()


def error_code(message: str) -> str:
    """The code of a gateway error body (``CODE: message``, gateway/http/errors.py), or ''."""
    head = message.partition(":")[0]
    return head if _CODE.fullmatch(head) else ""


class Dashboard:
    """One worker's in-memory series for the status page (see the module docstring)."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self.ring = SecondRing()
        self.latency = LatencySketch()
        self.busiest = TopK()
        self.errors: deque[dict] = deque(maxlen=RECENT_ERRORS)
        self.ingest = IngestHistory()

    def record(self, protocol: str, status: int, nbytes: int, cache: str | None, elapsed_ns: int | None,
               entry: str | None) -> None:
        """One response (the hook's facts). ``entry``: what the busiest table counts, None for non-media."""
        second = int(self.clock())
        self.ring.add(second, nbytes, status >= 400, cache == "hit", cache == "miss")
        if elapsed_ns is not None:
            self.latency.add(second // 60, PROTOCOL_INDEX.get(protocol, 6), max(elapsed_ns, 1))
        if entry is not None:
            self.busiest.add(entry)

    def error(self, status: int, method: str, path: str, message: str) -> None:
        self.errors.append({"time": self.clock(), "status": status, "code": error_code(message), "method": method,
                            "url": path[:300], "message": message[:300]})

    def snapshot(self) -> dict:
        """The JSON the page draws from: series oldest first, one value per second ending at ``end``."""
        now = int(self.clock())
        window = self.ring.window(now)
        merged = self.latency.merged(now // 60)
        latency = {}
        for i, name in enumerate(PROTOCOLS):
            n = int(merged[i].sum())
            if n:
                p50, p95 = percentiles(merged[i], (0.5, 0.95))
                latency[name] = {"count": n, "p50_ms": round(p50 / 1e6, 3), "p95_ms": round(p95 / 1e6, 3)}
        return {
            "end": now, "step": 1,
            "series": {name: window[:, i].tolist() for i, name in enumerate(FIELDS)},
            "latency": latency, "latency_minutes": MINUTES,
            "busiest": [{"entry": k, "count": c} for k, c in self.busiest.top()],
            "busiest_floor": self.busiest.floor,
            "errors": list(reversed(self.errors)),
        }
