"""RTMP handshake: fragmentation, leftovers, bad versions, client↔server, the recorded and the live ffmpeg client."""
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packagers.codecs.amf0 import decode_all
from rtmp.errors import RtmpError
from rtmp.handshake import HANDSHAKE_SIZE, ClientHandshake, ServerHandshake
from tests.needs import needs_executable

TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"


def fixed_random(fill: int):
    return lambda n: bytes([fill]) * n


def simple_c1(time_ms: int = 1234, version: bytes = b"\x00\x00\x00\x00") -> bytes:
    return struct.pack(">I", time_ms) + version + bytes(range(256)) * 5 + bytes(range(248))


def feed_in_pieces(hs, data: bytes, sizes) -> bytes:
    out, pos, i = b"", 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out += hs.feed(data[pos:pos + n])
        pos += n
        i += 1
    return out


def test_server_replies_s0_s1_s2_after_c1():
    c1 = simple_c1()
    assert len(c1) == HANDSHAKE_SIZE
    hs = ServerHandshake(time_ms=777, random=fixed_random(0xAB))
    assert hs.feed(b"\x03") == b""
    assert hs.feed(c1[:-1]) == b""
    reply = hs.feed(c1[-1:])
    assert len(reply) == 1 + 2 * HANDSHAKE_SIZE
    assert reply[0] == 3
    s1 = reply[1:1 + HANDSHAKE_SIZE]
    assert s1[:4] == struct.pack(">I", 777) and s1[4:8] == b"\x00\x00\x00\x00"  # our time, version 0
    assert s1[8:] == b"\xab" * (HANDSHAKE_SIZE - 8)
    assert reply[1 + HANDSHAKE_SIZE:] == c1  # S2 echoes C1
    assert hs.peer_time == 1234 and hs.peer_version == (0, 0, 0, 0)
    assert not hs.done
    assert hs.feed(b"\x00" * (HANDSHAKE_SIZE - 1)) == b"" and not hs.done
    assert hs.feed(b"\x00") == b""
    assert hs.done and hs.leftover == b""


def test_server_byte_at_a_time_with_leftover():
    c1 = simple_c1(version=b"\x09\x00\x7c\x02")
    c2 = b"\xee" * HANDSHAKE_SIZE  # garbage C2 is accepted
    tail = b"\x03\x00\x00\x00chunk-stream"
    hs = ServerHandshake(random=fixed_random(1))
    out = b""
    for i, b in enumerate(b"\x03" + c1 + c2 + tail):
        out += hs.feed(bytes([b]))
        assert hs.done == (i >= HANDSHAKE_SIZE * 2)
    assert out[0] == 3 and out[1 + HANDSHAKE_SIZE:] == c1 and len(out) == 1 + 2 * HANDSHAKE_SIZE
    assert hs.peer_version == (9, 0, 124, 2)
    assert hs.leftover == tail


def test_server_everything_in_one_feed():
    c1, c2, tail = simple_c1(), simple_c1(5), b"\xc3rest"
    hs = ServerHandshake()
    out = hs.feed(b"\x03" + c1 + c2 + tail)
    assert len(out) == 1 + 2 * HANDSHAKE_SIZE and out[-HANDSHAKE_SIZE:] == c1
    assert hs.done and hs.leftover == tail
    assert hs.feed(b"more") == b"" and hs.leftover == tail + b"more"  # late data joins the chunk stream


@given(st.lists(st.integers(1, 4000), min_size=1, max_size=20), st.binary(max_size=300))
@settings(max_examples=100)
def test_server_any_fragmentation(sizes, tail):
    c1, c2 = simple_c1(), simple_c1(99)
    hs = ServerHandshake(random=fixed_random(7))
    out = feed_in_pieces(hs, b"\x03" + c1 + c2 + tail, sizes)
    assert hs.done and hs.leftover == tail
    assert out == b"\x03" + b"\x00" * 8 + b"\x07" * (HANDSHAKE_SIZE - 8) + c1


@pytest.mark.parametrize("version", [0, 6, 0x80, 0xFF])  # 6 = RTMPE, not supported
def test_server_rejects_bad_version(version):
    hs = ServerHandshake()
    with pytest.raises(RtmpError, match=rf"^ServerHandshake.feed: unsupported RTMP version {version} in C0"):
        hs.feed(bytes([version]) + simple_c1())


