"""Mp4Writer against independent ground truth: fixtures are demuxed with PyAV (ffmpeg), their packets written with
Mp4Writer, and the result must (a) read back with our demuxer to the source's sample table, (b) demux in PyAV to the
same packets (payloads, pts, dts, key flags) and decode to as many frames, (c) parse box by box with pymp4 and probe
with ffprobe without a warning. The co64 and 64-bit mdat paths are tested on synthetic tables and headers."""
from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from fixtures.generate import fixture_path
from packagers.codecs.box import parse_header
from packagers.errors import ErrorCode, PackagerError
from packagers.model import CodecConfig, SampleTable
from packagers.mp4 import open_presentation
from packagers.mp4.tables import (build_sample_table, parse_chunk_offsets, parse_ctts, parse_stsc, parse_stss,
                                  parse_stsz, parse_stts)
from packagers.mp4.writer import Mp4Writer, TrackSpec, mdat_header, sample_table_boxes
from tests.packagers.fmp4_tools import parse_boxes
from tests.packagers.pyav_tracks import _codec

FIXTURES = ("title_360p.mp4", "hevc.mp4", "audio_only.mp4")


def write_from_pyav(source: Path, out: Path, shift: dict[str, int] | None = None, **writer_options) -> list[tuple]:
    """Write ``source``'s packets (PyAV's times, edit list applied) with Mp4Writer as a recorder would: header, then
    the bytes of each add() in demux order, then moov and the header patch. Returns the packets written."""
    shift = shift or {}
    with av.open(str(source)) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        specs = [TrackSpec(s.type, _codec(s), s.time_base.denominator, s.metadata.get("language", "und"))
                 for s in streams]
        writer = Mp4Writer(specs, **writer_options)
        chunks, packets, last = [writer.header()], [], {}
        for p in container.demux(streams):
            if not p.size:
                continue
            kind, dts = p.stream.type, p.dts + shift.get(p.stream.type, 0)
            chunks.append(writer.add(kind, dts, p.pts - p.dts, p.is_keyframe, bytes(p)))
            packets.append((kind, p.pts + shift.get(kind, 0), dts, p.is_keyframe, bytes(p)))
            last[kind] = p.duration
    offset, patch, moov = writer.finish(last)
    data = bytearray(b"".join(chunks))
    assert len(data) == writer.position
    data[offset : offset + len(patch)] = patch
    out.write_bytes(bytes(data) + moov)
    return packets


def pyav_packets(path: Path) -> list[tuple]:
    with av.open(str(path)) as container:
        return [(p.stream.type, p.pts, p.dts, p.is_keyframe, bytes(p)) for p in container.demux() if p.size]


def decoded_frames(path: Path) -> dict[str, int]:
    counts = {"video": 0, "audio": 0}
    with av.open(str(path)) as container:
        for packet in container.demux():
            counts[packet.stream.type] += len(packet.decode())
    return counts


