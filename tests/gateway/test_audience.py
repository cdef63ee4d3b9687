"""gateway/ops/audience.py and audience_query.py against the test's own bookkeeping (Python sets and Counters).

A seeded simulation of ~300 players over 10 "minutes" (bucket_seconds=1, a fake clock): the per-stream, per-minute
summary equals the truth, also when the same requests are split at random over three aggregators and merged.
Percentiles are read from log-scale histograms (4 buckets per octave): they must lie in the bucket of the exact
order statistic, so within a factor 2^(1/4) of it (below the base: between 0 and the base).
"""
from __future__ import annotations

import base64
import copy
import json
import math
import random
import tracemalloc
from collections import Counter, defaultdict

import numpy as np
import pytest

from gateway.ops.audience import Audience, merge_exports, summarize
from gateway.ops.audience_query import BASES, BUCKETS, Cell, encode_cell, pack, unpack
from gateway.ops.cmcd import CmcdReport
from gateway.ops.user_agents import BROWSERS

T0 = 1_796_000_000
OBJECT_TYPES = ("m", "v", "a", "av", "i", "k")
STREAMS = {"entry:0_abc": 101, "entry:0_def": 101, "file:a/b.mp4": None, "live:app/cam": 202}
RENDITIONS = (400, 800, 1600, 3200)


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def simulate(seed: int = 7, players: int = 300, minutes: int = 10) -> list[dict]:
    """Requests of ``players`` sessions, in time order: each starts with a manifest, then segments (with manifest
    refreshes, init/key requests, errors and HEADs between), CMCD with a sid for most, none or sid-less for some."""
    rng = random.Random(seed)
    events = []
    for n in range(players):
        stream = rng.choice(list(STREAMS))
        mode = rng.choices(("sid", "cmcd-no-sid", "none"), (0.7, 0.1, 0.2))[0]
        sid = f"sid-{seed}-{n}-{rng.getrandbits(40):x}"
        client = f"10.{n // 250}.{n % 250}.{rng.randrange(256)}|Mozilla/5.0 player {n}"
        player = rng.choice(BROWSERS)
        t = T0 + rng.uniform(0, minutes - 1)
        rendition = rng.choice(RENDITIONS)
        kinds = ["manifest"] + rng.choices(("segment", "manifest", "init", "key", "other"), (8, 2, 1, 1, 1),
                                           k=rng.randrange(1, 25))
        if rng.random() < 0.8:  # most players' first media request comes after a startup delay
            kinds.insert(1, "segment")
        for i, kind in enumerate(kinds):
            if i:
                t += rng.uniform(0.05, 1.5)
            if t >= T0 + minutes:
                break
            if rng.random() < 0.1:
                rendition = rng.choice(RENDITIONS)  # a switch
            values: dict = {}
            present = mode != "none"
            if present:
                if mode == "sid":
                    values["sid"] = sid
                if kind in ("segment", "init") and rng.random() < 0.9:
                    values["br"] = rendition
                if kind != "other" and rng.random() < 0.9:
                    values["ot"] = "m" if kind == "manifest" else rng.choice(OBJECT_TYPES[1:])
                if kind == "segment" and rng.random() < 0.1:
                    values["bs"] = True
                if rng.random() < 0.8:
                    values["bl"] = int(math.exp(rng.uniform(math.log(20), math.log(60_000))))
                if rng.random() < 0.7:
                    values["mtp"] = int(math.exp(rng.uniform(math.log(50), math.log(200_000))))
            report = CmcdReport(values=values, invalid=rng.choice((0, 0, 0, 1, 2)) if present else 0,
                                unknown=rng.choice((0, 0, 1)) if present else 0, present=present)
            status = rng.choice((200,) * 12 + (304, 404, 503))
            nbytes = 0 if status == 304 or rng.random() < 0.05 else rng.randrange(200, 2_000_000)
            events.append({"t": t, "stream": stream, "partner": STREAMS[stream], "kind": kind, "report": report,
                           "client": client, "player": player, "nbytes": nbytes, "status": status,
                           "session": sid if mode == "sid" else client})
    events.sort(key=lambda e: e["t"])
    return events


