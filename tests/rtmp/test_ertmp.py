"""Enhanced RTMP (E-RTMP v1: FourCC video/audio headers) through the relay: PyAV's bundled ffmpeg (8.x) publishes
HEVC (the "hevc" fixture, remuxed) and AV1 + Opus (encoded live with libsvtav1/libopus); late joiners — rtmp.client.RtmpClient
and PyAV — get the cached E-RTMP sequence headers and start at a key frame that decodes at once.

The PyAV publisher runs in a subprocess: PyAV holds the GIL while its RTMP output connects, so an in-process publisher
would deadlock against the in-process server (it waits for our handshake answer, which needs the GIL).
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import av

from fixtures.generate import fixture_path
from packagers.codecs import amf0
from rtmp.messages import MSG_DATA_AMF0, MSG_VIDEO, Message
from rtmp.session import classify_media
from tests.needs import missing
from tests.rtmp.test_operations import start_server
from rtmp.client import RtmpClient
from tests.rtmp.test_server_ffmpeg import wait_until

# argv: url, seconds, then "remux <file>" or "encode <video encoder> <audio encoder|none>". Paced to real time.
PUBLISHER = r'''
import sys, time, av, numpy as np
url, seconds, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
t0 = time.monotonic()
def pace(t):
    d = t0 + t - time.monotonic()
    if d > 0:
        time.sleep(d)
with av.open(url, "w", format="flv") as out:
    if mode == "remux":
        with av.open(sys.argv[4]) as inp:
            streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
            for p in inp.demux():
                if p.dts is None or p.stream.index not in streams:
                    continue
                t = float(p.dts * p.time_base)
                if t > seconds:
                    break
                pace(t)
                p.stream = streams[p.stream.index]
                out.mux(p)
    else:
        v = out.add_stream(sys.argv[4], rate=15)
        v.width, v.height, v.pix_fmt = 160, 96, "yuv420p"
        v.options = {"preset": "12", "svtav1-params": "keyint=15"} if "svt" in sys.argv[4] else {"g": "15"}
        a = None if sys.argv[5] == "none" else out.add_stream(sys.argv[5], rate=48000)
        if a is not None:
            a.layout = "stereo"
        spf, ai = 960, 0
        for i in range(int(seconds * 15)):
            pace(i / 15)
            img = np.zeros((96, 160, 3), np.uint8)
            img[:, :, 0] = (i * 4) % 256
            img[i % 96, :, :] = 255
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for p in v.encode(f):
                out.mux(p)
            while a is not None and ai * spf < (i + 1) * 48000 / 15:
                t = (np.arange(spf) + ai * spf) / 48000
                s = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(np.stack([s, s]).reshape(1, -1), format="flt", layout="stereo")
                af.sample_rate, af.pts = 48000, ai * spf
                ai += 1
                for p in a.encode(af):
                    out.mux(p)
        for p in v.encode():
            out.mux(p)
'''


def publish(port: int, seconds: float, *mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PUBLISHER, f"rtmp://127.0.0.1:{port}/live/test", str(seconds),
                             *mode], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def e_rtmp_fourcc(payload: bytes, video: bool) -> str | None:
    """The FourCC of an E-RTMP message (video: IsExHeader bit 0x80; audio: SoundFormat 9 = ExHeader)."""
    if (video and payload[0] & 0x80) or (not video and payload[0] >> 4 == 9):
        return payload[1:5].decode("latin-1")
    return None


def pyav_late_joiner(url: str) -> dict:
    """Open the stream with PyAV (ffmpeg's RTMP client and FLV demuxer), decode until the first video frame."""
    t0 = time.monotonic()
    out = {"audio_frames": 0}
    with av.open(url, options={"rw_timeout": "10000000", "analyzeduration": "500000"},
                 timeout=10) as c:
        out["opened"] = time.monotonic() - t0
        out["codecs"] = sorted(s.codec_context.name for s in c.streams)
        for packet in c.demux():
            if packet.stream.type == "video" and packet.size and "first_packet_key" not in out:
                out["first_packet_key"] = packet.is_keyframe
            for frame in packet.decode():
                if packet.stream.type == "audio":
                    out["audio_frames"] += 1
                elif packet.stream.type == "video":
                    out["first_frame"] = time.monotonic() - t0
                    out["first_frame_key"] = frame.key_frame
                    out["size"] = (frame.width, frame.height)
                    out["pixels"] = frame.to_ndarray(format="rgb24").mean()
                    return out
    raise AssertionError("no video frame decoded")


async def run_late_join(mode: tuple[str, ...], fourcc_v: str, audio: str, size: tuple[int, int],
                        codecs: set[str]) -> None:
    """``audio``: the relay's name of the audio codec ("aac" is legacy FLV, a FourCC such as "Opus" is E-RTMP)."""
    server, rec = await start_server()
    pub = publish(server.port, 6, *mode)
    published = rec.published["live/test"]
    try:
        # join mid-GOP: after the second key frame and a few frames more
        await wait_until(lambda: sum(m[0] == MSG_VIDEO and classify_media(Message(6, 0, m[0], 1, m[2]))[0]
                                     for m in published) >= 2, 30, "two published key frames")
        await asyncio.sleep(0.3)
        raw = await RtmpClient.connect(f"rtmp://127.0.0.1:{server.port}/live")
        newest_at_join = max(m[1] for m in published if m[0] == MSG_VIDEO)
        t0 = time.monotonic()
        await raw.play("test")
        got: list[Message] = []
        first_key = None
        after = 0
        while after < 20:       # up to the first key frame, then 20 messages more
            m = await asyncio.wait_for(raw.read_message(), 10)
            got.append(m)
            if first_key is not None:
                after += 1
            elif m.message_type_id == MSG_VIDEO and classify_media(m)[0]:
                first_key = time.monotonic() - t0
                key_ts = m.timestamp
        await raw.close()
        stats = server.relay.stats()["live/test"]
        pyav = await asyncio.wait_for(asyncio.to_thread(pyav_late_joiner, f"rtmp://127.0.0.1:{server.port}/live/test"),
                                      30)
        _, err = await asyncio.wait_for(asyncio.to_thread(pub.communicate), 30)
        assert pub.returncode == 0, err.decode(errors="replace")
    finally:
        if pub.poll() is None:
            pub.kill()
            pub.communicate()
        await server.close()
    # The raw joiner: metadata, the E-RTMP video and audio SequenceStart exactly as published, then the current GOP
    # from its key frame (the bytes published since that key frame, in order).
    assert got[0].message_type_id == MSG_DATA_AMF0 and amf0.decode_all(got[0].payload)[0] == "onMetaData"
    headers = [m for m in got[1:] if classify_media(m)[1]]
    assert [e_rtmp_fourcc(m.payload, m.message_type_id == MSG_VIDEO) for m in headers] == \
        [fourcc_v, None if audio == "aac" else audio]
    pub_headers = [p for p in published if p[0] != MSG_DATA_AMF0 and classify_media(Message(6, 0, p[0], 1, p[2]))[1]]
    assert [m.payload for m in headers] == [p[2] for p in pub_headers]
    first_video = next(m for m in got if m.message_type_id == MSG_VIDEO and not classify_media(m)[1])
    assert classify_media(first_video)[0], "a late joiner's first video frame must be a key frame"
    body = [(m.message_type_id, m.timestamp, m.payload) for m in got[1 + len(headers):]]
    start = published.index(body[0])
    assert published[start:start + len(body)] == body
    assert (stats["video_codec"], stats["audio_codec"]) == (fourcc_v, audio)
    assert (stats["width"], stats["height"]) == size
    # PyAV: ffmpeg's own E-RTMP demuxer and decoders accept what the relay sends to a late joiner
    assert set(pyav["codecs"]) >= codecs, pyav["codecs"]
    assert pyav["size"] == size and pyav["first_packet_key"] and pyav["first_frame_key"]
    assert pyav["pixels"] > 0
    print(f"\n{fourcc_v}/{audio}: raw late joiner got its first key frame {first_key * 1000:.0f} ms after play "
          f"(it is {newest_at_join - key_ts} ms older than the newest frame at the join: the cached GOP); PyAV opened in {pyav['opened'] * 1000:.0f} ms, first decoded video "
          f"frame {pyav['first_frame'] * 1000:.0f} ms after open (target < 500 ms)")


async def test_hevc_late_joiner_gets_cached_e_rtmp_header_and_key_frame():
    await run_late_join(("remux", str(fixture_path("hevc.mp4"))), "hvc1", "aac", (320, 180), {"hevc", "aac"})


async def test_av1_opus_late_joiner_gets_cached_e_rtmp_headers_and_key_frame():
    # PyAV's wheels bundle both encoders; a build without them is a machine that cannot run this test
    if "libsvtav1" not in av.codecs_available or "libopus" not in av.codecs_available:
        missing("PyAV is built without libsvtav1/libopus")
    await run_late_join(("encode", "libsvtav1", "libopus"), "av01", "Opus", (160, 96), {"opus"})
