"""The HTTP origin store (issue 16, part 1): a real `gateway serve --store http://...` in front of a real nginx.

Every protocol's bytes equal the local store's for the same files; a segment costs only its own ranges (the moov is
read once); concurrent misses share origin requests; origin faults give 502/504 (or a retried 503 FILE_CHANGED) and
never a corrupt or mixed segment. Faults nginx cannot produce on demand go through FaultProxy (conftest: a real
aiohttp server in front of the same nginx).
"""
from __future__ import annotations

import asyncio
import http.client
import re
import shutil
import time
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from delivery_profiles.tokens import sign_path
from fixtures.generate import fixture_path
from gateway.catalog.catalog import Partner, catalog_dir, parse_entry, write_entry, write_partner
from gateway.origin.origin_client import OriginClient, OriginError, OriginOptions
from gateway.origin.cache import Caches
from gateway.origin.packaging import Packaging, parse_presentation
from gateway.http.download import REMOTE_PIECE
from gateway.http.products import Scatter, build_segment
from gateway.origin import remote as remote_module
from gateway.origin.prefetch import Prefetch
from gateway.origin.remote import RemoteStore
from gateway.origin.store import Store, WouldBlock
from gateway.runtime.cli import _parser, flag_overrides
from gateway.runtime.config_file import ConfigSource
from gateway.settings import Settings
from packagers.errors import PackagerError
from packagers.media_data import plan_reads
from packagers.media_set import MediaSet
from packagers.naming import TrackSpec
from packagers.fmp4 import Fmp4Muxer
from packagers.ts import TsMuxer
from tests.e2e.conftest import free_port
from tests.gateway.processes import get
from tests.nginx.conftest import player_urls

from .conftest import FILES, FaultProxy

SEGMENT = ("--segment-duration", "4")
URLSET = "title_,240p,180p,.mp4.urlset"


def remote_gateway(gateways, origin_url: str, tmp_path, *extra: str):
    return gateways(*SEGMENT, "--state-dir", str(tmp_path / "state"), "--store", origin_url, *extra)


def body(base: str, url: str, **headers) -> tuple[int, bytes]:
    status, _, data = get(base, url, headers=headers)
    return status, data


def every_url(base: str) -> list[str]:
    """What players of each protocol fetch from the local gateway: manifests, init sections, segments."""
    urls = []
    for entry in ("title_180p.mp4", "moov_end.mp4", "two_audio.mp4", URLSET):
        urls += [u.removeprefix(base) for u in player_urls(f"{base}/hls/{entry}/master.m3u8")]
    for entry in ("title_180p.mp4", "moov_end.mp4"):
        urls += [f"/hls/{entry}/index-v1-a1.m3u8", f"/hls/{entry}/seg-2-v1.m4s",
                 f"/hls/{entry}/init-v1.mp4", f"/dash/{entry}/manifest.mpd", f"/dash/{entry}/init-v1.mp4",
                 f"/dash/{entry}/init-a1.mp4", f"/hds/{entry}/manifest.f4m", f"/mss/{entry}/manifest",
                 f"/mp4/{entry}", f"/thumb/{entry}/thumb-3000.jpg",
                 f"/hls/{entry}/clipFrom/2000/clipTo/9000/master.m3u8",
                 f"/hls/{entry}/clipFrom/2000/clipTo/9000/seg-1-v1-a1.ts", f"/mp4/{entry}/clipFrom/2000/clipTo/9000"]
        urls += [f"/dash/{entry}/fragment-{i}-{t}.m4s" for i in (1, 2) for t in ("v1", "a1")]
        urls += [f"/hds/{entry}/frag-v1-a1-Seg1-Frag{i}" for i in (1, 2)]
        root = ET.fromstring(get(base, f"/mss/{entry}/manifest")[2])
        for stream in root.iter("StreamIndex"):
            level = stream.find("QualityLevel").get("Bitrate")
            start = 0
            for chunk in list(stream.iter("c"))[:2]:  # "t" on the first chunk at least, then "d" adds up
                start = int(chunk.get("t", start))
                urls.append(f"/mss/{entry}/" + stream.get("Url").replace("{bitrate}", level)
                            .replace("{start time}", str(start)))
                start += int(chunk.get("d"))
    urls += [f"/dash/{URLSET}/manifest.mpd", f"/dash/{URLSET}/fragment-2-f1-a1.m4s",
             f"/hds/{URLSET}/frag-f1-v1-a1-Seg1-Frag2", f"/hls/{URLSET}/seg-2-f1-v1.m4s"]
    return list(dict.fromkeys(urls))


