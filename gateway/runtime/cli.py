"""``gateway serve | probe | demo | bench``: the command line of the gateway.

``demo`` is the README's first command: it makes the sample media (once) and serves it, printing URLs to paste into
a player. ``probe`` shows what the gateway will see in a file: its tracks and the segment plan.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

from .. import __version__
from .catalog_cli import add_catalog_commands
from ..tools.nginx_config import add_nginx_config_command
from ..tools.cmcd_load import add_analytics_load_command
from .config_file import LOG_LEVELS, ConfigError, ConfigSource, load_rtmp_table
from ..ops.log_format import configure_logging
from ..settings import ACCESS_LOG_FORMATS, DASH_SUBTITLE_FORMATS, HLS_CONTAINERS, THUMBNAIL_MODES, Settings
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
    ("a clip (seconds 2 to 7)", "/hls/title_360p.mp4/clipFrom/2000/clipTo/7000/master.m3u8"),
    ("  as an MP4", "/mp4/title_360p.mp4/clipFrom/2000/clipTo/7000"),
    ("the picture at 3 s (JPEG)", "/thumb/title_360p.mp4/thumb-3000-w320.jpg"),
    ("French audio only", "/hls/two_audio.mp4/master-lfra.m3u8"),
    ("counters (JSON)", "/status"),
    ("Prometheus metrics", "/metrics"),
)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["bench"]:
            return run_bench(argv[1:])
        args = _parser().parse_args(argv)
        configure_logging(args.log_level or "info")  # None: not given (a config file may set log_level)
        return args.func(args)
    except ModuleNotFoundError as e:
        if e.name != "av":
            raise
        # only `gateway demo` and `gateway bench` encode media (fixtures/): serving needs no PyAV
        print("gateway: this command encodes sample media with PyAV: python3 -m pip install -e '.[demo]'",
              file=sys.stderr)
        return 2


def _global_options_after_subcommands(parser: argparse.ArgumentParser) -> None:
    """``gateway serve --log-level debug`` as well as ``gateway --log-level debug serve``: every subcommand (nested
    ones too) takes the global option; given there, it wins (SUPPRESS: absent, it leaves the global value alone)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                if "--log-level" not in child._option_string_actions:
                    child.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS,
                                       help="as before the subcommand")
                _global_options_after_subcommands(child)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description="On-the-fly HLS packaging of MP4 files.")
    p.add_argument("--version", action="version", version=f"gateway {__version__}")
    p.add_argument("--log-level", default=None, choices=LOG_LEVELS, help="default info")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a content store over HTTP",
                           description="Flags override the --config file; SIGHUP re-reads it (docs/operations.md).")
    serve.add_argument("--store", default=None, help="content store: a directory, http(s)://origin/prefix or "
                       "s3://bucket/prefix (required here or in --config; docs/stores.md)")
    serve.add_argument("--fallback-store", default=None, metavar="DIR|URL",
                       help="tried for a file the store does not have (404): a directory, http(s):// or s3:// "
                            "(docs/stores.md, Fallback store)")
    serve.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                       help="with a remote store: local directory for live output, recordings and the catalog "
                            "(default ./gateway-state, created)")
    serve.add_argument("--check", action="store_true", help="validate the configuration, then the catalog and "
                       "every flavor file (gateway check), and exit: 0 ready, 1 errors, 2 invalid configuration")
    serve.add_argument("--config", type=Path, default=None, metavar="FILE.toml",
                       help="every setting in one file (see gateway.example.toml); flags given here win")
    serve.add_argument("--workers", type=int, default=None, metavar="N",
                       help="HTTP worker processes on the one port (default 1; worker 0 also runs RTMP)")
    serve.add_argument("--shutdown-grace", type=float, default=None, metavar="SECONDS",
                       help="after SIGTERM or a reload, time given to in-flight responses (default 30)")
    serve.add_argument("--drain-delay", type=float, default=None, metavar="SECONDS",
                       help="after SIGTERM, answer /ready 503 this long before closing the port (default 0)")
    _server_options(serve, default_port=8080)
    serve.set_defaults(func=cmd_serve)

    probe = sub.add_parser("probe", help="print the tracks and segment plan of an MP4 file")
    probe.add_argument("file", type=Path)
    probe.add_argument("--segment-duration", type=float, default=6.0, metavar="SECONDS")
    probe.add_argument("--json", action="store_true", help="tracks and segments as one JSON document")
    probe.set_defaults(func=cmd_probe)

    completion = sub.add_parser("completion", help="shell completion: source <(gateway completion bash)")
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(func=cmd_completion)

    demo = sub.add_parser("demo", help="generate sample media into ./media (once) and serve it on port 8080")
    demo.add_argument("--store", type=Path, default=Path("media"))
    _server_options(demo, default_port=8080)
    demo.set_defaults(func=cmd_demo)

    sub.add_parser("bench", help="benchmarks (gateway bench --help)", add_help=False)
    add_catalog_commands(sub)  # partners ..., entries ...
    add_nginx_config_command(sub)  # nginx-config: the load balancer in front of a pool of nodes
    add_analytics_load_command(sub)  # analytics-load: simulated CMCD players and their ground truth
    _global_options_after_subcommands(p)
    return p


