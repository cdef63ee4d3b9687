"""LL-HLS delivery over HTTP (issue 15 item 1): blocking playlist reload, delta updates and preload-hinted parts
(draft-pantos-hls-rfc8216bis §6.2.5-6), against the real app on a loopback port (and once through real nginx in
front of a real `gateway serve`), with a producer writing a live directory the way rtmp.live.writer does: each part
renamed into place, then index.m3u8, then index_delta.m3u8, rendered by the live packager's own playlist writer.

Timing is never asserted tightly: a held request is shown held by the app's own count of waiters, answered by the
part being in its body, and the lag between the part's listing and the answer is measured and printed (bounded only
by a hang guard)."""
from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest

from gateway.http.live_wait import LIVE_WAITS, LiveWaits, Overloaded, read_snapshot
from packagers.hls.live import LivePart, LiveSegment, LowLatency, build_live_media_playlist, skippable
from packagers.hls.ll_directives import PartName, parse_tail, reload_ready
from tests.gateway.conftest import add_to_store
from tests.needs import needs_executable

HANG_GUARD = 30.0
URL = "/live/ll/cam/index.m3u8"
TID = "lltest1"


class Producer:
    """An LL-HLS live directory written as rtmp.live.writer writes it: parts of ``part_s`` seconds, ``per_segment``
    to a segment, the last ``window`` segments listed. ``listed_at`` records when each part (msn, k) and each
    segment (msn, None) was first listed by a renamed index.m3u8 (monotonic clock, taken just before the rename)."""

    def __init__(self, directory: Path, *, part_s: float = 0.25, per_segment: int = 4, window: int = 8):
        self.dir, self.part_s, self.per_segment, self.window = directory, part_s, per_segment, window
        self.dir.mkdir(parents=True, exist_ok=True)
        self.msn, self.parts, self.segments = 1, [], deque()
        self.ended = False
        self.listed_at: dict[tuple[int, int | None], float] = {}
        self.init = f"{TID}-0-init.mp4"
        self._write(self.init, b"init" * 64)

    def part_bytes(self, msn: int, k: int) -> bytes:
        return f"{TID} part {msn}.{k};".encode() * 100

    def _write(self, name: str, data: bytes) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.dir / name)

    @property
    def hint(self) -> PartName:
        return PartName(TID, self.msn, len(self.parts))

    def step(self) -> None:
        """One part; the segment it completes; then the playlists that list them."""
        k = len(self.parts)
        name = f"{TID}-{self.msn}.{k}.m4s"
        self._write(name, self.part_bytes(self.msn, k))
        self.parts.append(LivePart(name, self.part_s, k == 0))
        listed = [(self.msn, k)]
        if len(self.parts) == self.per_segment:
            self._write(f"{TID}-{self.msn}.m4s", b"".join(self.part_bytes(self.msn, i) for i in range(k + 1)))
            ms = round(self.part_s * 1000) * self.per_segment
            self.segments.append(LiveSegment(self.msn, f"{TID}-{self.msn}.m4s", ms, 1000, time.time(), False,
                                             tuple(self.parts), self.init))
            while len(self.segments) > self.window:
                self.segments.popleft()
            listed.append((self.msn, None))
            self.msn, self.parts = self.msn + 1, []
        self._playlists(listed)

    def end(self) -> None:
        self.ended = True
        self._playlists()

    def _playlists(self, listed: list[tuple[int, int | None]] = ()) -> None:
        segments = list(self.segments)
        ll = LowLatency(self.part_s, tuple(self.parts), None if self.ended else f"{TID}-{self.hint.msn}."
                        f"{self.hint.k}.m4s")
        text = build_live_media_playlist(segments, ended=self.ended, low_latency=ll).encode()
        now = time.monotonic()      # just before the rename: a reader may see the file before we get the GIL back
        for key in listed:
            self.listed_at.setdefault(key, now)
        self._write("index.m3u8", text)
        skip = skippable(segments, 1)
        self._write("index_delta.m3u8", build_live_media_playlist(segments, ended=self.ended, low_latency=ll,
                                                                  skip=skip).encode())

    def fill(self, segments: int) -> Producer:
        for _ in range(segments * self.per_segment):
            self.step()
        return self

    def running(self) -> _Running:
        return _Running(self)


class _Running:
    """The producer on its own thread, a part every ``part_s`` (the writer's pace), until the block ends."""

    def __init__(self, producer: Producer):
        self.producer, self.stop = producer, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.producer.part_s):
            self.producer.step()

    def __enter__(self) -> Producer:
        self.thread.start()
        return self.producer

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


async def until(condition, what: str, timeout: float = HANG_GUARD) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


