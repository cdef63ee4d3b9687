"""``gateway serve | probe | demo | bench``: the command line of the gateway.

``demo`` is the README's first command: it makes the sample media (once) and serves it, printing URLs to paste into
a player. ``probe`` shows what the gateway will see in a file: its tracks and the segment plan.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import quote

from . import __version__
from .cli_catalog import add_catalog_commands
from .settings import HLS_CONTAINERS, Settings
from rtmp.config import RtmpConfig

DEMO_PATHS = (
    ("ABR ladder, 3 renditions", "/hls/title_,360p,240p,180p,.mp4.urlset/master.m3u8"),
    ("  the same as DASH", "/dash/title_,360p,240p,180p,.mp4.urlset/manifest.mpd"),
    ("  as Smooth Streaming", "/mss/title_,360p,240p,180p,.mp4.urlset/manifest"),
    ("  as HDS", "/hds/title_,360p,240p,180p,.mp4.urlset/manifest.f4m"),
    ("two audio languages", "/hls/two_audio.mp4/master.m3u8"),
    ("HEVC (HLS with fMP4)", "/hls/hevc.mp4/master.m3u8"),
    ("audio only", "/hls/audio_only.mp4/master.m3u8"),
    ("progressive MP4", "/mp4/title_360p.mp4"),
    ("counters", "/status"),
)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return run_bench(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args.func(args)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description="On-the-fly HLS packaging of MP4 files.")
    p.add_argument("--version", action="version", version=f"gateway {__version__}")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a content store over HTTP")
    serve.add_argument("--store", type=Path, required=True, help="content store root")
    _server_options(serve, default_port=8080)
    serve.set_defaults(func=cmd_serve)

    probe = sub.add_parser("probe", help="print the tracks and segment plan of an MP4 file")
    probe.add_argument("file", type=Path)
    probe.add_argument("--segment-duration", type=float, default=6.0, metavar="SECONDS")
    probe.set_defaults(func=cmd_probe)

    demo = sub.add_parser("demo", help="generate sample media into ./media (once) and serve it on port 8080")
    demo.add_argument("--store", type=Path, default=Path("media"))
    _server_options(demo, default_port=8080)
    demo.set_defaults(func=cmd_demo)

    sub.add_parser("bench", help="benchmarks (gateway bench --help)", add_help=False)
    add_catalog_commands(sub)  # partners ..., entries ...
    return p


def _server_options(p: argparse.ArgumentParser, default_port: int) -> None:
    d = Settings()
    p.add_argument("--host", default=d.host, help=f"bind address (default {d.host}; 0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, default=default_port, help="0 picks a free port (printed at start)")
    p.add_argument("--rtmp-port", type=int, default=0, metavar="N", help="also accept RTMP publishers/players on "
                   "this port (e.g. 1935; 0 = off)")
    p.add_argument("--rtmp-config", type=Path, default=None, metavar="FILE.toml",
                   help="RTMP applications: live packaging, recording, push/pull, auth (see docs/rtmp.md)")
    p.add_argument("--segment-duration", type=float, default=d.segment_duration_ms / 1000, metavar="SECONDS")
    p.add_argument("--segment-cache-mb", type=float, default=d.segment_cache_mb, metavar="N", help="0 disables it")
    p.add_argument("--metadata-cache-entries", type=int, default=d.metadata_cache_entries, metavar="N")
    p.add_argument("--segment-max-age", type=int, default=d.segment_max_age, metavar="SECONDS")
    p.add_argument("--manifest-max-age", type=int, default=d.manifest_max_age, metavar="SECONDS")
    p.add_argument("--not-found-max-age", type=int, default=d.not_found_max_age, metavar="SECONDS")
    p.add_argument("--stat-cache-seconds", type=float, default=d.stat_cache_seconds, metavar="SECONDS",
                   help="how long a file's size/mtime is trusted before the next stat (0 = every request)")
    p.add_argument("--io-threads", type=int, default=d.io_threads, metavar="N")
    p.add_argument("--no-access-log", dest="access_log", action="store_false", help="do not log every request")
    p.add_argument("--catalog", type=Path, default=None, help="partners and entries (default <store>/.catalog)")
    p.add_argument("--catalog-ttl", type=float, default=d.catalog_ttl, metavar="SECONDS",
                   help="re-read changed catalog files at most this often (0: on every request)")
    p.add_argument("--signed-url-ttl", type=int, default=d.signed_url_ttl, metavar="SECONDS",
                   help="lifetime of the signed URLs issued for secured entries")
    p.add_argument("--hls-container", default=d.hls_container, choices=HLS_CONTAINERS,
                   help="HLS segments: ts (MPEG-TS), fmp4, or auto = fmp4 for HEVC (Apple's rule), ts otherwise")


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(
        store=args.store,
        host=args.host,
        port=args.port,
        segment_duration_ms=int(round(args.segment_duration * 1000)),
        segment_cache_mb=args.segment_cache_mb,
        metadata_cache_entries=args.metadata_cache_entries,
        segment_max_age=args.segment_max_age,
        manifest_max_age=args.manifest_max_age,
        not_found_max_age=args.not_found_max_age,
        stat_cache_seconds=args.stat_cache_seconds,
        io_threads=args.io_threads,
        access_log=args.access_log,
        hls_container=args.hls_container,
        catalog=args.catalog,
        catalog_ttl=args.catalog_ttl,
        signed_url_ttl=args.signed_url_ttl,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ValueError as e:
        print(f"gateway serve: {e}", file=sys.stderr)
        return 2
    if not settings.store.is_dir():
        print(f"gateway serve: store {settings.store} is not a directory", file=sys.stderr)
        return 2
    try:
        rtmp_config = load_rtmp_config(args.rtmp_config)
    except (OSError, ValueError) as e:
        print(f"gateway serve: {args.rtmp_config}: {e}", file=sys.stderr)
        return 2
    serve(settings, lambda base: print(f"gateway {__version__}: serving {settings.store} on {base}/", flush=True),
          rtmp_port=args.rtmp_port, rtmp_config=rtmp_config)
    return 0


def load_rtmp_config(path: Path | None) -> RtmpConfig:
    """The ``[rtmp]`` table of a TOML file (or the whole file when it has no such table); defaults without a file."""
    if path is None:
        return RtmpConfig()
    import tomllib
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return RtmpConfig.from_dict(data.get("rtmp", data))


def serve(settings: Settings, on_listening: Callable[[str], None], rtmp_port: int = 0,
          rtmp_config: RtmpConfig | None = None) -> None:
    """Run until SIGINT/SIGTERM; ``on_listening`` gets the base URL once the socket is bound (port 0 resolved).
    ``rtmp_port`` > 0 also runs the RTMP ingest server (rtmp.server) on the same event loop."""
    from aiohttp import web
    from aiohttp.log import access_logger

    from .app import make_app

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = web.AppRunner(make_app(settings), access_log=access_logger if settings.access_log else None)
        rtmp = None
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.host, settings.port)
            await site.start()
            host, port = runner.addresses[0][:2]
            shown = "localhost" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
            on_listening(f"http://{shown}:{port}")
            if rtmp_port:
                from .ingest import start_ingest
                rtmp = await start_ingest(settings, rtmp_config or RtmpConfig(), settings.host, rtmp_port)
                print(f"gateway: RTMP ingest on rtmp://{shown}:{rtmp.port}/<app>/<stream>", flush=True)
            await stop.wait()
        finally:
            if rtmp is not None:
                await rtmp.close()
            await runner.cleanup()

    asyncio.run(run())


def cmd_demo(args: argparse.Namespace) -> int:
    from fixtures.generate import SAMPLE_STORE, make_sample_store

    store: Path = args.store
    if not all((store / name).exists() for name in SAMPLE_STORE):
        print(f"Making the sample media in {store}/ (first run only; encoding takes a minute)...", flush=True)
        make_sample_store(store)
    settings = settings_from_args(args)

    def banner(base: str) -> None:
        width = max(len(label) for label, _ in DEMO_PATHS)
        lines = [f"gateway {__version__}: serving {store}/ on {base}/", ""]
        lines += [f"  {label:<{width}}  {base}{path}" for label, path in DEMO_PATHS]
        first = base + DEMO_PATHS[0][1]
        lines += [
            "",
            "Play a master playlist in Safari, with `ffplay URL`, or in hls.js:",
            f"  https://hlsjs.video-dev.org/demo/?src={quote(first, safe='')}",
            "Ctrl-C stops the server.",
        ]
        print("\n".join(lines), flush=True)

    serve(settings, banner)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from packagers.errors import PackagerError

    from .probe import describe

    try:
        print(describe(args.file, int(round(args.segment_duration * 1000))))
    except PackagerError as e:
        print(f"gateway probe: {e.code.name}: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"gateway probe: {args.file}: {os.strerror(e.errno) if e.errno else e}", file=sys.stderr)
        return 1
    return 0


def run_bench(argv: list[str]) -> int:
    try:
        from . import bench
    except ImportError as e:
        print(f"gateway bench: not available ({e})", file=sys.stderr)
        return 2
    return bench.main(argv)
