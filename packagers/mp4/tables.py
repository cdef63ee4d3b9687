"""Sample tables (ISO/IEC 14496-12 §8.6-8.7) to per-sample numpy columns, without a per-sample Python loop.

Each ``parse_*`` reads one box into numpy arrays (counts checked against the box size before anything is allocated);
``build_sample_table`` checks that the boxes agree with each other and expands them:

* stts runs of (sample_count, sample_delta) -> durations = repeat(delta, count); dts = exclusive cumsum
* ctts runs of (sample_count, sample_offset) -> cts = repeat(offset, count) (signed in both versions, as ffmpeg reads
  version 0 too)
* stsc runs of (first_chunk, samples_per_chunk) -> samples in each chunk; a sample's offset is its chunk's offset
  plus the sizes of the samples before it in that chunk: offsets = csum(sizes) + repeat(chunk_offset - csum at the
  chunk's first sample, samples in chunk)
* stss 1-based sync sample numbers -> keyframe mask (absent or empty box: every sample is a sync sample)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import bad_data
from ..model import SampleTable
from .boxes import Box, Fields

# A hard ceiling on the samples of one track, whatever the Limits: sample numbers must fit stss/ctts's uint32 runs and
# int64 sums. The real budget is ``Limits.max_frame_count``, checked by the demuxer before a table is expanded.
MAX_SAMPLES = 1 << 24
_MAX_OFFSET = 1 << 62  # chunk offsets above this cannot be in any file, and would overflow int64 arithmetic


@dataclass(frozen=True)
class SampleSizes:
    count: int
    sizes: np.ndarray | None  # uint32 per sample, or None when every sample has ``uniform`` size
    uniform: int = 0

    def expand(self) -> np.ndarray:
        if self.sizes is not None:
            return self.sizes
        return np.full(self.count, self.uniform, dtype=np.uint32)


def parse_stts(buf: bytes, box: Box, where: str) -> tuple[np.ndarray, np.ndarray]:
    """TimeToSampleBox §8.6.1.2: (sample_count, sample_delta) runs, both uint32."""
    f = Fields(buf, box, "parse_stts", where)
    f.full_box()
    entries = f.array(">u4", 2 * f.u32(), "entry").reshape(-1, 2)
    return entries[:, 0], entries[:, 1]


def parse_ctts(buf: bytes, box: Box, where: str) -> tuple[np.ndarray, np.ndarray]:
    """CompositionOffsetBox §8.6.1.3: (sample_count uint32, sample_offset int32) runs."""
    f = Fields(buf, box, "parse_ctts", where)
    version, _ = f.full_box()
    if version > 1:
        raise bad_data(f"parse_ctts: unknown version {version} in {where}")
    entries = f.array(">u4", 2 * f.u32(), "entry").reshape(-1, 2)
    return entries[:, 0], entries[:, 1].view(np.int32)


def parse_stsz(buf: bytes, box: Box, where: str) -> SampleSizes:
    """SampleSizeBox §8.7.3.2 (sample_size 0 = a table follows) and CompactSampleSizeBox §8.7.3.3 (stz2: 4, 8 or 16
    bit entries; with 4 bits the high nibble comes first)."""
    if box.type == "stsz":
        f = Fields(buf, box, "parse_stsz", where)
        f.full_box()
        uniform, count = f.u32(), f.u32()
        if count > MAX_SAMPLES:
            raise bad_data(f"parse_stsz: sample_count {count} is more than we accept in {where}")
        if uniform:
            return SampleSizes(count, None, uniform)
        return SampleSizes(count, f.array(">u4", count, "sample"))
    f = Fields(buf, box, "parse_stz2", where)
    f.full_box()
    f.skip(3)
    field_size, count = f.u8(), f.u32()
    if field_size == 16:
        return SampleSizes(count, f.array(">u2", count, "sample").astype(np.uint32))
    if field_size == 8:
        return SampleSizes(count, f.array("u1", count, "sample").astype(np.uint32))
    if field_size == 4:
        packed = f.array("u1", (count + 1) // 2, "sample")
        nibbles = np.empty(2 * len(packed), dtype=np.uint32)
        nibbles[0::2] = packed >> 4
        nibbles[1::2] = packed & 0x0F
        return SampleSizes(count, nibbles[:count])
    raise bad_data(f"parse_stz2: field_size {field_size} is not 4, 8 or 16 in {where}")


def parse_stsc(buf: bytes, box: Box, where: str) -> tuple[np.ndarray, np.ndarray]:
    """SampleToChunkBox §8.7.4: (first_chunk, samples_per_chunk, sample_description_index) runs; the description
    index is ignored (we use the first sample entry)."""
    f = Fields(buf, box, "parse_stsc", where)
    f.full_box()
    entries = f.array(">u4", 3 * f.u32(), "entry").reshape(-1, 3)
    return entries[:, 0], entries[:, 1]


def parse_chunk_offsets(buf: bytes, box: Box, where: str) -> np.ndarray:
    """ChunkOffsetBox §8.7.5: stco (32-bit) or co64 (64-bit) absolute file offsets, as uint64."""
    f = Fields(buf, box, f"parse_{box.type}", where)
    f.full_box()
    dtype = ">u4" if box.type == "stco" else ">u8"
    return f.array(dtype, f.u32(), "chunk").astype(np.uint64)


def parse_stss(buf: bytes, box: Box, where: str) -> np.ndarray:
    """SyncSampleBox §8.6.2: 1-based numbers of the sync (key) samples."""
    f = Fields(buf, box, "parse_stss", where)
    f.full_box()
    return f.array(">u4", f.u32(), "entry")


def run_total(counts: np.ndarray, values: np.ndarray) -> float:
    """sum(count x value) of (count, value) runs, from the runs (float64: a limit check needs no exact ticks)."""
    return float(counts.astype(np.float64) @ values.astype(np.float64))


def check_chunk_overlap(chunk_spans: list, where: str, moov: tuple[int, int] | None = None) -> None:
    """Sample data of the file's tracks may not share bytes: sort all chunks by start and require each to end by the
    next one's start (real muxers write disjoint chunks; shared bytes would let a small file make huge segments).
    Nor may it lie in the ``moov`` box's (start, end) bytes: media is never inside the metadata."""
    if not chunk_spans:
        return
    starts = np.concatenate([s for s, _ in chunk_spans])
    ends = np.concatenate([e for _, e in chunk_spans])
    full = ends > starts  # chunks of zero bytes share nothing
    starts, ends = starts[full], ends[full]
    if moov is not None:
        inside = np.flatnonzero((starts < moov[1]) & (ends > moov[0]))
        if len(inside):
            i = int(inside[0])
            raise bad_data(f"check_chunk_overlap: sample data at {starts[i]}..{ends[i]} lies in the moov box "
                           f"({moov[0]}..{moov[1]}) in {where}")
    if len(starts) < 2:
        return
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    bad = np.flatnonzero(ends[:-1] > starts[1:])
    if len(bad):
        i = int(bad[0])
        raise bad_data(f"check_chunk_overlap: sample data at {starts[i]}..{ends[i]} overlaps data at {starts[i + 1]} "
                       f"({len(bad)} overlapping chunks) in {where}")