def feed(audience: Audience, event: dict) -> None:
    audience.record(event["stream"], event["partner"], event["kind"], event["report"], event["client"],
                    event["player"], event["nbytes"], event["status"], now=event["t"])


def truth_of(events: list[dict], bucket_seconds: int = 1) -> dict:
    """{stream: {minute: {...}}} from plain Python sets and Counters; startup as the aggregator defines it."""
    cells: dict = defaultdict(lambda: defaultdict(lambda: {
        "sessions": set(), "renditions": defaultdict(set), "players": defaultdict(set), "bytes": 0, "requests": 0,
        "errors": 0, "ot": Counter(), "cmcd": 0, "estimated": 0, "invalid": 0, "unknown": 0, "bs_events": 0,
        "bs_sessions": set(), "media_cmcd": 0, "bl": [], "mtp": [], "startup": []}))
    first_manifest: dict = {}
    started: set = set()
    for e in events:
        v, key = e["report"].values, (e["session"], e["stream"])
        c = cells[e["stream"]][math.floor(e["t"] / bucket_seconds)]
        c["sessions"].add(e["session"])
        c["players"][e["player"]].add(e["session"])
        c["bytes"] += e["nbytes"]
        c["requests"] += 1
        c["errors"] += e["status"] >= 400
        c["ot"][v.get("ot", "none")] += 1
        c["cmcd"] += e["report"].present
        c["estimated"] += "sid" not in v
        c["invalid"] += e["report"].invalid
        c["unknown"] += e["report"].unknown
        if e["kind"] == "segment" and v.get("ot") in ("v", "av", None):  # the watched rendition: video segments
            c["renditions"][str(v["br"]) if "br" in v else "unknown"].add(e["session"])
        if e["kind"] == "segment":
            c["media_cmcd"] += e["report"].present
            if v.get("bs"):
                c["bs_events"] += 1
                c["bs_sessions"].add(e["session"])
            if key not in started:
                started.add(key)
                if key in first_manifest and e["t"] - first_manifest[key] <= 300:
                    c["startup"].append(e["t"] - first_manifest[key])
        if e["kind"] == "manifest" and key not in started:
            first_manifest.setdefault(key, e["t"])
        for name in ("bl", "mtp"):
            if name in v:
                c[name].append(v[name])
    return cells


def assert_in_bucket(estimate, values: list, q: float, base: float, digits_slack: float) -> None:
    """``estimate`` lies in the histogram bucket of the exact rank-ceil(q·n) order statistic."""
    exact = sorted(values)[max(1, math.ceil(q * len(values))) - 1]
    if exact < base:
        assert -digits_slack <= estimate <= base + digits_slack, (estimate, exact)
    else:
        assert exact * 2 ** -0.25 - digits_slack <= estimate <= exact * 2 ** 0.25 + digits_slack, (estimate, exact)


