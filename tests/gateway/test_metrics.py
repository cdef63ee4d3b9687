"""/metrics against real `gateway serve` processes, read with prometheus-client's own parser.

Each test scrapes, makes requests whose effect is known exactly (a manifest, a segment twice → one hit), scrapes again
and checks that every counter moved by exactly the right amount: the ground truth is the number of requests made and
the bytes received, never a figure taken from the gateway itself.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixtures.generate import fixture_path
from gateway.ops.labels import fallback_label, live_label
from gateway.ops.live_viewers import LiveViewers
from tests.e2e.conftest import free_port, start_gateway
from tests.needs import require_executable

TITLE = "/hls/title_360p.mp4"
STAGES = ("cache_lookup", "parse", "plan", "read", "mux", "manifest")


# --- helpers ---------------------------------------------------------------------------------------------------------

def scrape(base: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics by (name, labels), parsed by prometheus-client's parser."""
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def fetch(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def metrics_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    shutil.copyfile(fixture_path("title_360p.mp4"), store / "title_360p.mp4")
    return store


@pytest.fixture
def node(metrics_store: Path, tmp_path: Path, monkeypatch):
    """One fresh `gateway serve` (fresh caches: the first request of a file parses its moov)."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    proc, base = start_gateway(metrics_store, tmp_path / "gateway.log")
    yield base
    stop(proc)


# --- request labels ------------------------------------------------------------------------------------------------

# (path, the label the URL grammar gives it): every kind of file of every protocol, signed, and paths the grammar
# refuses, which keep only their protocol (``playlist.m3u8`` ends like a playlist, but no HLS writer names one so)
LABELLED = [
    (TITLE + "/master.m3u8", ("hls", "manifest")), (TITLE + "/index-v1-a1.m3u8", ("hls", "manifest")),
    (TITLE + "/seg-1-v1-a1.ts", ("hls", "segment")), (TITLE + "/seg-1-v1.m4s", ("hls", "segment")),
    (TITLE + "/init-v1.mp4", ("hls", "init")), (TITLE + "/encryption.key", ("hls", "key")),
    ("/dash/title_360p.mp4/manifest.mpd", ("dash", "manifest")), ("/dash/title_360p.mp4/init-a1.mp4", ("dash", "init")),
    ("/dash/title_360p.mp4/fragment-2-v1.m4s", ("dash", "segment")),
    ("/mss/title_360p.mp4/Manifest", ("mss", "manifest")),
    ("/mss/title_360p.mp4/QualityLevels(1)/Fragments(audio=0)", ("mss", "segment")),
    ("/hds/title_360p.mp4/manifest.f4m", ("hds", "manifest")),
    ("/hds/title_360p.mp4/frag-v1-a1-Seg1-Frag1", ("hds", "segment")), ("/mp4/title_360p.mp4", ("mp4", "mp4")),
    ("/s/0_abcd1234/99-sig/dash/title_360p.mp4/init-v1.mp4", ("dash", "init")),
    ("/p/101/playManifest/entryId/0_abcd1234/format/applehttp/a.m3u8", ("playmanifest", "other")),
    ("/status", ("other", "other")), ("/crossdomain.xml", ("other", "other")),
    (TITLE + "/playlist.m3u8", ("hls", "other")), (TITLE + "/seg-01.ts", ("hls", "other")),
    ("/hds/title_360p.mp4/frag-v1-a1-Seg2-Frag1", ("hds", "other")), ("/mss/manifest", ("mss", "other")),
    ("/s/0_abcd1234/99-sig/hls/x.mp4/seg-0.ts", ("other", "other")), ("/nonsense/x/y.ts", ("other", "other")),
    ("/live/app/stream/index.m3u8", ("live", "manifest")), ("/live/app/stream/k3x9-0-v-init.mp4", ("live", "init")),
    ("/live/app/stream/k3x9-17.ts", ("live", "segment")), ("/live/app/stream/notes.txt", ("live", "other")),
]


async def test_request_labels_come_from_the_parsed_request(make_client, monkeypatch):
    """Requests through the real app, then /metrics: each response is counted under the label of what the URL
    grammar (or the live grammar) parsed, whatever its status."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    client = await make_client()

    async def requests_by_label() -> Counter:
        response = await client.get("/metrics")
        assert response.status == 200
        counts: Counter = Counter()
        for family in text_string_to_metric_families(await response.text()):
            for s in family.samples:
                if s.name == "gateway_requests_total":
                    counts[(s.labels["protocol"], s.labels["type"])] += s.value
        return counts

    before = await requests_by_label()
    for path, _ in LABELLED:
        (await client.get(path, allow_redirects=False)).release()
    after = await requests_by_label()
    expected = Counter(label for _, label in LABELLED) + Counter({("other", "other"): 1})  # the first scrape
    assert {k: v for k, v in (after - before).items() if v} == expected


@pytest.mark.parametrize("name, kind", [("index.m3u8", "manifest"), ("master.m3u8", "manifest"),
                                        ("manifest.mpd", "manifest"), ("k3x9-17.ts", "segment"),
                                        ("k3x9-0-v-init.mp4", "init"), ("k3x9-0-a-96000.m4s", "segment"),
                                        ("k3x9-0-x-init.mp4", "other"), ("index.m3u8.tmp", "other"),
                                        ("playlist.m3u8", "other"), ("a-init.mp4", "other")])
def test_live_labels_follow_the_live_grammar(name, kind):
    """The names rtmp/live writes (rtmp.live.writer.LIVE_FILE) under /live/<app>/<stream>/, and names it never
    writes."""
    from rtmp.live.writer import LIVE_FILE

    assert bool(LIVE_FILE.fullmatch(name)) == (kind != "other")
    assert live_label(name) == ("live", kind)


@pytest.mark.parametrize("path, label", [
    ("/", ("other", "other")), ("/metrics", ("other", "other")), ("/static/hls.min.js", ("other", "other")),
    ("/hls", ("hls", "other")), ("/hls/%3Cscript%3E/x", ("hls", "other")), ("/p/x", ("playmanifest", "other")),
    ("/s/short", ("other", "other")), ("/live/a", ("live", "other")), ("/<script>/x", ("other", "other")),
    ("", ("other", "other")), ("/mp4?x=1", ("mp4", "other")),
])  # fmt: skip
def test_unparsed_paths_get_bounded_labels(path, label):
    assert fallback_label(path) == label


# --- the live viewer approximation ---------------------------------------------------------------------------------

def test_live_viewers_are_distinct_recent_playlist_clients():
    viewers = LiveViewers(window=30.0)
    viewers.saw("/live/app/cam/index.m3u8", "a", now=100.0)
    viewers.saw("/live/app/cam/index.m3u8", "a", now=104.0)   # the same client polling: still one
    viewers.saw("/live/app/cam/master.m3u8", "b", now=110.0)  # a master names no quality
    viewers.saw("/live/app/cam/720p.m3u8", "b", now=110.0)    # a rendition's media playlist
    viewers.saw("/live/app/cam/manifest.mpd", "c", now=111.0)  # the MPD of the repackaged source
    viewers.saw("/live/app/cam/manifest.mpd", "a", now=111.0)  # a client on both protocols: one source viewer
    viewers.saw("/live/app/cam/abc-1.ts", "d", now=111.0)     # segments do not make a viewer
    viewers.saw("/live/app/other/index.m3u8", "a", now=50.0)  # older than the window at t=120
    by_stream, by_quality = viewers.counts(now=120.0)
    assert by_stream == {("app/cam", "hls"): 2, ("app/cam", "dash"): 2}
    assert by_quality == {("app/cam", "source"): 2, ("app/cam", "720p"): 1}
    by_stream, _ = viewers.counts(now=136.0)  # a's playlist polls (last at 104) are over; b (110), c (111) remain
    assert by_stream == {("app/cam", "hls"): 1, ("app/cam", "dash"): 2}
    assert viewers.counts(now=1000.0) == ({}, {})


# --- one node ------------------------------------------------------------------------------------------------------

def test_counters_move_by_exactly_the_requests_made(node):
    base = node
    before = scrape(base)
    status, master = fetch(base + TITLE + "/master.m3u8")
    assert status == 200
    status, index = fetch(base + TITLE + "/index-v1-a1.m3u8")
    assert status == 200
    segments = [fetch(base + TITLE + "/seg-1-v1-a1.ts") for _ in range(2)]
    assert [s for s, _ in segments] == [200, 200] and segments[0][1] == segments[1][1]
    segment = segments[0][1]
    status, not_found = fetch(base + "/hls/missing.mp4/master.m3u8")
    assert status == 404 and not_found.startswith(b"NOT_FOUND")
    status, head_body = fetch(base + TITLE + "/seg-1-v1-a1.ts", method="HEAD")  # a hit, 0 bytes sent
    assert status == 200 and head_body == b""
    after = scrape(base)

    d = lambda name, **labels: delta(before, after, name, **labels)  # noqa: E731
    assert d("gateway_requests_total", protocol="hls", type="manifest", status="200") == 2
    assert d("gateway_requests_total", protocol="hls", type="segment", status="200") == 3
    assert d("gateway_requests_total", protocol="hls", type="manifest", status="404") == 1
    assert d("gateway_requests_total", protocol="other", type="other", status="200") == 1  # the first scrape
    assert d("gateway_response_bytes_total", protocol="hls", type="manifest") == \
        len(master) + len(index) + len(not_found)
    assert d("gateway_response_bytes_total", protocol="hls", type="segment") == 2 * len(segment)
    assert d("gateway_request_duration_seconds_count", protocol="hls", type="segment") == 3
    assert d("gateway_request_duration_seconds_count", protocol="hls", type="manifest") == 3

    # response cache: master, index, segment built once each; the second GET and the HEAD of the segment are hits
    assert d("gateway_response_cache_misses_total") == 3
    assert d("gateway_response_cache_hits_total") == 2
    assert d("gateway_response_cache_coalesced_total") == 0
    assert value(after, "gateway_response_cache_entries") == 3
    assert value(after, "gateway_response_cache_bytes") == len(master) + len(index) + len(segment)
    # metadata: one moov parse and one media set for the file; the index and the first segment hit the media set,
    # the repeated segment GET and its HEAD are answered by the fast path (gateway/http/fast_path.py), which does not
    # open the media set again (its response cache hit is counted above)
    assert d("gateway_metadata_cache_misses_total", cache="presentation") == 1
    assert d("gateway_metadata_cache_misses_total", cache="media_set") == 1
    assert d("gateway_metadata_cache_hits_total", cache="media_set") == 2

    # stages: one lookup per packaged response; parse once; plan = the media set + the segment's ranges
    expected = {"cache_lookup": 5, "parse": 1, "plan": 2, "read": 1, "mux": 1, "manifest": 2}
    for stage, count in expected.items():
        assert d("gateway_stage_duration_seconds_count", stage=stage) == count, stage
        assert d("gateway_stage_duration_seconds_sum", stage=stage) > 0, stage
        assert value(after, "gateway_stage_duration_seconds_bucket", stage=stage, le="+Inf") == \
            value(after, "gateway_stage_duration_seconds_count", stage=stage)


async def test_single_process_mode_of_an_embedded_app(make_client, monkeypatch):
    """Without PROMETHEUS_MULTIPROC_DIR (an app made by make_app, as in tests and embedders) each app has its own
    registry, with the process metrics; two apps in one process count separately."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    first, second = await make_client(), await make_client()

    async def scrape_app(client) -> dict:
        response = await client.get("/metrics")
        assert response.status == 200
        return {(s.name, frozenset(s.labels.items())): s.value
                for f in text_string_to_metric_families(await response.text()) for s in f.samples}

    before = await scrape_app(first)
    for _ in range(2):
        assert (await first.get(TITLE + "/seg-1-v1-a1.ts")).status == 200
    after, other = await scrape_app(first), await scrape_app(second)
    assert delta(before, after, "gateway_requests_total", protocol="hls", type="segment", status="200") == 2
    assert delta(before, after, "gateway_response_cache_hits_total") == 1
    assert delta(before, after, "gateway_stage_duration_seconds_count", stage="mux") == 1
    assert value(other, "gateway_requests_total", protocol="hls", type="segment", status="200") == 0
    assert value(after, "process_cpu_seconds_total") > 0


def test_metrics_agree_with_status(node):
    """The JSON /status and /metrics read the same cache counters."""
    base = node
    for _ in range(3):
        fetch(base + TITLE + "/seg-2-v1-a1.ts")
    samples = scrape(base)
    with urllib.request.urlopen(base + "/status", timeout=30) as r:
        status = json.load(r)
    cache = status["segment_cache"]
    assert value(samples, "gateway_response_cache_hits_total") == cache["hits"] == 2
    assert value(samples, "gateway_response_cache_misses_total") == cache["misses"] == 1
    assert value(samples, "gateway_response_cache_bytes") == cache["bytes"]
    assert value(samples, "gateway_response_cache_capacity_bytes") == cache["capacity"]


# --- several processes ---------------------------------------------------------------------------------------------

def test_multiprocess_mode_sums_every_process(metrics_store, tmp_path, monkeypatch):
    """Two `gateway serve` processes sharing one PROMETHEUS_MULTIPROC_DIR (what the --workers supervisor sets up):
    a scrape of either one reports the requests of both."""
    shared = tmp_path / "prom"
    shared.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    a, base_a = start_gateway(metrics_store, tmp_path / "a.log")
    try:
        b, base_b = start_gateway(metrics_store, tmp_path / "b.log")
    except BaseException:
        stop(a)
        raise
    try:
        before = scrape(base_a)
        for _ in range(3):
            assert fetch(base_a + TITLE + "/seg-1-v1-a1.ts")[0] == 200
        for _ in range(2):
            assert fetch(base_b + TITLE + "/seg-1-v1-a1.ts")[0] == 200
        after_a, after_b = scrape(base_a), scrape(base_b)
        for after in (after_a, after_b):
            assert delta(before, after, "gateway_requests_total", protocol="hls", type="segment", status="200") == 5
            # each process built the segment once (its own cache) and hit it afterwards
            assert delta(before, after, "gateway_response_cache_misses_total") == 2
            assert delta(before, after, "gateway_response_cache_hits_total") == 3
            assert delta(before, after, "gateway_stage_duration_seconds_count", stage="mux") == 2
        # gauges: livesum over the live processes; both caches hold the same segment
        seg_len = len(fetch(base_a + TITLE + "/seg-1-v1-a1.ts")[1])
        time.sleep(1.5)  # let both processes republish their gauges (every second)
        assert value(scrape(base_b), "gateway_response_cache_bytes") == 2 * seg_len
    finally:
        stop(a)
        stop(b)


def test_workers_are_aggregated(metrics_store, tmp_path, monkeypatch):
    """`gateway serve --workers 2`: the supervisor gives the workers one metrics directory; whichever worker answers
    the scrape reports the requests of both (each request on a new connection: the kernel spreads them)."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    proc, base = start_gateway(metrics_store, tmp_path / "workers.log", "--workers", "2")
    try:
        pids: Counter = Counter()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:  # until both workers have answered something
            pids[json.loads(fetch(base + "/status/dashboard")[1])["pid"]] += 1
        assert len(pids) == 2, f"only one worker answered: {pids}"
        before = scrape(base)
        for _ in range(20):
            assert fetch(base + TITLE + "/seg-1-v1-a1.ts")[0] == 200
        after = scrape(base)
        assert delta(before, after, "gateway_requests_total", protocol="hls", type="segment", status="200") == 20
        assert delta(before, after, "gateway_requests_total", protocol="other", type="other", status="200") == 1
        built = delta(before, after, "gateway_response_cache_misses_total")
        assert 1 <= built <= 2  # once per worker that got one of them
        assert delta(before, after, "gateway_response_cache_hits_total") == 20 - built
    finally:
        stop(proc)


def test_counts_survive_a_reload(metrics_store, tmp_path, monkeypatch):
    """SIGHUP makes a new app generation in the same worker, which inherits the running caches: the counters go on
    from where they were (no double count of the carried cache counters, no counter going backwards), and the
    stage timings keep reaching the same metrics."""
    import signal

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    log = tmp_path / "reload.log"
    proc, base = start_gateway(metrics_store, log)
    try:
        for _ in range(3):
            assert fetch(base + TITLE + "/seg-1-v1-a1.ts")[0] == 200
        before = scrape(base)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "configuration reloaded" not in log.read_text(errors="replace").split("SIGHUP", 1)[-1]:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        for _ in range(2):
            assert fetch(base + TITLE + "/seg-1-v1-a1.ts")[0] == 200
        after = scrape(base)
        assert delta(before, after, "gateway_requests_total", protocol="hls", type="segment", status="200") == 2
        assert delta(before, after, "gateway_response_cache_hits_total") == 2
        assert delta(before, after, "gateway_response_cache_misses_total") == 0
        # the new generation opens the media set once (a hit of the carried metadata cache), then answers the same
        # plain request from its fast path (gateway/http/fast_path.py)
        assert delta(before, after, "gateway_metadata_cache_hits_total", cache="media_set") == 1
        went_back = {k: (before[k], after.get(k, 0.0)) for k in before
                     if k[0].endswith(("_total", "_count")) and after.get(k, 0.0) < before[k]}
        assert not went_back
        # the carried cache times its lookups into the same metrics, and the new generation's packaging its stages:
        # a segment not built yet is read and muxed from the carried metadata (no second parse)
        assert delta(before, after, "gateway_stage_duration_seconds_count", stage="cache_lookup") == 2
        assert fetch(base + TITLE + "/seg-2-v1-a1.ts")[0] == 200
        later = scrape(base)
        assert delta(after, later, "gateway_stage_duration_seconds_count", stage="cache_lookup") == 1
        assert delta(after, later, "gateway_stage_duration_seconds_count", stage="mux") == 1
        assert delta(after, later, "gateway_stage_duration_seconds_count", stage="read") == 1
        assert delta(after, later, "gateway_stage_duration_seconds_count", stage="parse") == 0
        assert delta(after, later, "gateway_response_cache_misses_total") == 1
    finally:
        stop(proc)


# --- live: RTMP publisher and players -------------------------------------------------------------------------------

def test_rtmp_viewers_and_publishers(metrics_store, tmp_path, monkeypatch):
    """A real ffmpeg publisher and two ffmpeg RTMP players: one live stream, one publisher, two viewers."""
    require_executable("ffmpeg")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    rtmp_port = free_port()
    proc, base = start_gateway(metrics_store, tmp_path / "rtmp.log", "--rtmp-port", str(rtmp_port))
    url = f"rtmp://127.0.0.1:{rtmp_port}/live/metrics_test"
    ffmpeg = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
    clients: list[subprocess.Popen] = []
    try:
        source = str(fixture_path("title_360p.mp4"))
        clients.append(subprocess.Popen(ffmpeg + ["-re", "-stream_loop", "-1", "-i", source, "-c", "copy", "-f", "flv",
                                                  url], stderr=subprocess.DEVNULL))
        wait_for(base, lambda s: value(s, "gateway_live_publishers") == 1, "a publisher")
        for _ in range(2):
            clients.append(subprocess.Popen(ffmpeg + ["-i", url, "-c", "copy", "-f", "null", "-"],
                                            stderr=subprocess.DEVNULL))
        labels = {"stream": "live/metrics_test"}
        samples = wait_for(base, lambda s: value(s, "gateway_live_viewers", protocol="rtmp", **labels) == 2,
                           "two RTMP viewers")
        assert value(samples, "gateway_live_streams") == 1
        assert value(samples, "gateway_live_quality_viewers", quality="source", **labels) == 2
        assert value(samples, "gateway_rtmp_connections") == 3

        # HTTP viewers: distinct clients (address + user agent) polling the live playlists
        live = f"{base}/live/live/metrics_test"
        deadline = time.monotonic() + 30
        while fetch(live + "/index.m3u8")[0] != 200:  # the first segment is written ~2 s after the publish
            assert time.monotonic() < deadline, "the live packager wrote no playlist"
            time.sleep(0.2)
        # (a low-latency playlist comes with the first part; the MPD with the first segment: asked by its player)
        while fetch(live + "/manifest.mpd", headers={"User-Agent": "player-c"})[0] != 200:
            assert time.monotonic() < deadline, "the live packager wrote no MPD"
            time.sleep(0.2)
        for agent, name in (("player-a", "index.m3u8"), ("player-a", "index.m3u8"), ("player-b", "master.m3u8"),
                            ("player-b", "index.m3u8"), ("player-c", "manifest.mpd")):
            assert fetch(f"{live}/{name}", headers={"User-Agent": agent})[0] == 200
        samples = wait_for(base, lambda s: value(s, "gateway_live_viewers", protocol="dash", **labels) == 1,
                           "a DASH viewer")
        # the polling loop above was one more client (urllib's own user agent)
        assert value(samples, "gateway_live_viewers", protocol="hls", **labels) == 3
        assert value(samples, "gateway_live_quality_viewers", quality="source", **labels) == 2 + 3 + 1
        for player in clients[1:]:
            player.terminate()
            player.wait(10)
        wait_for(base, lambda s: value(s, "gateway_live_viewers", protocol="rtmp", **labels) == 0, "no viewer left")
    finally:
        for c in clients:
            c.kill()
            c.wait(10)
        stop(proc)


def test_transcode_cpu_per_rendition(metrics_store, tmp_path, monkeypatch):
    """A published stream with a transcoded ladder: the CPU its process spends decoding and on each rendition is a
    gauge per (stream, rendition), back to 0 (or gone) when the publish ends."""
    require_executable("ffmpeg")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    rtmp_port = free_port()
    config = tmp_path / "rtmp.toml"
    config.write_text('[applications.tv]\ntranscode = ["144p@100k"]\nlive = false\n')
    proc, base = start_gateway(metrics_store, tmp_path / "ladder.log", "--rtmp-port", str(rtmp_port),
                               "--rtmp-config", str(config))
    publisher = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i",
                                  str(fixture_path("title_180p.mp4")), "-t", "8", "-c", "copy", "-f", "flv",
                                  f"rtmp://127.0.0.1:{rtmp_port}/tv/cam"], stderr=subprocess.DEVNULL)
    try:
        labels = {"stream": "tv/cam"}
        samples = wait_for(base, lambda s: value(s, "gateway_transcode_cpu_share", rendition="144p", **labels) > 0,
                           "the rendition's CPU share")
        assert 0 < value(samples, "gateway_transcode_cpu_share", rendition="decode", **labels) < 1
        assert value(samples, "gateway_transcode_cpu_share", rendition="144p", **labels) < 1    # ~3 % of a core
        # the status page's live table shows the same per stream (its JSON; the page renders it as "144p: 3%")
        with urllib.request.urlopen(base + "/status/dashboard", timeout=10) as r:
            (row,) = [x for x in json.loads(r.read())["live"] if x["stream"] == "tv/cam"]
        assert set(row["transcode"]) == {"decode", "144p"} and 0 < row["transcode"]["144p"] < 1
        publisher.wait(30)
        wait_for(base, lambda s: value(s, "gateway_transcode_cpu_share", rendition="144p", **labels) == 0,
                 "the series to go with the publish")
    finally:
        publisher.kill()
        stop(proc)


def wait_for(base: str, condition, what: str, timeout: float = 30.0) -> dict:
    """Scrape until ``condition(samples)`` holds (the gauges are republished every second); a hang guard only."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(base)
        if condition(samples):
            return samples
        if time.monotonic() > deadline:
            live = {k: v for k, v in samples.items() if "live" in k[0] or "rtmp" in k[0]}
            raise AssertionError(f"timed out waiting for {what}: {live}")
        time.sleep(0.3)


def test_multiproc_dir_must_exist(metrics_store, tmp_path):
    """A PROMETHEUS_MULTIPROC_DIR that is not a directory is a clear startup error, not a silent single process."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "absent")}
    r = subprocess.run([sys.executable, "-m", "gateway", "serve", "--store", str(metrics_store), "--port",
                        str(free_port())], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "PROMETHEUS_MULTIPROC_DIR" in r.stdout + r.stderr and "is not a directory" in r.stdout + r.stderr