def _expand_runs(counts: np.ndarray, values: np.ndarray, n: int, func: str, box: str, where: str) -> np.ndarray:
    total = int(counts.sum(dtype=np.uint64))
    if total != n:
        raise bad_data(f"{func}: {box} describes {total} samples but stsz has {n} in {where}")
    return np.repeat(values, counts.astype(np.int64))


def _exclusive_cumsum(values: np.ndarray, length: int) -> np.ndarray:
    """[0, v0, v0+v1, ...] as int64, ``length`` items. Widened first, then summed in place: numpy's casting
    cumsum (and a cumsum into a separate fresh array) runs ~10x slower on large arrays."""
    out = np.empty(length, dtype=np.int64)
    if length:
        out[0] = 0
        out[1:] = values[: length - 1]
        np.cumsum(out[1:], out=out[1:])
    return out


def sample_offsets(sizes: np.ndarray, first_chunk: np.ndarray, samples_per_chunk: np.ndarray,
                   chunk_offsets: np.ndarray, where: str, chunk_spans: list | None = None) -> tuple[np.ndarray, int]:
    """File offset of every sample (int64) from stsc runs and chunk offsets, and where the sample data ends (the
    furthest end of a chunk's samples). ``chunk_spans`` gets (starts, ends) of the chunks holding bytes, int64, so
    that the demuxer can check that no two chunks of a file share bytes (within a chunk samples are contiguous)."""
    n, n_chunks = len(sizes), len(chunk_offsets)
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    if len(first_chunk) == 0:
        raise bad_data(f"sample_offsets: empty stsc for {n} samples in {where}")
    first = first_chunk.astype(np.int64)
    if first[0] < 1:
        raise bad_data(f"parse_stsc: first_chunk 0 in {where}")
    if (np.diff(first) <= 0).any():
        raise bad_data(f"parse_stsc: first_chunk not increasing in {where}")
    if first[-1] > n_chunks:
        raise bad_data(f"parse_stsc: first_chunk {first[-1]} beyond the {n_chunks} chunks of stco in {where}")
    if chunk_offsets.max() > _MAX_OFFSET:
        raise bad_data(f"sample_offsets: chunk offset out of range in {where}")
    runs = np.diff(np.append(first, n_chunks + 1))  # chunks in each run
    spc = samples_per_chunk.astype(np.int64)
    total = int((spc * runs).sum())
    if total != n:
        raise bad_data(f"parse_stsc: chunks hold {total} samples but stsz has {n} in {where}")
    per_chunk = np.zeros(n_chunks, dtype=np.int64)  # chunks before the first run hold no sample
    per_chunk[first[0] - 1 :] = np.repeat(spc, runs)
    csum = _exclusive_cumsum(sizes, n + 1)  # csum[i] = bytes of the samples before sample i
    chunk_end = np.cumsum(per_chunk)  # one past each chunk's last sample
    base = chunk_offsets.astype(np.int64)
    base -= csum[chunk_end - per_chunk]
    ends = base + csum[chunk_end]
    held = per_chunk > 0
    every = bool(held.all())  # the usual case: skip copies (one chunk per sample makes these arrays n long)
    data_end = int(ends.max() if every else np.where(held, ends, 0).max())
    if chunk_spans is not None:
        starts = chunk_offsets.view(np.int64) if chunk_offsets.dtype == np.uint64 else chunk_offsets.astype(np.int64)
        chunk_spans.append((starts, ends) if every else (starts[held], ends[held]))
    offsets = np.repeat(base, per_chunk)
    offsets += csum[:-1]
    return offsets, data_end


