"""DRM in real browser players (issue 14): ClearKey-protected DASH (cenc, cbcs) and HLS (fMP4 cbcs, MPEG-TS
SAMPLE-AES) from a real `gateway serve`, played by dash.js, shaka-player and hls.js in headless Chromium.

Keys are derived from the partner secret (no DRM service), so the gateway itself answers the W3C ClearKey license
requests at ``/s/<entry>/<token>/clearkey`` (the URL `gateway urls` prints) and the HLS identity key URIs. Each
playing test proves: frames presented, no fatal error, the CDM's keys usable, the gateway's license endpoint (or key
URI) answered the browser, and the picture on screen is the source's frame at that time (so decryption is right, not
merely "something decoded"). Negative controls (no license server, a tampered license token) show the same stream
does not play without the gateway's keys.

What plays in this Chromium (a finding for the issue): DASH cenc in dash.js and shaka; DASH cbcs in dash.js and
shaka; HLS-fMP4 cbcs and cenc (SAMPLE-AES, SAMPLE-AES-CTR) with an identity key in shaka (its HLS parser turns it
into ClearKey); HLS-TS SAMPLE-AES in hls.js (it decrypts in JavaScript). What does not, asserted precisely below:
HLS-TS SAMPLE-AES in shaka (4040, HLS_MSE_ENCRYPTED_MP2T_NOT_SUPPORTED) and HLS-fMP4 cbcs identity in hls.js (no
EME session: a stall at 0).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import av
import numpy as np
import pytest

from fixtures.generate import fixture_path

from .browser_player import fatal_errors, play_in_browser, require_browser
from .conftest import start_gateway
from .http import get, media_playlists

# 201: dash cenc + hls sample-aes (TS); 202: dash cbcs + hls cbcs (fMP4); 203: hls cenc (fMP4, SAMPLE-AES-CTR)
CENC_PARTNER, CBCS_PARTNER, CTR_PARTNER = "201", "202", "203"
LADDER = ("360p", "240p", "180p")
BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def gateway_cli(store: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "gateway", *args, "--store", str(store)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def delivery_urls(store: Path, partner: str, entry: str, base: str) -> dict[str, str]:
    """`gateway urls` as {format: url}: the table's first column is the format, its last the URL."""
    out = gateway_cli(store, "urls", partner, entry, "--base-url", base)
    rows = [line.rsplit(None, 1) for line in out.splitlines()[1:] if line.strip()]
    return {fmt.strip(): url for fmt, url in rows}


@pytest.fixture(scope="module")
def drm(tmp_path_factory):
    """One store and one `gateway serve` (JSON access log) for the module; partners set up with the CLI."""
    store = tmp_path_factory.mktemp("drm-store")
    for rung in LADDER:
        shutil.copyfile(fixture_path(f"title_{rung}.mp4"), store / f"cenc_{rung}.mp4")
    # copies, not hardlinks: a file obeys the rules of every partner whose entry names it
    shutil.copyfile(fixture_path("title_180p.mp4"), store / "cbcs_180p.mp4")
    shutil.copyfile(fixture_path("title_180p.mp4"), store / "ctr_180p.mp4")
    gateway_cli(store, "partners", "add", CENC_PARTNER, "--name", "DRM cenc")
    gateway_cli(store, "partners", "set-profile", CENC_PARTNER, "dash", "encryption=cenc")
    gateway_cli(store, "partners", "set-profile", CENC_PARTNER, "hls", "encryption=sample-aes")
    gateway_cli(store, "entries", "add", "0_drmcenc1", "--partner", CENC_PARTNER, "--name", "cenc ladder",
                *[a for rung in LADDER for a in ("--flavor", f"cenc_{rung}.mp4")])
    gateway_cli(store, "partners", "add", CBCS_PARTNER, "--name", "DRM cbcs")
    gateway_cli(store, "partners", "set-profile", CBCS_PARTNER, "dash", "encryption=cbcs")
    gateway_cli(store, "partners", "set-profile", CBCS_PARTNER, "hls", "encryption=cbcs")
    gateway_cli(store, "entries", "add", "0_drmcbcs1", "--partner", CBCS_PARTNER, "--name", "cbcs",
                "--flavor", "cbcs_180p.mp4")
    gateway_cli(store, "partners", "add", CTR_PARTNER, "--name", "DRM hls cenc")
    gateway_cli(store, "partners", "set-profile", CTR_PARTNER, "hls", "encryption=cenc")
    gateway_cli(store, "entries", "add", "0_drmctr01", "--partner", CTR_PARTNER, "--name", "ctr",
                "--flavor", "ctr_180p.mp4")
    log = store.parent / "drm-gateway.log"
    proc, base = start_gateway(store, log, "--access-log-format", "json")
    try:
        yield {
            "base": base,
            "log": log,
            "cenc": delivery_urls(store, CENC_PARTNER, "0_drmcenc1", base),
            "cbcs": delivery_urls(store, CBCS_PARTNER, "0_drmcbcs1", base),
            "ctr": delivery_urls(store, CTR_PARTNER, "0_drmctr01", base),
        }
    finally:
        proc.terminate()
        proc.wait(10)


