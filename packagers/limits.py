"""How much work one file may ask of us: checked before the allocation each limit guards (issue 10).

A file's tables are a promise of work: a 600 KB moov can claim 2**24 samples per track or a duration of centuries.
``Limits`` says what we accept; everything beyond it is ``PackagerError(BAD_DATA)`` raised from the counts and sums of
the box headers and runs, before the per-sample arrays (or a segment grid) are allocated. The frame limits are
nginx-vod-module's ``vod_max_frame_count`` and ``vod_segment_max_frame_count``, with its defaults.

Memory bound, by design (numbers for the default ``max_frame_count`` F = 2**20):

* moov bytes read: at most ``moov_size_limit`` = 16 MB + 32 B x F (48 MB); real files need 7-18 B per frame
  (ffmpeg output: 6.8 for the 2-hour bench file, 12-18 for the fixtures), 32 covers a per-sample stsz, co64, stts,
  ctts and stss together.
* parse: the boxes' tables are copied out of moov (at most the moov's size again), the resident SampleTable is 29 B
  per frame (offsets 8, sizes 4, dts 8, cts 4, durations 4, keyframe 1) and expanding it needs int64 transients
  (cumulative sizes, per-chunk bases and ends, 8 B each per sample or chunk). Measured worst case, a moov of 32 B
  per frame with one sample per chunk: 118 B per frame in all, moov included; ``fixtures.hostile.dense_moov_file``
  makes that file and tests/packagers/test_limits.py holds its tracemalloc peak under 16 MB + 128 B x F.
* planning and manifests: per track int64 presentation times, sorted sync times and cumulative sizes, transient:
  ~42 B per frame measured for a plan, on top of the cached table.
* a segment: at most ``segment_max_frame_count`` frames, whose bytes come from inside the file with no two chunks
  sharing bytes (and, on a filesystem that reports st_blocks, no more bytes than the file holds).

So a request's peak memory is at most ~16 MB + 128 B x max_frame_count (~150 MB with the defaults) plus twice the
bytes it sends (the buffers read and the muxed output), whatever the file claims.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_frame_count: int = 1 << 20  # samples of all packaged tracks of one file
    segment_max_frame_count: int = 1 << 16  # samples of all tracks in one segment
    max_segments: int = 100_000  # entries of one segment grid (plan)
    max_segment_seconds: float = 3600.0  # longest segment, any track
    min_segment_seconds: float = 0.001  # shortest: what HLS EXTINF (3 decimals) can still state as more than 0
    max_duration_seconds: float = 31 * 86400.0  # longest track
    max_timescale: int = (1 << 31) - 1  # mdhd/mvhd timescale; 0 is always BAD_DATA
    moov_base_bytes: int = 16 << 20  # moov accepted = base + per-frame bytes x max_frame_count
    moov_bytes_per_frame: int = 32  # stsz 4 + co64 8 + stts 8 + ctts 8 + stss 4, every table per sample
    sparse_slack_bytes: int = 1 << 20  # sample bytes may exceed a file's allocated bytes by this + 1/8 of them

    def __post_init__(self) -> None:
        for name in ("max_frame_count", "segment_max_frame_count", "max_segments", "max_timescale"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits: {name} must be >= 1")
        if not (0 < self.min_segment_seconds <= self.max_segment_seconds and self.max_duration_seconds > 0):
            raise ValueError("Limits: durations must be > 0")

    @property
    def moov_size_limit(self) -> int:
        return self.moov_base_bytes + self.moov_bytes_per_frame * self.max_frame_count

    @property
    def request_memory_bytes(self) -> int:
        """The working memory one request may need beyond twice the bytes it sends (see the module docstring)."""
        return (16 << 20) + 128 * self.max_frame_count

    def sample_bytes_limit(self, allocated_bytes: int | None) -> int | None:
        """How many sample bytes a file with ``allocated_bytes`` on disk (st_blocks x 512) may claim; None when
        unknown (0 or None: some filesystems do not report blocks)."""
        if not allocated_bytes:
            return None
        return allocated_bytes + allocated_bytes // 8 + self.sparse_slack_bytes


DEFAULT_LIMITS = Limits()