def build_sample_table(stts: tuple[np.ndarray, np.ndarray], ctts: tuple[np.ndarray, np.ndarray] | None,
                       stsz: SampleSizes, stsc: tuple[np.ndarray, np.ndarray], chunk_offsets: np.ndarray,
                       stss: np.ndarray | None, where: str, file_size: int | None = None,
                       chunk_spans: list | None = None) -> tuple[SampleTable, int]:
    """Expand and cross-check the parsed boxes of one track. Sample data must end by ``file_size`` when given;
    ``chunk_spans`` collects the byte spans of its chunks (see ``sample_offsets``).

    Returns the table and ``cts_shift``, what was added to every composition offset to make them all >= 0 (ctts
    version 1); the track's edit offset must grow by as much."""
    n = stsz.count
    if file_size is not None and stsz.sizes is None and n * stsz.uniform > file_size:
        raise bad_data(f"build_sample_table: {n} samples of {stsz.uniform} bytes cannot fit the file in {where}")
    durations = _expand_runs(stts[0], stts[1], n, "parse_stts", "stts", where)
    sizes = stsz.expand()
    offsets, data_end = sample_offsets(sizes, stsc[0], stsc[1], chunk_offsets, where, chunk_spans)
    if file_size is not None and data_end > file_size:
        raise bad_data(f"build_sample_table: sample data ends at {data_end}, past the end of the file ({file_size}) "
                       f"in {where}")
    dts = _exclusive_cumsum(durations[:-1], n)
    cts_shift = 0
    if ctts is None:
        cts = np.zeros(n, dtype=np.int32)
    else:
        cts = _expand_runs(ctts[0], ctts[1], n, "parse_ctts", "ctts", where)
        if n and cts.min() < 0:
            # ctts v1 (negative offsets): shift so that pts >= dts, as ffmpeg does (its dts_shift); the caller adds
            # the shift to the edit offset, so presentation times do not move.
            cts_shift = -int(cts.min())
            if int(cts.max()) + cts_shift > np.iinfo(np.int32).max:
                raise bad_data(f"parse_ctts: composition offsets span more than 2**31 ticks in {where}")
            cts = (cts.astype(np.int64) + cts_shift).astype(np.int32)
    if stss is None or len(stss) == 0:  # an empty stss is read as absent, as ffmpeg does (QuickTime writes them)
        keyframe = np.ones(n, dtype=np.bool_)
    else:
        keyframe = np.zeros(n, dtype=np.bool_)
        if stss.min() < 1 or stss.max() > n:
            raise bad_data(f"parse_stss: sync sample number out of range 1..{n} in {where}")
        keyframe[stss.astype(np.int64) - 1] = True
    table = SampleTable(offsets=offsets.view(np.uint64), sizes=sizes, dts=dts, cts=cts, durations=durations,
                        keyframe=keyframe)
    return table, cts_shift
