"""HLS subtitle renditions (RFC 8216 §4.3.4.1 EXT-X-MEDIA TYPE=SUBTITLES, §3.5 WebVTT segments).

A caption file of a url set is a rendition of the master's ``subs`` group; its media playlist lists one WebVTT segment
per media segment, with the media segments' durations, so a player loads the cues of the part it buffers. The
segments carry ``X-TIMESTAMP-MAP`` (``webvtt.build_webvtt_segment``) so that cue times meet the media timeline:
MPEG-TS presentation time 0 is TS_PTS_OFFSET, fMP4's is 0.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..hls.names import media_playlist_name, segment_name
from ..naming import TrackSpec
from .files import CaptionRendition

SUBTITLE_GROUP = "subs"
SUBTITLE_EXTENSION = "vtt"
_STREAM_INF = "#EXT-X-STREAM-INF:"


def add_subtitles(master: str, renditions: Sequence[CaptionRendition]) -> str:
    """``master`` (a master playlist the HLS writer made) with a ``subs`` group of ``renditions``: their EXT-X-MEDIA
    lines before the first variant, and ``SUBTITLES="subs"`` on every variant (§4.3.4.2)."""
    if not renditions:
        return master
    lines = master.rstrip("\n").split("\n")
    first = next((i for i, line in enumerate(lines) if line.startswith(_STREAM_INF)), len(lines))
    lines = [f'{line},SUBTITLES="{SUBTITLE_GROUP}"' if line.startswith(_STREAM_INF) else line for line in lines]
    return "\n".join(lines[:first] + subtitle_media_lines(renditions) + lines[first:]) + "\n"


def subtitle_media_lines(renditions: Sequence[CaptionRendition]) -> list[str]:
    """The master's EXT-X-MEDIA lines; a variant names the group with ``SUBTITLES="subs"``."""
    lines = []
    for r in renditions:
        attrs = [f"TYPE=SUBTITLES,GROUP-ID=\"{SUBTITLE_GROUP}\",NAME=\"{_quoted(r.name)}\""]
        if r.language:
            attrs.append(f"LANGUAGE=\"{_quoted(r.language)}\"")
        attrs.append(f"DEFAULT={'YES' if r.default else 'NO'},AUTOSELECT=YES")
        attrs.append(f"URI=\"{media_playlist_name(r.spec)}\"")
        lines.append("#EXT-X-MEDIA:" + ",".join(attrs))
    return lines


def build_subtitle_playlist(spec: TrackSpec, durations: np.ndarray) -> str:
    """The media playlist of one caption file: a WebVTT segment per media segment (``durations`` in seconds)."""
    target = max(1, int(np.ceil(float(durations.max())))) if len(durations) else 1
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}", "#EXT-X-MEDIA-SEQUENCE:1",
             "#EXT-X-PLAYLIST-TYPE:VOD"]
    for index, seconds in enumerate(durations.tolist()):
        lines.append(f"#EXTINF:{seconds:.3f},")
        lines.append(segment_name(index, spec, SUBTITLE_EXTENSION))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    """A quoted-string may hold neither '"' nor a line break (RFC 8216 §4.2)."""
    return text.replace('"', "'").replace("\n", " ").replace("\r", " ")