def waits_of(client) -> LiveWaits:
    return client.server.app[LIVE_WAITS]


@pytest.fixture
def producer(store: Path) -> Producer:
    return Producer(store / "live" / "ll" / "cam").fill(8)


async def test_blocked_reloads_are_answered_once_their_part_is_listed(make_client, producer):
    client = await make_client()
    lags: list[float] = []
    with producer.running():
        tail = parse_tail(await (await client.get(URL)).text())
        for i in range(16):     # a player: each reload asks for the part after the newest it has
            msn, part = (tail.last_msn + 1, tail.trailing_parts)
            query = f"_HLS_msn={msn}" if i % 4 == 3 else f"_HLS_msn={msn}&_HLS_part={part}"   # or the segment
            r = await client.get(f"{URL}?{query}")
            answered = time.monotonic()
            assert r.status == 200, await r.text()
            tail = parse_tail(await r.text())
            wanted = None if i % 4 == 3 else part
            assert reload_ready(tail, msn, wanted), (query, tail)
            assert r.headers["Cache-Control"] == "public, max-age=0"   # sub-second parts: fresh for none
            lags.append(answered - producer.listed_at[(msn, wanted)])
    assert all(lag >= 0 for lag in lags)    # never answered before the playlist listed the part
    assert max(lags) < HANG_GUARD
    print(f"\nblocked reload: answered {statistics.median(lags) * 1000:.1f} ms (median), {max(lags) * 1000:.1f} ms "
          f"(max) after the part was listed; part duration {producer.part_s * 1000:.0f} ms, {len(lags)} reloads")


async def test_a_plain_request_gets_the_playlist_that_lists_the_hinted_part(make_client, producer):
    """index.m3u8 without directives, of a low-latency stream: held until the preload-hinted part is listed (a
    player starts PART-HOLD-BACK behind the edge it is given: a playlist a part old would start it a part later),
    and when none comes, answered after one PART-TARGET with the version there; an ended stream's at once."""
    client = await make_client()
    hint = producer.hint
    held = asyncio.ensure_future(client.get(URL))
    await until(lambda: waits_of(client).waiting == 1, "the plain request is held")
    producer.step()
    r = await held
    assert r.status == 200 and r.headers["Cache-Control"] == "public, max-age=1"
    assert parse_tail(await r.text()).newest_part == hint
    started = time.monotonic()
    r = await client.get(URL)      # nothing is written: the version there, a part target later
    assert time.monotonic() - started >= 0.9 * producer.part_s
    assert r.status == 200 and parse_tail(await r.text()).hint == producer.hint
    producer.end()
    r = await client.get(URL)
    assert r.status == 200 and parse_tail(await r.text()).ended and waits_of(client).waiting == 0


async def test_requests_too_far_ahead_or_malformed_are_400_at_once(make_client, producer):
    client = await make_client()
    last, trailing = producer.msn - 1, len(producer.parts)    # 8 complete segments, no part of the 9th yet
    for query in (f"_HLS_msn={last + 3}", f"_HLS_msn={last + 1}&_HLS_part=13",   # limit: 3 / 0.25 s = 12 parts
                  "_HLS_part=1", "_HLS_msn=abc", "_HLS_msn=1&_HLS_part=-1", "_HLS_skip=no"):
        r = await client.get(f"{URL}?{query}")
        assert r.status == 400, (query, r.status)
        assert r.headers["Cache-Control"] == "no-store"
    assert trailing == 0 and waits_of(client).stats()["watched"] == 0   # none of them was ever held
    assert (await client.get(f"{URL}?_HLS_msn=1&_HLS_part=99")).status == 200     # long gone: answered at once
    # at the limits: held (part 11 of a 4-part segment is part 0 of the next, §6.2.5.2-M3)
    held = [asyncio.ensure_future(client.get(f"{URL}?{q}"))
            for q in (f"_HLS_msn={last + 2}", f"_HLS_msn={last + 1}&_HLS_part=11")]
    await until(lambda: waits_of(client).waiting == 2, "the requests at the limits are held")
    for _ in range(2 * producer.per_segment):
        await asyncio.to_thread(producer.step)
    for r, (msn, part) in zip(await asyncio.gather(*held), ((last + 2, None), (last + 2, 0))):
        assert r.status == 200 and reload_ready(parse_tail(await r.text()), msn, part)


