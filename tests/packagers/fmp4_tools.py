"""Helpers for the fMP4 / DASH / HLS-fMP4 tests: build every segment of a media set from real files, read fMP4 back
with pymp4 (independent of our writer), and write a playable directory for ffmpeg."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymp4.parser import Box

from packagers.fmp4 import Fmp4Muxer, build_init_segment
from packagers.media_set import MediaSet, Selection

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"dinf", b"stbl", b"mvex", b"moof", b"traf"}
PARTIAL = {b"stsd"}  # pymp4's avcC ignores the High-profile extension bytes and mp4a ignores esds: checked apart
OPAQUE = {b"senc"}  # pymp4's senc assumes 8-byte IVs: tests/packagers/test_cenc.py reads it


@dataclass
class Node:
    type: bytes
    raw: bytes
    parsed: object  # pymp4 Container (None for containers: see children)
    children: list["Node"]

    def find(self, *path: bytes) -> "Node":
        node = self
        for typ in path:
            node = next(c for c in node.children if c.type == typ)
        return node

    def all(self, typ: bytes) -> list["Node"]:
        return [c for c in self.children if c.type == typ]


def parse_boxes(data: bytes) -> list[Node]:
    """Every box of ``data``, recursively; each leaf box is parsed by pymp4 on its own bytes and must be consumed
    whole (so a wrong size or field layout fails), containers must be tiled exactly by their children."""
    out, pos = [], 0
    while pos < len(data):
        assert len(data) - pos >= 8, f"trailing {len(data) - pos} bytes"
        size = int.from_bytes(data[pos : pos + 4], "big")
        typ = data[pos + 4 : pos + 8]
        assert 8 <= size <= len(data) - pos, f"box {typ} at {pos} has size {size}"
        raw = data[pos : pos + size]
        if typ in CONTAINERS:
            out.append(Node(typ, raw, None, parse_boxes(raw[8:])))
        elif typ in OPAQUE:
            out.append(Node(typ, raw, None, []))
        else:
            parsed = Box.parse(raw)
            assert parsed.type == typ
            if typ not in PARTIAL:
                assert parsed.end == size, f"pymp4 read {parsed.end} of the {size} bytes of {typ}"
            out.append(Node(typ, raw, parsed, []))
        pos += size
    return out


def root(data: bytes) -> Node:
    return Node(b"", data, None, parse_boxes(data))


@dataclass
class TrafTimes:
    """One traf read back with pymp4: per sample, decode and presentation time, size, payload, flags."""

    track_id: int
    decode: np.ndarray
    presentation: np.ndarray
    durations: np.ndarray
    sizes: np.ndarray
    sync: np.ndarray
    payload: bytes


def read_fragment(fragment: bytes) -> list[TrafTimes]:
    """The trafs of a [styp] moof mdat fragment, with sample times from tfdt + trun."""
    top = root(fragment)
    moof = top.find(b"moof")
    moof_start = fragment.index(b"moof") - 4
    out = []
    for traf in moof.all(b"traf"):
        tfhd, tfdt = traf.find(b"tfhd").parsed, traf.find(b"tfdt").parsed
        assert tfhd.flags.default_base_is_moof and not tfhd.flags.base_data_offset_present
        default_flags = tfhd.default_sample_flags
        trun = traf.find(b"trun").parsed
        info = trun.sample_info
        durations = np.array([s.sample_duration for s in info], dtype=np.int64)
        sizes = np.array([s.sample_size for s in info], dtype=np.int64)
        cto = np.array([s.sample_composition_time_offsets or 0 for s in info], dtype=np.int64)
        flags = [s.sample_flags if trun.flags.sample_flags_present else default_flags for s in info]
        sync = np.array([not f.sample_is_non_sync_sample for f in flags], dtype=bool)
        decode = tfdt.baseMediaDecodeTime + np.concatenate(([0], np.cumsum(durations)[:-1])).astype(np.int64)
        start = moof_start + trun.data_offset
        payload = fragment[start : start + int(sizes.sum())]
        out.append(TrafTimes(tfhd.track_ID, decode, decode + cto, durations, sizes, sync, payload))
    return out


def segments(media_set: MediaSet, selection: Selection, data: bytes, **muxer_options) -> list[bytes]:
    """Every media segment of ``selection`` built from the file bytes ``data``."""
    muxer = Fmp4Muxer(selection.tracks, **muxer_options)
    out = []
    for index in range(media_set.plan(selection).count):
        reads = media_set.segment_reads(selection, index)
        buffers = [data[r.offset : r.end] for r in reads]
        out.append(muxer.build(media_set.media_segment(selection, index, reads, buffers)))
    return out


def write_track_files(folder: Path, media_set: MediaSet, selection: Selection, datas: list[bytes], init_name: str,
                      segment_name, **muxer_options) -> list[bytes]:  # fmt: skip
    """Write the init segment and every media segment of a selection; returns the media segments."""
    (folder / init_name).write_bytes(build_init_segment(selection.tracks))
    built = segments(media_set, selection, datas[selection.file_index], **muxer_options)
    for index, fragment in enumerate(built):
        (folder / segment_name(index, selection.spec)).write_bytes(fragment)
    return built
