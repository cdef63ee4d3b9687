"""Issue 13, thumbnails core: names, which frame, decoding and JPEG, against frames PyAV's demuxer decodes itself.

The ground truth is the fixture decoded as a whole by PyAV's container demuxer (its own edit-list handling, its own
frame order): the reference picture at t is the decoded frame with the largest presentation time <= t. Our JPEG,
decoded back, must match it at >= 35 dB luma PSNR (the issue's bar), and must *not* match its neighbours or the GOP's
key frame, so that a thumbnail off by one frame or snapped to the key frame fails.
"""
from __future__ import annotations

import functools
import io
from fractions import Fraction

import numpy as np
import pytest

from fixtures.generate import fixture_path
from packagers.errors import ErrorCode, PackagerError
from packagers.model import CodecConfig, SampleTable, Track
from packagers.mp4 import open_presentation
from packagers.naming import TrackSpec
from packagers.thumbs import (FrameRange, ThumbFile, decode_frame, encode_jpeg, locate, output_size, parse_thumb_name,
                              sample_reads, thumb_name)

av = pytest.importorskip("av")  # an optional dependency of the gateway


# ---------------------------------------------------------------------------------------------------------- names

@pytest.mark.parametrize("name, expected", [
    ("thumb-0.jpg", ThumbFile(0)),
    ("thumb-1000.jpg", ThumbFile(1000)),
    ("thumb-9999999999.jpg", ThumbFile(9_999_999_999)),
    ("thumb-1000-w320.jpg", ThumbFile(1000, 320)),
    ("thumb-1000-h180.jpg", ThumbFile(1000, None, 180)),
    ("thumb-1000-w4096-h1.jpg", ThumbFile(1000, 4096, 1)),
    ("thumb-1000-w320-h180-f2-v1.jpg", ThumbFile(1000, 320, 180, TrackSpec(2, 1))),
    ("thumb-5-v2.jpg", ThumbFile(5, None, None, TrackSpec(None, 2))),
    ("thumb-now.jpg", ThumbFile(None)),
    ("thumb-now-w160.jpg", ThumbFile(None, 160)),
])
def test_thumb_names_parse_and_round_trip(name, expected):
    parsed = parse_thumb_name(name)
    assert parsed == expected
    assert thumb_name(parsed.offset_ms, parsed.width, parsed.height, parsed.spec) == name


@pytest.mark.parametrize("name", [
    "thumb-01.jpg", "thumb-00.jpg",  # leading zeros: one picture, one URL
    "thumb-10000000000.jpg",  # 11 digits
    "thumb-1000-w0.jpg", "thumb-1000-h0.jpg", "thumb-1000-w4097.jpg", "thumb-1000-h99999.jpg",
    "thumb-1000-w0320.jpg",
    "thumb-1000-h10-w20.jpg",  # nginx-vod order is -w then -h
    "thumb-1000-w.jpg", "thumb-1000-v0.jpg", "thumb-1000-a1-v1.jpg", "thumb-1000-x1.jpg",
    "thumb-.jpg", "thumb--5.jpg", "thumb-1000.png", "thumb-1000.jpg.jpg", "thumb-nowx.jpg", "Thumb-1000.jpg",
    "thumb-1e3.jpg", "thumb-\u0661\u0662.jpg",  # Arabic-Indic digits are not [0-9]
])
def test_thumb_names_refused(name):
    with pytest.raises(PackagerError) as e:
        parse_thumb_name(name)
    assert e.value.code is ErrorCode.BAD_REQUEST
    assert e.value.message.startswith(("parse_thumb_name:", "TrackSpec.parse:"))


# --------------------------------------------------------------------------------------------- ground truth frames

@functools.lru_cache(maxsize=None)
def source(name: str):
    """(track, file bytes, reference frames sorted by time: [(Fraction seconds, luma, pict_type, key_frame)])."""
    path = fixture_path(name)
    track = open_presentation(path).video_tracks[0]
    frames = []
    with av.open(str(path)) as container:
        for f in container.decode(video=0):
            picture = av.video.frame.PictureType(f.pict_type).name
            frames.append((f.pts * f.time_base, f.to_ndarray(format="gray"), picture, f.key_frame))
    frames.sort(key=lambda x: x[0])
    return track, path.read_bytes(), frames