async def test_a_reload_that_waits_three_target_durations_is_503_and_a_hinted_part_404(make_client, producer):
    """Nothing is produced: the reload gives up after 3 x TARGETDURATION (1 s here), the hinted part likewise."""
    client = await make_client()
    hint = producer.hint
    started = time.monotonic()
    reload, part = await asyncio.gather(client.get(f"{URL}?_HLS_msn={hint.msn}&_HLS_part={hint.k}"),
                                        client.get(f"/live/ll/cam/{TID}-{hint.msn}.{hint.k}.m4s"))
    elapsed = time.monotonic() - started
    assert reload.status == 503 and reload.headers["Retry-After"] == "1"
    assert reload.headers["Cache-Control"] == "no-store"
    assert part.status == 404 and part.headers["Cache-Control"] == "no-store"
    assert elapsed >= 3 * 1 - 0.05      # held for the whole 3 target durations (a lower bound: never early)
    await until(lambda: waits_of(client).stats()["watched"] == 0, "the poller stops when nobody waits")


async def test_an_ended_or_plain_playlist_ignores_the_directives(make_client, producer, store):
    client = await make_client()
    producer.end()
    ended = (producer.dir / "index.m3u8").read_text()
    for query in (f"_HLS_msn={producer.msn + 50}", "_HLS_part=3", f"_HLS_msn={producer.msn}&_HLS_part=0",
                  "_HLS_skip=YES"):
        r = await client.get(f"{URL}?{query}")
        assert r.status == 200 and await r.text() == ended, query     # whole, at once: no skip, no hold
    plain = store / "live" / "ll" / "plain"
    plain.mkdir()
    (plain / "index.m3u8").write_text(build_live_media_playlist([LiveSegment(n, f"{TID}-{n}.ts", 2000, 1000, 0.0)
                                                                 for n in range(1, 5)]))
    r = await client.get("/live/ll/plain/index.m3u8?_HLS_msn=90&_HLS_part=1")
    assert r.status == 200 and r.headers["Cache-Control"] == "public, max-age=1"
    assert waits_of(client).stats()["watched"] == 0


async def test_skip_serves_the_delta_update_and_waits_on_it(make_client, producer):
    client = await make_client()
    delta = (producer.dir / "index_delta.m3u8").read_text()
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in delta
    r = await client.get(f"{URL}?_HLS_skip=YES")
    assert r.status == 200 and await r.text() == delta
    assert (await client.get("/live/ll/cam/index_delta.m3u8")).status == 404   # only through the directive
    hint = producer.hint
    held = asyncio.ensure_future(client.get(f"{URL}?_HLS_skip=v2&_HLS_msn={hint.msn}&_HLS_part={hint.k}"))
    await until(lambda: waits_of(client).waiting == 1, "the delta reload is held")
    await asyncio.to_thread(producer.step)
    r = await held
    text = await r.text()
    assert r.status == 200 and "#EXT-X-SKIP:" in text and text == (producer.dir / "index_delta.m3u8").read_text()
    assert reload_ready(parse_tail(text), hint.msn, hint.k)


async def test_a_hinted_part_is_held_until_written_and_an_unhinted_one_is_404(make_client, producer):
    client = await make_client()
    hint = producer.hint
    far = await client.get(f"/live/ll/cam/{TID}-{hint.msn + 2}.0.m4s")
    assert far.status == 404 and waits_of(client).stats()["watched"] == 0     # not hinted: never held
    names = [f"{TID}-{hint.msn}.{hint.k}.m4s", f"{TID}-{hint.msn}.{hint.k + 1}.m4s"]   # the hint, the part after
    held = [asyncio.ensure_future(client.get(f"/live/ll/cam/{n}")) for n in names]
    await until(lambda: waits_of(client).waiting == 2, "both part requests are held")
    await asyncio.to_thread(producer.step)
    first = await held[0]
    assert first.status == 200 and await first.read() == producer.part_bytes(hint.msn, hint.k)
    assert first.headers["Cache-Control"] == "public, max-age=86400" and not held[1].done()
    await asyncio.to_thread(producer.step)
    second = await held[1]
    assert second.status == 200 and await second.read() == producer.part_bytes(hint.msn, hint.k + 1)


