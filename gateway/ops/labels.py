"""The (protocol, type) label of every request, for gateway/ops/metrics.py: bounded values, taken from what the URL
grammar parsed (the http layer puts it on the request), so that a label never holds anything the client chose."""
from __future__ import annotations

from aiohttp import web

from rtmp.live import LIVE_FILE, MASTER_PLAYLIST, MEDIA_PLAYLIST, MPD

# the (protocol, type) label of a request, put there by the http layer from what the URL grammar parsed
# (gateway/http/app.py ``dispatch``, gateway/http/live.py); a request it never parsed gets ``fallback_label``
REQUEST_LABEL = (web.RequestKey("metrics_label", tuple) if hasattr(web, "RequestKey")
                 else "gateway.ops.metrics.label")
# first path segment → protocol label, for paths the grammar refused (the type is then "other")
_PROTOCOL_OF_HEAD = {"hls": "hls", "dash": "dash", "mss": "mss", "hds": "hds", "mp4": "mp4", "live": "live",
                     "p": "playmanifest", "thumb": "thumb"}
_LIVE_MANIFESTS = frozenset((MEDIA_PLAYLIST, MASTER_PLAYLIST, MPD))


def request_label(request: web.BaseRequest) -> tuple[str, str]:
    """(protocol, type): protocol in hls|dash|mss|hds|mp4|thumb|live|playmanifest|other, type in
    manifest|segment|init|key|mp4|thumb|other. Every request gets one, malformed ones included, and a label never holds
    anything the client chose."""
    label = request.get(REQUEST_LABEL)
    return label if label is not None else fallback_label(request.rel_url.raw_path)


def fallback_label(raw_path: str) -> tuple[str, str]:
    """The label of a path the grammar did not parse (refused, not a media route, or a method answered before
    parsing): the protocol its first segment names, if it names one, and type "other"."""
    head = raw_path.split("?", 1)[0].split("/")[1:2]
    return _PROTOCOL_OF_HEAD.get(head[0] if head else "", "other"), "other"


def live_label(name: str) -> tuple[str, str]:
    """The label of a ``/live/<app>/<stream>/<name>`` file, from the live grammar (``rtmp.live.LIVE_FILE``, the names
    the live packager writes): its playlists and MPD, its DASH init segments, and its segments."""
    if not LIVE_FILE.fullmatch(name):
        return "live", "other"
    if name in _LIVE_MANIFESTS:
        return "live", "manifest"
    return "live", "init" if name.endswith("-init.mp4") else "segment"
