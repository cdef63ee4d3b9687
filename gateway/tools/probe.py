"""``gateway probe FILE``: the tracks and segment plan the gateway sees in one MP4, as aligned text tables."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from packagers.media_set import MediaSet
from packagers.model import Presentation, Track
from packagers.mp4 import read_presentation


def describe(path: Path, segment_duration_ms: int) -> str:
    presentation = load(path)
    media_set = MediaSet([presentation], segment_duration_ms, False)
    size = path.stat().st_size
    head = f"{path.name}: {size:,} bytes, {len(presentation.tracks)} tracks, {presentation.duration_seconds:.3f} s"
    if presentation.brand:
        head += f", brand {presentation.brand}"
    return "\n".join([head, "", track_table(presentation.tracks), "", plan_table(media_set, segment_duration_ms)])


def describe_json(path: Path, segment_duration_ms: int) -> dict:
    """``describe`` as data (``gateway probe --json``): the file, its tracks and its segment plan."""
    presentation = load(path)
    media_set = MediaSet([presentation], segment_duration_ms, False)
    plan = media_set.plans[0]
    starts = plan.boundaries[:-1] / plan.timescale
    tracks = [{"id": t.track_id, "kind": t.kind, "codec": t.codec.codec_string, "language": t.language,
               "samples": len(t.samples), "duration": round(t.duration_seconds, 3), "bitrate": t.average_bitrate,
               **({"width": t.codec.width, "height": t.codec.height, "frame_rate": round(t.frame_rate, 3)}
                  if t.kind == "video" else {"sample_rate": t.codec.sample_rate, "channels": t.codec.channels})}
              for t in presentation.tracks]
    segments = [{"start": round(float(a), 3), "duration": round(float(d), 3)}
                for a, d in zip(starts, plan.durations())]
    return {"file": path.name, "size": path.stat().st_size, "duration": round(presentation.duration_seconds, 3),
            "brand": presentation.brand, "tracks": tracks, "segments": segments}


def load(path: Path) -> Presentation:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return read_presentation(lambda offset, n: os.pread(fd, n, offset), size, path.name)
    finally:
        os.close(fd)


def track_format(track: Track) -> str:
    c = track.codec
    if track.kind == "video":
        return f"{c.width}x{c.height} @ {track.frame_rate:.3f} fps"
    return f"{c.sample_rate} Hz, {c.channels} ch"


def track_table(tracks: Sequence[Track]) -> str:
    rows = [
        [
            str(t.track_id), t.kind, t.codec.codec_string, track_format(t), t.language, f"{len(t.samples):,}",
            f"{t.duration_seconds:.3f} s", f"{t.average_bitrate / 1000:,.0f} kb/s",
        ]
        for t in tracks
    ]
    return format_table(["id", "kind", "codec", "format", "lang", "samples", "duration", "avg bitrate"], rows, "rllllrrr")


def plan_table(media_set: MediaSet, segment_duration_ms: int) -> str:
    presentation = media_set.presentations[0]
    plan = media_set.plans[0]
    starts = plan.boundaries[:-1] / plan.timescale
    durations = plan.durations()
    ranges = [plan.sample_ranges(t) for t in presentation.tracks]
    sizes = np.zeros(plan.count, dtype=np.int64)
    for track, r in zip(presentation.tracks, ranges):
        csum = np.concatenate(([0], np.cumsum(track.samples.sizes, dtype=np.int64)))
        sizes += np.diff(csum[r])
    labels = [f"{t.kind[0]}{t.track_id} samples" for t in presentation.tracks]
    rows = [
        [str(i + 1), f"{starts[i]:.3f}", f"{durations[i]:.3f}", *[f"{np.diff(r)[i]:,}" for r in ranges], f"{sizes[i]:,}"]
        for i in range(plan.count)
    ]
    title = f"segment plan: {plan.count} segments, target {segment_duration_ms / 1000:.3f} s, aligned to key frames"
    table = format_table(["seg", "start s", "duration s", *labels, "bytes"], rows, "rrr" + "r" * len(labels) + "r")
    return f"{title}\n{table}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