def _server_options(p: argparse.ArgumentParser, default_port: int) -> None:
    """Every default is None, meaning "not given": the value comes from the config file, else from ``Settings()``."""
    d = Settings()
    p.add_argument("--host", default=None, help=f"bind address (default {d.host}; 0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, default=None, help=f"default {default_port}; 0 picks a free port (printed)")
    p.add_argument("--rtmp-port", type=int, default=None, metavar="N", help="also accept RTMP publishers/players on "
                   "this port (e.g. 1935; 0 = off)")
    p.add_argument("--rtmp-config", type=Path, default=None, metavar="FILE.toml",
                   help="RTMP applications: live packaging, recording, push/pull, auth (see docs/rtmp.md)")
    p.add_argument("--segment-duration", type=float, default=None, metavar="SECONDS",
                   help=f"default {d.segment_duration_ms / 1000:g}")
    p.add_argument("--segment-cache-mb", type=float, default=None, metavar="N",
                   help=f"default {d.segment_cache_mb:g}; 0 disables it")
    p.add_argument("--metadata-cache-entries", type=int, default=None, metavar="N",
                   help=f"default {d.metadata_cache_entries}")
    p.add_argument("--metadata-cache-mb", type=float, default=None, metavar="N",
                   help=f"parsed moov boxes and plans, weighed by their real size (default {d.metadata_cache_mb:g})")
    p.add_argument("--max-frame-count", type=int, default=None, metavar="N",
                   help=f"frames one file may describe, all tracks (default {d.max_frame_count}; nginx-vod's "
                        "vod_max_frame_count)")
    p.add_argument("--segment-max-frame-count", type=int, default=None, metavar="N",
                   help=f"frames one segment may carry (default {d.segment_max_frame_count})")
    p.add_argument("--header-timeout", type=float, default=None, metavar="SECONDS",
                   help=f"time a client has to send its request line and headers (default {d.header_timeout:g})")
    p.add_argument("--keepalive-timeout", type=float, default=None, metavar="SECONDS",
                   help=f"idle kept-alive connections are closed after this (default {d.keepalive_timeout:g})")
    p.add_argument("--max-connections", type=int, default=None, metavar="N",
                   help="connections per worker; when full the oldest idle one is closed (default 0 = auto: "
                        "from the open-file limit)")
    p.add_argument("--max-connections-per-address", type=int, default=None, metavar="N",
                   help="connections per client address and worker (default 0 = no cap; keep 0 behind nginx)")
    p.add_argument("--segment-max-age", type=int, default=None, metavar="SECONDS", help=f"default {d.segment_max_age}")
    p.add_argument("--manifest-max-age", type=int, default=None, metavar="SECONDS",
                   help=f"default {d.manifest_max_age}")
    p.add_argument("--not-found-max-age", type=int, default=None, metavar="SECONDS",
                   help=f"default {d.not_found_max_age}")
    p.add_argument("--stat-cache-seconds", type=float, default=None, metavar="SECONDS",
                   help=f"how long a file's size/mtime is trusted before the next stat (default "
                        f"{d.stat_cache_seconds:g}; 0 = every request)")
    p.add_argument("--io-threads", type=int, default=None, metavar="N", help=f"default {d.io_threads}")
    p.add_argument("--no-access-log", dest="access_log", action="store_const", const=False, default=None,
                   help="do not log every request")
    p.add_argument("--access-log-format", default=None, choices=ACCESS_LOG_FORMATS,
                   help="text (default) or json: one JSON object per line")
    p.add_argument("--origin-timeout", type=float, default=None, metavar="SECONDS",
                   help=f"remote store: one origin request, body included, then 504 (default {d.origin_timeout:g})")
    p.add_argument("--origin-connect-timeout", type=float, default=None, metavar="SECONDS",
                   help=f"remote store: connecting to the origin (default {d.origin_connect_timeout:g})")
    p.add_argument("--origin-tries", type=int, default=None, metavar="N",
                   help=f"remote store: attempts on connection errors, timeouts, 5xx (default {d.origin_tries})")
    p.add_argument("--s3-endpoint", default=None, metavar="URL",
                   help="s3:// store on an S3-compatible server (default: AWS_ENDPOINT_URL_S3, else AWS)")
    p.add_argument("--s3-region", default=None, help="s3:// store region (default: the AWS environment/config)")
    p.add_argument("--s3-profile", default=None, help="AWS profile of the s3:// store's credentials")
    p.add_argument("--catalog", type=Path, default=None, help="partners and entries (default <store>/.catalog)")
    p.add_argument("--catalog-ttl", type=float, default=None, metavar="SECONDS",
                   help=f"re-read changed catalog files at most this often (default {d.catalog_ttl:g}; 0: on every "
                        "request)")
    p.add_argument("--signed-url-ttl", type=int, default=None, metavar="SECONDS",
                   help=f"lifetime of the signed URLs issued for secured entries (default {d.signed_url_ttl})")
    p.add_argument("--thumbnail-mode", default=None, choices=THUMBNAIL_MODES,
                   help="accurate (default): the frame shown at the time asked for, decoded from its key frame; "
                        "keyframe: the key frame before it, ~3x faster")
    p.add_argument("--thumbnail-decodes", type=int, default=None, metavar="N",
                   help="thumbnails decoded at once, the rest wait (default 0 = one per CPU core)")
    p.add_argument("--dash-subtitle-format", default=None, choices=DASH_SUBTITLE_FORMATS,
                   help="caption files in DASH: webvtt (default: one WebVTT file) or smpte-tt (TTML in fMP4 segments)")
    p.add_argument("--hls-container", default=None, choices=HLS_CONTAINERS,
                   help="HLS segments: ts (MPEG-TS), fmp4, or auto = fmp4 for HEVC (Apple's rule), ts otherwise "
                        "(default auto)")


_FLAG_KEYS = ("store", "host", "port", "rtmp_port", "segment_cache_mb", "metadata_cache_entries", "metadata_cache_mb",
              "max_frame_count", "segment_max_frame_count", "header_timeout", "keepalive_timeout", "max_connections",
              "max_connections_per_address", "segment_max_age",
              "manifest_max_age", "not_found_max_age", "stat_cache_seconds", "io_threads", "access_log",
              "access_log_format", "catalog", "catalog_ttl", "signed_url_ttl", "hls_container", "thumbnail_mode",
              "thumbnail_decodes", "dash_subtitle_format", "workers",
              "shutdown_grace", "drain_delay", "log_level", "state_dir", "origin_timeout", "origin_connect_timeout",
              "origin_tries", "s3_endpoint", "s3_region", "s3_profile", "fallback_store")


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags actually given, under their config-file keys (gateway/runtime/config_file.py)."""
    values = {key: getattr(args, key) for key in _FLAG_KEYS if getattr(args, key, None) is not None}
    if getattr(args, "segment_duration", None) is not None:
        values["segment_duration_ms"] = int(round(args.segment_duration * 1000))
    return values


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from flags alone (``gateway demo``): what is not given keeps its default."""
    values = flag_overrides(args)
    return Settings(**{k: v for k, v in values.items() if k in Settings.__dataclass_fields__})


def cmd_serve(args: argparse.Namespace) -> int:
    source = ConfigSource(args.config, flag_overrides(args), args.rtmp_config)
    try:
        config = source.load()
    except ConfigError as e:
        print(f"gateway serve: {e}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, config.settings.access_log_format)
    store = config.settings.origin or config.settings.store
    if args.check:  # as nginx -t: the configuration loaded, then its catalog and media read (gateway check)
        from .check import check_settings

        print(f"gateway serve --check: the configuration is valid; checking {store}", file=sys.stderr)
        return check_settings(config.settings)
    examples = [] if config.settings.origin else example_files(config.settings.store)

    def banner(base: str) -> None:
        lines = [f"gateway {__version__}: serving {store} on {base}/"]
        for name in examples:
            path = quote(name)
            lines += [f"  {name}:", f"    HLS   {base}/hls/{path}/master.m3u8",
                      f"    DASH  {base}/dash/{path}/manifest.mpd", f"    MP4   {base}/mp4/{path}"]
        if examples:
            lines.append(f"  status page and test player: {base}/")
        print("\n".join(lines), flush=True)

    from .serve import serve_config  # (on demand: the catalog commands never load the server)

    return serve_config(config, banner, reload=source.load)


def example_files(store: Path, limit: int = 2, scanned: int = 500) -> list[str]:
    """A few MP4 files of a local store to show playback URLs for: the first found in name order, top level first,
    then one folder down, looking at ``scanned`` directory entries at most (a big NFS store is not walked)."""
    found: list[str] = []
    folders = [""]
    seen = 0
    while folders and len(found) < limit and seen < scanned:
        folder = folders.pop(0)
        try:
            entries = sorted(os.scandir(store / folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if entry.name.startswith(".") or seen > scanned:
                continue
            rel = f"{folder}/{entry.name}" if folder else entry.name
            if entry.is_file() and entry.name.lower().endswith(".mp4") and len(found) < limit:
                found.append(rel)
            elif entry.is_dir() and not folder:
                folders.append(rel)
    return found


def load_rtmp_config(path: Path | None) -> RtmpConfig:
    """The ``[rtmp]`` table of a TOML file (or the whole file when it has no such table); defaults without a file."""
    return RtmpConfig() if path is None else RtmpConfig.from_dict(load_rtmp_table(path))


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
        lines += [
            "",
            f"Open {base}/ for the status page and its built-in hls.js/dash.js player (no CDN), or play any URL",
            "above with `ffplay URL` or in Safari. Ctrl-C stops the server.",
        ]
        print("\n".join(lines), flush=True)

    from .serve import serve

    serve(settings, banner)
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    from .completion import script

    sys.stdout.write(script(_parser(), args.shell))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from packagers.errors import PackagerError, user_message

    from ..tools.probe import describe, describe_json

    try:
        ms = int(round(args.segment_duration * 1000))
        print(json.dumps(describe_json(args.file, ms), indent=2) if args.json else describe(args.file, ms))
    except PackagerError as e:
        print(f"gateway probe: {e.code.name}: {user_message(e.message)}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"gateway probe: {args.file}: {os.strerror(e.errno) if e.errno else e}", file=sys.stderr)
        return 1
    return 0


def run_bench(argv: list[str]) -> int:
    try:
        from ..tools import bench
    except ImportError as e:
        print(f"gateway bench: not available ({e})", file=sys.stderr)
        return 2
    return bench.main(argv)
