"""The player or browser family of a request's User-Agent, a bounded label for audience analytics (issue 18).

User-Agent strings lie by design: every Chromium browser says "Chrome/" and "Safari/", Edge and Opera add their own
token, Safari's real mark is "Version/" next to "Safari/". So the rules are ordered, most specific first:

1. Edge: "Edg/" (desktop), "EdgA/" (Android), "EdgiOS/" (iOS), "Edge/" (legacy EdgeHTML).
2. ExoPlayer: "ExoPlayerLib/" (ExoPlayer 2, ``ExoPlayerLibraryInfo.VERSION_SLASHY``) or "AndroidXMedia3/"
   (androidx.media3, ``MediaLibraryInfo.VERSION_SLASHY``, which ``Util.getUserAgent`` appends).
3. AVPlayer: "AppleCoreMedia/" (what AVFoundation sends on iOS, tvOS, macOS) or "AVPlayer".
4. Firefox: "Firefox/" or "FxiOS/".
5. Opera ("OPR/", "OPiOS/") is none of ours: "other", checked before Chrome, whose token it carries.
6. Chrome: "Chrome/", "CriOS/" (iOS), "HeadlessChrome/". Other Chromium browsers that do not add a token we know
   (Samsung Internet, Brave) count as Chrome.
7. Safari: "Safari/" with "Version/" (and none of the above).
Everything else (curl, ffmpeg's "Lavf/", VLC, bots, nothing) is "other".

A player sends the same User-Agent on every request, so results are memoised in a bounded cache; input is cut to
512 characters first, so a huge header costs one slice and can neither slow the matching nor bloat the cache.
"""
from __future__ import annotations

from functools import lru_cache

BROWSERS = ("Chrome", "Safari", "Firefox", "Edge", "ExoPlayer", "AVPlayer", "other")
MAX_USER_AGENT_CHARS = 512

# (family, the tokens any of which names it), in the order they are tried
_RULES = (
    ("Edge", ("Edg/", "EdgA/", "EdgiOS/", "Edge/")),
    ("ExoPlayer", ("ExoPlayer", "AndroidXMedia3/")),
    ("AVPlayer", ("AppleCoreMedia/", "AVPlayer")),
    ("Firefox", ("Firefox/", "FxiOS/")),
    ("other", ("OPR/", "OPiOS/")),
    ("Chrome", ("Chrome/", "CriOS/", "HeadlessChrome/")),
)


def player_of(user_agent: str | None) -> str:
    """One of ``BROWSERS`` for a User-Agent header value (None or "" when the request had none)."""
    if not user_agent or not isinstance(user_agent, str):
        return "other"
    return _family_of(user_agent[:MAX_USER_AGENT_CHARS])


@lru_cache(maxsize=1024)
def _family_of(user_agent: str) -> str:
    for family, tokens in _RULES:
        if any(token in user_agent for token in tokens):
            return family
    if "Safari/" in user_agent and "Version/" in user_agent:
        return "Safari"
    return "other"
