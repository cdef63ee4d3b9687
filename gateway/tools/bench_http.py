"""`gateway bench http`: every packaged request over HTTP, one core each, beside this machine's yardsticks.

One `gateway serve` pinned to core 0 (segment cache off for the rows built per request, a second one with the cache
on for the cached rows); a closed-loop load pinned to core 1 (wrk -t1 -c16 when installed, else a Python client);
the server worker's CPU time per request from /proc/<pid>/stat. Yardsticks measured in the same run: memcpy and file
read (in-process), an empty aiohttp handler returning 500 bytes and nginx sending the same segment bytes as a static
file with sendfile (both pinned to core 0, loaded the same way). Each figure is printed as a ratio to its yardstick,
with the issue-12 target and the issue's "before" figure. Nothing here asserts: these are figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .load import (CONNECTIONS, LOAD_CORE, NGINX, SERVER_CORE, SMALL_BODY, WRK, Server, bench_store, get, load,
                   peak_rss_mb, pinned, start_empty_app, start_gateway, start_nginx)
from ..ops.allocator import memory_bound_mb
from .measure import MB, Progress, Report, measure_file_read, measure_memcpy

FILE_NAME = "bench.mp4"  # the name of the 720p fixture inside the temporary store
SCALING_TARGET = 0.9  # N workers on N cores serve >= 0.9 x N times one worker's cold TS rate
CACHED_SEGMENT = 2  # the segment the cached row and the nginx yardstick send (1-based, as in the URL)


@dataclass(frozen=True)
class Row:
    """One request type of the issue's table: which server answers it and what it is compared with."""

    name: str
    server: str  # "cold": segment cache off (built per request) | "cached": cache on
    yardstick: str  # memcpy (MB/s) | empty_aiohttp (req/s) | nginx_sendfile (req/s)
    before: str  # the "this gateway" figure on the machine it was measured on
    target: str
    target_rps: float | None = None  # the target as req/s, when the issue states one (or one derived from nginx-vod)
    target_ratio: float | None = None  # the target as a ratio to the yardstick, when the issue states it so


# the targets for cold rows are ratios to nginx-vod-module's req/s (measured in the issue, not here): stated
# as req/s so they can be compared; they hold on the machine only
ROWS = (
    Row("hls_ts_segment", "cold", "memcpy", "315 req/s, 3.2 ms CPU", ">= 0.8 x nginx-vod 768 req/s = 614 req/s", 614.4),
    Row("hls_fmp4_segment", "cold", "memcpy", "-", "none in the issue"),
    Row("dash_fragment", "cold", "memcpy", "1,018 req/s", ">= 1.0 x nginx-vod 749 req/s (keep)", 749.0),
    Row("mss_fragment", "cold", "memcpy", "729 req/s", ">= 1.0 x nginx-vod 734 req/s", 734.0),
    Row("hds_fragment", "cold", "memcpy", "448 req/s", ">= 0.8 x nginx-vod 756 req/s = 605 req/s", 604.8),
    Row("cached_ts_segment", "cached", "nginx_sendfile", "1,395 req/s, 0.71 ms CPU",
        ">= 0.8 of nginx sendfile of the same bytes", target_ratio=0.8),
    Row("master_m3u8", "cached", "empty_aiohttp", "3,168 req/s, 316 us CPU", ">= 12,000 req/s", 12000.0),
    Row("index_m3u8", "cached", "empty_aiohttp", "3,288 req/s", ">= 12,000 req/s", 12000.0),
    Row("manifest_mpd", "cached", "empty_aiohttp", "945 req/s", ">= 12,000 req/s", 12000.0),
)
ROW_NAMES = tuple(r.name for r in ROWS)

