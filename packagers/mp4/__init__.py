"""MP4 demuxer: ISO BMFF moov -> ``Presentation`` (tracks with numpy sample tables), without reading mdat.

Modules, in pipeline order: ``boxes`` (bounded box walking), ``demux`` (top-level scan, moov, trak, tkhd/mdhd/hdlr/
elst), ``sample_entry`` (stsd -> CodecConfig) with ``codecs`` (avcC/hvcC) and ``packagers.codecs.aac``
(esds/AudioSpecificConfig), ``tables`` (stts/ctts/stsz/stz2/stsc/stco/co64/stss -> SampleTable, vectorised).
"""
from __future__ import annotations

import os

from ..model import Presentation
from .demux import Read, find_moov, parse_moov, read_presentation

__all__ = ["Read", "find_moov", "open_presentation", "parse_moov", "read_presentation"]


def open_presentation(path: str | os.PathLike) -> Presentation:
    """``read_presentation`` over a local file with ``os.pread`` (for the CLI and tests); source is the path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return read_presentation(lambda offset, n: os.pread(fd, n, offset), size, source=os.fspath(path))
    finally:
        os.close(fd)
