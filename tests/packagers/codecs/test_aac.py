"""packagers.codecs.aac: the one AudioSpecificConfig parser (what players are told and what an ADTS header needs),
esds descriptors, and ADTS headers checked against hand-decoded bytes and against ffmpeg's own AAC decoder."""
from __future__ import annotations

import io

import av
import numpy as np
import pytest

from fixtures.generate import fixture_path
from packagers.codecs.aac import (
    AudioSpecificConfig,
    adts_constant,
    adts_headers,
    esds_payload,
    parse_audio_specific_config,
    parse_esds,
    to_adts,
)
from packagers.errors import ErrorCode, PackagerError
from tests.packagers import pyav_tracks


def _bits(*fields: tuple[int, int]) -> bytes:
    """(width, value) fields MSB first, zero-padded to whole bytes."""
    value, n = 0, 0
    for width, v in fields:
        value, n = (value << width) | v, n + width
    pad = -n % 8
    return (value << pad).to_bytes((n + pad) // 8, "big")


class Bits:
    def __init__(self, data: bytes):
        self.value, self.left = int.from_bytes(data, "big"), len(data) * 8

    def read(self, n: int) -> int:
        self.left -= n
        return self.value >> self.left & ((1 << n) - 1)


# -- AudioSpecificConfig ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("asc,codec,rate,channels", [
    (bytes.fromhex("1210"), "mp4a.40.2", 44100, 2),
    (bytes.fromhex("121056e500"), "mp4a.40.2", 44100, 2),  # sync extension, sbrPresentFlag 0 (ffmpeg's)
    (_bits((5, 2), (4, 6), (4, 2), (3, 0), (11, 0x2B7), (5, 5), (1, 1), (4, 3)), "mp4a.40.2", 48000, 2),
    (_bits((5, 5), (4, 6), (4, 2), (4, 3), (5, 2), (3, 0)), "mp4a.40.5", 48000, 2),  # explicit HE-AAC
    (_bits((5, 29), (4, 6), (4, 1), (4, 3), (5, 2), (3, 0)), "mp4a.40.29", 48000, 2),  # HE-AAC v2: PS -> stereo
    (_bits((5, 2), (4, 15), (24, 37800), (4, 1), (3, 0)), "mp4a.40.2", 37800, 1),  # explicit frequency
    (_bits((5, 31), (6, 10), (4, 3), (4, 2)), "mp4a.40.42", 48000, 2),  # escaped object type
    (_bits((5, 2), (4, 13), (4, 0), (3, 0)), "mp4a.40.2", 0, 0),  # reserved index, PCE: sample entry decides
])
def test_audio_specific_config(asc, codec, rate, channels):
    config = parse_audio_specific_config(asc, "t")
    assert (config.codec_string, config.sample_rate, config.channels) == (codec, rate, channels)


def test_one_parse_gives_the_player_view_and_the_adts_view():
    """Explicit HE-AAC (object type 5, 24 kHz core, 48 kHz extension): players are told mp4a.40.5 at 48 kHz, the
    ADTS header carries the AAC-LC core at 24 kHz (index 6)."""
    config = parse_audio_specific_config(bytes([0x2B, 0x11, 0x88]), "t")
    assert config == AudioSpecificConfig(object_type=5, core_object_type=2, sampling_frequency_index=6,
                                         core_sample_rate=24000, sample_rate=48000, channel_configuration=2,
                                         channels=2, extension_frequency_index=3)
    header = Bits(adts_headers(config, np.array([0])).tobytes())
    header.read(16)  # syncword, ID, layer, protection_absent
    assert (header.read(2), header.read(4)) == (2 - 1, 6)  # profile_ObjectType = core - 1, samplingFrequencyIndex


def test_truncated_audio_specific_config_names_where():
    with pytest.raises(PackagerError, match="parse_audio_specific_config: AudioSpecificConfig truncated in here") as e:
        parse_audio_specific_config(b"\x12", "here")
    assert e.value.code is ErrorCode.BAD_DATA


# -- esds ------------------------------------------------------------------------------------------------------------


def test_esds_descriptor_sizes_short_and_long():
    asc = bytes.fromhex("1210")
    dcd = bytes([0x40, 0x15]) + bytes(11)
    for size_bytes in (lambda n: bytes([n]), lambda n: bytes([0x80, 0x80, 0x80, n])):
        dsi = b"\x05" + size_bytes(len(asc)) + asc
        dcd_full = b"\x04" + size_bytes(len(dcd) + len(dsi)) + dcd + dsi
        es = b"\x00\x01\x00" + dcd_full + b"\x06\x01\x02"
        esds = b"\x03" + size_bytes(len(es)) + es
        assert parse_esds(esds, "t") == (0x40, asc)
    with pytest.raises(PackagerError, match="parse_esds: descriptor"):
        parse_esds(b"\x03\x80\x80\x80\x7f\x00", "t")


# -- ADTS ------------------------------------------------------------------------------------------------------------


