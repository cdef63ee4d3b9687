"""Issue 18's check: hls.js, dash.js and shaka-player with CMCD on play through a real `gateway serve` in headless
Chromium (VOD and live), and ``GET /api/v1/analytics`` then shows each play as exactly one session, with the
rendition it played, the browser, its bytes and, where the test starved the player, a rebuffering event.

Every number is checked against what the page itself saw on the wire (play.mjs ``network``: each request's body
bytes as Chromium received them and the CMCD it carried) and against the manifest (BANDWIDTH / @bandwidth), never
against the gateway's own parser. Each play has a stream of its own (its own copies of the ladder in the store, its
own live stream), so its analytics are its alone.

Why the plays look as they do:
- ``level=1`` (the second lowest rendition) is neither the players' usual start nor their ABR choice on loopback.
- The throttled plays keep a 2 s buffer and have one segment held until playback started + 4 s: the buffer runs dry,
  and hls.js / dash.js flag their next request with ``bs`` (CMCD buffer starvation). shaka-player 5.2 never sends
  ``bs`` (lib/util/cmcd_manager.js builds no such key; it marks rebuffering only with ``su`` and the v2 ``sta=r``),
  so its play is not throttled.
- CMCD goes as the query argument for some plays and as the CMCD-* headers (a CORS preflight) for the others.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET

import m3u8
import pytest

from fixtures.generate import fixture_path
from tests.gateway.processes import Gateway, wait_until
from tests.needs import needs_executable

from .browser_player import fatal_errors, plays_at_once, require_browser
from .conftest import free_port
from .test_live_players import playback_progress

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_executable("ffmpeg")]

TOKEN = "cmcd-analytics-token-0123456789"
LADDER = ("360p", "240p", "180p")
SMALL_BUFFER = {  # seconds of media each player keeps ahead: the held segment then empties the buffer
    "hls": {"maxBufferLength": 2, "maxMaxBufferLength": 3},
    "dash": {"streaming": {"buffer": {"bufferTimeDefault": 2, "bufferTimeAtTopQuality": 2,
                                      "bufferTimeAtTopQualityLongForm": 2}}},
}
BYTES_TOLERANCE = 0.02
NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


@dataclasses.dataclass(frozen=True)
class Play:
    name: str
    kind: str  # play.mjs --kind
    mode: str  # CMCD transmission: query or header
    live: bool = False
    throttle: str | None = None  # a part of the path of the segment to hold

    @property
    def prefix(self) -> str:  # the store's copies of the ladder this play's url set names
        return self.name.replace("-", "")

    def path(self) -> str:
        if self.live:
            return f"/live/live/{self.prefix}/" + ("master.m3u8" if self.kind == "hls" else "manifest.mpd")
        urlset = f"{self.prefix}_,{','.join(LADDER)},.mp4.urlset"
        return f"/hls/{urlset}/master.m3u8" if self.kind == "hls" else f"/dash/{urlset}/manifest.mpd"

    @property
    def folder(self) -> str:  # every request of the play's stream is under it
        return self.path().rsplit("/", 1)[0] + "/"

    @property
    def stream(self) -> str:  # the analytics' stream key (gateway/http/app.py audience_stream, live.py)
        return f"live:live/{self.prefix}" if self.live else f"file:{self.prefix}_,{','.join(LADDER)},.mp4.urlset"


PLAYS = (
    Play("hls-vod", "hls", "query", throttle="/seg-3-"),
    Play("dash-vod", "dash", "header", throttle="/fragment-3-f2-v1"),
    Play("shaka-vod", "shaka", "header"),
    Play("hls-live", "hls", "header", live=True),
    Play("dash-live", "dash", "query", live=True),
)


def admin_get(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/analytics?{query}",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


@pytest.fixture(scope="module")
def plays(tmp_path_factory):
    """Every play of PLAYS (two at a time) against one `gateway serve` with the admin API and RTMP ingest; yields
    (admin port, base URL, {name: (Play, report)})."""
    require_browser()
    root = tmp_path_factory.mktemp("cmcd")
    store = root / "store"
    store.mkdir()
    for play in PLAYS:
        if not play.live:
            for height in LADDER:
                shutil.copyfile(fixture_path(f"title_{height}.mp4"), store / f"{play.prefix}_{height}.mp4")
    admin_port, rtmp_port = free_port(), free_port()
    config = root / "gateway.toml"
    config.write_text(f'store = "{store}"\nadmin_token = "{TOKEN}"\nadmin_port = {admin_port}\n'
                      f"rtmp_port = {rtmp_port}\nsegment_duration_ms = 2000\n"
                      "[rtmp]\nlive_segment_duration_ms = 2000\n[rtmp.default]\nlow_latency = false\n")
    gw = Gateway(root / "gateway.log", "--config", str(config), "--workers", "2")
    try:
        wait_until(lambda: _admin_up(admin_port), "the admin listener")
        with contextlib.ExitStack() as publishers:
            for play in PLAYS:
                if play.live:
                    publishers.enter_context(publishing(store, rtmp_port, play.prefix))
            played = plays_at_once({p.name: _play(gw.base, p) for p in PLAYS})
            reports = {name: future.result() for name, future in played.items()}
            yield admin_port, gw.base, {p.name: (p, reports[p.name]) for p in PLAYS}
    finally:
        gw.stop()


@contextlib.contextmanager
def publishing(store, rtmp_port: int, stream: str):
    """ffmpeg publishes title_360p in a loop to rtmp://.../live/<stream>; returns once the live playlist in the
    store lists 3 segments. Read from the store, not over HTTP: a request of the stream would count in its
    analytics (an extra session)."""
    publisher = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
         "-i", str(fixture_path("title_360p.mp4")), "-c", "copy", "-f", "flv",
         f"rtmp://127.0.0.1:{rtmp_port}/live/{stream}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    playlist = store / "live" / "live" / stream / "index.m3u8"
    try:
        wait_until(lambda: publisher.poll() is not None or (
            playlist.exists() and len(m3u8.loads(playlist.read_text()).segments) >= 3), f"3 segments of {stream}")
        assert publisher.poll() is None, publisher.stderr.read().decode()
        yield
    finally:
        publisher.terminate()
        publisher.wait(10)


def _admin_up(port: int) -> bool:
    try:
        admin_get(port, "top=1")
    except OSError:
        return False
    return True


def _play(base: str, play: Play) -> dict:
    """play_in_browser's arguments for ``play``."""
    sid = f"e2e-{play.name}-{uuid.uuid4().hex[:12]}"
    if play.live:  # never "ok": plays on for the timeout, then the test measures the progress
        return dict(manifest_url=base + play.path(), seconds=1e9, timeout=14, kind=play.kind, cmcd=sid,
                    cmcd_mode=play.mode)
    return dict(manifest_url=base + play.path(), seconds=8 if play.throttle else 5, timeout=45, kind=play.kind,
                cmcd=sid, cmcd_mode=play.mode, level=1, config=SMALL_BUFFER[play.kind] if play.throttle else None,
                throttle=f"{play.throttle}:4000" if play.throttle else None)


