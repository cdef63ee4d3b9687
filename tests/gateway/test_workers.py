"""`gateway serve --workers N` as real processes: SO_REUSEPORT workers, restarts, SIGTERM drain, SIGHUP reload.

Ground truth comes from outside the gateway: worker pids from /proc (parent pid of every process), bytes from the
file on disk (sha256), refused connections from the kernel (ECONNREFUSED), the listening RTMP socket's owner from
/proc/net/tcp and /proc/<pid>/fd. Timeouts are hang guards only.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from .processes import BIG_FILE_MB, HANG_GUARD, Gateway, gateway_command, get, refused, wait_until
from tests.e2e.conftest import free_port


def answering_pids(gw: Gateway, needed: set[int], seconds: float = 20.0) -> set[int]:
    """Worker pids seen on /health (X-Gateway-Worker) over fresh connections, until all of ``needed`` answered or
    ``seconds`` passed (a worker just forked accepts once it has imported and set up its app: on a loaded machine
    that took longer than 400 back-to-back requests)."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while not needed <= seen and time.monotonic() < deadline:
        status, headers, body = get(gw.base, "/health")
        assert status == 200 and body == b"ok\n"
        seen.add(int(headers["X-Gateway-Worker"]))
    return seen


def make_big_file(path: Path, mb: int = BIG_FILE_MB) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(mb):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


class SlowDownload:
    """GET /mp4/<name> on a raw socket with a small receive buffer, read only as far as asked: an in-flight transfer."""

    def __init__(self, port: int, path: str):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.settimeout(HANG_GUARD)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.status = int(head.split()[1])
        self.length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])
        self.digest = hashlib.sha256(self.buffer)
        self.received = len(self.buffer)

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("connection closed")
        return chunk

    def read(self, n: int) -> None:
        while self.received < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                break
            self.digest.update(chunk)
            self.received += len(chunk)

    def finish(self) -> str:
        self.read(self.length)
        self.sock.close()
        return self.digest.hexdigest()


def test_two_workers_share_the_port_and_both_answer(gateways, store):
    gw = gateways("--workers", "2", store=store)
    workers = wait_until(lambda: len(gw.workers()) == 2 and gw.workers(), "two worker processes")
    assert answering_pids(gw, workers) == workers  # every answer came from one of them, and both answered
    status, _, body = get(gw.base, "/hls/title_240p.mp4/seg-1.ts")
    assert status == 200 and body[:1] == b"\x47"
    assert gw.stop() == 0


def test_a_killed_worker_is_restarted(gateways, store):
    gw = gateways("--workers", "2", store=store)
    before = wait_until(lambda: len(gw.workers()) == 2 and gw.workers(), "two worker processes")
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    after = wait_until(lambda: len(w := gw.workers()) == 2 and victim not in w and w, "a replacement worker")
    (replacement,) = after - before
    assert answering_pids(gw, after) == after  # the new worker serves
    assert "restarting" in gw.log.read_text() and f"pid {victim}" in gw.log.read_text()
    assert gw.stop() == 0


def test_sigterm_finishes_the_transfer_in_flight_and_refuses_new_connections(gateways, store):
    expected = make_big_file(store / "big.mp4")
    gw = gateways("--workers", "2", store=store)
    download = SlowDownload(gw.port, "/mp4/big.mp4")
    assert download.status == 200 and download.length == BIG_FILE_MB << 20
    download.read(1 << 20)
    gw.send(signal.SIGTERM)
    wait_until(lambda: refused(gw.port), "the port to refuse new connections")
    assert download.received < download.length  # still in flight when the port closed
    assert download.finish() == expected  # every byte, intact
    assert gw.proc.wait(HANG_GUARD) == 0
    assert not gw.workers()


def write_config(path: Path, store: Path, **values) -> None:
    lines = [f'store = "{store}"'] + [f"{k} = {v!r}" if not isinstance(v, bool) else f"{k} = {str(v).lower()}"
                                      for k, v in values.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)  # atomic, as an operator's tooling should do it


