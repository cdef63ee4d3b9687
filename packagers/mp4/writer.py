"""An incremental progressive-MP4 writer (ISO/IEC 14496-12): ftyp + mdat while samples arrive, moov at the end.

Made for recording live streams: the caller appends ``header()`` once, then what every ``add()`` returns, and at the
end ``finish()`` gives the moov to append and 16 bytes to write over the mdat header. No I/O here: bytes in, bytes out.
When a write fails (a full disk), ``truncate(size)`` limits the file to the samples wholly in its first ``size`` bytes.

The mdat header's size is only known at the end, and whether it needs 64 bits too, so ``header()`` reserves 16 bytes
as ffmpeg's mov muxer does: ``free`` (8 bytes) + ``mdat`` with size 0 ("to the end of the file", §4.2, so an
unfinished file still reads as ftyp + mdat). ``finish()`` patches them to ``free`` + ``mdat`` of 32-bit size, or to
one ``mdat`` with a 64-bit largesize when the media passed 4 GiB (readers such as pymp4 know only the first form).

Per sample only five integers are kept, in growable ``array('q')`` columns (a 24-hour recording has ~8M samples).
The moov tables are built from them with numpy at ``finish()``:

* stts / ctts: run-length of decode deltas / composition offsets (ctts only when one is not 0; version 1 when one
  is negative, §8.6.1.3);
* stss for video (sync samples); stsz; a chunk is a run of samples contiguous in the file (stsc run-length of the
  samples per chunk); stco, or co64 once an offset passes 2**32 (§8.7.5);
* edts/elst (§8.6.6) when the track's first presentation time is not movie time 0: the caller's time 0 is movie time
  0, so a track presented from t > 0 gets an empty edit of t, and media time that precedes 0 (B-frame delay, AAC
  priming, as ffmpeg writes them) is skipped by the media edit's media_time — exactly what ``demux.parse_elst``
  reads back as the track's ``edit_offset``.
"""
from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..codecs.box import HEADER, box, box_header, box_header_size, full_box
from ..errors import ErrorCode, PackagerError, bad_request
from ..fmp4.boxes import I16, U16, U32, U64, file_type
from ..fmp4.init import audio_sample_entry, language_code, visual_sample_entry
from ..model import CodecConfig, SampleTable, Track, TrackKind

__all__ = ["Mp4Writer", "TrackSpec", "mdat_header", "movie_box", "movie_file_type", "sample_table_boxes"]

MOVIE_TIMESCALE = 1000
_MATRIX = b"".join(U32(v) for v in (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000))
_U32_MAX = 0xFFFFFFFF
_I32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class TrackSpec:
    """One track to write: its codec (sample entry), the timescale of the times given to ``add``, its language."""

    kind: TrackKind
    codec: CodecConfig
    timescale: int
    language: str = "und"


