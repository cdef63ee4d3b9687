"""Live HLS playlists (RFC 8216): a sliding-window media playlist and its master playlist, from plain data.

The live packager (``rtmp.live``) calls these after each segment; they never see a muxer or a file. Times arrive as
integer ticks with their timescale and become seconds only here.

Media playlist (§4.3.3, §6.2.1-2): EXT-X-MEDIA-SEQUENCE is the number of the first listed segment, and
EXT-X-DISCONTINUITY-SEQUENCE counts the discontinuities that slid out of the window, so a player reloading the
playlist can line up both. EXT-X-TARGETDURATION is the ceiling of the longest EXTINF the caller has seen (it passes a
minimum so the value never shrinks while the stream runs; §6.2.1 forbids changing it). EXT-X-PROGRAM-DATE-TIME maps
the first listed segment, and every segment after a discontinuity, to the wall clock at which its first sample
arrived. EXT-X-ENDLIST once the publisher stopped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

HLS_VERSION = 3     # floating-point EXTINF (§7)


@dataclass(frozen=True)
class LiveSegment:
    number: int                 # media sequence number
    uri: str                    # relative to the playlist
    duration: int               # ticks
    timescale: int
    wall_clock: float           # POSIX seconds when the segment's first sample arrived
    discontinuity: bool = False  # first segment of a new timeline (republish, codec change)

    @property
    def seconds(self) -> float:
        return self.duration / self.timescale


@dataclass(frozen=True)
class LiveVariant:
    uri: str
    bandwidth: int              # bits/s, peak over the listed segments
    average_bandwidth: int
    codecs: tuple[str, ...]
    width: int = 0
    height: int = 0
    frame_rate: float = 0.0


def program_date_time(posix: float) -> str:
    """ISO 8601 with milliseconds and a Z (§4.3.2.6)."""
    when = datetime.fromtimestamp(posix, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def target_duration(segments: Sequence[LiveSegment], minimum: int = 1) -> int:
    """Ceiling of the longest segment, at least ``minimum`` seconds."""
    longest = max((s.seconds for s in segments), default=0.0)
    return max(minimum, 1, math.ceil(round(longest, 6)))


def build_live_media_playlist(segments: Sequence[LiveSegment], *, discontinuity_sequence: int = 0,
                              ended: bool = False, min_target_duration: int = 1) -> str:
    """The window ``segments`` (consecutive numbers, oldest first)."""
    first = segments[0].number if segments else 0
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{HLS_VERSION}",
        f"#EXT-X-TARGETDURATION:{target_duration(segments, min_target_duration)}",
        f"#EXT-X-MEDIA-SEQUENCE:{first}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    for i, s in enumerate(segments):
        if s.discontinuity and i:
            lines.append("#EXT-X-DISCONTINUITY")
        if i == 0 or s.discontinuity:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(s.wall_clock)}")
        lines.append(f"#EXTINF:{s.seconds:.3f},")
        lines.append(s.uri)
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def build_live_master_playlist(variants: Sequence[LiveVariant]) -> str:
    """One EXT-X-STREAM-INF per variant (§4.3.4.2): BANDWIDTH (peak), AVERAGE-BANDWIDTH, CODECS, RESOLUTION."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{HLS_VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in variants:
        attrs = [f"BANDWIDTH={max(1, v.bandwidth)}", f"AVERAGE-BANDWIDTH={max(1, v.average_bandwidth)}",
                 f'CODECS="{",".join(v.codecs)}"']
        if v.width and v.height:
            attrs.append(f"RESOLUTION={v.width}x{v.height}")
        if v.frame_rate:
            attrs.append(f"FRAME-RATE={v.frame_rate:.3f}")
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(v.uri)
    return "\n".join(lines) + "\n"


def bandwidth(sizes: Sequence[int], seconds: Sequence[float]) -> tuple[int, int]:
    """(peak, average) bits per second of segments with these byte sizes and durations (BANDWIDTH, AVERAGE-BANDWIDTH
    of §4.3.4.2 measured on real segments)."""
    pairs = [(n, d) for n, d in zip(sizes, seconds) if d > 0]
    if not pairs:
        return 0, 0
    peak = max(n * 8 / d for n, d in pairs)
    average = sum(n for n, _ in pairs) * 8 / sum(d for _, d in pairs)
    return math.ceil(peak), math.ceil(average)
