"""The deployment pieces (deploy/, Dockerfile): the systemd unit passes `systemd-analyze verify` and the gateway
speaks its readiness protocol to a real notify socket; the image's install step builds a package that serves on its
own; the compose file's commands are ones the CLI accepts and its nginx configuration is the renderer's output.
Building and starting the image needs a Docker engine: run where there is one (skipped, with the reason, where the
machine has only the client)."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from gateway.runtime.cli import _parser
from tests.gateway.processes import HANG_GUARD, Gateway, get, wait_until
from tests.needs import missing

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "gateway.service"


def unit_commands(text: str) -> list[list[str]]:
    return [shlex.split(line.split("=", 1)[1]) for line in text.splitlines()
            if line.startswith(("ExecStart=", "ExecStartPre="))]


def test_the_systemd_unit_verifies_and_runs_commands_the_cli_accepts(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze is not installed")
    text = UNIT.read_text()
    for command in unit_commands(text):
        assert command[0] == "/usr/local/bin/gateway"
        args = _parser().parse_args(command[1:])
        assert args.command == "serve" and args.config == Path("/etc/gateway/gateway.toml")
    assert "Type=notify\n" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text and "KillMode=mixed" in text
    # verify it with this machine's gateway in place of /usr/local/bin/gateway (the install path it documents)
    unit = tmp_path / "gateway.service"
    unit.write_text(text.replace("/usr/local/bin/gateway", shutil.which("gateway") or sys.executable))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr.strip()) == (0, ""), r.stderr  # unknown keys are only warnings: none at all


def test_readiness_reload_and_stop_are_announced_to_systemd(tmp_path, monkeypatch, store):
    """READY=1 once the port serves, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a SIGHUP reload,
    STOPPING=1 on SIGTERM: what `Type=notify` units wait for, read from a real notify socket."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(HANG_GUARD)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    config = tmp_path / "gateway.toml"
    config.write_text(f'store = "{store}"\n')
    gw = Gateway(tmp_path / "gw.log", "--config", str(config), "--workers", "2")
    try:
        ready = sock.recv(4096).decode().split("\n")
        assert ready[0] == "READY=1" and ready[1].startswith(f"STATUS=serving on port {gw.port} with 2 worker(s)")
        assert get(gw.base, "/health")[0] == 200  # announced only once it serves
        gw.send(signal.SIGHUP)
        reloading = sock.recv(4096).decode().split("\n")
        assert reloading[0] == "RELOADING=1" and re.fullmatch(r"MONOTONIC_USEC=\d+", reloading[1])
        assert sock.recv(4096).decode().startswith("READY=1\n")
        gw.send(signal.SIGTERM)
        assert sock.recv(4096).decode().startswith("STOPPING=1\n")
        assert gw.proc.wait(HANG_GUARD) == 0
    finally:
        gw.close()
        sock.close()


def dockerfile() -> list[tuple[str, str]]:
    lines, joined = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        joined += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            instruction, _, rest = joined.strip().partition(" ")
            lines.append((instruction.upper(), rest))
            joined = ""
    return lines


def test_the_dockerfile_is_debian_non_root_and_its_install_serves_on_its_own(tmp_path, store):
    """Its base is Debian, it runs as a non-root user with a health check, its CMD is a command the CLI accepts, and
    its install step (`pip install .` of what it copies) gives a gateway that serves without the repository."""
    steps = dockerfile()
    assert steps[0][0] == "FROM" and "bookworm" in steps[0][1]  # Debian 12
    users = [rest for kind, rest in steps if kind == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [kind for kind, _ in steps][-1] == "CMD" and any(kind == "HEALTHCHECK" for kind, _ in steps)
    command = json.loads(steps[-1][1])
    args = _parser().parse_args(command[1:])
    assert (command[0], args.command, args.host, args.port, args.store) == ("gateway", "serve", "0.0.0.0", 8080,
                                                                             "/media")
    copied = [name for kind, rest in steps if kind == "COPY" for name in rest.split()[:-1]]
    assert all((ROOT / name).exists() for name in copied), copied
    # the install step, outside Docker: only the copied files, built and installed into an empty target
    source = tmp_path / "src"
    source.mkdir()
    for name in copied:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copyfile)(ROOT / name, source / name)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(source)], check=True, timeout=600, cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--port", "0", "--store", str(store)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        base = line.rsplit(" on ", 1)[1].strip().rstrip("/")
        assert get(base, "/hls/title_240p.mp4/master.m3u8")[0] == 200
        assert get(base, "/")[0] == 200  # the status page's static files were installed too
        with urllib.request.urlopen(base + "/static/hls.min.js", timeout=30) as r:
            assert r.status == 200
        imported = subprocess.run([sys.executable, "-c", "import gateway; print(gateway.__file__)"], env=env,
                                  cwd=tmp_path, capture_output=True, text=True, check=True).stdout
        assert imported.startswith(str(target))  # the installed copy, not the repository
    finally:
        proc.terminate()
        proc.wait(HANG_GUARD)


def test_the_compose_file_runs_accepted_commands_and_the_rendered_nginx_config(tmp_path):
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    nodes = [name for name, s in services.items() if s.get("command", [""])[0] == "gateway"]
    assert nodes == ["node1", "node2"]
    for name in nodes:
        args = _parser().parse_args(services[name]["command"][1:])
        assert (args.command, args.port, args.store) == ("serve", 8080, "/media")
        assert services[name]["volumes"] == ["media:/media"]  # one shared volume
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    header = re.search(r"^#   gateway nginx-config (.+)$", conf, re.MULTILINE).group(1)
    rendered = subprocess.run([sys.executable, "-m", "gateway", "nginx-config", *shlex.split(header)],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    assert rendered == conf, "deploy/nginx.conf is stale: re-render it with the command in its header"
    assert "server node1:8080" in conf and "server node2:8080" in conf and "server node2:1935 backup;" in conf
    assert services["nginx"]["volumes"] == ["./nginx.conf:/etc/nginx/gateway.conf:ro"]


def test_the_image_builds_and_serves(tmp_path):
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("no Docker engine here (only the client, or nothing): the build and run are checked where one "
                    "runs; the install step is checked above without Docker")
    tag = f"media-gateway-test:{os.getpid()}"
    subprocess.run([docker, "build", "-t", tag, str(ROOT)], check=True, timeout=1800)
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    host_port = port.getsockname()[1]
    port.close()
    container = subprocess.run([docker, "run", "-d", "-p", f"127.0.0.1:{host_port}:8080", tag], check=True,
                               capture_output=True, text=True).stdout.strip()
    try:
        wait_until(lambda: _health(host_port), "the container's /health", timeout=120)
    finally:
        subprocess.run([docker, "rm", "-f", container], capture_output=True)
        subprocess.run([docker, "rmi", tag], capture_output=True)


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
