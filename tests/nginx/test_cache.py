"""nginx's cache in front of the pool: VOD segments and manifests are served from it (HIT, and no node sees the
request), concurrent misses collapse into one upstream request, and nothing private is ever stored: signed (/s/)
responses and live playlists reach a node every time. Ground truth: the nodes' /status counters and the bytes a node
serves directly (or the source file for /mp4/)."""
from __future__ import annotations

import threading
import time
from urllib.parse import urljoin

import m3u8

from delivery_profiles.tokens import make_ks
from fixtures.generate import fixture_path
from tests.needs import needs_executable

from .conftest import (SECURE_ENTRY, SECURE_FILE, SECURE_PARTNER, SECURE_SECRET, fetch, hls_urls, player_urls,
                       publishing)


def test_second_fetch_is_a_hit_and_reaches_no_node(lb_cached, live_pool):
    pool, lb = live_pool, lb_cached.base
    direct = pool.nodes[0].base
    paths = [u[len(direct):] for u in hls_urls(direct, "title_240p.mp4")]  # master, playlist, segments
    for path in paths:
        first = fetch(lb + path)
        assert first.status == 200 and first.headers.get("X-Cache-Status") == "MISS", path
        assert first.body == fetch(direct + path).body
        before = pool.lookups()
        second = fetch(lb + path)
        assert second.status == 200
        assert second.headers.get("X-Cache-Status") == "HIT", path
        assert second.body == first.body
        assert second.headers["Cache-Control"] == first.headers["Cache-Control"]  # the node's, kept
        assert pool.lookups() == before, f"{path}: a node saw the cached request"
    # a player's Range on a cached segment is answered from the cached copy
    segment = paths[-1]
    whole = fetch(lb + segment).body
    part = fetch(lb + segment, {"Range": "bytes=100-1099"})
    assert part.status == 206 and part.body == whole[100:1100]
    assert part.headers.get("X-Cache-Status") == "HIT"


def test_concurrent_misses_collapse_into_one_upstream_request(lb_cached, live_pool):
    pool, lb = live_pool, lb_cached.base
    path = "/hls/two_audio.mp4/seg-2-v1-a1.ts"  # not fetched by any other test of this nginx
    expected = fetch(pool.nodes[0].base + path).body
    before = pool.lookups()
    start, bodies = threading.Barrier(8), []

    def client() -> None:
        start.wait(30)
        bodies.append(fetch(lb + path).body)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert bodies == [expected] * 8
    moved = [b - a for a, b in zip(before, pool.lookups())]
    assert sorted(moved) == [0, 0, 1], f"proxy_cache_lock let {sum(moved)} requests through: {moved}"


def test_signed_responses_are_never_stored(lb_cached, live_pool):
    """The gateway marks /s/ responses `private, max-age=<until expiry>`; nginx must not keep any of them."""
    pool, lb = live_pool, lb_cached.base
    ks = make_ks(SECURE_SECRET, SECURE_PARTNER, int(time.time()) + 3600, SECURE_ENTRY)
    decision = fetch(f"{lb}/p/{SECURE_PARTNER}/playManifest/entryId/{SECURE_ENTRY}/ks/{ks}/a.m3u8")
    assert decision.status == 302
    location = decision.headers["Location"]
    assert location.startswith(f"/s/{SECURE_ENTRY}/")
    assert fetch(f"{lb}/hls/{SECURE_FILE}/master.m3u8").status == 403  # unsigned: refused
    urls = player_urls(lb + location)
    assert any(u.endswith(".ts") for u in urls)
    for url in urls * 2:
        before = sum(pool.lookups())
        r = fetch(url)
        assert r.status == 200, url
        assert r.headers["Cache-Control"].startswith("private"), r.headers["Cache-Control"]
        assert r.headers.get("X-Cache-Status") == "MISS", url
        assert sum(pool.lookups()) == before + 1, f"{url} was not answered by a node"


def test_progressive_download_ranges_pass_through_uncached(lb_cached, live_pool):
    source = fixture_path("title_360p.mp4").read_bytes()
    r = fetch(lb_cached.base + "/mp4/title_360p.mp4", {"Range": "bytes=1000-4999"})
    assert r.status == 206 and r.body == source[1000:5000]
    assert "X-Cache-Status" not in r.headers  # this location has no cache
    whole = fetch(lb_cached.base + "/mp4/title_360p.mp4")
    assert whole.status == 200 and whole.body == source


@needs_executable("ffmpeg")
def test_live_playlists_are_never_stored(lb_cached, live_pool, tmp_path):
    pool, lb = live_pool, lb_cached.base
    ingest = pool.nodes[0]
    with publishing(f"rtmp://127.0.0.1:{ingest.rtmp_port}/live/lbcache", fixture_path("title_180p.mp4"),
                    tmp_path / "ffmpeg.log"):
        playlist = None
        deadline = time.monotonic() + 60  # hang guard: the first live segments take a few seconds
        while playlist is None:
            for name in ("index.m3u8", "master.m3u8"):
                if fetch(f"{ingest.base}/live/live/lbcache/{name}").status == 200:
                    playlist = f"/live/live/lbcache/{name}"
            assert time.monotonic() < deadline, (tmp_path / "ffmpeg.log").read_text()
            time.sleep(0.3)
        for _ in range(3):  # the node says max-age=1; nginx must not keep even that second
            r = fetch(lb + playlist)
            assert r.status == 200
            assert r.headers.get("X-Cache-Status") == "BYPASS"  # never looked up, never stored
        media = m3u8.loads(r.body.decode(), uri=lb + playlist)
        if media.is_variant:
            media_url = urljoin(lb + playlist, media.playlists[0].uri)
            media = m3u8.loads(fetch(media_url).body.decode(), uri=media_url)
            assert fetch(media_url).headers.get("X-Cache-Status") == "BYPASS"
        # immutable under its name: cached like a VOD segment. (A low-latency playlist may list parts only at
        # first, and ends with the parts of the segment in progress, which the parser lists as a segment without
        # a URI: the last complete segment, else the newest part.)
        names = [s.uri for s in media.segments if s.uri] or [p.uri for s in media.segments for p in s.parts]
        segment = urljoin(media.base_uri or (lb + playlist), names[-1])
        first, second = fetch(segment), fetch(segment)
        assert first.status == second.status == 200 and first.body == second.body
        assert second.headers.get("X-Cache-Status") == "HIT"
        for mpd in ("manifest.mpd", "index.mpd"):
            r = fetch(f"{lb}/live/live/lbcache/{mpd}")
            if r.status == 200:
                assert r.headers.get("X-Cache-Status") == "BYPASS"
