"""Fmp4Muxer and build_init_segment against independent ground truth: pymp4 reads every box back field by field, and
ffmpeg (PyAV) demuxes and decodes init + fragments and must give back the source file's packets (payload bytes,
timestamps) as ffmpeg reads them from the original MP4."""
from __future__ import annotations

import dataclasses
import io
from functools import lru_cache

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymp4.parser import SampleEntryBox

from fixtures.generate import fixture_path
from packagers.errors import ErrorCode, PackagerError
from packagers.fmp4 import (TFXD_UUID, Fmp4Muxer, build_init_segment, codec_string, fragment_size_bound,
                            presentation_time_offset, sample_entry_type)
from packagers.media_data import MediaSegment, TrackSegment
from packagers.media_set import MediaSet
from packagers.model import SampleTable
from packagers.mp4 import open_presentation
from packagers.naming import TrackSpec

from .fmp4_tools import read_fragment, root, segments
from .synthetic import audio_track, video_track

FIXTURES = ["title_360p.mp4", "title_240p.mp4", "title_180p.mp4", "two_audio.mp4", "hevc.mp4", "audio_only.mp4",
            "no_bframes.mp4", "moov_end.mp4"]  # fmt: skip


@lru_cache(maxsize=None)
def media(name: str) -> tuple[MediaSet, bytes]:
    path = fixture_path(name)
    return MediaSet([open_presentation(path)], 2000), path.read_bytes()


def single_track_selections(media_set: MediaSet):
    p = media_set.presentations[0]
    specs = [TrackSpec(None, v, None) for v in range(1, len(p.video_tracks) + 1)]
    specs += [TrackSpec(None, None, a) for a in range(1, len(p.audio_tracks) + 1)]
    return [media_set.resolve(s) for s in specs]


@lru_cache(maxsize=None)
def source_packets(name: str, track_id: int) -> list[tuple[int, int, bytes]]:
    """(pts, dts, bytes) of every packet of the track, from ffmpeg's demuxer on the original MP4 (stream.id is the
    MP4 track_ID)."""
    with av.open(str(fixture_path(name))) as c:
        stream = next(s for s in c.streams if s.id == track_id)
        return [(p.pts, p.dts, bytes(p)) for p in c.demux(stream) if p.size]


def demux(blob: bytes) -> tuple[list[tuple[int, int, bytes]], int, list]:
    """ffmpeg's packets and decoded frame count of a one-track fMP4 stream, and every error it logged."""
    with av.logging.Capture() as logs:
        with av.open(io.BytesIO(blob)) as c:
            packets = [(p.pts, p.dts, bytes(p)) for p in c.demux(c.streams[0]) if p.size]
        with av.open(io.BytesIO(blob)) as c:
            frames = sum(1 for _ in c.decode(c.streams[0]))
    errors = [entry for entry in logs if entry[0] <= av.logging.ERROR]
    return packets, frames, errors


