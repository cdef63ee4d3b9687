"""WebVTT output: segmented for HLS subtitle renditions (RFC 8216 §3.5), one whole file for DASH.

Times. Cues are written on the output timeline: the track's times minus ``offset_ms`` (the clip start), so a clip
from 10 s shows a cue at 12 s at 2 s. Cues that end at or before 0 are dropped, cues that start before 0 start at 0.

Segments. A segment holds every cue that overlaps its window [start_ms, end_ms), with the cue's own times (not cut
to the window): a cue spanning a boundary is repeated in each segment it overlaps and players (hls.js, shaka,
Safari) de-duplicate identical cues; Apple's authoring spec does the same. ``X-TIMESTAMP-MAP`` maps LOCAL 0 to the
MPEG-TS time the caller's media puts at presentation time 0.

STYLE blocks of the source are written before the cues (``styles=False`` leaves them out): Safari applies them,
hls.js skips them (its parser takes the block for a bad cue); ffmpeg 5.1's WebVTT demuxer (Debian 12) reads no cue
at all from a file that has one.
"""
from __future__ import annotations

from typing import Iterable

from ..errors import bad_request
from .parse import CaptionTrack, Cue

MPEGTS_WRAP = 1 << 33  # 33-bit PTS (ISO/IEC 13818-1 §2.4.3.7)


def timestamp(ms: int) -> str:
    """WebVTT timestamp hh:mm:ss.ttt (hours always written, two digits or more)."""
    seconds, ms = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{ms:03d}"


def shifted(track: CaptionTrack, start_ms: int, end_ms: int | None, offset_ms: int) -> Iterable[tuple[Cue, int, int]]:
    """(cue, start, end) on the output timeline for the cues overlapping the output window [start_ms, end_ms) (None:
    to the end), never before output time 0."""
    stop = int(track.ends.max(initial=0)) + 1 if end_ms is None else end_ms
    lo = max(start_ms, 0) + offset_ms
    for i in track.overlapping(lo, stop + offset_ms).tolist():
        cue = track.cues[i]
        yield cue, max(cue.start_ms - offset_ms, 0), max(cue.end_ms - offset_ms, 0)


def _cue_block(cue: Cue, start: int, end: int) -> str:
    timing = f"{timestamp(start)} --> {timestamp(end)}"
    if cue.settings:
        timing += " " + cue.settings
    # A text line holding '-->' would end the cue (§6.1); SRT text may have one. '&gt;' reads back as '>'.
    text = cue.text.replace("-->", "--&gt;")
    return f"{cue.id}\n{timing}\n{text}\n\n" if cue.id else f"{timing}\n{text}\n\n"


def _document(track: CaptionTrack, header: str, cues: Iterable[tuple[Cue, int, int]], styles: bool) -> str:
    parts = [header, "\n"]
    if styles:
        parts += (f"STYLE\n{style}\n\n" for style in track.styles)
    parts += (_cue_block(cue, start, end) for cue, start, end in cues)
    return "".join(parts)


def build_webvtt_segment(track: CaptionTrack, start_ms: int, end_ms: int, offset_ms: int = 0,
                         mpegts: int | None = None, styles: bool = True) -> str:
    """One HLS WebVTT segment for the media segment [start_ms, end_ms) of the output timeline; with ``mpegts`` (the
    90 kHz MPEG-TS time of output time 0), the X-TIMESTAMP-MAP header that aligns it with TS or fMP4 media."""
    if end_ms < start_ms:
        raise bad_request(f"build_webvtt_segment: window [{start_ms}, {end_ms}) ends before it starts")
    header = "WEBVTT\n"
    if mpegts is not None:
        header += f"X-TIMESTAMP-MAP=MPEGTS:{int(mpegts) % MPEGTS_WRAP},LOCAL:00:00:00.000\n"
    return _document(track, header, shifted(track, start_ms, end_ms, offset_ms), styles)


def build_webvtt_file(track: CaptionTrack, offset_ms: int = 0, duration_ms: int | None = None,
                      styles: bool = True) -> str:
    """The whole track as one WebVTT file (DASH text AdaptationSet), clipped to [0, duration_ms): cues are cut to
    end by the clip's end."""
    cues = shifted(track, 0, duration_ms, offset_ms)
    if duration_ms is not None:
        cues = ((cue, start, min(end, duration_ms)) for cue, start, end in cues)
    return _document(track, "WEBVTT\n", cues, styles)
