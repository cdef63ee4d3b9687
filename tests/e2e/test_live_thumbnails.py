"""/live/<app>/<stream>/thumb-now.jpg: the newest picture of a stream the ffmpeg CLI publishes.

Two nodes on one store: A runs the RTMP ingest, B does not. A stream of an application without live packaging
exists only in A's GOP cache, so A's thumbnail of it proves the GOP path (B has nothing to read and says 404); a
packaged stream's thumbnail on B comes from the newest segment on the shared store. Each JPEG must be one of the
published pictures: PSNR >= 35 dB against the best-matching frame of the source, decoded by ffmpeg.
"""
from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request

import av
import numpy as np
import pytest

from fixtures.generate import fixture_path
from tests.needs import needs_executable

from .conftest import free_port, start_gateway
from .test_thumbnails import luma, psnr

pytestmark = needs_executable("ffmpeg")
SOURCE = "title_180p.mp4"


def poll_jpeg(url: str, timeout: float = 40) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                assert r.headers["Content-Type"] == "image/jpeg" and r.headers["Cache-Control"] == "max-age=1"
                return r.read()
        except urllib.error.HTTPError as e:
            if e.code != 404 or time.monotonic() > deadline:
                raise


def best_match(picture: np.ndarray) -> float:
    with av.open(str(fixture_path(SOURCE))) as c:
        return max(psnr(picture, f.to_ndarray(format="gray").astype(np.float64)) for f in c.decode(video=0))


def publish(port: int, path: str) -> subprocess.Popen:
    return subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
                             str(fixture_path(SOURCE)), "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/{path}"])


def test_thumb_now_from_the_gop_cache_and_from_the_store(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    config = tmp_path / "rtmp.toml"
    config.write_text("[applications.studio]\nlive = false\n")
    rtmp_port = free_port()
    node_a, base_a = start_gateway(store, tmp_path / "a.log", "--rtmp-port", str(rtmp_port), "--rtmp-config",
                                   str(config))
    node_b, base_b = start_gateway(store, tmp_path / "b.log")
    publishers = [publish(rtmp_port, "studio/cam"), publish(rtmp_port, "live/cam")]
    try:
        from_gop = luma(poll_jpeg(f"{base_a}/live/studio/cam/thumb-now-w160.jpg"))
        assert from_gop.shape == (90, 160)
        from_store = luma(poll_jpeg(f"{base_b}/live/live/cam/thumb-now.jpg"))
        assert from_store.shape == (180, 320) and best_match(from_store) >= 35
        full = luma(poll_jpeg(f"{base_a}/live/studio/cam/thumb-now.jpg"))
        assert best_match(full) >= 35
        with pytest.raises(urllib.error.HTTPError) as raised:  # not packaged, not published on B
            urllib.request.urlopen(f"{base_b}/live/studio/cam/thumb-now.jpg", timeout=10)
        assert raised.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(f"{base_a}/live/studio/cam/thumb-1000.jpg", timeout=10)
        assert raised.value.code == 400
    finally:
        for p in publishers:
            p.kill()
            p.wait(10)
        for node in (node_a, node_b):
            node.terminate()
            node.wait(10)
