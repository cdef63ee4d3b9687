"""Which samples make the picture at a time, and decoding them (PyAV) into that one frame.

nginx-vod-module's thumbnails: the frame shown at ``<offset>`` ms, decoded from the key frame before it (accurate),
or the key frame itself (fast mode: one sample, no reference chain). Packagers ask for bytes (``sample_reads``); the
caller reads them and hands them to ``decode_frame``.

Times: a sample's presentation time is ``dts + cts - edit_offset`` (``packagers.model``), in the track timescale.
Lookups use the decode-ordered ``dts`` column with ``np.searchsorted`` and look at a window of a few frames around the
time, so a two-hour table costs no sort: a ``cts.max`` and a scan of the key-frame flags before the time (~0.1 ms).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from ..errors import bad_data, bad_request, not_found
from ..media_data import ReadRequest
from ..model import Track

MAX_DECODE_FRAMES = 1024  # samples one accurate thumbnail decodes at most (a GOP of 40 s at 25 fps)
MAX_DECODE_BYTES = 64 << 20  # and their bytes, read and held while decoding
# decoder names for PyAV; AV1 goes to dav1d, as ffmpeg's native av1 decoder needs a hardware accelerator
DECODERS = {"avc1": "h264", "avc3": "h264", "hvc1": "hevc", "hev1": "hevc", "av01": "libdav1d"}
# decoders that read AVCodecContext.skip_frame for each picture (dav1d takes it once, when it opens)
_SKIPS_PER_PACKET = ("h264", "hevc")


@dataclass(frozen=True)
class FrameRange:
    """Decode indices: decoding samples ``first..target`` (inclusive) yields the frame of sample ``target``."""

    first: int
    target: int


def _ticks(track: Track, time_ms: int) -> int:
    """``time_ms`` in the track's raw pts scale (before the edit offset), floored: pts_ms <= time_ms exactly."""
    return time_ms * track.timescale // 1000 + track.edit_offset


def _presented_at(track: Track, t: int) -> int:
    """Decode index of the frame presented at raw pts ``t``: the largest pts <= t, else the first presented frame.

    pts >= dts (cts >= 0), so candidates have dts <= t; with ``c`` the largest cts, the candidate ``a`` with the
    last dts <= t - c has pts <= t, so the answer's pts >= dts[a] and the answer's dts >= dts[a] - c: a window of a
    couple of GOP reorder depths."""
    s = track.samples
    c = int(s.cts.max())
    hi = int(np.searchsorted(s.dts, t, side="right"))
    a = int(np.searchsorted(s.dts, t - c, side="right")) - 1
    lo = int(np.searchsorted(s.dts, s.dts[a] - c, side="left")) if a >= 0 else 0
    if hi > lo:
        pts = s.dts[lo:hi] + s.cts[lo:hi]
        ok = pts <= t
        if ok.any():
            return lo + int(np.argmax(np.where(ok, pts, np.iinfo(np.int64).min)))
    # before the first presented frame: that frame has the smallest pts, so its dts <= dts[0] + c
    end = int(np.searchsorted(s.dts, s.dts[0] + c, side="right"))
    return int(np.argmin(s.dts[:end] + s.cts[:end]))


def locate(track: Track, time_ms: int, accurate: bool = True) -> FrameRange:
    """The samples to decode for the picture shown at ``time_ms`` (ms from presentation 0)."""
    s = track.samples
    if track.kind != "video" or len(s) == 0:
        raise bad_request(f"locate: track {track.track_id} of {track.source or 'presentation'} has no video frames")
    if time_ms < 0:
        raise bad_request(f"locate: negative time {time_ms} ms")
    if time_ms * track.timescale >= track.duration * 1000:
        raise not_found(f"locate: {time_ms} ms is past the end of track {track.track_id} "
                        f"({track.duration * 1000 // track.timescale} ms) in {track.source or 'presentation'}")
    t = _ticks(track, time_ms)
    if not accurate:
        return _key_frame_range(track, t)
    target = _presented_at(track, t)
    keys = np.flatnonzero(s.keyframe[: target + 1])
    if len(keys) == 0:
        raise bad_data(f"locate: no key frame before sample {target} in {track.source or 'presentation'}")
    first = int(keys[-1])
    # an open GOP's leading pictures (decoded after the key frame, shown before it) reference the GOP before
    if first != target and len(keys) > 1 and s.pts[target] < s.pts[first]:
        first = int(keys[-2])
    # a file with rare key frames must not make one thumbnail decode (and hold in memory) a whole GOP: past these
    # bounds the picture is that of the key frame, as in key-frame mode
    chain = s.sizes[first:target + 1]
    if len(chain) > MAX_DECODE_FRAMES or int(chain.sum(dtype=np.int64)) > MAX_DECODE_BYTES:
        return _key_frame_range(track, t)
    return FrameRange(first, target)


