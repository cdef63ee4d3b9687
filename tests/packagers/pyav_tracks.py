"""Model tracks and segments straight from PyAV's (ffmpeg's) MP4 demuxer, for muxer tests.

An independent ground truth: it does not use the project's MP4 parser. PyAV reports timestamps with the edit list
already applied (first video dts = -2 frames, first AAC pts = -1024); we store them as MP4 does (dts from 0) with
``edit_offset`` = the shift, so presentation time = dts + cts - edit_offset = PyAV's pts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from packagers.codecs import avc, hevc
from packagers.media_data import MediaSegment, TrackSegment
from packagers.model import CodecConfig, SampleTable, Track


@dataclass(frozen=True, eq=False)
class Source:
    """A demuxed file: its tracks, its bytes, and PyAV's packets per track (pts, dts, data) for comparisons."""

    path: Path
    tracks: tuple[Track, ...]
    data: bytes

    def sample(self, track: Track, i: int) -> bytes:
        o, s = int(track.samples.offsets[i]), int(track.samples.sizes[i])
        return self.data[o : o + s]


def _codec(stream) -> CodecConfig:
    cc = stream.codec_context
    extradata = bytes(cc.extradata or b"")
    tag = stream.codec_tag
    if stream.type == "video":
        parsed = (hevc if cc.name == "hevc" else avc).parse_config(extradata, tag, "PyAV extradata")
        nls, sets = parsed.nal_length_size, parsed.parameter_sets
        codec_string = f"avc1.{extradata[1:4].hex()}" if cc.name == "h264" else "hvc1.1.6.L93.B0"
        return CodecConfig(tag, codec_string, extradata, sets, nls, width=cc.width, height=cc.height)
    return CodecConfig(tag, "mp4a.40.2", extradata, sample_rate=cc.sample_rate, channels=cc.channels)


def load(path: Path | str) -> Source:
    path = Path(path)
    columns: dict[int, list[tuple]] = {}
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        for packet in container.demux(streams):
            if packet.size == 0 or packet.dts is None:
                continue
            columns.setdefault(packet.stream.index, []).append(
                (packet.pos, packet.size, packet.dts, packet.pts, packet.is_keyframe, packet.duration or 0)
            )
        tracks = []
        for s in streams:
            rows = np.array(columns[s.index], dtype=np.int64)
            assert s.time_base.numerator == 1
            dts = rows[:, 2]
            shift = max(0, -int(dts.min()))
            table = SampleTable(
                offsets=rows[:, 0], sizes=rows[:, 1], dts=dts + shift, cts=rows[:, 3] - dts,
                durations=rows[:, 5], keyframe=rows[:, 4].astype(bool),
            )  # fmt: skip
            language = s.metadata.get("language", "und")
            tracks.append(
                Track(s.index + 1, s.type, s.time_base.denominator, _codec(s), table, shift, language, str(path))
            )
    return Source(path, tuple(sorted(tracks, key=lambda t: t.kind != "video")), path.read_bytes())


def payload(source: Source, track: Track, lo: int, hi: int) -> bytes:
    o = track.samples.offsets[lo:hi].tolist()
    s = track.samples.sizes[lo:hi].tolist()
    return b"".join(source.data[a : a + n] for a, n in zip(o, s))


def segment_ranges(source: Source, seconds: float = 2.0) -> list[dict[int, tuple[int, int]]]:
    """Cut at the first video key frame at or after every ``seconds`` (audio-only: any frame); audio follows the
    cut times by presentation time. Returns, per segment, {track_id: (lo, hi)} sample ranges."""
    tracks = source.tracks
    ref = next((t for t in tracks if t.kind == "video"), tracks[0])
    t = ref.presentation_pts() / ref.timescale
    cuts, target = [0], seconds
    for i in range(1, len(t)):
        if ref.samples.keyframe[i] and t[i] >= target - 1e-9:
            cuts.append(i)
            target = (int(t[i] / seconds + 1e-9) + 1) * seconds
    cut_times = [float(t[i]) for i in cuts[1:]]
    out = []
    for k in range(len(cuts)):
        ranges = {}
        for tr in tracks:
            if tr is ref:
                lo, hi = cuts[k], cuts[k + 1] if k + 1 < len(cuts) else len(t)
            else:
                pts = tr.presentation_pts() / tr.timescale
                lo = 0 if k == 0 else int(np.searchsorted(pts, cut_times[k - 1] - 1e-9))
                hi = len(pts) if k + 1 == len(cuts) else int(np.searchsorted(pts, cut_times[k] - 1e-9))
            ranges[tr.track_id] = (lo, hi)
        out.append(ranges)
    return out


def segments(source: Source, seconds: float = 2.0, tracks: tuple[Track, ...] | None = None) -> list[MediaSegment]:
    tracks = tracks or source.tracks
    out = []
    for index, ranges in enumerate(segment_ranges(source, seconds)):
        parts = []
        for tr in tracks:
            lo, hi = ranges[tr.track_id]
            parts.append(TrackSegment(tr, tr.samples[lo:hi], payload(source, tr, lo, hi)))
        out.append(MediaSegment(index, tuple(parts)))
    return out
