"""`gateway bench live`: glass-to-glass latency of live RTMP, HLS, LL-HLS and DASH players, and the transcoded
ladder's real-time factor (issue 15).

A real `gateway serve` (temporary store, RTMP ingest, low-latency HLS on, optionally ``transcode``) receives the clock
source of gateway/tools/clock_source.py: every picture carries its capture time as a bar code, encoded in real time
(libx264 zerolatency, 1-s GOP, AAC) and sent as FLV over RTMP by a child process. Each player reads the time back from
the pictures it shows, on the same machine clock: latency = shown − captured, capture to display.
- RTMP: PyAV reading rtmp://.../live/clock (low-delay demux, decode time per picture), for the whole run, plus one per
  rendition of the ladder (the transcode's own latency, and its real-time factor: burnt media seconds advanced per
  wall second).
- HLS (hls.js), LL-HLS (hls.js lowLatencyMode) and DASH (dash.js) in headless Chromium, one after the other, each for
  an equal share of the run plus JOIN_S: requestVideoFrameCallback reads each shown picture (tests/e2e/browser/player.html
  ``clock=1``). gateway/ may not import tests/, so these rows run tests/bench/live_browser.py as a script when the
  source checkout has it (else they say skipped).
The first WARMUP_S seconds of each player (joining, catching up with the live edge) are left out of its figures.
The ladder: each rendition's share of one core from /status (rtmp.ladder CPU seconds, polled every 2 s over the run),
the real-time factor that CPU allows (1 / share, one core each), and whether it kept up (still running at the end,
never shed, output advancing with the source). Nothing here asserts; the issue's targets are printed next to the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from .load import terminate
from .measure import free_port

WARMUP_S = 5.0
JOIN_S = 10.0       # added to each browser row: Chromium's start, the player's join, then WARMUP_S
SOURCES = {"720p30": (1280, 720, 30, 3_000_000), "1080p30": (1920, 1080, 30, 5_000_000),
           "480p30": (854, 480, 30, 1_500_000), "360p30": (640, 360, 30, 800_000)}
BROWSER_ROWS = {  # row: (player kind, manifest, player configuration)
    "hls": ("hls", "index.m3u8", {"lowLatencyMode": False}),
    "ll_hls": ("hls", "index.m3u8", {"lowLatencyMode": True}),
    "dash": ("dash", "manifest.mpd", None),
}
TARGETS = {"ll_hls": "issue 15: p95 < 2.5 s with a 1-s GOP"}
REPO = Path(__file__).resolve().parents[2]
BROWSER_SCRIPT = REPO / "tests" / "bench" / "live_browser.py"
STREAM = "live/clock"


def latency_figures(samples: list, warmup_s: float = WARMUP_S) -> dict:
    """p50/p95/max latency (s) of [shown ms, burnt ms] pairs after the first ``warmup_s`` of them, and the media
    rate: burnt seconds advanced per shown second (1.0 when the stream keeps up with real time)."""
    s = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    s = s[s[:, 0] >= s[0, 0] + warmup_s * 1000] if len(s) else s
    if len(s) < 2:
        return {"pictures": int(len(s))}
    latency = (s[:, 0] - s[:, 1]) / 1000
    wall, media = s[-1, 0] - s[0, 0], s[-1, 1] - s[0, 1]
    return {"pictures": int(len(s)), "seconds": round(float(wall) / 1000, 1),
            "p50_s": round(float(np.percentile(latency, 50)), 3), "p95_s": round(float(np.percentile(latency, 95)), 3),
            "max_s": round(float(latency.max()), 3), "min_s": round(float(latency.min()), 3),
            "media_rate": round(float(media / wall), 4) if wall > 0 else None}


class Gateway:
    """`gateway serve` with RTMP ingest and a config giving the default application low latency (+ transcode)."""

    def __init__(self, workdir: Path, transcode: tuple[str, ...]) -> None:
        store, config = workdir / "store", workdir / "gateway.toml"
        store.mkdir()
        config.write_text("[rtmp.default]\nlive = true\nlow_latency = true\n"
                          f"transcode = {json.dumps(list(transcode))}\n")
        self.http_port, self.rtmp_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.log = open(workdir / "gateway.log", "wb")   # a file, not a pipe: the server never blocks on it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(self.http_port),
             "--rtmp-port", str(self.rtmp_port), "--store", str(store), "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        wait_for(lambda: self.status() is not None, 60, "gateway serve did not answer /status")

    def status(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"{self.base}/status", timeout=10) as r:
                return json.load(r)
        except OSError:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway serve ended ({self.proc.returncode})") from None
            return None

    def segments(self, stream: str) -> int:
        try:
            with urllib.request.urlopen(f"{self.base}/live/{stream}/index.m3u8", timeout=10) as r:
                return r.read().decode().count("#EXTINF")
        except OSError:
            return 0

    def close(self) -> None:
        terminate(self.proc)
        self.log.close()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(what)
        time.sleep(0.2)


def clock_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gateway.tools.clock_source", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def json_line(proc: subprocess.Popen, timeout: float) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err = f"no answer within {timeout:g} s; {err}"
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"exit {proc.returncode}: {err.strip()[-600:]}"}
    return json.loads(lines[-1])


def browser_row(base: str, row: str, seconds: float) -> dict:
    kind, manifest, config = BROWSER_ROWS[row]
    if not BROWSER_SCRIPT.is_file():
        return {"skipped": "no browser harness (tests/bench/live_browser.py: run from a source checkout)"}
    if not Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).is_file():
        return {"skipped": "no chromium"}
    cmd = [sys.executable, "-m", "tests.bench.live_browser", "--kind", kind, "--seconds", str(seconds),
           f"{base}/live/{STREAM}/{manifest}"] + (["--config", json.dumps(config)] if config else [])
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    report = json_line(proc, seconds + 180)
    if "error" in report or "skipped" in report:
        return report
    clock = report.get("clock") or {}
    figures = latency_figures(clock.get("samples") or [])
    figures.update(unreadable=clock.get("unreadable", 0), frames_shown=clock.get("frames", 0),
                   heights=clock.get("heights", []), dropped=report.get("droppedVideoFrames", 0),
                   player_errors=[f"{e.get('type')}/{e.get('details')}{' (fatal)' if e.get('fatal') else ''}"
                                  for e in report.get("errors") or []][:10])
    if report.get("latency"):   # the player's own estimate (hls.latency, dash.js getCurrentLiveLatency)
        figures["player_latency_p50_s"] = round(float(np.percentile(report["latency"], 50)), 3)
    return figures


def ladder_cpu(status: dict | None) -> dict:
    return ((status or {}).get("rtmp") or {}).get("ladder", {}).get(STREAM) or {}


class LadderWatch(threading.Thread):
    """Polls /status every 2 s: the ladder's stats vanish with its process (all renditions shed, or a crash), so
    the figures come from the last poll that saw it, and every failure seen on the way is kept."""

    def __init__(self, gw: Gateway) -> None:
        super().__init__(name="ladder-watch", daemon=True)
        self.gw, self.done = gw, threading.Event()
        self.first = self.last = (time.monotonic(), ladder_cpu(gw.status()))
        self.failed: dict = dict(self.first[1].get("failed", {}))
        self.max_backlog_ms = 0

    def run(self) -> None:
        while not self.done.wait(2.0):
            self.poll()

    def poll(self) -> None:
        try:
            stats = ladder_cpu(self.gw.status())
        except RuntimeError:
            return
        if stats:
            self.last = (time.monotonic(), stats)
            self.failed.update(stats.get("failed", {}))
            self.max_backlog_ms = max(self.max_backlog_ms, stats.get("backlog_ms") or 0)

    def stop(self) -> tuple[float, bool]:
        """(seconds between the first and the last poll that saw the ladder, whether it was there at the end)."""
        self.done.set()
        self.join()
        end = time.monotonic()
        self.poll()
        return self.last[0] - self.first[0], self.last[0] >= end


def run(seconds: float, source: str, transcode: tuple[str, ...], rows: tuple[str, ...], preset: str) -> dict:
    width, height, fps, bitrate = SOURCES[source]
    result: dict = {"source": {"size": f"{width}x{height}", "fps": fps, "gop_s": 1.0, "bitrate": bitrate,
                               "preset": preset}, "seconds": seconds, "warmup_s": WARMUP_S, "players": {}}
    with tempfile.TemporaryDirectory(prefix="gateway-bench-live-") as tmp:
        gw = Gateway(Path(tmp), transcode)
        publisher, readers = None, {}
        try:
            rtmp = f"rtmp://127.0.0.1:{gw.rtmp_port}/{STREAM}"
            # long enough for the whole run; ended by SIGTERM once the players are done
            publisher = clock_process("publish", rtmp, "--size", f"{width}x{height}", "--fps", str(fps),
                                      "--bitrate", str(bitrate), "--preset", preset,
                                      "--seconds", str(seconds + JOIN_S * len(rows) + 120))
            renditions = [r.split("@")[0] for r in transcode]
            wait_for(lambda: gw.segments(STREAM) >= 2 and all(gw.segments(f"{STREAM}_{r}") >= 1 for r in renditions),
                     60 + 30 * len(renditions), "the live playlists did not fill (see the gateway log)")
            # browsers one after the other (each its share of the run plus JOIN_S), RTMP readers all along
            share = seconds / max(len(rows), 1)
            total = seconds + JOIN_S * len(rows)
            readers["rtmp"] = clock_process("play", rtmp, "--seconds", str(total))
            for r in renditions:
                readers[f"rtmp_{r}"] = clock_process("play", f"{rtmp}_{r}", "--seconds", str(total))
            watch = LadderWatch(gw)
            watch.start()
            for row in rows:
                result["players"][row] = browser_row(gw.base, row, share + JOIN_S)
            for name, proc in readers.items():
                report = json_line(proc, total + 60)
                figures = latency_figures(report.get("samples") or []) if "error" not in report else report
                figures.update({k: report[k] for k in ("unreadable", "height") if k in report})
                result["players"][name] = figures
            window, present = watch.stop()
            if transcode:
                result["ladder"] = ladder_figures(watch, window, present, renditions, result["players"])
        finally:
            if publisher is not None:
                publisher.terminate()
                result["publisher"] = json_line(publisher, 60)
            for proc in readers.values():    # after an error: no reader outlives the run
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            gw.close()
            log = (Path(tmp) / "gateway.log").read_text(errors="replace").splitlines()
            result["gateway_log"] = [line for line in log if " WARNING " in line or " ERROR " in line][-20:]
    return result


def ladder_figures(watch: LadderWatch, window: float, present: bool, renditions: list[str], players: dict) -> dict:
    """Per rendition: share of one core over the window the ladder ran in (CPU seconds from /status), the real-time
    factor that allows on one core (1 / share; decoding, shared by all, is its own row), the output's media rate as
    its RTMP reader saw it, and kept_up: still running at the end, never shed or failed, output advancing with the
    source."""
    before, last = watch.first[1].get("cpu_seconds", {}), watch.last[1]
    after = last.get("cpu_seconds", {})
    out = {"wall_s": round(window, 1), "ladder_at_end": present, "failed": watch.failed,
           "max_backlog_ms": watch.max_backlog_ms, "renditions": {}}
    for name in sorted(set(after) | set(renditions)):
        used = after.get(name, 0.0) - before.get(name, 0.0)
        row = {"cpu_share": round(used / window, 3) if window > 0 else None,
               "cpu_rtf": round(window / used, 2) if used > 0 else None}
        if name in renditions:
            rate = players.get(f"rtmp_{name}", {}).get("media_rate")
            row.update(media_rate=rate, kept_up=bool(present and name in last.get("renditions", [])
                                                     and name not in watch.failed and rate is not None
                                                     and rate >= 0.98))
        out["renditions"][name] = row
    total = sum(r["cpu_share"] or 0 for r in out["renditions"].values())
    out["process_cpu_share"] = round(total, 3)
    out["process_rtf"] = round(1 / total, 2) if total > 0 else None   # the whole ladder process on one core
    out["all_kept_up"] = all(out["renditions"].get(r, {}).get("kept_up") for r in renditions)
    return out


def render(result: dict) -> str:
    src = result["source"]
    lines = [f"gateway bench live: {src['size']}@{src['fps']} clock source, 1-s GOP, {src['bitrate'] // 1000} kbit/s "
             f"libx264 {src['preset']} zerolatency, {result['seconds']:g} s (first {result['warmup_s']:g} s of each "
             "player left out)", "",
             f"{'player':<14}{'p50 s':>8}{'p95 s':>8}{'max s':>8}{'pictures':>10}  notes"]
    for name, row in result["players"].items():
        if "p50_s" not in row:
            lines.append(f"{name:<14}{row.get('skipped') or row.get('error') or 'no pictures read'}")
            continue
        notes = [f"media rate {row['media_rate']:.3f}"] if row.get("media_rate") else []
        if row.get("unreadable"):
            notes.append(f"{row['unreadable']} unreadable")
        if "player_latency_p50_s" in row:
            notes.append(f"player's own estimate p50 {row['player_latency_p50_s']:.2f} s")
        if row.get("player_errors"):
            notes.append("errors: " + ", ".join(row["player_errors"][:3]))
        if name in TARGETS:
            notes.append(TARGETS[name])
        lines.append(f"{name:<14}{row['p50_s']:>8.2f}{row['p95_s']:>8.2f}{row['max_s']:>8.2f}{row['pictures']:>10}  "
                     + "; ".join(notes))
    ladder = result.get("ladder")
    if ladder:
        lines += ["", f"ladder over {ladder['wall_s']:g} s: whole process {ladder['process_cpu_share']:.2f} core = "
                  f"{ladder['process_rtf']}x real time on one core; all renditions kept up: {ladder['all_kept_up']} "
                  f"(issue 15: RTF >= 1.0 for 5 min); max backlog {ladder['max_backlog_ms']} ms"
                  + ("" if ladder["ladder_at_end"] else "; the ladder process had ended before the run did")]
        for name, row in ladder["renditions"].items():
            extra = (f", output media rate {row['media_rate']}, kept up {row['kept_up']}" if "kept_up" in row else "")
            lines.append(f"  {name:<10} {row['cpu_share'] or 0:.3f} core -> RTF {row['cpu_rtf']}{extra}")
        if ladder["failed"]:
            lines.append(f"  failed/shed: {ladder['failed']}")
    if result.get("gateway_log"):
        lines += ["", "gateway warnings/errors:"] + [f"  {line}" for line in result["gateway_log"]]
    pub = result.get("publisher") or {}
    if "late_ms_p95" in pub:
        lines.append(f"\npublisher: {pub['frames']} pictures, late p95 {pub['late_ms_p95']:.0f} ms, max "
                     f"{pub['late_ms_max']:.0f} ms (the producer's own CPU lag; included in the latencies)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gateway bench live", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0,
                   help="measured run (default 60): the browser rows share it, each with 10 s more to join")
    p.add_argument("--source", default="720p30", choices=sorted(SOURCES), help="generated source (default 720p30)")
    p.add_argument("--transcode", default="", metavar="480p@1200k,360p@700k", help="the application's ladder")
    p.add_argument("--players", default="hls,ll_hls,dash", help="browser rows, comma-separated ('' for none)")
    p.add_argument("--preset", default="ultrafast",
                   help="the source encoder's libx264 preset (default ultrafast: the camera is not what is measured, "
                        "and it shares this machine's cores)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    rows = tuple(r for r in args.players.split(",") if r)
    unknown = [r for r in rows if r not in BROWSER_ROWS]
    if unknown:
        p.error(f"unknown players {unknown}: choose from {', '.join(BROWSER_ROWS)}")
    transcode = tuple(r for r in args.transcode.split(",") if r)
    result = run(args.seconds, args.source, transcode, rows, args.preset)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render(result))
    return 0