def test_client_start_and_feed():
    hs = ClientHandshake(time_ms=42, random=fixed_random(0x5A))
    c0c1 = hs.start()
    assert c0c1 == b"\x03" + struct.pack(">I", 42) + b"\x00" * 4 + b"\x5a" * (HANDSHAKE_SIZE - 8)
    s1 = simple_c1(1000, b"\x0d\x0e\x0a\x0d")
    out = b""
    for b in b"\x03" + s1:
        out += hs.feed(bytes([b]))
    assert out == s1  # C2 echoes S1 as soon as S1 is complete
    assert hs.peer_version == (13, 14, 10, 13) and hs.peer_time == 1000 and not hs.done
    tail = b"\x02\x00\x00\x00"
    assert feed_in_pieces(hs, c0c1[1:] + tail, [1, 3, 700]) == b""
    assert hs.done and hs.leftover == tail


def test_client_rejects_bad_version_and_misuse():
    hs = ClientHandshake()
    with pytest.raises(RtmpError, match="^ClientHandshake.feed: start"):
        hs.feed(b"\x03")
    hs.start()
    with pytest.raises(RtmpError, match="^ClientHandshake.start: called twice"):
        hs.start()
    with pytest.raises(RtmpError, match="^ClientHandshake.feed: unsupported RTMP version 8 in S0"):
        hs.feed(b"\x08")


@given(st.lists(st.integers(1, 2000), min_size=1, max_size=10), st.lists(st.integers(1, 2000), min_size=1,
                                                                       max_size=10))
@settings(max_examples=50)
def test_client_and_server_against_each_other(client_sizes, server_sizes):
    client, server = ClientHandshake(time_ms=1), ServerHandshake(time_ms=2)
    to_server = client.start()
    to_client = b""
    # ping-pong with arbitrary fragmentation until both are done; the client's first chunk-stream bytes follow C2
    for _ in range(10):
        to_client += feed_in_pieces(server, to_server, server_sizes) if to_server else b""
        to_server = b""
        if to_client:
            to_server = feed_in_pieces(client, to_client, client_sizes)
            to_client = b""
            if to_server:
                to_server += b"client-after"
        if client.done and server.done:
            break
    assert client.done and server.done
    assert server.c1 == client.c1 and client.s1 is not None
    assert server.leftover == b"client-after" and client.leftover == b""
    assert client.peer_time == 2 and server.peer_time == 1


# ------------------------------------------------------------------------------------------ real ffmpeg
def parse_first_message(stream: bytes, chunk_size: int = 128) -> tuple[int, bytes]:
    """By hand: basic header fmt 0 csid 3, 11-byte message header, body split by 0xC3 fmt-3 headers."""
    assert stream[0] == 0x03, f"first chunk is not fmt 0 / csid 3: {stream[:1].hex()}"
    length, type_id = int.from_bytes(stream[4:7], "big"), stream[7]
    body, pos = b"", 12
    while len(body) < length:
        if body:
            assert stream[pos] == 0xC3
            pos += 1
        take = min(chunk_size, length - len(body))
        body += stream[pos:pos + take]
        pos += take
    assert len(body) == length, "stream ended inside the first message"
    return type_id, body


def test_recorded_ffmpeg_c1_is_accepted():
    c0c1 = (TRANSCRIPTS / "ffmpeg_c0c1.bin").read_bytes()
    assert len(c0c1) == 1 + HANDSHAKE_SIZE
    hs = ServerHandshake()
    out = feed_in_pieces(hs, c0c1, [1])
    assert hs.peer_version == (9, 0, 124, 2)  # ffmpeg's digest-style C1 (Flash version bytes)
    assert out[0] == 3 and out[1 + HANDSHAKE_SIZE:] == c0c1[1:]


@needs_executable("ffmpeg")
@pytest.mark.timeout(60)
def test_live_ffmpeg_completes_handshake_and_sends_connect():
    from tests.rtmp.ffmpeg_capture import capture_ffmpeg_connect

    cap = capture_ffmpeg_connect(max_bytes=4096, timeout=30.0)
    assert cap.c0c1[0] == 3 and len(cap.c2) == HANDSHAKE_SIZE
    assert cap.chunks, f"ffmpeg sent nothing after C2; stderr: {cap.ffmpeg_stderr}"
    type_id, body = parse_first_message(cap.chunks)
    assert type_id == 20  # AMF0 command
    values = decode_all(body)
    assert values[:2] == ["connect", 1.0]
    props = values[2]
    assert props["app"] == "live" and props["type"] == "nonprivate"
    assert props["flashVer"].startswith("FMLE/3.0 (compatible; Lavf")
    assert props["tcUrl"].startswith("rtmp://127.0.0.1:") and props["tcUrl"].endswith("/live")
