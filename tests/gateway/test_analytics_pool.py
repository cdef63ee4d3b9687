"""Audience analytics (issue 18) across real processes: the workers of a node, SIGHUP reloads, a pool of nodes, and a
load of simulated players through real nginx (`gateway analytics-load`).

Ground truth comes from the client side: the bodies received (their lengths), the session ids sent, and for the load
the truth `gateway analytics-load` wrote from what it sent and received, with each request's server minute bounded by
the client's clock (same machine). Worker pids and the admin listener's owner come from /proc; which minutes a worker
still holds (after evictions) from that worker's own export on its sibling socket. Timeouts are hang guards, except
where an answer's time is what is tested (a hung or dead worker, a dead or hung node).
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.ops.audience_node import PEER_TIMEOUT, SIBLING_TIMEOUT, sibling_socket
from gateway.ops.cmcd import parse_cmcd
from gateway.tools import cmcd_load
from tests.e2e.conftest import free_port
from tests.needs import missing
from tests.nginx.conftest import _accepts
from .conftest import add_to_store
from .processes import HANG_GUARD, Gateway, get, wait_until
from .test_workers import rtmp_listener_owners, write_config

TOKEN = "analytics-pool-test-token"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # as tests/nginx/conftest.py
STREAM = "file:title_180p.mp4"
PLAYER_PATHS = ("/hls/title_180p.mp4/master.m3u8", "/hls/title_180p.mp4/index-v1-a1.m3u8",
                "/hls/title_180p.mp4/seg-1-v1-a1.ts", "/hls/title_180p.mp4/seg-2-v1-a1.ts")
CHROME = cmcd_load.PLAYERS[0][0]


def api(admin_port: int, timeout: float = HANG_GUARD, **params) -> tuple[int, dict, float]:
    """GET /api/v1/analytics on a node's admin listener: (status, JSON body, seconds it took)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.request("GET", f"/api/v1/analytics?{query}", headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}"), time.monotonic() - started
    finally:
        conn.close()


def admin_up(admin_port: int) -> bool:
    try:
        return api(admin_port, timeout=5)[0] in (200, 404)
    except OSError:
        return False


def play(base: str, sid: str, index: int) -> int:
    """Request ``index`` of one player session (fresh connection): CMCD in the query or the headers, alternately.
    The body's length."""
    path = PLAYER_PATHS[index % len(PLAYER_PATHS)]
    values = {"sid": sid, "ot": "av" if path.endswith(".ts") else "m", **({"br": 476} if path.endswith(".ts") else {})}
    headers = {"User-Agent": CHROME}
    if index % 2:
        headers.update(cmcd_load.cmcd_headers(values))
    else:
        path += "?CMCD=" + cmcd_load.encode_cmcd(values).replace('"', "%22").replace(",", "%2C")
    status, _, body = get(base, path, headers=headers)
    assert status == 200, (path, status)
    return len(body)


def row_of(body: dict, stream: str = STREAM) -> dict:
    rows = [row for row in body["streams"] if row["stream"] == stream]
    assert len(rows) == 1, body
    return rows[0]


def reload(gw: Gateway, config: Path, store: Path, marker: int, **values) -> None:
    """Write the config (with ``not_found_max_age = marker``), SIGHUP, and wait until 20 fresh connections in a row
    show the marker: every worker has reloaded (a 404 is never recorded by the analytics)."""
    write_config(config, store, not_found_max_age=marker, **values)
    gw.send(signal.SIGHUP)
    wait_until(lambda: all(get(gw.base, "/hls/absent.mp4/master.m3u8")[1].get("Cache-Control", "").endswith(
        f"max-age={marker}") for _ in range(20)), f"every worker to reload (marker {marker})")


def records(body: dict) -> list[int]:
    return [stats["records"] for stats in body["workers"]]


# -- one node, two workers

