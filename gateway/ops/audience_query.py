"""The raw, mergeable form of audience minutes (gateway/ops/audience.py) and the pure functions over it.

A ``Cell`` is what one (stream, minute) holds: counters, three log-scale histograms and sets of 64-bit session
hashes (sessions, sessions that rebuffered, sessions per rendition, per player). Sets rather than counts because
sessions must be counted once across workers and nodes: merging is a union. A closed minute is stored ``pack``-ed
into one uint64 array; the JSON form carries each set as the sorted hashes' little-endian bytes in base64.

Export format 1 (JSON, what workers and nodes exchange)::

    {"format": 1, "bucket_seconds": 60, "histogram": {"per_octave": 4, "buckets": 97, "bases": {...}},
     "start_minute": m0, "end_minute": m1,          # the range asked (minute = floor(unix time / bucket_seconds))
     "minutes": {"<minute>": {"<stream>": {"partner": 101, "requests": 10, ... (FIELDS),
                                          "object_types": {"v": 5, "none": 3}, "startup_sum": 1.4,
                                          "histograms": {"buffer_ms": {"<bucket>": count}, ...},
                                          "sessions": "<base64 of little-endian uint64>", "rebuffer_sessions": "...",
                                          "renditions": {"800": "<b64>", "unknown": "<b64>"},
                                          "players": {"Chrome": "<b64>"}}}}}

Decoding tolerates missing fields (zero / empty) and ignores unknown ones (a newer peer), and raises ValueError, never
anything else, on malformed input. A changed histogram layout needs a new format number.

Histograms: bucket 0 holds values below the base (100 ms, 100 kbps, 10 ms), bucket b >= 1 holds
[base·2^((b-1)/4), base·2^(b/4)), the last one everything above. A percentile is read in the bucket holding its rank
with geometric interpolation, so it lies in the same bucket as the exact value: relative error below 2^(1/4)-1
(19 %), absolute error below the base in bucket 0, and only a lower bound (the bucket's start) in the last one.
"""
from __future__ import annotations

import array
import base64
import binascii
import math
import struct
import sys
from typing import Any

import numpy as np

from .user_agents import BROWSERS

FORMAT = 1
FIELDS = ("requests", "bytes", "errors", "cmcd_requests", "estimated_requests", "cmcd_invalid", "cmcd_unknown",
          "rebuffer_events", "media_cmcd_requests")
OBJECT_TYPES = ("m", "a", "v", "av", "i", "c", "tt", "k", "o", "none")  # CTA-5004 3.3 ``ot`` tokens, and absent
COUNTS = len(FIELDS) + len(OBJECT_TYPES)  # a cell's counter vector: FIELDS then the object types
(REQUESTS, BYTES, ERRORS, CMCD_REQUESTS, ESTIMATED, INVALID, UNKNOWN, REBUFFER_EVENTS, MEDIA_CMCD) = range(len(FIELDS))
HISTOGRAMS = ("buffer_ms", "throughput_kbps", "startup_seconds")
BASES = (100.0, 100.0, 0.01)
PER_OCTAVE = 4
BUCKETS = 1 + PER_OCTAVE * 24  # up to base·2^24 (19 days of buffer, 1.6 Tbit/s, 46 h of startup), then open-ended
UNKNOWN_RENDITION, OTHER_RENDITION = -1, -2  # segment requests without ``br``; renditions beyond a cell's limit
MAX_COUNT = 1 << 62
_MASK64 = (1 << 64) - 1
_HEADER = COUNTS + 6  # packed: counts, startup_sum, then the numbers of hist entries, sessions, rebuffer, R, P
_LOG2 = math.log2
_COUNT40 = (1 << 40) - 1
_F64, _D = struct.Struct("<Q"), struct.Struct("<d")  # a float's bits as an integer, and back
_BIG_ENDIAN = sys.byteorder == "big"  # exports are little-endian
_LAYOUT_BASES = dict(zip(HISTOGRAMS, BASES))


