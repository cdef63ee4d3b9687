"""``--fallback-store`` (issue 16, item 3): a file the primary store does not have is read from the fallback store,
as nginx-vod's ``vod_fallback_upstream_location`` does.

Real parts: `gateway serve` processes, a local directory as the primary, the real nginx of conftest (or another
gateway's /mp4/ endpoint) as the HTTP fallback; its access log tells whether the fallback was asked at all.
"""
from __future__ import annotations

import json
import shutil

import pytest

from fixtures.generate import fixture_path
from gateway.origin.fallback import FallbackStore
from gateway.origin.remote import RemoteStore, make_store
from gateway.runtime.config_file import ConfigError, ConfigSource
from tests.e2e.conftest import free_port
from tests.gateway.processes import get
from tests.origin.s3_server import s3_env, s3_server  # noqa: F401  (fixtures)

SEGMENT = ("--segment-duration", "4")
PRIMARY_FILES = ("title_240p.mp4",)  # the primary's only file (nginx has it too): every other one is fallback-only
URLSET = "title_,240p,180p,.mp4.urlset"  # 240p from the primary, 180p from the fallback
GUARD = {"X-Gateway-Fallback": "1"}


def primary_dir(tmp_path, name: str = "primary", files=PRIMARY_FILES):
    root = tmp_path / name
    root.mkdir()
    for f in files:
        shutil.copyfile(fixture_path(f), root / f)
    return root


def fallback_urls() -> list[str]:
    """Each protocol's manifests and segments of files only on the fallback, a url set mixing both stores, a
    progressive download (whole and ranged below), a clip and a thumbnail."""
    urls = []
    for entry in ("moov_end.mp4", "two_audio.mp4", URLSET):
        urls += [f"/hls/{entry}/master.m3u8", f"/hls/{entry}/index-v1-a1.m3u8", f"/hls/{entry}/seg-2-v1-a1.ts",
                 f"/dash/{entry}/manifest.mpd", f"/dash/{entry}/init-v1.mp4", f"/dash/{entry}/fragment-2-v1.m4s",
                 f"/dash/{entry}/fragment-1-a1.m4s", f"/hds/{entry}/manifest.f4m", f"/mss/{entry}/manifest"]
    urls[urls.index(f"/hls/{URLSET}/index-v1-a1.m3u8")] = f"/hls/{URLSET}/index-f2-v1-a1.m3u8"
    urls[urls.index(f"/hls/{URLSET}/seg-2-v1-a1.ts")] = f"/hls/{URLSET}/seg-2-f2-v1-a1.ts"
    for kind in ("init-v1.mp4", "fragment-2-v1.m4s", "fragment-1-a1.m4s"):
        urls[urls.index(f"/dash/{URLSET}/{kind}")] = f"/dash/{URLSET}/{kind.replace('-v1', '-f2-v1')}"
    urls += ["/mp4/moov_end.mp4", "/mp4/title_180p.mp4/clipFrom/2000/clipTo/9000",
             "/thumb/title_180p.mp4/thumb-3000.jpg", "/hls/title_180p.mp4/seg-1-v1-a1.ts"]
    return urls


def test_a_file_only_on_the_fallback_plays_byte_identical_to_local(origin, gateways, tmp_path):
    local = gateways(*SEGMENT, store=origin.root)  # every file, served from a directory
    gw = gateways(*SEGMENT, "--fallback-store", origin.url, store=primary_dir(tmp_path))
    mark = origin.mark()
    for url in fallback_urls():
        want = get(local.base, url)
        got = get(gw.base, url)
        assert want[0] == 200, (url, want[0], want[2][:200])
        assert (got[0], got[2]) == (200, want[2]), (url, got[0], got[2][:200])
    ranged = {"Range": "bytes=1000-250000"}
    assert get(gw.base, "/mp4/two_audio.mp4", headers=ranged)[::2] == (206, get(local.base, "/mp4/two_audio.mp4",
                                                                                 headers=ranged)[2])
    asked = {line.uri for line in origin.since(mark)}
    assert "/media/moov_end.mp4" in asked and "/media/title_180p.mp4" in asked
    assert "/media/title_240p.mp4" not in asked  # the url set's other file came from the primary
    metrics = get(gw.base, "/metrics")[2].decode()
    hits = [line for line in metrics.splitlines() if line.startswith("gateway_store_fallbacks_total ")]
    assert hits and float(hits[0].split()[1]) >= 3, hits  # moov_end, two_audio, title_180p at least