def test_every_protocol_is_byte_identical_to_the_local_store(origin, gateways, tmp_path):
    local = gateways(*SEGMENT, store=origin.root)
    remote = remote_gateway(gateways, origin.url, tmp_path)
    urls = every_url(local.base)
    assert len(urls) > 70
    for url in urls + ["/mp4/title_360p.mp4"]:  # 1.5 MB: a download streamed in more than one ranged GET
        want, got = body(local.base, url), body(remote.base, url)
        assert want[0] == 200, (url, want)
        assert got == want, (url, got[0], got[1][:200])
    for url, rng in (("/mp4/title_180p.mp4", "bytes=100-2000000"), ("/mp4/moov_end.mp4", "bytes=-5000"),
                     ("/mp4/title_360p.mp4", "bytes=1000000-1100000"), ("/mp4/title_360p.mp4", "bytes=5-")):
        want, got = get(local.base, url, headers={"Range": rng}), get(remote.base, url, headers={"Range": rng})
        assert (got[0], got[1]["Content-Range"], got[2]) == (want[0], want[1]["Content-Range"], want[2])
    head = get(remote.base, "/mp4/title_180p.mp4", method="HEAD")
    size = (origin.root / FILES[0]).stat().st_size
    assert head[0] == 200 and head[2] == b"" and int(head[1]["Content-Length"]) == size
    etag = get(remote.base, "/mp4/title_180p.mp4")[1]["ETag"]
    assert get(remote.base, "/mp4/title_180p.mp4", headers={"If-None-Match": etag})[0] == 304
    assert body(remote.base, "/hls/missing.mp4/master.m3u8")[0] == 404


def test_a_segment_reads_only_its_ranges_and_the_moov_once(origin, gateways, tmp_path):
    remote = remote_gateway(gateways, origin.url, tmp_path, "--stat-cache-seconds", "60")
    name, size = "moov_end.mp4", (origin.root / "moov_end.mp4").stat().st_size
    mark = origin.mark()
    assert body(remote.base, f"/hls/{name}/index-v1-a1.m3u8")[0] == 200
    opening = [line for line in origin.since(mark) if line.uri.endswith(name)]
    assert sum(line.method == "HEAD" for line in opening) == 1
    assert sum(line.method == "GET" for line in opening) == 2  # the head window, then the tail window (the moov)
    assert sum(line.sent for line in opening) < 100_000  # head and tail windows: the moov, not the mdat
    local = Store(origin.root)  # the coalesced reads the packaging core asks for, from the same file on disk
    media_set = MediaSet([parse_presentation(local, local.identify(name))], 4000, False)
    selection = media_set.resolve(TrackSpec())
    spans = []
    for index in (1, 2):
        mark = origin.mark()
        assert body(remote.base, f"/hls/{name}/seg-{index}-v1-a1.ts")[0] == 200
        lines = origin.since(mark)
        assert lines and all(line.method == "GET" and line.status == 206 for line in lines), lines
        wanted = plan_reads(media_set.segment_tables(selection, index - 1))
        assert sorted(line.range for line in lines) == sorted(f"bytes={r.offset}-{r.offset + r.size - 1}"
                                                              for r in wanted)
        assert sum(line.sent for line in lines) == sum(r.size for r in wanted) < size
        for line in lines:
            first, last = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", line.range).groups())
            spans.append((index, first, last))
    # the moov, read once above, is not read again
    tail = max(int(re.match(r"bytes=(\d+)", line.range).group(1)) for line in opening if line.range)
    assert all(last < tail for _, _, last in spans)  # the moov sits at the end here: its window is not read again


