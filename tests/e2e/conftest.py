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
             "hevc.mp4", "moov_end.mp4", "no_bframes.mp4")


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


@pytest.fixture(scope="session")
def gateway_url(e2e_store: Path):
    """Base URL of a `gateway serve` subprocess (the real CLI), stopped at the end of the session."""
    port = free_port()
    log = open(e2e_store.parent / "gateway.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--store", str(e2e_store), "--host", "127.0.0.1",
         "--port", str(port), "--segment-duration", "4"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/status", timeout=5).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway serve did not start: {(e2e_store.parent / 'gateway.log').read_text()}")
            time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(10)
    log.close()
