"""Servers and load for the HTTP benches (gateway/tools/bench_http.py, bench_nginx.py): a process pinned to a core,
its CPU time and peak RSS from /proc, and a closed-loop load (wrk -t1 -c16 pinned to the other core when installed,
else a Python client of the same shape); the yardstick servers (an empty aiohttp app, nginx with sendfile).
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .measure import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk")
SERVER_CORE, LOAD_CORE = 0, 1
CONNECTIONS = 16
SMALL_BODY = 500  # bytes the empty aiohttp handler answers
_WRK_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_WRK_TOTAL = re.compile(r"([0-9]+) requests in ([0-9.]+)(us|ms|s|m|h),")
_WRK_ERRORS = re.compile(r"Non-2xx or 3xx responses: ([0-9]+)|Socket errors: (.*)")
_TIME_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

EMPTY_APP = f"""
import sys
from aiohttp import web
BODY = b"x" * {SMALL_BODY}
async def empty(request):
    return web.Response(body=BODY, content_type="text/plain")
app = web.Application()
app.router.add_get("/", empty)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

NGINX_CONF = """worker_processes 1;
daemon off;
{user}
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {work}/tmp;
    proxy_temp_path {work}/tmp;
    fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp;
    scgi_temp_path {work}/tmp;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


@dataclass
class Load:
    """What one load phase measured."""

    requests: int
    seconds: float
    cpu_seconds: float  # utime + stime of the server process over the phase

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_seconds * 1000 / max(1, self.requests)


def pinned(core: int) -> list[str]:
    """A command prefix that pins to ``core`` (nothing when this machine has a single core or no taskset)."""
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        return []
    return ["taskset", "-c", str(core)]


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (/proc/<pid>/stat fields 14 and 15, in clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the command name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """VmHWM of ``pid``: its peak resident set size."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"bench http: no VmHWM for pid {pid}")


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        if r.status != 200:
            raise RuntimeError(f"bench http: {url} answered {r.status}")
        return r.read()


def wait_http(url: str, proc: subprocess.Popen, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            get(url)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                detail = log.read_text()[-2000:] if log is not None and log.exists() else ""
                raise RuntimeError(f"bench http: {what} did not start\n{detail}")
            time.sleep(0.1)


def wrk_load(base: str, paths: list[str], seconds: float, work: Path, core: int = LOAD_CORE,
             threads: int = 1) -> tuple[int, float]:
    """(requests, seconds) of wrk -t1 -c16 on core 1 (or ``threads`` threads with 16 connections each on ``core``),
    cycling over ``paths`` (each thread cycles on its own)."""
    script = work / "paths.lua"
    script.write_text("local paths = {" + ", ".join(json.dumps(p) for p in paths) + "}\n"
                      "local i = 0\n"
                      "request = function()\n"
                      "  i = i % #paths + 1\n"
                      "  return wrk.format(\"GET\", paths[i])\n"
                      "end\n")
    # wrk takes whole seconds only
    duration = max(1, math.ceil(seconds))
    cmd = pinned(core) + [WRK, f"-t{threads}", f"-c{CONNECTIONS * threads}", f"-d{duration}s", "-s", str(script),
                          base]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    total = _WRK_TOTAL.search(out.stdout)
    if out.returncode != 0 or _WRK_ERRORS.search(out.stdout) or not total:
        raise RuntimeError(f"bench http: wrk on {base}{paths[0]} failed:\n{out.stdout}{out.stderr}")
    return int(total.group(1)), float(total.group(2)) * _TIME_UNIT[total.group(3)]


async def python_load(base: str, paths: list[str], seconds: float,
                      headers: dict[str, str] | None = None) -> tuple[int, float]:
    """(requests, seconds) of a closed loop of 16 connections cycling over ``paths`` (when wrk is missing)."""
    done = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                path = paths[done % len(paths)]
                async with session.get(base + path) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"bench: {path} answered {r.status}")
                    done += 1

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        return done, time.perf_counter() - t