def video_bandwidths(base: str, play: Play) -> list[int]:
    """The video renditions' bandwidths (bit/s) as the manifest announces them, lowest first: HLS BANDWIDTH (the
    variant, muxed audio included), DASH the video Representation@bandwidth."""
    body = get(base + play.path())
    if play.kind == "hls":
        return sorted(p.stream_info.bandwidth for p in m3u8.loads(body.decode()).playlists)
    mpd = ET.fromstring(body)
    return sorted(int(r.get("bandwidth")) for s in mpd.iterfind(".//d:AdaptationSet", NS)
                  for r in s.iterfind("d:Representation", NS)
                  if "video" in (s.get("contentType", "") + s.get("mimeType", "") + r.get("mimeType", "")))


def sent(report: dict, play: Play) -> list[dict]:
    """The requests of the play's stream the gateway answered (not blocked at the end, not from Chromium's memory
    cache, not failed before an answer). dash.js's clock requests (UTCTiming /time) are no media request: outside
    the folder."""
    return [r for r in report["network"]["requests"]
            if not r.get("blocked") and not r.get("fromCache") and r.get("status") is not None
            and urllib.parse.unquote(r["path"]).startswith(play.folder)]


@pytest.mark.parametrize("name", [p.name for p in PLAYS])
def test_analytics_match_what_the_player_did(plays, name):
    admin_port, base, results = plays
    play, report = results[name]
    assert not fatal_errors(report), report["errors"]
    if play.live:
        assert playback_progress(report) >= 3.0, report
    else:
        assert report["ok"], report

    # the player really sent CMCD, as configured, on every request
    requests = sent(report, play)
    assert requests, report["network"]
    sid = report["cmcdSessionId"]
    assert all(r["cmcd"] and r["cmcd"]["mode"] == play.mode and r["cmcd"]["values"].get("sid") == sid
               for r in requests), [(r["path"], r["cmcd"]) for r in requests]
    video_br = {r["cmcd"]["values"].get("br") for r in requests if r["cmcd"]["values"].get("ot") in ("v", "av")}
    assert len(video_br) == 1, video_br
    br = video_br.pop()
    # first the analytics: the manifest the test reads below is a request of this stream too (one more session)
    answer = admin_get(admin_port, "stream=" + urllib.parse.quote(play.stream))
    # the rendition it played: the br it sent is the player's own level and the manifest's (forced: the 2nd lowest)
    bandwidths = video_bandwidths(base, play)
    expected = bandwidths[0 if play.live else 1]
    assert abs(br - expected / 1000) <= 1, (br, bandwidths)
    assert abs(br - report["playing"]["bitrate"] / 1000) <= 1, (br, report["playing"])

    assert [s["stream"] for s in answer["streams"]] == [play.stream], answer
    stream = answer["streams"][0]
    totals, minutes = stream["totals"], stream["minutes"]
    print(f"\n{name}: sent br {br}, page bytes {_page_bytes(report, play)}, analytics {json.dumps(totals)}")
    assert totals["sessions"] == 1, stream
    assert all(m["sessions"] == 1 and m["by_player"] == {"Chrome": 1} for m in minutes if m["requests"]), minutes
    renditions = {k for m in minutes for k in m["by_rendition"]}
    assert renditions == {str(br)}, minutes
    page_bytes = _page_bytes(report, play)
    assert abs(totals["bytes"] - page_bytes) <= BYTES_TOLERANCE * page_bytes, (totals, page_bytes)
    assert totals["requests"] == len(requests), (totals, len(requests))
    starved = sum(1 for r in requests if r["cmcd"]["values"].get("bs") is True)
    rebuffer_events = sum(m["rebuffer"]["events"] for m in minutes)
    assert rebuffer_events == starved, (minutes, starved)
    if play.throttle:
        assert report["throttle"]["releasedAt"] is not None, report["throttle"]
        assert rebuffer_events >= 1, (report["throttle"], report["events"])


def _page_bytes(report: dict, play: Play) -> int:
    """The bytes the page received of the play's stream, plus the Content-Length of each answer it gave up on
    mid-body (dash.js abandons a download it finds too slow: a busy machine): the gateway counts what it announced
    (gateway/ops/audience_node.py), and the page saw that announcement."""
    by_path = report["network"]["bytesByPath"]
    received = sum(n for path, n in by_path.items() if urllib.parse.unquote(path).startswith(play.folder))
    return received + sum(r.get("announced", 0) for r in sent(report, play) if r.get("aborted"))


def test_every_play_has_its_own_session_id(plays):
    _, _, results = plays
    sids = [report["cmcdSessionId"] for _, report in results.values()]
    assert len(set(sids)) == len(PLAYS), sids