def reference_index(frames, ms: int) -> int:
    """Index of the frame shown at ``ms``: the last whose time <= ms (the first frame before it starts)."""
    times = [t for t, *_ in frames]
    return max(0, int(np.searchsorted(times, Fraction(ms, 1000), side="right")) - 1)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def thumbnail(name: str, ms: int, accurate: bool = True, **size) -> bytes:
    track, data, _ = source(name)
    r = locate(track, ms, accurate)
    samples = [data[q.offset : q.end] for q in sample_reads(track, r.first, r.target)]
    return encode_jpeg(decode_frame(track, r.first, r.target, samples), **size)


def jpeg_luma(jpeg: bytes) -> np.ndarray:
    assert jpeg[:3] == b"\xff\xd8\xff"  # a JPEG SOI + marker, not some other image
    with av.open(io.BytesIO(jpeg)) as c:
        return next(c.decode(video=0)).to_ndarray(format="gray")


# --------------------------------------------------------------------------------------------- accurate thumbnails

CASES = [  # (fixture, ms): key frames, mid-GOP B- and P-frames, the last frame, times between frames
    ("title_360p.mp4", 0), ("title_360p.mp4", 2000), ("title_360p.mp4", 3000), ("title_360p.mp4", 3541),
    ("title_360p.mp4", 3562), ("title_360p.mp4", 5958), ("title_360p.mp4", 11999),
    ("hevc.mp4", 1), ("hevc.mp4", 2125), ("hevc.mp4", 4770), ("hevc.mp4", 7990),
    ("no_bframes.mp4", 1500), ("no_bframes.mp4", 5999),
]


@pytest.mark.parametrize("name, ms", CASES)
def test_accurate_thumbnail_is_the_frame_shown_at_that_time(name, ms):
    _, _, frames = source(name)
    i = reference_index(frames, ms)
    got = jpeg_luma(thumbnail(name, ms))
    assert got.shape == frames[i][1].shape
    assert psnr(got, frames[i][1]) >= 35
    # not a neighbour: the fixtures scroll and add fresh noise every frame, so the next/previous frame is far off
    for j in (i - 1, i + 1):
        if 0 <= j < len(frames):
            assert psnr(got, frames[j][1]) < 30, f"frame {j} looks like frame {i}"


def test_cases_cover_mid_gop_b_frames_far_from_the_key_frame():
    """The cases above prove 'exact frame, not the key frame' only if some are B-frames unlike their key frame."""
    b_cases = 0
    for name, ms in CASES:
        _, _, frames = source(name)
        i = reference_index(frames, ms)
        key = max(j for j in range(i + 1) if frames[j][3])
        if frames[i][2] == "B" and psnr(frames[i][1], frames[key][1]) < 20:
            b_cases += 1
    assert b_cases >= 3


@pytest.mark.parametrize("name, ms", [("title_360p.mp4", 3541), ("title_360p.mp4", 11999), ("hevc.mp4", 4770),
                                      ("no_bframes.mp4", 1500)])
def test_key_frame_mode_returns_the_key_frame_at_or_before(name, ms):
    track, _, frames = source(name)
    r = locate(track, ms, accurate=False)
    assert r.first == r.target and track.samples.keyframe[r.target]  # one sample to read and decode
    i = reference_index(frames, ms)
    key = max(j for j in range(i + 1) if frames[j][3])
    assert key != i  # the cases are mid-GOP
    got = jpeg_luma(thumbnail(name, ms, accurate=False))
    assert psnr(got, frames[key][1]) >= 35
    assert psnr(got, frames[i][1]) < 30


def test_before_the_first_key_frame_time_key_mode_gives_the_first_key_frame():
    track, _, frames = source("title_360p.mp4")
    assert locate(track, 0, accurate=False).target == int(np.flatnonzero(track.samples.keyframe)[0])
    assert psnr(jpeg_luma(thumbnail("title_360p.mp4", 0, accurate=False)), frames[0][1]) >= 35


