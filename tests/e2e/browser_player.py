"""Play a manifest in Debian's headless Chromium and report what happened: the browser half of the e2e tests.

Use from a test::

    from tests.e2e.browser_player import play_in_browser, require_browser

    @pytest.mark.browser
    def test_plays(gateway_url):
        require_browser()
        r = play_in_browser(f"{gateway_url}/hls/title/master.m3u8", seconds=3)
        assert r["ok"], r
        assert r["totalVideoFrames"] > 0 and not [e for e in r["errors"] if e["fatal"]]

``play_in_browser`` blocks. From an ``async`` test whose gateway runs in the same event loop (aiohttp's test
server), use ``await aplay_in_browser(...)`` instead, or the gateway could not answer the browser.

How it works: ``player.html`` and the player libraries (``node_modules/<lib>/dist``) are served on a loopback port
by a small threaded static server; ``play.mjs`` (node + playwright-core) starts ``/usr/bin/chromium`` with a fresh
profile, opens ``player.html?src=<manifest>&kind=hls`` and prints one JSON line. The manifest is on another port
(the gateway's), so every request the player makes is cross-origin and needs the gateway's CORS headers, as in
production.

``python -m tests.e2e.browser_player URL [SECONDS]`` plays a URL by hand and prints the JSON.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.needs import in_ci

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Extra time the subprocess gets beyond the playback timeout: browser start, page load, shutdown.
_OVERHEAD_SECONDS = 60.0

_CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".aac": "audio/aac",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".html": "text/html; charset=utf-8",
}


def missing_tools() -> list[str]:
    """What the browser tests need and this machine lacks (npm only matters while node_modules is missing)."""
    missing = []
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(CHROMIUM)
    if shutil.which("node") is None:
        missing.append("node")
    if not _node_modules_current() and shutil.which("npm") is None:
        missing.append("npm")
    return missing


def require_browser() -> None:
    """Skip the calling test when Chromium or node is absent, except in CI (CI set), where that is a failure."""
    import pytest

    missing = missing_tools()
    if not missing:
        return
    message = f"browser tests need {', '.join(missing)} (CI installs them: see .ci/run)"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _node_modules_current() -> bool:
    """Every dependency of package.json is installed at exactly its pinned version."""
    deps = json.loads((BROWSER_DIR / "package.json").read_text())["dependencies"]
    for name, version in deps.items():
        installed = BROWSER_DIR / "node_modules" / name / "package.json"
        try:
            if json.loads(installed.read_text())["version"] != version:
                return False
        except (OSError, ValueError, KeyError):
            return False
    return True


def ensure_node_modules() -> None:
    """Run ``npm ci`` in tests/e2e/browser when node_modules is missing or stale (one process at a time)."""
    if _node_modules_current():
        return
    # The lock lives outside the tree: npm ci removes node_modules, and the repo must stay clean.
    key = hashlib.sha1(str(BROWSER_DIR).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"media-gateway-npm-ci-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _node_modules_current():
            return
        proc = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=BROWSER_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"npm ci failed in {BROWSER_DIR}:\n{proc.stdout}\n{proc.stderr}")


class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    """GET/HEAD of files under ``directory``, restricted to ``allow`` prefixes, optionally with CORS headers."""

    allow: tuple[str, ...] = ("",)
    cors: bool = True

    def __init__(self, *args, allow: tuple[str, ...], cors: bool, **kwargs):
        self.allow, self.cors = allow, cors
        super().__init__(*args, **kwargs)

    def guess_type(self, path):
        return _CONTENT_TYPES.get(Path(path).suffix.lower()) or super().guess_type(path)

    def send_head(self):
        rel = self.path.split("?", 1)[0].lstrip("/")
        if not any(a == "" or rel == a or (a.endswith("/") and rel.startswith(a)) for a in self.allow):
            self.send_error(404)
            return None
        return super().send_head()

    def end_headers(self):
        if self.cors:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Headers", "Range")
            self.send_header("Access-Control-Expose-Headers", "Content-Length, Content-Range")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_OPTIONS(self):
        self.send_response(204 if self.cors else 405)
        if self.cors:
            self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):  # keep test output quiet
        pass


@contextlib.contextmanager
def serve_directory(root: Path | str, *, cors: bool = True, allow: tuple[str, ...] = ("",)) -> Iterator[str]:
    """Serve ``root`` on a free loopback port in a background thread; yields the base URL (no trailing slash).

    ``allow`` lists the paths that may be fetched: an exact file, or a folder ending in "/"; "" allows everything.
    """
    handler = functools.partial(_StaticHandler, directory=str(root), allow=allow, cors=cors)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"static:{root}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def serve_player() -> Iterator[str]:
    """Serve player.html and the player libraries; yields the player page's URL."""
    ensure_node_modules()
    allow = ("player.html", "node_modules/hls.js/dist/", "node_modules/dashjs/dist/", "node_modules/shaka-player/dist/")
    with serve_directory(BROWSER_DIR, cors=False, allow=allow) as base:
        yield f"{base}/player.html"


