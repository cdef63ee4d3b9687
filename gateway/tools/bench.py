"""`gateway bench`: packaging speed and memory, as ratios to this machine's own limits measured in the same run.

Figures (issues 2, 3): moov parse time of the 2-hour file; cold TS and fMP4 segment builds (no cache) in segments/s and MB/s; the
cached segment serve rate over HTTP from a real `gateway serve` subprocess; the index playlist rate; memcpy and
file-read MB/s as the yardsticks; peak RSS. Targets are printed next to each figure; nothing here asserts.
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..ops.allocator import tune_allocator, tune_collector
from .measure import MB, Progress, Report, free_port, http_load, measure_file_read, measure_memcpy

def measure_parse(path: Path, rounds: int = 20) -> tuple[float, float, int]:
    """(best, median) ms of read_presentation, and the sample count."""
    from packagers.mp4 import read_presentation

    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    times = []
    try:
        for _ in range(rounds):
            t = time.perf_counter()
            p = read_presentation(lambda off, n: os.pread(fd, n, off), size, path.name)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
    return min(times) * 1000, float(np.median(times)) * 1000, sum(len(t.samples) for t in p.tracks)


def measure_segment_build(path: Path, segment_ms: int, container: str, limit: int | None = None,
                          rounds: int = 3, encryption: str | None = None) -> tuple[int, int, float]:
    """Cold build of every segment (first video + first audio track) in ``container`` (ts | fmp4), clear or with
    ``encryption`` (cenc | cbcs for fmp4, sample-aes for ts): (segments, output bytes, seconds of the fastest of
    ``rounds`` passes).

    Each pass plans, reads (page cache warm) and muxes every segment with no cache, as the gateway does. Best-of, like
    the memcpy yardstick: noise on a shared machine only ever slows a pass down."""
    from packagers.media_set import MediaSet
    from packagers.naming import TrackSpec
    from packagers.fmp4 import Fmp4Muxer
    from packagers.ts import TsMuxer

    from ..http.products import Scatter, build_segment
    from ..origin.store import parse_presentation
    from ..origin.store import Store

    store = Store(path.parent)
    file = store.identify(path.name)
    media_set = MediaSet([parse_presentation(store, file)], segment_ms)
    selection = media_set.resolve(TrackSpec())
    count = media_set.plan(selection).count if limit is None else min(limit, media_set.plan(selection).count)
    muxer = TsMuxer(selection.tracks) if container == "ts" else Fmp4Muxer(selection.tracks)
    scatter = Scatter(muxer.prepare) if container == "ts" else None  # as the gateway builds TS
    build = muxer.build if encryption is None else _encrypting_build(selection.tracks, container, encryption)
    if encryption is not None:
        scatter = None  # encrypted segments are built from samples read first (sizes may change)
    progress = Progress(count * rounds, f"cold {container} build")
    best = float("inf")
    for _ in range(rounds):
        out_bytes = 0
        elapsed = 0.0
        for i in range(count):
            t = time.perf_counter()
            data = build_segment(store, file, media_set, selection, i, build, scatter=scatter)
            elapsed += time.perf_counter() - t
            out_bytes += len(data)
            progress.step()
        best = min(best, elapsed)
    return count, out_bytes, best


def _encrypting_build(tracks, container: str, encryption: str):
    """The build the gateway runs for an encrypted segment (gateway/http/protected.py), with a fixed test key."""
    from packagers.drm.keys import ContentKey, MediaKeys
    from packagers.drm.signaling import Protection
    from packagers.fmp4 import Fmp4Muxer

    from ..http.protected import sample_aes_mux, track_protection

    protection = Protection(encryption, MediaKeys((ContentKey(bytes(range(16)), bytes(range(16, 32))),)))
    if container == "fmp4":
        return Fmp4Muxer(tracks, protection=track_protection(protection, tuple(tracks))).build
    return sample_aes_mux(protection, tuple(tracks), 0)


def measure_transcode(path: Path, ladder: tuple[str, ...], seconds: float) -> tuple[float, dict]:
    """Real-time factor of the live ladder's core on one core (issue 15): the file's video decoded once and encoded
    per rendition (``packagers.transcode``, as a ladder process does), for ``seconds`` of wall time or 10 min of
    media: (media seconds per wall second, CPU seconds per media second for decoding and for each rendition)."""
    from fractions import Fraction

    from packagers.mp4 import read_presentation
    from packagers.transcode import LadderEncoder, parse_rendition

    fd = os.open(path, os.O_RDONLY)
    try:
        video = read_presentation(lambda off, n: os.pread(fd, n, off), os.fstat(fd).st_size, path.name).video_tracks[0]
        s, ts = video.samples, video.timescale
        rate = Fraction(len(s) * ts, int(s.dts[-1] - s.dts[0]) or 1).limit_denominator(1001)
        encoder = LadderEncoder(video.codec, [parse_rendition(r) for r in ladder], frame_rate=rate)
        start, i = time.perf_counter(), 0
        while i < len(s) and (i < 48 or time.perf_counter() - start < seconds):
            encoder.encode(os.pread(fd, int(s.sizes[i]), int(s.offsets[i])), int(s.dts[i]) * 1000 // ts,
                           int(s.cts[i]) * 1000 // ts, bool(s.keyframe[i]))
            i += 1
        wall = time.perf_counter() - start
    finally:
        os.close(fd)
    media = i / float(rate)
    return media / wall, {k: v / media for k, v in encoder.seconds.items()}


def measure_thumbnails(path: Path, accurate: bool, seconds: float) -> float:
    """Thumbnails per second on one core (issue 13): locate, pread, decode (PyAV, one thread) and JPEG-encode the
    frame at times spread over the whole file, full size, no cache, for ``seconds``."""
    from packagers.mp4 import read_presentation
    from packagers.thumbs import decode_frame, encode_jpeg, locate, sample_reads

    fd = os.open(path, os.O_RDONLY)
    try:
        track = read_presentation(lambda off, n: os.pread(fd, n, off), os.fstat(fd).st_size, path.name).video_tracks[0]
        end_ms = track.duration * 1000 // track.timescale
        count, start = 0, time.perf_counter()
        while count == 0 or time.perf_counter() - start < seconds:
            ms = (count * 7919 + 1234) * 37 % end_ms  # a fixed walk over the file: mid-GOP as often as not
            r = locate(track, ms, accurate)
            samples = [os.pread(fd, q.size, q.offset) for q in sample_reads(track, r.first, r.target)]
            encode_jpeg(decode_frame(track, r.first, r.target, samples))
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        os.close(fd)


def measure_http(store: Path, file_name: str, seconds: float) -> dict:
    """Cached segment and index playlist rates from a real `gateway serve` subprocess on loopback."""
    port = free_port()
    cmd = [sys.executable, "-m", "gateway", "serve", "--store", str(store), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/hls/{file_name}"
        import urllib.request

        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/index.m3u8", timeout=30).read()
                break
            except OSError:
                time.sleep(0.1)
        seg = urllib.request.urlopen(f"{base}/seg-2-v1-a1.ts", timeout=30).read()  # warms the cache
        results = {"segment_bytes": len(seg)}
        for key, url in (("segment", f"{base}/seg-2-v1-a1.ts"), ("playlist", f"{base}/index-v1-a1.m3u8")):
            n, nbytes, dt = asyncio.run(http_load(url, seconds, 16))
            results[key] = (n / dt, nbytes / MB / dt)
        return results
    finally:
        proc.terminate()
        proc.wait(10)


def run(seconds: float = 5.0, segments: int | None = None, json_out: bool = False) -> int:
    from fixtures.generate import fixture_path
    from packagers.hls import build_media_playlist
    from packagers.media_set import MediaSet
    from packagers.mp4 import open_presentation
    from packagers.naming import TrackSpec

    tune_allocator()  # measure the muxers as a serve worker runs them
    print("generating/locating benchmark media (first run encodes ~2 min)...", file=sys.stderr)
    hd, long = fixture_path("bench_720p_10min.mp4"), fixture_path("bench_lowres_2h.mp4")
    rep = Report()
    memcpy = measure_memcpy()
    fread = measure_file_read(hd)
    rep.add("memcpy", memcpy, "MB/s", "yardstick")
    rep.add("file_read", fread, "MB/s", f"yardstick: pread of {hd.name}, page cache warm")

    best, median, samples = measure_parse(long)
    rep.add("moov_parse_2h_best", best, "ms", f"{samples:,} samples; target <= 20 ms (nginx-vod-module ~2 ms)")
    rep.add("moov_parse_2h_median", median, "ms", "")
    best, median, samples = measure_parse(hd)
    rep.add("moov_parse_720p_best", best, "ms", f"{samples:,} samples")

    tune_collector()  # as a worker once ready

    count, nbytes, dt = measure_segment_build(hd, 6000, "ts", segments)
    mbs = nbytes / MB / dt
    rep.add("ts_build_segments_per_s", count / dt, "seg/s", f"{count} segments of 6 s, 720p ~2 Mbit/s, cache off")
    rep.add("ts_build_MBps", mbs, "MB/s", f"= {mbs / memcpy:.1%} of memcpy (target >= 8 %; nginx-vod-module 11-12 %)")
    count, nbytes, dt = measure_segment_build(hd, 6000, "fmp4", segments)
    mbs = nbytes / MB / dt
    rep.add("fmp4_build_segments_per_s", count / dt, "seg/s", "same segments as fMP4 (moof + mdat), cache off")
    rep.add("fmp4_build_MBps", mbs, "MB/s", f"= {mbs / memcpy:.1%} of memcpy (target >= 25 %: mostly one copy)")
    clear = {"ts": rep.data["ts_build_segments_per_s"], "fmp4": count / dt}
    for container, encryption in (("fmp4", "cenc"), ("fmp4", "cbcs"), ("ts", "sample-aes")):
        count, nbytes, dt = measure_segment_build(hd, 6000, container, segments, encryption=encryption)
        rep.add(f"{encryption.replace('-', '_')}_build_segments_per_s", count / dt, "seg/s",
                f"= {count / dt / clear[container]:.2f} of the clear {container} build (target >= 0.5)")

    for accurate, mode in ((True, "accurate: decode from the key frame before"), (False, "key-frame mode: one decode")):
        rate = measure_thumbnails(hd, accurate, seconds)
        rep.add(f"thumbs_{'accurate' if accurate else 'keyframe'}_per_s", rate, "thumb/s",
                f"720p full-size JPEG, one core; {mode}")

    rtf, cpu = measure_transcode(hd, ("480p@1200k", "360p@700k"), max(seconds, 5.0))
    rep.add("transcode_720p_to_480p_360p_rtf", rtf, "x real time",
            "one core, live ladder core (decode once, libx264 veryfast zerolatency per rendition); CPU s per media s: "
            + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))

    media_set = MediaSet([open_presentation(long)], 6000)
    sel = media_set.resolve(TrackSpec())
    t = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        text = build_media_playlist(media_set, sel)
    dt = (time.perf_counter() - t) / rounds
    rep.add("index_playlist_build_2h", dt * 1000, "ms", f"{len(text):,} bytes, {media_set.plan(sel).count} segments")

    http = measure_http(hd.parent, hd.name, seconds)  # the fixture cache folder is the store
    seg_rps, seg_mbs = http["segment"]
    rep.add("http_cached_segment", seg_rps, "req/s", f"{seg_mbs:,.0f} MB/s = {seg_mbs / memcpy:.1%} of memcpy, "
            f"{seg_mbs / fread:.1%} of file read; {http['segment_bytes']:,} B each, 16 connections")
    pl_rps, _ = http["playlist"]
    rep.add("http_index_playlist", pl_rps, "req/s", "cached, 16 connections")
    rep.add("peak_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MB", "bench process")

    print(json.dumps(rep.data, indent=2) if json_out else rep.render())
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    if argv and argv[0] == "nginx":  # gateway bench nginx: the load balancer's cache (gateway/tools/bench_nginx.py)
        from .bench_nginx import main as bench_nginx

        return bench_nginx(argv[1:])
    if argv and argv[0] == "origin":  # gateway bench origin: cold segments from an HTTP origin (bench_origin.py)
        from .bench_origin import main as bench_origin

        return bench_origin(argv[1:])
    if argv and argv[0] == "http":  # gateway bench http: every packaged request over HTTP (gateway/tools/bench_http.py)
        from .bench_http import main as bench_http

        return bench_http(argv[1:])
    if argv and argv[0] == "analytics":  # gateway bench analytics: audience collection's cost (bench_analytics.py)
        from .bench_analytics import main as bench_analytics

        return bench_analytics(argv[1:])
    if argv and argv[0] == "rtmp":  # gateway bench rtmp: RTMP fan-out cost (gateway/tools/bench_rtmp.py)
        from .bench_rtmp import main as bench_rtmp

        return bench_rtmp(argv[1:])
    if argv and argv[0] == "live":  # gateway bench live: glass-to-glass latency, ladder RTF (gateway/tools/bench_live.py)
        from .bench_live import main as bench_live

        return bench_live(argv[1:])
    p = argparse.ArgumentParser(prog="gateway bench", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each HTTP load phase (default 5)")
    p.add_argument("--segments", type=int, default=None, help="build only the first N segments of the 720p file")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    return run(args.seconds, args.segments, args.json)
