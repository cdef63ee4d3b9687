"""ADTS and Annex B conversions, checked against hand-decoded headers and against ffmpeg itself (PyAV's aac decoder
and its h264/hevc_mp4toannexb bitstream filters)."""
from __future__ import annotations

import io

import av
import av.bitstream
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.generate import fixture_path
from packagers.bitstream import annexb
from packagers.bitstream.adts import (
    AudioSpecificConfig,
    adts_constant,
    adts_headers,
    parse_audio_specific_config,
    to_adts,
)
from packagers.errors import ErrorCode, PackagerError
from tests.packagers import pyav_tracks


class Bits:
    def __init__(self, data: bytes):
        self.value, self.left = int.from_bytes(data, "big"), len(data) * 8

    def read(self, n: int) -> int:
        self.left -= n
        return self.value >> self.left & ((1 << n) - 1)


# -- ADTS -----------------------------------------------------------------------------------------------------------


def test_adts_header_known_bytes():
    """AAC LC, 44.1 kHz, stereo, a 371-byte frame: worked out by hand from ISO/IEC 14496-3 Table 1.A.5."""
    config = parse_audio_specific_config(bytes([0x12, 0x10]))
    assert config == AudioSpecificConfig(2, 4, 2, 44100)
    assert adts_headers(config, np.array([371])).tobytes() == bytes.fromhex("fff150802f5ffc")


@pytest.mark.parametrize("asc, size", [(b"\x12\x10", 0), (b"\x11\x90", 1000), (b"\x13\x08", 8184), (b"\x0a\x10", 5)])
def test_adts_header_fields(asc, size):
    config = parse_audio_specific_config(asc)
    header = adts_headers(config, np.array([size])).tobytes()
    b = Bits(header)
    fields = [b.read(n) for n in (12, 1, 2, 1, 2, 4, 1, 3, 1, 1, 1, 1, 13, 11, 2)]
    sync, mpeg2, layer, no_crc, profile, freq, private, chans, orig, home, cib, cis, length, fullness, blocks = fields
    assert (sync, mpeg2, layer, no_crc, private, orig, home, cib, cis) == (0xFFF, 0, 0, 1, 0, 0, 0, 0, 0)
    assert profile == config.object_type - 1 and freq == config.sampling_frequency_index
    assert chans == config.channel_configuration
    assert length == size + 7 and fullness == 0x7FF and blocks == 0


def test_audio_specific_config_variants():
    # explicit HE-AAC: object type 5, 24 kHz core, stereo, 48 kHz extension, core object type 2
    assert parse_audio_specific_config(bytes([0x2B, 0x11, 0x88])) == AudioSpecificConfig(2, 6, 2, 24000)
    # explicit frequency (index 15, 24 bits) maps to the nearest index
    asc = (2 << 35 | 15 << 31 | 44000 << 7 | 2 << 3).to_bytes(5, "big")
    assert parse_audio_specific_config(asc) == AudioSpecificConfig(2, 4, 2, 44000)
    with pytest.raises(PackagerError) as e:
        parse_audio_specific_config(b"\x12")
    assert e.value.code is ErrorCode.BAD_DATA
    usac = (31 << 11 | (42 - 32) << 5).to_bytes(2, "big") + b"\x20"  # escape object type 42 (USAC)
    with pytest.raises(PackagerError) as e:
        adts_constant(parse_audio_specific_config(usac))
    assert e.value.code is ErrorCode.UNSUPPORTED
    with pytest.raises(PackagerError) as e:
        adts_headers(parse_audio_specific_config(b"\x12\x10"), np.array([8185]))
    assert e.value.code is ErrorCode.BAD_DATA


def _decode_audio(container_bytes: bytes, fmt: str) -> list[np.ndarray]:
    with av.open(io.BytesIO(container_bytes), format=fmt) as c:
        return [f.to_ndarray() for f in c.decode(audio=0)]


def test_adts_stream_decodes_like_the_mp4():
    source = pyav_tracks.load(fixture_path("audio_only.mp4"))
    (track,) = source.tracks
    payload = pyav_tracks.payload(source, track, 0, len(track.samples))
    stream = to_adts(payload, track.samples.sizes, track.codec.extradata)
    ours = _decode_audio(stream, "aac")
    assert len(ours) == len(track.samples)
    reference = _decode_audio(source.path.read_bytes(), "mp4")
    # the MP4 path drops the first frame: its 1024 samples are the encoder priming the edit list skips
    assert len(reference) == len(ours) - 1
    for a, b in zip(ours[1:], reference):
        np.testing.assert_array_equal(a, b)


# -- Annex B --------------------------------------------------------------------------------------------------------