def test_fifty_concurrent_requests_for_a_cold_segment_reach_the_origin_once_per_range(origin, gateways, tmp_path):
    """50 players asking at once for one cold segment: one HEAD, the moov once, each range once; for every file of
    the origin (each cold), so that a request arriving in the very loop step the HEAD completes gets several chances.
    That step fell between the HEAD's single flight and the identity cache (each waiter kept the identity one step
    later) and sent a second HEAD, in ~5% of bursts: RemoteStore.identify_async now keeps it in the shared task."""
    local = gateways(*SEGMENT, store=origin.root)
    config = tmp_path / "gateway.toml"  # no identity or stat expires during the bursts, however slow the machine
    config.write_text("origin_identity_ttl = 600\nstat_cache_seconds = 600\n")
    remote = remote_gateway(gateways, origin.url, tmp_path, "--config", str(config))
    for name in FILES:
        url = f"/hls/{name}/seg-2-v1-a1.ts"
        mark = origin.mark()
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda _: body(remote.base, url), range(50)))
        assert all(a == body(local.base, url) for a in answers), name
        origin.mark()  # until the burst's last lines are written
        lines = [(line.method, line.range) for line in origin.since(mark) if line.uri.endswith("/" + name)]
        gets = Counter(x for x in lines if x[0] == "GET")
        assert gets and max(gets.values()) == 1, (name, Counter(lines))
        assert sum(1 for x in lines if x[0] == "HEAD") == 1, (name, Counter(lines))


async def test_concurrent_reads_of_one_range_share_one_origin_request(origin):
    client = OriginClient(origin.url)
    try:
        url = origin.url + "title_240p.mp4"
        info = await client.head(url)
        mark = origin.mark()
        parts = await asyncio.gather(*(client.get_range(url, info, 1000, 301000) for _ in range(50)))
        assert parts[0] == (origin.root / "title_240p.mp4").read_bytes()[1000:301000]
        assert all(p == parts[0] for p in parts)
        assert len(origin.since(mark)) == 1 and client.stats()["shared"] == 49
    finally:
        await client.close()


@pytest.mark.parametrize("kernel_copy", [True, False])
async def test_scattered_segments_from_the_origin_equal_local_ones(origin, monkeypatch, kernel_copy):
    """The TS muxer's scatter reads from fetched ranges: process_vm_readv, or (refused) the memory file path."""
    monkeypatch.setattr(remote_module, "_vm_copies", [kernel_copy and remote_module._vm_readv is not None])
    remote, local = RemoteStore(origin.url), Store(origin.root)
    try:
        file = (await remote.identify_all(["two_audio.mp4"]))[0]

        def build_both() -> list[tuple[bytes, bytes]]:
            media_set = MediaSet([parse_presentation(remote, file)], 4000, False)
            selection = media_set.resolve(TrackSpec())
            muxer, local_file = TsMuxer(selection.tracks), local.identify("two_audio.mp4")
            return [(build_segment(remote, file, media_set, selection, i, muxer.build, scatter=Scatter(muxer.prepare)),
                     build_segment(local, local_file, media_set, selection, i, muxer.build))
                    for i in range(media_set.plan(selection).count)]

        pairs = await asyncio.get_running_loop().run_in_executor(None, build_both)
        assert len(pairs) >= 3 and all(a == b for a, b in pairs)
        assert remote_module._vm_copies[0] is (kernel_copy and remote_module._vm_readv is not None)
    finally:
        await remote.aclose()


class _NoExecutor(ThreadPoolExecutor):
    def submit(self, *args, **kwargs):
        raise AssertionError("a prefetched segment went to the executor")


@pytest.mark.parametrize("land, kernel_copy", [(True, True), (False, True), (False, False)])
async def test_prefetched_segments_are_built_on_the_loop_and_equal_local_ones(origin, monkeypatch, land, kernel_copy):
    """A remote segment's bytes fetched on the loop, then built there (gateway/origin/prefetch.py): TS with its
    ranges landed straight in the muxer's pieces, or fetched and copied (process_vm_readv, or piece by piece where
    that is refused), fMP4 from the fetched ranges; no executor thread, and the same bytes as from a local file.
    Bigger than the limit: WouldBlock before anything is fetched."""
    monkeypatch.setattr(remote_module, "LAND", land)
    monkeypatch.setattr(remote_module, "_vm_copies", [kernel_copy and remote_module._vm_readv is not None])
    remote, local = RemoteStore(origin.url), Store(origin.root)
    loop = asyncio.get_running_loop()
    try:
        file = (await remote.identify_all(["two_audio.mp4"]))[0]
        media_set = MediaSet([parse_presentation(local, local.identify("two_audio.mp4"))], 4000, False)
        selection, local_file = media_set.resolve(TrackSpec()), local.identify("two_audio.mp4")
        ts, fmp4 = TsMuxer(selection.tracks), Fmp4Muxer(selection.tracks)
        loop.set_default_executor(_NoExecutor())
        count = media_set.plan(selection).count
        assert count >= 3
        for i in range(count):
            for mux, scatter in ((ts.build, Scatter(ts.prepare)), (fmp4.build, None)):
                want = build_segment(local, local_file, media_set, selection, i, mux)
                assert await _prefetch(file, media_set, selection, i, mux, scatter).run(remote) == want, (i, scatter)
        # every TS segment at once: each waits for its bytes in a payload buffer of its own
        prefetches = [_prefetch(file, media_set, selection, i, ts.build, Scatter(ts.prepare))
                      for i in range(count)] * 3
        got = await asyncio.gather(*(p.run(remote) for p in prefetches))
        assert got == [build_segment(local, local_file, media_set, selection, p.index, ts.build) for p in prefetches]
        mark = origin.mark()
        with pytest.raises(WouldBlock):
            await _prefetch(file, media_set, selection, 0, ts.build, Scatter(ts.prepare), limit=1000).run(remote)
        assert origin.since(mark) == []
    finally:
        loop.set_default_executor(ThreadPoolExecutor())
        await remote.aclose()