def test_one_session_over_both_workers_counts_once_and_a_killed_worker_never_hangs_the_answer(gateways, store,
                                                                                              tmp_path):
    admin = free_port()
    config = tmp_path / "gateway.toml"
    write_config(config, store, workers=2, admin_port=admin, admin_token=TOKEN, access_log=False)
    gw = gateways("--config", str(config))
    workers = wait_until(lambda: len(gw.workers()) == 2 and gw.workers(), "two worker processes")
    wait_until(lambda: admin_up(admin), "the admin API")

    received = sum(play(gw.base, "one-session", i) for i in range(40))
    status, body, _ = api(admin, stream=STREAM)
    assert status == 200 and body["scope"] == "node" and body["missing_workers"] == []
    row = row_of(body)
    assert row["totals"]["sessions"] == 1 and all(m["sessions"] == 1 for m in row["minutes"])
    assert row["totals"]["bytes"] == received and row["totals"]["requests"] == 40
    assert [s["worker"] for s in body["workers"]] == [0, 1]
    before = records(body)
    assert sum(before) == 40 and min(before) > 0, before  # SO_REUSEPORT spread the connections over both

    (first,) = rtmp_listener_owners(admin, workers)  # worker 0 serves the admin API
    (victim,) = workers - {first}
    os.kill(victim, signal.SIGSTOP)  # hung: its socket still accepts, nothing answers
    try:
        status, body, seconds = api(admin, stream=STREAM)
    finally:
        os.kill(victim, signal.SIGCONT)
    assert status == 200 and SIBLING_TIMEOUT <= seconds < SIBLING_TIMEOUT + 1.0, seconds
    assert body["missing_workers"] == ["worker 1: timed out"] and row_of(body)["totals"]["requests"] == before[0]
    os.kill(victim, signal.SIGKILL)
    states = set()
    deadline = time.monotonic() + HANG_GUARD
    while "fresh" not in states:
        assert time.monotonic() < deadline, f"worker 1 never came back: {states}"
        status, body, seconds = api(admin, stream=STREAM)
        assert status == 200 and seconds < SIBLING_TIMEOUT + 1.0, seconds
        row = row_of(body)
        assert row["totals"]["requests"] == before[0] and row["totals"]["sessions"] == 1  # worker 0's share only
        if body["missing_workers"]:
            assert [m.split(":")[0] for m in body["missing_workers"]] == ["worker 1"], body["missing_workers"]
            assert [s["worker"] for s in body["workers"]] == [0]
            states.add("missing")
        else:
            assert records(body) == [before[0], 0]  # the restarted worker: nothing recorded yet
            states.add("fresh")
        time.sleep(0.05)
    assert victim not in gw.workers() and len(gw.workers()) == 2
    assert gw.stop() == 0


# -- SIGHUP

def test_a_reload_keeps_the_minutes_applies_the_window_and_can_turn_analytics_off(gateways, store, tmp_path):
    admin = free_port()
    config = tmp_path / "gateway.toml"
    base = dict(workers=2, admin_port=admin, admin_token=TOKEN, access_log=False, analytics_bucket_seconds=1)
    write_config(config, store, not_found_max_age=1, analytics_window_minutes=600, **base)
    gw = gateways("--config", str(config))
    wait_until(lambda: len(gw.workers()) == 2, "two worker processes")
    wait_until(lambda: admin_up(admin), "the admin API")
    for bucket in range(3):  # three "minutes" of one-second buckets
        time.sleep(1.0 - time.time() % 1.0 + 0.05)
        for i in range(6):
            play(gw.base, "reload-session", i + bucket)
    time.sleep(1.0)
    status, before, _ = api(admin, stream=STREAM)
    assert status == 200 and len(row_of(before)["minutes"]) >= 3

    reload(gw, config, store, 2, analytics_window_minutes=300, **base)
    status, after, _ = api(admin, stream=STREAM)
    assert status == 200 and after["streams"] == before["streams"]  # every minute kept, unchanged
    assert records(after) == records(before)

    reload(gw, config, store, 3, analytics_window_minutes=1, **base)  # only the open minute is inside the window
    status, shrunk, _ = api(admin, stream=STREAM)
    assert status == 200 and shrunk["streams"] == []
    assert sum(s["expired_minutes"] for s in shrunk["workers"]) >= 3

    reload(gw, config, store, 4, analytics=False, **base)
    assert api(admin)[0] == 404
    for i in range(10):
        play(gw.base, "while-off", i)
    reload(gw, config, store, 5, analytics=True, analytics_window_minutes=600, **base)
    status, on_again, _ = api(admin)
    assert status == 200 and on_again["streams"] == []  # the ten requests made while off left no trace
    assert records(on_again) == records(shrunk)
    assert gw.stop() == 0


# -- the pool

def pool_config(path: Path, store: Path, nodes: list[str], admin: int, **values) -> None:
    write_config(path, store, nodes=nodes, admin_port=admin, admin_token=TOKEN, access_log=False, **values)


