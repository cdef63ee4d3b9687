"""Synthetic tracks for unit tests of the format-neutral core (no media files needed)."""
from __future__ import annotations

import numpy as np

from packagers.model import CodecConfig, Presentation, SampleTable, Track


def video_track(seconds: float, fps: int = 24, timescale: int = 12288, gop: int = 48, bframes: bool = True,
                offset: int = 0, track_id: int = 1, keyframes: np.ndarray | None = None) -> Track:
    n = int(seconds * fps)
    delta = timescale // fps
    dts = np.arange(n, dtype=np.int64) * delta
    cts = np.full(n, 2 * delta if bframes else 0, dtype=np.int32)
    key = np.zeros(n, dtype=bool)
    if keyframes is None:
        key[::gop] = True
    else:
        key[keyframes] = True
    sizes = np.where(key, 5000, 800).astype(np.uint32)
    offsets = offset + np.concatenate(([0], np.cumsum(sizes[:-1], dtype=np.uint64)))
    table = SampleTable(offsets, sizes, dts, cts, np.full(n, delta, np.uint32), key)
    codec = CodecConfig("avc1", "avc1.64001e", width=320, height=180)
    return Track(track_id, "video", timescale, codec, table, edit_offset=2 * delta if bframes else 0)


def audio_track(seconds: float, rate: int = 44100, offset: int = 10_000_000, track_id: int = 2,
                edit: int = 1024, language: str = "eng") -> Track:
    n = int(seconds * rate / 1024) + 1
    dts = np.arange(n, dtype=np.int64) * 1024
    sizes = np.full(n, 300, np.uint32)
    offsets = offset + np.arange(n, dtype=np.uint64) * 300
    table = SampleTable(offsets, sizes, dts, np.zeros(n, np.int32), np.full(n, 1024, np.uint32), np.ones(n, bool))
    codec = CodecConfig("mp4a", "mp4a.40.2", sample_rate=rate, channels=2)
    return Track(track_id, "audio", rate, codec, table, edit_offset=edit, language=language)


def presentation(*tracks: Track, source: str = "synthetic.mp4") -> Presentation:
    return Presentation(tuple(tracks), source=source)


def ladder(timescales=(12288, 24576, 36864)):
    """Three renditions of one title (a url set), each with its own video timescale and the same audio."""
    from packagers.media_set import MediaSet

    return MediaSet([presentation(video_track(20, timescale=ts), audio_track(20), source=f"r{k}.mp4")
                     for k, ts in enumerate(timescales, start=1)], 6000)


def _base_scenarios() -> dict:
    from packagers.media_set import MediaSet

    return {
        "single_file": lambda: MediaSet([presentation(video_track(20), audio_track(20))], 6000),
        "url_set_ladder": ladder,
        "two_audio": lambda: MediaSet([presentation(video_track(13), audio_track(13, track_id=2),
                                                    audio_track(13, track_id=3, language="fra"))], 4000),
        "audio_only": lambda: MediaSet([presentation(audio_track(14.5))], 6000),
        "long_gop": lambda: MediaSet([presentation(video_track(25, gop=24 * 7), audio_track(25))], 6000),
    }


# The media sets every protocol's golden files are made from; protocol tests add their own special cases.
SCENARIOS = _base_scenarios()