@pytest.mark.parametrize("name", FIXTURES)
def test_rewritten_fixture_matches_the_source(name: str, tmp_path: Path) -> None:
    source = fixture_path(name)
    out = tmp_path / name
    written = write_from_pyav(source, out)

    # (a) our demuxer: the same sample table, edit offset and codec configuration as the ffmpeg-written source
    original, rewritten = open_presentation(source), open_presentation(out)
    assert [t.kind for t in rewritten.tracks] == [t.kind for t in original.tracks]
    for a, b in zip(original.tracks, rewritten.tracks):
        for column in ("sizes", "dts", "cts", "durations", "keyframe"):
            assert np.array_equal(getattr(a.samples, column), getattr(b.samples, column)), (a.kind, column)
        assert (a.timescale, a.edit_offset, a.codec, a.language) == (b.timescale, b.edit_offset, b.codec, b.language)
        assert a.duration == b.duration

    # (b) PyAV: every packet with its times and payload, and as many decoded frames
    by_stream = sorted(pyav_packets(out), key=lambda p: (p[0], p[2]))
    assert by_stream == sorted(written, key=lambda p: (p[0], p[2]))
    assert by_stream == sorted(pyav_packets(source), key=lambda p: (p[0], p[2]))
    assert decoded_frames(out) == decoded_frames(source)

    # (c) pymp4 reads every box whole; ffprobe has nothing to say
    data = out.read_bytes()
    top = parse_boxes(data)
    assert [n.type for n in top] == [b"ftyp", b"free", b"mdat", b"moov"]
    moov = top[3]
    for trak, track in zip(moov.all(b"trak"), rewritten.tracks):
        stbl = trak.find(b"mdia", b"minf", b"stbl")
        stsz = stbl.find(b"stsz").parsed
        sizes = stsz.entry_sizes if stsz.sample_size == 0 else [stsz.sample_size] * stsz.sample_count
        assert list(sizes) == track.samples.sizes.tolist()
        stts = stbl.find(b"stts").parsed.entries
        assert np.repeat([e.sample_delta for e in stts], [e.sample_count for e in stts]).tolist() == \
            track.samples.durations.tolist()
        assert trak.find(b"mdia", b"mdhd").parsed.timescale == track.timescale
        if track.kind == "video":
            sync = [e.sample_number - 1 for e in stbl.find(b"stss").parsed.entries]
            assert sync == np.flatnonzero(track.samples.keyframe).tolist()
    if shutil.which("ffprobe"):
        probe = subprocess.run(["ffprobe", "-v", "warning", "-show_entries", "stream=nb_frames", "-of", "csv=p=0",
                                str(out)], capture_output=True, text=True, timeout=60)
        assert probe.returncode == 0 and probe.stderr == "", probe.stderr
        assert [int(n) for n in probe.stdout.split()] == [len(t.samples) for t in original.tracks]


def test_a_track_that_starts_late_gets_an_empty_edit(tmp_path: Path) -> None:
    """Times are the caller's: audio given from +100 ms (past its -1024 priming) is presented from there."""
    source, out = fixture_path("audio_only.mp4"), tmp_path / "late.mp4"
    written = write_from_pyav(source, out, shift={"audio": 4410}, movie_timescale=44100)
    elst = _elst(out.read_bytes())
    assert elst == [(4410 - 1024, -1), (elst[1][0], 0)]
    assert pyav_packets(out) == written
    (track,) = open_presentation(out).tracks
    assert track.presentation_pts()[0] == 4410 - 1024


def _elst(data: bytes) -> list[tuple[int, int]]:
    """The (segment_duration, media_time) entries of the first elst (version 0), read with struct."""
    at = data.index(b"elst") - 4
    version, count = data[at + 8], struct.unpack_from(">I", data, at + 12)[0]
    assert version == 0
    return [struct.unpack_from(">Ii", data, at + 16 + 12 * i) for i in range(count)]


def test_co64_and_ctts_v1_tables_read_back() -> None:
    """Offsets past 4 GiB need co64; negative composition offsets need ctts version 1. Interleaved samples make
    chunks of varying length."""
    n = 3000
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 5000, n)
    gaps = np.where(rng.random(n) < 0.3, rng.integers(1, 10_000, n), 0)  # another track's samples in between
    offsets = (5 << 30) + np.concatenate(([0], np.cumsum(sizes[:-1] + gaps[:-1])))
    durations = np.where(np.arange(n) % 7 == 0, 1001, 1000)
    table = SampleTable(offsets=offsets, sizes=sizes, dts=np.concatenate(([0], np.cumsum(durations[:-1]))),
                        cts=rng.integers(-2000, 3000, n), durations=durations, keyframe=np.arange(n) % 30 == 0)
    boxes = {b[4:8]: b for b in sample_table_boxes(table, video=True)}
    assert set(boxes) == {b"stts", b"ctts", b"stss", b"stsc", b"stsz", b"co64"}
    assert boxes[b"ctts"][8] == 1  # version
    nodes = {node.type: node for node in parse_boxes(b"".join(boxes.values()))}
    assert [e.chunk_offset for e in nodes[b"co64"].parsed.entries][0] == 5 << 30
    parsed = {t.decode(): parse_header(b, 0, len(b), "test") for t, b in boxes.items()}
    def read(name, parse):
        return parse(boxes[name.encode()], parsed[name], "test")
    back, shift = build_sample_table(
        stts=read("stts", parse_stts), ctts=read("ctts", parse_ctts), stsz=read("stsz", parse_stsz),
        stsc=read("stsc", parse_stsc), chunk_offsets=read("co64", parse_chunk_offsets),
        stss=read("stss", parse_stss), where="test")
    assert shift == -int(table.cts.min())
    for column in ("offsets", "sizes", "dts", "durations", "keyframe"):
        assert np.array_equal(getattr(back, column), getattr(table, column)), column
    assert np.array_equal(back.cts.astype(np.int64) - shift, table.cts)


