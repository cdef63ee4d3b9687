"""Golden files: tests/golden/<scenario>/, rewritten by ``pytest --update-golden`` (review the diff, then commit).

Besides manifests, a scenario folder holds ``fragments.sha256``: one line per segment a protocol serves (name, size,
sha256), so a change in a muxer's byte layout fails a golden test even when every manifest stays the same.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from packagers.media_data import MediaSegment
from packagers.media_set import MediaSet, Selection
from packagers.model import Presentation, Track
from packagers.naming import TrackSpec

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
# what synthetic tracks lack and muxers need: a configuration record matching the tracks' codec strings (avcC:
# avc1.64001e; hvcC: hvc1.1.6.L93.B0), 4-byte NAL lengths, one short parameter set of each kind, sent in band too
_AVC_SETS = (b"\x67\x64\x00\x1e\xac\xd9", b"\x68\xee\x3c\x80")  # SPS, PPS
_HEVC_SETS = (b"\x40\x01\x0c\x01", b"\x42\x01\x01\x01", b"\x44\x01\xc1\x72")  # VPS, SPS, PPS
_AVCC = (b"\x01\x64\x00\x1e\xff\xe1" + len(_AVC_SETS[0]).to_bytes(2, "big") + _AVC_SETS[0]
         + b"\x01" + len(_AVC_SETS[1]).to_bytes(2, "big") + _AVC_SETS[1])
_HVCC = (b"\x01\x01\x60\x00\x00\x00\xb0\x00\x00\x00\x00\x00\x5d\xf0\x00\xfc\xfd\xf8\xf8\x00\x00\x0f\x03"
         + b"".join(bytes([0x80 | nal[0] >> 1, 0, 1]) + len(nal).to_bytes(2, "big") + nal for nal in _HEVC_SETS))
# the NAL unit header written at the start of every synthetic video sample, so muxers that walk NAL units (TS) see
# well-formed samples: (key frame, other frame) = IDR / non-IDR slice (H.264 types 5, 1; HEVC IDR_W_RADL, TRAIL_R)
_SLICE_HEADERS = {"avc": (b"\x65", b"\x41"), "hevc": (b"\x26\x01", b"\x02\x01")}
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def check_golden(name: str, rendered: dict[str, str], update: bool) -> None:
    """Compare ``rendered`` (file name → text) with tests/golden/<name>/, or rewrite that folder when updating."""
    folder = GOLDEN / name
    if update:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            if old.is_file():
                old.unlink()
        for file_name, text in rendered.items():
            (folder / file_name).write_text(text)
    expected = {p.name: p.read_text() for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}
    assert expected, f"no golden files in {folder}: run pytest with --update-golden"
    assert rendered == expected


def _audio_specific_config(rate: int, channels: int) -> bytes:
    """AAC-LC AudioSpecificConfig (ISO 14496-3 §1.6.2.1): object type 2, sampling frequency index, channels."""
    return (2 << 11 | _AAC_RATES.index(rate) << 7 | channels << 3).to_bytes(2, "big")


def _is_hevc(track: Track) -> bool:
    return track.codec.fourcc in ("hvc1", "hev1")


def _with_codec_record(track: Track) -> Track:
    if track.kind == "video":
        record, sets = (_HVCC, _HEVC_SETS) if _is_hevc(track) else (_AVCC, _AVC_SETS)
        codec = dataclasses.replace(track.codec, extradata=record, parameter_sets=sets)
    else:
        codec = dataclasses.replace(track.codec,
                                    extradata=_audio_specific_config(track.codec.sample_rate, track.codec.channels))
    return dataclasses.replace(track, codec=codec)


def with_codec_records(media_set: MediaSet) -> MediaSet:
    """The same media set with the codec configuration records muxers read (synthetic tracks carry none); timing
    and sample tables, and so the segment plans, are unchanged."""
    presentations = [dataclasses.replace(p, tracks=tuple(map(_with_codec_record, p.tracks)))
                     for p in media_set.presentations]
    return MediaSet(presentations, media_set.segment_duration_ms, media_set.is_url_set, media_set.limits)


def synthetic_file(presentation: Presentation) -> np.ndarray:
    """The bytes a synthetic presentation's sample tables point into (uint8): a position pattern (offset mod 251),
    and at the start of each video sample a 4-byte NAL length covering the sample plus a slice NAL unit header."""
    end = max(int(t.samples.offsets[-1]) + int(t.samples.sizes[-1]) for t in presentation.tracks)
    data = (np.arange(end, dtype=np.int64) % 251).astype(np.uint8)
    for track in presentation.tracks:
        if track.kind != "video":
            continue
        offsets = track.samples.offsets.astype(np.int64)
        lengths = track.samples.sizes.astype(np.int64) - 4
        for shift in range(4):  # big-endian length, byte by byte
            data[offsets + shift] = (lengths >> (8 * (3 - shift))) & 0xFF
        key_header, other_header = _SLICE_HEADERS["hevc" if _is_hevc(track) else "avc"]
        for shift, (key_byte, other_byte) in enumerate(zip(key_header, other_header)):
            data[offsets + 4 + shift] = np.where(track.samples.keyframe, key_byte, other_byte)
    return data


Muxer = Callable[[MediaSegment], bytes]


def segment_digests(media_set: MediaSet, segments: Iterable[tuple[str, TrackSpec, int | None]],
                    muxer_for: Callable[[Selection], Muxer],
                    init_for: Callable[[Selection], bytes] | None = None) -> str:
    """``fragments.sha256`` text: for each (name, track spec, 0-based index) the segment is read from the synthetic
    file the way the gateway reads it (coalesced byte ranges), muxed by ``muxer_for(selection)``, and listed as
    name, size, sha256. An index of None names the selection's init segment, built by ``init_for(selection)``."""
    media_set = with_codec_records(media_set)
    files = [synthetic_file(p) for p in media_set.presentations]
    muxers: dict[str, Muxer] = {}
    lines = []
    for name, spec, index in segments:
        selection = media_set.resolve(spec)
        if index is None:
            body = init_for(selection)
        else:
            key = selection.spec.suffix()
            if key not in muxers:
                muxers[key] = muxer_for(selection)
            data = files[selection.file_index]
            reads = media_set.segment_reads(selection, index)
            buffers = [data[r.offset : r.offset + r.size].tobytes() for r in reads]
            body = muxers[key](media_set.media_segment(selection, index, reads, buffers))
        lines.append(f"{name} {len(body)} {hashlib.sha256(body).hexdigest()}")
    return "\n".join(lines) + "\n"
