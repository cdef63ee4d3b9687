"""Live HLS playlists (RFC 8216): a sliding-window media playlist and its master playlist, from plain data.

The live packager (``rtmp.live``) calls these after each segment; they never see a muxer or a file. Times arrive as
integer ticks with their timescale and become seconds only here.

Media playlist (§4.3.3, §6.2.1-2): EXT-X-MEDIA-SEQUENCE is the number of the first listed segment, and
EXT-X-DISCONTINUITY-SEQUENCE counts the discontinuities that slid out of the window, so a player reloading the
playlist can line up both. EXT-X-TARGETDURATION is the ceiling of the longest EXTINF the caller has seen (it passes a
minimum so the value never shrinks while the stream runs; §6.2.1 forbids changing it). EXT-X-PROGRAM-DATE-TIME maps
the first listed segment, and every segment after a discontinuity, to the wall clock at which its first sample
arrived. EXT-X-ENDLIST once the publisher stopped.

Low latency (draft-pantos-hls-rfc8216bis §4.4.3.7-8, §4.4.4.9, §4.4.5.3, §6.2.5), with ``LowLatency``: fMP4 segments
(EXT-X-MAP where the init segment changes), each recent segment's parts (EXT-X-PART, INDEPENDENT=YES when a part
starts on a key frame) before its EXTINF, the parts of the segment in progress after the last segment, then one
EXT-X-PRELOAD-HINT for the next part; EXT-X-SERVER-CONTROL says the server blocks reloads (CAN-BLOCK-RELOAD),
where players should stay behind (PART-HOLD-BACK = 3 part targets) and, when the window is long enough to be
worth it, how far back a delta update may skip (CAN-SKIP-UNTIL = 6 target durations). ``skip`` renders the
Playlist Delta Update of the same playlist (EXT-X-SKIP, version 9).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

HLS_VERSION = 3     # floating-point EXTINF (§7)
LL_VERSION = 6      # EXT-X-MAP in a media playlist without I-frames only
DELTA_VERSION = 9   # EXT-X-SKIP
PART_HOLD_BACK_PARTS = 3    # PART-HOLD-BACK in part targets (at least 2; 3 recommended, §4.4.3.8)
SKIP_TARGETS = 6            # CAN-SKIP-UNTIL in target durations (at least 6, §4.4.3.8)
PARTS_LISTED_TARGETS = 3    # parts stay listed for segments this many target durations from the end (§6.2.2)


@dataclass(frozen=True)
class LivePart:
    uri: str
    duration: float             # seconds
    independent: bool           # starts with a key frame (or has no video)


@dataclass(frozen=True)
class LiveSegment:
    number: int                 # media sequence number
    uri: str                    # relative to the playlist
    duration: int               # ticks
    timescale: int
    wall_clock: float           # POSIX seconds when the segment's first sample arrived
    discontinuity: bool = False  # first segment of a new timeline (republish, codec change)
    parts: tuple[LivePart, ...] = ()    # low latency: the parts this segment is made of
    map_uri: str | None = None  # fMP4: its init segment

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


@dataclass(frozen=True)
class LowLatency:
    """What a low-latency media playlist adds: the part target, the parts of the segment in progress, the next
    part's URI (None once the publisher left) and the map of the segment in progress when no segment lists it."""
    part_target: float          # seconds, PART-TARGET: no part is longer
    trailing: tuple[LivePart, ...] = ()
    preload_hint: str | None = None
    trailing_map: str | None = None
    number: int = 0             # the segment in progress (EXT-X-MEDIA-SEQUENCE while no segment is complete)
    # EXT-X-RENDITION-REPORT (§4.4.5.4) of the other renditions of the same master: (URI, LAST-MSN, LAST-PART or
    # None), where a player switching to one would ask its blocking reload
    reports: tuple[tuple[str, int, int | None], ...] = ()


