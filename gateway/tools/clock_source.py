"""A timestamped live source and its readers, for `gateway bench live` (glass-to-glass latency).

Every picture carries the wall-clock time it was captured (ms since the epoch) burnt into its top twelfth as a bar
code of 72 black/white cells across the width: 4 guard cells (1010), 48 bits of time (most significant first), a
CRC-16/CCITT of the 6 time bytes and 4 guard cells (0101). Cells are ~18 px wide at 720p and 9 px at 360p: big flat
blocks that survive H.264 at a modest bitrate and any rescaling of a ladder, and that a reader
locates by proportion alone (no search). The JS reader in tests/e2e/browser/player.html (``clock=1``) is the same
algorithm. The rest of the picture is a panning texture, so the encoders have real motion to code.

``python -m gateway.tools.clock_source publish URL ...`` publishes in real time (PyAV: libx264 zerolatency, a key
frame every second, AAC tone; FLV over RTMP, flushed per packet); ``... play URL --seconds N`` reads an RTMP
stream and prints one JSON line: [decode wall ms, burnt ms] per frame.
"""
from __future__ import annotations

import argparse
import binascii
import json
import signal
import sys
import time
from fractions import Fraction

import numpy as np

CELLS = 72
GUARD_START, GUARD_END = (1, 0, 1, 0), (0, 1, 0, 1)
BAND = 12           # the code fills the top 1/BAND of the picture
WHITE, BLACK = 235, 16


def code_bits(ms: int) -> np.ndarray:
    """The 72 cells (0/1) that carry ``ms``."""
    data = int(ms).to_bytes(6, "big")
    payload = np.unpackbits(np.frombuffer(data + crc16(data).to_bytes(2, "big"), np.uint8))
    return np.concatenate([GUARD_START, payload, GUARD_END]).astype(np.uint8)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: a picture left half-updated by the encoder (skipped blocks) must not read as a time."""
    return binascii.crc_hqx(data, 0xFFFF)


def burn(luma: np.ndarray, ms: int) -> None:
    """Draw the code of ``ms`` into the top band of a luma plane (H, W) in place."""
    h, w = luma.shape
    edges = np.linspace(0, w, CELLS + 1).astype(int)
    row = np.repeat(np.where(code_bits(ms) == 1, WHITE, BLACK).astype(np.uint8), np.diff(edges))
    luma[: max(h // BAND, 2)] = row


def read_code(luma: np.ndarray) -> int | None:
    """The ms burnt into a luma (or grey) picture, or None when the guards or the CRC do not match. Each cell
    is judged by the mean of its central half (both ways), so block edges and scaling blur do not matter."""
    h, w = luma.shape[:2]
    band = max(h // BAND, 2)
    rows = luma[band // 4: max(band * 3 // 4, band // 4 + 1)].astype(np.float32).mean(axis=0)
    edges = np.linspace(0, w, CELLS + 1)
    lo, hi = (edges[:-1] + np.diff(edges) / 4).astype(int), (edges[1:] - np.diff(edges) / 4).astype(int)
    sums = np.concatenate([[0.0], np.cumsum(rows)])
    means = (sums[np.maximum(hi, lo + 1)] - sums[lo]) / np.maximum(hi - lo, 1)
    bits = (means > (WHITE + BLACK) / 2).astype(np.uint8)
    if tuple(bits[:4]) != GUARD_START or tuple(bits[-4:]) != GUARD_END:
        return None
    data = np.packbits(bits[4:-4]).tobytes()
    if crc16(data[:6]) != int.from_bytes(data[6:], "big"):
        return None
    return int.from_bytes(data[:6], "big")


def plane_array(frame, index: int = 0) -> np.ndarray:
    """Plane ``index`` of a PyAV VideoFrame as a (h, w) uint8 view, without a pixel-format conversion."""
    plane = frame.planes[index]
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


class Texture:
    """A panning picture (smooth blobs plus fine grain), like a camera moving over a scene; one copy per frame."""

    def __init__(self, width: int, height: int, seed: int = 15) -> None:
        rng = np.random.default_rng(seed)
        coarse = rng.integers(40, 216, (height // 16 + 1, width // 16 + 1), dtype=np.uint8)
        blobs = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)[:height, :width]
        self.luma = (blobs + rng.integers(0, 12, (height, width), dtype=np.uint8)).astype(np.uint8)
        self.chroma = np.repeat(np.repeat(rng.integers(96, 160, (height // 32 + 1, width // 32 + 1),
                                                       dtype=np.uint8), 16, 0), 16, 1)[: height // 2, : width // 2]
        self.width, self.height = width, height

    def frame(self, i: int) -> np.ndarray:
        """Picture ``i`` as one yuv420p array (H * 3/2, W): the texture shifted 4 px right and 2 px down a frame."""
        w, h = self.width, self.height
        out = np.empty((h * 3 // 2, w), np.uint8)
        out[:h] = np.roll(self.luma, (2 * i % h, 4 * i % w), axis=(0, 1))
        uv = np.roll(self.chroma, (i % (h // 2), 2 * i % (w // 2)), axis=(0, 1))
        out[h:h + h // 4] = uv.reshape(h // 4, w)
        out[h + h // 4:] = uv[:, ::-1].reshape(h // 4, w)
        return out


def publish(url: str, width: int, height: int, fps: int, seconds: float, bitrate: int, preset: str,
            stopped=lambda: False) -> dict:
    """Publish the clock picture to ``url`` in real time for ``seconds`` or until ``stopped()``; frame i is captured
    (its time burnt) at start + i / fps, then encoded and sent at once. Returns how late the producer ran (it never
    drops a frame: when it cannot keep up, the latency it measures grows, as a real encoder's would)."""
    import av

    texture = Texture(width, height)
    out = av.open(url, "w", format="flv", container_options={"flush_packets": "1"})
    video = out.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.bit_rate = bitrate
    video.options = {"preset": preset, "tune": "zerolatency",
                     "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0:vbv-maxrate={bitrate // 1000}"
                                    f":vbv-bufsize={bitrate // 1000}"}
    audio = out.add_stream("aac", rate=48000)
    audio.layout = "stereo"
    tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)).astype(np.float32)
    start, samples, late = time.monotonic(), 0, []
    total = int(seconds * fps)
    try:
        for i in range(total):
            if stopped():
                total = i
                break
            due = start + i / fps
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            late.append(max(0.0, -wait))
            yuv = texture.frame(i)
            burn(yuv[:height], int(time.time() * 1000))     # captured now: encoding and sending count as latency
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
            while samples * fps < (i + 1) * 48000:             # audio up to the end of this picture
                chunk = np.roll(tone, -(samples % 48000))[:1024]
                a = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
                a.sample_rate, a.pts, a.time_base = 48000, samples, Fraction(1, 48000)
                samples += 1024
                for packet in audio.encode(a):
                    out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    finally:
        out.close()
    late_ms = np.array(late) * 1000
    return {"frames": total, "late_ms_p95": float(np.percentile(late_ms, 95)), "late_ms_max": float(late_ms.max())}


