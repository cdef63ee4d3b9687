"""The bootstrap information box ``abst`` with its segment run table ``asrt`` and fragment run table ``afrt``.

Adobe Flash Video File Format Specification 10.1, Annex F.3: F.3.1 ``abst`` (Bootstrap Info box), F.3.2 ``asrt``
(Segment Run Table box), F.3.3 ``afrt`` (Fragment Run Table box). A player reads the fragment table to learn which
fragment covers a time and requests ``<media url>Seg<segment>-Frag<fragment>``.

For VOD we write what nginx-vod-module writes: one segment holding every fragment (one ``SegmentRunEntry``
FirstSegment 1, FragmentsPerSegment = fragment count), and a fragment table in milliseconds whose entries are
run-length compressed (a ``FragmentRunEntry`` covers every following fragment of the same duration), closed by an
end-of-presentation entry (FragmentDuration 0, DiscontinuityIndicator 0).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..codecs.box import FULL_BOX_FIELDS_SIZE, HEADER_SIZE, LARGE_HEADER_SIZE, full_box, parse_header
from ..errors import PackagerError, bad_data
from ..media_set import MediaSet, Selection
from .timeline import HDS_TIMESCALE, fragment_times

END_OF_PRESENTATION = 0  # DiscontinuityIndicator values (F.3.3)
DISCONTINUITY_FRAGMENT_NUMBERING = 1
DISCONTINUITY_TIMESTAMPS = 2


class _Reader:
    """Bounded big-endian reads; any overrun is BAD_DATA."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None):
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise bad_data(f"bootstrap._Reader.take: {n} bytes wanted at {self.pos}, box ends at {self.end}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def string(self) -> str:
        """A null-terminated UTF-8 STRING (F.2)."""
        stop = self.data.find(b"\0", self.pos, self.end)
        if stop < 0:
            raise bad_data(f"bootstrap._Reader.string: unterminated STRING at {self.pos}")
        text = self.data[self.pos : stop].decode("utf-8", "replace")
        self.pos = stop + 1
        return text

    def box(self, expected: bytes) -> "_Reader":
        """Enter a full box of type ``expected``: returns a reader over its payload after version and flags."""
        start = self.pos
        if self.end - start < HEADER_SIZE:
            self.take(HEADER_SIZE)  # the truncation error
        try:
            found = parse_header(self.data[start : min(start + LARGE_HEADER_SIZE, self.end)], start, self.end, "abst")
        except PackagerError:
            found = None  # a size that lies: reported below as the box we did not find
        if (found is None or found.type != expected.decode("latin-1")
                or found.size < found.header_size + FULL_BOX_FIELDS_SIZE):
            raise bad_data(f"bootstrap._Reader.box: expected a '{expected.decode()}' box at {start}")
        self.pos = found.end
        return _Reader(self.data, found.payload_start + FULL_BOX_FIELDS_SIZE, found.end)


def _strings(values: tuple[str, ...]) -> bytes:
    return b"".join(v.encode("utf-8") + b"\0" for v in values)


@dataclass(frozen=True)
class SegmentRunEntry:
    first_segment: int  # FirstSegment
    fragments_per_segment: int  # FragmentsPerSegment


@dataclass(frozen=True)
class FragmentRunEntry:
    first_fragment: int  # FirstFragment
    first_fragment_timestamp: int  # FirstFragmentTimestamp, afrt TimeScale units
    fragment_duration: int  # FragmentDuration; 0 marks a discontinuity and then carries an indicator
    discontinuity_indicator: int | None = None  # DiscontinuityIndicator, present only when duration == 0


@dataclass(frozen=True)
class SegmentRunTable:
    """asrt (F.3.2)."""

    entries: tuple[SegmentRunEntry, ...]
    quality_segment_url_modifiers: tuple[str, ...] = ()
    update: bool = False  # flags: 1 = an update to an earlier table

    def __bytes__(self) -> bytes:
        body = struct.pack(">B", len(self.quality_segment_url_modifiers)) + _strings(self.quality_segment_url_modifiers)
        body += struct.pack(">I", len(self.entries))
        body += b"".join(struct.pack(">II", e.first_segment, e.fragments_per_segment) for e in self.entries)
        return full_box(b"asrt", 0, int(self.update), body)

    @classmethod
    def parse(cls, r: _Reader) -> "SegmentRunTable":
        flags = int.from_bytes(r.data[r.pos - 3 : r.pos], "big")
        modifiers = tuple(r.string() for _ in range(r.uint(1)))
        entries = tuple(SegmentRunEntry(r.uint(4), r.uint(4)) for _ in range(r.uint(4)))
        return cls(entries, modifiers, bool(flags & 1))


@dataclass(frozen=True)
class FragmentRunTable:
    """afrt (F.3.3)."""

    timescale: int
    entries: tuple[FragmentRunEntry, ...]
    quality_segment_url_modifiers: tuple[str, ...] = ()
    update: bool = False

    def __bytes__(self) -> bytes:
        body = struct.pack(">IB", self.timescale, len(self.quality_segment_url_modifiers))
        body += _strings(self.quality_segment_url_modifiers) + struct.pack(">I", len(self.entries))
        parts = []
        for e in self.entries:
            parts.append(struct.pack(">IQI", e.first_fragment, e.first_fragment_timestamp, e.fragment_duration))
            if e.fragment_duration == 0:
                parts.append(struct.pack(">B", e.discontinuity_indicator or 0))
        return full_box(b"afrt", 0, int(self.update), body, *parts)

    @classmethod
    def parse(cls, r: _Reader) -> "FragmentRunTable":
        flags = int.from_bytes(r.data[r.pos - 3 : r.pos], "big")
        timescale = r.uint(4)
        modifiers = tuple(r.string() for _ in range(r.uint(1)))
        entries = []
        for _ in range(r.uint(4)):
            first, timestamp, duration = r.uint(4), r.uint(8), r.uint(4)
            entries.append(FragmentRunEntry(first, timestamp, duration, r.uint(1) if duration == 0 else None))
        return cls(timescale, tuple(entries), modifiers, bool(flags & 1))


@dataclass(frozen=True)
class BootstrapInfo:
    """abst (F.3.1). Profile 0 = named access (fragment URLs built from segment and fragment numbers)."""

    bootstrapinfo_version: int
    timescale: int
    current_media_time: int
    segment_run_tables: tuple[SegmentRunTable, ...]
    fragment_run_tables: tuple[FragmentRunTable, ...]
    profile: int = 0
    live: bool = False
    update: bool = False
    smpte_time_code_offset: int = 0
    movie_identifier: str = ""
    server_entries: tuple[str, ...] = ()
    quality_entries: tuple[str, ...] = ()
    drm_data: str = ""
    metadata: str = ""

    def __bytes__(self) -> bytes:
        flags = (self.profile & 3) << 6 | int(self.live) << 5 | int(self.update) << 4
        body = [
            struct.pack(">IBIQQ", self.bootstrapinfo_version, flags, self.timescale, self.current_media_time,
                        self.smpte_time_code_offset),
            _strings((self.movie_identifier,)),
            struct.pack(">B", len(self.server_entries)), _strings(self.server_entries),
            struct.pack(">B", len(self.quality_entries)), _strings(self.quality_entries),
            _strings((self.drm_data, self.metadata)),
            struct.pack(">B", len(self.segment_run_tables)), *map(bytes, self.segment_run_tables),
            struct.pack(">B", len(self.fragment_run_tables)), *map(bytes, self.fragment_run_tables),
        ]  # fmt: skip
        return full_box(b"abst", 0, 0, *body)

    @classmethod
    def parse(cls, data: bytes) -> "BootstrapInfo":
        r = _Reader(bytes(data)).box(b"abst")
        version, flags, timescale, current, smpte = r.uint(4), r.uint(1), r.uint(4), r.uint(8), r.uint(8)
        movie = r.string()
        servers = tuple(r.string() for _ in range(r.uint(1)))
        qualities = tuple(r.string() for _ in range(r.uint(1)))
        drm, meta = r.string(), r.string()
        asrts = tuple(SegmentRunTable.parse(r.box(b"asrt")) for _ in range(r.uint(1)))
        afrts = tuple(FragmentRunTable.parse(r.box(b"afrt")) for _ in range(r.uint(1)))
        return cls(version, timescale, current, asrts, afrts, flags >> 6, bool(flags & 0x20), bool(flags & 0x10),
                   smpte, movie, servers, qualities, drm, meta)  # fmt: skip


def fragment_run_entries(starts: np.ndarray, durations: np.ndarray) -> list[FragmentRunEntry]:
    """Run-length compress a fragment table: a new entry wherever the duration changes or the timeline jumps."""
    n = len(starts)
    if not n:
        return []
    new = np.ones(n, dtype=bool)
    new[1:] = (durations[1:] != durations[:-1]) | (starts[1:] != starts[:-1] + durations[:-1])
    first = np.flatnonzero(new)
    # A zero duration (an empty fragment) must carry a DiscontinuityIndicator: 1, a gap in fragment numbering.
    return [
        FragmentRunEntry(k + 1, int(starts[k]), int(durations[k]),
                         None if durations[k] else DISCONTINUITY_FRAGMENT_NUMBERING)
        for k in first.tolist()
    ]


def bootstrap_info(media_set: MediaSet, selection: Selection) -> BootstrapInfo:
    """The VOD bootstrap of one rendition (see the module docstring); times in ms on the shared HDS timeline."""
    starts, durations, end = fragment_times(media_set, selection)
    if (durations < 0).any():
        raise bad_data(f"bootstrap_info: fragment times of {selection.source} go backwards")
    # afrt stores FirstFragmentTimestamp in 64 bits and FragmentDuration in 32 (F.3.3): ms beyond them are bad data
    if len(starts) and (int(starts.min()) < 0 or int(durations.max()) > 0xFFFFFFFF or end >= 1 << 63):
        raise bad_data(f"bootstrap_info: fragment times of {selection.source} do not fit the afrt fields "
                       f"(longest {int(durations.max())} ms)")
    entries = fragment_run_entries(starts, durations)
    entries.append(FragmentRunEntry(0, 0, 0, END_OF_PRESENTATION))
    return BootstrapInfo(
        bootstrapinfo_version=1,
        timescale=HDS_TIMESCALE,
        current_media_time=end,
        segment_run_tables=(SegmentRunTable((SegmentRunEntry(1, len(starts)),)),),
        fragment_run_tables=(FragmentRunTable(HDS_TIMESCALE, tuple(entries)),),
    )


def build_bootstrap(media_set: MediaSet, selection: Selection) -> bytes:
    """The ``abst`` box of ``selection`` (carried base64-encoded inline in the F4M)."""
    return bytes(bootstrap_info(media_set, selection))
