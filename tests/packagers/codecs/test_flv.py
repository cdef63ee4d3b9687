"""FLV tag headers (packagers.codecs.flv): the FLVTAG header both ways, and the legacy + Enhanced RTMP classification
that rtmp's session (key frame / sequence header), relay (codec names) and FLV demuxer (what to package) all use."""
import pytest

from packagers.codecs import flv
from packagers.errors import PackagerError


def test_tag_header_round_trip_with_extended_timestamp():
    data = bytes(0x012345)     # every byte of DataSize differs, so a misplaced byte shows
    raw = flv.tag(flv.TAG_TYPE_VIDEO, 0x12345678, data)
    assert raw[:flv.TAG_HEADER_SIZE] == bytes.fromhex("09 012345 345678 12 000000")   # TimestampExtended last
    assert flv.parse_tag_header(raw) == (flv.TAG_TYPE_VIDEO, len(data), 0x12345678, 0)
    assert raw[-4:] == (flv.TAG_HEADER_SIZE + len(data)).to_bytes(4, "big")            # PreviousTagSize
    assert flv.parse_tag_header(b"\x00" + raw, 1).data_size == len(data)
    with pytest.raises(PackagerError, match="parse_tag_header"):
        flv.parse_tag_header(raw[:10])


# (body, ex_header, frame_type, codec name, sample entry FourCC, packet type, composition time, header size,
#  key frame, sequence header)
VIDEO = [
    (b"\x17\x00\x00\x00\x00", False, 1, "avc", b"avc1", 0, 0, 5, False, True),        # AVC sequence header
    (b"\x17\x01\x00\x00\x28", False, 1, "avc", b"avc1", 1, 40, 5, True, False),       # AVC key frame, CTS 40
    (b"\x27\x01\xff\xff\xd8", False, 2, "avc", b"avc1", 1, -40, 5, False, False),     # inter, negative CTS
    (b"\x27\x02\x00\x00\x00", False, 2, "avc", b"avc1", 2, 0, 5, False, False),       # end of sequence
    (b"\x1c\x00\x00\x00\x00", False, 1, "hevc", b"hvc1", 0, 0, 5, False, True),       # legacy-extension HEVC (12)
    (b"\x1d\x00\x00\x00\x00", False, 1, "av1", b"av01", 0, 0, 5, False, True),        # legacy-extension AV1 (13)
    (b"\x1d\x01\x00\x00\x00", False, 1, "av1", b"av01", 1, 0, 5, True, False),
    (b"\x12\x00", False, 1, "h263", None, None, 0, 1, True, False),                   # no packet type for H.263
    (b"\x17", False, 1, "avc", b"avc1", None, 0, 5, True, False),                     # cut short: never raises
    (b"\x90hvc1\x01", True, 1, "hvc1", b"hvc1", 0, 0, 5, False, True),                # E-RTMP SequenceStart
    (b"\x91hvc1\x00\x00\x21", True, 1, "hvc1", b"hvc1", 1, 33, 8, True, False),       # CodedFrames + CTS
    (b"\xa3av01", True, 2, "av01", b"av01", 3, 0, 5, False, False),                   # CodedFramesX, inter
    (b"\x94hvc1", True, 1, "hvc1", b"hvc1", 4, 0, 5, False, False),                   # Metadata is no key frame
    (b"\x95hvc1", True, 1, "hvc1", b"hvc1", 5, 0, 5, False, True),                    # MPEG2TSSequenceStart
    (b"\x90", True, 1, None, None, 0, 0, 5, False, True),                             # FourCC cut off
]


@pytest.mark.parametrize("body, ex, frame_type, name, fourcc, packet_type, cts, size, key, seq", VIDEO)
def test_video_tag_header(body, ex, frame_type, name, fourcc, packet_type, cts, size, key, seq):
    h = flv.video_tag_header(body)
    assert (h.ex_header, h.frame_type, h.codec_name, h.fourcc, h.packet_type, h.composition_time, h.header_size) \
        == (ex, frame_type, name, fourcc, packet_type, cts, size)
    assert (h.is_keyframe, h.is_sequence_header) == (key, seq)


AUDIO = [
    # (body, sound format, name, packet type, rate, channels, header size, sequence header)
    (b"\xaf\x00\x12\x10", 10, "aac", 0, 44100, 2, 2, True),
    (b"\xaf\x01\x21", 10, "aac", 1, 44100, 2, 2, False),
    (b"\xa6", 10, "aac", None, 11025, 1, 2, False),                    # AAC without its packet type
    (b"\x2f\xff", 2, "mp3", None, 44100, 2, 1, False),
    (b"\x90mp4a\x12\x10", 9, "mp4a", 0, 0, 0, 5, True),                # E-RTMP SequenceStart
    (b"\x91Opus", 9, "Opus", 1, 0, 0, 5, False),
    (b"\x90mp", 9, None, 0, 0, 0, 5, True),
]


@pytest.mark.parametrize("body, fmt, name, packet_type, rate, channels, size, seq", AUDIO)
def test_audio_tag_header(body, fmt, name, packet_type, rate, channels, size, seq):
    h = flv.audio_tag_header(body)
    assert (h.sound_format, h.codec_name, h.packet_type, h.sample_rate, h.channels, h.header_size) \
        == (fmt, name, packet_type, rate, channels, size)
    assert h.is_sequence_header is seq


def test_empty_bodies_have_no_header():
    assert flv.video_tag_header(b"") is None and flv.audio_tag_header(b"") is None
