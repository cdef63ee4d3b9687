"""Real nginx (Debian's binary, the rendered gateway configuration) in front of three real `gateway serve` nodes.

Nodes listen on fixed loopback ports so that a node killed with SIGKILL comes back at the same address (that is how
nginx sees a restart). All nodes serve one store: generated fixtures plus a catalog with a secured entry. Each nginx
runs in its own prefix directory (config, logs, cache, pid), started with ``-g 'daemon off;'`` after ``nginx -t``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import m3u8
import pytest

from fixtures.generate import fixture_path
from gateway.tools.nginx_config import NginxConfig, render
from tests.e2e.conftest import free_port
from tests.needs import missing

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
FILES = ("title_360p.mp4", "title_240p.mp4", "title_180p.mp4", "two_audio.mp4", "audio_only.mp4", "hevc.mp4",
         "moov_end.mp4", "no_bframes.mp4")
# one HLS entry per file plus a url set: what the consistent hash spreads over the nodes
ENTRIES = (*FILES, "title_,360p,240p,180p,.mp4.urlset")
SECURE_PARTNER, SECURE_SECRET, SECURE_ENTRY = 201, "cd" * 32, "0_secure01"
SECURE_FILE = "secure/title_180p.mp4"  # a copy: the flavors of a secured entry are served only signed


@pytest.fixture(scope="session", autouse=True)
def nginx_installed() -> None:
    """Every test here runs nginx: skipped on a machine without it, failed in CI (session scope: before any
    session fixture starts an nginx)."""
    if not os.access(NGINX, os.X_OK):
        missing(f"nginx is not installed ({NGINX})")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def fetch(url: str, headers: dict | None = None, timeout: float = 30) -> Response:
    """One GET (no redirects followed), whatever the status."""
    try:
        with _OPENER.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return Response(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, dict(e.headers), e.read())


def hls_urls(base: str, entry: str) -> list[str]:
    """Every URL a player fetches for one HLS entry: master, media playlists, init sections, segments (m3u8 parses)."""
    return player_urls(f"{base}/hls/{entry}/master.m3u8")


def player_urls(master_url: str) -> list[str]:
    """The URLs an HLS player fetches from ``master_url`` on: master, media playlists, init sections, segments."""
    r = fetch(master_url)
    assert r.status == 200, (master_url, r.status, r.body[:200])
    master = m3u8.loads(r.body.decode())
    playlists = [urljoin(master_url, p.uri) for p in master.playlists]
    playlists += [urljoin(master_url, m.uri) for m in master.media if m.uri]
    urls = [master_url]
    for playlist_url in playlists:
        playlist = m3u8.loads(fetch(playlist_url).body.decode())
        assert playlist.segments, f"{playlist_url} lists no segment"
        urls.append(playlist_url)
        urls += sorted({urljoin(playlist_url, m.uri) for m in playlist.segment_map or []})
        urls += [urljoin(playlist_url, s.uri) for s in playlist.segments]
    return urls


class Node:
    """One `gateway serve` subprocess (the real CLI) at a fixed loopback address, restartable there."""

    def __init__(self, name: str, store: Path, logs: Path, *extra: str, rtmp_port: int = 0):
        self.name, self.store, self.extra, self.rtmp_port = name, store, extra, rtmp_port
        self.port = free_port()
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"http://{self.address}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        rtmp = ("--rtmp-port", str(self.rtmp_port)) if self.rtmp_port else ()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--store", str(self.store), "--host", "127.0.0.1",
             "--port", str(self.port), "--segment-duration", "4", *rtmp, *self.extra],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own process group: see kill()
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                self.status()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    raise RuntimeError(f"{self.name} did not start: {self.log_path.read_text()[-3000:]}")
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the node's whole process group (`gateway serve` may fork workers under a supervisor), as when
        its machine dies: no goodbye, in-flight responses cut, the port refuses connections at once."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while _accepts(self.port):  # the workers are gone once nothing accepts on the port
            assert time.monotonic() < deadline, f"{self.name}: port {self.port} still accepts after SIGKILL"
            time.sleep(0.05)

    def ensure_running(self) -> None:
        if not self.alive:
            self.start()

    def stop(self) -> None:
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(40)  # the supervisor's drain and grace period
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def status(self) -> dict:
        with urllib.request.urlopen(self.base + "/status", timeout=10) as r:
            return json.loads(r.read())

    def lookups(self) -> int:
        """Requests that reached this node's response cache (segments and playlists): hits, misses, coalesced."""
        c = self.status()["segment_cache"]
        return c["hits"] + c["misses"] + c["coalesced"]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Pool:
    nodes: list[Node]
    store: Path

    def lookups(self) -> list[int]:
        return [n.lookups() if n.alive else -1 for n in self.nodes]

    def ensure_running(self) -> None:
        for node in self.nodes:
            node.ensure_running()