# -- init segment --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_init_segment_boxes(name):
    media_set, _ = media(name)
    tracks = media_set.presentations[0].tracks
    init = build_init_segment(tracks)
    top = root(init)
    assert [n.type for n in top.children] == [b"ftyp", b"moov"]
    ftyp = top.find(b"ftyp").parsed
    assert ftyp.major_brand == b"iso6" and b"dash" in ftyp.compatible_brands
    moov = top.find(b"moov")
    assert [n.type for n in moov.children] == [b"mvhd"] + [b"trak"] * len(tracks) + [b"mvex"]
    assert moov.find(b"mvhd").parsed.next_track_ID == len(tracks) + 1
    trexs = moov.find(b"mvex").all(b"trex")
    assert [t.parsed.track_ID for t in trexs] == list(range(1, len(tracks) + 1))
    assert all(t.parsed.default_sample_description_index == 1 for t in trexs)
    for i, (track, trak) in enumerate(zip(tracks, moov.all(b"trak")), start=1):
        assert trak.find(b"tkhd").parsed.track_ID == i
        mdhd = trak.find(b"mdia", b"mdhd").parsed
        assert mdhd.timescale == track.timescale and mdhd.language == track.language
        handler = trak.find(b"mdia", b"hdlr").parsed.handler_type
        assert handler == (b"vide" if track.kind == "video" else b"soun")
        minf = trak.find(b"mdia", b"minf")
        assert minf.children[0].type == (b"vmhd" if track.kind == "video" else b"smhd")
        stbl = minf.find(b"stbl")
        assert [n.type for n in stbl.children] == [b"stsd", b"stts", b"stsc", b"stsz", b"stco"]
        assert not stbl.find(b"stts").parsed.entries and not stbl.find(b"stco").parsed.entries
        assert stbl.find(b"stsz").parsed.sample_count == 0
        entry = stbl.find(b"stsd").parsed.entries[0]
        raw = stbl.find(b"stsd").raw
        if track.kind == "video":
            assert entry.format.decode() == sample_entry_type(track.codec)
            if entry.format in (b"hvc1", b"hev1"):  # pymp4 knows VisualSampleEntry (and hvcC) under avc1 only
                entry = SampleEntryBox.parse(raw[16:20] + b"avc1" + raw[24:])
                assert entry.avc_data.type == b"hvcC"
                assert entry.avc_data.nalu_length_size + 1 == track.codec.nal_length_size
            assert (entry.width, entry.height) == (track.codec.width, track.codec.height)
            config = b"avcC" if track.codec.codec == "h264" else b"hvcC"
            box = raw[raw.index(config) - 4 :]
            assert box[: int.from_bytes(box[:4], "big")][8:] == track.codec.extradata
            if track.codec.codec == "h264":  # pymp4 decodes the parameter sets of avcC
                assert list(entry.avc_data.sps) + list(entry.avc_data.pps) == list(track.codec.parameter_sets)
        else:
            assert entry.format == b"mp4a" and entry.channels == track.codec.channels
            assert entry.sampling_rate == track.codec.sample_rate
            assert raw.endswith(b"\x05" + bytes([len(track.codec.extradata)]) + track.codec.extradata + b"\x06\x01\x02")


def test_hev1_is_written_as_hvc1():
    media_set, _ = media("hevc.mp4")
    track = media_set.presentations[0].video_tracks[0]
    hev1 = dataclasses.replace(track, codec=dataclasses.replace(
        track.codec, fourcc="hev1", codec_string=track.codec.codec_string.replace("hvc1", "hev1")))
    assert sample_entry_type(hev1.codec) == "hvc1"
    assert codec_string(hev1.codec) == track.codec.codec_string.replace("hev1", "hvc1")
    assert b"hvc1" in build_init_segment([hev1]) and b"hev1" not in build_init_segment([hev1])


def test_init_segment_errors():
    with pytest.raises(PackagerError) as e:
        build_init_segment([])
    assert e.value.code is ErrorCode.NO_STREAMS
    with pytest.raises(PackagerError) as e:
        build_init_segment([audio_track(2)])  # no AudioSpecificConfig
    assert e.value.code is ErrorCode.BAD_DATA


# -- media segments: box fields against the sample tables -----------------------------------------------------------


@pytest.mark.parametrize("non_negative", [False, True])
@pytest.mark.parametrize("name", ["title_360p.mp4", "two_audio.mp4", "hevc.mp4", "audio_only.mp4", "no_bframes.mp4"])
def test_fragment_fields_match_sample_tables(name, non_negative):
    media_set, data = media(name)
    selection = media_set.resolve(TrackSpec())
    muxer = Fmp4Muxer(selection.tracks, tfxd=True, non_negative=non_negative)
    for index in range(media_set.plan(selection).count):
        tables = media_set.segment_tables(selection, index)
        reads = media_set.segment_reads(selection, index)
        segment = media_set.media_segment(selection, index, reads, [data[r.offset : r.end] for r in reads])
        fragment = muxer.build(segment)
        assert len(fragment) == muxer.measure(tables)
        assert len(fragment) <= fragment_size_bound(sum(t.total_size for t in tables), sum(map(len, tables)),
                                                    len(tables))  # fmt: skip
        top = root(fragment)
        assert [n.type for n in top.children] == [b"styp", b"moof", b"mdat"]
        assert top.find(b"styp").parsed.major_brand == b"msdh"
        moof = top.find(b"moof")
        assert moof.find(b"mfhd").parsed.sequence_number == index + 1
        trafs = moof.all(b"traf")
        assert len(trafs) == sum(1 for t in tables if len(t))
        read = read_fragment(fragment)
        mdat_payload = b"".join(part.payload for part in segment.tracks)
        assert top.find(b"mdat").raw[8:] == mdat_payload  # one mdat, tracks back to back
        for traf, times, (i, track), table, part in zip(trafs, read, enumerate(selection.tracks), tables,
                                                        segment.tracks):  # fmt: skip
            assert times.track_id == i + 1
            tfdt = traf.find(b"tfdt").parsed
            assert tfdt.version == 1 and tfdt.baseMediaDecodeTime == table.dts[0]
            trun = traf.find(b"trun").parsed
            assert trun.version == 1 and trun.sample_count == len(table)
            np.testing.assert_array_equal(times.durations, table.durations)
            np.testing.assert_array_equal(times.sizes, table.sizes)
            np.testing.assert_array_equal(times.sync, table.keyframe)
            if trun.flags.sample_flags_present:
                deps = [s.sample_flags.sample_depends_on for s in trun.sample_info]
                assert [d == "NOTDEPENDS" for d in deps] == table.keyframe.tolist()
            np.testing.assert_array_equal(times.decode, table.dts)
            # The convention: presentation = dts + cts - edit_offset (+ the declared offset in non_negative mode).
            shift = presentation_time_offset(track) if non_negative else 0
            np.testing.assert_array_equal(times.presentation, table.pts - track.edit_offset + shift)
            assert times.payload == part.payload
            uuid = traf.find(b"uuid").parsed
            assert uuid.extended_type.bytes == TFXD_UUID
            assert uuid.data[:4] == b"\x01\0\0\0"
            assert int.from_bytes(uuid.data[4:12], "big") == table.dts[0]
            assert int.from_bytes(uuid.data[12:20], "big") == table.durations.sum()