def bucket_of(value: float, base: float) -> int:
    """The histogram bucket of ``value`` (hot path: one log)."""
    if value < base:
        return 0
    bucket = int(_LOG2(value / base) * PER_OCTAVE) + 1
    return bucket if bucket < BUCKETS else BUCKETS - 1


def rendition_label(key: int) -> str:
    return "unknown" if key == UNKNOWN_RENDITION else "other" if key == OTHER_RENDITION else str(key)


class Cell:
    """One stream's minute: what ``Audience.record`` adds to while the minute is open, and what export, merge and
    summary read. Plain Python containers: a cell holds a handful to thousands of sessions, where set operations on
    Python ints beat numpy's per-call overhead (a closed minute is stored packed: ``pack``)."""

    __slots__ = ("partner", "counts", "startup_sum", "hist", "sessions", "rebuffer_sessions", "renditions", "players")

    def __init__(self, partner: int | None = None):
        self.partner = partner
        self.counts = [0] * COUNTS  # FIELDS, then OBJECT_TYPES
        self.startup_sum = 0.0
        self.hist: dict[int, int] = {}  # histogram index * BUCKETS + bucket → count
        self.sessions: set[int] = set()
        self.rebuffer_sessions: set[int] = set()
        self.renditions: dict[int, set[int]] = {}  # rendition key (kbps, UNKNOWN_ or OTHER_RENDITION) → hashes
        self.players: dict[int, set[int]] = {}  # index in BROWSERS → hashes

    def merge(self, other: Cell) -> None:
        """Add ``other`` in place: counters summed, session sets united."""
        if self.partner is None:
            self.partner = other.partner
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.startup_sum += other.startup_sum
        for key, count in other.hist.items():
            self.hist[key] = self.hist.get(key, 0) + count
        self.sessions |= other.sessions
        self.rebuffer_sessions |= other.rebuffer_sessions
        for mine, theirs in ((self.renditions, other.renditions), (self.players, other.players)):
            for key, hashes in theirs.items():
                if key in mine:
                    mine[key] |= hashes
                else:
                    mine[key] = set(hashes)


def open_row(stream: str, cell: Cell) -> dict[str, Any]:
    """A stream's open minute as ``Audience.current`` shows it."""
    c = cell.counts
    return {"stream": stream, "sessions": len(cell.sessions),
            "by_rendition": {rendition_label(k): len(v) for k, v in sorted(cell.renditions.items())},
            "by_player": {BROWSERS[k]: len(v) for k, v in sorted(cell.players.items())},
            "bytes": c[BYTES], "requests": c[REQUESTS], "rebuffer_events": c[REBUFFER_EVENTS], "errors": c[ERRORS]}


def _sorted(hashes: set[int]) -> np.ndarray:
    return np.sort(np.fromiter(hashes, np.uint64, len(hashes)))


def pack(cell: Cell) -> np.ndarray:
    """The cell as one uint64 array: a closed minute's storage (one array header instead of a dozen containers).

    Layout: counts, startup_sum's float64 bits, the numbers of histogram entries, sessions, rebuffer sessions,
    renditions R and players P; R + P (key, length) pairs; histogram entries (index << 40 | count); the hashes of
    sessions, rebuffer sessions, each rendition and each player, sorted."""
    rend, play = sorted(cell.renditions.items()), sorted(cell.players.items())
    header = cell.counts + [_F64.unpack(_D.pack(cell.startup_sum))[0], len(cell.hist), len(cell.sessions),
                            len(cell.rebuffer_sessions), len(rend), len(play)]
    for key, hashes in rend + play:
        header += [key & _MASK64, len(hashes)]
    header += [key << 40 | min(count, _COUNT40) for key, count in sorted(cell.hist.items())]
    return np.concatenate([np.array(header, np.uint64), _sorted(cell.sessions), _sorted(cell.rebuffer_sessions)]
                          + [_sorted(hashes) for _, hashes in rend + play])