class Hammer(threading.Thread):
    """Requests on fresh connections in a loop; every failure (exception or non-200) is kept."""

    def __init__(self, base: str, path: str):
        super().__init__(daemon=True)
        self.base, self.path = base, path
        self.done = threading.Event()
        self.results: list[tuple[int, str]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.done.is_set():
            try:
                status, headers, _ = get(self.base, self.path)
                self.results.append((status, headers.get("Cache-Control", "")))
                if status != 200:
                    self.failures.append(f"status {status}")
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(e))

    def stop(self) -> None:
        self.done.set()
        self.join(HANG_GUARD)


RELOADS = 8  # several: a connection lost at a switch-over is a rare event per reload


def test_sighup_reloads_the_config_without_failing_a_request(gateways, store, tmp_path):
    expected = make_big_file(store / "big.mp4")
    config = tmp_path / "gateway.toml"
    write_config(config, store, workers=2, manifest_max_age=100)
    gw = gateways("--config", str(config))
    workers = wait_until(lambda: len(gw.workers()) == 2 and gw.workers(), "two worker processes")
    master = "/hls/title_240p.mp4/master.m3u8"
    assert get(gw.base, master)[1]["Cache-Control"] == "public, max-age=100"
    download = SlowDownload(gw.port, "/mp4/big.mp4")  # in flight across the reloads
    download.read(1 << 20)

    hammers = [Hammer(gw.base, master) for _ in range(2)]
    for hammer in hammers:
        hammer.start()
    wait_until(lambda: all(len(hammer.results) >= 5 for hammer in hammers), "the hammers to run")
    for n in range(RELOADS):
        age = 200 + n
        write_config(config, store, workers=3, manifest_max_age=age)
        gw.send(signal.SIGHUP)
        wait_until(lambda: all(get(gw.base, master)[1]["Cache-Control"] == f"public, max-age={age}"
                               for _ in range(20)), f"every worker to serve max-age={age}")
    wait_until(lambda: len(gw.workers()) == 3, "the third worker")
    for hammer in hammers:
        hammer.stop()
    results = [r for hammer in hammers for r in hammer.results]
    assert not [f for hammer in hammers for f in hammer.failures]
    seen = {cc for _, cc in results}
    assert seen <= {f"public, max-age={age}" for age in [100, *range(200, 200 + RELOADS)]}
    assert "public, max-age=100" in seen and f"public, max-age={199 + RELOADS}" in seen  # ran across the switches
    assert workers <= gw.workers()  # reloaded in place: the same two processes, plus the new one
    assert download.finish() == expected

    # an invalid file changes nothing and says why
    config.write_text(f'store = "{store}"\nmanifest_max_age = 300\nmanifest_max_agee = 1\n')
    gw.send(signal.SIGHUP)
    wait_until(lambda: "manifest_max_agee" in gw.log.read_text(), "the reload error in the log")
    assert get(gw.base, master)[1]["Cache-Control"] == f"public, max-age={199 + RELOADS}"
    assert gw.stop() == 0


def test_back_to_back_reloads_under_load_lose_no_request(gateways, store, tmp_path):
    """Many reloads while four clients open fresh connections: a switch-over that drops one connection in a
    hundred reloads (an earlier design did, measured) fails here."""
    config = tmp_path / "gateway.toml"
    write_config(config, store, manifest_max_age=1, access_log=False)
    gw = gateways("--config", str(config))
    paths = ["/hls/title_240p.mp4/master.m3u8", "/hls/title_240p.mp4/seg-1.ts", "/status", "/health"]
    hammers = [Hammer(gw.base, path) for path in paths]
    for hammer in hammers:
        hammer.start()
    for age in range(2, 62):
        write_config(config, store, manifest_max_age=age, access_log=False)
        gw.send(signal.SIGHUP)
        wait_until(lambda: get(gw.base, paths[0])[1]["Cache-Control"] == f"public, max-age={age}", "the reload")
    for hammer in hammers:
        hammer.stop()
    assert sum(len(hammer.results) for hammer in hammers) > 60
    assert not [f for hammer in hammers for f in hammer.failures]
    assert gw.stop() == 0


