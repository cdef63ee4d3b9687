"""A transcoding ladder, sans-I/O: a live source's video access units in, each rendition's H.264 access units out.

The source is decoded once (PyAV: ffmpeg's H.264/HEVC decoders, one thread) and every picture is scaled and
encoded for each rendition (libx264, one thread each: the caller runs a ladder in a worker process, so that its
CPU never competes with the event loop and a crash takes only that process down). Key frames are where the
source has them and nowhere else (``scenecut=0``, a key-frame interval longer than any GOP, the source's key
pictures forced to IDR), so every rendition switches at the same times as the source and as each other; with
``tune=zerolatency`` there are no B-frames and no look-ahead, so a picture comes out as soon as it goes in, with
the source's timestamps (pts = dts, in the source's milliseconds).

Rates: ``bit_rate`` with a VBV of ``maxrate`` = the rate and a one-second buffer, so each rendition's bitrate stays
near its nominal one over any second (the playlist's BANDWIDTH is then true). Sizes: the rendition's height, the
width from the source's aspect ratio, both even; a rendition taller than the source is not made (upscaling adds
bits, not picture).

Output is AVCC (4-byte length prefixes) with an avcC record per rendition (``configs``), as FLV/RTMP and fMP4
carry H.264; libx264 writes Annex B, converted here.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from ..codecs.avc import annexb_to_avcc, avc_codec_string, split_annexb
from ..errors import ErrorCode, PackagerError, bad_data
from ..model import CodecConfig

__all__ = ["EncodedSample", "LadderEncoder", "Rendition", "parse_rendition", "rendition_sizes"]

_RENDITION = re.compile(r"(?P<height>[0-9]{2,4})p@(?P<rate>[0-9]{2,6})k")
KEYINT = 100_000        # frames: longer than any GOP, so only forced key frames happen
MAX_RENDITIONS = 8


@dataclass(frozen=True)
class Rendition:
    name: str               # "480p": the suffix of its stream name (<stream>_480p)
    height: int
    bit_rate: int           # bits per second


def parse_rendition(text: str) -> Rendition:
    """``"480p@1200k"`` → Rendition("480p", 480, 1_200_000); ValueError naming what is wrong."""
    m = _RENDITION.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not <height>p@<kbit/s>k, e.g. \"480p@1200k\"")
    height, rate = int(m["height"]), int(m["rate"]) * 1000
    if not 64 <= height <= 4320 or height % 2 or not 50_000 <= rate <= 50_000_000:
        raise ValueError(f"{text!r}: height from 64 to 4320 (even), rate from 50k to 50000k")
    return Rendition(f"{height}p", height, rate)


def rendition_sizes(width: int, height: int, renditions: Sequence[Rendition]) -> list[tuple[Rendition, int, int]]:
    """(rendition, width, height) of each rendition not taller than the ``width`` x ``height`` source."""
    out = []
    for r in renditions:
        if r.height > height:
            continue
        w = max(2, round(width * r.height / height / 2) * 2)
        out.append((r, w, r.height))
    return out


@dataclass(frozen=True)
class EncodedSample:
    rendition: str
    dts: int                # ms, the source's
    cts: int                # ms, composition offset (0: no B-frames)
    keyframe: bool
    data: bytes             # AVCC: 4-byte NAL length prefixes


class LadderEncoder:
    """``encode(data, dts, cts, keyframe)`` one source access unit (AVCC/HVCC as the source sends it, times in ms);
    returns the renditions' encoded samples. ``configs``: each rendition's ``CodecConfig`` (avcC) once known, which
    is after its first picture."""

    def __init__(self, source: CodecConfig, renditions: Sequence[Rendition], *, frame_rate: Fraction = Fraction(30),
                 preset: str = "veryfast") -> None:
        """``frame_rate``: the source's nominal rate (RTMP metadata, or measured): x264's rate control spreads each
        second's bits over that many pictures (with ms timestamps and no rate it would assume 1,000)."""
        import av  # imported here: only transcoding needs PyAV's encoders

        if len(renditions) > MAX_RENDITIONS:
            raise PackagerError(ErrorCode.UNSUPPORTED, f"LadderEncoder: at most {MAX_RENDITIONS} renditions")
        if source.codec not in ("h264", "hevc"):
            raise PackagerError(ErrorCode.UNSUPPORTED, f"LadderEncoder: cannot decode {source.codec} video")
        self._av = av
        self.decoder = av.CodecContext.create("h264" if source.codec == "h264" else "hevc", "r")
        self.decoder.extradata = source.extradata
        self.decoder.thread_count = 1
        self.sizes = rendition_sizes(source.width, source.height, renditions)
        self.encoders: dict[str, object] = {}
        self.scalers: dict[str, object] = {}
        self.configs: dict[str, CodecConfig] = {}
        self._size = {r.name: (w, h) for r, w, h in self.sizes}
        self._rate = {r.name: r.bit_rate for r, _, _ in self.sizes}
        self.preset = preset
        self.frame_rate = Fraction(frame_rate)
        self.failed: dict[str, str] = {}    # rendition → why it stopped (its encoder raised)
        self.seconds: dict[str, float] = {"decode": 0.0}   # CPU (thread) time per rendition and for decoding
        # No picture before the source's first key picture (a mid-GOP join; ffmpeg's decoders hold those back by
        # default, this does not depend on it): libx264's first picture is a key frame whatever it is given, so an
        # earlier one would start every rendition's timeline, and its segments, before the source's.
        self._keyed = False

    @property
    def renditions(self) -> list[str]:
        return [r.name for r, _, _ in self.sizes if r.name not in self.failed]

    def _encoder(self, name: str, time_base: Fraction):
        av = self._av
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = self._size[name]
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = time_base
        ctx.framerate = self.frame_rate
        ctx.bit_rate = self._rate[name]
        ctx.thread_count = 1
        ctx.flags |= av.codec.context.Flags.global_header
        ctx.options = {"preset": self.preset, "tune": "zerolatency", "forced-idr": "1",
                       "maxrate": str(self._rate[name]), "bufsize": str(self._rate[name]),
                       "x264-params": f"scenecut=0:keyint={KEYINT}:min-keyint={KEYINT}"}
        ctx.open()
        sps, pps = _parameter_sets(bytes(ctx.extradata))
        self.configs[name] = CodecConfig("avc1", avc_codec_string("avc1", sps[1], sps[2], sps[3]),
                                         _avcc_record(sps, pps), (sps, pps), 4, ctx.width, ctx.height)
        return ctx

    def encode(self, data: bytes, dts: int, cts: int, keyframe: bool) -> list[EncodedSample]:
        av = self._av
        packet = av.Packet(data)
        packet.pts, packet.dts, packet.time_base = dts + cts, dts, Fraction(1, 1000)
        started = time.thread_time()
        try:
            pictures = self.decoder.decode(packet)
        except av.FFmpegError as e:
            raise bad_data(f"LadderEncoder: the source does not decode at {dts} ms: {e}") from None
        finally:
            self.seconds["decode"] += time.thread_time() - started
        out = []
        for picture in pictures:
            key = bool(picture.key_frame)   # (decoded order: a B-frame source reorders its pictures)
            self._keyed = self._keyed or key
            if not self._keyed:
                continue
            for name in self.renditions:
                try:
                    out += self._encode_one(name, picture, bool(key))
                except (av.FFmpegError, ValueError) as e:   # this rendition stops; the others and the source go on
                    self.failed[name] = f"{type(e).__name__}: {e}"
        return out

    def _encode_one(self, name: str, picture, key: bool) -> list[EncodedSample]:
        started = time.thread_time()
        try:
            return self._encode_picture(name, picture, key)
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.thread_time() - started

    def _encode_picture(self, name: str, picture, key: bool) -> list[EncodedSample]:
        ctx = self.encoders.get(name)
        if ctx is None:
            ctx = self.encoders[name] = self._encoder(name, Fraction(1, 1000))
        w, h = self._size[name]
        scaler = self.scalers.get(name)
        if scaler is None:  # one per rendition: its swscale context is kept from picture to picture
            scaler = self.scalers[name] = self._av.video.reformatter.VideoReformatter()
        frame = scaler.reformat(picture, width=w, height=h, format="yuv420p")
        frame.pts, frame.time_base = picture.pts, Fraction(1, 1000)
        frame.pict_type = self._av.video.frame.PictureType.I if key else self._av.video.frame.PictureType.NONE
        return _samples(name, ctx.encode(frame))

    def flush(self) -> list[EncodedSample]:
        """The end of the source: the pictures the decoder still holds (B-frame reordering), then every encoder's."""
        out = []
        for picture in self.decoder.decode(None):
            self._keyed = self._keyed or bool(picture.key_frame)
            if not self._keyed:
                continue
            for name in self.renditions:
                out += self._encode_one(name, picture, bool(picture.key_frame))
        for name, ctx in self.encoders.items():
            if name not in self.failed:
                out += _samples(name, ctx.encode(None))
        return out


def _samples(name: str, packets) -> list[EncodedSample]:
    return [EncodedSample(name, int(p.dts), int(p.pts - p.dts), bool(p.is_keyframe), annexb_to_avcc(bytes(p)))
            for p in packets]


def _parameter_sets(extradata: bytes) -> tuple[bytes, bytes]:
    units = split_annexb(extradata)
    sps = next((u for u in units if u[0] & 0x1F == 7), None)
    pps = next((u for u in units if u[0] & 0x1F == 8), None)
    if sps is None or pps is None:
        raise PackagerError(ErrorCode.UNSUPPORTED, "LadderEncoder: libx264 gave no SPS/PPS in its global header")
    return sps, pps


def _avcc_record(sps: bytes, pps: bytes) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1) of one SPS and one PPS, 4-byte lengths."""
    return (bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]) + len(sps).to_bytes(2, "big") + sps
            + b"\x01" + len(pps).to_bytes(2, "big") + pps)