def assert_summary_matches(summary: dict, truth: dict, *, startup: bool = True) -> None:
    assert {s["stream"] for s in summary["streams"]} == set(truth)
    for row in summary["streams"]:
        minutes = truth[row["stream"]]
        assert row["partner"] == STREAMS[row["stream"]]
        assert [m["t"] for m in row["minutes"]] == sorted(minutes)  # ascending, empty minutes omitted
        all_sessions = set().union(*(c["sessions"] for c in minutes.values()))
        assert row["totals"] == {"sessions": len(all_sessions), "bytes": sum(c["bytes"] for c in minutes.values()),
                                 "requests": sum(c["requests"] for c in minutes.values()),
                                 "errors": sum(c["errors"] for c in minutes.values()),
                                 "rebuffer_events": sum(c["bs_events"] for c in minutes.values())}
        for got in row["minutes"]:
            c = minutes[got["t"]]
            assert got["sessions"] == len(c["sessions"])
            known = set().union(*(s for k, s in c["renditions"].items() if k != "unknown"))
            expected = {k: len(s) for k, s in c["renditions"].items() if k != "unknown"}
            if c["renditions"]["unknown"] - known:  # unknown: only sessions that sent no video br that minute
                expected["unknown"] = len(c["renditions"]["unknown"] - known)
            assert got["by_rendition"] == expected
            assert got["by_player"] == {k: len(s) for k, s in c["players"].items()}
            assert (got["bytes"], got["requests"], got["errors"]) == (c["bytes"], c["requests"], c["errors"])
            assert got["object_types"] == dict(c["ot"])
            assert (got["cmcd_requests"], got["estimated_requests"], got["cmcd_invalid"], got["cmcd_unknown"]) == (
                c["cmcd"], c["estimated"], c["invalid"], c["unknown"])
            ratio = round(c["bs_events"] / c["media_cmcd"], 4) if c["media_cmcd"] else None
            assert got["rebuffer"] == {"events": c["bs_events"], "sessions": len(c["bs_sessions"]), "ratio": ratio}
            for name, key, base, slack in (("buffer_ms", "bl", BASES[0], 0.5),
                                           ("throughput_kbps", "mtp", BASES[1], 0.5),
                                           ("startup_seconds", "startup", BASES[2], 0.0005)):
                if name == "startup_seconds" and not startup:
                    continue
                dist = got[name]
                assert dist["count"] == len(c[key])
                if not c[key]:
                    assert dist["p50"] is None and dist["p90"] is None
                    continue
                assert_in_bucket(dist["p50"], c[key], 0.5, base, slack)
                assert_in_bucket(dist["p90"], c[key], 0.9, base, slack)
            if startup and c["startup"]:
                assert got["startup_seconds"]["mean"] == pytest.approx(np.mean(c["startup"]), abs=2e-6)


def test_simulation_summary_equals_bookkeeping():
    events = simulate()
    clock = Clock()
    audience = Audience(bucket_seconds=1, salt=b"pool key", clock=clock)
    for event in events:
        feed(audience, event)
    clock.now = events[-1]["t"]  # the last minute is still open: export holds it too
    raw = audience.export()
    json.dumps(raw)
    assert raw["format"] == 1 and raw["bucket_seconds"] == 1
    truth = truth_of(events)
    assert sum(len(c["startup"]) for m in truth.values() for c in m.values()) > 150  # the startup path is exercised
    assert_summary_matches(summarize(raw), truth)
    assert audience.counters["records"] == len(events)
    assert audience.counters["cmcd_requests"] == sum(e["report"].present for e in events)
    assert audience.counters["estimated_requests"] == sum("sid" not in e["report"].values for e in events)
    assert audience.counters["cmcd_invalid"] == sum(e["report"].invalid for e in events)
    # filters: one stream, one partner, a minute range
    one = summarize(audience.export(streams=["live:app/cam"]))
    assert [s["stream"] for s in one["streams"]] == ["live:app/cam"]
    assert {s["stream"] for s in summarize(raw, partner=101)["streams"]} == {"entry:0_abc", "entry:0_def"}
    assert {s["stream"] for s in summarize(audience.export(partner=101))["streams"]} == {"entry:0_abc", "entry:0_def"}
    ranged = summarize(audience.export(start_minute=T0 + 3, end_minute=T0 + 5))
    assert (ranged["from"], ranged["to"]) == (T0 + 3, T0 + 5)
    assert {m["t"] for s in ranged["streams"] for m in s["minutes"]} == {T0 + 3, T0 + 4}
    top = summarize(raw, top=2)["streams"]
    ranked = sorted(summarize(raw)["streams"], key=lambda s: (-s["totals"]["sessions"], -s["totals"]["bytes"]))
    assert [s["stream"] for s in top] == [s["stream"] for s in ranked[:2]]