class Nginx:
    """nginx -p <prefix> -c <prefix>/nginx.conf -g 'daemon off;' with the rendered configuration."""

    def __init__(self, prefix: Path, config: NginxConfig):
        self.prefix, self.config = prefix, config
        self.conf = prefix / "nginx.conf"
        self.proc: subprocess.Popen | None = None
        self.port = int(config.listen.rpartition(":")[2])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return Path(self.config.log_dir) / "gateway_access.log"

    def command(self, *extra: str) -> list[str]:
        return [NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(Path(self.config.log_dir) / "startup.log"),
                *extra]

    def start(self) -> None:
        Path(self.config.log_dir).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(render(self.config))
        check = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}"
        self.proc = subprocess.Popen(self.command("-g", "daemon off;"), stdout=subprocess.DEVNULL,
                                     stderr=open(self.prefix / "stderr.log", "wb"))
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    errors = Path(self.config.log_dir) / "gateway_error.log"
                    raise RuntimeError(f"nginx did not start: {errors.read_text() if errors.exists() else ''}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # fast shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_lines(self) -> list[str]:
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []

    def wait_log_lines(self, match, count: int, timeout: float = 10) -> list[str]:
        """The access-log lines ``match`` accepts, once there are ``count`` of them (or ``timeout`` passed): nginx
        writes a request's line after its last byte is sent, so a client can hold the answer before the line exists.
        More than ``count`` are returned as they are, for the caller's assertion to see."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.log_lines() if match(line)]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


def nginx_config(prefix: Path, pool: Pool, *, cache: bool, rtmp_nodes: tuple[str, ...] = (), **kw) -> NginxConfig:
    """The production template with test paths: everything under ``prefix``, loopback ports, workers as root when
    we are root (the cache lives under pytest's 0700 temporary directory)."""
    return NginxConfig(
        nodes=tuple(n.address for n in pool.nodes), listen=f"127.0.0.1:{free_port()}", rtmp_nodes=rtmp_nodes,
        rtmp_listen=f"127.0.0.1:{free_port()}", cache_dir=str(prefix / "cache"), cache_size="256m" if cache else "0",
        log_dir=str(prefix / "logs"), pid_file=str(prefix / "nginx.pid"), temp_dir=str(prefix), user="root" if os.geteuid() == 0 else "nobody",
        stream_module=str(STREAM_MODULE) if rtmp_nodes else "", **kw,
    )


def gateway_cli(store: Path, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "gateway", *args, "--store", str(store)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="session")
def lb_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("lb-store")
    for name in FILES:
        shutil.copyfile(fixture_path(name), store / name)
    (store / "secure").mkdir()
    shutil.copyfile(fixture_path("title_180p.mp4"), store / SECURE_FILE)
    gateway_cli(store, "partners", "add", str(SECURE_PARTNER), "--name", "Secure", "--secret", SECURE_SECRET)
    gateway_cli(store, "partners", "set-rule", str(SECURE_PARTNER), "secured_default_delivery_type", "hls")
    gateway_cli(store, "entries", "add", SECURE_ENTRY, "--partner", str(SECURE_PARTNER), "--name", "secured",
                "--secured", "--flavor", SECURE_FILE)
    return store


@pytest.fixture(scope="session")
def pool(lb_store: Path, tmp_path_factory):
    """Three nodes; the first two also accept RTMP (the active ingest node and its backup)."""
    logs = tmp_path_factory.mktemp("lb-nodes")
    nodes = [Node("node0", lb_store, logs, rtmp_port=free_port()), Node("node1", lb_store, logs, rtmp_port=free_port()),
             Node("node2", lb_store, logs)]
    try:
        for node in nodes:
            node.start()
        yield Pool(nodes, lb_store)
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def live_pool(pool: Pool) -> Pool:
    """The pool, every node running (a test before may have killed one and failed before restarting it)."""
    pool.ensure_running()
    return pool


def _nginx(tmp_path_factory, pool: Pool, name: str, **kw):
    prefix = tmp_path_factory.mktemp(name)
    server = Nginx(prefix, nginx_config(prefix, pool, **kw))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def lb_nocache(tmp_path_factory, pool):
    """nginx without its cache: every request reaches a node, so the counters show where the hash sends it."""
    yield from _nginx(tmp_path_factory, pool, "nginx-nocache", cache=False)


@pytest.fixture(scope="module")
def lb_cached(tmp_path_factory, pool):
    """nginx with its proxy cache, as deployed."""
    yield from _nginx(tmp_path_factory, pool, "nginx-cached", cache=True)


@pytest.fixture(scope="module")
def lb_rtmp(tmp_path_factory, pool):
    """nginx with the stream block: node0 is the active RTMP node, node1 its backup."""
    rtmp_nodes = tuple(f"127.0.0.1:{n.rtmp_port}" for n in pool.nodes[:2])
    yield from _nginx(tmp_path_factory, pool, "nginx-rtmp", cache=False, rtmp_nodes=rtmp_nodes, fail_timeout=2)


@contextlib.contextmanager
def publishing(url: str, source: Path, log: Path, loop: bool = True):
    """The ffmpeg CLI publishing ``source`` to ``url`` in real time (looped), as an encoder would."""
    loop_args = ("-stream_loop", "-1") if loop else ()
    with open(log, "ab") as out:
        proc = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "warning", "-re", *loop_args, "-i", str(source),
                                 "-c", "copy", "-f", "flv", url], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
