"""The browser half of `gateway bench live` (gateway/ may not import tests/, so the bench runs this as a script):
one player (hls.js, hls.js low-latency, dash.js) in headless Chromium plays a live stream of the clock source
(gateway/tools/clock_source.py) with player.html's ``clock=1`` mode, for ``--seconds`` counted from the browser's
start, and prints one JSON line: the [shown ms, burnt ms] samples and what the player reported.

    python -m tests.bench.live_browser --kind hls --config '{"lowLatencyMode": true}' --seconds 20 MANIFEST_URL
"""
from __future__ import annotations

import argparse
import json
import sys

from tests.e2e.browser_player import missing_tools, run_player, serve_player


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.live_browser")
    p.add_argument("url")
    p.add_argument("--kind", default="hls", choices=("hls", "dash"))
    p.add_argument("--config", default=None, help="JSON merged into the player library's configuration")
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(json.dumps({"skipped": f"no {', '.join(missing)}"}), flush=True)
        return 0
    with serve_player() as player_url:
        # a live stream never reaches currentTime 1e9: the run lasts ``seconds`` (play.mjs's timeout)
        report = run_player(player_url + "?clock=1", args.url, kind=args.kind, seconds=1e9, timeout=args.seconds,
                            config=json.loads(args.config) if args.config else None)
    keep = ("clock", "errors", "totalVideoFrames", "droppedVideoFrames", "videoHeight", "latency", "events", "elapsed")
    print(json.dumps({k: report.get(k) for k in keep}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
