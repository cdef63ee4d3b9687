"""Real `gateway serve` processes for the tests of workers, signals, config files, health and access logs."""
from __future__ import annotations

import http.client
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HANG_GUARD = 60.0
BIG_FILE_MB = 48  # well beyond loopback socket buffers (a few MB): the transfer is still in flight at SIGTERM


def gateway_command() -> list[str]:
    exe = shutil.which("gateway")
    return [exe] if exe else [sys.executable, "-m", "gateway"]


class Gateway:
    """A real `gateway serve` process on a free loopback port (``--port 0``: the URL comes from its banner)."""

    def __init__(self, log: Path, *args: str, store: Path | None = None, log_level: str | None = None,
                 preexec_fn=None):
        """``preexec_fn``: run in the child before exec (e.g. to lower its RLIMIT_NOFILE)."""
        self.log = log
        cmd = gateway_command() + (["--log-level", log_level] if log_level else [])
        cmd += ["serve", "--host", "127.0.0.1", "--port", "0", *args]
        if store is not None:
            cmd += ["--store", str(store)]
        with open(log, "ab") as stderr:  # a file, not a pipe: the access log must never block the server
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, preexec_fn=preexec_fn)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        line = self.read_line()
        assert " on http://" in line, (line, log.read_text())
        self.base = line.rsplit(" on ", 1)[1].strip().rstrip("/")
        self.port = int(self.base.rsplit(":", 1)[1])

    def read_line(self, timeout: float = HANG_GUARD) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output from gateway serve: {self.log.read_text()}") from None

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def workers(self) -> set[int]:
        return children_of(self.pid)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = HANG_GUARD) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            for pid in self.workers():
                os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def gateways(tmp_path):
    started: list[Gateway] = []

    def start(*args: str, store: Path | None = None, log_level: str | None = None, preexec_fn=None) -> Gateway:
        gw = Gateway(tmp_path / f"gateway-{len(started)}.log", *args, store=store, log_level=log_level,
                     preexec_fn=preexec_fn)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.close()


def children_of(pid: int) -> set[int]:
    """Processes whose parent is ``pid``, read from /proc (field 4 of /proc/<pid>/stat)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def get(base: str, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One request on a fresh connection (so SO_REUSEPORT spreads them across workers)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=HANG_GUARD)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def wait_until(condition, what: str, timeout: float = HANG_GUARD, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False