def unpack(partner: int | None, packed: np.ndarray) -> Cell:
    """The inverse of ``pack``."""
    cell = Cell(partner)
    head = packed[:_HEADER].tolist()
    cell.counts = head[:COUNTS]
    cell.startup_sum = _D.unpack(_F64.pack(head[COUNTS]))[0]
    n_hist, n_sessions, n_rebuffer, n_rend, n_play = head[COUNTS + 1:]
    at = _HEADER + 2 * (n_rend + n_play) + n_hist
    more = packed[_HEADER:at].tolist()
    cell.hist = {entry >> 40: entry & _COUNT40 for entry in more[2 * (n_rend + n_play):]}
    cell.sessions, at = set(packed[at:at + n_sessions].tolist()), at + n_sessions
    cell.rebuffer_sessions, at = set(packed[at:at + n_rebuffer].tolist()), at + n_rebuffer
    for i in range(n_rend + n_play):
        key, length = more[2 * i], more[2 * i + 1]
        target = cell.renditions if i < n_rend else cell.players
        target[key - (1 << 64) if key >> 63 else key] = set(packed[at:at + length].tolist())
        at += length
    return cell


# -- JSON

def _b64(hashes: set[int]) -> str:
    words = array.array("Q", sorted(hashes))
    if _BIG_ENDIAN:
        words.byteswap()
    return base64.b64encode(words.tobytes()).decode("ascii")


def encode_cell(cell: Cell | tuple[int | None, np.ndarray]) -> dict[str, Any]:
    """The JSON form of a cell, or of a packed one, ``(partner, packed)``, straight from its sorted arrays."""
    if isinstance(cell, Cell):
        partner, counts, startup_sum, hist = cell.partner, cell.counts, cell.startup_sum, sorted(cell.hist.items())
        sessions, rebuffer = _b64(cell.sessions), _b64(cell.rebuffer_sessions)
        renditions = [(k, _b64(v)) for k, v in sorted(cell.renditions.items())]
        players = [(k, _b64(v)) for k, v in sorted(cell.players.items())]
    else:
        partner, packed = cell
        head = packed[:_HEADER].tolist()
        counts, startup_sum = head[:COUNTS], _D.unpack(_F64.pack(head[COUNTS]))[0]
        n_hist, n_sessions, n_rebuffer, n_rend, n_play = head[COUNTS + 1:]
        at = _HEADER + 2 * (n_rend + n_play) + n_hist
        more = packed[_HEADER:at].tolist()
        hist = [(entry >> 40, entry & _COUNT40) for entry in more[2 * (n_rend + n_play):]]
        data = packed.astype("<u8", copy=False)
        texts = []
        for length in [n_sessions, n_rebuffer] + more[1:2 * (n_rend + n_play):2]:
            texts.append(base64.b64encode(data[at:at + length].tobytes()).decode("ascii"))
            at += length
        sessions, rebuffer = texts[0], texts[1]
        keys = [k - (1 << 64) if k >> 63 else k for k in more[0:2 * (n_rend + n_play):2]]
        renditions = list(zip(keys[:n_rend], texts[2:2 + n_rend]))
        players = list(zip(keys[n_rend:], texts[2 + n_rend:]))
    out: dict[str, Any] = {"partner": partner, **dict(zip(FIELDS, counts))}
    out["object_types"] = {t: n for t, n in zip(OBJECT_TYPES, counts[len(FIELDS):]) if n}
    out["startup_sum"] = startup_sum
    histograms: list[dict[str, int]] = [{} for _ in HISTOGRAMS]
    for key, count in hist:
        histograms[key // BUCKETS][str(key % BUCKETS)] = count
    out["histograms"] = dict(zip(HISTOGRAMS, histograms))
    out["sessions"], out["rebuffer_sessions"] = sessions, rebuffer
    out["renditions"] = {rendition_label(k): text for k, text in renditions}
    out["players"] = {BROWSERS[k]: text for k, text in players}
    return out


def encode(bucket_seconds: int, start_minute: int | None, end_minute: int | None,
           minutes: dict[int, dict[str, Cell | tuple[int | None, np.ndarray]]]) -> dict[str, Any]:
    return {"format": FORMAT, "bucket_seconds": bucket_seconds,
            "histogram": {"per_octave": PER_OCTAVE, "buckets": BUCKETS, "bases": dict(_LAYOUT_BASES)},
            "start_minute": start_minute, "end_minute": end_minute,
            "minutes": {str(m): {s: encode_cell(c) for s, c in cells.items()} for m, cells in sorted(minutes.items())}}


def _int(value: Any, what: str, lo: int = 0, hi: int = MAX_COUNT) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ValueError(f"audience export: {what} is not an integer in [{lo}, {hi}]")
    return value


def _dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"audience export: {what} is not an object")
    return value