def test_split_over_three_aggregators_merges_to_the_single_truth():
    events = simulate(seed=11)
    rng = random.Random(3)
    clock = Clock(events[-1]["t"])
    workers = [Audience(bucket_seconds=1, salt=b"pool key", clock=clock) for _ in range(3)]
    for event in events:
        feed(rng.choice(workers), event)  # a player's requests land on any worker or node
    exports = [json.loads(json.dumps(w.export())) for w in workers]
    merged = merge_exports(exports)
    truth = truth_of(events)
    # startup needs the first manifest and the first segment on one aggregator: compared on one object only
    assert_summary_matches(summarize(merged), truth, startup=False)
    again = summarize(merge_exports([merged, exports[0]]))["streams"]  # sessions: a union, counted once
    assert [s["totals"]["sessions"] for s in again] == [s["totals"]["sessions"] for s in summarize(merged)["streams"]]
    # a node's export carries extra fields (its id, a newer peer's): ignored
    extra = copy.deepcopy(exports[0])
    extra["node"] = "edge-1:8080"
    renditions = next(c["renditions"] for cells in extra["minutes"].values() for c in cells.values() if c["renditions"])
    renditions["720p"] = renditions.pop(next(iter(renditions)), "")  # a label this version does not know: "other"
    for cells in extra["minutes"].values():
        for cell in cells.values():
            cell["future_field"] = {"x": 1}
    with_extra = summarize(merge_exports([extra, exports[1], exports[2]]))["streams"]
    assert [s["totals"] for s in with_extra] == [s["totals"] for s in summarize(merged)["streams"]]
    assert any("other" in m["by_rendition"] for s in with_extra for m in s["minutes"])


def test_sessions_counted_once_only_with_the_same_salt():
    report = CmcdReport(values={"sid": "same-player"}, present=True)
    raws = []
    for salt in (b"a", b"a", b"b"):
        audience = Audience(bucket_seconds=60, salt=salt, clock=Clock())
        audience.record("entry:x", None, "segment", report, "c", "Chrome", 10, 200)
        raws.append(audience.export())
    assert summarize(merge_exports(raws[:2]))["streams"][0]["totals"]["sessions"] == 1
    assert summarize(merge_exports(raws[1:]))["streams"][0]["totals"]["sessions"] == 2


def _strings_in(root) -> list:
    """Every str and bytes reachable from ``root`` through containers, instance dicts/slots and numpy arrays."""
    found, seen, stack = [], set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or callable(obj) and not hasattr(obj, "__dict__"):
            continue
        seen.add(id(obj))
        if isinstance(obj, (str, bytes)):
            found.append(obj)
        elif isinstance(obj, np.ndarray):
            found.append(obj.tobytes())
        elif isinstance(obj, dict):
            stack += list(obj.keys()) + list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack += list(obj)
        elif hasattr(obj, "__dict__") or hasattr(type(obj), "__slots__"):
            stack += list(getattr(obj, "__dict__", {}).values())
            stack += [getattr(obj, s) for s in getattr(type(obj), "__slots__", ()) if hasattr(obj, s)]
    return found


def test_no_raw_session_id_or_client_is_kept_or_exported():
    events = simulate(seed=5, players=60, minutes=3)
    clock = Clock(events[-1]["t"])
    audience = Audience(bucket_seconds=1, salt=b"k", clock=clock)
    for event in events:
        feed(audience, event)
    secrets = {e["report"].values["sid"] for e in events if "sid" in e["report"].values} | {e["client"] for e in events}
    assert len(secrets) > 60
    dumped = json.dumps(audience.export())
    kept = _strings_in(audience)
    assert any("entry:0_abc" == s for s in kept)  # the walk does reach the data
    for secret in secrets:
        assert secret not in dumped
        for text in kept:
            assert secret not in text if isinstance(text, str) else secret.encode() not in text