def rtmp_listener_owners(port: int, pids: set[int]) -> set[int]:
    """Which of ``pids`` hold the socket listening on ``port`` (inode from /proc/net/tcp, owners from their fds)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # 0A = LISTEN
            inodes.add(fields[9])
    owners = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                owners.add(pid)
    return owners


def test_rtmp_ingest_runs_in_exactly_one_worker(gateways, store):
    rtmp_port = free_port()
    gw = gateways("--workers", "2", "--rtmp-port", str(rtmp_port), store=store)
    line = gw.read_line()
    while line.startswith(" "):  # the banner's example URLs
        line = gw.read_line()
    assert line.startswith(f"gateway: RTMP ingest on rtmp://127.0.0.1:{rtmp_port}/")
    workers = wait_until(lambda: len(gw.workers()) == 2 and gw.workers(), "two worker processes")
    owners = rtmp_listener_owners(rtmp_port, workers | {gw.pid})
    assert len(owners) == 1 and owners <= workers
    assert gw.stop() == 0


def test_a_worker_that_cannot_start_fails_the_start(tmp_path, store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(gateway_command() + ["serve", "--store", str(store), "--port", "0", "--workers", "2",
                                                     "--rtmp-port", str(port)],
                                capture_output=True, text=True, timeout=HANG_GUARD)
    assert result.returncode == 1
    assert "worker 0 could not start" in result.stderr and result.stdout == ""


def test_a_port_in_use_is_a_clear_error(store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(gateway_command() + ["serve", "--store", str(store), "--port", str(port)],
                                capture_output=True, text=True, timeout=HANG_GUARD)
    assert result.returncode == 1
    assert result.stderr.strip() == f"gateway serve: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_a_second_gateway_on_a_held_port_is_refused_and_names_the_holder(gateways, store, tmp_path):
    """SO_REUSEPORT would let a second gateway join the port (the kernel then splits the traffic between two stores):
    it is refused at start, naming the gateway that holds the port, and the first one serves on, alone."""
    first = gateways("--workers", "2", store=store)
    other = tmp_path / "other-store"
    other.mkdir()
    for host in ("127.0.0.1", "0.0.0.0"):
        result = subprocess.run(gateway_command() + ["serve", "--store", str(other), "--host", host, "--port",
                                                     str(first.port)], capture_output=True, text=True,
                                timeout=HANG_GUARD)
        assert result.returncode == 1, result
        assert result.stderr.strip() == (f"gateway serve: cannot listen on {host}:{first.port}: port {first.port} "
                                         f"is held by gateway pid {first.proc.pid}")
    assert {get(first.base, "/health")[0] for _ in range(20)} == {200}
    # the port is the first gateway's until it ends; then anyone may take it
    first.stop()
    second = Gateway(tmp_path / "second.log", "--port", str(first.port), store=other)
    try:
        assert get(second.base, "/health")[0] == 200
    finally:
        second.close()


def test_the_banner_shows_playable_urls_of_the_store(gateways, store):
    gw = gateways(store=store)
    lines = [gw.read_line(timeout=10).rstrip("\n") for _ in range(9)]
    urls = [line.split()[-1] for line in lines if line.startswith("    ")]
    assert len(urls) == 6 and lines[-1] == f"  status page and test player: {gw.base}/"
    for url in urls:
        assert get(gw.base, url.removeprefix(gw.base))[0] == 200, url


def test_workers_stop_when_the_supervisor_is_killed(gateways, store):
    gw = gateways("--workers", "2", store=store)
    workers = wait_until(lambda: len(gw.workers()) == 2 and gw.workers(), "two worker processes")
    gw.send(signal.SIGKILL)
    gw.proc.wait(HANG_GUARD)
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() and not zombie(pid) for pid in workers),
               "the orphaned workers to exit")
    assert refused(gw.port)


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_reload_keeps_the_warm_caches(gateways, store, tmp_path):
    config = tmp_path / "gateway.toml"
    write_config(config, store, manifest_max_age=100)
    gw = gateways("--config", str(config))
    segment = "/hls/title_240p.mp4/seg-1.ts"
    status, _, first = get(gw.base, segment)
    assert status == 200
    write_config(config, store, manifest_max_age=200)
    gw.send(signal.SIGHUP)
    wait_until(lambda: get(gw.base, "/hls/title_240p.mp4/master.m3u8")[1]["Cache-Control"].endswith("=200"),
               "the reload")
    before = json.loads(get(gw.base, "/status")[2])["segment_cache"]
    assert get(gw.base, segment)[2] == first
    after = json.loads(get(gw.base, "/status")[2])["segment_cache"]
    assert after["builds"] == before["builds"] and after["hits"] == before["hits"] + 1  # built before the reload
    assert gw.stop() == 0