def test_a_file_on_both_stores_comes_from_the_primary(origin, gateways, tmp_path):
    gw = gateways(*SEGMENT, "--fallback-store", origin.url, store=primary_dir(tmp_path))
    mark = origin.mark()
    for url in ("/hls/title_240p.mp4/master.m3u8", "/hls/title_240p.mp4/seg-1-v1-a1.ts", "/mp4/title_240p.mp4"):
        assert get(gw.base, url)[0] == 200, url
    assert origin.since(mark) == []  # the fallback was never asked


def test_missing_on_both_is_404(origin, gateways, tmp_path):
    gw = gateways(*SEGMENT, "--fallback-store", origin.url, store=primary_dir(tmp_path))
    mark = origin.mark()
    for url in ("/hls/nowhere.mp4/master.m3u8", "/mp4/nowhere.mp4", "/hls/title_,240p,nope,.mp4.urlset/master.m3u8"):
        status, _, data = get(gw.base, url)
        assert status == 404 and b"NOT_FOUND" in data, (url, status, data)
    assert {line.status for line in origin.since(mark)} == {404}  # asked, and it had nothing either


def test_a_local_directory_as_fallback(origin, gateways, tmp_path):
    gw = gateways(*SEGMENT, "--fallback-store", str(origin.root), store=primary_dir(tmp_path))
    local = gateways(*SEGMENT, store=origin.root)
    for url in ("/hls/moov_end.mp4/seg-2-v1-a1.ts", "/mp4/moov_end.mp4", f"/hls/{URLSET}/seg-2-f2-v1-a1.ts"):
        assert get(gw.base, url)[::2] == (200, get(local.base, url)[2]), url
    assert get(gw.base, "/hls/nowhere.mp4/master.m3u8")[0] == 404


