"""Per-stream, per-minute audience analytics from CMCD (issue 18): the in-memory aggregator of one worker.

``Audience.record`` counts one or more identical manifest/segment responses (batched by
gateway/ops/audience_node.py): a keyed hash and a few dict/set operations on the open minute's plain Python sets and
dicts (``audience_query.Cell``; no numpy): 3-5 µs of CPU with CMCD, ~2.7 µs without, a third of it the hash. The
first record of the next minute, or any ``export``/``current`` call after the minute ended, closes it: each stream's
minute is packed into one uint64 array (``audience_query.pack``: counters, histogram entries, sorted session hashes
overall, per rendition and per player), a fraction of the sets' memory. Reading: ``export`` encodes the packed
arrays as they are; ``merge_exports`` and ``summarize`` (gateway/ops/audience_query.py) decode the JSON into sets.

- Minute = floor(unix time / bucket_seconds); minutes older than ``window_minutes`` are dropped. A record whose time
  is before the open minute (the clock stepped back) counts in the open minute (``late_records``).
- Sessions: the CMCD ``sid``, else the ``client`` the caller passes (address and User-Agent): those requests count as
  ``estimated_requests``, with or without other CMCD keys. Only a 64-bit keyed BLAKE2b of it is kept (issue 18
  item 5: no raw identifier in memory or exports); every node hashing with the same salt is what lets the pool count
  a session once across nodes.
- Startup time: a session's first manifest request waits in a bounded table until its first segment request of the
  same stream on this worker; the delay goes into the segment's minute. Sessions already started (or first seen on a
  segment) are remembered, bounded too, so that a live playlist refresh is not taken for a new start. Each table holds
  at most 100k entries and an eighth of ``max_bytes`` (oldest dropped: ``startup_table_dropped``); a manifest waiting
  longer than 5 minutes is dropped (``startups_expired``). A start whose manifest and first segment land on two
  workers is not measured (a per-worker table; the merge cannot join them).
- Memory: ``memory_bytes`` counts the closed arrays' ``nbytes`` plus per-entry estimates of the Python containers
  (measured with tracemalloc on CPython 3.11: see the constants; they overstate by 20-50 %, never understate). Before
  a record could exceed ``max_bytes`` the oldest minutes go (``evicted_minutes``); if the open minute alone fills the
  budget the record is dropped (``dropped_over_budget``). More than ``max_streams`` streams in a minute: the rest
  record as stream "other" (``streams_overflow``).
"""
from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Collection
from typing import Any

import numpy as np

from .audience_query import (BASES, BUCKETS, BYTES, CMCD_REQUESTS, ERRORS, ESTIMATED, FIELDS, INVALID, MEDIA_CMCD,
                             OBJECT_TYPES, OTHER_RENDITION, PER_OCTAVE, REBUFFER_EVENTS, REQUESTS, UNKNOWN,
                             UNKNOWN_RENDITION, Cell, bucket_of, encode, merge_exports, open_row, pack,
                             summarize)
from .cmcd import CmcdReport
from .user_agents import BROWSERS

__all__ = ["Audience", "merge_exports", "summarize", "BROWSERS"]

MAX_STREAM_CHARS = 300
MAX_RENDITIONS = 32  # distinct br values per stream and minute (a player sends a handful); more count as "other"
STARTUP_MAX_SECONDS = 300.0  # a first segment later than this after the first manifest is not a startup
MAX_TABLE_ENTRIES = 100_000  # sessions waiting for their first segment, and sessions started (each)
# memory estimates, bytes (CPython 3.11, 64-bit): a set element is a 32-byte int plus ~40-64 bytes of hash table
SET_ENTRY = 96
DICT_ENTRY = 112
OPEN_CELL = 1100  # an open stream-minute: its object, counter list, empty dict/sets, the open map's entry
CLOSED_CELL = 260  # a closed one besides its array's nbytes: ndarray header, tuple, dict entry
TABLE_ENTRY = 200  # an OrderedDict entry: its link node, hash table share, the int key and a float
BASE_BYTES = 8192
NEW_SET = DICT_ENTRY + 216 + SET_ENTRY  # a set of one element (216: an empty set) in a dict
RECORD_RESERVE = OPEN_CELL + MAX_STREAM_CHARS + 4 * NEW_SET + 3 * DICT_ENTRY + 2 * TABLE_ENTRY  # most one record adds
_SEGMENT, _MANIFEST = "segment", "manifest"
_VIDEO_OT = frozenset(("v", "av", None))  # segment object types that name the watched rendition (None: no ot sent)
_OT_INDEX = {t: len(FIELDS) + i for i, t in enumerate(OBJECT_TYPES)}
_OT_NONE = _OT_INDEX["none"]
_PLAYER_INDEX = {p: i for i, p in enumerate(BROWSERS)}
_PLAYER_OTHER = _PLAYER_INDEX["other"]
LAST = BUCKETS - 1
_BUFFER, _THROUGHPUT, _STARTUP = (i * BUCKETS for i in range(3))  # offsets of the histograms in an open hist dict
_BL_BASE, _MTP_BASE, _STARTUP_BASE = BASES
_LOG2 = math.log2
COUNTER_NAMES = ("records", "cmcd_requests", "estimated_requests", "cmcd_invalid", "cmcd_unknown", "evicted_minutes",
                 "expired_minutes", "streams_overflow", "renditions_overflow", "dropped_over_budget", "late_records",
                 "startups", "startups_expired", "startup_table_dropped", "resets")


