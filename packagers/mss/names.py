"""Smooth Streaming names (MS-SSTR §2.2.2, §2.2.6), both ways: the StreamIndex@Url template the manifest writes, and
what the last path segments of a URL say.

    <media path>/manifest (or Manifest)                          the client manifest
    <media path>/manifest-a2-lfra                                a manifest listing fewer (``packagers.selection``)
    <media path>/QualityLevels(<bitrate>)/Fragments(<stream>=<t>)  one fragment, named by stream, bitrate and start
                                                                   time (``packagers.mss.manifest.locate_fragment``
                                                                   maps it back to a segment)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ..errors import bad_request
from ..selection import Listing

MANIFEST_NAME = "manifest"
MANIFEST_NAMES = (MANIFEST_NAME, "Manifest")  # IIS answers both; players use either
_MANIFEST = re.compile(r"[Mm]anifest(-.*)")
_QUALITY_LEVEL = re.compile(r"QualityLevels\(([0-9]{1,10})\)")
_FRAGMENT = re.compile(r"Fragments\(([A-Za-z0-9_]{1,32})=([0-9]{1,20})\)")


@dataclass(frozen=True)
class SmoothFile:
    """What the URL names: the manifest, or one fragment of a stream."""

    kind: str  # manifest | segment
    stream: str = ""  # StreamIndex Name: video, audio, audio_fra...
    bitrate: int = 0  # QualityLevel Bitrate
    start: int = 0  # in the stream's timescale
    listing: Listing = Listing()  # manifests only: a name's selectors

    @property
    def path_segments(self) -> int:
        """How many path segments the name takes: the manifest one, a fragment two."""
        return 1 if self.kind == "manifest" else 2


def url_template(stream: str) -> str:
    """StreamIndex@Url: the player fills in the bitrate and the start time."""
    return f"QualityLevels({{bitrate}})/Fragments({stream}={{start time}})"


def fragment_path(stream: str, bitrate: int, start: int) -> str:
    """The two path segments of one fragment, as a player fills in ``url_template``."""
    return url_template(stream).replace("{bitrate}", str(bitrate)).replace("{start time}", str(start))


def parse_name(segments: Sequence[str]) -> SmoothFile:
    """What the last path segments after ``/mss/`` name; at least one segment (the media path) must precede the
    name. BAD_REQUEST otherwise."""
    if len(segments) >= 2 and segments[-1] in MANIFEST_NAMES:
        return SmoothFile("manifest")
    if len(segments) >= 2 and (m := _MANIFEST.fullmatch(segments[-1])):
        return SmoothFile("manifest", listing=Listing.parse(m.group(1)))
    if len(segments) >= 3:
        quality, fragment = _QUALITY_LEVEL.fullmatch(segments[-2]), _FRAGMENT.fullmatch(segments[-1])
        if quality and fragment:
            return SmoothFile("segment", fragment.group(1), int(quality.group(1)), int(fragment.group(2)))
    raise bad_request(
        "parse_mss: expected /mss/<media path>/manifest or .../QualityLevels(<bitrate>)/Fragments(<stream>=<t>)")
