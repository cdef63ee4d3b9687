"""HLS I-frame playlists for trick play (RFC 8216 §4.3.3.6 EXT-X-I-FRAMES-ONLY, §4.3.4.3 EXT-X-I-FRAME-STREAM-INF).

Each video key frame is a byte range of the TS segment that carries it (its PES's TS packets), so no new segment is
built: ``TsMuxer.key_frame_ranges`` computes the ranges from the sample tables. As nginx-vod-module: one
``iframes<suffix>.m3u8`` per video variant of a TS master playlist, with the variant's track selection (so the
ranges point into the very segments the variant plays), not with encryption; an I-frame lasts until the next key
frame, the last one until the end of the presentation. Beyond nginx-vod-module, ``EXT-X-MAP`` names the PAT and PMT
at the head of the first segment: the Media Initialization Section the RFC asks of I-frame playlists, without which a
client that fetches a range alone cannot demux it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..media_set import Selection
from ..model import Track
from ..naming import TrackSpec
from .names import iframe_playlist_name, segment_name

IFRAMES_VERSION = 5  # EXT-X-MAP in an I-frames-only playlist (RFC 8216 §7)
PSI_BYTES = 2 * 188  # the PAT and PMT packets that open every TS segment
# a key frame's TS bytes at most: its sample, AUD, parameter sets, PES header and stuffing, at 188 per 184
_PES_OVERHEAD = 6 + 19 + 8 + 183


@dataclass(frozen=True)
class KeyFrames:
    """The video key frames of a selection, all segments: what an I-frame playlist lists (plain data)."""

    segment: np.ndarray  # 0-based index of the segment holding each
    time: np.ndarray  # presentation time, seconds
    start: np.ndarray  # byte offset in the segment
    size: np.ndarray  # bytes
    end: float  # when the last one stops showing: the end of the presentation, seconds


def build_iframe_playlist(spec: TrackSpec, frames: KeyFrames) -> str:
    """The I-frames-only playlist of ``spec`` (RFC 8216 §4.3.3.6); frames of no duration are left out."""
    durations = np.diff(np.append(frames.time, frames.end))
    keep = durations > 0
    target = max(1, math.ceil(float(durations[keep].max()))) if keep.any() else 1
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{IFRAMES_VERSION}", f"#EXT-X-TARGETDURATION:{target}",
             "#EXT-X-MEDIA-SEQUENCE:1", "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-I-FRAMES-ONLY",
             f'#EXT-X-MAP:URI="{segment_name(0, spec)}",BYTERANGE="{PSI_BYTES}@0"']
    for index, duration, start, size in zip(frames.segment[keep].tolist(), durations[keep].tolist(),
                                            frames.start[keep].tolist(), frames.size[keep].tolist()):
        lines += [f"#EXTINF:{duration:.3f},", f"#EXT-X-BYTERANGE:{size}@{start}", segment_name(index, spec)]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def iframe_stream_inf(selection: Selection) -> str:
    """The master playlist's EXT-X-I-FRAME-STREAM-INF of a variant (its first track is its video). BANDWIDTH bounds
    the peak of key frame bytes over their durations, from the sample tables (the same bound for every protocol)."""
    video = selection.tracks[0]
    return (f"#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH={key_frame_peak_bps(video)},"
            + (f"RESOLUTION={video.codec.width}x{video.codec.height}," if video.codec.width else "")
            + f'CODECS="{video.codec.codec_string}",URI="{iframe_playlist_name(selection.spec)}"')


def key_frame_peak_bps(video: Track) -> int:
    """An upper bound of the bit rate of a track's key frames as TS, each over the time until the next one."""
    samples = video.samples
    keys = np.flatnonzero(samples.keyframe)
    if not len(keys):
        return 0
    pts = (samples.pts[keys] - video.edit_offset) / video.timescale
    end = (int(samples.dts[-1]) + int(samples.durations[-1]) - video.edit_offset) / video.timescale
    durations = np.maximum(np.diff(np.append(pts, end)), 1e-3)  # a key frame shows until the next one
    parameter_sets = sum(len(p) + 4 for p in video.codec.parameter_sets)
    size = (samples.sizes[keys].astype(np.float64) + parameter_sets + _PES_OVERHEAD) * 188 / 184
    return int(math.ceil(float((size * 8 / durations).max())))