def row_paths(base: str) -> dict[str, list[str]]:
    """The real URLs of every row, read from the bench file's own manifests (cycled by the load)."""
    hls, dash, mss, hds = (f"/{p}/{FILE_NAME}" for p in ("hls", "dash", "mss", "hds"))
    master = get(f"{base}{hls}/master.m3u8").decode()
    index_name = next(line for line in master.splitlines() if line and not line.startswith("#"))
    index = get(f"{base}{hls}/{index_name}").decode()
    ts_names = [line for line in index.splitlines() if line and not line.startswith("#")]

    mpd = ET.fromstring(get(f"{base}{dash}/manifest.mpd"))
    ns = {"m": "urn:mpeg:dash:schema:mpd:2011"}
    video = next(a for a in mpd.iterfind(".//m:AdaptationSet", ns) if a.get("contentType") == "video")
    template = video.find(".//m:SegmentTemplate", ns)
    dash_count = sum(1 + int(s.get("r", "0")) for s in template.iterfind(".//m:S", ns))
    start = int(template.get("startNumber", "1"))
    dash_names = [template.get("media").replace("$Number$", str(n)) for n in range(start, start + dash_count)]

    smooth = ET.fromstring(get(f"{base}{mss}/manifest"))
    stream = next(s for s in smooth.iter("StreamIndex") if s.get("Type") == "video")
    bitrate = stream.find("QualityLevel").get("Bitrate")
    starts, t = [], 0
    for c in stream.iter("c"):
        t = int(c.get("t", t))
        for _ in range(1 + int(c.get("r", "0"))):
            starts.append(t)
            t += int(c.get("d"))
    mss_names = [stream.get("Url").replace("{bitrate}", bitrate).replace("{start time}", str(s)) for s in starts]

    f4m = ET.fromstring(get(f"{base}{hds}/manifest.f4m"))
    hds_prefix = next(f4m.iter("{http://ns.adobe.com/f4m/1.0}media")).get("url")
    hds_names = [f"{hds_prefix}Seg1-Frag{n}" for n in range(1, len(ts_names) + 1)]  # one fragment per segment

    return {
        "hls_ts_segment": [f"{hls}/{n}" for n in ts_names],
        "hls_fmp4_segment": [f"{hls}/{n[:-3]}.m4s" for n in ts_names],  # same segments, fMP4 (packagers/hls/names)
        "dash_fragment": [f"{dash}/{n}" for n in dash_names],
        "mss_fragment": [f"{mss}/{n}" for n in mss_names],
        "hds_fragment": [f"{hds}/{n}" for n in hds_names],
        "cached_ts_segment": [f"{hls}/{ts_names[CACHED_SEGMENT - 1]}"],
        "master_m3u8": [f"{hls}/master.m3u8"],
        "index_m3u8": [f"{hls}/{index_name}"],
        "manifest_mpd": [f"{dash}/manifest.mpd"],
    }


def checked_body_bytes(base: str, paths: list[str]) -> float:
    """Mean body size of ``paths``, each checked to answer 200 with a non-empty body (this also warms a cache)."""
    sizes = []
    for path in paths:
        body = get(base + path)
        if not body:
            raise RuntimeError(f"bench http: {path} answered an empty body")
        sizes.append(len(body))
    return sum(sizes) / len(sizes)


