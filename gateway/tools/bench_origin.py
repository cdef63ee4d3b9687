"""`gateway bench origin`: cold segments from an HTTP origin (nginx on loopback) as a ratio of the local store's.

The same bench file, the same cold rows (segment cache off, metadata cache on: a segment is read and muxed per
request) served by two `gateway serve` processes pinned to core 0: one on the local directory, one with
``--store http://127.0.0.1:<nginx>/``, where a real nginx (1 worker) serves that directory, on core 1 beside the
load by default (an origin is another machine in production; ``--origin-core 0`` makes it share the gateway's
core). wrk (or the Python client) on core 1. Issue 16's target: the remote rate >= 0.7 x the local one. The gateway
worker's CPU per request is printed too: it does not depend on where nginx runs. ``--both-paths`` adds a third
gateway whose ranged GETs all go through aiohttp (GATEWAY_ORIGIN_RANGE_POOL=0), to compare the two origin read paths
in one session (``--rounds`` repeats the whole alternation). Nothing here asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .bench_http import FILE_NAME, checked_body_bytes, row_paths
from .load import LOAD_CORE, NGINX, SERVER_CORE, load, pinned, start_gateway, start_nginx

TARGET = 0.7
ROWS = ("hls_ts_segment", "dash_fragment")


def run(seconds: float, json_out: bool, origin_core: int | None = LOAD_CORE, both_paths: bool = False,
        rounds: int = 1) -> int:
    from fixtures.generate import fixture_path

    if not os.access(NGINX, os.X_OK):
        print(f"gateway bench origin: nginx is not installed at {NGINX}", file=sys.stderr)
        return 2
    print("generating/locating benchmark media (first run encodes ~2 min)...", file=sys.stderr)
    media = fixture_path("bench_720p_10min.mp4")
    if pinned(LOAD_CORE):
        os.sched_setaffinity(0, {LOAD_CORE})
    work = Path(tempfile.mkdtemp(prefix="bench-origin-"))
    store = work / "store"
    store.mkdir()
    try:
        os.link(media, store / FILE_NAME)
    except OSError:
        shutil.copyfile(media, store / FILE_NAME)
    (store / "segment.ts").write_bytes(b"\0" * 188)  # what start_nginx waits for
    servers, out = [], {}
    kinds = [("local", str(store), (), "1")]
    state = ("--state-dir", str(work / "state"))
    kinds.append(("remote", None, state, "1"))
    if both_paths:
        kinds.append(("remote_aiohttp", None, state, "0"))
    try:
        (work / "nginx").mkdir()
        nginx = start_nginx(store, work / "nginx")
        servers.append(nginx)
        if origin_core is not None and pinned(origin_core):
            for pid in (nginx.proc.pid, nginx.pid):
                os.sched_setaffinity(pid, {origin_core})
        for turn in range(rounds):
            for kind, where, extra, pool in kinds:
                os.environ["GATEWAY_ORIGIN_RANGE_POOL"] = pool  # read by the gateway it starts
                server = start_gateway(where or nginx.base + "/", 0.0, 256, work, extra=extra)
                servers.append(server)
                paths = row_paths(server.base)
                for row in ROWS:
                    body = checked_body_bytes(server.base, paths[row][:3])
                    result = load(server.base, paths[row], seconds, server.pid, work)
                    figures = {"req_per_s": round(result.rps, 1), "requests": result.requests,
                               "cpu_ms_per_request": round(result.cpu_ms_per_request, 2), "body_bytes": round(body)}
                    out.setdefault(row, {})[kind if rounds == 1 else f"{kind}_{turn + 1}"] = figures
                server.stop()
    finally:
        os.environ.pop("GATEWAY_ORIGIN_RANGE_POOL", None)
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    for row, figures in out.items():
        for turn in range(rounds):
            tail = "" if rounds == 1 else f"_{turn + 1}"
            local = figures[f"local{tail}"]["req_per_s"]
            for kind, *_ in kinds[1:]:
                figures[f"ratio{kind[6:]}{tail}"] = round(figures[f"{kind}{tail}"]["req_per_s"] / local, 3)
        figures["target"] = f">= {TARGET}"
    if json_out:
        print(json.dumps(out, indent=2))
    else:
        for row, f in out.items():
            for turn in range(rounds):
                tail = "" if rounds == 1 else f"_{turn + 1}"
                line = f"{row:16s} local {f['local' + tail]['req_per_s']:8.1f} req/s"
                for kind, *_ in kinds[1:]:
                    r = f[kind + tail]
                    line += (f"  {kind} {r['req_per_s']:8.1f} req/s ratio {f['ratio' + kind[6:] + tail]:.2f} "
                             f"({r['cpu_ms_per_request']} ms cpu/req)")
                print(f"{line}  [local {f['local' + tail]['cpu_ms_per_request']} ms cpu/req; target {f['target']}]")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gateway bench origin", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each load phase (default 5)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--origin-core", type=int, default=LOAD_CORE, choices=(SERVER_CORE, LOAD_CORE),
                   help=f"core of the origin nginx: {LOAD_CORE} (default) beside the load, as a separate machine "
                        f"would be; {SERVER_CORE}: sharing the gateway's core")
    p.add_argument("--both-paths", action="store_true",
                   help="also serve the origin with every GET through aiohttp (the range pool off), to compare")
    p.add_argument("--rounds", type=int, default=1, help="repeat the local/remote alternation (default 1)")
    args = p.parse_args(argv)
    return run(args.seconds, args.json, args.origin_core, args.both_paths, max(1, args.rounds))