@pytest.mark.parametrize("name", ["title_360p.mp4", "hevc.mp4", "no_bframes.mp4"])
def test_locate_agrees_with_a_full_sort_at_every_time(name):
    """The windowed search against the obvious O(n log n) answer, every 3 ms over the whole track."""
    track, _, _ = source(name)
    s = track.samples
    pts = track.presentation_pts()
    order = np.argsort(pts, kind="stable")
    keys = np.flatnonzero(s.keyframe)
    end_ms = -(-track.duration * 1000 // track.timescale)  # first ms at/after the end
    for ms in range(0, end_ms, 3):
        t = ms * track.timescale // 1000
        k = max(0, int(np.searchsorted(pts[order], t, side="right")) - 1)
        r = locate(track, ms)
        assert r.target == order[k], ms
        assert r.first == keys[keys <= r.target][-1], ms
        shown_keys = keys[pts[keys] <= t]
        assert locate(track, ms, accurate=False).target == (shown_keys[np.argmax(pts[shown_keys])]
                                                            if len(shown_keys) else keys[0]), ms


def synthetic_track(dts, cts, keyframe, edit_offset=0) -> Track:
    n = len(dts)
    table = SampleTable(offsets=np.arange(n) * 100, sizes=np.full(n, 100), dts=np.asarray(dts), cts=np.asarray(cts),
                        durations=np.full(n, 10), keyframe=np.asarray(keyframe, dtype=bool))
    return Track(1, "video", 1000, CodecConfig("avc1", "avc1.64001f"), table, edit_offset)


def brute_force_target(track: Track, ms: int) -> int:
    pts = track.presentation_pts()
    shown = np.flatnonzero(pts <= ms)  # timescale 1000: ticks are ms
    return int(shown[np.argmax(pts[shown])]) if len(shown) else int(np.argmin(pts))


def test_locate_finds_a_frame_decoded_long_before_the_time():
    """Sample 1 (shown at 50) is the answer at 60, yet decoded before sample 2, the last one whose dts <= 60 - max
    cts: the search window must reach back one reorder depth more."""
    track = synthetic_track([0, 10, 20, 30, 40, 50], [0, 40, 0, 40, 40, 40], [1, 0, 0, 0, 0, 0])
    assert locate(track, 60).target == 1
    assert [locate(track, ms).target for ms in range(0, 100)] == [brute_force_target(track, ms) for ms in range(100)]


def test_open_gop_leading_pictures_decode_from_the_key_frame_before():
    """Decode order I P | I B B P, shown I . . P B B I . . P: the B-frames after the second I are shown before it
    and reference the P before it (open GOP), so their decode starts at the first I."""
    track = synthetic_track([0, 10, 20, 30, 40, 50], [0, 20, 40, 10, 10, 40], [1, 0, 1, 0, 0, 0])
    assert locate(track, 45) == FrameRange(0, 3)  # B shown at 40
    assert locate(track, 60) == FrameRange(2, 2)  # the I itself


def test_locate_on_random_reorderings():
    """Random B-frame-like reorderings (frames shuffled within runs of 1..8), against the brute-force answer."""
    rng = np.random.default_rng(13)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        order = np.arange(n)
        start = 0
        while start < n:  # shuffle each run: pts order within a run is anything, as with B-pyramids
            run = int(rng.integers(1, 9))
            order[start : start + run] = rng.permutation(order[start : start + run])
            start += run
        dts = np.arange(n) * 10
        pts = order * 10 + 80  # cts >= 0 as demuxers normalise it
        keyframe = rng.random(n) < 0.2
        keyframe[0] = True
        track = synthetic_track(dts, pts - dts, keyframe, edit_offset=80)
        end = track.duration  # ticks are ms
        for ms in range(0, end, 3):
            r = locate(track, ms)
            assert r.target == brute_force_target(track, ms), (n, ms)
            assert track.samples.keyframe[r.first] and r.first <= r.target


def test_past_the_end_is_not_found():
    track, _, _ = source("title_360p.mp4")
    end_ms = track.duration * 1000 // track.timescale  # 12000: 288 frames at 24 fps
    locate(track, end_ms - 1)
    for ms in (end_ms, end_ms + 1, 10**10 - 1):
        for accurate in (True, False):
            with pytest.raises(PackagerError) as e:
                locate(track, ms, accurate)
            assert e.value.code is ErrorCode.NOT_FOUND and "past the end" in e.value.message


def test_negative_time_is_bad_request():
    track, _, _ = source("title_360p.mp4")
    with pytest.raises(PackagerError) as e:
        locate(track, -1)
    assert e.value.code is ErrorCode.BAD_REQUEST


def test_sample_reads_are_the_samples_bytes():
    track, data, _ = source("title_360p.mp4")
    reads = sample_reads(track, 48, 50)
    assert [(q.offset, q.size) for q in reads] == [(int(track.samples.offsets[i]), int(track.samples.sizes[i]))
                                                    for i in (48, 49, 50)]


# ------------------------------------------------------------------------------------------------------------ sizes

@pytest.mark.parametrize("size, shape", [
    ({"width": 320}, (180, 320)),  # height by aspect ratio
    ({"height": 100}, (100, 177)),  # width by aspect ratio, floored as nginx-vod: 640 * 100 / 360 = 177.7
    ({"width": 200, "height": 300}, (300, 200)),  # both: as given, aspect not kept
    ({"width": 1281}, (720, 1281)),  # upscaling and odd sizes are fine for JPEG
])
def test_thumbnail_sizes(size, shape):
    got = jpeg_luma(thumbnail("title_360p.mp4", 3541, **size))
    assert got.shape == shape


def test_half_size_thumbnail_still_matches_the_frame():
    _, _, frames = source("title_360p.mp4")
    ref = frames[reference_index(frames, 3541)][1].astype(np.float64)
    half = (ref[0::2, 0::2] + ref[1::2, 0::2] + ref[0::2, 1::2] + ref[1::2, 1::2]) / 4  # box filter, not swscale
    assert psnr(jpeg_luma(thumbnail("title_360p.mp4", 3541, width=320)), half) >= 30


def test_output_size_uses_the_displayed_aspect_ratio():
    assert output_size(720, 576, Fraction(16, 15), None, None) == (768, 576)  # PAL 4:3 with non-square pixels
    assert output_size(720, 576, Fraction(16, 15), 384, None) == (384, 288)
    assert output_size(720, 576, Fraction(16, 15), None, 288) == (384, 288)
    assert output_size(640, 360, None, None, None) == (640, 360)
    assert output_size(640, 360, Fraction(1), 320, None) == (320, 180)
    with pytest.raises(PackagerError) as e:  # nginx-vod refuses an empty picture rather than inventing a size
        output_size(640, 360, None, 1, None)
    assert e.value.code is ErrorCode.BAD_REQUEST


# ------------------------------------------------------------------------------------------------------ bad samples

@pytest.mark.parametrize("name", ["title_360p.mp4", "hevc.mp4"])
@pytest.mark.parametrize("damage", ["zeroed key frame", "nal length past the end", "empty target", "random target"])
def test_corrupt_samples_are_bad_data(name, damage):
    track, data, _ = source(name)
    r = locate(track, 3541)
    samples = [data[q.offset : q.end] for q in sample_reads(track, r.first, r.target)]
    if damage == "zeroed key frame":
        samples[0] = bytes(len(samples[0]))
    elif damage == "nal length past the end":
        samples[0] = b"\x7f\xff\xff\xff" + samples[0][4:]
    elif damage == "empty target":
        samples[-1] = b""
    else:
        samples[-1] = np.random.default_rng(13).integers(0, 256, len(samples[-1]), dtype=np.uint8).tobytes()
    with pytest.raises(PackagerError) as e:
        decode_frame(track, r.first, r.target, samples)
    assert e.value.code is ErrorCode.BAD_DATA and e.value.message.startswith("decode_frame:")
    if damage == "empty target":  # said as such, not as the decoder's end of stream
        assert f"sample {r.target} " in e.value.message and "is empty" in e.value.message


def test_intact_samples_decode_where_the_corrupt_ones_fail():
    """The other half of the test above: the same samples, undamaged, give the frame."""
    track, data, _ = source("hevc.mp4")
    r = locate(track, 3541)
    samples = [data[q.offset : q.end] for q in sample_reads(track, r.first, r.target)]
    assert decode_frame(track, r.first, r.target, samples).pts == int(track.samples.pts[r.target])


# ------------------------------------------------------------------------------------------------------------- AV1

def test_av1_thumbnail():
    """AV1 (av01, e.g. from Enhanced RTMP) decodes with dav1d: a short SVT-AV1 stream made here, as a track."""
    if "libsvtav1" not in av.codecs_available or "libdav1d" not in av.codecs_available:
        pytest.skip("this ffmpeg build has no SVT-AV1 encoder or dav1d decoder")
    enc = av.CodecContext.create("libsvtav1", "w")
    enc.width, enc.height, enc.pix_fmt = 128, 64, "yuv420p"
    enc.time_base, enc.gop_size, enc.options = Fraction(1, 24), 12, {"preset": "10"}
    packets = []
    for i in range(24):  # each frame a different grey with a bar in a different place: no two alike
        img = np.full((64, 128, 3), 16 * (i % 14), np.uint8)
        img[:, i * 5 : i * 5 + 8] = 255
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        packets += enc.encode(frame)
    packets += enc.encode(None)
    payloads = [bytes(p) for p in packets]
    assert [p.pts for p in packets] == list(range(24))  # temporal units come out in presentation order
    dec = av.CodecContext.create("libdav1d", "r")  # ground truth: the whole stream decoded in order
    reference = [f.to_ndarray(format="gray") for p in payloads for f in dec.decode(av.Packet(p))]
    reference += [f.to_ndarray(format="gray") for f in dec.decode(None)]
    sizes = np.array([len(p) for p in payloads])
    table = SampleTable(offsets=np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes=sizes,
                        dts=np.arange(24) * 512, cts=np.zeros(24), durations=np.full(24, 512),
                        keyframe=np.array([p.is_keyframe for p in packets]))
    track = Track(1, "video", 12288, CodecConfig("av01", "av01.0.00M.08"), table)
    blob = b"".join(payloads)
    r = locate(track, 7 * 1000 // 24 + 10)  # inside frame 7
    assert r.target == 7 and r.first == 0
    got = jpeg_luma(encode_jpeg(decode_frame(track, r.first, r.target,
                                             [blob[q.offset : q.end] for q in sample_reads(track, r.first, r.target)])))
    assert psnr(got, reference[7]) >= 35
    assert psnr(got, reference[6]) < 30 and psnr(got, reference[8]) < 30


def test_anamorphic_source_is_widened_to_its_display_shape():
    """An H.264 stream whose SPS says 4:3 pixels (VUI aspect_ratio_idc): the JPEG has square pixels."""
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt, enc.time_base = 160, 90, "yuv420p", Fraction(1, 24)
    enc.sample_aspect_ratio = Fraction(4, 3)
    frame = av.VideoFrame.from_ndarray(np.zeros((90, 160, 3), np.uint8), format="rgb24")
    frame.pts = 0
    payload = b"".join(bytes(p) for p in [*enc.encode(frame), *enc.encode(None)])  # Annex B, SPS in band
    table = SampleTable(offsets=np.zeros(1), sizes=np.array([len(payload)]), dts=np.zeros(1), cts=np.zeros(1),
                        durations=np.full(1, 512), keyframe=np.ones(1, bool))
    track = Track(1, "video", 12288, CodecConfig("avc1", "avc1.64000c", width=160, height=90), table)
    decoded = decode_frame(track, 0, 0, [payload])
    assert jpeg_luma(encode_jpeg(decoded)).shape == (90, 213)  # 160 x 4/3
    assert jpeg_luma(encode_jpeg(decoded, width=320)).shape == (135, 320)


def test_a_hostile_gop_is_never_decoded_whole():
    """One key frame then 100,000 frames: an accurate thumbnail at the end would decode (and read) them all; past
    MAX_DECODE_FRAMES or MAX_DECODE_BYTES it is the key frame's picture. A key frame itself too big is BAD_DATA."""
    from packagers.model import CodecConfig, SampleTable, Track
    from packagers.thumbs.frames import MAX_DECODE_BYTES, MAX_DECODE_FRAMES

    def track(n: int, size: int) -> Track:
        keyframe = np.zeros(n, bool)
        keyframe[0] = True
        table = SampleTable(np.arange(n, dtype=np.uint64) * size, np.full(n, size, np.uint32),
                            np.arange(n, dtype=np.int64) * 512, np.zeros(n, np.int32), np.full(n, 512, np.uint32),
                            keyframe)
        return Track(1, "video", 12288, CodecConfig("avc1", "avc1.64001e", width=64, height=64), table)

    long_gop = track(100_000, 100)
    assert locate(long_gop, 4_000_000, accurate=True) == FrameRange(0, 0)
    short = MAX_DECODE_FRAMES - 1
    assert locate(long_gop, short * 1000 // 24, accurate=True) == FrameRange(0, short)
    heavy = track(40, MAX_DECODE_BYTES // 20)  # 40 frames of 3.2 MB: 128 MB to hold
    assert locate(heavy, 1500, accurate=True) == FrameRange(0, 0)
    with pytest.raises(PackagerError) as raised:
        locate(track(2, MAX_DECODE_BYTES + 1), 10, accurate=True)
    assert raised.value.code == ErrorCode.BAD_DATA
