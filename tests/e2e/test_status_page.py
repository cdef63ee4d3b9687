"""The status page (`GET /`) of a real `gateway serve`, in headless Chromium: numbers, test player, screenshot, XSS.

The browser half is tests/e2e/browser/status_page.mjs (playwright-core driving Debian's Chromium). Ground truth is
independent of the page: /status fetched by the test itself, the video element's clock, a decoded PNG, and the DOM
the browser built from the hostile names (an executed payload opens a dialog or adds an element with id xss*).
"""
from __future__ import annotations

import html
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import av
import numpy as np
import pytest

from fixtures.generate import fixture_path
from tests.e2e.browser_player import BROWSER_DIR, CHROMIUM, ensure_node_modules, require_browser
from tests.e2e.conftest import free_port, start_gateway
from tests.needs import require_executable

pytestmark = pytest.mark.browser

MASTER = "/hls/title_360p.mp4/master.m3u8"
# Store file names a hostile uploader could choose (valid on Linux and in the gateway's URL grammar).
HOSTILE_FILES = ("<img src=x onerror=alert(1) id=xss1>.mp4", 'x"><img src=x onerror=alert(2) id=xss2>.mp4',
                 "q'><svg onload=alert(4) id=xss4>.mp4")
HOSTILE_PATH = "/hls/<script id=xss3>alert(3)</script>/master.m3u8"
GAP_NOTICES = {"bufferSeekOverHole"}


def get(url: str) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def status(base: str) -> dict:
    code, body, _ = get(base + "/status")
    assert code == 200
    return json.loads(body)


def drive(base: str, *args: str, timeout: float = 40.0, script: str = "status_page.mjs") -> dict:
    """Run ``script`` (status_page.mjs, status_dashboard.mjs) against the node; its JSON report."""
    cmd = ["node", str(BROWSER_DIR / script), "--url", base + "/", "--timeout", str(timeout),
           "--chromium", CHROMIUM, *args]
    proc = subprocess.run(cmd, cwd=BROWSER_DIR, capture_output=True, text=True, timeout=timeout + 60,
                          stdin=subprocess.DEVNULL)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"{script} failed: {proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1])


def luma(png: Path) -> np.ndarray:
    """The PNG decoded by FFmpeg (PyAV), as 8-bit gray."""
    with av.open(str(png)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="gray")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    require_browser()
    ensure_node_modules()
    store = tmp_path_factory.mktemp("status-store")
    shutil.copyfile(fixture_path("title_360p.mp4"), store / "title_360p.mp4")
    for name in HOSTILE_FILES:
        shutil.copyfile(fixture_path("title_360p.mp4"), store / name)
    proc, base = start_gateway(store, store.parent / "status-gateway.log")
    yield base
    proc.terminate()
    proc.wait(15)


def test_dashboard_numbers_player_and_screenshot(node, tmp_path):
    base = node
    for path in (MASTER, "/hls/title_360p.mp4/index-v1-a1.m3u8", "/hls/title_360p.mp4/seg-1-v1-a1.ts",
                 "/hls/title_360p.mp4/seg-1-v1-a1.ts"):
        assert get(base + path)[0] == 200
    assert get(base + quote(HOSTILE_PATH))[0] == 404
    before = status(base)
    page_png, video_png = tmp_path / "status-page.png", tmp_path / "video.png"
    report = drive(base, "--src", MASTER, "--kind", "auto", "--seconds", "2", "--screenshot", str(page_png),
                   "--video-shot", str(video_png))
    after = status(base)

    # the player: hls.js from /static/ played the master playlist, the clock advanced, no player error at all
    assert report["ok"], report
    playback = report["playback"]
    assert playback["player"]["kind"] == "hls" and playback["player"]["url"] == base + MASTER
    assert playback["currentTime"] >= 2
    errors = playback["player"]["errors"]
    # hls.js may note that it skipped the start gap of a TS stream (bufferSeekOverHole, never fatal); anything else
    # (network, parsing, decoding) fails the test
    assert [e for e in errors if e["fatal"] or e["details"] not in GAP_NOTICES] == [], errors
    assert (playback["videoWidth"], playback["videoHeight"]) == (640, 360)
    assert not report["pageErrors"] and not report["dialogs"], report

    # the numbers shown are those of /status (the page's own requests never touch the media caches)
    shown = {k: v["value"] for k, v in report["dashboard"]["shown"].items()}
    cache, meta = before["segment_cache"], before["metadata_cache"]
    for key in ("hits", "misses", "coalesced", "evictions", "entries", "bytes", "capacity"):
        assert int(shown[f"cache-{key}"]) == cache[key], key
    assert (cache["hits"], cache["misses"]) == (1, 3)
    assert float(shown["cache-hit-ratio"]) == pytest.approx(1 / 4)
    assert report["dashboard"]["shown"]["cache-hit-ratio"]["text"] == "25.0 %"
    for key in ("hits", "misses", "entries"):
        assert int(shown[f"meta-{key}"]) == meta[key], key
    assert before["requests"]["2xx"] <= int(shown["req-2xx"]) <= after["requests"]["2xx"]
    assert int(shown["req-4xx"]) == before["requests"]["4xx"] == 1
    assert after["segment_cache"]["misses"] > cache["misses"]  # the player fetched more segments

    # the hostile request path is in the recent errors as text
    rows = report["dashboard"]["errorRows"]
    assert [r[1:3] for r in rows] == [["404", "GET " + HOSTILE_PATH]]
    # the hostile file names are quick links, as text; no payload ran, no element was injected
    quick = report["dashboard"]["quickLinks"]
    for name in HOSTILE_FILES:
        assert any(link.startswith(name) for link in quick), (name, quick)
    assert report["dashboard"]["injected"] == 0 and report["dashboard"]["images"] == report["dashboard"]["svgs"] == 0
    assert report["dashboard"]["scripts"] == ["/static/status.js?v=" + quote(before["version"])]

    # the screenshots are real images: the page at the viewport's width, and a video frame that is not black
    page = luma(page_png)
    assert page.shape[1] == 1280 and page.shape[0] >= 900
    assert page.std() > 20 and len(np.unique(page)) > 50
    frame = luma(video_png)
    assert frame.shape[0] > 100 and frame.shape[1] > 100
    assert frame.mean() > 16 and frame.std() > 20, (frame.mean(), frame.std())