def run(seconds: float, row_names: tuple[str, ...], json_out: bool) -> int:
    from fixtures.generate import fixture_path
    from gateway.settings import Settings

    rows = tuple(r for r in ROWS if r.name in row_names)
    defaults = Settings()
    print("generating/locating benchmark media (first run encodes ~2 min)...", file=sys.stderr)
    media = fixture_path("bench_720p_10min.mp4")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if pinned(LOAD_CORE):
        os.sched_setaffinity(0, {LOAD_CORE})  # the bench itself (and the Python load, without wrk) on core 1
    work, store = bench_store(media, FILE_NAME, "bench-http-")

    # The yardsticks are measured twice, at the start and at the end of the run, and the better pass is kept: on a
    # shared machine noise only ever slows a pass down, and a yardstick caught in someone else's burst would make
    # every ratio built on it look better than it is.
    progress = Progress(2 * 4 + len(rows), "bench http")
    yard: dict[str, dict] = {}
    figures: dict[str, dict] = {}
    memory: dict[str, dict] = {}
    scaling: dict = {}
    servers: list[Server] = []
    have_nginx = os.access(NGINX, os.X_OK)

    def keep_best(name: str, figure: dict, key: str) -> None:
        passes = yard.get(name, {}).get("passes", []) + [figure[key]]
        if name not in yard or figure[key] > yard[name][key]:
            yard[name] = figure
        yard[name]["passes"] = passes
        progress.step()

    def in_process_yardsticks() -> None:
        keep_best("memcpy", {"MB_per_s": measure_memcpy(), "what": "numpy copyto of 64 MB, best of 8"}, "MB_per_s")
        keep_best("file_read", {"MB_per_s": measure_file_read(store / FILE_NAME), "what": "pread of the "
                                f"{media.stat().st_size / MB:,.0f} MB bench file, page cache warm"}, "MB_per_s")

    def load_figures(server: Server, paths: list[str], body_bytes: float) -> dict:
        result = load(server.base, paths, seconds, server.pid, work)
        return {"req_per_s": result.rps, "cpu_ms_per_request": result.cpu_ms_per_request,
                "server_core_busy": result.cpu_seconds / result.seconds, "requests": result.requests,
                "seconds": result.seconds, "body_bytes": body_bytes, "MB_per_s": result.rps * body_bytes / MB}

    def empty_yardstick(empty: Server) -> None:
        figure = load_figures(empty, ["/"], SMALL_BODY)
        figure["what"] = f"aiohttp handler answering {SMALL_BODY} bytes, no middleware"
        keep_best("empty_aiohttp", figure, "req_per_s")

    def nginx_yardstick(nginx: Server | None, segment: bytes) -> None:
        if nginx is None:
            yard["nginx_sendfile"] = {"skipped": f"nginx is not installed at {NGINX}"}
            progress.step()
            return
        figure = load_figures(nginx, ["/segment.ts"], len(segment))
        figure["what"] = (f"nginx, 1 worker, sendfile of segment {CACHED_SEGMENT} ({len(segment):,} B) as a "
                          "static file")
        keep_best("nginx_sendfile", figure, "req_per_s")

    def gateway_rows(kind: str, cache_mb: float) -> bytes:
        """Load every row ``kind`` serves; returns the cached row's segment bytes (nginx sends the same)."""
        server = start_gateway(store, cache_mb, defaults.metadata_cache_mb, work)
        servers.append(server)
        paths = row_paths(server.base)
        segment = get(server.base + paths["cached_ts_segment"][0])
        for row in rows:
            if row.server == kind:
                figure = load_figures(server, paths[row.name], checked_body_bytes(server.base, paths[row.name]))
                figures[row.name] = {**figure, "urls_cycled": len(paths[row.name]), "server": kind}
                progress.step()
        memory[kind] = {"peak_rss_MB": peak_rss_mb(server.pid), "segment_cache_MB": cache_mb,
                        "metadata_cache_MB": defaults.metadata_cache_mb,
                        "bound_MB": memory_bound_mb(cache_mb, defaults.metadata_cache_mb, defaults.io_threads)}
        server.stop()
        return segment

    def workers_scaling(n: int) -> dict:
        """The cold TS row again with ``n`` workers on cores 0 .. n-1 and wrk (n threads) on core n."""
        server = start_gateway(store, 0.0, defaults.metadata_cache_mb, work, workers=n)
        servers.append(server)
        paths = row_paths(server.base)["hls_ts_segment"]
        checked_body_bytes(server.base, paths[:n])
        result = load(server.base, paths, seconds, server.workers, work, core=n, threads=n)
        server.stop()
        one = figures["hls_ts_segment"]
        ratio = result.rps / (n * one["req_per_s"])
        return {"workers": n, "req_per_s": result.rps, "cpu_ms_per_request": result.cpu_ms_per_request,
                "one_worker_req_per_s": one["req_per_s"], "ratio_to_n_times_one": round(ratio, 4),
                "target_met": ratio >= SCALING_TARGET}

    try:
        in_process_yardsticks()
        empty = start_empty_app(work)  # idle between its two passes
        servers.append(empty)
        empty_yardstick(empty)
        segment = gateway_rows("cached", defaults.segment_cache_mb)  # always: it gives nginx the segment's bytes
        nginx = None
        if have_nginx:
            root = work / "static"
            root.mkdir()
            (root / "segment.ts").write_bytes(segment)
            nginx = start_nginx(root, work)
            servers.append(nginx)
            if get(f"{nginx.base}/segment.ts") != segment:
                raise RuntimeError("bench http: nginx does not send the segment's bytes")
        nginx_yardstick(nginx, segment)
        if any(r.server == "cold" for r in rows):
            gateway_rows("cold", 0.0)
        if "hls_ts_segment" in figures:  # N workers need N cores and one more for the load
            if cores >= 3 and pinned(LOAD_CORE):
                scaling.update(workers_scaling(cores - 1))
            else:
                scaling.update({"workers": None, "note": f"not measured: {cores} cores, and N workers need N + 1 "
                                "(one for the load)"})
        nginx_yardstick(nginx, segment)
        empty_yardstick(empty)
        in_process_yardsticks()
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    for row in rows:
        fig = figures[row.name]
        ys = yard[row.yardstick]
        measure_key = "MB_per_s" if row.yardstick == "memcpy" else "req_per_s"
        fig["yardstick"] = row.yardstick
        fig["ratio_of"] = measure_key
        fig["ratio"] = round(fig[measure_key] / ys[measure_key], 4) if measure_key in ys else None
        # the yardstick server's CPU per request over ours: the ratio that still holds when the client, not the
        # server, was the limit (server_core_busy well below 1)
        fig["cpu_ratio"] = (round(ys["cpu_ms_per_request"] / fig["cpu_ms_per_request"], 4)
                            if "cpu_ms_per_request" in ys and fig["cpu_ms_per_request"] > 0 else None)
        fig["target"] = row.target
        fig["before"] = row.before
        if row.target_rps is not None:
            fig["target_met"] = fig["req_per_s"] >= row.target_rps
        elif row.target_ratio is not None and fig["ratio"] is not None:
            fig["target_met"] = fig["ratio"] >= row.target_ratio
        else:
            fig["target_met"] = None

    client = f"wrk -t1 -c{CONNECTIONS}" if WRK else f"python client, {CONNECTIONS} connections"
    out = {"rows": figures, "yardsticks": yard, "memory": memory, "workers_scaling": scaling,
           "setup": {"load": client, "server_core": SERVER_CORE, "load_core": LOAD_CORE,
                     "pinned": bool(pinned(SERVER_CORE)), "seconds_per_row": seconds,
                     "file": f"{media.name} ({media.stat().st_size:,} B)"}}
    if json_out:
        print(json.dumps(out, indent=2))
    else:
        print(render(out, rows))
    return 0


