"""The multi-track fixture of issue 13 (track and language selection): 2 H.264 video + 3 AAC audio tracks in one MP4.

Ground truth is ffprobe and PyAV (ffmpeg's mov demuxer and decoders); our demuxer must agree with them. The selection
tests rely on what is checked here: the track order, the languages, aligned key frames, pictures that tell the two
videos apart and a distinct tone per audio track.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from fractions import Fraction

import av
import numpy as np

from fixtures.generate import RECIPES, Recipe, fixture_path, recipe_key
from packagers.mp4 import read_presentation
from tests.needs import require_executable

NAME = "multi_track.mp4"
VIDEOS = ((320, 180, 250_000), (256, 144, 150_000))
LANGUAGES = ("eng", "fra", "spa")
TONES = (440.0, 880.0, 1320.0)  # fixtures.generate: 440 Hz x (audio track index + 1)
SECONDS = 8


def ffprobe(*args: str) -> dict:
    out = subprocess.run([require_executable("ffprobe"), "-v", "error", *args, "-of", "json", str(fixture_path(NAME))],
                         check=True, capture_output=True, timeout=120)
    return json.loads(out.stdout)


def presentation():
    path = fixture_path(NAME)
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_presentation(lambda offset, n: os.pread(fd, n, offset), os.fstat(fd).st_size, NAME)
    finally:
        os.close(fd)


def test_ffprobe_sees_two_videos_then_three_audio_languages():
    streams = ffprobe("-show_streams")["streams"]
    assert [s["codec_type"] for s in streams] == ["video"] * 2 + ["audio"] * 3
    assert [s["codec_name"] for s in streams] == ["h264"] * 2 + ["aac"] * 3
    assert [(s["width"], s["height"]) for s in streams[:2]] == [(w, h) for w, h, _ in VIDEOS]
    assert [s["tags"]["language"] for s in streams[2:]] == list(LANGUAGES)
    assert [s["tags"].get("language", "und") for s in streams[:2]] == ["und", "und"]
    assert streams[0]["r_frame_rate"] == streams[1]["r_frame_rate"] == "24/1"
    for s in streams:
        assert abs(float(s["duration"]) - SECONDS) <= 1 / 24, s
    # x264 in ABR mode lands near its target: the two renditions are a real low/high pair
    for s, (_, _, target) in zip(streams, VIDEOS):
        assert 0.7 * target <= int(s["bit_rate"]) <= 1.3 * target, s


def test_read_presentation_agrees_on_tracks_order_and_languages():
    p = presentation()
    assert [t.kind for t in p.tracks] == ["video"] * 2 + ["audio"] * 3
    assert [t.track_id for t in p.tracks] == [1, 2, 3, 4, 5]
    assert [(t.codec.codec, t.codec.width, t.codec.height) for t in p.video_tracks] == [
        ("h264", w, h) for w, h, _ in VIDEOS]
    assert [t.language for t in p.video_tracks] == ["und", "und"]
    assert [(t.codec.codec, t.language) for t in p.audio_tracks] == [("aac", lang) for lang in LANGUAGES]


def test_key_frames_of_both_videos_at_the_same_times():
    v1, v2 = presentation().video_tracks

    def key_times(track):
        pts = track.presentation_pts()[track.samples.keyframe]
        return sorted(Fraction(int(t), track.timescale) for t in pts)

    assert key_times(v1) == key_times(v2) == [Fraction(s) for s in range(0, SECONDS, 2)]
    # and ffmpeg's demuxer says the same
    packets = ffprobe("-select_streams", "v", "-show_entries", "packet=stream_index,pts_time,flags")["packets"]
    ffmpeg_keys = [sorted(float(p["pts_time"]) for p in packets if p["stream_index"] == i and "K" in p["flags"])
                   for i in (0, 1)]
    assert ffmpeg_keys[0] == ffmpeg_keys[1] == [float(s) for s in range(0, SECONDS, 2)]


def test_the_two_videos_show_different_pictures():
    """First frames scaled to the same size: track 2 draws another picture, not track 1's at another size.

    Measured: 85 mean absolute RGB difference; 34 when track 2 scrolls track 1's picture (noise and scaling only)."""
    pictures = []
    with av.open(str(fixture_path(NAME))) as container:
        for index in (0, 1):
            frame = next(container.decode(video=index))
            pictures.append(frame.reformat(width=256, height=144, format="rgb24").to_ndarray().astype(np.int16))
            container.seek(0)
    diff = float(np.abs(pictures[0] - pictures[1]).mean())
    assert diff > 60, diff


def test_each_audio_track_carries_its_own_tone():
    """The dominant frequency of each track's first second, so a selection test can tell eng, fra and spa apart."""
    with av.open(str(fixture_path(NAME))) as container:
        for stream, tone in zip(container.streams.audio, TONES):
            chunks, rate = [], stream.sample_rate
            for frame in container.decode(stream):
                chunks.append(frame.to_ndarray()[0])
                if sum(map(len, chunks)) >= rate:
                    break
            container.seek(0)
            samples = np.concatenate(chunks)[:rate]
            peak = np.argmax(np.abs(np.fft.rfft(samples))) * rate / len(samples)
            assert abs(peak - tone) <= 2, (stream.metadata["language"], peak)


def test_video_tracks_enters_the_cache_key_only_when_set():
    """The older recipes keep their cache files: their key is still the digest of the repr the Recipe dataclass had
    before video_tracks (every other field, in order) and the PyAV version."""
    for name, recipe in RECIPES.items():
        if not recipe.video_tracks and not recipe.x265_extra:   # (x265_extra: keyed only when set, the same way)
            fields = ", ".join(f"{f.name}={getattr(recipe, f.name)!r}" for f in dataclasses.fields(Recipe)
                               if f.repr)
            text = f"Recipe({fields})|av {av.__version__}"
            assert recipe_key(recipe) == hashlib.sha256(text.encode()).hexdigest()[:10], name
    base = Recipe(8)
    assert recipe_key(dataclasses.replace(base, video_tracks=VIDEOS)) != recipe_key(base)
    assert recipe_key(dataclasses.replace(base, video_tracks=VIDEOS[:1])) != recipe_key(
        dataclasses.replace(base, video_tracks=VIDEOS))
    assert fixture_path(NAME).name == f"multi_track.{recipe_key(RECIPES[NAME])}.mp4"