def build_live_media_playlist(segments: Sequence[LiveSegment], *, discontinuity_sequence: int = 0,
                              ended: bool = False, min_target_duration: int = 1,
                              low_latency: LowLatency | None = None, skip: int = 0,
                              cache: dict[int, str] | None = None) -> str:
    """The window ``segments`` (consecutive numbers, oldest first); with ``skip``, its delta update without the
    first ``skip`` segments (``skippable`` says how many may go). ``cache``: the caller's dict of segment number →
    its lines, for the segments whose lines no longer change (not the first listed, parts no longer listed), so
    that a long DVR window is not formatted again for every part."""
    first = segments[0].number if segments else low_latency.number if low_latency else 0
    target = target_duration(segments, min_target_duration)
    fmp4 = low_latency is not None or any(s.map_uri for s in segments)
    version = DELTA_VERSION if skip else LL_VERSION if fmp4 else HLS_VERSION
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", f"#EXT-X-TARGETDURATION:{target}"]
    if low_latency is not None:
        control = ["CAN-BLOCK-RELOAD=YES", f"PART-HOLD-BACK={PART_HOLD_BACK_PARTS * low_latency.part_target:.3f}"]
        if can_skip_until(segments, target):
            control.append(f"CAN-SKIP-UNTIL={SKIP_TARGETS * target:.1f}")
        lines += ["#EXT-X-SERVER-CONTROL:" + ",".join(control),
                  f"#EXT-X-PART-INF:PART-TARGET={low_latency.part_target:.3f}"]
    lines += [f"#EXT-X-MEDIA-SEQUENCE:{first}", f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}",
              "#EXT-X-INDEPENDENT-SEGMENTS"]
    if skip:
        if segments[skip].map_uri:
            lines.append(f'#EXT-X-MAP:URI="{segments[skip].map_uri}"')
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skip}")
    # parts are listed for the segments that end within PARTS_LISTED_TARGETS target durations of the end
    parts_from, left = len(segments), PARTS_LISTED_TARGETS * target
    while parts_from > 0 and left > 0:
        parts_from -= 1
        left -= segments[parts_from].seconds
    last_map = segments[skip].map_uri if skip else None
    for i in range(skip, len(segments)):
        s = segments[i]
        settled = cache is not None and skip < i < parts_from
        if settled and s.number in cache:
            lines.append(cache[s.number])
            last_map = s.map_uri or last_map
            continue
        start = len(lines)
        if s.discontinuity and i:
            lines.append("#EXT-X-DISCONTINUITY")
        if s.map_uri and s.map_uri != last_map:
            lines.append(f'#EXT-X-MAP:URI="{s.map_uri}"')
            last_map = s.map_uri
        if i == skip or s.discontinuity:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(s.wall_clock)}")
        if i >= parts_from:
            lines += map(_part_line, s.parts)
        lines.append(f"#EXTINF:{s.seconds:.3f},")
        lines.append(s.uri)
        if settled:
            cache[s.number] = "\n".join(lines[start:])
    if low_latency is not None and not ended:
        if low_latency.trailing_map and low_latency.trailing_map != last_map:
            if segments:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f'#EXT-X-MAP:URI="{low_latency.trailing_map}"')
        lines += map(_part_line, low_latency.trailing)
        if low_latency.preload_hint:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{low_latency.preload_hint}"')
        for uri, msn, part in low_latency.reports:
            lines.append(f'#EXT-X-RENDITION-REPORT:URI="{uri}",LAST-MSN={msn}'
                         + (f",LAST-PART={part}" if part is not None else ""))
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _part_line(part: LivePart) -> str:
    independent = ",INDEPENDENT=YES" if part.independent else ""
    return f'#EXT-X-PART:DURATION={part.duration:.3f},URI="{part.uri}"{independent}'


def can_skip_until(segments: Sequence[LiveSegment], target: int) -> bool:
    """Whether the window is long enough for delta updates to skip anything: CAN-SKIP-UNTIL is advertised only
    then (a window shorter than 6 target durations would always be sent whole)."""
    return sum(s.seconds for s in segments) > SKIP_TARGETS * target


def skippable(segments: Sequence[LiveSegment], target: int) -> int:
    """How many leading segments a delta update replaces by EXT-X-SKIP: those that end more than CAN-SKIP-UNTIL
    before the end of the last one (§6.2.5.1), as long as every segment kept has the first kept one's map (one
    EXT-X-MAP before EXT-X-SKIP says it) and at least one segment is kept."""
    if not can_skip_until(segments, target):
        return 0
    end, k, at = sum(s.seconds for s in segments), 0, 0.0
    while k < len(segments) - 1 and at + segments[k].seconds <= end - SKIP_TARGETS * target:
        at += segments[k].seconds
        k += 1
    maps = {s.map_uri for s in segments[k:]}
    return k if len(maps) <= 1 else 0


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