class _Columns:
    """The sample table of one track as it grows: 25 bytes per sample in machine arrays, no Python object each."""

    __slots__ = ("offsets", "sizes", "dts", "cts", "keyframe")

    def __init__(self) -> None:
        self.offsets, self.dts = array("q"), array("q")
        self.sizes, self.cts, self.keyframe = array("I"), array("i"), array("b")

    def table(self, last_duration: int | None, copy: bool, count: int) -> SampleTable:
        """Numpy views of the first ``count`` rows (copies when ``copy``: a view pins the arrays: they cannot grow)."""

        def column(a: array, t: type) -> np.ndarray:
            view = np.frombuffer(a, t)[:count]
            return view.copy() if copy else view
        dts = column(self.dts, np.int64)
        durations = np.empty(len(dts), dtype=np.int64)
        np.subtract(dts[1:], dts[:-1], out=durations[:-1])
        # The last sample has no successor: the caller's duration, else the one before it (1 for a lone sample).
        durations[-1] = last_duration if last_duration is not None else durations[-2] if len(dts) > 1 else 1
        return SampleTable(offsets=column(self.offsets, np.int64).view(np.uint64), sizes=column(self.sizes, np.uint32),
                           dts=dts, cts=column(self.cts, np.int32), durations=durations.astype(np.uint32),
                           keyframe=column(self.keyframe, np.int8).view(np.bool_))


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-length encoding: (start index, length) of each run of equal values."""
    n = len(values)
    starts = np.concatenate(([0], np.flatnonzero(values[1:] != values[:-1]) + 1)) if n else np.zeros(0, np.int64)
    return starts, np.diff(np.append(starts, n))


def _entries(*columns: np.ndarray, dtype: str = ">u4") -> bytes:
    """Box table entries: the columns interleaved row by row, big endian."""
    out = np.empty((len(columns[0]), len(columns)), dtype=dtype)
    for i, column in enumerate(columns):
        out[:, i] = column
    return out.tobytes()


def sample_table_boxes(samples: SampleTable, *, video: bool) -> list[bytes]:
    """stts, ctts (if any offset is not 0), stss (video), stsc, stsz, stco/co64 of ``samples`` (§8.6-8.7)."""
    n = len(samples)
    starts, counts = _runs(samples.durations)
    out = [full_box(b"stts", 0, 0, U32(len(starts)), _entries(counts, samples.durations[starts]))]
    if n and samples.cts.any():
        starts, counts = _runs(samples.cts)
        negative = bool(samples.cts.min() < 0)
        offsets = samples.cts[starts].astype(np.int64)
        table = _entries(counts, offsets.astype(np.int32).view(np.uint32) if negative else offsets)
        out.append(full_box(b"ctts", 1 if negative else 0, 0, U32(len(starts)), table))
    if video:
        sync = np.flatnonzero(samples.keyframe) + 1
        out.append(full_box(b"stss", 0, 0, U32(len(sync)), sync.astype(">u4").tobytes()))
    # A chunk is a run of samples that follow each other in the file (interleaving starts a new one).
    offsets = samples.offsets.astype(np.int64)
    breaks = offsets[1:] != offsets[:-1] + samples.sizes[:-1].astype(np.int64)
    chunk_starts = np.concatenate(([0], np.flatnonzero(breaks) + 1)) if n else np.zeros(0, np.int64)
    per_chunk = np.diff(np.append(chunk_starts, n))
    run_starts, _ = _runs(per_chunk)
    out.append(full_box(b"stsc", 0, 0, U32(len(run_starts)),
                        _entries(run_starts + 1, per_chunk[run_starts], np.ones(len(run_starts), np.int64))))
    sizes = samples.sizes
    if n and (sizes == sizes[0]).all():
        out.append(full_box(b"stsz", 0, 0, U32(int(sizes[0])), U32(n)))
    else:
        out.append(full_box(b"stsz", 0, 0, U32(0), U32(n), sizes.astype(">u4").tobytes()))
    chunk_offsets = samples.offsets[chunk_starts]
    if len(chunk_offsets) and int(chunk_offsets.max()) > _U32_MAX:
        out.append(full_box(b"co64", 0, 0, U32(len(chunk_offsets)), chunk_offsets.astype(">u8").tobytes()))
    else:
        out.append(full_box(b"stco", 0, 0, U32(len(chunk_offsets)), chunk_offsets.astype(">u4").tobytes()))
    return out


def mdat_header(reserved_at: int, end: int) -> bytes:
    """The 16 bytes at ``reserved_at`` for an mdat whose data runs from ``reserved_at + 16`` to ``end``: an empty
    free box and a compact mdat header, or an mdat header with a largesize when the data does not fit 32 bits."""
    payload = end - reserved_at - 16
    mdat = box_header(b"mdat", payload)
    return mdat if box_header_size(payload) == 16 else box_header(b"free", 0) + mdat


def _rescale(value: int, from_timescale: int, to_timescale: int) -> int:
    return (2 * value * to_timescale + from_timescale) // (2 * from_timescale)


def _times(version_one: bool, *values: int) -> bytes:
    return b"".join((U64 if version_one else U32)(v) for v in values)


class Mp4Writer:
    """``header()``, then ``add()`` per sample in file order (decode order within a track), then ``finish()``.

    Times are integers in each track's timescale; the caller's time 0 is the movie's time 0. Decode times must not
    go backwards within a track."""

    def __init__(self, tracks: Sequence[TrackSpec], *, movie_timescale: int = MOVIE_TIMESCALE) -> None:
        kinds = [t.kind for t in tracks]
        if not tracks or len(set(kinds)) != len(kinds) or any(t.timescale <= 0 for t in tracks):
            raise bad_request(f"Mp4Writer: need one video and/or one audio track with a timescale > 0, got {kinds}")
        self.specs = {t.kind: t for t in tracks}
        self.movie_timescale = movie_timescale
        self._columns = {t.kind: _Columns() for t in tracks}
        self._mdat_start: int | None = None
        self.position = 0  # bytes handed out so far = the size of the file being written
        self.finished = False
        self._kept: dict[str, int] | None = None   # samples per kind that truncate() kept (None: all)

    def header(self) -> bytes:
        ftyp = movie_file_type([t.codec for t in self.specs.values()])
        if self._mdat_start is not None:
            raise bad_request("Mp4Writer.header: called twice")
        self._mdat_start = len(ftyp)
        # mdat size 0 ("to the end of the file", §4.2) until finish() patches the real size
        out = ftyp + box_header(b"free", 0) + HEADER.pack(0, b"mdat")
        self.position = len(out)
        return out

    @property
    def patch_offset(self) -> int:
        """File offset of the 16 bytes ``finish()`` patches (the free + mdat headers)."""
        if self._mdat_start is None:
            raise bad_request("Mp4Writer: header() first")
        return self._mdat_start

    def samples(self, kind: str) -> int:
        if kind not in self._columns:
            return 0
        return len(self._columns[kind].dts) if self._kept is None else self._kept[kind]

    def truncate(self, size: int) -> int:
        """Keep only the samples whose bytes lie wholly within the file's first ``size`` bytes (a write failed there:
        the rest never reached the disk) and return the new end of the mdat. Allowed after ``finish()``, which may
        then be called once more; ``add()`` is not allowed any more."""
        if self._mdat_start is None:
            raise bad_request("Mp4Writer.truncate: header() first")
        end = self._mdat_start + 16
        kept = {}
        for kind, columns in self._columns.items():
            n = len(columns.dts) if self._kept is None else self._kept[kind]
            offsets = np.frombuffer(columns.offsets, np.int64)[:n]
            ends = offsets + np.frombuffer(columns.sizes, np.uint32)[:n]   # non-decreasing: appended in file order
            kept[kind] = int(np.searchsorted(ends, size, side="right"))
            if kept[kind]:
                end = max(end, int(ends[kept[kind] - 1]))
        self._kept, self.position, self.finished = kept, end, False
        return end

    def add(self, kind: str, dts: int, cts: int, keyframe: bool, data: bytes) -> bytes:
        """Record one sample and return the bytes to append (``data`` itself: mdat holds the samples as they are)."""
        columns = self._columns.get(kind)
        if columns is None:
            raise bad_request(f"Mp4Writer.add: no {kind} track")
        if self._mdat_start is None or self.finished or self._kept is not None:
            raise bad_request("Mp4Writer.add: header() first, and nothing after finish() or truncate()")
        if columns.dts and dts < columns.dts[-1]:
            raise bad_request(f"Mp4Writer.add: {kind} dts {dts} before the previous {columns.dts[-1]}")
        if not _I32.min <= cts <= _I32.max:
            raise bad_request(f"Mp4Writer.add: {kind} composition offset {cts} does not fit 32 bits")
        columns.offsets.append(self.position)
        columns.sizes.append(len(data))
        columns.dts.append(dts)
        columns.cts.append(cts)
        columns.keyframe.append(1 if keyframe else 0)
        self.position += len(data)
        return data

    def tracks(self, last_durations: Mapping[str, int] | None = None) -> tuple[Track, ...]:
        """The media model of what was written (tracks with samples, video first), as our demuxer will read it."""
        out = []
        for kind, spec in sorted(self.specs.items(), key=lambda kv: kv[0] != "video"):
            columns, count = self._columns[kind], self.samples(kind)
            if not count:
                continue
            table = columns.table((last_durations or {}).get(kind), copy=not self.finished, count=count)
            out.append(Track(len(out) + 1, spec.kind, spec.timescale, spec.codec, table, language=spec.language))
        return tuple(out)

    def finish(self, last_durations: Mapping[str, int] | None = None) -> tuple[int, bytes, bytes]:
        """(``patch_offset``, the 16 bytes to write there, the moov to append). ``last_durations`` by kind: the duration
        of each track's last sample (default: the one before it). NO_STREAMS when no sample was added."""
        if self._mdat_start is None or self.finished:
            raise bad_request("Mp4Writer.finish: header() first, and only once")
        if not any(self.samples(kind) for kind in self._columns):
            raise PackagerError(ErrorCode.NO_STREAMS, "Mp4Writer.finish: no sample was added")
        self.finished = True    # from here the columns never grow: the tables may be views of them
        tracks = self.tracks(last_durations)
        moov = movie_box(tracks, [self._edits(t) for t in tracks], self.movie_timescale)
        return self._mdat_start, mdat_header(self._mdat_start, self.position), moov

    def _edits(self, track: Track) -> list[tuple[int, int]]:
        """elst entries as (segment_duration in movie timescale, media_time)."""
        s, ts = track.samples, track.timescale
        pts = s.pts
        first_dts, first_pts = int(s.dts[0]), int(pts.min())
        end = int((pts + s.durations.astype(np.int64)).max())
        start = max(first_pts, 0)  # where on the movie timeline the track is first presented
        media_time = max(start - first_dts, 0)  # the media time presented there (stts starts at 0)
        edits = []
        if start > 0:
            edits.append((_rescale(start, ts, self.movie_timescale), -1))
        edits.append((_rescale(end - start, ts, self.movie_timescale), media_time))
        return edits


