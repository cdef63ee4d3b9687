"""A real nginx (Debian's binary) serving fixture MP4s as the HTTP origin, its access log recording each request's
Range header and the bytes it sent; and a tiny real aiohttp proxy in front of it that injects the faults nginx
cannot produce on demand (a slow answer, 500s, a body cut short). Gateways are real `gateway serve` processes."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from fixtures.generate import fixture_path
from tests.e2e.conftest import free_port
from tests.gateway.processes import gateways  # noqa: F401  (a fixture: real `gateway serve` processes)
from tests.needs import missing
from tests.nginx.conftest import _accepts

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
FILES = ("title_180p.mp4", "title_240p.mp4", "moov_end.mp4", "two_audio.mp4", "title_360p.mp4")
PREFIX = "media"  # the origin serves the files under /media/: the gateway must never ask outside it
RW_PREFIX = "rw"  # a prefix that also takes PUT (empty at start): where recordings are uploaded

NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    types {{ video/mp4 mp4; }}
    log_format ranges '$request_method $uri "$http_range" $status $body_bytes_sent';
    access_log {prefix}/access.log ranges;
    server {{
        listen 127.0.0.1:{port};
        location /{prefix_path}/ {{ alias {root}/; }}
        # the catalog's folders are listed as JSON (gateway/catalog/files.py: OriginFiles on an HTTP origin)
        location /{prefix_path}/.catalog/ {{ alias {root}/.catalog/; autoindex on; autoindex_format json; }}
        # writable (WebDAV PUT): recordings uploaded to an HTTP origin (tests/origin/test_recording_upload.py)
        location /{rw_path}/ {{
            alias {prefix}/{rw_path}/; dav_methods PUT; create_full_put_path on; client_max_body_size 0;
        }}
        location / {{ return 403; }}
    }}
}}
"""


@dataclass
class LogLine:
    method: str
    uri: str
    range: str
    status: int
    sent: int


class NginxOrigin:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.root = workdir / "root"
        self.root.mkdir()
        for name in FILES:
            shutil.copyfile(fixture_path(name), self.root / name)
        (workdir / "tmp").mkdir()
        self.port = free_port()
        self.conf = workdir / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""  # as root, workers would switch to nobody: tmp is 0700
        self.conf.write_text(NGINX_CONF.format(user=user, prefix=workdir, port=self.port, root=self.root,
                                               prefix_path=PREFIX, rw_path=RW_PREFIX))
        self.log = workdir / "access.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{PREFIX}/"

    def start(self) -> None:
        command = [NGINX, "-p", str(self.workdir), "-c", str(self.conf), "-e", str(self.workdir / "error.log")]
        subprocess.run(command + ["-t", "-q"], check=True, capture_output=True)
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not _accepts(self.port):
            assert self.proc.poll() is None and time.monotonic() < deadline, (self.workdir / "error.log").read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None

    def lines(self) -> list[LogLine]:
        """The access log so far (nginx writes each line as the request ends: unbuffered by default)."""
        out = []
        for text in self.log.read_text().splitlines() if self.log.exists() else []:
            method, uri, rest = text.split(" ", 2)
            rng, _, tail = rest[1:].partition('" ')
            status, sent = tail.split()
            out.append(LogLine(method, uri, rng if rng != "-" else "", int(status), int(sent)))
        return out

    def mark(self) -> int:
        """Where the log ends once it stopped growing: nginx writes a request's line just after sending its answer,
        so a request the client has already seen answered may be logged a moment later (after a plain count)."""
        count, still, deadline = len(self.lines()), 0, time.monotonic() + 5
        while still < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
            now = len(self.lines())
            still, count = (still + 1, count) if now == count else (0, now)
        return count

    def since(self, mark: int) -> list[LogLine]:
        return self.lines()[mark:]

    def replace(self, name: str, source: str) -> None:
        """Another file under the same name (a new inode, size, ETag), atomically (write then rename)."""
        tmp = self.root / f".{name}.tmp"
        shutil.copyfile(fixture_path(source), tmp)
        os.replace(tmp, self.root / name)


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    if not os.access(NGINX, os.X_OK):
        missing(f"nginx is not installed ({NGINX})")
    nginx = NginxOrigin(tmp_path_factory.mktemp("origin"))
    nginx.start()
    yield nginx
    nginx.stop()


class FaultProxy:
    """A real HTTP server in front of the origin (in a thread with its own loop) that passes requests through,
    except as ``mode`` says: "slow" (waits ``delay`` s before answering), "500" (answers 500), "truncate" (sends the
    headers of the whole answer, half of its body, then closes the connection), "short" (a 206 whose
    Content-Range/Length are honest about fewer bytes than asked), "no_head" (405 to HEAD), "no_ranges" (Range
    ignored: 200 and the whole file)."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.mode = "pass"
        self.delay = 5.0
        self.hits = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{PREFIX}/"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)

        async def start():
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self._session = aiohttp.ClientSession(auto_decompress=False)

        self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        mode = self.mode
        if mode == "500":
            return web.Response(status=500, text="injected\n")
        if mode == "slow":
            await asyncio.sleep(self.delay)
        if mode == "no_head" and request.method == "HEAD":
            return web.Response(status=405, headers={"Allow": "GET"})
        passed = ("if-match", "if-unmodified-since") + (() if mode == "no_ranges" else ("range",))
        headers = {k: v for k, v in request.headers.items() if k.lower() in passed}
        rest = request.rel_url.raw_path
        async with self._session.request(request.method, self.upstream + rest, headers=headers) as r:
            body = await r.read()
            keep = {k: v for k, v in r.headers.items() if k.lower() in ("content-range", "etag", "last-modified",
                                                                       "accept-ranges", "content-type")}
            if mode == "short" and r.status == 206 and len(body) > 1:
                first = int(keep["Content-Range"].split()[1].split("-")[0])
                total = keep["Content-Range"].rsplit("/", 1)[1]
                body = body[: len(body) // 2]
                keep["Content-Range"] = f"bytes {first}-{first + len(body) - 1}/{total}"
            if mode == "truncate" and request.method == "GET" and len(body) > 1:
                response = web.StreamResponse(status=r.status, headers=keep)
                response.content_length = len(body)
                await response.prepare(request)
                await response.write(body[: len(body) // 2])
                request.transport.close()
                return response
            if request.method == "HEAD":
                keep["Content-Length"] = r.headers.get("Content-Length", "0")
                response = web.StreamResponse(status=r.status, headers=keep)
                response.content_length = int(keep["Content-Length"])
                await response.prepare(request)
                return response
            return web.Response(status=r.status, body=body, headers=keep)

    def close(self) -> None:
        async def stop():
            await self._session.close()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


@pytest.fixture
def fault_proxy(origin):
    proxy = FaultProxy(f"http://127.0.0.1:{origin.port}")
    yield proxy
    proxy.close()