def from_play_manifest(base: str, partner: str, entry: str, fmt: str) -> tuple[str, str]:
    """(manifest URL, ClearKey license URL) as a player integration gets them: playManifest's JSON decision."""
    body = json.loads(get(f"{base}/p/{partner}/playManifest/entryId/{entry}/format/{fmt}/a?responseFormat=json"))
    return base + body["url"], base + body["drm"]["licenseUrl"]


def play_logged(log: Path, url: str, **kwargs) -> tuple[dict, list[dict]]:
    """Play ``url``; returns the report and the gateway's access-log records of the requests made meanwhile."""
    start = log.stat().st_size
    report = play_in_browser(url, **kwargs)
    with open(log, "rb") as f:
        f.seek(start)
        lines = f.read().decode(errors="replace").splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return report, [r for r in records if "logger" not in r]  # server lines are JSON too: only access records


def requests_to(records: list[dict], path: str, method: str) -> list[int]:
    """Statuses of the logged requests ``method path``."""
    return [r["status"] for r in records if r["method"] == method and r["path"] == path]


def luma_grid(rgb: np.ndarray, rows: int = 18, cols: int = 32) -> np.ndarray:
    """Mean luma over a rows x cols grid of equal areas: compares pictures of different sizes (screen vs source)."""
    luma = rgb.astype(np.float32) @ BT601
    r = np.linspace(0, luma.shape[0], rows + 1).astype(int)[:-1]
    c = np.linspace(0, luma.shape[1], cols + 1).astype(int)[:-1]
    sums = np.add.reduceat(np.add.reduceat(luma, r, axis=0), c, axis=1)
    counts = np.outer(np.diff(np.append(r, luma.shape[0])), np.diff(np.append(c, luma.shape[1])))
    return sums / counts


def assert_shows_source(report: dict, source: str) -> None:
    """The screenshot is not blank and is the source's picture near the paused time: its luma grid correlates
    >= 0.95 with one source frame within 0.25 s (neighbouring frames of this moving pattern reach ~0.9, frames
    2 s away ~0.5; a black or undecrypted picture has no variance at all)."""
    stats = report["pictureStats"]
    assert stats and stats["lumaVariance"] > 100 and stats["nonBlackFraction"] > 0.5, stats
    shot = luma_grid(report["picture"])
    t = report["screenshotTime"]
    best = -1.0
    with av.open(str(fixture_path(source))) as c:
        for frame in c.decode(video=0):
            if frame.time > t + 0.25:
                break
            if frame.time >= t - 0.25:
                best = max(best, float(np.corrcoef(luma_grid(frame.to_ndarray(format="rgb24")).ravel(),
                                                   shot.ravel())[0, 1]))
    assert best >= 0.95, (best, t, stats)


def assert_played(report: dict) -> None:
    assert report["ok"], {k: report.get(k) for k in ("reason", "errors", "drm", "events", "console")}
    assert not fatal_errors(report), report["errors"]
    assert report["totalVideoFrames"] >= 48, report


def assert_clearkey_used(report: dict, scheme: str | None) -> None:
    """The CDM is ClearKey, one license exchange happened and every key it holds is usable."""
    d = report["drm"]
    assert d["keySystem"] == "org.w3.clearkey" and d["encrypted"] > 0 and d["messages"] >= 1, d
    assert d["keyStatuses"] and set(d["keyStatuses"]) == {"usable"}, d
    if scheme:  # shaka names the scheme it needs when it asks for the key system
        assert {"keySystem": "org.w3.clearkey", "schemes": [scheme], "granted": True} in d["keySystemRequests"], d


def license_path(url: str) -> str:
    return urlsplit(url).path


