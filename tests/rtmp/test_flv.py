"""rtmp.flv against independent ground truth: FLV files written by ffmpeg (PyAV 18 bundles ffmpeg 8, which writes
legacy AVC/AAC tags and E-RTMP HEVC tags) from the MP4 fixtures, whose samples the MP4 demuxer gives. Every FLV tag
body is an RTMP message payload, so the demuxer sees exactly what a publisher would send."""
from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.generate import fixture_path
from packagers.mp4 import open_presentation
from rtmp.errors import RtmpError
from rtmp.flv import FlvDemuxer, FlvSample
from rtmp.messages import MSG_AUDIO, MSG_DATA_AMF0, MSG_VIDEO, Message


def flv_from_mp4(name: str, out_dir: Path) -> Path:
    """Remux a fixture to FLV with ffmpeg's own muxer (stream copy), as `ffmpeg -c copy -f flv` does."""
    out = out_dir / f"{name}.flv"
    with av.open(str(fixture_path(f"{name}.mp4"))) as src, av.open(str(out), "w", format="flv") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    return out


def flv_messages(path: Path) -> list[Message]:
    """FLV file (spec v10.1 Annex E.2/E.3) → the RTMP messages carrying its tags: an independent little parser."""
    data = path.read_bytes()
    assert data[:3] == b"FLV"
    pos = struct.unpack(">I", data[5:9])[0] + 4     # header, PreviousTagSize0
    out = []
    while pos + 11 <= len(data):
        tag_type = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        ts = int.from_bytes(data[pos + 4:pos + 7], "big") | data[pos + 7] << 24
        out.append(Message(6 if tag_type == 9 else 4, ts, tag_type, 1, data[pos + 11:pos + 11 + size]))
        pos += 11 + size + 4
    return out


@pytest.fixture(scope="module")
def flv_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("flv")


def demux_all(messages) -> tuple[FlvDemuxer, list[FlvSample]]:
    demuxer = FlvDemuxer()
    samples = [s for m in messages for s in demuxer.feed(m)]
    return demuxer, samples


def mp4_samples(name: str, kind: str):
    path = fixture_path(f"{name}.mp4")
    presentation = open_presentation(path)
    track = next(t for t in presentation.tracks if t.kind == kind)
    raw = path.read_bytes()
    s = track.samples
    payloads = [raw[int(o):int(o) + int(n)] for o, n in zip(s.offsets, s.sizes)]
    return track, payloads


@pytest.mark.parametrize("name, fourcc", [("title_360p", "avc1"), ("hevc", "hvc1")])
def test_samples_equal_the_mp4_samples(flv_dir, name, fourcc):
    messages = flv_messages(flv_from_mp4(name, flv_dir))
    if fourcc == "hvc1":    # ffmpeg 8 writes HEVC as E-RTMP: IsExHeader + FourCC
        assert any(m.message_type_id == MSG_VIDEO and m.payload[0] & 0x80 and m.payload[1:5] == b"hvc1"
                   for m in messages)
    demuxer, samples = demux_all(messages)
    assert not demuxer.ignored
    for kind in ("video", "audio"):
        track, payloads = mp4_samples(name, kind)
        got = [s for s in samples if s.kind == kind]
        assert [s.data for s in got] == payloads
        assert [s.keyframe for s in got] == track.samples.keyframe.tolist()
        # FLV times are ms: each the MP4 time rescaled (ffmpeg rounds absolute times: +-1 ms)
        ms = lambda t: np.round(t.astype(np.float64) * 1000 / track.timescale)  # noqa: E731
        dts = np.array([s.dts for s in got]) - got[0].dts
        assert np.abs(dts - ms(track.samples.dts - track.samples.dts[0])).max() <= 1
        cts = np.array([s.cts for s in got])
        assert np.abs(cts - ms(track.samples.cts.astype(np.int64))).max() <= 1
        mp4_codec = track.codec
        codec = demuxer.video if kind == "video" else demuxer.audio
        assert codec.codec_string == mp4_codec.codec_string
        assert codec.parameter_sets == mp4_codec.parameter_sets
        assert codec.nal_length_size == mp4_codec.nal_length_size
        assert (codec.width, codec.height) == (mp4_codec.width, mp4_codec.height)
        assert (codec.sample_rate, codec.channels) == (mp4_codec.sample_rate, mp4_codec.channels)
        if fourcc == "avc1" or kind == "audio":
            assert codec.extradata == mp4_codec.extradata
    assert demuxer.video.fourcc == fourcc and demuxer.audio.fourcc == "mp4a"
    assert demuxer.config_generation == 2


def test_sequence_header_repeated_is_not_a_change(flv_dir):
    messages = flv_messages(flv_from_mp4("title_360p", flv_dir))
    headers = [m for m in messages if m.message_type_id in (MSG_AUDIO, MSG_VIDEO) and m.payload[1] == 0]
    demuxer, _ = demux_all(messages + headers)
    assert demuxer.config_generation == 2


