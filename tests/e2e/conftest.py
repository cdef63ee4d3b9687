"""A real `gateway serve` process on a loopback port, over a store of generated media (shared by the e2e tests)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fixtures.generate import fixture_path

E2E_FILES = ("title_360p.mp4", "title_240p.mp4", "title_180p.mp4", "two_audio.mp4", "audio_only.mp4",
             "hevc.mp4", "moov_end.mp4", "no_bframes.mp4", "multi_track.mp4")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def e2e_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("store")
    for name in E2E_FILES:
        shutil.copyfile(fixture_path(name), store / name)
    return store


def start_gateway(store: Path, log_path: Path, *extra: str):
    """Start `gateway serve` (the real CLI) on a free loopback port; returns (process, base URL) once it answers."""
    port = free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--store", str(store), "--host", "127.0.0.1",
         "--port", str(port), "--segment-duration", "4", *extra],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/status", timeout=5).read()
            return proc, base
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"gateway serve did not start: {log_path.read_text()}")
            time.sleep(0.1)


def _serve(store: Path, name: str, *extra: str):
    proc, base = start_gateway(store, store.parent / f"{name}.log", *extra)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def gateway_url(e2e_store: Path):
    """Base URL of a `gateway serve` subprocess with default settings (HLS container auto)."""
    yield from _serve(e2e_store, "gateway")


@pytest.fixture(scope="session")
def gateway_fmp4_url(e2e_store: Path):
    """The same store served with `--hls-container fmp4` (HLS with EXT-X-MAP and .m4s segments)."""
    yield from _serve(e2e_store, "gateway-fmp4", "--hls-container", "fmp4")


@pytest.fixture(scope="session")
def gateway_ts_url(e2e_store: Path):
    """The same store served with `--hls-container ts`: MPEG-TS for every codec, HEVC included."""
    yield from _serve(e2e_store, "gateway-ts", "--hls-container", "ts")
