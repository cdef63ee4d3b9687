"""Store paths from URL paths: per-segment percent-decoding, the names we hand to the filesystem, and the files one
request addresses.

We parse the *raw* path (``request.rel_url.raw_path``) and percent-decode each segment on its own: aiohttp neither
resolves dot segments nor keeps ``%2F`` apart from ``/`` in ``request.path``, so only per-segment decoding can tell
``a%2Fb`` from ``a/b`` and see ``%2e%2e`` as the ``..`` it is. Any segment that decodes to something a filesystem
would interpret (``.``/``..``, a slash, a backslash, NUL) is rejected here; ``gateway.origin.store`` checks
containment again after ``realpath``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from urllib.parse import unquote

from packagers.captions.files import is_caption_path
from packagers.clipping import Clip
from packagers.errors import ErrorCode, PackagerError, bad_request
from packagers.selection import Narrowing

URL_SET_EXTENSION = ".urlset"
MAX_RAW_PATH = 4096  # longer paths get 414; aiohttp itself refuses request lines over 8190 bytes
MAX_SEGMENT = 255  # NAME_MAX of common filesystems


class UrlTooLong(PackagerError):
    """A path longer than any store path we serve: answered 414 before any parsing."""

    def __init__(self, length: int):
        super().__init__(ErrorCode.BAD_REQUEST, f"parse_path: request path of {length} bytes is too long")


@dataclass(frozen=True)
class MediaTarget:
    """The store files one media request addresses: one file, or the files of a url set (in url order), and the
    part of them the URL's path parameters ask for."""

    paths: tuple[str, ...]  # store-relative, '/'-separated, validated segments
    is_url_set: bool
    name: str = field(default="", compare=False)  # the decoded URL path naming it (what a signed token covers)
    clip: Clip = Clip()  # clipFrom/clipTo
    narrowing: Narrowing = Narrowing()  # /tracks/, /shift/ and a manifest name's selectors (-f1-a2-leng)
    caption_language: str | None = None  # /lang/<code>/: the caption files' language (ISO 639-2/T)

    @functools.cached_property
    def caption_paths(self) -> tuple[str, ...]:
        """The url set's caption sidecar files (.vtt, .srt), in url order: once per parsed URL, not per request."""
        return tuple(p for p in self.paths if is_caption_path(p))

    @property
    def features(self) -> frozenset[str]:
        """The partner-switchable features naming this part of the files uses (delivery_profiles.FEATURES)."""
        return frozenset(name for name, used in (("clipping", not self.clip.is_whole),
                                                 ("track_selection", not self.narrowing.is_default)) if used)


def split_path(raw_path: str) -> list[str]:
    """Decoded, validated segments of a raw path (``/a/b%20c`` → ``['a', 'b c']``)."""
    if len(raw_path) > MAX_RAW_PATH:
        raise UrlTooLong(len(raw_path))
    if not raw_path.startswith("/"):
        raise bad_request("split_path: request path must start with '/'")
    segments = raw_path[1:].split("/")
    return [_decode_segment(s) for s in segments]


def _decode_segment(raw: str) -> str:
    try:
        text = unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise bad_request("split_path: path is not valid percent-encoded UTF-8") from None
    if text.endswith(URL_SET_EXTENSION):
        # a url set's names may hold a '%2F' (files in subdirectories: captions in subs/); each name of it is
        # checked component by component once the set is split (gateway.http.urls), so '/' alone passes here
        check_name(text.replace("/", "_"))
    else:
        check_name(text)
    return text


def check_relative_path(path: str) -> None:
    """A store-relative path of '/'-separated names, each one ``check_name`` accepts."""
    for name in path.split("/"):
        check_name(name)


def check_name(name: str) -> None:
    """One path component we are willing to hand to the filesystem; hidden names (``.x``, ``..``) are refused."""
    problem = name_problem(name)
    if problem is not None:
        raise bad_request(f"check_name: {problem}")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a path component of a store file (None if it can): the one rule for URLs and catalog
    documents alike."""
    if not name:
        return "empty path segment ('//' or trailing '/')"
    if name.startswith("."):
        return "path segments may not start with '.'"
    if len(name.encode("utf-8")) > MAX_SEGMENT:
        return f"path segment longer than {MAX_SEGMENT} bytes"
    if any(c in name for c in "/\\") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "path segment contains a slash, backslash or control character"
    return None