def test_stco_below_4gib_and_uniform_stsz() -> None:
    table = SampleTable(offsets=np.arange(10) * 100 + 48, sizes=np.full(10, 100), dts=np.arange(10) * 1024,
                        cts=np.zeros(10), durations=np.full(10, 1024), keyframe=np.ones(10, bool))
    boxes = {b[4:8]: b for b in sample_table_boxes(table, video=False)}
    assert set(boxes) == {b"stts", b"stsc", b"stsz", b"stco"}  # no ctts (all 0), no stss (audio)
    nodes = {node.type: node.parsed for node in parse_boxes(b"".join(boxes.values()))}
    assert (nodes[b"stsz"].sample_size, nodes[b"stsz"].sample_count) == (100, 10)
    assert [e.chunk_offset for e in nodes[b"stco"].entries] == [48]  # contiguous samples: one chunk
    assert [(e.sample_count, e.sample_delta) for e in nodes[b"stts"].entries] == [(10, 1024)]


def test_mdat_header_32_and_64_bit() -> None:
    small = mdat_header(32, 32 + 16 + 1000)
    free, mdat = parse_header(small, 32, 1 << 40, "t"), parse_header(small[8:], 40, 1 << 40, "t")
    assert (free.type, free.size, mdat.type, mdat.size, mdat.payload_start) == ("free", 8, "mdat", 1008, 48)
    end = 32 + 16 + (5 << 30)
    large = parse_header(mdat_header(32, end), 32, 1 << 40, "t")
    assert (large.type, large.header_size, large.end, large.payload_start) == ("mdat", 16, end, 48)


def test_an_unfinished_file_reads_as_mdat_to_the_end() -> None:
    codec = CodecConfig("mp4a", "mp4a.40.2", b"\x12\x10", sample_rate=44100, channels=2)
    writer = Mp4Writer([TrackSpec("audio", codec, 44100)])
    data = writer.header() + b"".join(writer.add("audio", i * 1024, 0, True, bytes(10)) for i in range(5))
    assert parse_header(data[writer.patch_offset :], writer.patch_offset, len(data), "t").type == "free"
    mdat = parse_header(data[writer.patch_offset + 8 :], writer.patch_offset + 8, len(data), "t")
    assert (mdat.type, mdat.end) == ("mdat", len(data))


def test_misuse_is_a_clear_error() -> None:
    codec = CodecConfig("mp4a", "mp4a.40.2", b"\x12\x10", sample_rate=44100, channels=2)
    writer = Mp4Writer([TrackSpec("audio", codec, 44100)])
    with pytest.raises(PackagerError, match="header"):
        writer.add("audio", 0, 0, True, b"x")
    writer.header()
    with pytest.raises(PackagerError, match="no video track"):
        writer.add("video", 0, 0, True, b"x")
    with pytest.raises(PackagerError) as e:
        writer.finish()
    assert e.value.code == ErrorCode.NO_STREAMS
    writer = Mp4Writer([TrackSpec("audio", codec, 44100)])
    writer.header()
    writer.add("audio", 2048, 0, True, b"x")
    with pytest.raises(PackagerError, match="before the previous"):
        writer.add("audio", 1024, 0, True, b"x")
    with pytest.raises(PackagerError, match="one video and/or one audio"):
        Mp4Writer([TrackSpec("audio", codec, 44100), TrackSpec("audio", codec, 48000)])