def render(out: dict, rows: tuple[Row, ...]) -> str:
    rep = Report()
    yard = out["yardsticks"]
    for name in ("memcpy", "file_read"):
        rep.add(name, yard[name]["MB_per_s"], "MB/s", f"yardstick: {yard[name]['what']}; passes {_passes(yard[name])}")
    e = yard["empty_aiohttp"]
    rep.add("empty_aiohttp", e["req_per_s"], "req/s", f"yardstick: {e['what']}; {e['cpu_ms_per_request'] * 1000:,.0f} "
            f"us CPU/req, server core {e['server_core_busy']:.0%} busy; passes {_passes(e)} req/s")
    n = yard["nginx_sendfile"]
    if "skipped" in n:
        rep.rows.append(("nginx_sendfile", "skipped", n["skipped"]))
    else:
        rep.add("nginx_sendfile", n["req_per_s"], "req/s", f"yardstick: {n['what']}; {n['MB_per_s']:,.0f} MB/s, "
                f"{n['cpu_ms_per_request'] * 1000:,.0f} us CPU/req, server core {n['server_core_busy']:.0%} busy; "
                f"passes {_passes(n)} req/s")
    for row in rows:
        f = out["rows"][row.name]
        if f["ratio"] is None:
            ratio = f"no {row.yardstick} yardstick"
        elif row.yardstick == "memcpy":
            ratio = f"{f['MB_per_s']:,.0f} MB/s = {f['ratio']:.1%} of memcpy"
        else:
            ratio = f"{f['ratio']:.2f} x {row.yardstick}"
            if f["cpu_ratio"] is not None:
                ratio += f" (CPU/req: {f['cpu_ratio']:.2f} x)"
        met = {True: "met", False: "NOT met", None: "-"}[f["target_met"]]
        rep.add(row.name, f["req_per_s"], "req/s",
                f"{f['cpu_ms_per_request'] * 1000:,.0f} us CPU/req, core {f['server_core_busy']:.0%} busy; {ratio}; "
                f"target {row.target}: {met}; before {row.before}")
    w = out.get("workers_scaling")
    if w and w["workers"]:
        met = "met" if w["target_met"] else "NOT met"
        rep.add(f"cold_ts_{w['workers']}_workers", w["req_per_s"], "req/s",
                f"{w['workers']} workers on cores 0-{w['workers'] - 1}, wrk -t{w['workers']} on core {w['workers']}: "
                f"{w['ratio_to_n_times_one']:.2f} x {w['workers']} x one worker's {w['one_worker_req_per_s']:,.0f} "
                f"req/s; {w['cpu_ms_per_request'] * 1000:,.0f} us CPU/req; target >= {SCALING_TARGET} x N: {met}")
    elif w:
        rep.add("cold_ts_n_workers", 0, "req/s", w["note"])
    for kind, m in out["memory"].items():
        met = "met" if m["peak_rss_MB"] <= m["bound_MB"] else "NOT met"
        rep.add(f"peak_rss_{kind}_server", m["peak_rss_MB"], "MB", f"VmHWM of the worker; caches configured: "
                f"segment {m['segment_cache_MB']:g} MB + metadata {m['metadata_cache_MB']:g} MB; bound (caches + "
                f"constant, docs/performance.md) {m['bound_MB']:,.0f} MB: {met}")
    s = out["setup"]
    head = (f"# {s['file']}; server on core {s['server_core']}, {s['load']} on core {s['load_core']}"
            f"{'' if s['pinned'] else ' (NOT pinned: one core or no taskset)'}, {s['seconds_per_row']:g} s per row")
    return head + "\n" + rep.render()


def _passes(figure: dict) -> str:
    return " / ".join(f"{p:,.0f}" for p in figure["passes"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gateway bench http", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0,
                   help="duration of each load phase (default 5; wrk rounds up to whole seconds)")
    p.add_argument("--rows", default=",".join(ROW_NAMES), help=f"comma-separated subset of: {', '.join(ROW_NAMES)}")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    names = tuple(n.strip() for n in args.rows.split(",") if n.strip())
    unknown = [n for n in names if n not in ROW_NAMES]
    if unknown or not names:
        p.error(f"unknown rows {', '.join(unknown) or '(none given)'}; choose from {', '.join(ROW_NAMES)}")
    return run(args.seconds, names, args.json)