def _prefetch(file, media_set, selection, index, mux, scatter, limit=8 << 20) -> Prefetch:
    def build(store, tables, requests) -> bytes:
        return build_segment(store, file, media_set, selection, index, mux, scatter=scatter, nowait=True,
                             tables=tables, requests=requests)

    return Prefetch(file, index, partial(media_set.segment_tables, selection, index), build, limit, scatter)


class _InFlight:
    """A remote store that counts its reads in flight (the real store answers them)."""

    def __init__(self, store: RemoteStore):
        self.store, self.now, self.most = store, 0, 0

    async def _counted(self, read):
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            return await read
        finally:
            self.now -= 1

    async def read_chunks(self, *args):
        return await self._counted(self.store.read_chunks(*args))

    async def read_ranges(self, *args):
        return await self._counted(self.store.read_ranges(*args))


async def test_prefetched_builds_are_bounded_like_the_executor(origin, tmp_path):
    """However many remote segments are asked for at once, at most ``io_threads`` are fetched and held at a time
    (each holds up to 8 MB: the loop must not take more than the executor's threads would)."""
    settings = Settings(store=tmp_path, io_threads=2)
    remote, local = RemoteStore(origin.url), Store(origin.root)
    executor = ThreadPoolExecutor(2)
    try:
        packaging = Packaging(settings, executor, Caches(settings))
        packaging.store = counted = _InFlight(remote)
        file = (await remote.identify_all(["two_audio.mp4"]))[0]
        media_set = MediaSet([parse_presentation(local, local.identify("two_audio.mp4"))], 4000, False)
        selection, local_file = media_set.resolve(TrackSpec()), local.identify("two_audio.mp4")
        ts = TsMuxer(selection.tracks)
        count = media_set.plan(selection).count
        jobs = [_prefetch(file, media_set, selection, i % count, ts.build, Scatter(ts.prepare)) for i in range(12)]
        got = await asyncio.gather(*(packaging.prefetched(job) for job in jobs))
        assert got == [build_segment(local, local_file, media_set, selection, job.index, ts.build) for job in jobs]
        assert counted.most == 2, counted.most
    finally:
        executor.shutdown()
        await remote.aclose()


def local_catalog(tmp_path) -> tuple[str, str]:
    """--catalog on a local directory: the media reads alone reach the origin (a catalog on the origin would list
    its folders through the same client, counted by the breaker and the fault proxy; test_remote_catalog.py)."""
    return "--catalog", str(tmp_path / "catalog")


