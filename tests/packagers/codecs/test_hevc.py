"""packagers.codecs.hevc: the hvcC record (codec string, VPS/SPS/PPS arrays in any order) and the HEVC SPS picture
size; the conversion to Annex B and the SPS size against PyAV are in test_avc.py (they run both codecs)."""
from __future__ import annotations

import pytest

from packagers.codecs import hevc
from packagers.errors import ErrorCode, PackagerError


@pytest.mark.parametrize("constraint,expected", [
    (bytes([0xB0, 0, 0, 0, 0, 0]), "hvc1.1.6.L93.B0"),
    (bytes(6), "hvc1.1.6.L93"),
    (bytes([0x90, 0, 0x12, 0, 0, 0]), "hvc1.1.6.L93.90.0.12"),
])
def test_hevc_codec_string(constraint, expected):
    assert hevc.hevc_codec_string("hvc1", 0, 0, 1, 0x60000000, constraint, 93) == expected
    assert hevc.hevc_codec_string("hev1", 2, 1, 2, 0x20000000, bytes(6), 120) == "hev1.B2.4.H120"


def _hvcc(arrays: list[tuple[int, list[bytes]]], length_size_minus_one: int = 3) -> bytes:
    head = bytes([1, 0x01]) + (0x60000000).to_bytes(4, "big") + bytes([0xB0, 0, 0, 0, 0, 0, 93]) + bytes(8)
    body = bytes([0xFC | length_size_minus_one, len(arrays)])
    for nal_type, nals in arrays:
        body += bytes([0x80 | nal_type]) + len(nals).to_bytes(2, "big")
        body += b"".join(len(n).to_bytes(2, "big") + n for n in nals)
    return head + body


def test_hvcc_orders_parameter_sets_and_drops_sei():
    vps, sps, pps, sei = b"\x40\x01\x0c", b"\x42\x01\x01", b"\x44\x01\xc1", b"\x4e\x01\x05"
    config = hevc.parse_hvcc(_hvcc([(39, [sei]), (34, [pps]), (33, [sps]), (32, [vps])]), "hvc1", "t")
    assert config.parameter_sets == (vps, sps, pps)
    assert config.codec_string == "hvc1.1.6.L93.B0" and config.nal_length_size == 4
    with pytest.raises(PackagerError, match="NAL length size 3 is not allowed in t"):
        hevc.parse_hvcc(_hvcc([(32, [vps])], length_size_minus_one=2), "hvc1", "t")
    with pytest.raises(PackagerError, match="parse_hvcc: record truncated in t") as e:
        hevc.parse_hvcc(_hvcc([(32, [vps])])[:-1], "hvc1", "t")
    assert e.value.code is ErrorCode.BAD_DATA
    with pytest.raises(PackagerError, match="parse_hvcc: record truncated"):
        hevc.parse_hvcc(b"\x00" * 22, "hvc1", "t")


def test_sps_size_hand_built():
    """A minimal Main-profile SPS, one sub-layer, 4:2:0: 1920x1088 coded, a conformance window of 4 chroma rows at
    the bottom gives 1080; the same SPS without the window bit gives the coded size."""
    def sps(window: bool) -> bytes:
        bits = "0000" + "000" + "1"              # vps id, max_sub_layers_minus1 0, temporal_id_nesting
        bits += "0" * 96                          # general profile_tier_level (contents not read)
        bits += "1"                               # sps_seq_parameter_set_id ue 0
        bits += "010"                             # chroma_format_idc ue 1
        bits += "0" * 10 + "1" + f"{1920 + 1 - 1024:010b}"   # pic_width ue 1920
        bits += "0" * 10 + "1" + f"{1088 + 1 - 1024:010b}"   # pic_height ue 1088
        bits += ("1" + "1" + "1" + "1" + "00101") if window else "0"   # left 0 right 0 top 0 bottom 4
        bits += "1"
        bits += "0" * (-len(bits) % 8)
        return b"\x42\x01" + int(bits, 2).to_bytes(len(bits) // 8, "big")
    assert hevc.sps_size(sps(True)) == (1920, 1080)
    assert hevc.sps_size(sps(False)) == (1920, 1088)
    with pytest.raises(PackagerError, match="hevc.sps_size: SPS truncated"):
        hevc.sps_size(sps(True)[:8])
