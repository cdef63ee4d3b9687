"""Waiting for a live playlist to change: blocking playlist reloads and preload-hinted part requests (LL-HLS,
draft-pantos-hls-rfc8216bis §6.2.5.2, §6.2.6), for every waiting request of a process at the cost of one poll.

Thousands of players of one stream each hold a request until the next part is listed. A `Watch` per playlist file
(``index.m3u8``, or ``index_delta.m3u8`` for ``_HLS_skip`` requests) checks it (open + fstat, see `read_snapshot`)
every ``interval`` while anyone waits on it, through the packaging executor (NFS may stall: never on the event loop),
reads and parses it only when its identity (inode, size, mtime) changed, and wakes the waiters whose condition the
new version meets. Waiters
are grouped by what they wait for (the same ``_HLS_msn``/``_HLS_part`` for most players), so a new version costs one
check per distinct condition. The poll stops when the last waiter leaves. Polling, not inotify: the store is NFS,
where inotify does not see another node's writes; a rename there is visible to the next open (close-to-open).

Bounds: ``max_waiters`` held requests and ``max_watches`` watched files per process; past them `Overloaded` (503).
A waiter gives up after its own timeout (the caller says: 3 target durations for a reload).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Hashable

from aiohttp import web

from packagers.errors import PackagerError
from packagers.hls.ll_directives import (PartName, PlaylistTail, check_ahead, parse_directives, parse_tail,
                                         part_hinted, part_settled, reload_ready)
from rtmp.live import MEDIA_PLAYLIST
from rtmp.live.writer import DELTA_PLAYLIST

from .errors import error_response
from .responses import serve_packaged
from ..origin.packaging import PACKAGING
from ..ops.app_keys import SETTINGS

__all__ = ["DELTA_PLAYLIST", "GONE", "LIVE_WAITS", "LiveWaits", "Overloaded", "PLAYLIST_MAX_AGE", "PLAYLIST_TYPE",
           "Snapshot", "live_waits_state", "read_snapshot", "read_whole", "serve_fresh_playlist", "serve_hinted_part",
           "serve_ll_playlist"]

log = logging.getLogger("gateway.live")
POLL_INTERVAL = 0.02    # s: the lag a waiter may add on top of the writer's; a check per 20 ms per watched file
MAX_WAITERS = 10_000    # held requests per process (each is also a busy connection, see gateway.http.connections)
MAX_WATCHES = 512       # watched playlist files per process (two per stream at most: index and its delta)
BLOCK_TARGETS = 3       # a held request gives up after this many target durations (§6.2.5.2-S2)
PLAYLIST_MAX_AGE = 1    # s: a live playlist asked for without directives (a reload per second at most reaches us)
FRESH_SLACK = 0.1       # s: a plain LL playlist request waits this much past PART-TARGET for the hinted part
FRESH_MAX = 2.0         # s: ... and never longer than this, whatever PART-TARGET a playlist on the store states
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
PART_TYPE = "video/mp4"


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One version of a playlist file: its bytes, identity and parsed tail."""

    data: bytes
    ino: int
    size: int
    mtime_ns: int
    tail: PlaylistTail

    @property
    def identity(self) -> tuple[int, int, int]:
        return self.ino, self.size, self.mtime_ns


GONE = Snapshot(b"", 0, 0, 0, PlaylistTail())   # the playlist was removed while someone waited on it


class Overloaded(Exception):
    """Too many held requests or watched playlists in this process: the caller answers 503."""