class Audience:
    """One worker's audience minutes (not thread-safe: one event loop calls it)."""

    def __init__(self, *, window_minutes: int = 1440, bucket_seconds: int = 60, max_bytes: int = 64 << 20,
                 max_streams: int = 2000, salt: bytes = b"", clock=time.time):
        self._clock = clock
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._bucket = 0
        self._salt = b""
        self._reset()
        self.configure(window_minutes=window_minutes, bucket_seconds=bucket_seconds, max_bytes=max_bytes,
                       max_streams=max_streams, salt=salt)

    def configure(self, *, window_minutes: int, bucket_seconds: int, max_bytes: int, max_streams: int,
                  salt: bytes) -> None:
        """Apply new bounds (a SIGHUP reload) keeping the data, trimmed to the new window and memory bound.

        A changed ``bucket_seconds`` or ``salt`` drops all the data (counted in ``resets``): minutes of another
        length cannot be merged with these, and hashes under another salt would count every session twice.
        """
        for name, value, low in (("window_minutes", window_minutes, 1), ("bucket_seconds", bucket_seconds, 1),
                                 ("max_bytes", max_bytes, 64 << 10), ("max_streams", max_streams, 1)):
            if type(value) is not int or value < low:
                raise ValueError(f"Audience.configure: {name} must be an integer >= {low}, not {value!r}")
        if len(salt) > 64:  # BLAKE2b keys are at most 64 bytes
            salt = hashlib.blake2b(salt).digest()
        if (bucket_seconds, bytes(salt)) != (self._bucket, self._salt):
            if self._closed or self._open or self._pending or self._started:
                self.counters["resets"] += 1
            self._reset()
        self._window, self._bucket, self._max_bytes, self._max_streams = (window_minutes, bucket_seconds, max_bytes,
                                                                          max_streams)
        self._salt = bytes(salt)
        self._hasher = hashlib.blake2b(digest_size=8, key=self._salt)
        self._limit = max_bytes - RECORD_RESERVE  # a record checks only this
        self._table_cap = max(16, min(MAX_TABLE_ENTRIES, max_bytes // 8 // TABLE_ENTRY))
        for table in (self._pending, self._started):
            while len(table) > self._table_cap:
                table.popitem(last=False)
                self._bytes -= TABLE_ENTRY
        if self._minute is not None:
            self._expire(self._minute)
        if not self._make_room(0):  # the open minute alone is over the new bound: it goes too
            self._bytes -= self._open_bytes()
            self._open = {}
            self.counters["evicted_minutes"] += 1

    def _reset(self) -> None:
        self._minute: int | None = None  # the open minute
        self._open: dict[str, Cell] = {}
        self._closed: dict[int, dict[str, tuple[int | None, np.ndarray]]] = {}  # minute → stream → packed cell
        self._closed_bytes: dict[int, int] = {}
        # keyed by session hash ^ the stream's str hash (cached by Python: cheaper than a tuple, as unique in 64 bits)
        self._pending: OrderedDict[int, float] = OrderedDict()  # first manifest's time
        self._started: OrderedDict[int, None] = OrderedDict()
        self._bytes = BASE_BYTES

    # -- recording (hot path)

    def record(self, stream: str, partner: int | None, kind: str, report: CmcdReport, client: str,
               player: str, nbytes: int, status: int, now: float | None = None, count: int = 1) -> None:
        """Count ``count`` identical responses (``nbytes`` in all) of one session, timed ``now`` (the first).
        ``client`` identifies the session when the CMCD has no ``sid``; it is only hashed."""
        counters = self.counters
        counters["records"] += count
        if now is None:
            now = self._clock()
        minute = int(now // self._bucket)
        if minute != self._minute:
            self._reach(minute)
        if self._bytes > self._limit and not self._make_room(RECORD_RESERVE):
            counters["dropped_over_budget"] += count
            return
        values = report.values
        sid = values.get("sid")
        hasher = self._hasher.copy()
        if sid.__class__ is str and sid:
            hasher.update(b"s" + sid.encode())
            estimated = 0
        else:
            hasher.update(b"c" + client.encode("utf-8", "replace"))
            estimated = 1
        h = int.from_bytes(hasher.digest(), "little")
        grow = 0
        if len(stream) > MAX_STREAM_CHARS:
            stream = stream[:MAX_STREAM_CHARS]
        cell = self._open.get(stream)
        if cell is None:
            if len(self._open) >= self._max_streams:
                counters["streams_overflow"] += count
                stream, partner = "other", None
                cell = self._open.get(stream)
            if cell is None:
                cell = self._open[stream] = Cell(partner)
                grow += OPEN_CELL + len(stream)
        c = cell.counts
        c[REQUESTS] += count
        c[BYTES] += nbytes
        if status >= 400:
            c[ERRORS] += count
        present = report.present
        if present:
            c[CMCD_REQUESTS] += count
            counters["cmcd_requests"] += count
        if estimated:
            c[ESTIMATED] += count
            counters["estimated_requests"] += count
        if report.invalid or report.unknown:
            invalid, unknown = report.invalid * count, report.unknown * count
            c[INVALID] += invalid
            c[UNKNOWN] += unknown
            counters["cmcd_invalid"] += invalid
            counters["cmcd_unknown"] += unknown
        c[_OT_INDEX.get(values.get("ot"), _OT_NONE)] += count
        sessions = cell.sessions
        if h not in sessions:
            sessions.add(h)
            grow += SET_ENTRY
        members = cell.players.get(_PLAYER_INDEX.get(player, _PLAYER_OTHER))
        if members is None:
            cell.players[_PLAYER_INDEX.get(player, _PLAYER_OTHER)] = {h}
            grow += NEW_SET
        elif h not in members:
            members.add(h)
            grow += SET_ENTRY
        if kind == _SEGMENT:
            # the rendition a session watches: the br of its video (or muxed) segments; audio, text and init
            # segments carry their own br (dash.js, shaka), and a player without CMCD sends no ot at all
            if values.get("ot") in _VIDEO_OT:
                br = values.get("br")
                key = br if br.__class__ is int else UNKNOWN_RENDITION
                members = cell.renditions.get(key)
                if members is None:
                    if len(cell.renditions) >= MAX_RENDITIONS:
                        counters["renditions_overflow"] += count
                        key = OTHER_RENDITION
                        members = cell.renditions.get(key)
                    if members is None:
                        members = cell.renditions[key] = set()
                        grow += NEW_SET - SET_ENTRY
                if h not in members:
                    members.add(h)
                    grow += SET_ENTRY
            if present:
                c[MEDIA_CMCD] += count
            if values.get("bs") is True or values.get("sta") == "r":  # v2: a request made while rebuffering
                c[REBUFFER_EVENTS] += count
                if h not in cell.rebuffer_sessions:
                    cell.rebuffer_sessions.add(h)
                    grow += SET_ENTRY
            key = h ^ hash(stream)
            if key in self._pending or key not in self._started:
                grow += self._segment_started(cell, key, now)
        elif kind == _MANIFEST:
            key = h ^ hash(stream)
            if key not in self._pending and key not in self._started:
                self._pending[key] = now
                grow += TABLE_ENTRY
                if len(self._pending) > self._table_cap:
                    self._pending.popitem(last=False)
                    counters["startup_table_dropped"] += 1
                    grow -= TABLE_ENTRY
        for name, offset, base in (("bl", _BUFFER, _BL_BASE), ("mtp", _THROUGHPUT, _MTP_BASE)):
            value = values.get(name)
            if value.__class__ is int:  # a log-scale bucket: PER_OCTAVE per doubling from base, bucket 0 below it
                index = offset + (0 if value < base else min(int(_LOG2(value / base) * PER_OCTAVE) + 1, LAST))
                hist = cell.hist
                if index in hist:
                    hist[index] += count
                else:
                    hist[index] = count
                    grow += DICT_ENTRY
        self._bytes += grow

    def _segment_started(self, cell: Cell, key: int, now: float) -> int:
        """A segment request: the session's startup delay if its first manifest is waiting; the bytes this adds."""
        started = self._pending.pop(key, None)
        grow = 0
        if started is not None:
            grow -= TABLE_ENTRY
            delay = now - started
            if 0 <= delay <= STARTUP_MAX_SECONDS:
                cell.startup_sum += delay
                index = _STARTUP + bucket_of(delay, _STARTUP_BASE)
                if index in cell.hist:
                    cell.hist[index] += 1
                else:
                    cell.hist[index] = 1
                    grow += DICT_ENTRY
                self.counters["startups"] += 1
            else:
                self.counters["startups_expired"] += 1
        elif key in self._started:
            return 0
        self._started[key] = None
        grow += TABLE_ENTRY
        if len(self._started) > self._table_cap:
            self._started.popitem(last=False)
            grow -= TABLE_ENTRY
        return grow

    # -- minutes

    def _reach(self, minute: int) -> None:
        """Time moved to ``minute``: close the open minute, forget what the window and the startup table let go."""
        if self._minute is not None and minute < self._minute:
            self.counters["late_records"] += 1  # recorded in the open minute
            return
        if self._open:
            self._close()
        self._minute = minute
        self._expire(minute)
        horizon = minute * self._bucket - STARTUP_MAX_SECONDS
        while self._pending and next(iter(self._pending.values())) < horizon:
            self._pending.popitem(last=False)
            self._bytes -= TABLE_ENTRY
            self.counters["startups_expired"] += 1
        self._make_room(0)

    def _close(self) -> None:
        cells, size = {}, 0
        for stream, cell in self._open.items():
            packed = pack(cell)
            cells[stream] = (cell.partner, packed)
            size += packed.nbytes + CLOSED_CELL + len(stream)
        open_bytes = self._open_bytes()  # before the closed minute counts: it would be subtracted twice
        self._closed[self._minute] = cells
        self._closed_bytes[self._minute] = size
        self._bytes += size - open_bytes
        self._open = {}

    def _open_bytes(self) -> int:
        """What the open minute accounts for: everything but the base, the closed minutes and the tables."""
        tables = (len(self._pending) + len(self._started)) * TABLE_ENTRY
        return self._bytes - BASE_BYTES - sum(self._closed_bytes.values()) - tables

    def _drop_oldest(self) -> None:
        minute = next(iter(self._closed))
        del self._closed[minute]
        self._bytes -= self._closed_bytes.pop(minute)

    def _expire(self, minute: int) -> None:
        while self._closed and next(iter(self._closed)) <= minute - self._window:
            self._drop_oldest()
            self.counters["expired_minutes"] += 1

    def _make_room(self, need: int) -> bool:
        """Drop the oldest closed minutes until ``need`` more bytes fit; False if they do not even then."""
        while self._closed and self._bytes + need > self._max_bytes:
            self._drop_oldest()
            self.counters["evicted_minutes"] += 1
        return self._bytes + need <= self._max_bytes

    def _sync(self) -> None:
        """A read: close the open minute if the clock has left it."""
        minute = int(self._clock() // self._bucket)
        if self._minute is None or minute > self._minute:
            self._reach(minute)

    def memory_bytes(self) -> int:
        return self._bytes

    # -- reading

    def export(self, start_minute: int | None = None, end_minute: int | None = None,
               streams: Collection[str] | None = None, partner: int | None = None) -> dict:
        """The raw form (audience_query, format 1) of minutes start_minute <= m < end_minute (None: all held), open
        minute included, of the given streams and partner only."""
        self._sync()
        wanted = None if streams is None else set(streams)

        def keep(minute: int) -> bool:
            return (start_minute is None or minute >= start_minute) and (end_minute is None or minute < end_minute)

        sources: list[tuple[int, dict]] = [(m, cells) for m, cells in self._closed.items() if keep(m)]
        if keep(self._minute):
            sources.append((self._minute, self._open))
        minutes: dict[int, dict[str, Cell | tuple]] = {}  # packed cells are encoded as they are
        for minute, cells in sources:
            for stream, cell in cells.items():  # closed: (partner, packed); open: a Cell
                closed = isinstance(cell, tuple)
                if ((wanted is None or stream in wanted)
                        and (partner is None or (cell[0] if closed else cell.partner) == partner)):
                    minutes.setdefault(minute, {})[stream] = cell
        start = start_minute if start_minute is not None else next(iter(self._closed), self._minute)
        end = end_minute if end_minute is not None else self._minute + 1
        return encode(self._bucket, start, end, minutes)

    def current(self, top: int = 20) -> dict:
        """The open minute per stream for /metrics: the ``top`` streams by sessions (ties: bytes), the rest summed
        under "other" (its sessions are a sum over streams, not distinct)."""
        self._sync()
        rows = [open_row(stream, cell) for stream, cell in self._open.items()]
        rows.sort(key=lambda r: (-r["sessions"], -r["bytes"], r["stream"]))
        other: dict[str, Any] = {"sessions": 0, "by_rendition": {}, "by_player": {}, "bytes": 0, "requests": 0,
                                 "rebuffer_events": 0, "errors": 0}
        for row in rows[max(0, top):]:
            for name, value in row.items():
                if isinstance(value, dict):
                    for key, n in value.items():
                        other[name][key] = other[name].get(key, 0) + n
                elif name != "stream":
                    other[name] += value
        return {"t": self._minute * self._bucket, "streams": rows[:max(0, top)], "other": other}