def test_fallback_down_keeps_the_primary_serving_and_ready(gateways, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/media/"  # nothing listens there
    gw = gateways(*SEGMENT, "--fallback-store", dead, "--origin-tries", "1", store=primary_dir(tmp_path))
    assert get(gw.base, "/hls/title_240p.mp4/seg-1-v1-a1.ts")[0] == 200
    status, _, data = get(gw.base, "/hls/moov_end.mp4/master.m3u8")
    assert status == 502 and b"ORIGIN_ERROR" in data, (status, data)
    status, _, data = get(gw.base, "/ready")
    body = json.loads(data)
    assert status == 200 and body["ready"] is True, body  # a fallback outage alone never takes the node out
    assert body["fallback"] != "ok" and "unreachable" in body["fallback"], body


def test_a_failing_primary_is_not_retried_on_the_fallback(origin, fault_proxy, gateways, tmp_path):
    """Only "no such file" goes to the fallback: a 5xx primary is that request's 502, never another copy."""
    fault_proxy.mode = "500"
    gw = gateways(*SEGMENT, "--state-dir", str(tmp_path / "state"), "--store", fault_proxy.url,
                  "--fallback-store", origin.url, "--origin-tries", "1")
    mark = origin.mark()
    status, _, data = get(gw.base, "/hls/moov_end.mp4/master.m3u8")
    assert status == 502 and b"ORIGIN_ERROR" in data, (status, data)
    assert [line for line in origin.since(mark) if line.uri.startswith("/media/")] == []


def test_the_loop_guard_header_keeps_the_fallback_out(origin, gateways, tmp_path):
    gw = gateways(*SEGMENT, "--fallback-store", origin.url, store=primary_dir(tmp_path))
    mark = origin.mark()
    for url in ("/hls/moov_end.mp4/master.m3u8", "/mp4/moov_end.mp4"):
        assert get(gw.base, url, headers=GUARD)[0] == 404, url
    assert get(gw.base, "/hls/title_240p.mp4/master.m3u8", headers=GUARD)[0] == 200  # the primary still answers
    assert origin.since(mark) == []
    assert get(gw.base, "/hls/moov_end.mp4/master.m3u8")[0] == 200  # the same request without it falls back


def test_two_gateways_as_each_others_fallback_do_not_loop(gateways, tmp_path):
    """A's fallback is B's /mp4/ endpoint and B's is A's: a file on B plays through A (B's bytes), and a file on
    neither is a prompt 404 — B, asked with the header, never asks A back."""
    port_a, port_b = free_port(), free_port()
    tries = ("--origin-tries", "1", "--origin-timeout", "5")
    a = gateways(*SEGMENT, "--port", str(port_a), "--fallback-store", f"http://127.0.0.1:{port_b}/mp4/", *tries,
                 store=primary_dir(tmp_path, "a"))
    b = gateways(*SEGMENT, "--port", str(port_b), "--fallback-store", f"http://127.0.0.1:{port_a}/mp4/", *tries,
                 store=primary_dir(tmp_path, "b", ("moov_end.mp4",)))
    for url in ("/hls/moov_end.mp4/seg-2-v1-a1.ts", "/dash/moov_end.mp4/fragment-1-a1.m4s", "/mp4/moov_end.mp4"):
        assert get(a.base, url)[::2] == (200, get(b.base, url)[2]), url
    for gw in (a, b):
        status, _, data = get(gw.base, "/hls/nowhere.mp4/master.m3u8")
        assert status == 404 and b"NOT_FOUND" in data, (gw.base, status, data)


def test_an_s3_fallback(s3_env, gateways, tmp_path):
    """The fallback's requests carry the loop-guard header and are still signed (moto checks every signature)."""
    s3_env.put("fallback/only there.mp4", fixture_path("moov_end.mp4"))
    local = gateways(*SEGMENT, store=primary_dir(tmp_path, "local", ("moov_end.mp4",)))
    gw = gateways(*SEGMENT, "--fallback-store", f"s3://{s3_env.bucket}/fallback/", store=primary_dir(tmp_path))
    for url in ("/hls/{}/master.m3u8", "/hls/{}/seg-2-v1-a1.ts", "/dash/{}/fragment-1-a1.m4s", "/mp4/{}"):
        want = get(local.base, url.format("moov_end.mp4"))[2]
        assert get(gw.base, url.format("only%20there.mp4"))[::2] == (200, want), url
    assert get(gw.base, "/hls/title_240p.mp4/seg-1-v1-a1.ts")[0] == 200
    assert get(gw.base, "/hls/nowhere.mp4/master.m3u8")[0] == 404


def test_the_config_file_key_and_its_checks(origin, tmp_path):
    store = primary_dir(tmp_path)
    config = tmp_path / "gateway.toml"
    config.write_text(f'store = "{store}"\nfallback_store = "{origin.url}"\n')
    settings = ConfigSource(config).load().settings
    built = make_store(settings)
    assert isinstance(built, FallbackStore) and isinstance(built.fallback, RemoteStore)
    assert built.fallback.client.extra_headers == GUARD and getattr(built.primary, "client", None) is None
    for bad, message in ((tmp_path / "nowhere", "is not a directory"), ("ftp://host/media", "not a directory or")):
        config.write_text(f'store = "{store}"\nfallback_store = "{bad}"\n')
        with pytest.raises(ConfigError, match=message):
            ConfigSource(config).load()