def test_origin_down_is_502_and_not_ready(gateways, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/media/"
    remote = remote_gateway(gateways, dead, tmp_path, "--origin-tries", "2", *local_catalog(tmp_path))
    status, data = body(remote.base, "/hls/title_180p.mp4/master.m3u8")
    assert status == 502 and data.startswith(b"ORIGIN_ERROR: origin http://127.0.0.1") and data.count(b"\n") == 1
    status, _, ready = get(remote.base, "/ready")
    assert status == 503 and b"unreachable" in ready


def test_slow_origin_is_504(origin, fault_proxy, gateways, tmp_path):
    remote = remote_gateway(gateways, fault_proxy.url, tmp_path, "--origin-timeout", "1", "--origin-tries", "1")
    fault_proxy.mode, fault_proxy.delay = "slow", 5.0
    status, data = body(remote.base, "/hls/title_180p.mp4/master.m3u8")
    assert status == 504 and data.startswith(b"ORIGIN_TIMEOUT:"), data


def test_origin_500s_are_retried_then_502(origin, fault_proxy, gateways, tmp_path):
    remote = remote_gateway(gateways, fault_proxy.url, tmp_path, "--origin-tries", "3", *local_catalog(tmp_path))
    fault_proxy.mode = "500"
    status, data = body(remote.base, "/hls/title_180p.mp4/master.m3u8")
    assert status == 502 and b"answered 500 (3 tries)" in data, data
    assert fault_proxy.hits == 3
    fault_proxy.mode = "pass"  # recovers with the origin: nothing was cached from the failure
    assert body(remote.base, "/hls/title_180p.mp4/master.m3u8")[0] == 200
    metrics = get(remote.base, "/metrics")[2].decode()
    assert re.search(r'^gateway_origin_errors_total\{kind="status_5xx"\} 3\.0$', metrics, re.M), metrics
    requests = float(re.search(r"^gateway_origin_requests_total (\S+)$", metrics, re.M).group(1))
    assert requests >= 3 + 3  # the three 500s, then a HEAD and the moov's windows
    assert float(re.search(r"^gateway_origin_bytes_total (\S+)$", metrics, re.M).group(1)) > 0


@pytest.mark.parametrize("mode, status", [("truncate", 502), ("short", 503)])
def test_a_truncated_body_never_becomes_a_segment(origin, fault_proxy, gateways, tmp_path, mode, status):
    local = gateways(*SEGMENT, store=origin.root)
    remote = remote_gateway(gateways, fault_proxy.url, tmp_path, "--origin-tries", "2")
    url = "/hls/title_240p.mp4/seg-2-v1-a1.ts"
    assert body(remote.base, "/hls/title_240p.mp4/index-v1-a1.m3u8")[0] == 200  # moov parsed, identity cached
    fault_proxy.mode = mode
    got = body(remote.base, url)
    assert got[0] == status, got
    fault_proxy.mode = "pass"
    assert body(remote.base, url) == body(local.base, url)  # built again from whole bytes, not a cached half


@pytest.mark.parametrize("mode", ["no_head", "no_ranges"])
def test_origins_without_head_or_ranges_still_serve_the_same_bytes(origin, fault_proxy, gateways, tmp_path, mode):
    local = gateways(*SEGMENT, store=origin.root)
    remote = remote_gateway(gateways, fault_proxy.url, tmp_path)
    fault_proxy.mode = mode
    for url in ("/hls/title_240p.mp4/index-v1-a1.m3u8", "/hls/title_240p.mp4/seg-2-v1-a1.ts", "/mp4/title_240p.mp4"):
        assert body(remote.base, url) == body(local.base, url), url


def test_a_replaced_file_is_seen_whole_never_mixed(origin, gateways, tmp_path):
    local = gateways(*SEGMENT, store=origin.root)
    remote = remote_gateway(gateways, origin.url, tmp_path, "--stat-cache-seconds", "60")
    shutil.copyfile(fixture_path("title_180p.mp4"), origin.root / "swap.mp4")
    before = {i: body(local.base, f"/hls/title_180p.mp4/seg-{i}-v1-a1.ts") for i in (1, 2)}
    after = {i: body(local.base, f"/hls/title_240p.mp4/seg-{i}-v1-a1.ts") for i in (1, 2)}
    assert body(remote.base, "/hls/swap.mp4/seg-1-v1-a1.ts") == before[1]
    origin.replace("swap.mp4", "title_240p.mp4")  # new size, new ETag; the gateway still holds the old identity
    mark = origin.mark()
    assert body(remote.base, "/hls/swap.mp4/seg-2-v1-a1.ts") == after[2]  # 412 on the old ETag → the new file
    assert any(line.status == 412 for line in origin.since(mark))
    assert body(remote.base, "/hls/swap.mp4/seg-1-v1-a1.ts") == after[1]


async def test_the_breaker_fails_fast_then_probes(fault_proxy):
    options = OriginOptions(tries=1, breaker_failures=3, breaker_cooldown=0.5)
    client = OriginClient(fault_proxy.url, options)
    try:
        fault_proxy.mode = "500"
        for _ in range(3):
            with pytest.raises(OriginError, match="answered 500"):
                await client.head(fault_proxy.url + "title_180p.mp4")
        hits = fault_proxy.hits
        with pytest.raises(OriginError, match="circuit open"):
            await client.head(fault_proxy.url + "title_180p.mp4")
        assert fault_proxy.hits == hits  # failed fast: the origin was not asked
        fault_proxy.mode = "pass"
        await wait_for(lambda: not client.breaker.is_open)
        assert (await client.head(fault_proxy.url + "title_180p.mp4")).size > 0  # the probe closes it
        assert fault_proxy.hits == hits + 1 and client.breaker.consecutive == 0
    finally:
        await client.close()


async def wait_for(condition, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met")


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/../../b.mp4", "a//b.mp4", "a\x00.mp4", "",
                                  "a\\..\\b.mp4", "./a.mp4"])
