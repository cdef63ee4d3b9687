"""/thumb/ from a real `gateway serve`: the JPEG is the frame at that time, as ffmpeg decodes the source.

Ground truth is the source decoded by ffmpeg (PyAV's demuxer and decoder, not our sample tables): the frame shown at
t is the last one presented at or before t. The JPEG must match it (PSNR >= 35 dB on luma, at full size) and must not
be its key frame (a mid-GOP time, where the key frame scores far lower): accurate means the exact frame.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from fixtures.generate import fixture_path

from .conftest import start_gateway
from .http import get

NAME = "title_360p.mp4"
MID_GOP_MS = 3521  # 24 fps, key frames every 2 s: frame 84 (3.5 s), 36 frames after the key frame at 2 s


def luma(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        return next(c.decode(video=0)).to_ndarray(format="gray").astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def source_frame(name: str, ms: int) -> np.ndarray:
    """Luma of the frame ffmpeg shows at ``ms``."""
    with av.open(str(fixture_path(name))) as c:
        shown = None
        for frame in c.decode(video=0):
            if frame.time is not None and frame.time <= ms / 1000 + 1e-9:
                shown = frame.to_ndarray(format="gray").astype(np.float64)
        return shown


def test_accurate_thumbnail_is_the_exact_frame(gateway_url):
    jpeg = get(f"{gateway_url}/thumb/{NAME}/thumb-{MID_GOP_MS}.jpg")
    picture = luma(jpeg)
    assert picture.shape == (360, 640)
    assert psnr(picture, source_frame(NAME, MID_GOP_MS)) >= 35
    assert psnr(picture, source_frame(NAME, 2000)) < 30  # not the key frame before it


@pytest.mark.parametrize("name, ms", [("hevc.mp4", 2990), ("no_bframes.mp4", 1234), ("title_180p.mp4", 11958)])
def test_other_codecs_and_the_last_frame(gateway_url, name, ms):
    assert psnr(luma(get(f"{gateway_url}/thumb/{name}/thumb-{ms}.jpg")), source_frame(name, ms)) >= 35


@pytest.mark.parametrize("suffix, size", [("-w320", (180, 320)), ("-h90", (90, 160)), ("-w100-h100", (100, 100))])
def test_sizes_keep_the_aspect_ratio_unless_both_are_given(gateway_url, suffix, size):
    assert luma(get(f"{gateway_url}/thumb/{NAME}/thumb-{MID_GOP_MS}{suffix}.jpg")).shape == size


def test_a_clip_shifts_the_offset(gateway_url):
    clipped = luma(get(f"{gateway_url}/thumb/{NAME}/clipFrom/2000/thumb-{MID_GOP_MS - 2000}.jpg"))
    assert psnr(clipped, source_frame(NAME, MID_GOP_MS)) >= 35


def test_caching_headers_and_conditional_requests(gateway_url):
    url = f"{gateway_url}/thumb/{NAME}/thumb-5000-w160.jpg"
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.headers["Content-Type"] == "image/jpeg"
        assert r.headers["Cache-Control"] == "public, max-age=86400"
        etag, body = r.headers["ETag"], r.read()
    assert body[:2] == b"\xff\xd8" and int(r.headers["Content-Length"]) == len(body)
    request = urllib.request.Request(url, headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=30)
    assert raised.value.code == 304


@pytest.mark.parametrize("path, status", [
    (f"{NAME}/thumb-12000.jpg", 404),  # past the end
    ("audio_only.mp4/thumb-1000.jpg", 404),  # no video
    (f"{NAME}/thumb-01.jpg", 400), (f"{NAME}/thumb-1000-w0.jpg", 400), (f"{NAME}/thumb-1000-w5000.jpg", 400),
    (f"{NAME}/thumb-now.jpg", 400), ("missing.mp4/thumb-1000.jpg", 404),
])  # fmt: skip
def test_bad_thumbnail_requests(gateway_url, path, status):
    with pytest.raises(urllib.error.HTTPError) as raised:
        get(f"{gateway_url}/thumb/{path}")
    assert raised.value.code == status


def gateway_cli(store: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "gateway", *args, "--store", str(store)], check=True, capture_output=True)


def test_a_partner_turns_thumbnails_and_clipping_off(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / NAME).write_bytes(fixture_path(NAME).read_bytes())
    gateway_cli(store, "partners", "add", "101", "--name", "No extras")
    gateway_cli(store, "entries", "add", "0_thumbs01", "--partner", "101", "--name", "t", "--flavor", NAME)
    proc, base = start_gateway(store, tmp_path / "gateway.log", "--catalog-ttl", "0")
    try:
        assert get(f"{base}/thumb/{NAME}/thumb-1000.jpg")[:2] == b"\xff\xd8"  # on by default
        gateway_cli(store, "partners", "set-feature", "101", "thumbnails", "off")
        gateway_cli(store, "partners", "set-feature", "101", "clipping", "off")
        gateway_cli(store, "partners", "set-feature", "101", "track_selection", "off")
        for url, feature in ((f"{base}/thumb/{NAME}/thumb-1000.jpg", b"thumbnails"),
                             (f"{base}/hls/{NAME}/clipTo/5000/master.m3u8", b"clipping"),
                             (f"{base}/mp4/{NAME}/clipTo/5000", b"clipping"),
                             (f"{base}/dash/{NAME}/tracks/v1/manifest.mpd", b"track_selection"),
                             (f"{base}/hls/{NAME}/master-a1.m3u8", b"track_selection"),
                             (f"{base}/mp4/tracks/a1/{NAME}", b"track_selection")):
            with pytest.raises(urllib.error.HTTPError) as raised:
                get(url)
            assert raised.value.code == 403 and feature + b" is disabled" in raised.value.read()
        assert get(f"{base}/hls/{NAME}/master.m3u8").startswith(b"#EXTM3U")  # plain playback is untouched
        assert get(f"{base}/hls/{NAME}/index-v1-a1.m3u8").startswith(b"#EXTM3U")
        shown = json.loads(subprocess.run([sys.executable, "-m", "gateway", "partners", "show", "101", "--store",
                                           str(store)], check=True, capture_output=True).stdout)
        assert shown["delivery"]["features"] == {"thumbnails": False, "clipping": False, "track_selection": False}
        assert "captions" not in shown["delivery"]["features"]  # an override names what it changes only
    finally:
        proc.terminate()
        proc.wait(10)


def test_key_frame_mode_serves_the_key_frame_before(tmp_path, e2e_store):
    proc, base = start_gateway(e2e_store, tmp_path / "keyframe.log", "--thumbnail-mode", "keyframe")
    try:
        picture = luma(get(f"{base}/thumb/{NAME}/thumb-{MID_GOP_MS}.jpg"))
    finally:
        proc.terminate()
        proc.wait(10)
    assert psnr(picture, source_frame(NAME, 2000)) >= 35  # the key frame at 2 s
    assert psnr(picture, source_frame(NAME, MID_GOP_MS)) < 30


def test_av1_sources_give_thumbnails_and_a_clear_415_elsewhere(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "av1.mp4").write_bytes(fixture_path("av1.mp4").read_bytes())
    proc, base = start_gateway(store, tmp_path / "av1.log")
    try:
        picture = luma(get(f"{base}/thumb/av1.mp4/thumb-1500.jpg"))
        assert picture.shape == (96, 160) and psnr(picture, source_frame("av1.mp4", 1500)) >= 35
        assert psnr(picture, source_frame("av1.mp4", 0)) < 30  # the frame at 1.5 s, not the key frame at 0
        for path in ("hls/av1.mp4/master.m3u8", "dash/av1.mp4/manifest.mpd", "mss/av1.mp4/manifest"):
            with pytest.raises(urllib.error.HTTPError) as raised:
                get(f"{base}/{path}")
            assert raised.value.code == 415 and b"av1" in raised.value.read(), path
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("slots", [1, 2])
def test_decodes_are_bounded_and_the_rest_wait(tmp_path, e2e_store, slots):
    """A burst of distinct thumbnails (a scrubber) runs at most --thumbnail-decodes decodes at once; the rest queue
    and are all answered. /status counts the most that ever ran at once."""
    from concurrent.futures import ThreadPoolExecutor

    proc, base = start_gateway(e2e_store, tmp_path / "slots.log", "--thumbnail-decodes", str(slots))
    try:
        urls = [f"{base}/thumb/{NAME}/thumb-{ms}.jpg" for ms in range(500, 11500, 500)]
        with ThreadPoolExecutor(len(urls)) as pool:
            bodies = list(pool.map(get, urls))
        stats = json.loads(get(f"{base}/status"))["thumbnails"]
    finally:
        proc.terminate()
        proc.wait(10)
    assert all(b[:2] == b"\xff\xd8" for b in bodies)
    assert stats["slots"] == slots and stats["peak_decoding"] == slots  # used to the full, never beyond
    assert stats["peak_waiting"] > 0 and stats["decoding"] == stats["waiting"] == 0
