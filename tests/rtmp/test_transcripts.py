"""Client byte transcripts replayed byte for byte into `ServerSession`: what ffmpeg sent (recorded, see
transcripts/README.md) and what OBS sends (built from OBS's librtmp source with our ChunkWriter; committed, and
rebuilt here so the file and its recipe cannot drift apart).

    python -m tests.rtmp.test_transcripts      # rewrites transcripts/obs_publish.bin
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from packagers.codecs import amf0
from rtmp.chunk import ChunkReader, ChunkWriter
from rtmp.handshake import HANDSHAKE_SIZE, ClientHandshake
from rtmp.messages import (MSG_AUDIO, MSG_COMMAND_AMF0, MSG_DATA_AMF0, MSG_SET_CHUNK_SIZE, MSG_SET_PEER_BANDWIDTH,
                           MSG_USER_CONTROL, MSG_VIDEO, MSG_WINDOW_ACK_SIZE, Message, SetChunkSize, StreamBegin,
                           StreamEOF, UserControl)
from rtmp.session import Media, Metadata, Publish, ServerSession, Unpublish

TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"

# ------------------------------------------------------------------------------------------------------ OBS

OBS_TC_URL = "rtmp://127.0.0.1:1935/live"
OBS_STREAM = "obs_test_key"
OBS_FLASH_VER = "FMLE/3.0 (compatible; FMSc/1.0)"            # plugins/obs-outputs/rtmp-stream.c: try_connect
# A 1280x720 High-profile avcC (x264) and an AAC-LC 48 kHz stereo AudioSpecificConfig, as OBS's encoders produce.
SPS = bytes.fromhex("6764001facd9405005bb011000000300100000030320f1831960")
PPS = bytes.fromhex("68ebe3cb22c0")
AVCC = bytes([1, 0x64, 0x00, 0x1F, 0xFF, 0xE1]) + len(SPS).to_bytes(2, "big") + SPS + b"\x01" \
    + len(PPS).to_bytes(2, "big") + PPS
ASC = bytes([0x11, 0x90])
KEY_FRAME = bytes([0x17, 1, 0, 0, 0]) + (5995).to_bytes(4, "big") + b"\x65" + bytes(range(256)) * 23 + bytes(106)
INTER_FRAME = bytes([0x27, 1, 0, 0, 0x21]) + (300).to_bytes(4, "big") + b"\x41" + bytes(299)
AAC_FRAME = bytes([0xAF, 1]) + b"\x21\x1b" + bytes(200)


class LibrtmpWriter:
    """librtmp's RTMP_SendPacket header choice, on our ChunkWriter. A LARGE packet is a type-0 header
    (`ChunkWriter.serialize`, then `sent_serialized` so later headers compress against it); a MEDIUM one is left to
    ChunkWriter.write, which picks type 1, or 2/3 when length and type (and the delta) repeat — librtmp's SMALL and
    MINIMUM rule, except that librtmp compares absolute timestamps for MINIMUM (never different for these commands,
    all at timestamp 0). OBS sets its chunk size to 4096 *before* connecting, so every byte uses 4096."""

    def __init__(self) -> None:
        self.w = ChunkWriter(4096)

    def send(self, message: Message, large: bool) -> bytes:
        if large:
            self.w.sent_serialized(message)
            return ChunkWriter.serialize(message, 4096)
        return self.w.write(message)


def obs_segments() -> list[tuple[str, bytes]]:
    """OBS's chunk-stream bytes after C2, cut where OBS waits for the server. From obs-studio's librtmp
    (plugins/obs-outputs/librtmp/rtmp.c): SendConnectPacket sends Set Chunk Size (csid 2, LARGE) then connect (csid 3,
    LARGE, object app/type/flashVer/swfUrl/tcUrl); HandleInvoke, on connect's _result, sends releaseStream, FCPublish
    (csid 3, MEDIUM) and createStream; on createStream's _result, SendPublish (csid 4, LARGE, the new stream id, "live").
    Then rtmp-stream.c sends the metadata and the headers through RTMP_Write (csid 4; LARGE at timestamp 0 and for
    data, MEDIUM after; "@setDataFrame" prepended to the FLV script tag), the media, and at the end RTMP_Close sends
    FCUnpublish and deleteStream."""
    lw = LibrtmpWriter()
    tid = [0]

    def invoke(name: str, *args, csid: int = 3, stream_id: int = 0, large: bool = False, obj=None) -> bytes:
        tid[0] += 1
        return lw.send(Message(csid, 0, MSG_COMMAND_AMF0, stream_id, amf0.encode_all(name, float(tid[0]), obj, *args)),
                       large)

    def write(type_id: int, ts: int, payload: bytes) -> bytes:      # RTMP_Write
        return lw.send(Message(4, ts, type_id, 1, payload), ts == 0 or type_id == MSG_DATA_AMF0)

    connect = (lw.send(SetChunkSize(4096).to_message(), True)
               + invoke("connect", large=True, obj={"app": "live", "type": "nonprivate", "flashVer": OBS_FLASH_VER,
                                                    "swfUrl": OBS_TC_URL, "tcUrl": OBS_TC_URL}))
    publish = invoke("releaseStream", OBS_STREAM) + invoke("FCPublish", OBS_STREAM) + invoke("createStream")
    stream = invoke("publish", OBS_STREAM, "live", csid=4, stream_id=1, large=True)
    # flv-mux.c build_flv_meta_data: an ECMA array of 14 properties
    meta = amf0.EcmaArray(duration=0.0, fileSize=0.0, width=1280.0, height=720.0, videocodecid="avc1",
                          videodatarate=2500.0, framerate=30.0, audiocodecid="mp4a", audiodatarate=160.0,
                          audiosamplerate=48000.0, audiosamplesize=16.0, audiochannels=2.0, stereo=True,
                          encoder="obs-output module (libobs version 30.0.0)")
    media = (write(MSG_DATA_AMF0, 0, amf0.encode_all("@setDataFrame", "onMetaData", meta))
             + write(MSG_VIDEO, 0, bytes([0x17, 0, 0, 0, 0]) + AVCC)
             + write(MSG_AUDIO, 0, bytes([0xAF, 0]) + ASC)
             + write(MSG_VIDEO, 0, KEY_FRAME)
             + write(MSG_AUDIO, 21, AAC_FRAME)
             + write(MSG_VIDEO, 33, INTER_FRAME)
             + write(MSG_AUDIO, 43, AAC_FRAME))
    unpublish = invoke("FCUnpublish", OBS_STREAM) + invoke("deleteStream", 1.0)
    return [("connect", connect), ("publish", publish), ("stream", stream), ("media", media), ("unpublish", unpublish)]


def write_obs_transcript() -> Path:
    path = TRANSCRIPTS / "obs_publish.bin"
    path.write_bytes(b"".join(data for _, data in obs_segments()))
    return path


# ------------------------------------------------------------------------------------------------------ replay

def handshaken(c0c1: bytes) -> ServerSession:
    """A session after a real client's C0+C1 and a C2 that echoes our S1 (what ffmpeg and librtmp send back)."""
    s = ServerSession(0.0)
    reply = s.feed(c0c1).send
    assert len(reply) == 1 + 2 * HANDSHAKE_SIZE and reply[0] == 3
    assert reply[1 + HANDSHAKE_SIZE:] == c0c1[1:]                   # S2 echoes C1
    out = s.feed(reply[1:1 + HANDSHAKE_SIZE])                       # C2 = S1
    assert out.send == b"" and out.events == [] and s.handshake_done
    return s


