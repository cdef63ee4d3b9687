"""The stream {} block: RTMP through nginx reaches the active ingest node, where a publisher and its players meet;
while that node is down its backup takes new publishers, and ingest returns once it is back. Ground truth: each
node's own log ("publishing <app>/<stream>"), and packets a player decodes that equal the source file's."""
from __future__ import annotations

import subprocess
import time

import av
import pytest

from fixtures.generate import fixture_path
from tests.needs import missing, needs_executable

from .conftest import STREAM_MODULE, publishing

pytestmark = needs_executable("ffmpeg")
HANG_GUARD = 60
SOURCE = fixture_path("title_180p.mp4")


@pytest.fixture(scope="module", autouse=True)
def stream_module_installed() -> None:
    """The balancer is nginx's stream module: skipped without it, failed in CI (module scope: before the nginx)."""
    if not STREAM_MODULE.exists():
        missing("libnginx-mod-stream is not installed")


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.1)


def publish_once(url: str, log) -> int:
    """Publish the whole file as fast as the server reads it; ffmpeg's exit status says whether it was accepted."""
    return subprocess.run(["ffmpeg", "-nostdin", "-v", "warning", "-i", str(SOURCE), "-c", "copy", "-f", "flv", url],
                          stdout=log, stderr=subprocess.STDOUT, timeout=HANG_GUARD).returncode


def test_publisher_and_players_meet_on_the_active_node(lb_rtmp, live_pool, tmp_path):
    node0, node1 = live_pool.nodes[:2]
    url = f"rtmp://{lb_rtmp.config.rtmp_listen}/live/lb-meet"
    with av.open(str(SOURCE)) as f:
        source_packets = {bytes(p) for p in f.demux() if p.size}
    with publishing(url, SOURCE, tmp_path / "ffmpeg.log"):
        wait_for(lambda: "publishing live/lb-meet" in node0.log_text(), "node0 to accept the publisher")
        decoded = matched = total = 0
        with av.open(url, options={"rw_timeout": "5000000"}, timeout=10) as player:  # through nginx too
            for packet in player.demux():
                if not packet.size:
                    continue
                total += 1
                matched += bytes(packet) in source_packets
                decoded += sum(1 for _ in packet.decode())
                if decoded >= 40:
                    break
    assert decoded >= 40 and matched == total
    assert "playing live/lb-meet" in node0.log_text()
    assert "live/lb-meet" not in node1.log_text()


def test_backup_takes_ingest_while_the_active_node_is_down(lb_rtmp, live_pool, tmp_path):
    node0, node1 = live_pool.nodes[:2]
    base = f"rtmp://{lb_rtmp.config.rtmp_listen}/live"
    with open(tmp_path / "ffmpeg.log", "ab") as log:
        node0.kill()
        try:
            assert publish_once(f"{base}/lb-backup", log) == 0, (tmp_path / "ffmpeg.log").read_text()
            assert "publishing live/lb-backup" in node1.log_text()
        finally:
            node0.start()
        # fail_timeout later, nginx tries the active node again: new publishers land there
        attempt = 0

        def back_on_node0() -> bool:
            nonlocal attempt
            attempt += 1
            assert publish_once(f"{base}/lb-back{attempt}", log) == 0
            return f"publishing live/lb-back{attempt}" in node0.log_text()

        wait_for(back_on_node0, "ingest to return to node0")