def test_the_pool_counts_a_session_once_across_nodes_and_reports_missing_nodes_fast(gateways, store, tmp_path):
    ports, admins = [free_port() for _ in range(3)], [free_port() for _ in range(3)]
    nodes = [f"127.0.0.1:{port} admin=127.0.0.1:{admin}" for port, admin in zip(ports, admins)]  # the third: down
    configs = [tmp_path / f"node{i}.toml" for i in range(2)]
    for path, admin in zip(configs, admins):
        pool_config(path, store, nodes, admin, not_found_max_age=1)
    gws = [gateways("--config", str(path), "--port", str(port)) for path, port in zip(configs, ports)]
    for admin in admins[:2]:
        wait_until(lambda: admin_up(admin), "the admin API")

    sizes = [play(gws[i % 2].base, "pool-session", i) for i in range(24)]
    per_node = [sum(sizes[0::2]), sum(sizes[1::2])]
    for admin in admins[:2]:  # every node answers for the pool alike
        status, body, seconds = api(admin, scope="pool", stream=STREAM)
        assert status == 200 and body["scope"] == "pool"
        assert seconds < PEER_TIMEOUT, seconds  # a refused connection is not waited for
        assert len(body["nodes"]["answered"]) == 2
        assert [m["node"] for m in body["nodes"]["missing"]] == [nodes[2]] and body["nodes"]["missing"][0]["error"]
        row = row_of(body)
        assert row["totals"]["sessions"] == 1 and all(m["sessions"] == 1 for m in row["minutes"]), body
        assert row["totals"]["bytes"] == sum(per_node) and row["totals"]["requests"] == 24
    for admin, share in zip(admins, per_node):  # each node alone: its half
        row = row_of(api(admin, stream=STREAM)[1])
        assert row["totals"]["bytes"] == share and row["totals"]["sessions"] == 1

    with socket.socket() as hung:  # a node whose admin port accepts connections and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        hung_node = f"127.0.0.1:{free_port()} admin=127.0.0.1:{hung.getsockname()[1]}"
        reload(gws[0], configs[0], store, 2, nodes=[*nodes, hung_node], admin_port=admins[0], admin_token=TOKEN,
               access_log=False)
        status, body, seconds = api(admins[0], scope="pool", stream=STREAM)
    assert status == 200 and seconds < PEER_TIMEOUT + 1.0, seconds
    assert {m["node"]: m["error"] for m in body["nodes"]["missing"]}.get(hung_node) == "timed out"
    assert row_of(body)["totals"]["bytes"] == sum(per_node)
    for gw in gws:
        assert gw.stop() == 0


# -- the load script

def test_the_load_plan_is_deterministic_and_its_cmcd_parses():
    streams = [cmcd_load.Stream("file:a", "http://x/a", [cmcd_load.Rendition(800, "http://x/a1", ["s1", "s2"]),
                                                         cmcd_load.Rendition(400, "http://x/a2", ["t1"])]),
               cmcd_load.Stream("file:b", "http://x/b", [cmcd_load.Rendition(90, "http://x/b1", ["u1"])])]
    first, again = (cmcd_load.plan(streams, 300, 10, seed=5, max_requests=10_000) for _ in range(2))
    assert first == again and first != cmcd_load.plan(streams, 300, 10, seed=6, max_requests=10_000)
    assert sum(len(f) for s in cmcd_load.plan(streams, 300, 10, 5, max_requests=50) for f in s.minutes.values()) == 50
    starts = {min(s.minutes) for s in first}
    assert len(starts) == 10 and {s.agent[1] for s in first} == {family for _, family in cmcd_load.PLAYERS}
    assert {s.mode for s in first} == {"query", "headers"}
    fetches = [f for s in first for fs in s.minutes.values() for f in fs]
    assert any(f.cmcd.get("bs") for f in fetches) and all(f.cmcd["ot"] == "m" for f in fetches if f.kind != "segment")
    for fetch in fetches[:200]:  # what the tool sends, both ways, is what the gateway's parser reads
        values = {"sid": 'a"b\\c', "sf": "h", "st": "v", **fetch.cmcd}
        for report in (parse_cmcd(cmcd_load.encode_cmcd(values), {}), parse_cmcd(None, cmcd_load.cmcd_headers(values))):
            assert report.values == values and not report.invalid and not report.unknown