def commands(messages: list[Message]) -> list[list]:
    return [amf0.decode_all(m.payload) for m in messages if m.message_type_id == MSG_COMMAND_AMF0]


def assert_connect_reply(messages: list[Message], tid: float) -> None:
    """The answer to connect: Window Ack Size, Set Peer Bandwidth, Set Chunk Size 4096, _result Connect.Success."""
    assert [m.message_type_id for m in messages] == [MSG_WINDOW_ACK_SIZE, MSG_SET_PEER_BANDWIDTH, MSG_SET_CHUNK_SIZE,
                                                     MSG_COMMAND_AMF0]
    assert SetChunkSize.parse(messages[2].payload).chunk_size == 4096
    (result,) = commands(messages)
    assert result[:2] == ["_result", tid] and result[3]["code"] == "NetConnection.Connect.Success"


def test_ffmpeg_transcript_replayed():
    c0c1 = (TRANSCRIPTS / "ffmpeg_c0c1.bin").read_bytes()
    s = handshaken(c0c1)
    out = s.feed((TRANSCRIPTS / "ffmpeg_connect.bin").read_bytes())
    assert out.events == []
    assert_connect_reply(ChunkReader().feed(out.send), 1.0)
    assert (s.app, s.tc_url) == ("live", "rtmp://127.0.0.1:35825/live")


