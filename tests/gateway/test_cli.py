"""The real ``gateway`` console script: serve (as a subprocess, fetched over HTTP), probe, and the bench hook."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import m3u8
import pytest

from fixtures.generate import fixture_path
from gateway.runtime.cli import main

from .conftest import URLSET


def gateway_command() -> list[str]:
    exe = shutil.which("gateway")
    return [exe] if exe else [sys.executable, "-m", "gateway"]


@pytest.fixture
def serve(store, tmp_path):
    """Start ``gateway serve --port 0`` and return its base URL (read from the banner line)."""
    procs = []
    log = tmp_path / "gateway.log"

    def start(*extra: str) -> str:
        cmd = gateway_command() + ["serve", "--store", str(store), "--host", "127.0.0.1", "--port", "0", *extra]
        with open(log, "ab") as stderr:  # a file, not a pipe: the access log must never block the server
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True)
        procs.append(proc)
        line = proc.stdout.readline()
        assert " on http://" in line, (line, log.read_text())
        return line.rsplit(" on ", 1)[1].strip().rstrip("/")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()


def fetch(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_serve_subprocess(serve):
    base = serve("--segment-duration", "4", "--segment-cache-mb", "64")
    status, headers, body = fetch(base + URLSET + "/master.m3u8")
    assert status == 200 and headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert b"index-f1-v1-a1.m3u8" in body
    status, _, playlist = fetch(base + URLSET + "/index-f2-v1-a1.m3u8")
    assert status == 200 and m3u8.loads(playlist.decode()).target_duration == 4  # --segment-duration reached the plan
    status, headers, segment = fetch(base + URLSET + "/seg-1-f2-v1-a1.ts")
    assert status == 200 and segment[:1] == b"\x47" and headers["Access-Control-Allow-Origin"] == "*"
    status, _, part = fetch(base + URLSET + "/seg-1-f2-v1-a1.ts", {"Range": "bytes=-500"})
    assert status == 206 and part == segment[-500:]
    assert fetch(base + "/hls/missing.mp4/master.m3u8")[0] == 404
    status, _, raw = fetch(base + "/status")
    info = json.loads(raw)
    assert info["segment_cache"]["capacity"] == 64 * 1024 * 1024
    assert info["segment_cache"]["hits"] >= 1
    assert info["settings"]["segment_duration_ms"] == 4000


def test_serve_with_cache_disabled(serve):
    base = serve("--segment-cache-mb", "0")
    first = fetch(base + "/hls/title_240p.mp4/seg-1.ts")[2]
    second = fetch(base + "/hls/title_240p.mp4/seg-1.ts")[2]
    assert first == second and first[:1] == b"\x47"
    cache = json.loads(fetch(base + "/status")[2])["segment_cache"]
    assert cache["builds"] == 2 and cache["entries"] == 0 and cache["hits"] == 0


def test_serve_stops_cleanly_on_sigterm(store):
    proc = subprocess.Popen(gateway_command() + ["serve", "--store", str(store), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert " on http://" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_serve_refuses_a_missing_store(tmp_path):
    result = subprocess.run(gateway_command() + ["serve", "--store", str(tmp_path / "nope"), "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not a directory" in result.stderr


def test_probe_prints_tracks_and_plan(capsys):
    assert main(["probe", str(fixture_path("two_audio.mp4"))]) == 0
    out = capsys.readouterr().out
    assert "avc1." in out and "mp4a.40.2" in out and "320x180" in out and "44100 Hz, 2 ch" in out
    assert "eng" in out and "fra" in out
    assert "segment plan: 2 segments" in out
    table = [line for line in out.splitlines() if line.startswith(" 1  video")]
    assert table, out


def test_probe_json_agrees_with_pyav(capsys):
    """`probe --json`: the tracks as PyAV (an independent demuxer) sees them, and a plan that covers the file."""
    import json

    import av

    path = fixture_path("two_audio.mp4")
    assert main(["probe", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    with av.open(str(path)) as container:
        streams = [(s.type, s.codec_context.name, s.language or "und") for s in container.streams]
        video = container.streams.video[0]
        size = (video.codec_context.width, video.codec_context.height)
    assert [(t["kind"], t["codec"].split(".")[0], t["language"]) for t in doc["tracks"]] == \
        [(kind, {"h264": "avc1", "aac": "mp4a"}[codec], language) for kind, codec, language in streams]
    assert (doc["tracks"][0]["width"], doc["tracks"][0]["height"]) == size
    assert doc["segments"][0]["start"] == 0
    assert abs(sum(s["duration"] for s in doc["segments"]) - doc["duration"]) < 0.01


def test_probe_subprocess_and_errors(tmp_path):
    result = subprocess.run(gateway_command() + ["probe", str(fixture_path("audio_only.mp4")), "--segment-duration", "3"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "audio" in result.stdout and "segment plan:" in result.stdout
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    result = subprocess.run(gateway_command() + ["probe", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.startswith("gateway probe: BAD_DATA: ")
    assert result.stderr.count("\n") == 1


def test_bench_hook_is_lazy(monkeypatch, capsys):
    import types

    calls = []
    fake = types.ModuleType("gateway.tools.bench")
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "gateway.tools.bench", fake)
    import gateway.tools

    monkeypatch.setattr(gateway.tools, "bench", fake, raising=False)
    assert main(["bench", "--quick", "x"]) == 0
    assert calls == [["--quick", "x"]]


def test_python_dash_m_gateway_version():
    result = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("gateway ")


def test_demo_banner_lists_playable_urls(monkeypatch, tmp_path, capsys):
    """`gateway demo` fills ./media once and prints URLs; the server loop itself is stubbed out here."""
    from gateway.runtime import serve as serve_module  # (`gateway demo` imports it when it runs)

    monkeypatch.chdir(tmp_path)
    seen = {}

    def fake_serve(settings, on_listening):
        seen["settings"] = settings
        on_listening("http://127.0.0.1:8080")

    monkeypatch.setattr(serve_module, "serve", fake_serve)
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8080/hls/title_,360p,240p,180p,.mp4.urlset/master.m3u8" in out
    assert seen["settings"].port == 8080
    assert (tmp_path / "media" / "title_360p.mp4").exists()
    mtime = (tmp_path / "media" / "title_360p.mp4").stat().st_mtime_ns
    time.sleep(0.01)
    assert main(["demo"]) == 0
    assert (tmp_path / "media" / "title_360p.mp4").stat().st_mtime_ns == mtime  # not regenerated


def test_demo_without_pyav_says_which_extra_to_install(tmp_path):
    """PyAV is imported only where it is used (thumbnails, sample media): `gateway demo` without it names the
    install command instead of failing on an import."""
    code = (
        "import sys\n"
        "class NoAv:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'av' or name.startswith('av.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'av'\", name='av')\n"
        "sys.meta_path.insert(0, NoAv())\n"
        "from gateway.runtime.cli import main\n"
        f"sys.exit(main(['demo', '--store', {str(tmp_path / 'media')!r}, '--port', '0']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install -e '.[demo]'" in done.stderr


def test_demo_says_first_run_once_and_prints_playable_urls(tmp_path):
    """`gateway demo`: the first run makes the sample media (and says so), a second one does not; every URL of its
    banner plays (200) on the server it started."""
    store = tmp_path / "media"
    for run in (1, 2):
        proc = subprocess.Popen(gateway_command() + ["demo", "--store", str(store), "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            lines = []
            while not lines or not lines[-1].startswith("above with `ffplay URL`"):
                line = proc.stdout.readline()
                assert line, lines
                lines.append(line.strip())
            assert any("first run only" in line for line in lines) == (run == 1), lines
            urls = [line.split()[-1] for line in lines if line.split() and line.split()[-1].startswith("http://")]
            assert len(urls) >= 10
            for url in urls:
                with urllib.request.urlopen(url, timeout=60) as r:
                    assert r.status == 200, url
        finally:
            proc.terminate()
            proc.wait(60)