def _hashes(value: Any, what: str) -> set[int]:
    if not isinstance(value, str):
        raise ValueError(f"audience export: {what} is not a base64 string")
    raw = binascii.a2b_base64(value, strict_mode=True)
    if len(raw) % 8:
        raise ValueError(f"audience export: {what} is not a whole number of 64-bit hashes")
    words = array.array("Q", raw)
    if _BIG_ENDIAN:
        words.byteswap()
    return set(words)


def _rendition_key(label: Any) -> int:
    if label == "unknown":
        return UNKNOWN_RENDITION
    if label == "other" or not isinstance(label, str) or not label.isdigit() or len(label) > 12:
        return OTHER_RENDITION  # a label this version does not know (a newer peer's) counts as "other"
    return int(label)


def decode_cell(raw: Any) -> Cell:
    raw = _dict(raw, "a cell")
    partner = raw.get("partner")
    cell = Cell(None if partner is None else _int(partner, "partner", -(1 << 62)))
    types = _dict(raw.get("object_types", {}), "object_types")
    counts = [raw.get(name, 0) for name in FIELDS] + [types.get(t, 0) for t in OBJECT_TYPES]
    for count in counts:
        if type(count) is not int or not 0 <= count <= MAX_COUNT:
            raise ValueError("audience export: a counter is not an integer in range")
    cell.counts = counts
    startup_sum = raw.get("startup_sum", 0.0)
    if type(startup_sum) not in (int, float) or not 0 <= startup_sum < 1e18:
        raise ValueError("audience export: startup_sum is not a number")
    cell.startup_sum = float(startup_sum)
    histograms = _dict(raw.get("histograms", {}), "histograms")
    for offset, name in zip(range(0, len(HISTOGRAMS) * BUCKETS, BUCKETS), HISTOGRAMS):
        for bucket, count in _dict(histograms.get(name, {}), name).items():
            if not isinstance(bucket, str) or not bucket.isdigit() or int(bucket) >= BUCKETS:
                raise ValueError(f"audience export: bad bucket in {name}")
            if count:
                cell.hist[offset + int(bucket)] = _int(count, name, hi=_COUNT40)
    cell.sessions = _hashes(raw.get("sessions", ""), "sessions")
    cell.rebuffer_sessions = _hashes(raw.get("rebuffer_sessions", ""), "rebuffer_sessions")
    for label, value in _dict(raw.get("renditions", {}), "renditions").items():
        cell.renditions.setdefault(_rendition_key(label), set()).update(_hashes(value, "a rendition"))
    for name, value in _dict(raw.get("players", {}), "players").items():
        key = BROWSERS.index(name) if name in BROWSERS else len(BROWSERS) - 1  # unknown → "other"
        cell.players.setdefault(key, set()).update(_hashes(value, "a player"))
    return cell