@pytest.mark.browser
@pytest.mark.parametrize("kind, urls_from", [("dash", "gateway urls"), ("shaka", "playManifest")])
def test_dash_cenc_plays_through_the_gateway_clearkey_license(drm, kind, urls_from):
    """dash.js (setProtectionData) and shaka (drm.servers) play the cenc ladder, with the URLs `gateway urls` prints
    or playManifest's JSON gives: their license requests are POSTs that the gateway's ClearKey endpoint answers
    200, and the screen shows the source's picture."""
    require_browser()
    if urls_from == "playManifest":
        mpd_url, license_url = from_play_manifest(drm["base"], CENC_PARTNER, "0_drmcenc1", "mpegdash")
    else:
        mpd_url, license_url = drm["cenc"]["mpegdash"], drm["cenc"]["clearkey license"]
    mpd = get(mpd_url).decode()
    assert 'value="cenc"' in mpd and "urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e" in mpd, mpd
    report, log = play_logged(drm["log"], mpd_url, kind=kind, seconds=3.0, timeout=60,
                              drm={"clearkey": license_url}, picture=True)
    assert_played(report)
    assert_clearkey_used(report, "cenc" if kind == "shaka" else None)
    statuses = requests_to(log, license_path(license_url), "POST")
    assert statuses and set(statuses) == {200}, statuses
    assert_shows_source(report, f"title_{report['videoHeight']}p.mp4")


@pytest.mark.browser
@pytest.mark.parametrize("scheme, kind, fmt", [("cbcs", "shaka", "mpegdash"), ("cbcs", "dash", "mpegdash"),
                                               ("cbcs", "shaka", "applehttp"), ("ctr", "shaka", "applehttp")])
def test_cbcs_and_hls_fmp4_play_where_chromium_clearkey_allows(drm, scheme, kind, fmt):
    """cbcs (AES-CBC 1:9 pattern, constant IV) plays with Chromium's ClearKey CDM: DASH in shaka and dash.js via the
    gateway's license endpoint, and HLS-fMP4 (``METHOD=SAMPLE-AES,KEYFORMAT="identity"``) in shaka, whose HLS parser
    fetches the key URI, reads the key id from the init segment's ``tenc`` and hands ClearKey a local license; so
    does HLS-fMP4 cenc (``METHOD=SAMPLE-AES-CTR``)."""
    require_browser()
    urls = drm[scheme]
    if fmt == "mpegdash":
        assert 'value="cbcs"' in get(urls[fmt]).decode()
    else:
        method = {"cbcs": "SAMPLE-AES", "ctr": "SAMPLE-AES-CTR"}[scheme]
        assert f"#EXT-X-KEY:METHOD={method},URI=" in get(media_playlists(urls[fmt])[0]).decode()
    options = {"drm": {"clearkey": urls["clearkey license"]}} if fmt == "mpegdash" else {}
    report, log = play_logged(drm["log"], urls[fmt], kind=kind, seconds=3.0, timeout=60, picture=True, **options)
    assert_played(report)
    assert_clearkey_used(report, {"cbcs": "cbcs", "ctr": "cenc"}[scheme] if kind == "shaka" else None)
    if fmt == "mpegdash":
        statuses = requests_to(log, license_path(urls["clearkey license"]), "POST")
        assert statuses and set(statuses) == {200}, statuses
    else:
        keys = [r["status"] for r in log if r["method"] == "GET" and r["path"].endswith(".key")]
        assert keys and set(keys) == {200}, keys
    assert_shows_source(report, "title_180p.mp4")


@pytest.mark.browser
def test_hls_fmp4_cbcs_identity_does_not_play_in_hls_js(drm):
    """Failure mode, asserted so a change is noticed: hls.js takes ``METHOD=SAMPLE-AES,KEYFORMAT="identity"`` for
    the MPEG-TS kind it decrypts in JavaScript: it fetches the key URI (200) but appends the fMP4 samples still
    encrypted to MSE and opens no EME session (EME is for the org.w3.clearkey/Widevine/PlayReady/FairPlay key
    formats only), so Chromium fires ``encrypted`` events, waits for a key forever and no frame is presented: a
    stall at 0 without a fatal error, even with emeEnabled and a ClearKey license server configured."""
    require_browser()
    urls = drm["cbcs"]
    report, log = play_logged(drm["log"], urls["applehttp"], kind="hls", seconds=3.0, timeout=15,
                              drm={"clearkey": urls["clearkey license"]})
    assert not report["ok"] and report["reason"].startswith("timed out"), report["reason"]
    assert report["totalVideoFrames"] == 0 and report["currentTime"] == 0, report
    assert not fatal_errors(report), report["errors"]
    d = report["drm"]
    assert d["encrypted"] > 0 and d["sessions"] == 0 and d["messages"] == 0, d
    keys = [r["status"] for r in log if r["method"] == "GET" and r["path"].endswith(".key")]
    assert keys and set(keys) == {200}, keys
    assert not [r for r in log if r["path"].endswith("/clearkey")], log