def bench_store(media: Path, name: str, prefix: str) -> tuple[Path, Path]:
    """(work directory, store) for a bench: the store holds ``media`` as ``name``."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    store = work / "store"
    store.mkdir()
    try:  # a symlink leaving the store is refused (404) by design: a hard link, else a copy
        os.link(media, store / name)
    except OSError:
        shutil.copyfile(media, store / name)
    return work, store


def load(base: str, paths: list[str], seconds: float, server_pid: int | list[int], work: Path,
         core: int = LOAD_CORE, threads: int = 1) -> Load:
    """Closed-loop load of ``paths`` with the server's CPU time over the same phase (summed over the processes
    when given several: the workers of one gateway)."""
    pids = server_pid if isinstance(server_pid, list) else [server_pid]
    cpu0 = sum(map(cpu_seconds, pids))
    if WRK:
        requests, elapsed = wrk_load(base, paths, seconds, work, core, threads)
    else:
        requests, elapsed = asyncio.run(python_load(base, paths, seconds))
    return Load(requests, elapsed, sum(map(cpu_seconds, pids)) - cpu0)


@dataclass
class Server:
    """A process pinned to core 0 whose CPU time and memory are read from /proc."""

    proc: subprocess.Popen
    base: str
    pid: int  # the process that answers (the gateway's worker, nginx's worker)
    workers: list[int] | None = None  # all of them, when a gateway runs several

    def stop(self) -> None:
        if self.proc.poll() is None:
            terminate(self.proc)


def terminate(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once the process is gone."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def only_child(pid: int, what: str) -> int:
    deadline = time.monotonic() + 30
    while True:
        kids = children_of(pid)
        if len(kids) == 1:
            return kids[0]
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench http: {what} has {len(kids)} children, expected its one worker")
        time.sleep(0.1)


def start_gateway(store: Path | str, segment_cache_mb: float, metadata_cache_mb: float, work: Path,
                  workers: int = 1, extra: tuple[str, ...] = ()) -> Server:
    """One worker pinned to core 0, or ``workers`` workers on cores 0 .. workers - 1 (``Server.workers``);
    ``extra``: more `gateway serve` flags (an origin URL as ``store`` needs ``--state-dir``)."""
    port = free_port()
    log = work / f"gateway-{port}.log"
    cores = ["taskset", "-c", f"0-{workers - 1}"] if workers > 1 else pinned(SERVER_CORE)
    cmd = cores + [
        sys.executable, "-m", "gateway", "serve", "--store", str(store), "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--workers", str(workers), "--segment-cache-mb", f"{segment_cache_mb:g}",
        "--metadata-cache-mb", f"{metadata_cache_mb:g}", *extra]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/status", proc, "gateway serve", log)
        if workers > 1:
            deadline = time.monotonic() + 30
            while len(children_of(proc.pid)) < workers and time.monotonic() < deadline:
                time.sleep(0.1)
            pids = children_of(proc.pid)
            return Server(proc, base, pids[0], pids)
        return Server(proc, base, only_child(proc.pid, "gateway serve"))  # taskset execs: proc is the supervisor
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def start_empty_app(work: Path) -> Server:
    port = free_port()
    script = work / "empty_app.py"
    script.write_text(EMPTY_APP)
    proc = subprocess.Popen(pinned(SERVER_CORE) + [sys.executable, str(script), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(proc, f"http://127.0.0.1:{port}", proc.pid)
    try:
        wait_http(f"{server.base}/", proc, "the empty aiohttp app")
        return server
    except BaseException:
        server.stop()
        raise


def start_nginx(root: Path, work: Path) -> Server:
    port = free_port()
    (work / "tmp").mkdir(exist_ok=True)
    conf = work / "nginx.conf"
    # a root user's nginx workers would run as nobody, who cannot read the 0700 temp dir
    conf.write_text(NGINX_CONF.format(user="user root;" if os.geteuid() == 0 else "", work=work, port=port, root=root))
    proc = subprocess.Popen(pinned(SERVER_CORE) + [NGINX, "-p", str(work), "-c", str(conf), "-e",
                                                   str(work / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/segment.ts", proc, "nginx", work / "error.log")
        return Server(proc, base, only_child(proc.pid, "nginx"))  # master → one worker
    except BaseException:
        proc.kill()
        proc.wait()
        raise