def test_adts_header_known_bytes():
    """AAC LC, 44.1 kHz, stereo, a 371-byte frame: worked out by hand from ISO/IEC 14496-3 Table 1.A.5."""
    config = parse_audio_specific_config(bytes([0x12, 0x10]), "t")
    assert (config.core_object_type, config.sampling_frequency_index, config.channel_configuration) == (2, 4, 2)
    assert adts_headers(config, np.array([371])).tobytes() == bytes.fromhex("fff150802f5ffc")


@pytest.mark.parametrize("asc, size", [(b"\x12\x10", 0), (b"\x11\x90", 1000), (b"\x13\x08", 8184), (b"\x0a\x10", 5)])
def test_adts_header_fields(asc, size):
    config = parse_audio_specific_config(asc, "t")
    header = adts_headers(config, np.array([size])).tobytes()
    b = Bits(header)
    fields = [b.read(n) for n in (12, 1, 2, 1, 2, 4, 1, 3, 1, 1, 1, 1, 13, 11, 2)]
    sync, mpeg2, layer, no_crc, profile, freq, private, chans, orig, home, cib, cis, length, fullness, blocks = fields
    assert (sync, mpeg2, layer, no_crc, private, orig, home, cib, cis) == (0xFFF, 0, 0, 1, 0, 0, 0, 0, 0)
    assert profile == config.core_object_type - 1 and freq == config.sampling_frequency_index
    assert chans == config.channel_configuration
    assert length == size + 7 and fullness == 0x7FF and blocks == 0


def test_adts_header_edge_cases():
    # explicit frequency (index 15, 24 bits): ADTS has no escape, so the nearest index (44100 -> 4)
    asc = (2 << 35 | 15 << 31 | 44000 << 7 | 2 << 3).to_bytes(5, "big")
    config = parse_audio_specific_config(asc, "t")
    assert (config.sampling_frequency_index, config.core_sample_rate) == (15, 44000)
    assert (adts_constant(config) >> 34) & 0xF == 4
    usac = (31 << 11 | (42 - 32) << 5).to_bytes(2, "big") + b"\x20"  # escape object type 42 (USAC)
    with pytest.raises(PackagerError) as e:
        adts_constant(parse_audio_specific_config(usac, "t"))
    assert e.value.code is ErrorCode.UNSUPPORTED
    with pytest.raises(PackagerError) as e:
        adts_headers(parse_audio_specific_config(b"\x12\x10", "t"), np.array([8185]))
    assert e.value.code is ErrorCode.BAD_DATA
    with pytest.raises(PackagerError) as e:  # channelConfiguration 8: 4 bits in an ASC, 3 in ADTS
        adts_constant(parse_audio_specific_config(_bits((5, 2), (4, 4), (4, 8), (3, 0)), "t"))
    assert e.value.code is ErrorCode.UNSUPPORTED


@pytest.mark.parametrize("asc", [
    _bits((5, 2), (4, 13), (4, 2), (3, 0)),  # reserved core index: MP4 falls back to the sample entry, ADTS cannot
    _bits((5, 5), (4, 6), (4, 2), (4, 14), (5, 2), (3, 0)),  # explicit SBR with a reserved extension index
])
def test_adts_rejects_reserved_frequency_indexes(asc):
    parse_audio_specific_config(asc, "t")  # the demuxer accepts it
    with pytest.raises(PackagerError, match="adts_constant: reserved samplingFrequencyIndex 1[34]") as e:
        adts_constant(parse_audio_specific_config(asc, "t"))
    assert e.value.code is ErrorCode.BAD_DATA


def _decode_audio(container_bytes: bytes, fmt: str) -> list[np.ndarray]:
    with av.open(io.BytesIO(container_bytes), format=fmt) as c:
        return [f.to_ndarray() for f in c.decode(audio=0)]


def test_adts_stream_decodes_like_the_mp4():
    source = pyav_tracks.load(fixture_path("audio_only.mp4"))
    (track,) = source.tracks
    payload = pyav_tracks.payload(source, track, 0, len(track.samples))
    config = parse_audio_specific_config(track.codec.extradata, "audio_only.mp4")
    stream = to_adts(payload, track.samples.sizes, config)
    ours = _decode_audio(stream, "aac")
    assert len(ours) == len(track.samples)
    reference = _decode_audio(source.path.read_bytes(), "mp4")
    # the MP4 path drops the first frame: its 1024 samples are the encoder priming the edit list skips
    assert len(reference) == len(ours) - 1
    for a, b in zip(ours[1:], reference):
        np.testing.assert_array_equal(a, b)


def test_esds_written_reads_back():
    """The esds the fMP4 init writes is read by the demuxer's parser: same object type, same ASC."""
    asc = bytes.fromhex("121056e500")
    payload = esds_payload(asc, buffer_size=0x1234, max_bitrate=1 << 40, avg_bitrate=128000)
    assert parse_esds(payload, "t") == (0x40, asc)
    # DecoderConfigDescriptor fields: streamType 5 << 2 | 1, bufferSizeDB, maxBitrate clamped to 32 bits
    dcd = payload.index(b"\x04") + 2
    assert payload[dcd : dcd + 13] == bytes([0x40, 0x15, 0, 0x12, 0x34]) + b"\xff" * 4 + (128000).to_bytes(4, "big")