@pytest.mark.browser
def test_hls_ts_sample_aes_plays_in_hls_js(drm):
    """hls.js decrypts MPEG-TS SAMPLE-AES itself (identity key fetched from the key URI): frames presented, the
    source's picture on screen. The playlist really is SAMPLE-AES TS, and no EME is involved."""
    require_browser()
    urls = drm["cenc"]
    media = get(media_playlists(urls["applehttp"])[0]).decode()
    assert "#EXT-X-KEY:METHOD=SAMPLE-AES," in media and 'KEYFORMAT="identity"' in media and ".ts" in media, media
    report, log = play_logged(drm["log"], urls["applehttp"], kind="hls", seconds=3.0, timeout=60, picture=True)
    assert_played(report)
    assert report["drm"]["sessions"] == 0, report["drm"]
    keys = [r["status"] for r in log if r["method"] == "GET" and r["path"].endswith(".key")]
    assert keys and set(keys) == {200}, keys
    assert_shows_source(report, f"title_{report['videoHeight']}p.mp4")


@pytest.mark.browser
def test_hls_ts_sample_aes_is_refused_by_shaka(drm):
    """Failure mode: shaka plays HLS through MSE/EME only and refuses encrypted MPEG-TS at load, error 4040
    (HLS_MSE_ENCRYPTED_MP2T_NOT_SUPPORTED), once a media playlist shows the key applies to TS segments (it has
    fetched the master's EXT-X-SESSION-KEY key by then, taking it for an fMP4 identity key)."""
    require_browser()
    report = play_in_browser(drm["cenc"]["applehttp"], kind="shaka", seconds=3.0, timeout=30)
    assert [(e["source"], e["details"]) for e in fatal_errors(report)] == [("shaka", "code 4040")], report["errors"]
    assert report["totalVideoFrames"] == 0 and report["drm"]["sessions"] == 0, report


@pytest.mark.browser
@pytest.mark.parametrize("kind, code", [("dash", "code 111"), ("shaka", "code 6012")])
def test_dash_cenc_without_license_server_does_not_play(drm, kind, code):
    """Negative control: the same cenc stream with no license server given. dash.js: 111 "No license server URL
    specified"; shaka: 6012 NO_LICENSE_SERVER_GIVEN. No frame, no license request."""
    require_browser()
    urls = drm["cenc"]
    report, log = play_logged(drm["log"], urls["mpegdash"], kind=kind, seconds=3.0, timeout=30, picture=True)
    assert not report["ok"] and code in [e["details"] for e in fatal_errors(report)], report["errors"]
    assert report["totalVideoFrames"] == 0, report
    assert report["pictureStats"] is None or report["pictureStats"]["lumaVariance"] == 0, report["pictureStats"]
    assert not [r for r in log if r["path"].endswith("/clearkey")], log


@pytest.mark.browser
@pytest.mark.parametrize("kind, code", [("dash", "code 114"), ("shaka", "code 6007")])
def test_dash_cenc_with_tampered_license_token_does_not_play(drm, kind, code):
    """Negative control: a license URL whose token has one signature character changed. The gateway answers 403 to
    every license POST (dash.js retries), dash.js fails with 114 (licenser error, 403), shaka with 6007
    LICENSE_REQUEST_FAILED carrying the 403; no frame is presented."""
    require_browser()
    urls = drm["cenc"]
    good = urls["clearkey license"]
    prefix, token, tail = good.rsplit("/", 2)
    i = token.index("-") + 1  # the first character of the signature (all 6 bits count, unlike the last one's)
    tampered = f"{prefix}/{token[:i]}{'A' if token[i] != 'A' else 'B'}{token[i + 1:]}/{tail}"
    report, log = play_logged(drm["log"], urls["mpegdash"], kind=kind, seconds=3.0, timeout=30,
                              drm={"clearkey": tampered}, picture=True)
    errors = fatal_errors(report)
    assert not report["ok"] and code in [e["details"] for e in errors], report["errors"]
    assert any("403" in e.get("message", "") for e in errors), errors
    assert report["totalVideoFrames"] == 0, report
    assert report["pictureStats"] is None or report["pictureStats"]["lumaVariance"] == 0, report["pictureStats"]
    statuses = requests_to(log, license_path(tampered), "POST")
    assert statuses and set(statuses) == {403}, statuses
    assert not requests_to(log, license_path(good), "POST"), log