def test_memory_stays_under_the_bound_and_oldest_minutes_go():
    max_bytes = 256 << 10
    clock = Clock()
    audience = Audience(bucket_seconds=1, window_minutes=10_000, max_bytes=max_bytes, salt=b"k", clock=clock)
    rng = random.Random(2)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        peak = 0
        for minute in range(60):
            tracemalloc.reset_peak()
            for i in range(100):
                clock.now = T0 + minute + i / 100
                values = {"sid": f"s{rng.randrange(100_000)}", "br": rng.choice(RENDITIONS), "bl": rng.randrange(9999),
                          "mtp": rng.randrange(99_999), "bs": rng.random() < 0.1}
                audience.record(f"entry:{rng.randrange(10)}", 1, rng.choice(("manifest", "segment")),
                                CmcdReport(values=values, present=True), "c", rng.choice(BROWSERS), 1000, 200)
                assert audience.memory_bytes() <= max_bytes
            peak = max(peak, tracemalloc.get_traced_memory()[1])  # recording, closing and compacting minutes
            held = [int(m) for m in audience.export()["minutes"]]
            assert held == list(range(held[0], T0 + minute + 1))  # a contiguous run up to now: the oldest went
            assert minute < 10 or len(held) > 3
            current = tracemalloc.get_traced_memory()[0]
            assert current - base <= audience.memory_bytes() + (16 << 10)  # the estimates overstate what Python holds
    finally:
        tracemalloc.stop()
    assert audience.counters["evicted_minutes"] > 20 and audience.counters["dropped_over_budget"] == 0
    assert peak - base <= 1.5 * max_bytes  # compacting a minute briefly holds both forms (not counting exports)


@pytest.mark.parametrize("streams,sessions", [(1, 3000), (300, 3), (30, 100)])
def test_memory_estimate_is_honest(streams, sessions):
    """memory_bytes() against what tracemalloc sees: never below it, at most twice it (open and closed minutes)."""
    clock = Clock()
    audience = Audience(bucket_seconds=1, max_bytes=1 << 30, clock=clock)
    reports = [CmcdReport(values={"sid": f"s{i}", "br": 800 * (1 + i % 3), "bl": 100 * i, "mtp": 7 * i}, present=True)
               for i in range(sessions)]
    tracemalloc.start()
    try:
        base, counted = tracemalloc.get_traced_memory()[0], audience.memory_bytes()
        for minute in range(3):
            for stream in range(streams):
                for i, report in enumerate(reports):
                    clock.now = T0 + minute
                    audience.record(f"entry:{stream}", 1, ("manifest", "segment")[i % 2], report, "c",
                                    BROWSERS[i % 3], 1000, 200)
            real, estimate = tracemalloc.get_traced_memory()[0] - base, audience.memory_bytes() - counted
            assert real <= estimate <= 2 * real, (minute, real, estimate)
    finally:
        tracemalloc.stop()


def test_an_open_minute_too_big_for_the_budget_drops_records_and_stays_bounded():
    audience = Audience(bucket_seconds=60, max_bytes=64 << 10, max_streams=10_000, clock=Clock())
    for i in range(2000):
        audience.record(f"entry:{i}", None, "segment", CmcdReport(values={"sid": str(i)}, present=True), "c",
                        "Chrome", 1, 200)
        assert audience.memory_bytes() <= 64 << 10
    assert audience.counters["dropped_over_budget"] > 0


