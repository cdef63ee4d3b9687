"""Which store files are caption sidecars, and the language a caption file's name gives.

A url set may name caption files next to the media (``,movie.mp4,movie_eng.srt,movie_fra.vtt,.urlset``): they are
told apart by extension, and their language comes from the catalog (an entry's ``lang:<code>`` tag) or else from the
name: ``<anything>[._-]<ISO 639-2 code>.<vtt|srt>``; "und" when neither says.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from ..naming import TrackSpec

CAPTION_EXTENSIONS = (".vtt", ".webvtt", ".srt")
_LANGUAGE_IN_NAME = re.compile(r".*[._-]([a-z]{3})\.(?:vtt|webvtt|srt)", re.IGNORECASE)


def is_caption_path(path: str) -> bool:
    return path.lower().endswith(CAPTION_EXTENSIONS)


def caption_problem(path: str) -> str | None:
    """Why ``path`` cannot be a caption file (None if it can)."""
    if not is_caption_path(path):
        return f"a caption file ends with {', '.join(CAPTION_EXTENSIONS)}"
    return None


def language_from_name(path: str) -> str:
    """ISO 639-2 code the file name ends with (``movie_eng.vtt`` → eng), else "und"."""
    m = _LANGUAGE_IN_NAME.fullmatch(posixpath.basename(path))
    return m.group(1).lower() if m else "und"


@dataclass(frozen=True)
class CaptionSource:
    """A caption file of a media set: its ``-fN`` number (after the media files of the url set, in url order), the
    language its name gives (the catalog may know better: the gateway passes that to the manifest writers) and its
    store path. Parsed only when a caption file is asked for, so a broken one fails its own requests only."""

    number: int
    language: str
    source: str


@dataclass(frozen=True)
class CaptionRendition:
    """What a manifest says of a caption file: HLS EXT-X-MEDIA TYPE=SUBTITLES, a DASH text AdaptationSet."""

    spec: TrackSpec  # -fN: the caption file's number in the url set
    language: str  # RFC 5646 tag (en, fr), "" when unknown
    name: str  # what players list (English, Français, or the code)
    default: bool = False
