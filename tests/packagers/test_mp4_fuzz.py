"""Hostile input: whatever the bytes, the MP4 demuxer either parses them or raises PackagerError, quickly and without
a huge allocation. Mutations aim at the bytes that matter (box headers, counts, versions) as well as at random."""
from __future__ import annotations

import functools
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures import mp4_variants as mv
from fixtures.generate import fixture_path
from packagers.codecs.aac import parse_audio_specific_config, parse_esds
from packagers.errors import ErrorCode, PackagerError
from packagers.model import Presentation
from packagers.mp4 import parse_moov, read_presentation
from packagers.codecs.avc import parse_avcc
from packagers.codecs.hevc import parse_hvcc

SOURCES = ("audio_only.mp4", "no_bframes.mp4", "hevc.mp4", "two_audio.mp4")
FUZZ = settings(max_examples=300, database=None)


@functools.lru_cache(maxsize=None)
def moov_of(name: str) -> tuple[bytes, tuple[int, ...], int]:
    """The moov box of a fixture, the offsets worth mutating (every box header and the first 24 bytes of every
    payload: sizes, types, versions, counts, first entries) and the file size."""
    data = fixture_path(name).read_bytes()
    start = data.index(b"moov") - 4
    (size,) = struct.unpack_from(">I", data, start)
    moov = data[start : start + size]
    hot: set[int] = set()

    def walk(pos: int, end: int) -> None:
        while pos + 8 <= end:
            box_size, typ = struct.unpack_from(">I4s", moov, pos)
            if box_size < 8 or pos + box_size > end:
                return
            hot.update(range(pos, min(pos + 32, pos + box_size)))
            skip = {b"stsd": 8, b"avc1": 78, b"hvc1": 78, b"mp4a": 28}.get(typ, 0)
            if typ in mv.CONTAINERS or skip:
                walk(pos + 8 + skip, pos + box_size)
            pos += box_size

    walk(8, len(moov))
    return moov, tuple(sorted(hot)), len(data)


def check(result: Presentation, file_size: int | None) -> None:
    """A successful parse must still be self-consistent."""
    assert result.tracks
    for track in result.tracks:
        t = track.samples
        assert track.timescale > 0 and track.kind in ("video", "audio")
        assert all(len(getattr(t, c)) == len(t) for c in ("sizes", "dts", "cts", "durations", "keyframe"))
        if file_size is not None and len(t):
            assert int((t.offsets.astype(np.int64) + t.sizes).max()) <= file_size


def parse_or_packager_error(moov: bytes, file_size: int | None) -> None:
    try:
        result = parse_moov(moov, "fuzz.mp4", file_size=file_size)
    except PackagerError as e:
        assert "\n" not in e.message and e.message.split(":")[0].isidentifier(), e.message
        return
    check(result, file_size)


mutation = st.tuples(st.sampled_from(["hot", "any", "hot32"]), st.integers(0, 1 << 30), st.integers(0, 255),
                     st.sampled_from([0, 1, 0xFF, 0x7F, 0x80, None]))


@FUZZ
@given(source=st.sampled_from(SOURCES), mutations=st.lists(mutation, min_size=1, max_size=6))
def test_mutated_moov(source, mutations):
    moov, hot, file_size = moov_of(source)
    data = bytearray(moov)
    for where, position, value, special in mutations:
        if where == "any":
            pos = position % len(data)
            data[pos] = value if special is None else special
        else:
            pos = hot[position % len(hot)]
            if where == "hot32":  # a whole 32-bit field: counts and sizes get absurd, zero or off-by-one values
                pos = min(pos, len(data) - 4)
                (word,) = struct.unpack_from(">I", data, pos)
                new = [0, 1, 0xFFFFFFFF, 0x7FFFFFFF, (word + 1) & 0xFFFFFFFF, max(0, word - 1)][value % 6]
                struct.pack_into(">I", data, pos, new)
            else:
                data[pos] = value if special is None else special
    parse_or_packager_error(bytes(data), file_size)


@FUZZ
@given(source=st.sampled_from(SOURCES), cut=st.integers(0, 1 << 30), payload_only=st.booleans())
def test_truncated_moov(source, cut, payload_only):
    moov, _, file_size = moov_of(source)
    data = moov[8:] if payload_only else moov
    parse_or_packager_error(data[: cut % len(data)], file_size)


@FUZZ
@given(source=st.sampled_from(SOURCES), start=st.integers(0, 1 << 30), length=st.integers(1, 64),
       junk=st.binary(min_size=1, max_size=64))
def test_spliced_moov(source, start, length, junk):
    moov, hot, file_size = moov_of(source)
    pos = hot[start % len(hot)]
    parse_or_packager_error(moov[:pos] + junk + moov[pos + length :], file_size)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_file(data):
    try:
        check(read_presentation(lambda o, n: data[o : o + n], len(data), "fuzz.mp4"), len(data))
    except PackagerError:
        pass


@FUZZ
@given(body=st.binary(max_size=512), boxes=st.lists(st.sampled_from([b"ftyp", b"free", b"mdat", b"moov", b"trak"]),
                                                   max_size=4))
def test_random_boxes_in_a_file(body, boxes):
    """Top-level structure that looks right with random content (32-bit, 64-bit and to-end sizes)."""
    data = b""
    for i, typ in enumerate(boxes):
        if i % 3 == 1:
            data += struct.pack(">I4sQ", 1, typ, 16 + len(body)) + body
        else:
            data += struct.pack(">I4s", 8 + len(body), typ) + body
    if boxes and len(boxes) % 2:
        data += struct.pack(">I4s", 0, b"mdat") + body
    try:
        check(read_presentation(lambda o, n: data[o : o + n], len(data), "fuzz.mp4"), len(data))
    except PackagerError:
        pass


@FUZZ
@given(data=st.binary(max_size=96))
def test_config_records(data):
    for parse in (lambda: parse_avcc(data, "avc1", "t"), lambda: parse_hvcc(data, "hvc1", "t"),
                  lambda: parse_audio_specific_config(data, "t"), lambda: parse_esds(data, "t")):
        try:
            parse()
        except PackagerError:
            pass


def test_lying_counts_fail_fast_without_allocating():
    """Every table count in the moov set to 0xFFFFFFFF: each must be caught by the box-size check."""
    moov, hot, file_size = moov_of("two_audio.mp4")
    for typ in (b"stts", b"ctts", b"stsc", b"stsz", b"stco", b"stss", b"elst"):
        pos = moov.index(typ) + 4 + (8 if typ == b"stsz" else 4)  # past version/flags (stsz: and sample_size)
        data = bytearray(moov)
        struct.pack_into(">I", data, pos, 0xFFFFFFFF)
        try:
            parse_moov(bytes(data), "t", file_size=file_size)
        except PackagerError as e:
            assert e.code == ErrorCode.BAD_DATA, (typ, e)
        else:
            raise AssertionError(f"{typ} count 0xFFFFFFFF accepted")
