"""The status page's charts and tables (issue 17) on a real `gateway serve` with RTMP ingest, in headless Chromium.

Known traffic (HLS manifests and segments, 404s with a query string, a real ffmpeg RTMP publish and one ffmpeg RTMP
player), then the page (tests/e2e/browser/status_dashboard.mjs) is compared with what /status/dashboard and /metrics
say, fetched by the test itself: request counts, the latency table, busiest entries, recent errors with their URLs,
the live stream's row (publisher, encoder, codecs, 320x180), drawn charts (pixels read back from each canvas), a
broken store file flagged instead of offered for playback, and a non-blank screenshot.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse

import pytest

from fixtures.generate import fixture_path
from tests.e2e.browser_player import ensure_node_modules, require_browser
from tests.e2e.conftest import free_port, start_gateway
from tests.e2e.test_status_page import drive as drive_page, get, luma
from tests.needs import require_executable

pytestmark = pytest.mark.browser  # ~11 s here (ffmpeg publish + Chromium): not "slow"

TITLE = "title_180p.mp4"  # 320x180, 12 s: 3 segments of 4 s (start_gateway's --segment-duration)
SEGMENTS = [f"/hls/{TITLE}/seg-{i}-v1-a1.ts" for i in (1, 2, 3)]
HLS_OK = [f"/hls/{TITLE}/master.m3u8", f"/hls/{TITLE}/index-v1-a1.m3u8", *SEGMENTS, *SEGMENTS]  # 2nd round: hits
MISSING = [f"/hls/missing-{i}.mp4/master.m3u8" for i in range(3)]  # asked with ?token=secret: never shown
STREAM = "live/cam"
CMCD_MANIFEST, CMCD_SEGMENT = 'ot=m,sid="status-1"', 'br=400,bl=8000,ot=av,sid="status-1"'
SENT: list[int] = []  # body bytes of the HLS_OK requests


def dashboard(base: str) -> dict:
    code, body, _ = get(base + "/status/dashboard")
    assert code == 200
    return json.loads(body)


def metric_sum(base: str, name: str, **labels: str) -> float:
    """The sum of a /metrics family's samples whose labels include ``labels``."""
    code, body, _ = get(base + "/metrics")
    assert code == 200
    total = 0.0
    for line in body.decode().splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def drive(base: str, *args: str, timeout: float = 40.0) -> dict:
    report = drive_page(base, *args, timeout=timeout, script="status_dashboard.mjs")
    assert report["ok"], report
    assert not report["pageErrors"] and not report["dialogs"], report
    return report["page"]


def wait_for(what, condition, timeout: float = 40.0):
    deadline = time.monotonic() + timeout  # a hang guard only
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    require_browser()
    ensure_node_modules()
    require_executable("ffmpeg")
    store = tmp_path_factory.mktemp("dashboard-store")
    shutil.copyfile(fixture_path(TITLE), store / TITLE)
    (store / "broken.mp4").write_bytes(b"\x00\x00\x00\x10ftypisom\x00\x00\x00\x00" + b"\xff" * 4000)  # no moov
    rtmp_port = free_port()
    proc, base = start_gateway(store, store.parent / "dashboard-gateway.log", "--rtmp-port", str(rtmp_port))
    ffmpeg = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
    url = f"rtmp://127.0.0.1:{rtmp_port}/{STREAM}"
    clients = []
    try:
        clients.append(subprocess.Popen(ffmpeg + ["-re", "-stream_loop", "-1", "-i", str(fixture_path(TITLE)),
                                                  "-c", "copy", "-f", "flv", url], stderr=subprocess.DEVNULL))
        wait_for("the publish", lambda: [s for s in dashboard(base)["live"] if s["publishing"]])
        clients.append(subprocess.Popen(ffmpeg + ["-i", url, "-c", "copy", "-f", "null", "-"],
                                        stderr=subprocess.DEVNULL))
        wait_for("the player", lambda: dashboard(base)["live"][0]["rtmp_players"] == 1)
        for path in HLS_OK:  # one player with CMCD: the audience section's session (docs/analytics.md)
            cmcd = CMCD_SEGMENT if "/seg-" in path else CMCD_MANIFEST
            code, body, _ = get(base + path + "?CMCD=" + urllib.parse.quote(cmcd))
            assert code == 200, path
            SENT.append(len(body))
        for path in MISSING:
            assert get(base + path + "?token=secret")[0] == 404, path
        # a few seconds of ingest history (sampled once a second) for the chart
        wait_for("ingest history", lambda: len(dashboard(base)["live"][0]["ingest"]["bps"]) >= 3)
        yield base
    finally:
        for c in clients:
            c.kill()
            c.wait(10)
        proc.terminate()
        proc.wait(15)