def play(url: str, seconds: float) -> dict:
    """Read an RTMP stream for ``seconds`` (after its first picture): [wall ms at decode, burnt ms] per picture.
    Low-delay demuxing and slice threads only: frame threads would hold pictures back by design."""
    import av

    samples, bad = [], 0
    with av.open(url, options={"fflags": "nobuffer", "flags": "low_delay", "probesize": "65536",
                               "analyzeduration": "500000", "rtmp_live": "live"}, timeout=(20, 10)) as src:
        stream = src.streams.video[0]
        stream.codec_context.thread_type = "SLICE"
        end = None
        for packet in src.demux(stream):
            for frame in packet.decode():
                now = time.time() * 1000
                ms = read_code(plane_array(frame))
                if ms is None:
                    bad += 1
                else:
                    samples.append((round(now, 1), ms))
                end = end or time.monotonic() + seconds
            if end is not None and time.monotonic() >= end:
                break
    return {"samples": samples, "unreadable": bad, "height": stream.codec_context.height}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.tools.clock_source")
    sub = p.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish")
    pub.add_argument("url")
    pub.add_argument("--size", default="1280x720")
    pub.add_argument("--fps", type=int, default=30)
    pub.add_argument("--seconds", type=float, default=60)
    pub.add_argument("--bitrate", type=int, default=3_000_000)
    pub.add_argument("--preset", default="veryfast")
    rd = sub.add_parser("play")
    rd.add_argument("url")
    rd.add_argument("--seconds", type=float, default=60)
    args = p.parse_args(argv)
    if args.command == "publish":
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))   # end cleanly: FLV trailer, then the JSON line
        w, h = (int(x) for x in args.size.split("x"))
        result = publish(args.url, w, h, args.fps, args.seconds, args.bitrate, args.preset, lambda: bool(stop))
    else:
        result = play(args.url, args.seconds)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