def test_configure_to_a_smaller_bound_drops_down_to_it():
    settings = {"window_minutes": 60, "bucket_seconds": 60, "max_bytes": 4 << 20, "max_streams": 2000, "salt": b""}
    clock = Clock()
    audience = Audience(**settings, clock=clock)
    for i in range(3000):
        clock.now = T0 - 20 + i * 0.06  # three minutes (T0 - 20 starts one), the last one open
        report = CmcdReport(values={"sid": str(i)}, present=True)
        audience.record("entry:a", None, "segment", report, "c", "Chrome", 1, 200)
    assert audience.memory_bytes() > 256 << 10
    audience.configure(**{**settings, "max_bytes": 64 << 10})
    assert audience.memory_bytes() <= 64 << 10 and audience.counters["evicted_minutes"] == 3


def test_a_clock_stepping_back_counts_in_the_open_minute():
    audience = Audience(bucket_seconds=60, clock=Clock(T0 + 500))
    report = CmcdReport(values={"sid": "a"}, present=True)
    for t in (T0 + 5, T0 + 65, T0 + 7, T0 + 66, T0 + 125):
        audience.record("entry:a", None, "segment", report, "c", "Chrome", 1, 200, now=t)
    minutes = summarize(audience.export())["streams"][0]["minutes"]
    assert [(m["t"], m["requests"]) for m in minutes] == [(T0 - 20, 1), (T0 + 40, 3), (T0 + 100, 1)]
    assert audience.counters["late_records"] == 1


def test_streams_beyond_max_streams_count_as_other():
    audience = Audience(bucket_seconds=60, max_streams=3, clock=Clock())
    for i in range(6):
        audience.record(f"entry:{i}", 7, "segment", CmcdReport(values={"sid": str(i)}, present=True), "c",
                        "Safari", 100, 200)
    summary = summarize(audience.export())
    assert sorted(s["stream"] for s in summary["streams"]) == ["entry:0", "entry:1", "entry:2", "other"]
    other = next(s for s in summary["streams"] if s["stream"] == "other")
    assert (other["totals"]["sessions"], other["partner"]) == (3, None)
    assert audience.counters["streams_overflow"] == 3


def test_window_drops_old_minutes_and_configure_keeps_or_resets():
    clock = Clock()
    audience = Audience(bucket_seconds=1, window_minutes=5, salt=b"k", clock=clock)
    report = CmcdReport(values={"sid": "x"}, present=True)
    for second in range(12):
        clock.now = T0 + second + 0.5
        audience.record("entry:a", 1, "segment", report, "c", "Chrome", 10, 200)
    assert sorted(int(m) for m in audience.export()["minutes"]) == list(range(T0 + 7, T0 + 12))
    assert audience.counters["expired_minutes"] == 7
    before = audience.export()
    settings = {"window_minutes": 5, "bucket_seconds": 1, "max_bytes": 64 << 20, "max_streams": 2000, "salt": b"k"}
    audience.configure(**settings)
    assert audience.export() == before
    audience.configure(**{**settings, "window_minutes": 2})
    assert sorted(int(m) for m in audience.export()["minutes"]) == [T0 + 10, T0 + 11]
    audience.configure(**{**settings, "window_minutes": 2, "salt": b"other"})
    assert audience.export()["minutes"] == {} and audience.counters["resets"] == 1
    audience.record("entry:a", 1, "segment", report, "c", "Chrome", 10, 200)
    audience.configure(**{**settings, "window_minutes": 2, "salt": b"other", "bucket_seconds": 2})
    assert audience.export()["minutes"] == {} and audience.counters["resets"] == 2
    with pytest.raises(ValueError):
        audience.configure(**{**settings, "bucket_seconds": 0})