def read_whole(path: str, unless: tuple[int, int, int] | None = None) -> tuple[bytes, int, int, int] | None:
    """A file read through one descriptor (open, fstat, read): its bytes and identity belong to the same version even
    while the writer renames a new one into place. None, without reading, when its (inode, size, mtime) is still
    ``unless``. Blocking."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if (st.st_ino, st.st_size, st.st_mtime_ns) == unless:
            return None
        chunks, left = [], st.st_size
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st.st_ino, st.st_size, st.st_mtime_ns
    finally:
        os.close(fd)


def read_snapshot(path: str, known: tuple[int, int, int] | None = None) -> Snapshot | None:
    """The playlist's current version, None when its identity is still ``known``. Blocking. The poller's "stat" is
    an open + fstat: on NFS an open revalidates the name (close-to-open), where a stat by path may answer from the
    attribute cache for seconds and miss the playlist renamed into place on another node."""
    read = read_whole(path, known)
    if read is None:
        return None
    data, ino, size, mtime_ns = read
    return Snapshot(data, ino, size, mtime_ns, parse_tail(data.decode("utf-8", "replace")))


class Watch:
    """The waiters on one playlist file and the task polling it for them."""

    def __init__(self, path: str, seed: Snapshot | None):
        self.path = path
        self.snapshot = seed
        # condition key → (its test on a playlist version, the futures of the requests waiting for it)
        self.groups: dict[Hashable, tuple[Callable[[PlaylistTail], bool], set[asyncio.Future]]] = {}
        self.task: asyncio.Task | None = None
        self.failing = False    # the last poll failed (logged once)

    def wake(self) -> None:
        """Resolve every group whose condition this version meets (or all of them when the file is gone or ended:
        nothing will change any more)."""
        snapshot = self.snapshot
        final = snapshot is GONE or snapshot.tail.ended
        for key, (ready, futures) in list(self.groups.items()):
            if final or ready(snapshot.tail):
                del self.groups[key]
                for future in futures:
                    if not future.done():
                        future.set_result(snapshot)


class LiveWaits:
    """Every watch of one app (an AppKey of gateway.http.live). ``run(fn, *args)`` runs blocking work in the
    packaging executor."""

    def __init__(self, run: Callable[..., Awaitable], *, interval: float = POLL_INTERVAL,
                 max_waiters: int = MAX_WAITERS, max_watches: int = MAX_WATCHES):
        self.run, self.interval = run, interval
        self.max_waiters, self.max_watches = max_waiters, max_watches
        self.watches: dict[str, Watch] = {}
        self.waiting = 0        # requests held right now
        self.polls = 0          # checks made by the pollers (one per watched file per interval)
        self.reads = 0          # playlist versions read by the pollers
        self.refused = 0        # requests answered 503 by the bounds

    def stats(self) -> dict[str, int]:
        return {"waiting": self.waiting, "watched": len(self.watches), "polls": self.polls, "reads": self.reads,
                "refused": self.refused}

    async def current(self, path: str) -> Snapshot:
        """The playlist now: the poller's last version when one runs (at most one interval old), else read.
        FileNotFoundError when there is none."""
        watch = self.watches.get(path)
        if watch is not None and watch.snapshot is not None and watch.snapshot is not GONE:
            return watch.snapshot
        return await self.run(read_snapshot, path, None)

    async def wait(self, path: str, key: Hashable, ready: Callable[[PlaylistTail], bool], timeout: float,
                   seed: Snapshot | None = None) -> Snapshot | None:
        """The first version of ``path`` on which ``ready`` holds (or that ends the playlist, or `GONE`), None after
        ``timeout`` seconds. ``key`` names the condition: equal keys must mean equal ``ready`` tests. ``seed``: the
        version the caller already checked (the poller starts from it). Raises `Overloaded` past the bounds."""
        watch = self.watches.get(path)
        if self.waiting >= self.max_waiters or (watch is None and len(self.watches) >= self.max_watches):
            self.refused += 1
            raise Overloaded(f"{self.waiting} requests held, {len(self.watches)} playlists watched")
        if watch is None:
            watch = self.watches[path] = Watch(path, seed)
            watch.task = asyncio.get_running_loop().create_task(self._poll(watch))
        elif watch.snapshot is not None and (watch.snapshot is GONE or watch.snapshot.tail.ended
                                             or ready(watch.snapshot.tail)):
            return watch.snapshot   # the poller saw a newer version than the caller did
        future = asyncio.get_running_loop().create_future()
        group = watch.groups.get(key)
        if group is None:
            group = watch.groups[key] = (ready, set())
        group[1].add(future)
        self.waiting += 1
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self.waiting -= 1
            group[1].discard(future)
            if not group[1] and watch.groups.get(key) is group:
                del watch.groups[key]

    async def _poll(self, watch: Watch) -> None:
        """Check every interval while anyone waits; the watch leaves the table in the same loop step as it finds
        nobody waiting, so a new waiter either sees it running or starts a new one."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                if not watch.groups:
                    return
                known = watch.snapshot.identity if watch.snapshot is not None else None
                self.polls += 1
                try:
                    snapshot = await self.run(read_snapshot, watch.path, known)
                except (FileNotFoundError, NotADirectoryError):
                    snapshot = GONE
                except (OSError, ValueError) as e:  # NFS hiccup (ESTALE, EIO): keep the last version, try again
                    if not watch.failing:   # once per run of failures, not every interval
                        log.warning("live playlist %s: %s (still polling)", watch.path, e)
                    watch.failing = True
                    continue
                watch.failing = False
                if snapshot is None:
                    continue
                if snapshot is not GONE:
                    self.reads += 1
                watch.snapshot = snapshot
                watch.wake()
                if snapshot is GONE:
                    watch.snapshot = None   # a new playlist there starts from scratch
        finally:
            if self.watches.get(watch.path) is watch:
                del self.watches[watch.path]
            for _, futures in watch.groups.values():   # cancelled (app shutdown): nobody is answered late
                for future in futures:
                    if not future.done():
                        future.cancel()

    async def close(self) -> None:
        tasks = [w.task for w in self.watches.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


LIVE_WAITS = web.AppKey("live_waits", LiveWaits)


async def live_waits_state(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the app's packaging state, whose executor the pollers use; closed before it)."""
    app[LIVE_WAITS] = LiveWaits(app[PACKAGING].run)
    yield
    await app[LIVE_WAITS].close()


# ---------------------------------------------------------------------------------------------------- handlers
def _directive_control(tail: PlaylistTail) -> str:
    """Cache-Control of a playlist answered under delivery directives. A cache keys on the whole URL, query included,
    so each _HLS_msn/_HLS_part pair is its own object, and an answer stays right (it lists what was asked) but grows
    stale by a part every PART-TARGET: fresh for at most one part, in whole seconds, i.e. max-age=0 for sub-second
    parts. max-age=0 rather than no-store: a CDN may still hand the one answer to the requests it collapsed, and
    revalidates with the ETag (answered 304 at once when nothing changed)."""
    return f"public, max-age={int(tail.part_target)}"


def _unavailable(why: str) -> web.Response:
    return error_response(503, "UNAVAILABLE", why, Retry_After="1", Cache_Control="no-store")


def _not_found(why: str) -> web.Response:
    return error_response(404, "NOT_FOUND", why, Cache_Control="no-store")   # it may exist a moment later


async def _respond(request: web.Request, snapshot: Snapshot, control: str, content_type: str = PLAYLIST_TYPE,
                   max_age: int = PLAYLIST_MAX_AGE) -> web.Response:
    async def body() -> bytes:
        return snapshot.data

    response = await serve_packaged(request, body, content_type=content_type,
                                    etag=f'"{snapshot.ino:x}-{snapshot.size:x}-{snapshot.mtime_ns:x}"',
                                    last_modified=snapshot.mtime_ns / 1e9, max_age=max_age)
    if control:
        response.headers["Cache-Control"] = control
    return response


async def serve_ll_playlist(request: web.Request, directory: str) -> web.StreamResponse:
    """``index.m3u8`` with delivery directives (§6.2.5). They apply only to a playlist that advertises them and has
    not ended; otherwise the playlist is answered as without them. ``_HLS_skip`` serves the delta update (when the
    playlist advertises CAN-SKIP-UNTIL), and a blocked reload waits on the file it will serve."""
    waits, name = request.app[LIVE_WAITS], os.path.basename(directory)
    index = os.path.join(directory, MEDIA_PLAYLIST)
    try:
        snapshot = await waits.current(index)
    except (FileNotFoundError, NotADirectoryError):
        return _not_found(f"serve_ll_playlist: {name} is not live")
    tail = snapshot.tail
    if not tail.low_latency:    # §6.2.5.1-M5, §6.2.5.2-M5 (and a plain, non-LL playlist)
        return await _respond(request, snapshot, "")
    try:
        directives = parse_directives(request.query)
        if directives is None:
            return await _respond(request, snapshot, "")
        if directives.blocking:
            try:
                check_ahead(tail, directives.msn, directives.part)
            except PackagerError:   # the poller's version may be a poll behind: refuse only on a fresh read
                try:
                    snapshot = await waits.run(read_snapshot, index, None)
                except (FileNotFoundError, NotADirectoryError):
                    return _not_found(f"serve_ll_playlist: {name} is not live any more")
                tail = snapshot.tail
                if not tail.low_latency:
                    return await _respond(request, snapshot, "")
                check_ahead(tail, directives.msn, directives.part)
    except PackagerError as e:
        return error_response(400, "BAD_REQUEST", e.message, Cache_Control="no-store")
    path = index
    if directives.skip and tail.can_skip:   # §6.2.5.1-M1
        path = os.path.join(directory, DELTA_PLAYLIST)
        try:
            snapshot = await waits.current(path)
        except (FileNotFoundError, NotADirectoryError):   # not written yet: the whole playlist is a valid answer
            path = index
    if directives.blocking and not reload_ready(snapshot.tail, directives.msn, directives.part):
        timeout = BLOCK_TARGETS * max(1, tail.target_duration)
        ready = functools.partial(_reload_ready, directives.msn, directives.part)
        try:
            snapshot = await waits.wait(path, ("reload", directives.msn, directives.part), ready, timeout, snapshot)
        except Overloaded as e:
            return _unavailable(f"serve_ll_playlist: too many held requests ({e})")
        if snapshot is None:    # §6.2.5.2-S2
            asked = f"segment {directives.msn}" + ("" if directives.part is None else f" part {directives.part}")
            return _unavailable(f"serve_ll_playlist: {asked} did not come within {timeout} s")
        if snapshot is GONE:
            return _not_found(f"serve_ll_playlist: {name} is not live any more")
    if snapshot.tail.ended and path != index:   # ended while waiting: no delta update of an ended playlist
        try:
            snapshot = await waits.run(read_snapshot, index, None)
        except (FileNotFoundError, NotADirectoryError):
            return _not_found(f"serve_ll_playlist: {name} is not live any more")
    return await _respond(request, snapshot, _directive_control(snapshot.tail))


async def serve_fresh_playlist(request: web.Request, directory: str) -> web.StreamResponse | None:
    """``index.m3u8`` without directives. Of a low-latency playlist, the version that lists the preload-hinted part,
    held for it at most one PART-TARGET, rather than the version already there, which may be a part old: a player
    starts PART-HOLD-BACK behind the edge of the first playlist it gets, taking it for new (hls.js dates it by its
    arrival), so a playlist s old starts it s later for the whole session. Holding adds that wait to the join (half
    a part on average) and takes it off the latency. None when there is no playlist (the caller's 404)."""
    waits = request.app[LIVE_WAITS]
    index = os.path.join(directory, MEDIA_PLAYLIST)
    try:
        snapshot = await waits.current(index)
    except (FileNotFoundError, NotADirectoryError):
        return None
    hint = snapshot.tail.hint
    if snapshot.tail.low_latency and hint is not None:
        try:
            fresh = await waits.wait(index, ("part", hint), functools.partial(_part_settled, hint),
                                     min(snapshot.tail.part_target, FRESH_MAX) + FRESH_SLACK, snapshot)
        except Overloaded:
            fresh = None    # the version there is still a right answer
        if fresh is not None and fresh is not GONE:
            snapshot = fresh
    return await _respond(request, snapshot, "")


def _reload_ready(msn: int, part: int | None, tail: PlaylistTail) -> bool:
    return reload_ready(tail, msn, part)


async def serve_hinted_part(request: web.Request, directory: str, name: str, part: PartName) -> web.StreamResponse:
    """A part that does not exist yet (§6.2.6): held until the playlist lists it when it is the preload hint (or
    the part after it, see `part_hinted`), then sent whole; 404 when it is not hinted, when the playlist moves on
    without it, or after as long as a blocked reload waits (3 target durations): a player's reload and its part
    request wait for the same event and give up together."""
    waits = request.app[LIVE_WAITS]
    index = os.path.join(directory, MEDIA_PLAYLIST)
    try:
        snapshot = await waits.current(index)
    except (FileNotFoundError, NotADirectoryError):
        return _not_found(f"serve_hinted_part: {name}: the stream is not live")
    if not part_hinted(snapshot.tail, part):   # §6.2.6-S2
        return _not_found(f"serve_hinted_part: {name} does not exist and is not hinted")
    if not part_settled(snapshot.tail, part):
        timeout = BLOCK_TARGETS * max(1, snapshot.tail.target_duration)
        ready = functools.partial(_part_settled, part)
        try:
            settled = await waits.wait(index, ("part", part), ready, timeout, snapshot)
        except Overloaded as e:
            return _unavailable(f"serve_hinted_part: too many held requests ({e})")
        if settled is None or settled is GONE:
            return _not_found(f"serve_hinted_part: {name} was hinted but did not come")
    try:
        data, ino, size, mtime_ns = await waits.run(read_whole, os.path.join(directory, name))
    except (FileNotFoundError, NotADirectoryError):   # §6.2.6-S3: the playlist moved on without it
        return _not_found(f"serve_hinted_part: {name} was hinted but not published")
    max_age = request.app[SETTINGS].segment_max_age
    return await _respond(request, Snapshot(data, ino, size, mtime_ns, PlaylistTail()), "", PART_TYPE, max_age)


def _part_settled(part: PartName, tail: PlaylistTail) -> bool:
    return part_settled(tail, part)