def test_timestamps_unwrap_past_32_bits():
    demuxer = FlvDemuxer()
    seq = bytes([0xAF, 0x00, 0x12, 0x10])  # AAC LC 44.1 kHz stereo
    assert demuxer.feed(Message(4, 0xFFFFFF00, MSG_AUDIO, 1, seq)) == []
    times = [0xFFFFFF00, 0xFFFFFFE8, 0x10, 0x5, 0x28]   # wraps, then one small step back, then on
    out = [demuxer.feed(Message(4, t, MSG_AUDIO, 1, bytes([0xAF, 1, 0x21])))[0].dts for t in times]
    base = 0xFFFFFF00
    assert out == [base, base + 0xE8, base + 0x110, base + 0x105, base + 0x128]


def test_unknown_codecs_are_counted_not_fatal():
    demuxer = FlvDemuxer()
    assert demuxer.feed(Message(6, 0, MSG_VIDEO, 1, bytes([0x14, 0, 0, 0]))) == []          # VP6
    assert demuxer.feed(Message(6, 0, MSG_VIDEO, 1, b"\x90av01\x00")) == []                  # E-RTMP AV1
    assert demuxer.feed(Message(4, 0, MSG_AUDIO, 1, bytes([0x2F, 0xFF, 0xFB]))) == []        # MP3
    assert demuxer.feed(Message(4, 0, MSG_DATA_AMF0, 1, b"\x02\x00\x0aonMetaData")) == []
    assert sum(demuxer.ignored.values()) == 3 and demuxer.video is None and demuxer.audio is None


def test_frames_before_the_sequence_header_are_skipped():
    demuxer = FlvDemuxer()
    assert demuxer.feed(Message(6, 0, MSG_VIDEO, 1, bytes([0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]))) == []
    assert demuxer.ignored["video frame before its sequence header"] == 1


def test_bad_nal_lengths_are_rtmp_errors(flv_dir):
    messages = flv_messages(flv_from_mp4("title_360p", flv_dir))
    demuxer = FlvDemuxer()
    for m in messages[:4]:
        demuxer.feed(m)
    assert demuxer.video is not None
    with pytest.raises(RtmpError, match="NAL"):
        demuxer.feed(Message(6, 40, MSG_VIDEO, 1, bytes([0x27, 1, 0, 0, 0, 0, 0, 0, 9, 0x41])))


_HEADERS = [bytes([0x17, 0]), bytes([0x17, 1]), bytes([0x27, 1]), b"\x90hvc1", b"\x91hvc1", b"\x93hvc1",
            bytes([0xAF, 0]), bytes([0xAF, 1]), b"\x90mp4a", b"\x91mp4a", b"\x1c\x00"]


@settings(max_examples=400)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(_HEADERS + [b""]), st.binary(max_size=64),
                          st.integers(0, 2**32 - 1)), max_size=8))
def test_fuzz_only_rtmp_errors(messages):
    demuxer = FlvDemuxer()
    for video, head, body, ts in messages:
        try:
            out = demuxer.feed(Message(6, ts, MSG_VIDEO if video else MSG_AUDIO, 1, head + body))
        except RtmpError:
            continue
        assert all(isinstance(s, FlvSample) for s in out)


@settings(max_examples=200)
@given(st.binary(max_size=40))
def test_fuzz_sequence_headers(record):
    for head in (bytes([0x17, 0, 0, 0, 0]), b"\x90hvc1", bytes([0xAF, 0])):
        try:
            FlvDemuxer().feed(Message(6, 0, MSG_VIDEO if head[0] != 0xAF else MSG_AUDIO, 1, head + record))
        except RtmpError:
            pass


def _real_sequence_headers() -> list[Message]:
    video, audio = (t.codec for t in open_presentation(fixture_path("title_360p.mp4")).tracks)
    return [Message(6, 0, MSG_VIDEO, 1, bytes([0x17, 0, 0, 0, 0]) + video.extradata),
            Message(4, 0, MSG_AUDIO, 1, bytes([0xAF, 0]) + audio.extradata)]


@settings(max_examples=300)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(_HEADERS[1:3] + _HEADERS[7:8]), st.binary(max_size=48)),
                max_size=6))
def test_fuzz_frames_after_real_headers(frames):
    demuxer = FlvDemuxer()
    for m in _real_sequence_headers():
        demuxer.feed(m)
    for video, head, body in frames:
        try:
            for s in demuxer.feed(Message(6, 0, MSG_VIDEO if video else MSG_AUDIO, 1, head + body)):
                assert s.data
        except RtmpError:
            pass


def test_command_frames_are_not_pictures():
    demuxer = FlvDemuxer()
    assert demuxer.feed(Message(6, 0, MSG_VIDEO, 1, bytes([0x57, 0]))) == []          # legacy: frame type 5
    assert demuxer.feed(Message(6, 0, MSG_VIDEO, 1, b"\xd1avc1\x00")) == []           # E-RTMP command frame
    assert not demuxer.ignored
