"""Delivery rules, playManifest and secured delivery through a real `gateway serve` and the operator CLI.

The catalog is written with `gateway partners ...` / `gateway entries ...` (subprocesses, as an operator would), the
server re-reads it on every request (--catalog-ttl 0), and players are ffmpeg (PyAV) and plain HTTP downloads.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urljoin

import av
import m3u8
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from delivery_profiles.tokens import make_ks, sign_path
from fixtures.generate import fixture_path

from .conftest import start_gateway

LADDER = ("title_360p.mp4", "title_240p.mp4", "title_180p.mp4")
SECRET_103 = "ab" * 32
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Version/17.4 Mobile Safari"
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def fetch(url: str, ua: str = DESKTOP) -> tuple[int, dict, bytes]:
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers={"User-Agent": ua}), timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def gateway_cli(store: Path, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "gateway", *args, "--store", str(store)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("delivery-store")
    for name in (*LADDER, "long_302s.mp4", "two_audio.mp4"):
        shutil.copyfile(fixture_path(name), root / name)
    gateway_cli(root, "partners", "add", "101", "--name", "Defaults")
    gateway_cli(root, "partners", "add", "102", "--name", "Long is HLS")
    gateway_cli(root, "partners", "set-rule", "102", "default_delivery_type", "hls")
    gateway_cli(root, "partners", "add", "103", "--name", "Secure", "--secret", SECRET_103)
    gateway_cli(root, "partners", "set-rule", "103", "secured_default_delivery_type", "hls")
    gateway_cli(root, "partners", "set-profile", "103", "hls", "encryption=aes-128")
    gateway_cli(root, "entries", "add", "0_short001", "--partner", "101", "--name", "short", "--flavor",
                "two_audio.mp4")
    gateway_cli(root, "entries", "add", "0_long0001", "--partner", "102", "--name", "long", "--flavor",
                "long_302s.mp4")
    gateway_cli(root, "entries", "add", "0_secure01", "--partner", "103", "--name", "secured", "--secured",
                *[a for name in LADDER for a in ("--flavor", name)])
    return root


@pytest.fixture(scope="module")
def base(store):
    proc, url = start_gateway(store, store.parent / "delivery.log", "--catalog-ttl", "0")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def clear_base(store, tmp_path_factory):
    """The same files served with an empty catalog: public and unencrypted (the reference for AES-128)."""
    empty = tmp_path_factory.mktemp("empty-catalog")
    # the partner profile segments at 6 s (the system default): the reference must cut the same segments
    proc, url = start_gateway(store, store.parent / "clear.log", "--catalog", str(empty), "--segment-duration", "6")
    yield url
    proc.terminate()
    proc.wait(10)


def play_manifest(base: str, partner: int, entry: str, *extra: str) -> str:
    return f"{base}/p/{partner}/playManifest/entryId/{entry}/" + "".join(f"{e}/" for e in extra) + "a.m3u8"


def test_short_entry_redirects_to_the_mp4_which_downloads(base, store):
    status, headers, _ = fetch(play_manifest(base, 101, "0_short001"))
    assert status == 302 and headers["Location"] == "/mp4/two_audio.mp4"
    assert headers["Cache-Control"] == "no-store"
    status, _, body = fetch(urljoin(base, headers["Location"]))
    assert status == 200 and body == (store / "two_audio.mp4").read_bytes()


def test_long_entry_with_hls_partner_plays_in_pyav(base):
    status, headers, _ = fetch(play_manifest(base, 102, "0_long0001"))
    assert status == 302 and headers["Location"] == "/hls/long_302s.mp4/master.m3u8"
    with av.open(urljoin(base, headers["Location"]), timeout=60) as c:
        frames = sum(1 for _ in c.decode(video=0))
    with av.open(str(fixture_path("long_302s.mp4"))) as c:
        assert frames == c.streams.video[0].frames


def test_decision_as_json(base):
    status, _, body = fetch(play_manifest(base, 102, "0_long0001") + "?responseFormat=json")
    decision = json.loads(body)
    assert status == 200
    assert decision["deliveryType"] == "hls" and decision["format"] == "applehttp"
    assert decision["duration"] > 300 and decision["url"] == "/hls/long_302s.mp4/master.m3u8"
    assert decision["flavors"][0]["width"] == 96 and decision["flavors"][0]["bitrate"] > 0
    assert decision["reason"]


def test_ios_gets_hls_and_explicit_formats(base):
    status, headers, _ = fetch(play_manifest(base, 101, "0_short001"), ua=IPHONE)
    assert status == 302 and headers["Location"] == "/hls/two_audio.mp4/master.m3u8"
    status, headers, _ = fetch(play_manifest(base, 101, "0_short001", "format", "mpegdash"))
    assert status == 302 and headers["Location"] == "/dash/two_audio.mp4/manifest.mpd"
    status, headers, _ = fetch(play_manifest(base, 101, "0_short001", "format", "smooth"))
    assert headers["Location"] == "/mss/two_audio.mp4/manifest"
    assert fetch(urljoin(base, headers["Location"]))[0] == 200


def test_unknown_partner_entry_or_format(base):
    assert fetch(play_manifest(base, 999, "0_short001"))[0] == 404
    assert fetch(play_manifest(base, 101, "0_nothere1"))[0] == 404
    assert fetch(play_manifest(base, 102, "0_short001"))[0] == 404  # another partner's entry
    status, _, body = fetch(play_manifest(base, 101, "0_short001", "format", "flash"))
    assert status == 400 and b"flash" in body


def test_disabled_format_is_400_and_disk_edits_change_the_next_decision(base, store):
    gateway_cli(store, "partners", "set-profile", "101", "hds", "enabled=false")
    status, _, body = fetch(play_manifest(base, 101, "0_short001", "format", "hdnetworkmanifest"))
    assert status == 400 and body.startswith(b"DELIVERY_NOT_ALLOWED: "), body
    gateway_cli(store, "partners", "set-rule", "101", "short_entries_default_delivery_type", "dash")
    status, headers, _ = fetch(play_manifest(base, 101, "0_short001"))
    assert status == 302 and headers["Location"] == "/dash/two_audio.mp4/manifest.mpd"
    gateway_cli(store, "partners", "set-rule", "101", "short_entries_default_delivery_type", "http")
    assert fetch(play_manifest(base, 101, "0_short001"))[1]["Location"] == "/mp4/two_audio.mp4"


def secured_url(base: str) -> str:
    ks = make_ks(SECRET_103, 103, int(time.time()) + 600)
    status, headers, body = fetch(play_manifest(base, 103, "0_secure01", "ks", ks))
    assert status == 302, body
    return urljoin(base, headers["Location"])


def test_secured_entry_needs_a_ks(base):
    status, _, body = fetch(play_manifest(base, 103, "0_secure01"))
    assert status == 403 and b"ks" in body
    wrong = make_ks("cd" * 32, 103, int(time.time()) + 600)
    assert fetch(play_manifest(base, 103, "0_secure01", "ks", wrong))[0] == 403
    expired = make_ks(SECRET_103, 103, int(time.time()) - 10)
    assert fetch(play_manifest(base, 103, "0_secure01", "ks", expired))[0] == 403


def test_secured_entry_plays_with_the_issued_url(base):
    master = secured_url(base)
    assert "/s/0_secure01/" in master and master.endswith("/hls/title_,36,24,18,0p.mp4.urlset/master.m3u8")
    with av.open(master, timeout=60) as c:  # ffmpeg follows relative URIs (keeping the token) and decrypts
        frames = sum(1 for _ in c.decode(video=0))
    assert frames > 100


def test_every_request_without_a_valid_token_is_refused(base):
    master = secured_url(base)
    token_prefix, media = master.split("/hls/", 1)
    playlist_url = urljoin(master, m3u8.loads(fetch(master)[2].decode()).playlists[0].uri)
    playlist = m3u8.loads(fetch(playlist_url)[2].decode())
    segment_url = urljoin(playlist_url, playlist.segments[0].uri)
    key_url = urljoin(playlist_url, playlist.keys[0].uri)
    assert all(fetch(u)[0] == 200 for u in (master, playlist_url, segment_url, key_url))
    expires = int(time.time()) - 5
    expired_prefix = f"{base}/s/0_secure01/{sign_path(SECRET_103, media.rsplit('/', 1)[0], expires)}"
    tampered_prefix = token_prefix[:-3] + ("AAA" if not token_prefix.endswith("AAA") else "BBB")
    for url in (master, playlist_url, segment_url, key_url):
        path = url.split("/hls/", 1)[1]
        for prefix in (base, expired_prefix, tampered_prefix, f"{base}/s/0_short001/{token_prefix.rsplit('/', 1)[1]}"):
            status, headers, body = fetch(f"{prefix}/hls/{path}")
            assert status == 403, (prefix, path, status)
            assert body.startswith(b"ACCESS_DENIED: ") and b"\x47" not in body[:1]
    for mp4 in ("title_180p.mp4",):  # a flavor of the secured entry: secured by every protocol
        assert fetch(f"{base}/mp4/{mp4}")[0] == 403
        assert fetch(f"{base}/dash/{mp4}/manifest.mpd")[0] == 403


def test_aes_128_segments_decrypt_to_the_clear_segment(base, clear_base):
    master = secured_url(base)
    playlist_url = urljoin(master, m3u8.loads(fetch(master)[2].decode()).playlists[0].uri)
    playlist = m3u8.loads(fetch(playlist_url)[2].decode())
    assert playlist.keys[0].method == "AES-128" and playlist.keys[0].iv is None
    key = fetch(urljoin(playlist_url, playlist.keys[0].uri))[2]
    assert len(key) == 16
    clear_playlist = f"{clear_base}/hls/title_,36,24,18,0p.mp4.urlset/" + playlist_url.rsplit("/", 1)[1]
    assert fetch(clear_playlist)[0] == 200
    # no I-frame playlists under AES-128 (a byte range cannot be deciphered alone), as nginx-vod-module
    iframes = playlist_url.rsplit("/", 1)[1].replace("index", "iframes")
    assert "EXT-X-I-FRAME-STREAM-INF" not in fetch(master)[2].decode()
    assert fetch(urljoin(playlist_url, iframes))[0] == 404
    clear_master = fetch(clear_playlist.rsplit("/", 1)[0] + "/master.m3u8")[2].decode()
    assert f'URI="{iframes}"' in clear_master and fetch(urljoin(clear_playlist, iframes))[0] == 200
    for n, segment in enumerate(playlist.segments, start=1):
        encrypted = fetch(urljoin(playlist_url, segment.uri))[2]
        clear = fetch(urljoin(clear_playlist, segment.uri))[2]
        iv = (playlist.media_sequence + n - 1).to_bytes(16, "big")
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        plain = unpadder.update(decryptor.update(encrypted) + decryptor.finalize()) + unpadder.finalize()
        assert encrypted != clear and plain == clear
        with av.open(io.BytesIO(plain), format="mpegts") as c:
            assert sum(1 for _ in c.decode(video=0)) > 0


def test_a_symlink_in_the_store_does_not_open_a_secured_file(base, store):
    alias = store / "alias_of_secured.mp4"
    if not alias.exists():
        alias.symlink_to(store / "title_240p.mp4")
    for url in (f"{base}/mp4/alias_of_secured.mp4", f"{base}/hls/alias_of_secured.mp4/master.m3u8"):
        status, _, body = fetch(url)
        assert status == 403 and body.startswith(b"ACCESS_DENIED: "), (url, status, body)


def test_operator_urls_play(base, store):
    out = gateway_cli(store, "urls", "103", "0_secure01", "--base-url", base)
    urls = dict(line.split(None, 1) for line in out.splitlines()[1:])
    assert set(urls) >= {"url", "applehttp", "mpegdash", "smooth", "hdnetworkmanifest", "playManifest"}
    for name in ("url", "applehttp", "mpegdash", "smooth", "hdnetworkmanifest"):
        status, _, body = fetch(urls[name].strip())
        assert status == 200 and body, (name, status)
    status, headers, _ = fetch(urls["playManifest"].strip())
    assert status == 302 and "/s/0_secure01/" in headers["Location"]


def test_flavor_ids_pick_the_renditions(base, store):
    out = gateway_cli(store, "entries", "show", "0_secure01")
    flavors = [f["id"] for f in json.loads(out)["flavors"]]
    ks = make_ks(SECRET_103, 103, int(time.time()) + 600)
    picked = ",".join(flavors[:2])
    status, _, body = fetch(play_manifest(base, 103, "0_secure01", "flavorIds", picked, "ks", ks) + "?responseFormat=json")
    decision = json.loads(body)
    assert status == 200 and [f["id"] for f in decision["flavors"]] == flavors[:2]
    assert decision["url"].endswith("/hls/title_,36,24,0p.mp4.urlset/master.m3u8")
    assert fetch(play_manifest(base, 103, "0_secure01", "flavorIds", "0_nosuch01", "ks", ks))[0] == 404


def test_play_manifest_and_gateway_urls_name_a_clip(base, store):
    status, headers, _ = fetch(play_manifest(base, 102, "0_long0001", "clipFrom", "2000", "clipTo", "5000"))
    assert status == 302 and headers["Location"] == "/hls/long_302s.mp4/clipFrom/2000/clipTo/5000/master.m3u8"
    with av.open(urljoin(base, headers["Location"]), timeout=60) as c:
        frames = sum(1 for _ in c.decode(video=0))
    assert 36 <= frames <= 36 + 12  # 3 s at 12 fps, and the decode-only frames before clipFrom (GOP of 2 s)
    master = secured_url(base).replace("/master.m3u8", "/clipTo/4000/master.m3u8")  # the token covers the target
    assert fetch(master)[0] == 200
    out = gateway_cli(store, "urls", "102", "0_long0001", "--base-url", base, "--clip-from", "1000", "--clip-to",
                      "3000")
    urls = dict(line.split(None, 1) for line in out.splitlines()[1:])
    assert urls["url"].strip() == f"{base}/mp4/long_302s.mp4/clipFrom/1000/clipTo/3000"
    assert urls["playManifest"].strip().endswith("/entryId/0_long0001/clipFrom/1000/clipTo/3000/a.m3u8")
    for name in ("url", "applehttp", "mpegdash", "playManifest"):
        assert fetch(urls[name].strip())[0] in (200, 302), name
    status, _, body = fetch(play_manifest(base, 102, "0_long0001", "clipFrom", "999999"))
    assert status == 400 and b"clipFrom 999999 ms is at or past the end" in body
    assert fetch(play_manifest(base, 102, "0_long0001", "clipFrom", "x"))[0] == 400
