"""The transcoding ladder core (packagers.transcode): a source decoded once and encoded per rendition, checked with an
independent decoder (PyAV) and against the source's own samples: sizes, frame counts, key frames at the source's
key-frame times in every rendition, bitrates near the nominal ones."""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from fixtures.generate import fixture_path
from packagers.mp4 import open_presentation
from packagers.transcode import LadderEncoder, parse_rendition
from packagers.codecs.avc import annexb_to_avcc


def transcode(name: str, ladder: list[str], fps: int = 24, skip: int = 0):
    """``skip``: the source's first samples not fed (a ladder that joins mid-GOP)."""
    path = fixture_path(name)
    video = open_presentation(path).video_tracks[0]
    raw = path.read_bytes()
    encoder = LadderEncoder(video.codec, [parse_rendition(r) for r in ladder], frame_rate=Fraction(fps))
    ts, out = video.timescale, []
    s = video.samples
    for o, n, d, c, k in zip(s.offsets[skip:], s.sizes[skip:], s.dts[skip:], s.cts[skip:], s.keyframe[skip:]):
        out += encoder.encode(raw[int(o):int(o) + int(n)], int(d) * 1000 // ts, int(c) * 1000 // ts, bool(k))
    out += encoder.flush()
    source_pts = s.dts * 1000 // ts + s.cts * 1000 // ts      # as fed: whole ms, like RTMP
    return encoder, out, video, source_pts


def decode(config, samples) -> list:
    ctx = av.CodecContext.create("h264", "r")
    ctx.extradata = config.extradata
    frames = []
    for x in samples:
        packet = av.Packet(x.data)
        packet.pts, packet.dts = x.dts + x.cts, x.dts
        frames += ctx.decode(packet)
    return frames + ctx.decode(None)


@pytest.mark.parametrize("name", ["title_360p.mp4", "hevc.mp4"])
def test_every_rendition_has_every_picture_key_frames_where_the_source_has_them(name):
    encoder, out, video, source_pts = transcode(name, ["720p@2500k", "360p@700k", "240p@300k", "144p@100k"])
    height = video.codec.height
    assert encoder.renditions == [r for r in ("360p", "240p", "144p") if int(r[:-1]) <= height]   # no upscaling
    key_pts = sorted(source_pts[video.samples.keyframe].tolist())
    for name_ in encoder.renditions:
        samples = [x for x in out if x.rendition == name_]
        config = encoder.configs[name_]
        assert config.height == int(name_[:-1]) and config.width % 2 == 0
        assert config.width == pytest.approx(video.codec.width * config.height / height, abs=2)
        assert sorted(x.dts + x.cts for x in samples) == sorted(source_pts.tolist())    # every picture, same times
        assert sorted(x.dts for x in samples if x.keyframe) == key_pts                  # aligned key frames
        frames = decode(config, samples)
        assert len(frames) == len(source_pts) and {(f.width, f.height) for f in frames} == {(config.width,
                                                                                             config.height)}
    assert not encoder.failed


def test_bitrates_stay_near_the_nominal_rates():
    encoder, out, video, source_pts = transcode("title_360p.mp4", ["360p@700k", "240p@300k"])
    seconds = len(source_pts) / 24
    for name_, rate in (("360p", 700_000), ("240p", 300_000)):
        bits = 8 * sum(len(x.data) for x in out if x.rendition == name_)
        assert bits / seconds == pytest.approx(rate, rel=0.15), name_


def test_a_source_joined_mid_gop_starts_the_renditions_at_its_next_key_frame():
    """No picture before the source's first key frame is encoded (whatever its decoder shows), so a rendition's first
    key frame (libx264 starts with one whatever it is given) is the source's, and their segments line up."""
    encoder, out, video, source_pts = transcode("title_360p.mp4", ["240p@300k"], skip=10)
    keys = sorted(source_pts[video.samples.keyframe].tolist())
    assert out[0].keyframe and out[0].dts + out[0].cts == keys[1]
    assert sorted(x.dts + x.cts for x in out if x.keyframe) == keys[1:]
    assert sorted(x.dts + x.cts for x in out) == sorted(source_pts[source_pts >= keys[1]].tolist())


def test_annex_b_becomes_length_prefixed():
    # 3- and 4-byte start codes, trailing_zero_8bits, an emulation prevention byte kept as it is
    data = (b"\x00\x00\x00\x01\x67\x64\x1f" + b"\x00\x00\x01\x68\xee\x00\x00" + b"\x00\x00\x00\x01\x65"
            + bytes([0, 0, 3, 1]))
    assert annexb_to_avcc(data) == (b"\x00\x00\x00\x03\x67\x64\x1f" + b"\x00\x00\x00\x02\x68\xee"
                                    + b"\x00\x00\x00\x05\x65\x00\x00\x03\x01")


@pytest.mark.parametrize("text, ok", [("480p@1200k", True), ("1080p@6000k", True), ("480p", False),
                                      ("479p@1200k", False), ("480p@1.2M", False), ("0p@10k", False)])
def test_rendition_syntax(text, ok):
    if ok:
        r = parse_rendition(text)
        assert r.name == text.split("@")[0] and r.bit_rate == int(text.split("@")[1][:-1]) * 1000
    else:
        with pytest.raises(ValueError):
            parse_rendition(text)


def test_a_source_that_does_not_decode_is_bad_data_and_the_ladder_goes_on():
    from packagers.errors import PackagerError

    path = fixture_path("title_360p.mp4")
    video = open_presentation(path).video_tracks[0]
    encoder = LadderEncoder(video.codec, [parse_rendition("240p@300k")], frame_rate=Fraction(24))
    raw = path.read_bytes()
    s = video.samples
    first = raw[int(s.offsets[0]):int(s.offsets[0]) + int(s.sizes[0])]
    with pytest.raises(PackagerError):
        encoder.encode(b"\x00\x00\x00\x10" + bytes(np.random.default_rng(1).integers(0, 256, 16, np.uint8)), 0, 0,
                       True)
    out = encoder.encode(first, 0, 83, True) + encoder.flush()
    assert out and out[0].keyframe
