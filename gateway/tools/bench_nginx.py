"""`gateway bench nginx`: what nginx's cache in front of a node costs, against nginx serving a plain file.

One `gateway serve` node, one nginx with the production configuration (`gateway nginx-config`, cache on) plus a
second server block in the same nginx that serves the same bytes as a static file. A hot segment (a cache HIT) and
the static copy are loaded with the same client (wrk when installed, else a Python multi-connection client) at the
same concurrency; the ratio says how close the cached path comes to nginx's own best. The node answering the same
URL directly from its own response cache is shown for scale. Nothing asserts: these are figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from .load import wait_http
from .measure import MB, Report, free_port, http_load
from .nginx_config import NginxConfig, render

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
_WRK_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_WRK_ERRORS = re.compile(r"Non-2xx or 3xx responses: ([0-9]+)|Socket errors: (.*)")


def _get(url: str) -> tuple[bytes, dict]:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read(), dict(r.headers)


def load(url: str, seconds: float, connections: int, client: str) -> float:
    """Requests per second of ``url`` (every response 200) with ``client``: wrk or python."""
    if client == "wrk":
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", url], capture_output=True,
                             text=True, timeout=seconds + 60)
        errors = _WRK_ERRORS.search(out.stdout)
        if out.returncode != 0 or errors or not _WRK_RPS.search(out.stdout):
            raise RuntimeError(f"bench nginx: wrk on {url} failed:\n{out.stdout}{out.stderr}")
        return float(_WRK_RPS.search(out.stdout).group(1))
    n, _, dt = asyncio.run(http_load(url, seconds, connections))
    return n / dt


def run(seconds: float, connections: int, client: str, json_out: bool, rounds: int = 3) -> int:
    from fixtures.generate import fixture_path

    if not os.access(NGINX, os.X_OK):
        print("gateway bench nginx: nginx is not installed (apt-get install nginx)", file=sys.stderr)
        return 2
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    print("generating/locating benchmark media (first run encodes ~2 min)...", file=sys.stderr)
    media = fixture_path("bench_720p_10min.mp4")
    path = f"/hls/{media.name}/seg-2-v1-a1.ts"
    work = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    node_port, lb_port, static_port = free_port(), free_port(), free_port()
    node = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--store", str(media.parent), "--host",
                             "127.0.0.1", "--port", str(node_port), "--no-access-log"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nginx = None
    try:
        wait_http(f"http://127.0.0.1:{node_port}/status", node, "gateway serve")
        segment, _ = _get(f"http://127.0.0.1:{node_port}{path}")
        (work / "static").mkdir()
        (work / "static" / "segment.ts").write_bytes(segment)
        # same nginx, same access log: the only difference between the two paths is proxy_cache
        static_server = f"server {{\n    listen 127.0.0.1:{static_port};\n    root {work / 'static'};\n}}"
        config = NginxConfig(
            nodes=(f"127.0.0.1:{node_port}",), listen=f"127.0.0.1:{lb_port}", cache_dir=str(work / "cache"),
            cache_size="1g", log_dir=str(work), pid_file=str(work / "nginx.pid"), temp_dir=str(work),
            user="root" if os.geteuid() == 0 else "nobody", extra_http=static_server,
        )
        conf = work / "nginx.conf"
        conf.write_text(render(config))
        nginx = subprocess.Popen([NGINX, "-p", str(work), "-c", str(conf), "-e", str(work / "startup.log"),
                                  "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cached_url = f"http://127.0.0.1:{lb_port}{path}"
        static_url = f"http://127.0.0.1:{static_port}/segment.ts"
        wait_http(static_url, nginx, "nginx")
        for _ in range(3):
            body, headers = _get(cached_url)
        if headers.get("X-Cache-Status") != "HIT" or body != segment:
            raise RuntimeError(f"bench nginx: the segment is not a cache HIT ({headers.get('X-Cache-Status')})")

        figures = {"static": 0.0, "cached": 0.0, "node": 0.0}
        for round_ in range(rounds):  # interleaved, best of: noise on a shared machine only ever slows a pass
            for key, url in (("static", static_url), ("cached", cached_url),
                             ("node", f"http://127.0.0.1:{node_port}{path}")):
                print(f"  round {round_ + 1}/{rounds}: {key} ({client}, {connections} connections, {seconds:g} s)",
                      file=sys.stderr)
                figures[key] = max(figures[key], load(url, seconds, connections, client))
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(15)
        node.terminate()
        node.wait(15)
        shutil.rmtree(work, ignore_errors=True)

    size = len(segment) / MB
    rep = Report()
    note = f"{len(segment):,} B segment, {connections} connections, {client}, best of {rounds}"
    rep.add("nginx_static_file", figures["static"], "req/s", f"{figures['static'] * size:,.0f} MB/s; {note}")
    rep.add("nginx_cache_hit", figures["cached"], "req/s", f"{figures['cached'] * size:,.0f} MB/s; same bytes "
            "through proxy_cache (X-Cache-Status: HIT)")
    rep.add("cache_hit_vs_static", figures["cached"] / figures["static"], "x", "1.0 = as fast as a static file")
    rep.add("node_direct_cached", figures["node"], "req/s", f"{figures['node'] * size:,.0f} MB/s; the node's own "
            "response cache, no nginx (for scale)")
    rep.add("nginx_cache_hit_vs_node", figures["cached"] / figures["node"], "x", "what the nginx cache adds")
    print(json.dumps(rep.data, indent=2) if json_out else rep.render())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gateway bench nginx", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each load phase (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is kept (default 3)")
    p.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    p.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                   help="load generator: wrk if installed (auto), or the Python client")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    return run(args.seconds, args.connections, args.client, args.json, max(1, args.rounds))