def test_obs_transcript_file_matches_its_recipe():
    assert (TRANSCRIPTS / "obs_publish.bin").read_bytes() == b"".join(d for _, d in obs_segments())


def test_obs_transcript_replayed_step_by_step():
    """Each segment as OBS sends it, after the server's answer to the previous one."""
    s = handshaken(ClientHandshake().start())
    data = dict(obs_segments())
    reader = ChunkReader()

    out = s.feed(data["connect"])          # Set Chunk Size 4096 first: connect (under 4096 bytes) is one chunk
    assert out.events == []
    assert_connect_reply(reader.feed(out.send), 1.0)
    assert (s.app, s.tc_url) == ("live", OBS_TC_URL)

    out = s.feed(data["publish"])
    assert out.events == []
    assert commands(reader.feed(out.send)) == [
        ["_result", 2.0, None],                                                     # releaseStream
        ["onFCPublish", 0.0, None, {"level": "status", "code": "NetStream.Publish.Start",
                                     "description": OBS_STREAM}],
        ["_result", 4.0, None, 1.0]]                                                # createStream → stream 1

    out = s.feed(data["stream"])
    assert out.send == b"" and out.events == [Publish("live", OBS_STREAM, 1, "live", OBS_STREAM)]
    accepted = reader.feed(s.accept_publish())
    assert [m.message_type_id for m in accepted] == [MSG_USER_CONTROL, MSG_COMMAND_AMF0]
    assert UserControl.parse(accepted[0].payload) == StreamBegin(1)
    assert commands(accepted)[0][3]["code"] == "NetStream.Publish.Start"

    out = s.feed(data["media"])
    meta, *media = out.events
    assert isinstance(meta, Metadata)
    name, props = amf0.decode_all(meta.message.payload)
    assert name == "onMetaData" and (props["width"], props["height"], props["framerate"]) == (1280, 720, 30)
    assert len(props) == 14 and props["encoder"].startswith("obs-output module")
    assert all(isinstance(e, Media) for e in media)
    assert [(e.message.message_type_id, e.message.timestamp, e.is_keyframe, e.is_sequence_header)
            for e in media] == [(MSG_VIDEO, 0, False, True), (MSG_AUDIO, 0, False, True), (MSG_VIDEO, 0, True, False),
                                (MSG_AUDIO, 21, False, False), (MSG_VIDEO, 33, False, False),
                                (MSG_AUDIO, 43, False, False)]
    assert media[0].message.payload[5:] == AVCC and media[1].message.payload[2:] == ASC
    assert media[2].message.payload == KEY_FRAME      # 6005 bytes: two 4096-byte chunks, reassembled
    assert {e.message.message_stream_id for e in media} == {1}

    out = s.feed(data["unpublish"])
    assert out.events == [Unpublish("live", OBS_STREAM)]
    assert s.bytes_in == sum(len(d) for d in data.values())


