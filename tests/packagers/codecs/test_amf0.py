"""AMF0 codec (packagers.codecs.amf0, shared by RTMP and HDS): round trips for every type, exact decoding of real
bytes, hostile input (only Amf0Error comes out; rtmp turns it into RtmpError, see tests/rtmp/test_fuzz.py)."""
import math
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packagers.codecs import amf0
from packagers.codecs.amf0 import (MAX_DEPTH, UNDEFINED, UNSUPPORTED, Amf0Error, Date, EcmaArray, TypedObject,
                                   XmlDocument, decode, decode_all, encode, encode_all)

TRANSCRIPTS = Path(__file__).resolve().parents[2] / "rtmp" / "transcripts"   # real connect bytes from ffmpeg


def same(a, b) -> bool:
    """Equality that also checks types (EcmaArray vs dict, XmlDocument vs str) and treats NaN as equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, TypedObject):
        return a.name == b.name and same(a.fields, b.fields)
    if isinstance(a, Date):
        return same(float(a.ms), float(b.ms)) and a.tz == b.tz
    return a == b


def roundtrip(value):
    data = encode(value)
    out, pos = decode(data)
    assert pos == len(data)
    return out


# ------------------------------------------------------------------------------------------ exact wire bytes
@pytest.mark.parametrize("value, wire", [
    (1.0, b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"),
    (0, b"\x00" + b"\x00" * 8),
    (True, b"\x01\x01"),
    (False, b"\x01\x00"),
    ("ab", b"\x02\x00\x02ab"),
    ("", b"\x02\x00\x00"),
    (None, b"\x05"),
    (UNDEFINED, b"\x06"),
    (UNSUPPORTED, b"\x0d"),
    ({"a": 1.0}, b"\x03\x00\x01a\x00\x3f\xf0" + b"\x00" * 6 + b"\x00\x00\x09"),
    ({}, b"\x03\x00\x00\x09"),
    (EcmaArray(a=None), b"\x08\x00\x00\x00\x01\x00\x01a\x05\x00\x00\x09"),
    ([None, True], b"\x0a\x00\x00\x00\x02\x05\x01\x01"),
    ((), b"\x0a\x00\x00\x00\x00"),
    (Date(0.0, -60), b"\x0b" + b"\x00" * 8 + b"\xff\xc4"),
    (XmlDocument("<a/>"), b"\x0f\x00\x00\x00\x04<a/>"),
    (TypedObject("C", {"x": None}), b"\x10\x00\x01C\x00\x01x\x05\x00\x00\x09"),
])
def test_encode_exact_bytes_and_decode_back(value, wire):
    assert encode(value) == wire
    out, pos = decode(wire)
    assert pos == len(wire)
    expected = value
    if isinstance(value, tuple):
        expected = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        expected = float(value)
    assert same(out, expected)


def test_decode_position_and_trailing_data():
    data = b"junk" + encode("x") + encode(2.5)
    v, pos = decode(data, 4)
    assert (v, pos) == ("x", 8)
    assert decode(data, pos) == (2.5, len(data))
    assert decode_all(encode_all("a", 1, None)) == ["a", 1.0, None]


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("value", [
    0.0, -0.0, 1.5, -1e308, 5e-324, math.inf, -math.inf, math.nan, 2.0 ** 53,
    True, False, None, UNDEFINED, UNSUPPORTED,
    "", "ascii", "héllo wörld", "日本語", "emoji \U0001F600", "\x00nul inside",
    Date(1_700_000_000_123.0), Date(-1.0, 120), Date(math.nan), Date(math.inf, -32768),
    XmlDocument("<root attr='ü'/>"),
    {"a": {"b": {"c": [1.0, {"d": EcmaArray(e="f")}]}}, "": "empty key", "ü": UNDEFINED},
    EcmaArray({"duration": 0.0, "width": 64.0, "encoder": "Lavf59.27.100", "stereo": False}),
    [[[], {}], EcmaArray(), [None, UNDEFINED, Date(3.0)]],
    TypedObject("flex.messaging.Msg", {"body": [1.0, "x"], "nested": TypedObject("", {})}),
])
def test_roundtrip_every_type(value):
    assert same(roundtrip(value), value)


def test_int_encodes_as_number():
    assert roundtrip(7) == 7.0 and type(roundtrip(7)) is float


def test_tuple_encodes_as_strict_array():
    assert roundtrip((1.0, "a")) == [1.0, "a"]


@pytest.mark.parametrize("n_bytes, marker", [(0xFFFF, 0x02), (0x10000, 0x0C), (200_000, 0x0C)])
def test_long_string_switch(n_bytes, marker):
    s = "x" * n_bytes
    data = encode(s)
    assert data[0] == marker
    assert roundtrip(s) == s


def test_long_string_counts_utf8_bytes_not_characters():
    s = "é" * 40000  # 40000 characters, 80000 UTF-8 bytes
    data = encode(s)
    assert data[0] == 0x0C and struct.unpack(">I", data[1:5])[0] == 80000
    assert roundtrip(s) == s


def test_ecma_array_count_is_advisory():
    body = b"\x00\x01a\x01\x01\x00\x01b\x05\x00\x00\x09"
    for count in (0, 2, 1000, 0xFFFFFFFF):
        out, _ = decode(b"\x08" + struct.pack(">I", count) + body)
        assert type(out) is EcmaArray and out == {"a": True, "b": None}


def test_reference_decodes_to_same_object():
    # [ {"k": 1}, ref 1 ]  — index 0 is the strict array itself, index 1 the object
    obj = encode({"k": 1.0})
    data = b"\x0a\x00\x00\x00\x02" + obj + b"\x07\x00\x01"
    out, _ = decode(data)
    assert out[0] == {"k": 1.0} and out[1] is out[0]
    # references persist across the values of one message body
    assert decode_all(obj + b"\x07\x00\x00")[1] == {"k": 1.0}


@pytest.mark.parametrize("data", [b"\x07\x00\x00", b"\x03\x00\x01k\x07\x00\x01\x00\x00\x09", b"\x07\xff\xff"])
def test_reference_out_of_range(data):
    with pytest.raises(Amf0Error, match=r"^decode: reference \d+ .* out of range"):
        decode(data)


def test_amf3_switch_simple_types():
    cases = [
        (b"\x00", UNDEFINED), (b"\x01", None), (b"\x02", False), (b"\x03", True),
        (b"\x04\x00", 0), (b"\x04\x7f", 127), (b"\x04\x81\x00", 128), (b"\x04\xff\xff\xff\xff", -1),
        (b"\x04\xbf\xff\xff\xff", (1 << 28) - 1), (b"\x04\xc0\x80\x80\x00", -(1 << 28)),
        (b"\x05" + struct.pack(">d", 2.5), 2.5),
        (b"\x06\x01", ""), (b"\x06\x07abc", "abc"),
    ]
    for amf3, expected in cases:
        out, pos = decode(b"\x11" + amf3)
        assert out == expected and type(out) is type(expected), amf3
        assert pos == 1 + len(amf3)


@pytest.mark.parametrize("amf3, message", [
    (b"\x06\x00", "AMF3 string reference"),
    (b"\x09\x01", "AMF3 type 0x09"),  # array
    (b"\x0a\x0b\x01", "AMF3 type 0x0a"),  # object
    (b"\x07", "AMF3 type 0x07"),  # XML doc
    (b"\x06\x05\xff\xfe", "invalid UTF-8"),
    (b"\x04\x80", "truncated AMF3 U29"),
])
def test_amf3_switch_rejects_complex_and_bad(amf3, message):
    with pytest.raises(Amf0Error, match=message):
        decode(b"\x11" + amf3)


# ------------------------------------------------------------------------------------------ real bytes
def strip_chunk_headers(stream: bytes, chunk_size: int = 128) -> tuple[dict, bytes]:
    """By hand: one fmt-0 csid-3 message whose body continues in fmt-3 (0xC3) chunks."""
    assert stream[0] == 0x03  # fmt 0, csid 3
    ts = int.from_bytes(stream[1:4], "big")
    length = int.from_bytes(stream[4:7], "big")
    type_id = stream[7]
    stream_id = int.from_bytes(stream[8:12], "little")
    body, pos = b"", 12
    while len(body) < length:
        if body:
            assert stream[pos] == 0xC3, f"expected a fmt-3 csid-3 header at {pos}"
            pos += 1
        take = min(chunk_size, length - len(body))
        body += stream[pos:pos + take]
        pos += take
    return {"timestamp": ts, "length": length, "type": type_id, "stream_id": stream_id, "end": pos}, body


FFMPEG_CONNECT = [
    "connect", 1.0,
    {"app": "live", "type": "nonprivate", "flashVer": "FMLE/3.0 (compatible; Lavf59.27.100)",
     "tcUrl": "rtmp://127.0.0.1:35825/live"},
]


def test_decode_recorded_ffmpeg_connect():
    stream = (TRANSCRIPTS / "ffmpeg_connect.bin").read_bytes()
    header, body = strip_chunk_headers(stream)
    assert header == {"timestamp": 0, "length": 140, "type": 20, "stream_id": 0, "end": len(stream)}
    values = decode_all(body)
    assert values == FFMPEG_CONNECT
    assert type(values[2]) is dict
    assert encode_all(*FFMPEG_CONNECT) == body  # byte-exact, key order included


def test_decode_hand_written_on_metadata():
    # @setDataFrame/onMetaData as FLV muxers (ffmpeg, OBS) write it: an ECMA array with a count and end marker
    body = (b"\x02\x00\x0d@setDataFrame\x02\x00\x0aonMetaData\x08\x00\x00\x00\x03"
            b"\x00\x05width\x00\x40\x50\x00\x00\x00\x00\x00\x00"
            b"\x00\x0cvideocodecid\x00\x40\x1c\x00\x00\x00\x00\x00\x00"
            b"\x00\x07encoder\x02\x00\x0dLavf59.27.100"
            b"\x00\x00\x09")
    values = decode_all(body)
    assert values == ["@setDataFrame", "onMetaData", {"width": 64.0, "videocodecid": 7.0, "encoder": "Lavf59.27.100"}]
    assert type(values[2]) is EcmaArray
    assert encode_all(*values) == body


# ------------------------------------------------------------------------------------------ hostile input
@pytest.mark.parametrize("data, message", [
    (b"", "truncated type marker"),
    (b"\x00\x3f\xf0", "truncated number"),
    (b"\x02\x00\x05ab", "truncated string"),
    (b"\x0c\xff\xff\xff\xffab", "truncated long string"),
    (b"\x0f\x00\x00\x01\x00", "truncated XML document"),
    (b"\x0a\xff\xff\xff\xff\x05", "claims 4294967295 elements"),
    (b"\x03\x00\x01a\x05", "truncated property name length"),
    (b"\x03\x00\x00", "truncated type marker"),
    (b"\x09", "object end marker outside an object"),
    (b"\x04", "type marker 0x04"),  # movieclip: reserved
    (b"\x0e", "type marker 0x0e"),  # recordset: reserved
    (b"\x12", "type marker 0x12"),
    (b"\x02\x00\x02\xc3\x28", "invalid UTF-8 in string"),
    (b"\x03\x00\x01\xff\x05\x00\x00\x09", "invalid UTF-8 in property name"),
    (b"\x10\x00\x01\x80\x00\x00\x09", "invalid UTF-8 in typed object class name"),
    (b"\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00", "truncated date time zone"),
])
def test_malformed_input_raises_amf0_error(data, message):
    with pytest.raises(Amf0Error, match=message) as e:
        decode(data)
    assert str(e.value).startswith("decode: ") and "\n" not in str(e.value)


def test_decode_position_out_of_range():
    with pytest.raises(Amf0Error, match="^decode: position 5 outside"):
        decode(b"\x05", 5)


@pytest.mark.parametrize("opener", [b"\x03\x00\x01k", b"\x0a\x00\x00\x00\x01", b"\x08\x00\x00\x00\x01\x00\x01k",
                                    b"\x10\x00\x01T\x00\x01k"])
def test_deep_nesting_raises(opener):
    with pytest.raises(Amf0Error, match="nesting deeper than"):
        decode(opener * 64 + b"\x05")
    with pytest.raises(Amf0Error, match="nesting deeper than"):
        decode(opener * 100_000)  # no RecursionError, no hang


def test_nesting_up_to_the_limit_is_fine():
    v: object = None
    for _ in range(MAX_DEPTH):
        v = [v]
    assert roundtrip(v) == v
    with pytest.raises(Amf0Error, match="^encode: nesting deeper than"):
        encode([v])


def test_encode_rejects_what_amf0_cannot_carry():
    cyclic: list = []
    cyclic.append(cyclic)
    for bad, message in [(cyclic, "nesting deeper"), ({1: "x"}, "keys must be str"), (b"bytes", "no AMF0 type"),
                         ({"k": object()}, "no AMF0 type"), ("\ud800", "not encodable as UTF-8"),
                         (10 ** 400, "does not fit"), (Date(0.0, 40000), "outside s16"),
                         ({"k" * 70000: 1}, "exceeds 65535")]:
        with pytest.raises(Amf0Error, match=message):
            encode(bad)


# ------------------------------------------------------------------------------------------ properties
keys = st.text(max_size=12)
scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=40), st.none(),
    st.just(UNDEFINED), st.just(UNSUPPORTED),
    st.builds(Date, st.floats(), st.integers(-0x8000, 0x7FFF)),
    st.builds(XmlDocument, st.text(max_size=20)),
)
values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=5),
    st.dictionaries(keys, children, max_size=5),
    st.dictionaries(keys, children, max_size=5).map(EcmaArray),
    st.builds(TypedObject, st.text(max_size=10), st.dictionaries(keys, children, max_size=4)),
), max_leaves=25)


@given(values)
@settings(max_examples=300)
def test_roundtrip_property(value):
    assert same(roundtrip(value), value)


@given(st.lists(values, max_size=4))
@settings(max_examples=100)
def test_roundtrip_sequence_property(seq):
    out = decode_all(encode_all(*seq))
    assert len(out) == len(seq) and all(same(a, b) for a, b in zip(out, seq))


def _only_amf0_error(data: bytes) -> None:
    try:
        decode_all(data)
    except Amf0Error as e:
        assert str(e).startswith("decode") and "\n" not in str(e)
    try:
        v, pos = decode(data)
        assert 0 < pos <= len(data)
    except Amf0Error:
        pass


@given(st.binary(max_size=512))
@settings(max_examples=1000, deadline=1000)
def test_arbitrary_bytes_raise_only_amf0_error(data):
    _only_amf0_error(data)


# markers followed by anything: reaches far deeper into the decoder than uniform random bytes
amf_ish = st.lists(st.one_of(st.sampled_from([bytes([m]) for m in range(0x13)]),
                             st.sampled_from([b"\x00\x00", b"\x00\x00\x09", b"\x00\x01k", b"\xff\xff\xff\xff",
                                              b"\x00\x00\x00\x02", b"\x07\x00\x00", b"\x80", b"\xc3\x28"]),
                             st.binary(max_size=8)), max_size=60).map(b"".join)


@given(amf_ish)
@settings(max_examples=1000, deadline=1000)
def test_structured_garbage_raises_only_amf0_error(data):
    _only_amf0_error(data)


@given(values, st.data())
@settings(max_examples=200)
def test_truncated_or_corrupted_encodings_raise_only_amf0_error(value, data):
    wire = bytearray(encode(value))
    cut = data.draw(st.integers(0, len(wire)))
    _only_amf0_error(bytes(wire[:cut]))
    if wire:
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
        _only_amf0_error(bytes(wire))


def test_module_exports():
    assert set(amf0.__all__) >= {"decode", "decode_all", "encode", "encode_all", "UNDEFINED", "EcmaArray", "Date",
                                 "TypedObject"}
