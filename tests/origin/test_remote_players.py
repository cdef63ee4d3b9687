"""Players in Chromium play from remote stores (issue 16, "how it is checked"): a real `gateway serve` in front of a
real nginx origin (`--store http://...`) and of moto's S3 server (`--store s3://...`) feeds hls.js (MPEG-TS and
fMP4 segments), dash.js and a plain <video> (the progressive `/mp4/` download, read by Chromium with Range requests)
through the same browser harness as the local-store player tests (tests/e2e/browser_player.py).

Each play is one browser session (a Chromium of its own, ~6 s here): a quick run (-m "not slow") plays two per
store kind, together every player once; the full run plays every player from both stores."""
from __future__ import annotations

import os

import pytest

from fixtures.generate import fixture_path
from tests.e2e.browser_player import fatal_errors, play_in_browser, require_browser
from tests.gateway.processes import Gateway
from tests.origin.s3_server import s3_server  # noqa: F401  (a fixture: moto's S3 server, signatures enforced)

URLSET = "title_,240p,180p,.mp4.urlset"
S3_PREFIX = "players"
S3_FILES = ("title_180p.mp4", "title_240p.mp4", "moov_end.mp4", "title_360p.mp4")
# (player kind, what it plays, which gateway: "ts" = --hls-container ts, "fmp4" = --hls-container fmp4)
PLAYS = {
    "hls.js-ts": ("hls", f"/hls/{URLSET}/master.m3u8", "ts"),
    "hls.js-fmp4": ("hls", "/hls/moov_end.mp4/master.m3u8", "fmp4"),  # its moov is read from the file's tail
    "dash.js": ("dash", f"/dash/{URLSET}/manifest.mpd", "fmp4"),
    "video-mp4": ("native", "/mp4/title_360p.mp4", "ts"),  # 1.5 MB: more than one ranged GET to the origin
}


class Gateways:
    """The gateways of one remote store, started on first use: HLS with MPEG-TS segments ("ts") or fMP4 ("fmp4")."""

    def __init__(self, tmp_path, store: str, env: dict[str, str] | None = None):
        self.tmp_path, self.store, self.env = tmp_path, store, env
        self.started: dict[str, Gateway] = {}

    def base(self, container: str) -> str:
        if container not in self.started:
            with pytest.MonkeyPatch.context() as patch:  # the process's environment (S3: the server's keys only)
                if self.env is not None:
                    for name in [k for k in os.environ if k.startswith("AWS_")]:
                        patch.delenv(name)
                    for name, value in self.env.items():
                        patch.setenv(name, value)
                self.started[container] = Gateway(
                    self.tmp_path / f"gateway-{container}.log", "--segment-duration", "4", "--hls-container",
                    container, "--state-dir", str(self.tmp_path / f"state-{container}"), "--store", self.store)
        return self.started[container].base

    def close(self) -> None:
        for gw in self.started.values():
            gw.close()


@pytest.fixture(scope="module")
def http_gateways(origin, tmp_path_factory):
    gateways = Gateways(tmp_path_factory.mktemp("http-players"), origin.url)
    yield gateways
    gateways.close()


@pytest.fixture(scope="module")
def s3_gateways(s3_server, tmp_path_factory):  # noqa: F811
    for name in S3_FILES:
        s3_server.put(f"{S3_PREFIX}/{name}", fixture_path(name))
    gateways = Gateways(tmp_path_factory.mktemp("s3-players"), f"s3://{s3_server.bucket}/{S3_PREFIX}/",
                        s3_server.env())
    yield gateways
    gateways.close()


def check_plays(gateways: Gateways, play: str) -> None:
    require_browser()
    kind, path, container = PLAYS[play]
    report = play_in_browser(gateways.base(container) + path, kind=kind, seconds=3.0, timeout=60)
    assert report["ok"], (report["reason"], fatal_errors(report)[:3], report)
    assert report["currentTime"] >= 3.0 and not fatal_errors(report), report
    assert report["totalVideoFrames"] >= 48 and report["videoWidth"] > 0, report  # pictures, not only a clock
    if kind == "native":
        assert report["duration"] and report["duration"] > 7.5, report  # the whole file's moov: 8 s or longer


def plays(lean: tuple[str, ...]) -> list:
    """Every player on this store; those not in ``lean`` are marked slow (each player plays from one store kind in
    a quick run, and from both in a full one: the stores' bytes are compared byte for byte elsewhere)."""
    return [pytest.param(p, marks=() if p in lean else pytest.mark.slow) for p in sorted(PLAYS)]


@pytest.mark.browser
@pytest.mark.parametrize("play", plays(lean=("hls.js-ts", "video-mp4")))
def test_players_play_from_an_http_origin(origin, http_gateways, play):
    mark = origin.mark()
    check_plays(http_gateways, play)
    if play == "video-mp4":  # the download was streamed from the origin in ranged GETs of REMOTE_PIECE bytes
        origin.mark()  # until the last lines are written
        ranged = [line for line in origin.since(mark)
                  if line.uri.endswith("/title_360p.mp4") and line.method == "GET" and line.range]
        assert len(ranged) >= 2 and all(line.status == 206 for line in ranged), ranged


@pytest.mark.browser
@pytest.mark.parametrize("play", plays(lean=("hls.js-fmp4", "dash.js")))
def test_players_play_from_an_s3_store(s3_gateways, play):
    check_plays(s3_gateways, play)