def decode(raw: Any) -> tuple[int, int | None, int | None, dict[int, dict[str, Cell]]]:
    """(bucket_seconds, start_minute, end_minute, {minute: {stream: Cell}}) of an export; ValueError if malformed."""
    try:
        raw = _dict(raw, "the export")
        if type(raw.get("format")) is not int or raw["format"] != FORMAT:
            raise ValueError(f"audience export: format {raw.get('format')!r} is not {FORMAT}")
        bucket_seconds = _int(raw.get("bucket_seconds"), "bucket_seconds", 1, 1 << 31)
        layout = _dict(raw.get("histogram", {}), "histogram")  # absent: this layout
        if (layout.get("per_octave", PER_OCTAVE), layout.get("buckets", BUCKETS),
                layout.get("bases", _LAYOUT_BASES)) != (PER_OCTAVE, BUCKETS, _LAYOUT_BASES):
            raise ValueError("audience export: another histogram layout")
        bounds = [None if raw.get(k) is None else _int(raw[k], k, -(1 << 40), 1 << 40)
                  for k in ("start_minute", "end_minute")]
        minutes: dict[int, dict[str, Cell]] = {}
        for minute, cells in _dict(raw.get("minutes", {}), "minutes").items():
            if not isinstance(minute, str) or not minute.lstrip("-").isdigit() or len(minute) > 14:
                raise ValueError("audience export: a minute is not an integer")
            for stream, cell in _dict(cells, "a minute").items():
                if not isinstance(stream, str) or len(stream) > 1000:
                    raise ValueError("audience export: a stream name is not a string")
                minutes.setdefault(int(minute), {})[stream] = decode_cell(cell)
        return bucket_seconds, bounds[0], bounds[1], minutes
    except (TypeError, AttributeError, KeyError, IndexError, OverflowError, binascii.Error) as error:
        raise ValueError(f"audience export: malformed ({type(error).__name__})") from error


def merge_exports(exports: list[dict]) -> dict:
    """One export of several (workers', nodes'): counters summed, sessions counted once (hash sets united).

    Raises ValueError when the list is empty, an export is malformed, or exports differ in bucket_seconds or format.
    """
    if not exports:
        raise ValueError("audience export: nothing to merge")
    decoded = [decode(raw) for raw in exports]
    bucket_seconds = decoded[0][0]
    if any(d[0] != bucket_seconds for d in decoded):
        raise ValueError("audience export: exports with different bucket_seconds cannot be merged")
    merged: dict[int, dict[str, Cell]] = {}
    for _, _, _, minutes in decoded:
        for minute, cells in minutes.items():
            into = merged.setdefault(minute, {})
            for stream, cell in cells.items():
                if stream in into:
                    into[stream].merge(cell)
                else:
                    into[stream] = cell
    starts = [d[1] for d in decoded if d[1] is not None]
    ends = [d[2] for d in decoded if d[2] is not None]
    return encode(bucket_seconds, min(starts, default=None), max(ends, default=None), merged)


# -- the API's summary

def percentiles(hist: dict[int, int], which: int, quantiles: tuple[float, ...]) -> list[float | None]:
    """Quantiles of histogram ``which`` of a cell's ``hist``, interpolated geometrically inside the bucket holding
    the rank (the rank-th smallest value, rank = ceil(q·n))."""
    base, offset = BASES[which], which * BUCKETS
    row = sorted((key - offset, count) for key, count in hist.items() if offset <= key < offset + BUCKETS)
    total = sum(count for _, count in row)
    out: list[float | None] = []
    for q in quantiles:
        if not total:
            out.append(None)
            continue
        rank, before = max(1, math.ceil(q * total)), 0
        for bucket, count in row:
            if before + count >= rank:
                break
            before += count
        fraction = (rank - before - 0.5) / count
        if bucket == 0:
            out.append(base * fraction)
        else:
            low = base * 2 ** ((bucket - 1) / PER_OCTAVE)
            out.append(low if bucket == BUCKETS - 1 else low * 2 ** (fraction / PER_OCTAVE))
    return out