def test_no_path_leaves_the_prefix(path):
    store = RemoteStore("http://origin.example/media")
    with pytest.raises(PackagerError):
        store.url(path)


def test_paths_are_percent_encoded_under_the_prefix():
    store = RemoteStore("http://origin.example/media/")
    assert store.url("dir/a b?c#d%.mp4") == "http://origin.example/media/dir/a%20b%3Fc%23d%25.mp4"


def test_a_secured_entry_needs_its_token_on_a_remote_store(origin, gateways, tmp_path):
    """A catalog on a local (NFS) directory given with --catalog; its secured flavors are known by name on the
    origin. (A catalog on the origin itself: tests/origin/test_remote_catalog.py.)"""
    directory = catalog_dir(tmp_path / "state")
    write_partner(directory, Partner(301, "P301", "e4" * 32, {}))
    doc = {"id": "0_remote01", "partner_id": 301, "name": "r", "secured": True,
           "flavors": [{"id": "0_fl301001", "path": "title_180p.mp4"}]}
    write_entry(directory, parse_entry(doc, "entries/0_remote01.json"))
    remote = remote_gateway(gateways, origin.url, tmp_path, "--catalog", str(directory))
    assert body(remote.base, "/hls/title_180p.mp4/master.m3u8")[0] == 403
    assert body(remote.base, "/mp4/title_180p.mp4")[0] == 403
    signed = f"/s/0_remote01/{sign_path('e4' * 32, 'title_180p.mp4', int(time.time()) + 600)}"
    status, data = body(remote.base, signed + "/mp4/title_180p.mp4")
    assert status == 200 and data == (origin.root / "title_180p.mp4").read_bytes()
    assert body(remote.base, "/hls/title_240p.mp4/master.m3u8")[0] == 200  # not an entry's: public


def test_an_origin_url_as_store_keeps_local_state_in_the_state_dir(tmp_path):
    args = _parser().parse_args(["serve", "--store", "http://origin.example:8081/media/", "--state-dir",
                                 str(tmp_path / "state"), "--origin-timeout", "4", "--origin-tries", "2"])
    settings = ConfigSource(None, flag_overrides(args)).load().settings
    assert settings.origin == "http://origin.example:8081/media/" and settings.store == tmp_path / "state"
    assert (settings.origin_timeout, settings.origin_tries) == (4.0, 2) and settings.store.is_dir()
    config = tmp_path / "gateway.toml"
    config.write_text(f'store = "https://cdn.example/vod"\nstate_dir = "{tmp_path / "other"}"\n')
    settings = ConfigSource(config).load().settings
    assert (settings.origin, settings.store) == ("https://cdn.example/vod", tmp_path / "other")
    local = ConfigSource(None, flag_overrides(_parser().parse_args(["serve", "--store", str(tmp_path)]))).load()
    assert (local.settings.origin, local.settings.store) == (None, tmp_path)  # a directory stays the store
    with pytest.raises(ValueError, match="not an http"):
        Settings(origin="ftp://x/y")


class PieceFaultProxy(FaultProxy):
    """The fault proxy failing only the ranged GETs of ``name`` after the first ``good`` of them (``fault``: "500",
    or "truncate": the headers of the whole range, half its body, then the connection closed); everything else
    passes. The mode is set per request before FaultProxy's handler reads it (synchronously, on the proxy's loop)."""

    def __init__(self, upstream: str, name: str, fault: str, good: int = 1):
        super().__init__(upstream)
        self.name, self.fault, self.good, self.gets = name, fault, good, 0

    async def _handle(self, request):
        self.mode = "pass"
        if request.method == "GET" and request.path.endswith(self.name) and "Range" in request.headers:
            self.gets += 1
            if self.gets > self.good:
                self.mode = self.fault
        return await super()._handle(request)