def test_presentation_time_offset():
    media_set, _ = media("title_360p.mp4")
    video, audio = media_set.presentations[0].tracks
    assert presentation_time_offset(video) == 0  # B-frames: edit list makes the first pts exactly 0
    assert presentation_time_offset(audio) == 1024  # AAC priming
    assert presentation_time_offset(video_track(2, bframes=False)) == 0
    late = dataclasses.replace(audio, edit_offset=-5000)  # an empty edit: media starts late, nothing negative
    assert presentation_time_offset(late) == 0


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(1, 100), st.integers(-300, 300)), min_size=1, max_size=30),
       st.integers(0, 50), st.integers(-500, 500))
def test_presentation_time_offset_property(rows, start, edit):
    """Equal to the brute force max(0, edit_offset - min(dts + cts)), negative cts (FLV, ctts v1) included."""
    durations = np.array([r[0] for r in rows], dtype=np.uint32)
    cts = np.array([r[1] for r in rows], dtype=np.int32)
    dts = start + np.concatenate(([0], np.cumsum(durations[:-1], dtype=np.int64)))
    n = len(rows)
    table = SampleTable(np.zeros(n, np.uint64), np.ones(n, np.uint32), dts, cts, durations, np.ones(n, bool))
    track = dataclasses.replace(video_track(1), samples=table, edit_offset=edit)
    assert presentation_time_offset(track) == max(0, edit - int((dts + cts).min()))


# -- media segments: ffmpeg reads back the source packets ------------------------------------------------------------


@pytest.mark.parametrize("non_negative", [False, True])
@pytest.mark.parametrize("name", FIXTURES)
def test_ffmpeg_demuxes_source_packets(name, non_negative):
    """init + every fragment of each track: ffmpeg decodes without error, gives every frame, and its packets equal
    the source's: same bytes, dts + edit_offset (our tfdt is the MP4's own decode time), pts shifted by one constant:
    the declared presentation_time_offset plus ffmpeg's own dts_shift (its mov demuxer adds -min(offset) to pts when
    composition offsets are negative, so that pts >= dts)."""
    media_set, data = media(name)
    for selection in single_track_selections(media_set):
        (track,) = selection.tracks
        built = segments(media_set, selection, data, non_negative=non_negative)
        packets, frames, errors = demux(build_init_segment([track]) + b"".join(built))
        source = source_packets(name, track.track_id)
        assert not errors, errors
        assert len(packets) == len(source) == len(track.samples) and frames == len(source)
        assert [p[2] for p in packets] == [s[2] for s in source]
        dts = np.array([p[1] for p in packets]) - np.array([s[1] for s in source])
        assert (dts == track.edit_offset).all()
        offsets = track.samples.cts.astype(np.int64) - track.edit_offset
        declared = presentation_time_offset(track) if non_negative else 0
        expected = declared + max(0, -int((offsets + declared).min()))
        pts = np.array([p[0] for p in packets]) - np.array([s[0] for s in source])
        assert (pts == expected).all(), np.unique(pts)


