"""Segments of a remote store built on the event loop: the byte ranges a segment needs are fetched first (awaited on
the loop: no thread waits for them), then the build runs right there, as a local segment whose pages are in the page
cache is built (gateway/http/products.py ``build_segment`` with ``nowait``).

Why: a build in an executor thread that reads from an HTTP origin waits for the loop to run its ranged GETs (a hop
each way), then contends for the GIL with the loop and the other threads' builds: from nginx on loopback a cold TS
segment cost 3.9-4.4 ms of the worker's CPU that way against 2.2-2.4 ms from a local file (issue 16's bench), and
3.1-3.3 ms this way. A TS segment is laid out first, in a payload buffer of its own (others build on the loop while
it waits), and its ranges are read straight into their places (gateway/origin/landing.py); other muxers read the
fetched ranges as they are (views, no copy).

Anything the build reads outside the fetched ranges (it plans its reads from the same sample tables, so it never
should) raises WouldBlock and the segment is built in the executor as before; so do segments larger than the
inline limit (the loop is never held longer than a local inline build holds it), encrypted ones (gateway/http/
products.py: too long for the loop) and those whose tracks come from two files.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Callable, Sequence

import numpy as np

from packagers.media_data import ReadRequest, ScatterRead, plan_reads
from packagers.ts import PayloadBuffer

from .origin_client import joined
from .remote import RemoteIdentity, copy_into_pieces, disarm, landed_or_copied, scatter_landings
from .store import _SKIPPED, FileIdentity, WouldBlock, piece_iovecs


def fetched_first(file: FileIdentity) -> bool:
    """Whether a segment of ``file`` is fetched on the loop before it is built: a file of a remote store (the
    fallback store's remote files included)."""
    return isinstance(file, RemoteIdentity)


@dataclass(frozen=True)
class Prefetch:
    """How to build segment ``index`` of ``file`` from bytes fetched on the loop: its sample tables (``tables()``),
    the build given a store to read from and those tables, and for a muxer that lays the segment out first (TS:
    ``scatter``) its layout step, so that the bytes land straight in their places (no copy besides the socket's)."""

    file: FileIdentity
    index: int
    tables: Callable[[], list]
    build: Callable[[object, list, list], bytes]  # build(store, tables, read requests): blocking in form, but
    # reads only memory here
    limit: int  # bytes: a bigger segment is built in the executor
    scatter: object | None = None  # gateway/http/products.py Scatter: prepare(index, tables, buffers), post(body)
    observe: Callable[[str, int], None] = lambda stage, elapsed_ns: None  # the build's plan/read/mux times

    async def run(self, store) -> bytes:
        """Fetch the ranges (the store's pooled client: single flight, retries, validators), then build here."""
        t0 = perf_counter_ns()
        tables = self.tables()
        if sum(int(t.sizes.sum(dtype=np.int64)) for t in tables) > self.limit:
            raise WouldBlock()
        if self.scatter is not None:
            body = await self._landed(store, tables, t0)
            if body is not None:
                return body
        requests = plan_reads(tables)  # what build_segment reads from these tables (given to it: not planned twice)
        ranges = [(r.offset, r.end) for r in requests]
        buffers = await store.read_ranges(self.file, ranges)
        return self.build(Prefetched(self.file, ranges, buffers), tables, requests)

    async def _landed(self, store, tables: list, t0: int) -> bytes | None:
        """The segment laid out in a payload buffer of its own (other builds run on the loop while this one waits
        for its bytes), its ranges read straight into their places; None when the muxer cannot lay it out first."""
        buffers = _payloads.take()
        try:
            job = self.scatter.prepare(self.index, tables, buffers)
            if job is None:
                return None
            with job:
                reads = job.reads
                iov = piece_iovecs(reads)
                landings = scatter_landings(iov, reads)
                t1 = perf_counter_ns()
                try:
                    chunks = await store.read_chunks(self.file, [(r.offset, r.offset + r.size) for r in reads],
                                                     landings)
                finally:
                    disarm(landings)  # a request that outlives this one (shared, or cancelled) writes no more
                if not landed_or_copied(self.file, iov, reads, chunks):
                    _copy_pieces(reads, [(joined(parts),) for parts in chunks])
                t2 = perf_counter_ns()
                body = job.finish()
        finally:
            _payloads.give(buffers)
        if body is None:
            return None
        body = self.scatter.post(body)
        for stage, elapsed in (("plan", t1 - t0), ("read", t2 - t1), ("mux", perf_counter_ns() - t2)):
            self.observe(stage, elapsed)
        return body


POOLED_PAYLOADS = 16  # payload buffers kept between builds (each at most PAYLOAD_BUFFER_KEEP): the default io_threads


class _PayloadPool:
    """Payload buffers of the TS builds waiting for their bytes on the loop: reused (a fresh one costs a page fault
    per 4 KB), at most ``keep`` of them kept (each releases what is over PAYLOAD_BUFFER_KEEP after its build)."""

    def __init__(self, keep: int = POOLED_PAYLOADS):
        self.free: list[PayloadBuffer] = []
        self.keep = keep

    def take(self) -> PayloadBuffer:
        return self.free.pop() if self.free else PayloadBuffer()

    def give(self, buffers: PayloadBuffer) -> None:
        if len(self.free) < self.keep:
            self.free.append(buffers)


_payloads = _PayloadPool()


def _copy_pieces(reads: Sequence[ScatterRead], chunks: Sequence[tuple]) -> None:
    """Each read's bytes (one buffer each) into its pieces, a piece at a time: where process_vm_readv is refused."""
    skipped = memoryview(_SKIPPED)
    for r, (data,) in zip(reads, chunks):
        view, at = memoryview(data), 0
        for piece in r.buffers(skipped):
            n = len(piece)
            piece[:] = view[at: at + n]
            at += n


class Prefetched:
    """A store holding byte ranges of one file: what a build opens instead of the remote store."""

    nowait_reads = True
    is_remote = False

    def __init__(self, file: FileIdentity, ranges: Sequence[tuple[int, int]], buffers: Sequence[bytes]):
        self.file = file
        self.starts = [a for a, _ in ranges]
        self.ranges, self.buffers = list(ranges), [memoryview(b) for b in buffers]

    def open(self, identity: FileIdentity) -> "PrefetchedReader":
        if identity is not self.file and identity != self.file:
            raise WouldBlock()
        return PrefetchedReader(self)

    def view(self, offset: int, size: int) -> memoryview:
        """``size`` bytes at ``offset`` as a view of the fetched range holding them; WouldBlock if none does."""
        i = bisect.bisect_right(self.starts, offset) - 1
        if i < 0:
            raise WouldBlock()
        start, stop = self.ranges[i]
        buffer = self.buffers[i]
        if offset + size > min(stop, start + len(buffer)):
            raise WouldBlock()
        return buffer[offset - start: offset - start + size]


class PrefetchedReader:
    """The Reader of a ``Prefetched`` file (the local and remote readers' methods a segment build uses)."""

    def __init__(self, prefetched: Prefetched):
        self.prefetched = prefetched

    def allocated_bytes(self) -> int | None:
        return None

    def pread(self, offset: int, size: int) -> bytes:
        return bytes(self.prefetched.view(offset, max(0, min(size, self.prefetched.file.size - offset))))

    def read_all(self, requests: Sequence[ReadRequest]) -> list[bytes]:
        return [bytes(self.prefetched.view(r.offset, r.size)) for r in requests]

    def read_scratch(self, requests: Sequence[ReadRequest], nowait: bool = False) -> list[memoryview]:
        return [self.prefetched.view(r.offset, r.size) for r in requests]

    def read_scatter(self, reads: Sequence[ScatterRead], nowait: bool = False) -> None:
        """Each read's bytes into its pieces: one process_vm_readv per read (the kernel walks the pieces), or where
        a sandbox refuses that call, a copy per piece."""
        chunks = [(self.prefetched.view(r.offset, r.size),) for r in reads]
        iov = piece_iovecs(reads)
        if iov is None or not copy_into_pieces(iov, reads, chunks):
            _copy_pieces(reads, chunks)

    def close(self) -> None:
        pass

    def __enter__(self) -> "PrefetchedReader":
        return self

    def __exit__(self, *exc) -> None:
        pass