def read_cut(base: str, url: str, **headers) -> tuple[int, int, bytes, bool]:
    """(status, Content-Length, the body bytes that arrived, whether the connection ended before all of them)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("GET", url, headers=headers)
        response = conn.getresponse()
        length = int(response.getheader("Content-Length"))
        try:
            return response.status, length, response.read(), False
        except http.client.IncompleteRead as cut:
            return response.status, length, cut.partial, True
        except ConnectionError:
            return response.status, length, b"", True
    finally:
        conn.close()


@pytest.mark.parametrize("fault", ["500", "truncate"])
def test_a_download_whose_origin_fails_between_pieces_is_cut_never_short(origin, gateways, tmp_path, fault):
    """A remote /mp4/ download streams the file in REMOTE_PIECE ranged GETs: when the second one fails (500s, or a
    body cut short, through every retry) after the headers and the first piece went out, the client sees the
    connection end before Content-Length (never a complete-looking body of the wrong length); the gateway logs it,
    counts it, and serves the next requests (the same download included, once the origin recovers)."""
    name = "title_360p.mp4"
    whole = (origin.root / name).read_bytes()
    assert len(whole) > REMOTE_PIECE  # at least two pieces
    proxy = PieceFaultProxy(f"http://127.0.0.1:{origin.port}", name, fault)
    try:
        remote = remote_gateway(gateways, proxy.url, tmp_path, "--origin-tries", "2")
        for url, headers, status, start in ((f"/mp4/{name}", {}, 200, 0),
                                            (f"/mp4/{name}", {"Range": "bytes=1000-"}, 206, 1000)):
            proxy.gets = 0
            got, length, data, cut = read_cut(remote.base, url, **headers)
            assert (got, length) == (status, len(whole) - start)
            assert cut and len(data) < length, (fault, len(data), length)
            assert data == whole[start:start + len(data)]  # what did arrive is the file's, in order
            assert proxy.gets >= 2  # the first piece, then the second one (tried again by the origin client)
        log = remote.log.read_text()
        assert log.count(f"GET /mp4/{name} aborted after") == 2 and "origin read failed" in log, log
        assert "Traceback" not in log and "unexpected" not in log, log  # an abort, not an internal error
        metrics = get(remote.base, "/metrics")[2].decode()
        assert re.search(r'^gateway_responses_aborted_total\{[^}]*reason="read_error"[^}]*\} 2\.0$', metrics, re.M), \
            [line for line in metrics.splitlines() if "aborted" in line]
        assert body(remote.base, "/hls/title_180p.mp4/index-v1-a1.m3u8")[0] == 200  # still serving
        proxy.good = 10**6  # the origin recovers: the same download is whole again
        assert body(remote.base, f"/mp4/{name}") == (200, whole)
    finally:
        proxy.close()


def test_a_signed_remote_download_is_private(origin, gateways, tmp_path):
    """A secured entry's download from an origin carries the token's Cache-Control (private, up to its expiry), as
    every other signed response does: the headers the dispatcher sets after the handler are the ones that go out
    (the body is streamed after the handler returns, not inside it)."""
    directory = tmp_path / "catalog"  # a local catalog (--catalog), wherever a remote store's own would be
    write_partner(directory, Partner(302, "P302", "e5" * 32, {}))
    doc = {"id": "0_remote02", "partner_id": 302, "name": "r", "secured": True,
           "flavors": [{"id": "0_fl302001", "path": "title_240p.mp4"}]}
    write_entry(directory, parse_entry(doc, "entries/0_remote02.json"))
    remote = remote_gateway(gateways, origin.url, tmp_path, "--catalog", str(directory))
    assert get(remote.base, "/mp4/title_240p.mp4")[0] == 403  # the catalog is read: the entry's file needs its token
    signed = f"/s/0_remote02/{sign_path('e5' * 32, 'title_240p.mp4', int(time.time()) + 600)}/mp4/title_240p.mp4"
    for headers in ({}, {"Range": "bytes=10-"}):
        status, got, data = get(remote.base, signed, headers=headers)
        assert status in (200, 206) and data == (origin.root / "title_240p.mp4").read_bytes()[10 if headers else 0:]
        assert re.fullmatch(r"private, max-age=(\d+)", got["Cache-Control"]), got
        assert 0 < int(got["Cache-Control"].rsplit("=", 1)[1]) <= 600
