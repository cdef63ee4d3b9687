"""``--fallback-store``: a second store tried when the primary has no such file (nginx-vod's
``vod_fallback_upstream_location``).

- identify: the primary first; only its NOT_FOUND sends the same store path to the fallback. Origin failures
  (502/504), FileChanged and every other error are the primary's answer: a sick primary must not silently serve
  another datacenter's copy, nor double the load on it.
- A file found on the fallback gets an identity of an ``OnFallback`` class (below): ``open``/``read`` go to the store
  it came from, and its ``cache_key``/``etag_key`` differ from a primary file's, so the metadata and response caches
  never mix the two.
- Loop guard: a request that itself came from a gateway's fallback read (header ``FALLBACK_HEADER``) runs with
  ``NO_FALLBACK`` set (a contextvar set by the HTTP middleware for that request's task); the fallback is then never
  asked, so two gateways that are each other's fallback cannot bounce a missing file forever. Requests to an HTTP
  fallback carry the header (OriginClient's ``fallback`` flag).
"""
from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import Executor
from dataclasses import dataclass, fields
from typing import Sequence

from packagers.errors import ErrorCode, PackagerError

from .store import ContentStore, FileIdentity, Reader

FALLBACK_HEADER = "X-Gateway-Fallback"
# True while serving a request that carried FALLBACK_HEADER: this gateway's own fallback is not asked
NO_FALLBACK: contextvars.ContextVar[bool] = contextvars.ContextVar("gateway_no_fallback", default=False)


class OnFallback:
    """Mixed into the identity class of a file found on the fallback store (see ``on_fallback``): other cache
    keys than the same path's on the primary."""

    __slots__ = ()

    @property
    def cache_key(self) -> tuple:
        return ("fallback",) + super().cache_key

    @property
    def etag_key(self) -> str:
        return "fallback:" + super().etag_key


_KINDS: dict[type, type] = {}  # identity class -> its OnFallback subclass (made once; remote.py is not imported)


def on_fallback(identity: FileIdentity) -> FileIdentity:
    """``identity`` (a local FileIdentity or an origin's RemoteIdentity) marked as the fallback store's."""
    kind = type(identity)
    made = _KINDS.get(kind)
    if made is None:
        made = _KINDS[kind] = dataclass(frozen=True)(type(f"Fallback{kind.__name__}", (OnFallback, kind), {}))
    return made(**{f.name: getattr(identity, f.name) for f in fields(identity)})


def _is_not_found(e: BaseException) -> bool:
    return isinstance(e, PackagerError) and e.code is ErrorCode.NOT_FOUND


class FallbackCounts:
    """The origin counters of both stores' clients, summed, plus the fallback hits: what gateway/ops/metrics.py
    mirrors (one stable object, as an OriginClient's counts are)."""

    __slots__ = ("_clients", "fallbacks", "__weakref__")

    def __init__(self, clients: list) -> None:
        self._clients = clients
        self.fallbacks = 0  # files identified on the fallback store

    def __getattr__(self, name: str) -> int:
        return sum(getattr(c.counts, name) for c in self._clients)


class _Client:
    """What app.py reads of a store's ``client``: its ``counts``."""

    def __init__(self, counts: FallbackCounts):
        self.counts = counts


class FallbackStore:
    """``primary``, and ``fallback`` for the paths the primary does not have. ``root`` is the primary's."""

    def __init__(self, primary: ContentStore, fallback: ContentStore):
        self.primary, self.fallback = primary, fallback
        self.root = primary.root
        self.is_remote = any(getattr(s, "is_remote", False) for s in (primary, fallback))
        self.client = _Client(FallbackCounts([s.client for s in (primary, fallback) if hasattr(s, "client")]))

    @property
    def nowait_reads(self) -> bool | None:
        """Inline (on-loop) builds only when neither store is remote: a remote read on the loop would deadlock it."""
        return False if self.is_remote else self.primary.nowait_reads

    @nowait_reads.setter
    def nowait_reads(self, value: bool | None) -> None:
        for s in (self.primary, self.fallback):
            if not getattr(s, "is_remote", False):
                s.nowait_reads = value

    def _store_of(self, identity: FileIdentity) -> ContentStore:
        return self.fallback if isinstance(identity, OnFallback) else self.primary

    def _found_on_fallback(self, identity: FileIdentity) -> FileIdentity:
        self.client.counts.fallbacks += 1
        return on_fallback(identity)

    # --- identify -------------------------------------------------------------------------------------------------
    async def _identify_one(self, path: str, executor: Executor | None) -> FileIdentity:
        try:
            return (await self.primary.identify_all((path,), executor))[0]
        except PackagerError as e:
            if not _is_not_found(e) or NO_FALLBACK.get():
                raise
        return self._found_on_fallback((await self.fallback.identify_all((path,), executor))[0])

    async def identify_all(self, paths: Sequence[str], executor: Executor | None = None) -> tuple[FileIdentity, ...]:
        """Per path (a url set may mix files of both stores); the primary's answers run concurrently."""
        return tuple(await asyncio.gather(*(self._identify_one(p, executor) for p in paths)))

    def identify(self, path: str) -> FileIdentity:
        """Blocking (executor threads only; NO_FALLBACK is read from the calling thread's context)."""
        try:
            return self.primary.identify(path)
        except PackagerError as e:
            if not _is_not_found(e) or NO_FALLBACK.get():
                raise
        return self._found_on_fallback(self.fallback.identify(path))

    def forget(self, path: str) -> None:
        for s in (self.primary, self.fallback):
            if hasattr(s, "forget"):
                s.forget(path)

    # --- read -----------------------------------------------------------------------------------------------------
    def open(self, identity: FileIdentity) -> Reader:
        return self._store_of(identity).open(identity)

    async def read(self, identity: FileIdentity, requests, executor: Executor | None = None) -> list[bytes]:
        return await self._store_of(identity).read(identity, requests, executor)

    async def read_ranges(self, identity: FileIdentity, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return await self._store_of(identity).read_ranges(identity, ranges)

    async def read_chunks(self, identity: FileIdentity, ranges: Sequence[tuple[int, int]], landings=()) -> list:
        return await self._store_of(identity).read_chunks(identity, ranges, landings)

    # --- lifetime -------------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        return {name: s.stats() for name, s in (("primary", self.primary), ("fallback", self.fallback))
                if hasattr(s, "stats")}

    async def aclose(self) -> None:
        for s in (self.primary, self.fallback):
            if hasattr(s, "aclose"):
                await s.aclose()