@pytest.mark.parametrize("seed", range(5))
def test_obs_transcript_any_fragmentation_same_events(seed):
    """The whole transcript in one write, byte by byte, or in random pieces: the same events in the same order."""
    wire = (TRANSCRIPTS / "obs_publish.bin").read_bytes()
    c0c1 = ClientHandshake().start()

    def replay(pieces: list[bytes]) -> list:
        s = handshaken(c0c1)
        events = []
        for piece in pieces:
            events += s.feed(piece).events
        return events

    whole = replay([wire])
    assert [type(e).__name__ for e in whole] == ["Publish", "Metadata"] + ["Media"] * 6 + ["Unpublish"]
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(wire)), 40))
    pieces = [wire[a:b] for a, b in zip([0] + cuts, cuts + [len(wire)])]
    assert replay(pieces) == whole
    if seed == 0:
        assert replay([wire[i:i + 1] for i in range(len(wire))]) == whole


async def test_obs_transcript_accepted_by_nginx_rtmp(tmp_path):
    """Independent ground truth for the built transcript: a real nginx-rtmp-module takes it as an OBS publish
    (segment by segment, each after nginx's answer) and relays its media to a player byte for byte."""
    import asyncio

    from tests.rtmp.nginx_rtmp import NginxRtmp
    from tests.rtmp.test_server_ffmpeg import RawClient

    data = dict(obs_segments())
    with NginxRtmp(tmp_path / "nginx") as nginx:
        player = await RawClient.connect(nginx.port)
        assert (await player.play(OBS_STREAM))["code"] == "NetStream.Play.Start"

        reader, writer = await asyncio.open_connection("127.0.0.1", nginx.port)
        hs, chunks = ClientHandshake(), ChunkReader()
        writer.write(hs.start())
        while not hs.done:
            c2 = hs.feed(await asyncio.wait_for(reader.read(65536), 5))
            if c2:
                writer.write(c2)
        pending = chunks.feed(hs.leftover)

        async def until(pred) -> list:
            nonlocal pending
            while True:
                for i, m in enumerate(pending):
                    if m.message_type_id == MSG_COMMAND_AMF0 and pred(amf0.decode_all(m.payload)):
                        found, pending = amf0.decode_all(m.payload), pending[i + 1:]
                        return found
                pending = []
                pending += chunks.feed(await asyncio.wait_for(reader.read(65536), 5))

        writer.write(data["connect"])
        assert (await until(lambda v: v[0] == "_result"))[3]["code"] == "NetConnection.Connect.Success"
        writer.write(data["publish"])
        stream_id = (await until(lambda v: v[0] == "_result" and v[1] == 4.0))[3]
        assert stream_id == 1.0     # what the transcript's publish (message stream 1) assumes
        writer.write(data["stream"])
        assert (await until(lambda v: v[0] == "onStatus"))[3]["code"] == "NetStream.Publish.Start"
        writer.write(data["media"])
        got = []
        while len(got) < 4:
            m = await player.next_message()
            if m.message_type_id in (MSG_AUDIO, MSG_VIDEO):
                got.append(m.payload)
        writer.write(data["unpublish"])
        await writer.drain()
        while True:     # then nginx ends the stream for the player: User Control StreamEOF
            m = await player.next_message()
            if m.message_type_id == MSG_USER_CONTROL:
                assert UserControl.parse(m.payload) == StreamEOF(1)
                break
            if m.message_type_id in (MSG_AUDIO, MSG_VIDEO):
                got.append(m.payload)
        player.close()
        writer.close()
        log = nginx.error_log()
    # every published payload, byte for byte (the 6005-byte key frame reassembled from two 4096-byte chunks); nginx
    # orders the audio sequence header itself, so the order is not compared
    assert sorted(got) == sorted([bytes([0x17, 0, 0, 0, 0]) + AVCC, bytes([0xAF, 0]) + ASC, KEY_FRAME, AAC_FRAME,
                                  INTER_FRAME, AAC_FRAME])
    assert f"publish: name='{OBS_STREAM}' args='' type=live" in log, log[-2000:]


if __name__ == "__main__":
    print(f"wrote {write_obs_transcript()}")
