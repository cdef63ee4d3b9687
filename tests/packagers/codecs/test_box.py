"""packagers.codecs.box: the ISO BMFF box header written by fMP4, the MP4 writer and HDS, and read back by the same
module's parser (and by pymp4, an independent parser)."""
from __future__ import annotations

import pytest
from pymp4.parser import Box as Pymp4Box

from packagers.codecs.box import (
    Box,
    box,
    box_header,
    box_header_size,
    full_box,
    parse_header,
    split_full_box_fields,
)
from packagers.errors import ErrorCode, PackagerError


def test_box_and_full_box_bytes():
    assert box(b"free", b"ab", b"cd") == b"\x00\x00\x00\x0cfreeabcd"
    # version, then flags, then the payload pieces (HDS and fMP4 used opposite orders before)
    assert full_box(b"afrt", 1, 0x000203, b"xy") == b"\x00\x00\x00\x0eafrt\x01\x00\x02\x03xy"
    parsed = Pymp4Box.parse(full_box(b"mdhd", 0, 0, bytes(8), (1000).to_bytes(4, "big"), bytes(4), bytes(4)))
    assert (parsed.type, parsed.version, parsed.timescale) == (b"mdhd", 0, 1000)


def test_written_headers_read_back():
    for payload in (0, 100, 0xFFFFFFFF - 8, 0xFFFFFFFF - 7, 1 << 40):
        header = box_header(b"mdat", payload)
        assert len(header) == box_header_size(payload) == (8 if payload + 8 <= 0xFFFFFFFF else 16)
        found = parse_header(header, 0, payload + len(header), "t")
        assert found == Box("mdat", 0, len(header), payload + len(header))
    assert split_full_box_fields(0x01000203) == (1, 0x203)


def test_size_zero_runs_to_the_end_of_the_parent():
    assert parse_header(b"\x00\x00\x00\x00mdat", 10, 110, "t") == Box("mdat", 10, 8, 100)


@pytest.mark.parametrize("header, limit, message", [
    (b"\x00\x00\x00", 100, "box header truncated at offset 0 in t"),
    (b"\x00\x00\x00\x01mdat\x00\x00", 100, "largesize of box 'mdat' truncated"),
    (b"\x00\x00\x00\x04free", 100, "box 'free' at offset 0 has size 4 < its header"),
    (b"\x00\x00\x00\x20\x00\x01\x02\x03", 16, "box '0x00010203' at offset 0 ends at 32, past its parent \\(16\\)"),
])
def test_lying_headers_are_bad_data(header, limit, message):
    with pytest.raises(PackagerError, match=message) as e:
        parse_header(header, 0, limit, "t")
    assert e.value.code is ErrorCode.BAD_DATA