def run_player(player_url: str, manifest_url: str, *, kind: str = "hls", seconds: float = 3.0,
               timeout: float = 40.0, config: dict | None = None, text: bool = False,
               drm: dict | None = None, screenshot: str | None = None, cmcd: str | None = None,
               cmcd_mode: str = "query", level: int | None = None, throttle: str | None = None,
               network: bool = False) -> dict:
    """Run play.mjs against an already served player page; returns its JSON report."""
    if drm:
        # play.mjs keeps the player URL's query and adds its own parameters to it
        player_url += ("&" if "?" in player_url else "?") + urllib.parse.urlencode({"drm": json.dumps(drm)})
    cmd = ["node", str(BROWSER_DIR / "play.mjs"), "--player", player_url, "--kind", kind,
           "--seconds", str(seconds), "--timeout", str(timeout), "--chromium", CHROMIUM]
    if config:
        cmd += ["--config", json.dumps(config)]
    if text:
        cmd.append("--text")
    if screenshot:
        cmd += ["--screenshot", screenshot]
    if cmcd:
        cmd += ["--cmcd", cmcd, "--cmcd-mode", cmcd_mode]
    if level is not None:
        cmd += ["--level", str(level)]
    if throttle:
        cmd += ["--throttle", throttle]
    if network:
        cmd.append("--network")
    cmd.append(manifest_url)
    # Own session, so that on a hang the whole tree (node and Chromium's processes) can be ended by group id.
    proc = subprocess.Popen(cmd, cwd=BROWSER_DIR, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout + _OVERHEAD_SECONDS)
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                out, err = proc.communicate(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        raise RuntimeError(f"play.mjs did not finish within {timeout + _OVERHEAD_SECONDS} s; stderr:\n{err}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"play.mjs failed (exit {proc.returncode}); stdout:\n{out}\nstderr:\n{err}")
    return json.loads(lines[-1])


def play_in_browser(manifest_url: str, seconds: float = 3.0, timeout: float = 40.0, *, kind: str = "hls",
                    config: dict | None = None, text: bool = False, drm: dict | None = None,
                    picture: bool = False, **traffic) -> dict:
    """Play ``manifest_url`` in headless Chromium until currentTime >= ``seconds``, a fatal error or ``timeout``.

    Returns play.mjs's report: ``ok`` (target reached without a fatal error), ``currentTime``, ``totalVideoFrames``,
    ``droppedVideoFrames``, ``errors`` (player errors, fatal and not, each ``{source, type, details, fatal, ...}``),
    ``levels``, ``audioTracks``, ``duration`` (None while unknown or live) and diagnostics (``reason``, ``support``,
    ``levelInfo``, ``events``, ``console``, ``browserVersion``). It does not assert: the test does.
    ``config`` is merged into the player library's configuration (hls.js ``new Hls(config)``). With ``text``, the
    first subtitle track is turned on and the report has ``subtitleTracks`` (as the player lists them) and
    ``textTracks`` (the <video>'s text tracks with their cues: what a viewer sees).
    ``drm={"clearkey": LICENSE_URL}`` gives every player that W3C ClearKey license server (shaka ``drm.servers``,
    dash.js ``setProtectionData``, hls.js ``emeEnabled`` + ``drmSystems``). Every report has ``drm`` (what EME did:
    ``keySystemRequests`` [{keySystem, schemes, granted}], ``encrypted`` events, ``sessions``, license ``messages``,
    ``keyStatuses``). With ``picture``, the <video> is paused at the end and screenshotted (the compositor's
    picture: Chromium gives a canvas only black for EME-decrypted video): ``picture`` is that image as an RGB numpy
    array, ``screenshotTime`` the currentTime it shows, ``pictureStats`` its ``lumaMean``, ``lumaVariance`` and
    ``nonBlackFraction`` (BT.601 luma > 24); both None when no frame was ever shown.
    ``traffic`` (CMCD analytics, issue 18): ``cmcd=SID`` turns the player's CMCD on with that session id,
    ``cmcd_mode`` "query" (default) or "header"; ``level=N`` makes it play only its N-th lowest video rendition (the
    report's ``playing`` is the rendition the player says it plays); ``throttle="PATH_PART:MS"`` holds the first
    request whose path contains PATH_PART until playback started plus MS ms (``throttle`` in the report);
    ``network=True`` (implied by the others) adds ``network``: ``requests`` [{path, method, status, bytes, cmcd:
    {mode, text, values} or None, fromCache?}], ``bytesByPath``, ``failed``, ``blocked`` (see play.mjs).
    """
    with serve_player() as player_url, tempfile.TemporaryDirectory(prefix="gateway-e2e-shot-") as tmp:
        shot = os.path.join(tmp, "video.png") if picture else None
        report = run_player(player_url, manifest_url, kind=kind, seconds=seconds, timeout=timeout, config=config,
                            text=text, drm=drm, screenshot=shot, **traffic)
        if picture:
            report["picture"] = _read_png(shot) if report.get("screenshot") else None
            report["pictureStats"] = picture_stats(report["picture"])
        return report


def _read_png(path: str):
    import av  # a test dependency; only pictures need it

    with av.open(path) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def picture_stats(rgb) -> dict | None:
    """Luma mean, variance and non-black fraction of an RGB image: a blank or black picture has variance ~0."""
    import numpy as np

    if rgb is None:
        return None
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return {"width": rgb.shape[1], "height": rgb.shape[0], "lumaMean": float(luma.mean()),
            "lumaVariance": float(luma.var()), "nonBlackFraction": float((luma > 24).mean())}


def plays_at_once(plays: dict, workers: int = 2) -> dict:
    """``play_in_browser(**kwargs)`` of each ``{key: kwargs}``, ``workers`` at a time (a play mostly waits for the
    media's own real time): ``{key: Future}``, all done; a test takes its own with ``.result()``, which raises what
    that play raised and nothing of the others."""
    with ThreadPoolExecutor(workers) as pool:
        return {key: pool.submit(play_in_browser, **kwargs) for key, kwargs in plays.items()}


async def aplay_in_browser(manifest_url: str, seconds: float = 3.0, timeout: float = 40.0, **kwargs) -> dict:
    """``play_in_browser`` for async tests: runs in a worker thread so the event loop (the gateway) keeps serving."""
    return await asyncio.to_thread(play_in_browser, manifest_url, seconds, timeout, **kwargs)


def fatal_errors(report: dict) -> list[dict]:
    return [e for e in report.get("errors", []) if e.get("fatal")]


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m tests.e2e.browser_player MANIFEST_URL [SECONDS [TIMEOUT]]")
    args = [float(a) for a in sys.argv[2:4]]
    print(json.dumps(play_in_browser(sys.argv[1], *args), indent=2))