def test_startup_from_first_manifest_to_first_segment():
    clock = Clock()
    audience = Audience(bucket_seconds=60, clock=clock)
    with_sid = CmcdReport(values={"sid": "p1"}, present=True)
    audience.record("entry:a", 1, "manifest", with_sid, "c1", "Chrome", 10, 200, now=T0 + 1.0)
    audience.record("entry:a", 1, "manifest", with_sid, "c1", "Chrome", 10, 200, now=T0 + 1.2)  # a second playlist
    audience.record("entry:a", 1, "segment", with_sid, "c1", "Chrome", 10, 200, now=T0 + 1.7)
    audience.record("entry:a", 1, "manifest", with_sid, "c1", "Chrome", 10, 200, now=T0 + 5)  # a live refresh
    audience.record("entry:a", 1, "segment", with_sid, "c1", "Chrome", 10, 200, now=T0 + 6)
    no_cmcd = CmcdReport()
    audience.record("entry:a", 1, "manifest", no_cmcd, "c2", "Safari", 10, 200, now=T0 + 2)
    audience.record("entry:a", 1, "init", no_cmcd, "c2", "Safari", 10, 200, now=T0 + 2.1)
    audience.record("entry:a", 1, "segment", no_cmcd, "c2", "Safari", 10, 200, now=T0 + 2.5)
    audience.record("entry:b", 1, "manifest", no_cmcd, "c3", "Safari", 10, 200, now=T0 + 2)
    audience.record("entry:b", 1, "segment", no_cmcd, "c3", "Safari", 10, 200, now=T0 + 400)  # too late: not one
    clock.now = T0 + 401
    summary = summarize(audience.export())
    first = next(s for s in summary["streams"] if s["stream"] == "entry:a")["minutes"][0]["startup_seconds"]
    assert first["count"] == 2
    assert first["mean"] == pytest.approx((0.7 + 0.5) / 2, abs=1e-6)
    assert 0.5 * 2 ** -0.25 <= first["p50"] <= 0.5 * 2 ** 0.25
    late = next(s for s in summary["streams"] if s["stream"] == "entry:b")["minutes"]
    assert all(m["startup_seconds"]["count"] == 0 for m in late)
    assert audience.counters["startups"] == 2 and audience.counters["startups_expired"] == 1


def test_current_minute_top_streams_and_other():
    clock = Clock(T0 + 30)
    audience = Audience(bucket_seconds=60, clock=clock)
    for stream, players in (("entry:a", 5), ("entry:b", 3), ("entry:c", 2), ("entry:d", 1)):
        for p in range(players):
            audience.record(stream, 1, "segment", CmcdReport(values={"sid": f"{stream}{p}", "br": 800}, present=True),
                            "c", "Chrome", 100, 200 if p else 500)
    now = audience.current(top=2)
    assert now["t"] == (T0 + 30) // 60 * 60
    assert [(s["stream"], s["sessions"]) for s in now["streams"]] == [("entry:a", 5), ("entry:b", 3)]
    assert now["streams"][0]["by_rendition"] == {"800": 5} and now["streams"][0]["errors"] == 1
    assert now["other"] == {"sessions": 3, "by_rendition": {"800": 3}, "by_player": {"Chrome": 3}, "bytes": 300,
                            "requests": 3, "rebuffer_events": 0, "errors": 2}
    clock.now = T0 + 90  # the minute ended: the open one is new and empty, the old one is in the export
    assert audience.current()["streams"] == []
    assert len(summarize(audience.export())["streams"]) == 4


def test_pack_round_trip():
    rng = random.Random(4)
    for _ in range(50):
        cell = Cell(rng.choice((None, 0, 7, -3)))
        cell.counts = [rng.randrange(1 << 50) for _ in cell.counts]
        cell.startup_sum = rng.random() * 100
        cell.hist = {rng.randrange(3 * BUCKETS): rng.randrange(1, 1 << 40) for _ in range(rng.randrange(8))}
        cell.sessions = {rng.getrandbits(64) for _ in range(rng.randrange(50))} | {0, (1 << 64) - 1}
        some = sorted(cell.sessions)
        cell.rebuffer_sessions = set(some[::3])
        cell.renditions = {k: set(some[i::4]) for i, k in enumerate(rng.sample([-2, -1, 400, 800, 10**9], 3))}
        cell.players = {k: set(some[::2]) for k in rng.sample(range(len(BROWSERS)), 2)}
        packed = pack(cell)
        back = unpack(cell.partner, packed)
        assert all(getattr(back, name) == getattr(cell, name) for name in Cell.__slots__)
        assert encode_cell((cell.partner, packed)) == encode_cell(cell)  # export encodes closed minutes packed