def test_page_matches_dashboard_and_metrics(node, tmp_path):
    base = node
    requests_before = metric_sum(base, "gateway_requests_total")
    png = tmp_path / "dashboard.png"
    page = drive(base, "--polls", "2", "--screenshot", str(png))
    requests_after = metric_sum(base, "gateway_requests_total")
    truth = dashboard(base)  # fetched by the test, after the page's last poll
    used = page["dashboard"]  # the JSON the page drew from

    # requests in the window: what the page shows is its JSON's sum, and /metrics (all requests, single worker)
    # brackets it: the page's own polls keep adding requests while it loads
    shown = {k: v["value"] for k, v in page["shown"].items()}
    assert int(shown["win-requests"]) == sum(used["series"]["requests"])
    assert requests_before <= int(shown["win-requests"]) <= requests_after
    assert int(shown["win-errors"]) == sum(used["series"]["errors"]) == len(MISSING)
    # latency per protocol: the HLS requests are all done, so page, /status/dashboard and /metrics agree exactly
    latency = {row[0]: row for row in page["tables"]["latency"]}
    hls_count = len(HLS_OK) + len(MISSING)
    assert int(latency["hls"][1]) == truth["latency"]["hls"]["count"] == hls_count
    assert metric_sum(base, "gateway_requests_total", protocol="hls") == hls_count
    assert float(latency["hls"][2]) == truth["latency"]["hls"]["p50_ms"] > 0
    assert float(latency["hls"][3]) == truth["latency"]["hls"]["p95_ms"] >= truth["latency"]["hls"]["p50_ms"]
    # busiest entries: the title's HLS entry, every successful request counted
    assert page["tables"]["busiest"][0] == [f"/hls/{TITLE}", str(len(HLS_OK))]
    assert truth["busiest"][0] == {"entry": f"/hls/{TITLE}", "count": len(HLS_OK)}
    # recent errors: the 404s with their URLs (never the query), newest first, with the gateway's error code
    rows = page["tables"]["recent-errors"]
    assert [r[1:3] for r in rows] == [["404", "GET " + p] for p in reversed(MISSING)]
    assert {r[4] for r in rows} == {"NOT_FOUND"} and not any("secret" in c for r in rows for c in r)
    assert [e["url"] for e in truth["errors"]] == list(reversed(MISSING))

    # the live stream: publisher, encoder (onMetaData), codecs, resolution, viewers per protocol, as the JSON says
    (row,) = page["tables"]["live-streams"]
    (live,) = truth["live"]
    assert row[:4] == [STREAM, "yes", "1", "0"] and live["rtmp_players"] == 1
    assert row[7] == live["publisher"] and live["publisher"].startswith("127.0.0.1:")
    assert row[8] == live["encoder"] and live["encoder"].startswith("Lavf")
    assert row[10] == f"{live['video_codec']} + {live['audio_codec']}"
    assert row[11] == "320x180" and (live["width"], live["height"]) == (320, 180)
    assert len(live["ingest"]["bps"]) >= 3 and max(live["ingest"]["bps"]) > 0

    # charts: each drew its series (coloured strokes, not just axes), the ingest chart one line per stream
    charts = page["canvases"]
    for name in ("chart-requests", "chart-egress", "chart-hit-ratio", "chart-ingest"):
        assert charts[name]["colored"] > 20, (name, charts[name])
    assert charts["chart-ingest"]["series"] == 1 and charts["chart-requests"]["max"] >= 1

    # the audience section: one CMCD session on the title, its rendition, bytes and requests, and its charts
    assert page["audienceStream"] == f"file:{TITLE}"
    assert page["tables"]["audience"][0][:2] == [f"file:{TITLE}", "1"]
    (watched,) = [s for s in page["audience"]["streams"] if s["stream"] == f"file:{TITLE}"]
    assert watched["totals"]["sessions"] == 1 and watched["totals"]["bytes"] == sum(SENT)
    assert watched["totals"]["requests"] == len(HLS_OK)
    assert {r for m in watched["minutes"] for r in m["by_rendition"]} == {"400"}
    for name in ("chart-viewers", "chart-quality"):
        assert charts[name]["colored"] > 20, (name, charts[name])
    assert charts["chart-quality"]["series"] == 1

    # the broken store file is flagged and offers no player; the good one offers HLS, DASH and MP4
    links = {link["text"].split()[0]: link for link in page["quickLinks"]}
    assert links["broken.mp4"]["broken"] and links["broken.mp4"]["players"] == 0
    assert "BAD_DATA" in links["broken.mp4"]["text"]
    assert not links[TITLE]["broken"] and links[TITLE]["players"] == 3
    assert "worker 0" in page["header"] and shown["dash-worker"] == "0"  # whose numbers these are

    # the screenshot is a real, non-blank image of the whole page
    image = luma(png)
    assert image.shape[1] == 1280 and image.shape[0] >= 900
    assert image.std() > 20 and len(set(image.ravel().tolist())) > 50
