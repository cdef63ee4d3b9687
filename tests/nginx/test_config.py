"""`gateway nginx-config`: its output passes `nginx -t`, the shipped example is its output, bad values are refused,
and the hash key nginx computes for each URL form is the entry the gateway's own URL parser sees."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.http.urls import Mp4Download, PlayManifest, Signed, parse_path
from tests.needs import missing

from .conftest import NGINX, STREAM_MODULE, fetch

EXAMPLE = Path(__file__).resolve().parents[2] / "nginx" / "gateway.conf"


def nginx_config_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "nginx-config", *args], capture_output=True, text=True,
                          timeout=60)


def nginx_t(prefix: Path, conf: Path) -> subprocess.CompletedProcess:
    return subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "startup.log")],
                          capture_output=True, text=True, timeout=30)


def test_example_is_the_renderers_output():
    text = EXAMPLE.read_text()
    m = re.search(r"^#   gateway nginx-config (.+)$", text, re.MULTILINE)
    assert m, "the example's header names the command that renders it"
    r = nginx_config_cli(*shlex.split(m.group(1)))
    assert r.returncode == 0, r.stderr
    assert r.stdout == text, "nginx/gateway.conf is stale: re-render it with the command in its header"
    assert text.count("max_fails=2 fail_timeout=5s;") == 3  # three nodes


@pytest.mark.parametrize("variant", [
    ("--rtmp-node", "127.0.0.1:19350", "--rtmp-node", "127.0.0.1:19351"),
    ("--cache-size", "0"),
    ("--listen", "127.0.0.1:8080", "--cache-size", "512m", "--max-fails", "3", "--fail-timeout", "10"),
], ids=["rtmp", "no-cache", "options"])
def test_cli_output_passes_nginx_t(tmp_path, variant):
    if "--rtmp-node" in variant and not STREAM_MODULE.exists():
        missing("libnginx-mod-stream is not installed")
    conf = tmp_path / "nginx.conf"
    r = nginx_config_cli("--node", "127.0.0.1:8081", "--node", "127.0.0.1:8082", "--node", "localhost:8083",
                         "--cache-dir", str(tmp_path / "cache"), "--log-dir", str(tmp_path), "--pid-file",
                         str(tmp_path / "nginx.pid"), "--user", "root", *variant, "-o", str(conf))
    assert r.returncode == 0, r.stderr
    check = nginx_t(tmp_path, conf)
    assert check.returncode == 0, check.stderr
    assert "test is successful" in check.stderr
    text = conf.read_text()
    assert ("stream {" in text) == ("--rtmp-node" in variant)
    assert ("proxy_cache_path" in text) == ("0" not in variant)


def test_nginx_t_catches_a_broken_config(tmp_path):
    """The check above can fail: the same output with one directive broken does not pass."""
    conf = tmp_path / "nginx.conf"
    r = nginx_config_cli("--node", "127.0.0.1:8081", "--cache-dir", str(tmp_path / "c"), "--log-dir", str(tmp_path),
                         "--pid-file", str(tmp_path / "pid"), "--user", "root")
    conf.write_text(r.stdout.replace("proxy_cache_lock on;", "proxy_cache_lock maybe;"))
    assert nginx_t(tmp_path, conf).returncode != 0


@pytest.mark.parametrize("args, message", [
    ((), "required"),
    (("--node", "10.0.0.1:80; include /etc/passwd"), "is not host:port"),
    (("--node", "10.0.0.1"), "is not host:port"),
    (("--node", "10.0.0.1:70000"), "port 1-65535"),
    (("--node", "a:1", "--node", "a:1"), "listed twice"),
    (("--node", "a:1", "--cache-dir", "/tmp/x y"), "without blanks"),
    (("--node", "a:1", "--cache-size", "lots"), "nginx size"),
    (("--node", "a:1", "--listen", "80 default_server"), "listen"),
])
def test_cli_refuses_values_that_would_change_the_config(args, message):
    r = nginx_config_cli(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert r.stdout == ""


def expected_entry(path: str) -> str:
    """The hash key from the gateway's own URL grammar (gateway/http/urls.py), the independent truth for nginx's map."""
    if path.startswith("/live/"):  # live/<app>/<stream>/<file>: the stream (not in gateway/http/urls.py)
        return "/".join(path.split("/")[2:4])
    parsed = parse_path(path)
    if isinstance(parsed, (Signed, PlayManifest)):
        return parsed.entry_id
    if isinstance(parsed, Mp4Download):
        return parsed.path
    return parsed.target.name


URL_FORMS = [
    "/hls/title_360p.mp4/master.m3u8",
    "/hls/title_360p.mp4/index-v1-a1.m3u8",
    "/hls/title_360p.mp4/seg-2-v1-a1.ts",
    "/hls/dir/sub/title_360p.mp4/seg-1-v1-a1.ts",
    "/hls/title_,360p,240p,180p,.mp4.urlset/index-f2-v1-a1.m3u8",
    "/hls/hevc.mp4/init-v1.mp4",
    "/dash/title_360p.mp4/manifest.mpd",
    "/dash/title_,360p,240p,.mp4.urlset/fragment-2-f1-v1.m4s",
    "/mss/title_360p.mp4/manifest",
    "/mss/title_360p.mp4/QualityLevels(900000)/Fragments(video=0)",
    "/mss/dir/title_360p.mp4/QualityLevels(96000)/Fragments(audio_fra=40000000)",
    "/hds/title_360p.mp4/manifest.f4m",
    "/hds/title_360p.mp4/frag-v1-a1-Seg1-Frag2",
    "/mp4/title_360p.mp4",
    "/mp4/dir/title_360p.mp4",
    "/p/201/playManifest/entryId/0_abcd1234/a.m3u8",
    "/p/201/playManifest/format/applehttp/entryId/0_abcd1234/ks/abc.def/a.m3u8",
    "/s/0_abcd1234/1700000000-0123abcd/hls/title_360p.mp4/seg-1-v1-a1.ts",
    "/s/0_abcd1234/1700000000-0123abcd/mss/title_360p.mp4/QualityLevels(900000)/Fragments(video=0)",
    "/live/live/test/index.m3u8",
    "/live/live/test/seg-12.ts",
]


def test_hash_key_is_the_entry_of_every_url_form(lb_nocache, live_pool):
    """nginx logs the key it hashed on ($gateway_entry); it must be the entry gateway/http/urls.py parses from the URL."""
    for path in URL_FORMS:
        fetch(lb_nocache.base + path)  # any status: only the key matters here
    keys: dict[str, str] = {}
    deadline = time.monotonic() + 10
    while len(keys) < len(URL_FORMS) and time.monotonic() < deadline:  # the log line follows the response
        for line in lb_nocache.log_lines():
            m = re.search(r'"GET (\S+) HTTP/1\.1" \d+ \d+ entry="([^"]*)"', line)
            if m:
                keys[m.group(1)] = m.group(2)
        time.sleep(0.05)
    for path in URL_FORMS:
        assert keys.get(path) == expected_entry(path), path
    # one title, four protocols, one key: its parsed moov and plans stay on one node
    assert len({keys[p] for p in URL_FORMS if "/title_360p.mp4/" in p and "/dir/" not in p
                and not p.startswith("/s/")}) == 1
