"""Through nginx (cache off, so every request reaches a node): consistent hashing keeps each entry on one node, a
SIGKILLed node's entries move to the others and come back after its restart, and players see no failed request
(but a response that had begun to flow when the node died: no proxy can take back bytes it already sent, so such a
response, at most one per player, may arrive cut; every request that starts after the kill must succeed).

Ground truth is the nodes' own /status counters (which node's response cache saw the requests), the m3u8 parser
(what a player fetches) and the bytes a live node serves directly.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from .conftest import ENTRIES, Pool, fetch, hls_urls

HANG_GUARD = 90  # seconds; never a timing assertion, only a bound on waiting


def entry_paths(pool: Pool, entry: str) -> list[str]:
    direct = next(n for n in pool.nodes if n.alive).base
    return [url[len(direct):] for url in hls_urls(direct, entry)]


def served_by(pool: Pool, base: str, paths: list[str]) -> dict[int, int]:
    """Fetch ``paths`` through ``base`` (each must answer 200): how many of them each node's response cache saw."""
    before = pool.lookups()
    for path in paths:
        r = fetch(base + path)
        assert r.status == 200, (path, r.status, r.body[:200])
    after = pool.lookups()
    return {i: b - a for i, (a, b) in enumerate(zip(before, after)) if b != a}


def owner_of(pool: Pool, base: str, paths: list[str]) -> int:
    """The index of the one node that saw every request of ``paths``."""
    moved = served_by(pool, base, paths)
    assert len(moved) == 1, f"requests of one entry reached several nodes: {moved}"
    (node, count), = moved.items()
    assert count == len(paths), f"node{node} saw {count} of {len(paths)} requests"
    return node


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {HANG_GUARD} s"
        time.sleep(0.2)


def test_each_entry_is_built_by_one_node_and_moves_only_when_that_node_dies(lb_nocache, live_pool):
    pool, lb = live_pool, lb_nocache.base
    paths = {entry: entry_paths(pool, entry) for entry in ENTRIES}
    owners = {entry: owner_of(pool, lb, p) for entry, p in paths.items()}
    assert len(set(owners.values())) >= 2, f"{len(ENTRIES)} entries all hashed to one node: {owners}"

    for entry, p in paths.items():  # stable, and warm: the second pass is all cache hits on the same node
        node = pool.nodes[owners[entry]]
        hits = node.status()["segment_cache"]["hits"]
        assert owner_of(pool, lb, p) == owners[entry]
        assert node.status()["segment_cache"]["hits"] - hits == len(p)
        # the key is the entry, not the protocol: DASH of the same file goes to the node holding its parsed moov
        assert owner_of(pool, lb, [f"/dash/{entry}/manifest.mpd"]) == owners[entry]

    victim = max(range(len(pool.nodes)), key=lambda i: list(owners.values()).count(i))
    orphans = [e for e, o in owners.items() if o == victim]
    pool.nodes[victim].kill()
    for entry, p in paths.items():
        moved_to = owner_of(pool, lb, p)
        if entry in orphans:
            assert moved_to != victim
        else:  # consistent hashing: only the dead node's entries move
            assert moved_to == owners[entry], entry

    pool.nodes[victim].start()  # same address; nginx tries it again once fail_timeout has passed
    # (while nginx switches back, one pass may be split between the stand-in and the victim: only count whole ones)
    wait_until(lambda: all(served_by(pool, lb, paths[e]) == {victim: len(paths[e])} for e in orphans),
               "the entries to come back")
    assert {entry: owner_of(pool, lb, p) for entry, p in paths.items()} == owners


def test_players_see_no_failure_while_their_node_is_killed_and_restarted(lb_nocache, live_pool):
    pool, lb = live_pool, lb_nocache.base
    entry = "title_,360p,240p,180p,.mp4.urlset"
    paths = entry_paths(pool, entry)
    assert len(paths) == 1 + 3 * 4  # master + 3 renditions x (playlist + 3 segments of 4 s)
    reference = {}
    for path in paths:  # what a healthy node answers directly
        r = fetch(pool.nodes[0].base + path)
        assert r.status == 200
        reference[path] = r.body
    victim = pool.nodes[owner_of(pool, lb, paths)]

    done, failures, cut, lock, stop = [0], [], [], threading.Lock(), threading.Event()

    killed_at = [float("inf")]

    def player() -> None:
        while not stop.is_set():
            for path in paths:
                started = time.monotonic()
                try:
                    r = fetch(lb + path)
                    ok = r.status == 200 and r.body == reference[path]
                    problem = None if ok else f"{r.status}, {len(r.body)} bytes"
                except Exception as e:  # a reset or a timeout is a failed request too
                    problem = repr(e)
                with lock:
                    done[0] += 1
                    if problem and problem.startswith("IncompleteRead") and started < killed_at[0]:
                        # its response had begun when the node died: no proxy can take back bytes already sent
                        cut.append((path, problem))
                    elif problem:
                        failures.append((path, problem))

    def after(n: int) -> None:
        mark = done[0]
        wait_until(lambda: done[0] >= mark + n, f"{n} more requests")

    players = [threading.Thread(target=player, daemon=True) for _ in range(3)]
    for t in players:
        t.start()
    try:
        after(2 * len(paths))
        killed_at[0] = time.monotonic()
        victim.kill()  # mid-stream: three players have requests in flight
        after(3 * len(paths))
        victim.start()
        wait_until(lambda: victim.lookups() > 0, "nginx to send traffic to the restarted node")
        after(2 * len(paths))
    finally:
        stop.set()
        for t in players:
            t.join(60)
    # every request that started after the kill succeeded; of those in flight, at most one per player was cut
    assert failures == [], f"{len(failures)} of {done[0]} requests failed: {failures[:5]}"
    assert len(cut) <= len(players), cut
    assert done[0] >= 7 * len(paths)
    # the failure path was really taken: nginx logged failed attempts and answered them from another node
    retried = [line for line in lb_nocache.log_lines() if "upstream=127.0.0.1:" in line and ", 127.0.0.1:" in line]
    errors = (Path(lb_nocache.config.log_dir) / "gateway_error.log").read_text()
    assert retried and victim.address in errors
    print(f"\n{done[0]} requests, 0 failed; {len(retried)} answered by a second node after {victim.name} died")