def test_the_load_command_refuses_bad_bounds_and_a_missing_stream(gateways, store):
    command = [sys.executable, "-m", "gateway", "analytics-load"]
    result = subprocess.run(command + ["http://127.0.0.1:1", "--sessions", "0"], capture_output=True, text=True,
                            timeout=HANG_GUARD)
    assert result.returncode == 2 and "must be >= 1" in result.stderr
    gw = gateways(store=store)
    result = subprocess.run(command + [gw.base, "--stream", "/hls/absent.mp4/master.m3u8"], capture_output=True,
                            text=True, timeout=HANG_GUARD)
    assert result.returncode == 1 and "cannot read" in result.stderr and result.stdout == ""


def start_nginx(prefix: Path, config: Path) -> tuple[subprocess.Popen, int]:
    """nginx with the configuration `gateway nginx-config --config` renders for the pool's `nodes` (no cache: every
    request reaches a node)."""
    if not os.access(NGINX, os.X_OK):
        missing(f"nginx is not installed ({NGINX})")
    port = free_port()
    conf = prefix / "nginx.conf"
    (prefix / "logs").mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "gateway", "nginx-config", "--config", str(config), "--listen",
                    f"127.0.0.1:{port}", "--cache-size", "0", "--log-dir", str(prefix / "logs"), "--pid-file",
                    str(prefix / "nginx.pid"), "--temp-dir", str(prefix), "--stream-module", "",
                    "--user", "root" if os.geteuid() == 0 else "nobody", "-o", str(conf)],
                   check=True, timeout=HANG_GUARD)
    command = [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs" / "startup.log")]
    check = subprocess.run(command + ["-t"], capture_output=True, text=True, timeout=HANG_GUARD)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(command + ["-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=open(prefix / "stderr.log", "wb"))
    wait_until(lambda: proc.poll() is not None or _accepts(port), "nginx to listen")
    assert proc.poll() is None, (prefix / "stderr.log").read_text()
    return proc, port


def worker_export(port: int, index: int) -> dict:
    """One worker's own minutes, from its sibling socket (gateway/ops/audience_node.py)."""
    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(HANG_GUARD)
            self.sock.connect(sibling_socket(port, index))

    conn = Conn("worker", timeout=HANG_GUARD)
    try:
        conn.request("GET", "/export")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


LOAD_FILES = 10  # audio-only copies (small segments), each its own entry for nginx's hash, plus the ladder
LOAD_MEMORY_MB = 0.3  # per worker, during the load: no worker can drop a record (see the test)
MIN_MEMORY_MB = 0.07  # the least Audience accepts is 64 KiB


@pytest.mark.slow
def test_a_thousand_players_through_nginx_match_the_truth_minute_by_minute(gateways, store, tmp_path):
    """The memory bound, per worker: during the load it is loose enough that no record can be dropped (an open minute
    costs ~10 times what it costs once closed, and which worker gets how much is up to nginx's hash and the kernel);
    then a reload sets each node's bound below what its workers hold (or to the least bound there is): the oldest
    minutes go, the API still answers, and the minutes kept equal the truth. (How much each worker holds varies from
    run to run: nginx's consistent hash is over the nodes' ports, free ones picked at random, and the kernel shares a
    node's connections between its workers; one worker may hold five times another, or barely more than the least
    bound there is.)"""
    for i in range(LOAD_FILES):
        add_to_store(store, "audio_only.mp4", f"a{i}.mp4")
    ports, admins = [free_port() for _ in range(2)], [free_port() for _ in range(2)]
    nodes = [f"127.0.0.1:{port} admin=127.0.0.1:{admin}" for port, admin in zip(ports, admins)]
    configs = [tmp_path / f"node{i}.toml" for i in range(2)]
    settings = [dict(nodes=nodes, admin_port=admin, admin_token=TOKEN, access_log=False, workers=2,
                     analytics_bucket_seconds=1, segment_duration_ms=1000) for admin in admins]
    for path, values in zip(configs, settings):
        write_config(path, store, analytics_memory_mb=LOAD_MEMORY_MB, not_found_max_age=1, **values)
    gws = [gateways("--config", str(path), "--port", str(port)) for path, port in zip(configs, ports)]
    for admin in admins:
        wait_until(lambda: admin_up(admin), "the admin API")
    nginx, nginx_port = start_nginx(tmp_path / "nginx", configs[0])
    try:
        streams = ["/hls/title_,360p,240p,180p,.mp4.urlset/master.m3u8"]
        streams += [f"/hls/a{i}.mp4/master.m3u8" for i in range(LOAD_FILES)]
        truth_file = tmp_path / "truth.json"
        subprocess.run([sys.executable, "-m", "gateway", "analytics-load", f"http://127.0.0.1:{nginx_port}",
                        *(a for s in streams for a in ("--stream", s)), "--sessions", "1000", "--minutes", "10",
                        "--minute-seconds", "1", "--seed", "18", "--concurrency", "32", "--timeout", "20",
                        "-o", str(truth_file)], check=True, timeout=120)
    finally:
        nginx.terminate()
        nginx.wait(HANG_GUARD)
    truth = json.loads(truth_file.read_text())
    assert truth["failed"] == 0 and truth["requests"] > 4000, truth["failures"]
    assert truth["seconds"] < 30, truth["seconds"]

    before = [worker_export(port, i) for port in ports for i in range(2)]
    stats = [e["stats"] for e in before]
    assert all(s["memory_bytes"] <= s["max_bytes"] == int(LOAD_MEMORY_MB * 1024 * 1024) for s in stats), stats
    assert all(s["dropped_over_budget"] == 0 for s in stats), stats
    assert stats[0]["records"] + stats[1]["records"] > 0 and stats[2]["records"] + stats[3]["records"] > 0  # nginx
    for n, (gw, path, values) in enumerate(zip(gws, configs, settings)):
        held = [s["memory_bytes"] for s in stats[2 * n:2 * n + 2]]
        # below the smaller worker's bytes (and well below: closing a worker's open minute alone can free ~25 %),
        # but not so far below the larger's that it keeps no minute to compare with the truth
        bound = max(MIN_MEMORY_MB, round(max(min(held) * 0.6, max(held) * 0.35) / (1 << 20), 4))
        reload(gw, path, store, 2 + n, analytics_memory_mb=bound, **values)
    after = [worker_export(port, i) for port in ports for i in range(2)]
    shrunk = [e["stats"] for e in after]
    assert all(s["memory_bytes"] <= s["max_bytes"] < LOAD_MEMORY_MB * (1 << 20) for s in shrunk), shrunk
    evicted = [a["evicted_minutes"] > b["evicted_minutes"] for b, a in zip(stats, shrunk)]
    # a worker that held twice its new bound must have let minutes go (what else a reload frees, its startup tables
    # cut to an eighth of the bound, is less than half of the least bound); one at least did
    assert all(e for e, b, a in zip(evicted, stats, shrunk) if b["memory_bytes"] > 2 * a["max_bytes"]), shrunk
    assert any(evicted), (stats, shrunk)
    assert all(s["dropped_over_budget"] == 0 for s in shrunk)
    # the oldest minutes went: every minute a worker let go is older than every minute it kept
    lost = [sorted(int(m) for m in set(b["minutes"]) - set(a["minutes"])) for b, a in zip(before, after)]
    assert all(not gone or gone[-1] < min(map(int, a["minutes"]), default=gone[-1] + 1)
               for gone, a in zip(lost, after)), (lost, [sorted(a["minutes"]) for a in after])
    # from the minute after the newest one any worker let go, the pool's answer must equal the truth
    cutoff = max((gone[-1] for gone in lost if gone), default=-1) + 1
    status, body, _ = api(admins[1], scope="pool", top=1000, **{"from": cutoff})
    assert status == 200 and body["nodes"]["missing"] == [] and len(body["nodes"]["answered"]) == 2
    for node_stats in body["nodes"]["workers"].values():
        assert all(s["memory_bytes"] <= s["max_bytes"] for s in node_stats)
    got = {row["stream"]: row for row in body["streams"]}
    uncertain = {(u["stream"], t) for u in truth["uncertain"] for t in u["t"]}
    compared = 0
    for label, expected in truth["streams"].items():
        kept = [int(t) for t in expected["minutes"] if int(t) >= cutoff]
        if not kept:
            continue
        row = got[label]
        minutes = {m["t"]: m for m in row["minutes"]}
        assert set(minutes) == set(kept), label
        for t in kept:
            if (label, t) in uncertain:
                continue
            m, want = minutes[t], expected["minutes"][str(t)]
            assert {"sessions": m["sessions"], "bytes": m["bytes"], "requests": m["requests"],
                    "rebuffer_events": m["rebuffer"]["events"], "by_rendition": m["by_rendition"],
                    "by_player": m["by_player"]} == want, (label, t)
            compared += 1
        if not any(stream == label for stream, _ in uncertain):
            assert row["totals"] == {**expected["totals_since"][str(min(kept))], "errors": 0}, label
    assert compared >= len(streams), compared  # as many stream-minutes as streams at least survived the evictions
    for gw in gws:
        assert gw.stop() == 0
