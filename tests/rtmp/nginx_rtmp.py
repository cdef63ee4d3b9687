"""A real nginx-rtmp-module server for tests: Debian's nginx with libnginx-mod-rtmp, its own config in a temporary
directory, listening on a free loopback port, one process (``master_process off``) killed on teardown.

    with NginxRtmp(tmp_path) as nginx:          # or the ``nginx_rtmp`` fixture
        nginx.url("live", "cam")                # rtmp://127.0.0.1:<port>/live/cam

Applications: ``live`` (nginx defaults: idle_streams on, so a player may wait for a publisher; wait_key on) and
``strict`` (``idle_streams off``: playing an unpublished stream is NetStream.Play.StreamNotFound).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port
from tests.needs import missing

NGINX = "/usr/sbin/nginx"
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"   # package libnginx-mod-rtmp

CONFIG = """\
load_module {module};
master_process off;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{ live on; }}
        application strict {{ live on; idle_streams off; }}
    }}
}}
"""


def skip_without_nginx() -> None:
    """Skip without nginx or its RTMP module (a failure in CI, which installs both)."""
    if not os.path.exists(NGINX) or shutil.which(NGINX) is None:
        missing(f"nginx is not installed ({NGINX}; apt-get install nginx libnginx-mod-rtmp)")
    if not os.path.exists(RTMP_MODULE):
        missing(f"the nginx RTMP module is not installed ({RTMP_MODULE}; apt-get install libnginx-mod-rtmp)")


class NginxRtmp:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = Path(directory)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, app: str = "live", stream: str | None = None) -> str:
        base = f"rtmp://127.0.0.1:{self.port}/{app}"
        return f"{base}/{stream}" if stream else base

    def start(self, timeout: float = 10.0) -> NginxRtmp:
        skip_without_nginx()
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(CONFIG.format(module=RTMP_MODULE, dir=self.dir, port=self.port))
        self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {err}\n{self.error_log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"nginx did not accept on port {self.port} within {timeout} s\n"
                                       f"{self.error_log()}")
                time.sleep(0.05)

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> NginxRtmp:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture
def nginx_rtmp(tmp_path):
    with NginxRtmp(tmp_path / "nginx") as server:
        yield server
