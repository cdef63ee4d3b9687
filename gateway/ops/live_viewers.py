"""HTTP viewers of live streams: distinct clients that polled a stream's playlists lately (gateway/ops/metrics.py
publishes the counts next to the RTMP players of the relay)."""
from __future__ import annotations

import time

from aiohttp import web

from packagers.errors import PackagerError

from ..origin.paths import split_path

VIEWER_WINDOW_SECONDS = 30.0


def client_id(request: web.BaseRequest) -> str:
    """Who is watching, for the HTTP viewer approximation: the first X-Forwarded-For hop (behind the load balancer)
    or the peer address, plus the user agent (several players behind one NAT count once per browser kind)."""
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
    return f"{forwarded or request.remote or '?'}|{request.headers.get('User-Agent', '')[:200]}"


class LiveViewers:
    """Distinct clients per live stream (and per quality) that fetched a playlist/MPD in the last ``window`` seconds.

    HTTP players poll live playlists every target duration, so a client that stopped polling for 30 s has left.
    Qualities: the live packager (rtmp/live) repackages the published stream as it is, so its media playlist
    (``index.m3u8``) and its MPD are quality ``source``, like RTMP players; another media playlist name (renditions,
    if they ever exist) is its own quality. A master playlist counts for the stream only (its player then polls a
    media playlist). Per worker: with several workers a client whose requests land on two workers within the window
    counts twice (documented in docs/metrics.md).
    """

    def __init__(self, window: float = VIEWER_WINDOW_SECONDS, max_clients: int = 100_000):
        self.window = window
        self.max_clients = max_clients
        self._seen: dict[tuple[str, str, str], dict[str, float]] = {}  # (stream, protocol, quality) → client → time

    def saw(self, raw_path: str, client: str, now: float | None = None) -> None:
        try:
            parts = split_path(raw_path.split("?", 1)[0])
        except PackagerError:  # a malformed path was answered 4xx anyway
            return
        if len(parts) != 4 or parts[0] != "live":
            return
        name = parts[3]
        if name.endswith(".m3u8"):
            stem = name[: -len(".m3u8")]
            protocol, quality = "hls", ("" if stem == "master" else "source" if stem == "index" else stem)
        elif name.endswith(".mpd"):
            protocol, quality = "dash", "source"
        else:
            return
        clients = self._seen.setdefault((f"{parts[1]}/{parts[2]}", protocol, quality), {})
        if client in clients or len(clients) < self.max_clients:
            clients[client] = time.monotonic() if now is None else now

    def counts(self, now: float | None = None) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """({(stream, protocol): viewers}, {(stream, quality): viewers}), forgetting clients older than the window."""
        horizon = (time.monotonic() if now is None else now) - self.window
        by_stream: dict[tuple[str, str], set[str]] = {}
        by_quality: dict[tuple[str, str], set[str]] = {}
        for key in list(self._seen):
            clients = self._seen[key]
            for client in [c for c, t in clients.items() if t < horizon]:
                del clients[client]
            if not clients:
                del self._seen[key]
                continue
            stream, protocol, quality = key
            by_stream.setdefault((stream, protocol), set()).update(clients)
            if quality:
                by_quality.setdefault((stream, quality), set()).update(clients)
        return {k: len(v) for k, v in by_stream.items()}, {k: len(v) for k, v in by_quality.items()}