def test_aud_constants():
    assert annexb.AUD_H264[4] & 0x1F == annexb.H264_AUD
    assert annexb.AUD_HEVC[4] >> 1 & 0x3F == annexb.HEVC_AUD


def _split_annexb(data: bytes) -> list[bytes]:
    return [n.rstrip(b"\x00") for n in data.split(b"\x00\x00\x01")[1:]]


@pytest.mark.parametrize("name, bsf", [("title_180p.mp4", "h264_mp4toannexb"), ("hevc.mp4", "hevc_mp4toannexb")])
def test_annexb_matches_ffmpeg_bitstream_filter(name, bsf):
    """ffmpeg's mp4toannexb filter inserts the avcC/hvcC parameter sets before key frames; ours are the same NAL
    units, and our start-code conversion gives the same NAL units for every sample."""
    source = pyav_tracks.load(fixture_path(name))
    track = source.tracks[0]
    codec = track.codec.codec
    nls, sets = (annexb.parse_hvcc if codec == "hevc" else annexb.parse_avcc)(track.codec.extradata)
    assert nls == 4 and sets == track.codec.parameter_sets
    types = [annexb.nal_unit_type(codec, np.array([s[0]]))[0] for s in sets]
    assert types == ([32, 33, 34] if codec == "hevc" else [7, 8])
    reference = []
    with av.open(str(source.path)) as c:
        f = av.bitstream.BitStreamFilterContext(bsf, c.streams.video[0])
        for packet in c.demux(c.streams.video[0]):
            reference += [bytes(out) for out in f.filter(packet)]
    payload = pyav_tracks.payload(source, track, 0, len(track.samples))
    ours, sizes = annexb.to_annexb(payload, track.samples.sizes, 4)
    assert len(ours) == len(payload) and sizes.tolist() == track.samples.sizes.tolist()
    pos = 0
    for i, (ref, size, key) in enumerate(zip(reference, sizes.tolist(), track.samples.keyframe)):
        nals = _split_annexb(ours[pos : pos + size])
        pos += size
        ref_nals = _split_annexb(ref)
        if i == 0:  # ffmpeg inserts the parameter sets (and any SEI of the record) ahead of the first slice
            k = ref_nals.index(sets[0])
            assert ref_nals[k : k + len(sets)] == list(sets)
        inserted = [n for n in ref_nals if n not in nals and key and n in track.codec.extradata]
        assert [n for n in ref_nals if n not in inserted] == nals
    assert len(reference) == len(track.samples)


nal_lists = st.lists(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=4), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(samples=nal_lists, size=st.sampled_from([1, 2, 3, 4]))
def test_to_annexb_any_length_size(samples, size):
    samples = [[n[: (1 << 8 * size) - 1] for n in sample] for sample in samples]
    mp4 = [b"".join(len(n).to_bytes(size, "big") + n for n in s) for s in samples]
    payload, sizes = annexb.to_annexb(b"".join(mp4), np.array([len(s) for s in mp4]), size)
    expected = [b"".join(annexb.START_CODE + n for n in s) for s in samples]
    assert payload == b"".join(expected)
    assert sizes.tolist() == [len(e) for e in expected]
    widened, wsizes = annexb.widen_length_prefixes(b"".join(mp4), np.array([len(s) for s in mp4]), size)
    assert widened == b"".join(b"".join(len(n).to_bytes(4, "big") + n for n in s) for s in samples)
    assert wsizes.tolist() == sizes.tolist()


def test_nal_units_reports_owner_and_rejects_overruns():
    sample_a = b"\x00\x00\x00\x02ab" + b"\x00\x00\x00\x01c"
    sample_b = b"\x00\x00\x00\x03def"
    data = np.frombuffer(sample_a + sample_b, dtype=np.uint8)
    offsets, lengths, owner = annexb.nal_units(data, np.array([0, 11]), np.array([11, 7]), 4)
    assert offsets.tolist() == [0, 6, 11] and lengths.tolist() == [2, 1, 3] and owner.tolist() == [0, 0, 1]
    for bad in (b"\x00\x00\x00\x09ab", b"\x00\x00\x00", b"\x00\x00\x00\x01ab"):
        with pytest.raises(PackagerError) as e:
            annexb.nal_units(np.frombuffer(bad, dtype=np.uint8), np.array([0]), np.array([len(bad)]), 4)
        assert e.value.code is ErrorCode.BAD_DATA
    with pytest.raises(PackagerError):
        annexb.parse_avcc(b"\x01\x64\x00\x1f\xff\xe1\x00\x19")  # SPS length past the end
    with pytest.raises(PackagerError):
        annexb.parse_hvcc(b"\x00" * 30)