def test_quick_link_plays_dash(node):
    """A click on a store file's DASH link plays its MPD with dash.js, also served by the gateway."""
    report = drive(node, "--click", 'button.quick[data-src="/dash/title_360p.mp4/manifest.mpd"]', "--seconds", "2")
    assert report["ok"], report
    player = report["playback"]["player"]
    assert player["kind"] == "dash" and player["url"] == node + "/dash/title_360p.mp4/manifest.mpd"
    assert player["errors"] == []
    assert not report["dialogs"] and not report["pageErrors"]


def test_player_refuses_script_urls(node):
    report = drive(node, "--src", "javascript:alert(5)", "--seconds", "1", timeout=20)
    assert not report["ok"] and report["reason"] == "fatal player error"
    assert report["playback"]["player"]["errors"][0]["message"] == "only http(s) URLs can be played"
    assert not report["dialogs"]


def test_page_source_escapes_every_name(node):
    code, body, headers = get(node + "/")
    page = body.decode()
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    for name in HOSTILE_FILES:
        assert name not in page  # never raw
        assert html.escape(name) in page  # shown as text
    assert "<img" not in page and "<svg" not in page
    # the vendored players are served by the gateway itself, with their licenses
    for name in ("hls.min.js", "dash.all.min.js", "hls.js.LICENSE.txt", "dashjs.LICENSE.txt"):
        code, _, headers = get(f"{node}/static/{name}")
        assert code == 200, name
    assert get(node + "/static/..%2Fapp.py")[0] == 404
    assert get(node + "/static/README.md")[0] == 200


def test_live_streams_with_a_hostile_stream_name(tmp_path):
    """An RTMP publisher chooses its stream name: the live table shows it as text, with its RTMP player counted."""
    require_browser()
    require_executable("ffmpeg")
    store = tmp_path / "store"
    store.mkdir()
    rtmp_port = free_port()
    proc, base = start_gateway(store, tmp_path / "live-gateway.log", "--rtmp-port", str(rtmp_port))
    name = "<svg/onload=alert(6)/id=xss6>"
    url = f"rtmp://127.0.0.1:{rtmp_port}/live/{name}"
    ffmpeg = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
    clients = []
    try:
        source = str(fixture_path("title_360p.mp4"))
        clients.append(subprocess.Popen(ffmpeg + ["-re", "-stream_loop", "-1", "-i", source, "-c", "copy", "-f", "flv",
                                                  url], stderr=subprocess.DEVNULL))

        def wait_until(condition) -> None:  # hang guard only
            deadline = time.monotonic() + 30
            while not condition(json.loads(get(base + "/status/dashboard")[1])["live"]):
                assert time.monotonic() < deadline
                time.sleep(0.2)

        wait_until(lambda live: live and live[0]["publishing"])  # a player that comes first is refused
        clients.append(subprocess.Popen(ffmpeg + ["-i", url, "-c", "copy", "-f", "null", "-"],
                                        stderr=subprocess.DEVNULL))
        wait_until(lambda live: live[0]["rtmp_players"] == 1)
        report = drive(base)
        assert report["ok"], report
        rows = report["dashboard"]["liveRows"]
        assert [r[:3] for r in rows] == [["live/" + name, "yes", "1"]]
        assert rows[0][5] == "source: 1"
        assert not report["dialogs"] and not report["pageErrors"]
        assert report["dashboard"]["svgs"] == report["dashboard"]["injected"] == 0
    finally:
        for c in clients:
            c.kill()
            c.wait(10)
        proc.terminate()
        proc.wait(15)