def _key_frame_range(track: Track, t: int) -> FrameRange:
    """The key frame presented at or before raw pts ``t`` (the first one before any): one sample to decode."""
    s = track.samples
    keys = np.flatnonzero(s.keyframe[: int(np.searchsorted(s.dts, t, side="right"))])
    if len(keys) == 0:  # before the first key frame's decode time: the first one
        keys = np.flatnonzero(s.keyframe)[:1]
    if len(keys) == 0:
        raise bad_data(f"locate: no key frame in track {track.track_id} of {track.source or 'presentation'}")
    pts = s.dts[keys] + s.cts[keys]
    shown = pts <= t
    key = int(keys[np.argmax(np.where(shown, pts, np.iinfo(np.int64).min))] if shown.any() else keys[0])
    if int(s.sizes[key]) > MAX_DECODE_BYTES:
        raise bad_data(f"locate: key frame {key} of {track.source or 'presentation'} is {int(s.sizes[key])} bytes, "
                       f"more than a thumbnail decodes ({MAX_DECODE_BYTES})")
    return FrameRange(key, key)


def sample_reads(track: Track, first: int, last: int) -> list[ReadRequest]:
    """One read per sample ``first..last`` (inclusive, decode order): the bytes ``decode_frame`` takes."""
    s = track.samples
    return [ReadRequest(o, n) for o, n in zip(s.offsets[first : last + 1].tolist(), s.sizes[first : last + 1].tolist())]


def _with_sar(frame, ctx):
    """Leave the decoder's sample aspect ratio in ``frame.opaque`` for ``encode_jpeg`` (VideoFrame has no field)."""
    sar = ctx.sample_aspect_ratio
    frame.opaque = Fraction(sar) if sar else None
    return frame


def decode_frame(track: Track, first: int, target: int, samples: Sequence[bytes]):
    """The ``av.VideoFrame`` of sample ``target``, decoding ``samples`` (the bytes of samples ``first..target``).

    The decoder is flushed after the target's packet: everything it references precedes it in decode order, so
    nothing after it is read. One thread: the gateway bounds decode concurrency itself."""
    import av

    name = DECODERS.get(track.codec.fourcc)
    if name is None:
        raise bad_request(f"decode_frame: no thumbnail decoder for '{track.codec.fourcc}' in {track.source or 'track'}")
    if len(samples) != target - first + 1:
        raise ValueError(f"decode_frame: {len(samples)} samples given for decode indices {first}..{target}")
    s = track.samples
    want = int(s.pts[target])
    try:
        ctx = av.CodecContext.create(name, "r")
        if track.codec.extradata:
            ctx.extradata = track.codec.extradata
        ctx.thread_count = 1
        for i, data in enumerate(samples, first):
            if not len(data):  # an empty packet would mean "flush" to the decoder
                raise bad_data(f"decode_frame: sample {i} of {track.source or 'track'} is empty")
            packet = av.Packet(data)
            packet.pts, packet.dts = int(s.pts[i]), int(s.dts[i])
            if name in _SKIPS_PER_PACKET:  # pictures nothing references matter only as the target: ~2x faster
                ctx.skip_frame = "DEFAULT" if i == target else "NONREF"
            for frame in ctx.decode(packet):
                if frame.pts == want:
                    return _with_sar(frame, ctx)
        for frame in ctx.decode(None):
            if frame.pts == want:
                return _with_sar(frame, ctx)
    except av.FFmpegError as e:
        raise bad_data(f"decode_frame: samples {first}..{target} of {track.source or 'track'} do not decode: "
                       f"{e}") from None
    raise bad_data(f"decode_frame: samples {first}..{target} of {track.source or 'track'} did not produce the frame "
                   f"at pts {want}")