async def test_many_waiters_share_one_poller_and_block_nothing_else(make_client, producer, store):
    add_to_store(store, "title_180p.mp4")
    client = await make_client()
    waits = waits_of(client)
    hint, players = producer.hint, 500
    url = client.make_url(f"{URL}?_HLS_msn={hint.msn}&_HLS_part={hint.k}")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def player() -> tuple[int, str]:
            async with session.get(url) as r:
                return r.status, await r.text()

        held = [asyncio.ensure_future(player()) for _ in range(players)]
        await until(lambda: waits.waiting == players, f"{players} reloads held")
        polls, reads, started = waits.polls, waits.reads, time.monotonic()
        assert waits.stats()["watched"] == 1
        for other in ("/hls/title_180p.mp4/master.m3u8", "/live/ll/cam/index.m3u8", f"/live/ll/cam/{producer.init}"):
            assert (await client.get(other)).status == 200, other      # answered while all of them wait
        assert waits.waiting == players and not any(h.done() for h in held)
        await asyncio.to_thread(producer.step)
        stepped = time.monotonic()
        answers = await asyncio.wait_for(asyncio.gather(*held), HANG_GUARD)
        answered = time.monotonic()
        elapsed = answered - started
    assert all(status == 200 and reload_ready(parse_tail(text), hint.msn, hint.k) for status, text in answers)
    # one stat per interval for all of them (a poll sleeps a whole interval before the next), one read of the
    # new version
    assert waits.polls - polls <= elapsed / waits.interval + 1
    assert waits.reads - reads == 1
    await until(lambda: waits.stats()["watched"] == 0, "the poller stops when nobody waits")
    print(f"\n{players} held reloads: {waits.polls - polls} polls and 1 read in {elapsed:.2f} s; all answered "
          f"{(answered - stepped) * 1000:.0f} ms after the playlist listing their part was renamed into place")


async def test_bounds_on_waiters_and_watched_playlists(producer):
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(2) as executor:
        waits = LiveWaits(lambda fn, *a: loop.run_in_executor(executor, fn, *a), max_waiters=2, max_watches=1)
        index = str(producer.dir / "index.m3u8")
        seed = read_snapshot(index)
        never = ("never", 0)
        held = [asyncio.ensure_future(waits.wait(index, never, lambda tail: False, HANG_GUARD, seed))
                for _ in range(2)]
        await until(lambda: waits.waiting == 2, "two held")
        with pytest.raises(Overloaded):
            await waits.wait(index, never, lambda tail: False, HANG_GUARD, seed)
        with pytest.raises(Overloaded):     # a second file is past max_watches
            await waits.wait(str(producer.dir / "index_delta.m3u8"), never, lambda tail: False, HANG_GUARD)
        assert waits.refused == 2
        await waits.close()
        for h in held:
            with pytest.raises(asyncio.CancelledError):
                await h


# ---------------------------------------------------------------------------------------------------- nginx
@needs_executable("nginx")
def test_blocked_reload_and_hinted_part_through_nginx(tmp_path):
    """Two real nodes behind the rendered nginx configuration: a blocked reload and a held part are answered through
    the pool, and the node's 503 after 3 target durations reaches the player from the one node that held it (the
    other node would only hold it again)."""
    from tests.nginx.conftest import Nginx, Node, Pool, fetch, nginx_config
    store = tmp_path / "store"
    producer = Producer(store / "live" / "ll" / "cam").fill(8)
    nodes = [Node(f"ll-node{i}", store, tmp_path) for i in range(2)]
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    lb = Nginx(prefix, nginx_config(prefix, Pool(nodes, store), cache=True))
    try:
        for node in nodes:
            node.start()
        lb.start()
        hint = producer.hint
        part_name = f"{TID}-{hint.msn}.{hint.k}.m4s"
        with ThreadPoolExecutor(5) as pool:
            reload = pool.submit(fetch, f"{lb.base}{URL}?_HLS_msn={hint.msn}&_HLS_part={hint.k}")
            parts = [pool.submit(fetch, f"{lb.base}/live/ll/cam/{part_name}") for _ in range(4)]
            time.sleep(0.5)     # (the requests reach the node first, unless this machine is very slow)
            producer.step()
            r, answers = reload.result(HANG_GUARD), [p.result(HANG_GUARD) for p in parts]
        assert r.status == 200 and reload_ready(parse_tail(r.body.decode()), hint.msn, hint.k)
        assert r.headers.get("X-Cache-Status") == "BYPASS"
        assert all(p.status == 200 and p.body == producer.part_bytes(hint.msn, hint.k) for p in answers)
        # the 4 players asking for the hinted part at once made one held upstream request (proxy_cache_lock)
        upstream = [x.split("upstream=")[1].split()[0] for x in lb.wait_log_lines(lambda x: f"/{part_name} " in x, 4)]
        assert len(upstream) == 4 and len([u for u in upstream if u != "-"]) == 1, upstream
        hint = producer.hint    # nothing more is produced
        stalled = fetch(f"{lb.base}{URL}?_HLS_msn={hint.msn}&_HLS_part={hint.k}")
        assert stalled.status == 503 and stalled.headers.get("Retry-After") == "1"
        (line,) = lb.wait_log_lines(lambda x: f"_HLS_msn={hint.msn}&_HLS_part={hint.k} " in x, 1)
        assert " 503 " in line and line.count("upstream=") == 1 and "," not in line.split("upstream=")[1].split()[0]
    finally:
        lb.stop()
        for node in nodes:
            node.stop()
