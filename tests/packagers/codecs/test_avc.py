"""packagers.codecs.avc: the avcC record, SPS picture size, and the length-prefixed → Annex B conversion, checked
against hand-decoded headers and against ffmpeg itself (its h264/hevc_mp4toannexb bitstream filters, and the
picture size PyAV reports). The conversion is shared by HEVC, so both fixtures run through it here; hvcC and the
HEVC SPS are in test_hevc.py."""
from __future__ import annotations

import av
import av.bitstream
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.generate import fixture_path
from packagers.codecs import avc, hevc
from packagers.errors import ErrorCode, PackagerError
from tests.packagers import pyav_tracks


def test_aud_constants():
    assert avc.nal_unit_types(np.frombuffer(avc.AUD[4:5], dtype=np.uint8))[0] == avc.AUD_NAL_TYPE
    assert hevc.nal_unit_types(np.frombuffer(hevc.AUD[4:5], dtype=np.uint8))[0] == hevc.AUD_NAL_TYPE


# -- avcC -----------------------------------------------------------------------------------------------------------


def test_avcc_rejects_length_size_3_and_truncation():
    good = bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 2, 0x67, 0x64, 1, 0, 1, 0x68])
    config = avc.parse_avcc(good, "avc1", "t")
    assert config.codec_string == "avc1.64001f" and config.parameter_sets == (b"\x67\x64", b"\x68")
    assert config.nal_length_size == 4
    with pytest.raises(PackagerError, match="NAL length size 3"):
        avc.parse_avcc(good[:4] + b"\xFE" + good[5:], "avc1", "t")
    with pytest.raises(PackagerError, match="parse_avcc: record truncated"):
        avc.parse_avcc(good[:-1], "avc1", "t")
    with pytest.raises(PackagerError, match="parse_avcc: record truncated"):
        avc.parse_avcc(b"\x01\x64\x00\x1f\xff\xe1\x00\x19", "avc1", "t")  # SPS length past the end
    with pytest.raises(PackagerError, match="configurationVersion 0"):
        avc.parse_avcc(b"\x00" + good[1:], "avc1", "t")


# -- SPS ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["title_180p.mp4", "title_240p.mp4", "hevc.mp4"])
def test_sps_size_is_the_size_ffmpeg_decodes(name):
    """320x180 and 426x240 are coded as whole macroblocks/CTBs and cropped: the crop must be applied."""
    source = pyav_tracks.load(fixture_path(name))
    track = source.tracks[0]
    syntax = hevc if track.codec.codec == "hevc" else avc
    sps = [s for s in track.codec.parameter_sets if syntax.nal_unit_types(np.array([s[0]]))[0] == syntax.SPS]
    assert len(sps) == 1
    with av.open(str(source.path)) as c:
        expected = (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height)
    assert syntax.sps_size(sps[0]) == expected


def test_sps_size_hand_decoded():
    # High profile, level 3.1, 1280x720: pic_width_in_mbs 80, pic_height_in_map_units 45, no cropping
    sps = bytes.fromhex("6764001facd9405005bb011000000300100000030320f1831960")
    assert avc.sps_size(sps) == (1280, 720)
    for cut in (4, 6):
        with pytest.raises(PackagerError, match="avc.sps_size: SPS truncated") as e:
            avc.sps_size(sps[:cut])
        assert e.value.code is ErrorCode.BAD_DATA


# -- Annex B --------------------------------------------------------------------------------------------------------


def _split_annexb(data: bytes) -> list[bytes]:
    return [n.rstrip(b"\x00") for n in data.split(b"\x00\x00\x01")[1:]]


@pytest.mark.parametrize("name, bsf", [("title_180p.mp4", "h264_mp4toannexb"), ("hevc.mp4", "hevc_mp4toannexb")])
def test_annexb_matches_ffmpeg_bitstream_filter(name, bsf):
    """ffmpeg's mp4toannexb filter inserts the avcC/hvcC parameter sets before key frames; ours are the same NAL
    units, and our start-code conversion gives the same NAL units for every sample."""
    source = pyav_tracks.load(fixture_path(name))
    track = source.tracks[0]
    syntax = hevc if track.codec.codec == "hevc" else avc
    config = syntax.parse_config(track.codec.extradata, track.codec.fourcc, "t")
    sets = config.parameter_sets
    assert config.nal_length_size == 4 and sets == track.codec.parameter_sets
    types = [syntax.nal_unit_types(np.array([s[0]]))[0] for s in sets]
    assert types == ([32, 33, 34] if syntax is hevc else [7, 8])
    reference = []
    with av.open(str(source.path)) as c:
        f = av.bitstream.BitStreamFilterContext(bsf, c.streams.video[0])
        for packet in c.demux(c.streams.video[0]):
            reference += [bytes(out) for out in f.filter(packet)]
    payload = pyav_tracks.payload(source, track, 0, len(track.samples))
    ours, sizes = avc.to_annexb(payload, track.samples.sizes, 4)
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


@settings(max_examples=60)
@given(samples=nal_lists, size=st.sampled_from([1, 2, 3, 4]))
def test_to_annexb_any_length_size(samples, size):
    samples = [[n[: (1 << 8 * size) - 1] for n in sample] for sample in samples]
    mp4 = [b"".join(len(n).to_bytes(size, "big") + n for n in s) for s in samples]
    payload, sizes = avc.to_annexb(b"".join(mp4), np.array([len(s) for s in mp4]), size)
    expected = [b"".join(avc.START_CODE + n for n in s) for s in samples]
    assert payload == b"".join(expected)
    assert sizes.tolist() == [len(e) for e in expected]
    widened, wsizes = avc.widen_length_prefixes(b"".join(mp4), np.array([len(s) for s in mp4]), size)
    assert widened == b"".join(b"".join(len(n).to_bytes(4, "big") + n for n in s) for s in samples)
    assert wsizes.tolist() == sizes.tolist()


def test_nal_units_reports_owner_and_rejects_overruns():
    sample_a = b"\x00\x00\x00\x02ab" + b"\x00\x00\x00\x01c"
    sample_b = b"\x00\x00\x00\x03def"
    data = np.frombuffer(sample_a + sample_b, dtype=np.uint8)
    offsets, lengths, owner = avc.nal_units(data, np.array([0, 11]), np.array([11, 7]), 4)
    assert offsets.tolist() == [0, 6, 11] and lengths.tolist() == [2, 1, 3] and owner.tolist() == [0, 0, 1]
    for bad in (b"\x00\x00\x00\x09ab", b"\x00\x00\x00", b"\x00\x00\x00\x01ab"):
        with pytest.raises(PackagerError) as e:
            avc.nal_units(np.frombuffer(bad, dtype=np.uint8), np.array([0]), np.array([len(bad)]), 4)
        assert e.value.code is ErrorCode.BAD_DATA
