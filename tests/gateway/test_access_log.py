"""The access log of a real `gateway serve`, parsed back: one line per request, text or JSON, with the cache result.

Ground truth: what the client itself sent and received (method, path, status, body length, user agent), and the
order of requests (a segment's first fetch is a miss, the second a hit, a progressive download bypasses the cache).
"""
from __future__ import annotations

import json
import re

import pytest

from .conftest import URLSET
from .processes import get

AGENT = 'probe-agent/1.0 (says "hi")'
TEXT_LINE = re.compile(r'^(?P<time>\S+Z) (?P<remote>\S+) (?P<method>[A-Z]+) (?P<path>"(?:[^"\\]|\\.)*") '
                       r'(?P<status>\d{3}) (?P<bytes>\d+) (?P<duration_ms>[0-9.]+)ms (?P<cache>hit|miss|bypass|-) '
                       r'(?P<user_agent>"(?:[^"\\]|\\.)*") pid=(?P<pid>\d+)$')


def parse_text(line: str) -> dict | None:
    m = TEXT_LINE.match(line)
    if m is None:
        return None
    record = m.groupdict()
    for key in ("path", "user_agent"):
        record[key] = json.loads(record[key])
    for key in ("status", "bytes", "pid"):
        record[key] = int(record[key])
    record["duration_ms"] = float(record["duration_ms"])
    return record


def parse_json(line: str) -> dict | None:
    """An access record; None for other lines (server log lines are JSON too in JSON mode, with a "logger")."""
    doc = json.loads(line) if line.startswith("{") else None
    return doc if doc is not None and "logger" not in doc else None


def run_requests(base: str) -> list[tuple[str, str, int, int]]:
    """(method, path, status, body bytes received) of each request, as the client saw it."""
    headers = {"User-Agent": AGENT}
    sent = []
    for method, path, extra in [
        ("GET", URLSET + "/master.m3u8", {}),
        ("GET", "/hls/title_240p.mp4/seg-1.ts", {}),
        ("GET", "/hls/title_240p.mp4/seg-1.ts", {}),
        ("GET", "/hls/title_240p.mp4/seg-2.ts", {"Range": "bytes=0-187"}),
        ("GET", "/mp4/title_180p.mp4", {"Range": "bytes=100-1099"}),
        ("HEAD", "/mp4/title_180p.mp4", {}),
        ("GET", "/hls/missing.mp4/master.m3u8", {}),
        ("GET", "/health", {}),
        ("GET", "/ready", {}),
    ]:
        status, _, body = get(base, path, method, {**headers, **extra})
        sent.append((method, path, status, len(body)))
    return sent


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_one_line_per_request_with_the_cache_result(gateways, store, fmt):
    gw = gateways("--access-log-format", fmt, store=store)
    sent = run_requests(gw.base)
    workers = gw.workers()
    assert gw.stop() == 0
    parse = parse_json if fmt == "json" else parse_text
    records = [r for line in gw.log.read_text().splitlines() if (r := parse(line)) is not None]

    logged = [(r["method"], r["path"], r["status"], r["bytes"]) for r in records]
    quiet = {"/health", "/ready"}  # polled by balancers: DEBUG only
    assert logged == [s for s in sent if s[1] not in quiet]
    assert [r["cache"] for r in records] == ["miss", "miss", "hit", "miss", "bypass", "bypass", "-"]
    assert sent[3][2] == 206 and sent[3][3] == 188 and sent[4][3] == 1000  # ranges: body bytes, not the file's
    for r in records:
        assert r["remote"] == "127.0.0.1" and r["user_agent"] == AGENT and r["pid"] in workers
        assert r["duration_ms"] >= 0 and r["time"].endswith("Z")


def test_health_checks_are_logged_at_debug_and_access_log_can_be_off(gateways, store):
    debug = gateways("--access-log-format", "json", store=store, log_level="debug")
    get(debug.base, "/health")
    get(debug.base, "/ready")
    assert debug.stop() == 0
    paths = [r["path"] for line in debug.log.read_text().splitlines() if (r := parse_json(line))]
    assert paths == ["/health", "/ready"]

    off = gateways("--no-access-log", "--segment-cache-mb", "0", store=store)
    assert get(off.base, "/hls/title_240p.mp4/seg-1.ts")[0] == 200
    assert off.stop() == 0
    assert not [line for line in off.log.read_text().splitlines() if parse_text(line)]


def test_a_disabled_cache_is_a_bypass(gateways, store):
    gw = gateways("--access-log-format", "json", "--segment-cache-mb", "0", store=store)
    for _ in range(2):
        assert get(gw.base, "/hls/title_240p.mp4/seg-1.ts")[0] == 200
    assert gw.stop() == 0
    records = [r for line in gw.log.read_text().splitlines() if (r := parse_json(line))]
    assert [r["cache"] for r in records] == ["bypass", "bypass"]


ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def test_json_mode_makes_every_line_json_and_times_are_iso_utc(gateways, store):
    """JSON mode: the server's own lines (start, a catalog warning, a failing request's traceback, the stop) are JSON
    objects as the access records are; text mode: every line starts with the same ISO 8601 UTC time."""
    (store / ".catalog" / "partners").mkdir(parents=True)
    (store / ".catalog" / "partners" / "7.json").write_text("{broken")  # a warning line when the catalog loads
    gw = gateways("--access-log-format", "json", "--log-level", "debug", store=store)  # options after `serve`
    assert get(gw.base, "/hls/title_240p.mp4/master.m3u8")[0] == 200
    assert gw.stop() == 0
    docs = [json.loads(line) for line in gw.log.read_text().splitlines()]  # every line parses
    server = [d for d in docs if "logger" in d]
    assert any(d["level"] == "WARNING" and "partners/7.json" in d["message"] for d in server), server
    assert any(d["level"] == "INFO" and d["message"].startswith("catalog: 0 partner(s), 0 entrie(s) loaded from")
               for d in server), server
    assert any(d["level"] == "DEBUG" for d in server)  # --log-level debug after the subcommand took effect
    assert all(re.fullmatch(ISO_UTC, d["time"]) for d in docs)
    assert {d["path"] for d in docs if "path" in d} == {"/hls/title_240p.mp4/master.m3u8"}

    text = gateways(store=store)
    assert get(text.base, "/hls/title_240p.mp4/master.m3u8")[0] == 200
    assert text.stop() == 0
    lines = text.log.read_text().splitlines()
    assert any("partners/7.json" in line for line in lines)
    assert all(re.match(ISO_UTC + " ", line) for line in lines), lines