def _distribution(hist: dict[int, int], which: int, digits: int | None) -> dict[str, Any]:
    p50, p90 = percentiles(hist, which, (0.5, 0.9))
    count = sum(n for key, n in hist.items() if key // BUCKETS == which)
    return {"count": count, "p50": None if p50 is None else round(p50, digits),
            "p90": None if p90 is None else round(p90, digits)}


def _renditions(renditions: dict[int, set]) -> dict[str, int]:
    """Distinct sessions per rendition; "unknown" only for sessions that sent no video ``br`` at all that minute
    (one whose br came on another worker or node is not unknown: this runs on the merged minute)."""
    known = set().union(*(v for k, v in renditions.items() if k != UNKNOWN_RENDITION))
    out = {rendition_label(k): len(v) for k, v in sorted(renditions.items()) if v and k != UNKNOWN_RENDITION}
    unknown = len(renditions.get(UNKNOWN_RENDITION, set()) - known)
    if unknown:
        out[rendition_label(UNKNOWN_RENDITION)] = unknown
    return out


def _minute_summary(t: int, cell: Cell) -> dict[str, Any]:
    c = cell.counts
    startup = _distribution(cell.hist, 2, 3)
    startup["mean"] = round(cell.startup_sum / startup["count"], 6) if startup["count"] else None
    return {"t": t, "sessions": len(cell.sessions),
            "by_rendition": _renditions(cell.renditions),
            "by_player": {BROWSERS[k]: len(v) for k, v in sorted(cell.players.items()) if v},
            "bytes": c[BYTES], "requests": c[REQUESTS], "errors": c[ERRORS],
            "object_types": {t: n for t, n in zip(OBJECT_TYPES, c[len(FIELDS):]) if n},
            "cmcd_requests": c[CMCD_REQUESTS], "estimated_requests": c[ESTIMATED], "cmcd_invalid": c[INVALID],
            "cmcd_unknown": c[UNKNOWN],
            "rebuffer": {"events": c[REBUFFER_EVENTS], "sessions": len(cell.rebuffer_sessions),
                         "ratio": round(c[REBUFFER_EVENTS] / c[MEDIA_CMCD], 4) if c[MEDIA_CMCD] else None},
            "startup_seconds": startup,
            "buffer_ms": _distribution(cell.hist, 0, None),
            "throughput_kbps": _distribution(cell.hist, 1, None)}


def summarize(raw: dict, *, stream: str | None = None, partner: int | None = None, top: int | None = None) -> dict:
    """The API's answer for an export (of one worker, a node or the pool): per stream, its minutes ascending and its
    totals (sessions: distinct over the stream's minutes, not a sum). ``top``: the streams with most sessions (ties:
    bytes). ValueError on a malformed export."""
    bucket_seconds, start, end, minutes = decode(raw)
    by_stream: dict[str, list[tuple[int, Cell]]] = {}
    for minute in sorted(minutes):
        for name, cell in minutes[minute].items():
            if (stream is None or name == stream) and (partner is None or cell.partner == partner):
                by_stream.setdefault(name, []).append((minute, cell))
    rows = []
    for name, cells in by_stream.items():
        sums = [sum(column) for column in zip(*(cell.counts for _, cell in cells))]
        sessions = set().union(*(cell.sessions for _, cell in cells))
        rows.append({"stream": name, "partner": next((c.partner for _, c in cells if c.partner is not None), None),
                     "totals": {"sessions": len(sessions), "bytes": sums[BYTES], "requests": sums[REQUESTS],
                                "errors": sums[ERRORS], "rebuffer_events": sums[REBUFFER_EVENTS]},
                     "minutes": [_minute_summary(minute * bucket_seconds, cell) for minute, cell in cells]})
    rows.sort(key=lambda r: (-r["totals"]["sessions"], -r["totals"]["bytes"], r["stream"]))
    if top is not None:
        rows = rows[:max(0, top)]
    if start is None and minutes:
        start = min(minutes)
    if end is None and minutes:
        end = max(minutes) + 1
    return {"bucket_seconds": bucket_seconds, "from": None if start is None else start * bucket_seconds,
            "to": None if end is None else end * bucket_seconds, "streams": rows}
