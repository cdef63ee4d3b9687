"""From sample tables to the bytes a muxer needs, without doing I/O.

Packagers *ask* for bytes (``ReadRequest``); the gateway reads them (``os.pread`` on the store, or any byte source)
and hands the buffers back. ``gather`` turns those buffers into one contiguous payload per track, ready for a muxer.
Neighbouring samples are coalesced into few large reads (an interleaved MP4 alternates audio and video chunks a few
hundred KB apart: one read per segment beats dozens of small ones on NFS).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import bad_data
from .model import SampleTable, Track

DEFAULT_MAX_GAP = 256 * 1024  # bytes of unrelated data we accept reading to save a separate request


@dataclass(frozen=True)
class ReadRequest:
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True, eq=False)
class ScatterRead:
    """``size`` bytes of the file at ``offset``, in pieces one after the other: piece i (``lengths[i]`` bytes) goes
    to ``into[at[i]:]``, or nowhere when ``at[i]`` is negative (bytes between samples, read rather than split)."""

    offset: int
    size: int
    into: object  # a writable buffer
    at: np.ndarray  # int64
    lengths: np.ndarray  # int64

    def buffers(self, skipped: memoryview) -> list[memoryview]:
        """The pieces as views (of ``skipped`` for the negative ones), for ``os.preadv``."""
        view = memoryview(self.into).cast("B")
        return [view[a : a + n] if a >= 0 else skipped[:n] for a, n in zip(self.at.tolist(), self.lengths.tolist())]


MAX_PIECES_PER_READ = 1024  # IOV_MAX on Linux
SKIP_LIMIT = 64 * 1024  # a gap between samples up to this is read and dropped, not split into two reads


def scatter_reads(into, dest: np.ndarray, sizes: np.ndarray, offsets: np.ndarray) -> list[ScatterRead] | None:
    """Reads that put sample i (``sizes[i]`` bytes at ``offsets[i]`` in the file) at ``into[dest[i]:]``, in file
    order: one read per run of samples at most SKIP_LIMIT apart. None when two samples overlap in the file."""
    order = np.argsort(offsets, kind="stable")
    off, size, to = offsets[order].astype(np.int64), sizes[order], dest[order]
    end = off + size
    gap = off[1:] - end[:-1]
    if len(gap) and int(gap.min()) < 0:
        return None
    skipped = np.flatnonzero(gap > 0)
    if len(skipped):  # the gaps become pieces of their own, after the sample before them
        n, k = len(off), len(skipped)
        at = np.arange(n) + np.searchsorted(skipped, np.arange(n))  # a sample moves up by the gaps before it
        gap_at = skipped + np.arange(1, k + 1)
        off, size, to = (np.empty(n + k, dtype=np.int64) for _ in range(3))
        off[at], size[at], to[at] = offsets[order], sizes[order], dest[order]
        off[gap_at], size[gap_at], to[gap_at] = end[skipped], gap[skipped], -1
        end = off + size
    split = np.flatnonzero((to < 0) & (size > SKIP_LIMIT))  # a long gap: the read before it ends, one starts after
    bounds = [0]
    for g in split.tolist():
        bounds += [g, g + 1]
    bounds.append(len(off))
    reads = []
    for a, b in zip(bounds[0::2], bounds[1::2]):
        for c in range(a, b, MAX_PIECES_PER_READ):
            d = min(b, c + MAX_PIECES_PER_READ)
            reads.append(ScatterRead(int(off[c]), int(end[d - 1] - off[c]), into, to[c:d], size[c:d]))
    return reads


@dataclass(frozen=True, eq=False)
class TrackSegment:
    """One track's share of a segment: its samples and their payload bytes back to back, in sample order.

    The bytes may come as several chunks (runs of samples contiguous in the file, as views of the read buffers):
    a muxer that only needs them in order (fMP4's mdat) joins the chunks straight into its output, and
    ``payload`` joins them once for muxers that index into one buffer. A single ``bytes`` is accepted too.
    """

    track: Track
    samples: SampleTable
    chunks: tuple

    def __post_init__(self) -> None:
        if isinstance(self.chunks, (bytes, bytearray, memoryview)):
            object.__setattr__(self, "chunks", (self.chunks,))
        else:
            object.__setattr__(self, "chunks", tuple(self.chunks))

    @functools.cached_property
    def payload(self) -> bytes:
        if len(self.chunks) == 1 and isinstance(self.chunks[0], bytes):
            return self.chunks[0]
        return b"".join(self.chunks)

    @functools.cached_property
    def payload_size(self) -> int:
        return sum(len(c) for c in self.chunks)

    def copy_into(self, region) -> None:
        """Write the payload (the chunks back to back) into the writable buffer ``region``: one memcpy a chunk,
        no joined copy first."""
        view, at = memoryview(region), 0
        for chunk in self.chunks:
            view[at : at + len(chunk)] = chunk
            at += len(chunk)

    def sample_views(self) -> list[memoryview]:
        """Each sample's bytes as a view of the chunk that holds it: for muxers that lay samples out one by one
        (FLV tags, ADTS frames), so that the payload is not joined, a full copy, before being copied again."""
        sizes = self.samples.sizes.astype(np.int64)
        if not len(sizes):
            return []
        starts = self._payload_starts(sizes)
        found = self._in_chunks(starts, sizes)
        if found is None:
            payload = memoryview(self.payload)
            return list(map(payload.__getitem__, map(slice, starts.tolist(), (starts + sizes).tolist())))
        which, local = found
        # samples come in chunk order: each chunk's samples are one run of ``which``
        bounds = np.searchsorted(which, np.arange(len(self.chunks) + 1)).tolist()
        starts, ends = local.tolist(), (local + sizes).tolist()
        views: list[memoryview] = []
        for w, chunk in enumerate(self.chunks):
            lo, hi = bounds[w], bounds[w + 1]
            views += map(memoryview(chunk).__getitem__, map(slice, starts[lo:hi], ends[lo:hi]))
        return views

    def sample_locations(self) -> tuple[object, np.ndarray]:
        """``(buffer, starts)``: one buffer holding every sample, sample i at ``starts[i]``. When the chunks are
        views of one buffer (the read buffer a segment's coalesced reads fill), that buffer, and no copy; else the
        joined payload. For muxers that index into the samples (TS finds the NAL units of every video frame)."""
        sizes = self.samples.sizes.astype(np.int64)
        starts = self._payload_starts(sizes) if len(sizes) else sizes
        if len(self.chunks) == 1:  # one run of samples (one read): that view as is
            return self.chunks[0], starts
        base = _common_base(self.chunks) if len(sizes) else None
        found = None if base is None else self._in_chunks(starts, sizes)
        if found is None:
            return self.payload, starts
        which, local = found
        base_address = np.frombuffer(base, dtype=np.uint8).ctypes.data
        chunk_at = np.fromiter((np.frombuffer(c, dtype=np.uint8).ctypes.data - base_address for c in self.chunks),
                               dtype=np.int64, count=len(self.chunks))
        return base, chunk_at[which] + local

    def _payload_starts(self, sizes: np.ndarray) -> np.ndarray:
        """Where each sample starts in the payload (the chunks back to back); BAD_DATA if the sizes disagree."""
        ends = np.cumsum(sizes)
        if int(ends[-1]) != self.payload_size:
            raise bad_data(f"TrackSegment: {self.payload_size} payload bytes for samples of {int(ends[-1])}")
        return ends - sizes

    def _in_chunks(self, starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(chunk index, offset in it) of every sample, or None when a sample spans two chunks."""
        if len(self.chunks) == 1:
            return np.zeros(len(starts), dtype=np.int64), starts
        lengths = np.fromiter(map(len, self.chunks), dtype=np.int64, count=len(self.chunks))
        chunk_ends = np.cumsum(lengths)
        which = np.minimum(np.searchsorted(chunk_ends, starts, side="right"), len(lengths) - 1)
        local = starts - (chunk_ends - lengths)[which]
        if (local >= 0).all() and (local + sizes <= lengths[which]).all():
            return which, local
        return None

    def sample_positions(self) -> np.ndarray:
        """Start of each sample inside ``payload`` (int64)."""
        pos = np.zeros(len(self.samples) + 1, dtype=np.int64)
        np.cumsum(self.samples.sizes, out=pos[1:])
        return pos[:-1]


@dataclass(frozen=True, eq=False)
class MediaSegment:
    """What a muxer builds one output segment from. ``index`` is 0-based; URLs number segments from 1."""

    index: int
    tracks: tuple[TrackSegment, ...]


def _common_base(chunks: Sequence) -> bytearray | bytes | np.ndarray | None:
    """The one buffer (bytes, bytearray or 1-D uint8 array) every chunk is a contiguous byte view of, if any."""
    bases = {id(c.obj): c.obj for c in chunks if isinstance(c, memoryview) and c.contiguous and c.itemsize == 1}
    if len(bases) != 1 or not all(isinstance(c, memoryview) for c in chunks):
        return None
    (base,) = bases.values()
    if isinstance(base, np.ndarray):
        return base if base.dtype == np.uint8 and base.ndim == 1 and base.flags.c_contiguous else None
    return base if isinstance(base, (bytes, bytearray)) else None


def plan_reads(tables: Sequence[SampleTable], max_gap: int = DEFAULT_MAX_GAP) -> list[ReadRequest]:
    """Coalesce the byte ranges of all samples into sorted, merged read requests."""
    nonempty = [t for t in tables if len(t)]
    if not nonempty:
        return []
    starts = np.concatenate([t.offsets for t in nonempty]).astype(np.int64)
    ends = starts + np.concatenate([t.sizes for t in nonempty]).astype(np.int64)
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    # A new request starts where the gap after everything before exceeds max_gap.
    new = np.empty(len(starts), dtype=bool)
    new[0] = True
    new[1:] = starts[1:] > reach[:-1] + max_gap
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(starts)) - 1
    return [ReadRequest(int(s), int(e - s)) for s, e in zip(starts[first], reach[last])]


def gather(table: SampleTable, requests: Sequence[ReadRequest], buffers: Sequence[bytes]) -> bytes:
    """The payload of every sample of ``table``, back to back, cut out of the buffers read for ``requests``."""
    return b"".join(gather_runs(table, requests, buffers))


def gather_runs(table: SampleTable, requests: Sequence[ReadRequest], buffers: Sequence[bytes]) -> list[memoryview]:
    """Views of the buffers read for ``requests`` that, in order, are the payload of every sample of ``table``.

    Runs of samples that are contiguous in the file are one view, so an interleaved MP4 costs one view per chunk,
    not one per sample, and nothing is copied here.
    """
    if len(table) == 0:
        return []
    for i, (r, b) in enumerate(zip(requests, buffers)):
        if len(b) != r.size:
            raise bad_data(f"gather: read {i} returned {len(b)} of {r.size} bytes (file truncated?)")
    # Runs of samples contiguous in the file; a run has no gap, so it lies inside one request (requests only split
    # at gaps): only run starts need mapping to requests.
    offsets = table.offsets.astype(np.int64)
    ends = offsets + table.sizes
    breaks = np.flatnonzero(offsets[1:] != ends[:-1]) + 1
    run_start = offsets[np.concatenate(([0], breaks))]
    run_end = ends[np.append(breaks - 1, len(table) - 1)]
    req_offsets = np.fromiter((r.offset for r in requests), dtype=np.int64, count=len(requests))
    req_ends = req_offsets + np.fromiter((r.size for r in requests), dtype=np.int64, count=len(requests))
    which = np.searchsorted(req_offsets, run_start, side="right") - 1
    if (which < 0).any() or (run_end > req_ends[np.maximum(which, 0)]).any():
        raise bad_data("gather: a sample lies outside the bytes read for it (file truncated?)")
    local = run_start - req_offsets[which]
    views = [memoryview(b) for b in buffers]
    return [views[w][a:a + n] for w, a, n in zip(which.tolist(), local.tolist(), (run_end - run_start).tolist())]