def movie_file_type(codecs: Sequence[CodecConfig]) -> bytes:
    """The ftyp of a progressive MP4 with tracks of these codecs (ffmpeg's brands)."""
    h264 = any(c.codec == "h264" for c in codecs)
    return file_type(b"ftyp", b"isom", 0x200, (b"isom", b"iso2", *((b"avc1",) if h264 else ()), b"mp41"))


def movie_box(tracks: Sequence[Track], edits: Sequence[list[tuple[int, int]]], movie_timescale: int) -> bytes:
    """moov of ``tracks`` whose sample offsets are where their bytes are in the file; ``edits`` per track: its elst
    entries as (segment_duration in ``movie_timescale``, media_time)."""
    traks, duration = [], 0
    for track, track_edits in zip(tracks, edits):
        movie_duration = sum(d for d, _ in track_edits)
        traks.append(_trak(track, track_edits, movie_duration))
        duration = max(duration, movie_duration)
    v1 = duration > _U32_MAX
    mvhd = full_box(b"mvhd", int(v1), 0, _times(v1, 0, 0), U32(movie_timescale), _times(v1, duration),
                    U32(0x00010000), U16(0x0100), bytes(10), _MATRIX, bytes(24), U32(len(tracks) + 1))
    return box(b"moov", mvhd, *traks)