def _mutations(raw: dict, rng: random.Random):
    """Malformed variants of an export: wrong types, bad base64, out-of-range numbers, deleted or swapped parts."""
    minute = next(iter(raw["minutes"]))
    stream = next(iter(raw["minutes"][minute]))
    paths = [("format",), ("bucket_seconds",), ("minutes",), ("minutes", minute),
             ("minutes", minute, stream)] + [("minutes", minute, stream, k) for k in raw["minutes"][minute][stream]]
    junk = [None, "x", -1, 2**70, 1.5, [], {}, {"a": 1}, "!!!", base64.b64encode(b"1234567").decode(), True, "-5"]
    for _ in range(300):
        bad = copy.deepcopy(raw)
        path = rng.choice(paths)
        target = bad
        for key in path[:-1]:
            target = target[key]
        if rng.random() < 0.2:
            del target[path[-1]]
        else:
            target[path[-1]] = rng.choice(junk)
        yield bad
    for cell_key in ("renditions", "players", "histograms", "object_types"):
        bad = copy.deepcopy(raw)
        inner = bad["minutes"][minute][stream].setdefault(cell_key, {})
        inner[rng.choice(["", "x" * 20, "9999999999999999", "buffer_ms", "500"])] = rng.choice(junk)
        yield bad
    yield {**raw, "minutes": {"not a minute": {}}}
    yield {**raw, "minutes": {minute: {123: {}}}}
    yield ["not", "a", "dict"]


def test_merge_refuses_mismatched_and_malformed_exports():
    clock = Clock()
    one = Audience(bucket_seconds=60, clock=clock)
    other = Audience(bucket_seconds=30, clock=clock)
    for audience in (one, other):
        audience.record("entry:a", 1, "segment", CmcdReport(values={"sid": "s", "br": 800, "bl": 500}, present=True),
                        "c", "Chrome", 10, 200)
    raw = one.export()
    with pytest.raises(ValueError):
        merge_exports([raw, other.export()])
    with pytest.raises(ValueError):
        merge_exports([raw, {**raw, "format": 2}])
    with pytest.raises(ValueError):
        merge_exports([])
    with pytest.raises(ValueError):
        merge_exports([{**raw, "histogram": {"per_octave": 8, "buckets": BUCKETS}}])
    rng = random.Random(9)
    refused = 0
    for bad in _mutations(raw, rng):
        for call in (lambda: merge_exports([raw, bad]), lambda: summarize(bad)):
            try:
                json.dumps(call())
            except ValueError:
                refused += 1
    assert refused > 300
    minimal = {"format": 1, "bucket_seconds": 60, "minutes": {"5": {"entry:a": {"requests": 2}}}}  # fields missing
    assert summarize(merge_exports([minimal]))["streams"][0]["totals"]["requests"] == 2


def test_closing_a_minute_accounts_its_bytes_once():
    """memory_bytes after a minute closes is the base plus that minute's packed size, not twice it."""
    from gateway.ops.audience import BASE_BYTES, TABLE_ENTRY

    now = [1_796_000_000.0]
    audience = Audience(bucket_seconds=60, clock=lambda: now[0])
    for i in range(50):
        report = CmcdReport({"sid": f"s{i}", "br": 800, "ot": "v"}, present=True)
        audience.record("file:a.mp4", None, "segment", report, "", "Chrome", 1000, 200)
    now[0] += 60
    audience.export()  # closes the minute
    closed = sum(audience._closed_bytes.values())
    assert closed > 0 and audience.memory_bytes() == BASE_BYTES + closed + (
        len(audience._pending) + len(audience._started)) * TABLE_ENTRY
