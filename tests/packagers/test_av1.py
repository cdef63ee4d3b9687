"""AV1 in MP4 (av01 + av1C) read by our demuxer, against ffprobe's view of the same file."""
from __future__ import annotations

import json
import subprocess

import pytest

from fixtures.generate import fixture_path
from packagers.codecs.av1 import parse_av1c
from packagers.errors import ErrorCode, PackagerError
from packagers.mp4 import open_presentation
from tests.needs import needs_executable

LEVELS = {"Main": 0, "High": 1, "Professional": 2}


@needs_executable("ffprobe")
def test_av01_track_matches_ffprobe():
    path = fixture_path("av1.mp4")
    (stream,) = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-count_packets", "-of", "json", str(path)],
        capture_output=True, check=True).stdout)["streams"]
    (track,) = open_presentation(path).tracks
    assert track.kind == "video" and track.codec.fourcc == "av01" and track.codec.codec == "av1"
    assert (track.codec.width, track.codec.height) == (stream["width"], stream["height"])
    assert len(track.samples) == int(stream["nb_read_packets"])
    depth = int(stream.get("bits_per_raw_sample") or 8)
    assert track.codec.codec_string == f"av01.{LEVELS[stream['profile']]}.{stream['level']:02d}M.{depth:02d}"
    assert track.samples.keyframe[0] and track.codec.nal_length_size == 0


def test_av1c_fields_and_refusals():
    # marker|version, profile 1 | level 13, tier 1 | high bitdepth | twelve bit
    assert parse_av1c(bytes([0x81, 0x2D, 0xE0, 0]), "av01", "x").codec_string == "av01.1.13H.12"
    assert parse_av1c(bytes([0x81, 0x08, 0x40, 0]), "av01", "x").codec_string == "av01.0.08M.10"
    for record in (b"", bytes([0x01, 0, 0, 0]), bytes([0x81, 0])):
        with pytest.raises(PackagerError) as raised:
            parse_av1c(record, "av01", "x.mp4")
        assert raised.value.code == ErrorCode.BAD_DATA and "parse_av1c" in str(raised.value)