def _trak(track: Track, edits: list[tuple[int, int]], movie_duration: int) -> bytes:
    s, video = track.samples, track.kind == "video"
    media_duration = int(s.durations.sum(dtype=np.uint64))
    v1 = movie_duration > _U32_MAX
    tkhd = full_box(
        b"tkhd", int(v1), 0x3,  # track_enabled | track_in_movie
        _times(v1, 0, 0), U32(track.track_id), bytes(4), _times(v1, movie_duration),
        bytes(8), U16(0), U16(0), U16(0 if video else 0x0100), bytes(2), _MATRIX,
        U32(track.codec.width << 16 if video else 0), U32(track.codec.height << 16 if video else 0),
    )  # fmt: skip
    parts = [tkhd]
    if edits != [(movie_duration, 0)]:  # anything but one edit of the whole media from 0
        e1 = any(d > _U32_MAX for d, _ in edits)
        entries = b"".join(_times(e1, d) + (struct.pack(">q", m) if e1 else struct.pack(">i", m)) + U16(1) + I16(0)
                           for d, m in edits)
        parts.append(box(b"edts", full_box(b"elst", int(e1), 0, U32(len(edits)), entries)))
    m1 = media_duration > _U32_MAX
    mdhd = full_box(b"mdhd", int(m1), 0, _times(m1, 0, 0), U32(track.timescale), _times(m1, media_duration),
                    U16(language_code(track.language)), U16(0))
    handler, name = (b"vide", b"VideoHandler\0") if video else (b"soun", b"SoundHandler\0")
    hdlr = full_box(b"hdlr", 0, 0, U32(0), handler, bytes(12), name)
    media_header = full_box(b"vmhd", 0, 1, bytes(8)) if video else full_box(b"smhd", 0, 0, bytes(4))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, U32(1), full_box(b"url ", 0, 1)))
    entry = visual_sample_entry(track) if video else audio_sample_entry(track)
    stbl = box(b"stbl", full_box(b"stsd", 0, 0, U32(1), entry), *sample_table_boxes(s, video=video))
    parts.append(box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl)))
    return box(b"trak", *parts)