@pytest.mark.parametrize("name", ["title_360p.mp4", "hevc.mp4", "two_audio.mp4"])
def test_each_fragment_decodes_on_its_own(name):
    """init + fragment k alone decodes all its frames: every fragment starts with a sync sample of a closed GOP
    (what a player joining or switching at segment k needs)."""
    media_set, data = media(name)
    for selection in single_track_selections(media_set):
        init = build_init_segment(selection.tracks)
        for index, fragment in enumerate(segments(media_set, selection, data)):
            _, frames, errors = demux(init + fragment)
            assert not errors and frames == len(media_set.segment_tables(selection, index)[0])


def test_muxed_tracks_in_one_fragment():
    """Several trafs in one moof (video + two audio): data offsets point each track into the shared mdat."""
    media_set, data = media("two_audio.mp4")
    presentation = media_set.presentations[0]
    selection = media_set.resolve(TrackSpec())
    tracks = presentation.tracks
    selection = dataclasses.replace(selection, tracks=tracks)
    built = segments(media_set, selection, data)
    init = build_init_segment(tracks)
    with av.open(io.BytesIO(init + b"".join(built))) as c:
        got: dict[int, list[bytes]] = {}
        for p in c.demux():
            if p.size:
                got.setdefault(p.stream.index, []).append(bytes(p))
    for index, track in enumerate(tracks):
        assert got[index] == [s[2] for s in source_packets("two_audio.mp4", track.track_id)]


# -- synthetic tables: properties and errors -------------------------------------------------------------------------


@st.composite
def tables(draw):
    n = draw(st.integers(1, 40))
    sizes = np.array(draw(st.lists(st.integers(0, 3000), min_size=n, max_size=n)), dtype=np.uint32)
    durations = np.array(draw(st.lists(st.integers(1, 5000), min_size=n, max_size=n)), dtype=np.uint32)
    cts = np.array(draw(st.lists(st.integers(0, 20000), min_size=n, max_size=n)), dtype=np.int32)
    key = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    start = draw(st.integers(0, 2**40))
    dts = start + np.concatenate(([0], np.cumsum(durations[:-1], dtype=np.int64)))
    offsets = np.concatenate(([0], np.cumsum(sizes[:-1], dtype=np.uint64)))
    return SampleTable(offsets, sizes, dts, cts, durations, key), draw(st.integers(-30000, 30000))


@settings(max_examples=60)
@given(tables(), st.booleans(), st.booleans(), st.integers(0, 10**6))
def test_trun_columns_property(drawn, styp, tfxd, index):
    table, edit = drawn
    track = dataclasses.replace(video_track(1), samples=table, edit_offset=edit)
    payload = bytes(np.random.default_rng(0).integers(0, 256, int(table.total_size), dtype=np.uint8))
    muxer = Fmp4Muxer([track], styp=styp, tfxd=tfxd)
    fragment = muxer.build(MediaSegment(index, (TrackSegment(track, table, payload),)))
    assert len(fragment) == muxer.measure([table])
    (times,) = read_fragment(fragment)
    np.testing.assert_array_equal(times.decode, table.dts)
    np.testing.assert_array_equal(times.presentation, table.pts - edit)
    np.testing.assert_array_equal(times.sizes, table.sizes)
    np.testing.assert_array_equal(times.sync, table.keyframe)
    assert times.payload == payload
    assert root(fragment).find(b"moof", b"mfhd").parsed.sequence_number == index + 1


def test_empty_track_has_no_traf():
    video, audio = video_track(2), audio_track(2)
    muxer = Fmp4Muxer([video, audio])
    table = video.samples[0:10]
    segment = MediaSegment(0, (TrackSegment(video, table, bytes(table.total_size)),
                               TrackSegment(audio, SampleTable.empty(), b"")))  # fmt: skip
    fragment = muxer.build(segment)
    assert len(fragment) == muxer.measure([table, SampleTable.empty()])
    assert [t.track_id for t in read_fragment(fragment)] == [1]


def test_build_errors():
    video = video_track(2)
    table = video.samples[0:5]
    muxer = Fmp4Muxer([video])
    with pytest.raises(PackagerError) as e:
        muxer.build(MediaSegment(0, (TrackSegment(video, table, b"short"),)))
    assert e.value.code is ErrorCode.BAD_DATA and e.value.message.startswith("Fmp4Muxer.build")
    with pytest.raises(PackagerError) as e:
        muxer.measure([table, table])
    assert e.value.code is ErrorCode.BAD_REQUEST
    with pytest.raises(PackagerError) as e:
        Fmp4Muxer([])
    assert e.value.code is ErrorCode.NO_STREAMS
