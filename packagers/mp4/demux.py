"""MP4 (ISO/IEC 14496-12) to ``Presentation``: find moov without touching mdat, then parse the tracks.

``read_presentation`` scans the top-level boxes by reading only their headers (moov may come before or after mdat),
reads moov in one call and hands it to ``parse_moov``. Tracks whose handler is not vide/soun (text, tmcd, hint...)
or whose sample entry is not H.264/HEVC/AAC are skipped, and so are tracks without samples; a file left with no
track is NO_STREAMS. Everything malformed is ``PackagerError(BAD_DATA)`` with a one-line message naming the function
and the track.

``Limits`` (packagers/limits.py) bound the work: the moov size, the frames of all tracks (checked from the stsz header
before a table is expanded), track durations (from the stts runs) and timescales, sample bytes against the bytes the
file really holds (sparse files), and no two chunks of the file may share bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import ErrorCode, PackagerError, bad_data
from ..limits import DEFAULT_LIMITS, Limits
from ..model import Presentation, Track, TrackKind
from .boxes import Box, Fields, children, iter_boxes, parse_header
from .sample_entry import parse_stsd
from .tables import (MAX_SAMPLES, SampleSizes, build_sample_table, check_chunk_overlap, parse_chunk_offsets, parse_ctts,
                     parse_stsc, parse_stss, parse_stsz, parse_stts, run_total)

Read = Callable[[int, int], bytes]
MAX_TOP_LEVEL_BOXES = 100_000  # a fragmented file has a moof+mdat pair per fragment, but its moov comes first
HANDLERS: dict[str, TrackKind] = {"vide": "video", "soun": "audio"}


@dataclass
class _Budget:
    """What the tracks parsed so far used of the file's limits, checked before each track's table is expanded."""

    limits: Limits
    sample_bytes_limit: int | None  # None: the file's allocated bytes are unknown
    frames: int = 0
    sample_bytes: int = 0
    chunk_spans: list = field(default_factory=list)
    moov_span: tuple[int, int] | None = None  # (start, end) of moov in the file, when parsing from a file


def find_moov(read: Read, file_size: int, where: str) -> tuple[Box, str]:
    """The top-level moov box and the ftyp major brand ("" without ftyp). Reads 16 bytes per top-level box."""
    pos, brand = 0, ""
    for _ in range(MAX_TOP_LEVEL_BOXES):
        if file_size - pos < 8:
            break
        header = bytes(read(pos, 16)[:16])
        box = parse_header(header, pos, file_size, where, parent="the end of the file")
        if box.type == "moov":
            return box, brand
        if box.type == "ftyp" and box.header_size == 8 and box.size >= 12 and len(header) >= 12:
            brand = header[8:12].decode("latin-1")
        pos = box.end
    raise bad_data(f"find_moov: no moov box in {where}")


def read_presentation(read: Read, file_size: int, source: str = "", *, limits: Limits = DEFAULT_LIMITS,
                      allocated_bytes: int | None = None) -> Presentation:
    """Parse the movie of a file of ``file_size`` bytes; ``read(offset, size)`` returns up to ``size`` bytes.

    Sample offsets are checked against ``file_size``, so a file cut inside mdat is BAD_DATA here, not at segment
    time. ``allocated_bytes`` (st_blocks x 512, when the filesystem reports it) bounds the sample bytes a sparse
    file may claim."""
    where = source or "file"
    moov, brand = find_moov(read, file_size, where)
    if moov.size > limits.moov_size_limit:
        raise bad_data(f"read_presentation: moov of {moov.size} bytes is larger than the {limits.moov_size_limit} "
                       f"we accept in {where}")
    data = bytes(read(moov.start, moov.size))
    if len(data) != moov.size:
        raise bad_data(f"read_presentation: moov truncated ({len(data)} of {moov.size} bytes read) in {where}")
    budget = _Budget(limits, limits.sample_bytes_limit(allocated_bytes), moov_span=(moov.start, moov.end))
    return _parse_movie(data, Box("moov", 0, moov.header_size, moov.size), source, file_size, brand, budget)


def parse_moov(moov: bytes, source: str = "", *, file_size: int | None = None, brand: str = "",
               limits: Limits = DEFAULT_LIMITS) -> Presentation:
    """Parse a moov box given whole (header included, as read from the file) or as its bare payload.

    Without ``file_size`` sample offsets are not checked against the file (``read_presentation`` does it)."""
    where = source or "moov"
    if len(moov) >= 8 and moov[4:8] == b"moov":
        box = parse_header(bytes(moov[:16]), 0, len(moov), where, parent="the end of the moov bytes given")
    else:
        box = Box("moov", 0, 0, len(moov))
    return _parse_movie(moov, box, source, file_size, brand, _Budget(limits, None))


def _parse_movie(buf: bytes, moov: Box, source: str, file_size: int | None, brand: str,
                 budget: _Budget) -> Presentation:
    where = source or "moov"
    mvhd, traks = None, []
    for box in iter_boxes(buf, moov.payload_start, moov.end, where):
        if box.type == "mvhd" and mvhd is None:
            mvhd = box
        elif box.type == "trak":
            traks.append(box)
        elif box.type == "mvex":
            raise PackagerError(ErrorCode.UNSUPPORTED, f"parse_moov: fragmented MP4 (mvex) in {where}")
        elif box.type == "cmov":
            raise PackagerError(ErrorCode.UNSUPPORTED, f"parse_moov: compressed moov (cmov) in {where}")
    if mvhd is None:
        raise bad_data(f"parse_moov: no mvhd in {where}")
    timescale = parse_mvhd(buf, mvhd, where, budget.limits)
    tracks = [t for trak in traks if (t := parse_trak(buf, trak, timescale, source, file_size, budget)) is not None]
    if not tracks:
        raise PackagerError(ErrorCode.NO_STREAMS,
                            f"parse_moov: no H.264, HEVC, AV1 or AAC track with samples in {where}")
    check_chunk_overlap(budget.chunk_spans, where, budget.moov_span)
    return Presentation(tracks=tuple(tracks), source=source, timescale=timescale, brand=brand)


def parse_mvhd(buf: bytes, box: Box, where: str, limits: Limits = DEFAULT_LIMITS) -> int:
    """MovieHeaderBox §8.2.2: the movie timescale (edit list durations are in it)."""
    f = Fields(buf, box, "parse_mvhd", where)
    version, _ = f.full_box()
    f.skip(16 if version == 1 else 8)
    timescale = f.u32()
    if timescale == 0:
        raise bad_data(f"parse_mvhd: timescale 0 in {where}")
    if timescale > limits.max_timescale:
        raise bad_data(f"parse_mvhd: timescale {timescale} is more than {limits.max_timescale} in {where}")
    return timescale


def parse_tkhd(buf: bytes, box: Box, where: str) -> tuple[int, tuple[int, int]]:
    """TrackHeaderBox §8.3.2: track_ID and the 16.16 width/height (fallback for the sample entry's)."""
    f = Fields(buf, box, "parse_tkhd", where)
    version, _ = f.full_box()
    f.skip(16 if version == 1 else 8)
    track_id = f.u32()
    f.skip(4 + (8 if version == 1 else 4) + 8 + 8 + 36)
    return track_id, (f.u32() >> 16, f.u32() >> 16)


def decode_language(code: int) -> str:
    """mdhd language §8.4.2.3: three 5-bit letters, each + 0x60; anything else (QuickTime Mac codes) is 'und'."""
    letters = bytes(((code >> shift) & 0x1F) + 0x60 for shift in (10, 5, 0))
    return letters.decode("ascii") if letters.isalpha() and letters.islower() else "und"


def parse_mdhd(buf: bytes, box: Box, where: str, limits: Limits = DEFAULT_LIMITS) -> tuple[int, str]:
    """MediaHeaderBox §8.4.2: the track timescale and language."""
    f = Fields(buf, box, "parse_mdhd", where)
    version, _ = f.full_box()
    f.skip(16 if version == 1 else 8)
    timescale = f.u32()
    if timescale == 0:
        raise bad_data(f"parse_mdhd: timescale 0 in {where}")
    if timescale > limits.max_timescale:
        raise bad_data(f"parse_mdhd: timescale {timescale} is more than {limits.max_timescale} in {where}")
    f.skip(8 if version == 1 else 4)
    return timescale, decode_language(f.u16())


def parse_hdlr(buf: bytes, box: Box, where: str) -> str:
    """HandlerBox §8.4.3: handler_type (vide, soun, text, tmcd, hint...)."""
    f = Fields(buf, box, "parse_hdlr", where)
    f.full_box()
    f.skip(4)  # pre_defined
    return f.bytes(4).decode("latin-1")


def parse_elst(buf: bytes, box: Box, movie_timescale: int, timescale: int, where: str) -> int:
    """EditListBox §8.6.6 -> the track's edit offset (track timescale): leading empty edits (media_time -1) delay
    the media, the first media edit's media_time trims its start: ``media_time - empty_duration`` rescaled, rounded
    to nearest as ffmpeg does. Later edits are ignored."""
    f = Fields(buf, box, "parse_elst", where)
    version, _ = f.full_box()
    count = f.u32()
    if version == 1:
        words = f.array(">u4", 5 * count, "entry").reshape(-1, 5).astype(np.uint64)
        durations = (words[:, 0] << np.uint64(32)) | words[:, 1]
        media_times = ((words[:, 2] << np.uint64(32)) | words[:, 3]).view(np.int64)
    else:
        words = f.array(">u4", 3 * count, "entry").reshape(-1, 3)
        durations, media_times = words[:, 0].astype(np.uint64), words[:, 1].view(np.int32).astype(np.int64)
    media = np.flatnonzero(media_times != -1)
    if len(media) == 0:
        return 0
    first = int(media[0])
    media_time = int(media_times[first])
    if media_time < 0:
        raise bad_data(f"parse_elst: media_time {media_time} in {where}")
    empty = int(durations[:first].sum(dtype=np.uint64))
    return media_time - (2 * empty * timescale + movie_timescale) // (2 * movie_timescale)


def _required(boxes: dict[str, Box], names: tuple[str, ...], parent: str, where: str) -> Box:
    for name in names:
        if name in boxes:
            return boxes[name]
    raise bad_data(f"parse_trak: no {'/'.join(names)} in {parent} of {where}")


def check_budget(budget: _Budget, stsz: SampleSizes, stts: tuple[np.ndarray, np.ndarray], timescale: int,
                 where: str) -> None:
    """Charge one track to the file's budget from its box headers and runs, before anything per sample exists."""
    limits = budget.limits
    budget.frames += stsz.count
    if stsz.count > MAX_SAMPLES or budget.frames > limits.max_frame_count:
        raise bad_data(f"check_budget: {budget.frames} frames (stsz sample_count {stsz.count}) are more than the "
                       f"{limits.max_frame_count} we accept per file in {where}")
    seconds = run_total(stts[0], stts[1]) / timescale
    if seconds > limits.max_duration_seconds:
        raise bad_data(f"check_budget: stts describes {seconds:.0f} s, more than {limits.max_duration_seconds:.0f} s "
                       f"in {where}")
    if budget.sample_bytes_limit is not None:
        sizes = stsz.count * stsz.uniform if stsz.sizes is None else int(stsz.sizes.sum(dtype=np.uint64))
        budget.sample_bytes += sizes
        if budget.sample_bytes > budget.sample_bytes_limit:
            raise bad_data(f"check_budget: samples claim {budget.sample_bytes} bytes but the file holds about "
                           f"{budget.sample_bytes_limit} on disk in {where}")


def parse_trak(buf: bytes, trak: Box, movie_timescale: int, source: str, file_size: int | None,
               budget: _Budget | None = None) -> Track | None:
    """TrackBox §8.3.1 -> Track, or None for a track we do not package (other handler, other codec, no samples)."""
    budget = budget or _Budget(DEFAULT_LIMITS, None)
    where = f"track ? of {source}" if source else "track ?"
    kids = children(buf, trak, where)
    track_id, tkhd_size = parse_tkhd(buf, _required(kids, ("tkhd",), "trak", where), where)
    where = f"track {track_id} of {source}" if source else f"track {track_id}"
    mdia = children(buf, _required(kids, ("mdia",), "trak", where), where)
    kind = HANDLERS.get(parse_hdlr(buf, _required(mdia, ("hdlr",), "mdia", where), where))
    if kind is None:
        return None
    timescale, language = parse_mdhd(buf, _required(mdia, ("mdhd",), "mdia", where), where, budget.limits)
    minf = children(buf, _required(mdia, ("minf",), "mdia", where), where)
    stbl = children(buf, _required(minf, ("stbl",), "minf", where), where)
    codec = parse_stsd(buf, _required(stbl, ("stsd",), "stbl", where), kind, tkhd_size, where)
    if codec is None:
        return None
    stts = parse_stts(buf, _required(stbl, ("stts",), "stbl", where), where)
    stsz = parse_stsz(buf, _required(stbl, ("stsz", "stz2"), "stbl", where), where)
    check_budget(budget, stsz, stts, timescale, where)
    samples, cts_shift = build_sample_table(
        stts=stts,
        ctts=parse_ctts(buf, stbl["ctts"], where) if "ctts" in stbl else None,
        stsz=stsz,
        stsc=parse_stsc(buf, _required(stbl, ("stsc",), "stbl", where), where),
        chunk_offsets=parse_chunk_offsets(buf, _required(stbl, ("stco", "co64"), "stbl", where), where),
        stss=parse_stss(buf, stbl["stss"], where) if "stss" in stbl else None,
        where=where,
        file_size=file_size,
        chunk_spans=budget.chunk_spans,
    )
    if len(samples) == 0:
        return None
    edit_offset = 0
    if "edts" in kids:
        elst = children(buf, kids["edts"], where).get("elst")
        if elst is not None:
            edit_offset = parse_elst(buf, elst, movie_timescale, timescale, where)
    return Track(track_id=track_id, kind=kind, timescale=timescale, codec=codec, samples=samples,
                 edit_offset=edit_offset + cts_shift, language=language, source=source)
