"""MP4 demuxer vs independent ground truth: PyAV (ffmpeg's mov demuxer) per packet, pymp4 per box, and hand-built
boxes for what the generated fixtures do not contain (stz2 4/8-bit, odd stsc layouts, bad tables)."""
from __future__ import annotations

import functools
import re
import struct

import av
import numpy as np
import pytest
from pymp4.parser import Box as Pymp4Box

from fixtures import mp4_variants as mv
from fixtures.generate import fixture_path
from packagers.codecs.box import parse_header
from packagers.errors import ErrorCode, PackagerError
from packagers.mp4 import open_presentation, parse_moov, read_presentation
from packagers.mp4 import tables
from packagers.mp4.boxes import iter_boxes
from packagers.mp4.demux import decode_language, parse_elst

FIXTURES = ("title_360p.mp4", "title_240p.mp4", "title_180p.mp4", "two_audio.mp4", "moov_end.mp4", "hevc.mp4",
            "audio_only.mp4", "no_bframes.mp4")
# track_IDs PyAV sees but we must skip: a 'text' handler track, an unknown sample entry ('ac-3' renamed mp4a)
SKIPPED = {"text_track": {3}, "unknown_codec": {2}}
MESSAGE = re.compile(r"^[a-z_0-9]+: [^\n]+$")


def path_of(name: str):
    return fixture_path(name) if name.endswith(".mp4") else mv.variant_path(name)


ALL = FIXTURES + mv.FEATURE_VARIANTS


@functools.lru_cache(maxsize=None)
def presentation(name: str):
    return open_presentation(path_of(name))


@functools.lru_cache(maxsize=None)
def pyav(name: str) -> dict:
    """Per stream (keyed by MP4 track_ID): codec facts and packet columns in decode order."""
    out = {}
    with av.open(str(path_of(name))) as container:
        for s in container.streams:
            cc = s.codec_context
            out[s.id] = dict(type=s.type, extradata=bytes(cc.extradata or b""), width=getattr(cc, "width", 0),
                             height=getattr(cc, "height", 0), sample_rate=getattr(cc, "sample_rate", 0),
                             channels=getattr(cc, "channels", 0), language=s.metadata.get("language", "und"),
                             rows=[])
        for p in container.demux():
            if p.size:
                out[p.stream.id]["rows"].append((p.pos, p.size, p.dts, p.pts, p.is_keyframe))
    for info in out.values():
        cols = np.array(info.pop("rows"), dtype=np.int64).reshape(-1, 5)
        info.update(pos=cols[:, 0], size=cols[:, 1], dts=cols[:, 2], pts=cols[:, 3], key=cols[:, 4].astype(bool))
    return out


# --- samples vs PyAV --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_tracks_are_the_video_and_audio_streams_pyav_sees(name):
    ours = {t.track_id: t.kind for t in presentation(name).tracks}
    theirs = {sid: s["type"] for sid, s in pyav(name).items() if sid not in SKIPPED.get(name, ())}
    assert ours == theirs


@pytest.mark.parametrize("name", ALL)
def test_samples_match_pyav_packets(name):
    streams = pyav(name)
    for track in presentation(name).tracks:
        s = streams[track.track_id]
        t = track.samples
        assert len(t) == len(s["pos"]), track.track_id
        np.testing.assert_array_equal(t.offsets.astype(np.int64), s["pos"])
        np.testing.assert_array_equal(t.sizes, s["size"])
        if name == "no_stss" and track.kind == "video":
            assert t.keyframe.all()  # §8.6.2: no stss = every sample is a sync sample (ffmpeg re-parses H.264)
        else:
            np.testing.assert_array_equal(t.keyframe, s["key"])
        np.testing.assert_array_equal(track.presentation_dts(), s["dts"])
        np.testing.assert_array_equal(track.presentation_pts(), s["pts"])
        assert (t.cts >= 0).all()  # normalised: pts >= dts, whatever ctts version the file has


@pytest.mark.parametrize("name", ALL)
def test_codec_facts_match_pyav(name):
    streams = pyav(name)
    for track in presentation(name).tracks:
        s, c = streams[track.track_id], track.codec
        assert c.extradata == s["extradata"]
        if track.kind == "video":
            assert (c.width, c.height) == (s["width"], s["height"])
        else:
            assert (c.sample_rate, c.channels) == (s["sample_rate"], s["channels"])
        assert track.language == s["language"]


def _hevc_codec_string(fourcc: str, hvcc: bytes) -> str:
    """Annex E.3, written out independently of packagers.codecs.hevc."""
    space, tier, profile = hvcc[1] >> 6, (hvcc[1] >> 5) & 1, hvcc[1] & 31
    flags = int.from_bytes(hvcc[2:6], "big")
    reversed_flags = sum(((flags >> i) & 1) << (31 - i) for i in range(32))
    constraints = list(hvcc[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    s = f"{fourcc}.{'ABC'[space - 1] if space else ''}{profile}.{reversed_flags:X}.{'HL'[tier == 0]}{hvcc[12]}"
    return s + "".join(f".{b:X}" for b in constraints)


@pytest.mark.parametrize("name", ALL)
def test_codec_strings_from_pyav_extradata(name):
    streams = pyav(name)
    for track in presentation(name).tracks:
        x, c = streams[track.track_id]["extradata"], track.codec
        if c.fourcc == "avc1":
            assert c.codec_string == f"avc1.{x[1]:02x}{x[2]:02x}{x[3]:02x}"
            assert c.nal_length_size == (x[4] & 3) + 1
        elif c.fourcc == "hvc1":
            assert c.codec_string == _hevc_codec_string("hvc1", x)
            assert c.nal_length_size == (x[21] & 3) + 1
        else:
            assert c.fourcc == "mp4a" and c.codec_string == f"mp4a.40.{x[0] >> 3}"


def test_known_codec_strings():
    assert presentation("title_360p.mp4").tracks[0].codec.codec_string == "avc1.64001e"
    assert presentation("title_180p.mp4").tracks[0].codec.codec_string == "avc1.64000d"
    assert presentation("hevc.mp4").tracks[0].codec.codec_string == "hvc1.1.6.L60.90"
    assert {t.codec.codec_string for t in presentation("two_audio.mp4").audio_tracks} == {"mp4a.40.2"}


def _nal_type_h264(nal: bytes) -> int:
    return nal[0] & 0x1F


def _nal_type_hevc(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


@pytest.mark.parametrize("name", ["title_360p.mp4", "hevc.mp4", "no_bframes.mp4"])
def test_parameter_sets_in_send_order(name):
    c = presentation(name).tracks[0].codec
    if c.codec == "h264":
        assert [_nal_type_h264(n) for n in c.parameter_sets] == [7, 8]
    else:
        assert [_nal_type_hevc(n) for n in c.parameter_sets] == [32, 33, 34]
    for nal in c.parameter_sets:
        assert nal in c.extradata


def test_first_keyframe_starts_with_parameter_sets_usable_by_a_decoder():
    """Annex-B stream made of our parameter sets + our first sample decodes: proves offsets and NAL lengths."""
    path = fixture_path("title_180p.mp4")
    track = presentation("title_180p.mp4").video_tracks[0]
    data = path.read_bytes()
    off, size = int(track.samples.offsets[0]), int(track.samples.sizes[0])
    sample, annexb, n = data[off : off + size], bytearray(), track.codec.nal_length_size
    for ps in track.codec.parameter_sets:
        annexb += b"\0\0\0\1" + ps
    pos = 0
    while pos < len(sample):
        length = int.from_bytes(sample[pos : pos + n], "big")
        annexb += b"\0\0\0\1" + sample[pos + n : pos + n + length]
        pos += n + length
    assert pos == len(sample)
    ctx = av.CodecContext.create("h264", "r")
    frames = list(ctx.decode(av.Packet(bytes(annexb)))) + list(ctx.decode(None))
    assert frames and (frames[0].width, frames[0].height) == (320, 180)


def test_languages_and_kinds():
    p = presentation("two_audio.mp4")
    assert [(t.kind, t.language) for t in p.tracks] == [("video", "und"), ("audio", "eng"), ("audio", "fra")]
    assert [t.kind for t in presentation("audio_only.mp4").tracks] == ["audio"]
    assert p.brand == "isom" and p.timescale == 1000


def test_edit_offsets():
    # ffmpeg's B-frame edit: media_time = 2 frames of 512 ticks; AAC priming: 1024 samples
    assert [t.edit_offset for t in presentation("title_180p.mp4").tracks] == [1024, 1024]
    assert [t.edit_offset for t in presentation("no_bframes.mp4").tracks] == [0, 1024]
    # empty edit of 500 ms (movie timescale 1000) before media_time 1024: 1024 - 500 * 12288 / 1000
    assert presentation("empty_edit").tracks[0].edit_offset == 1024 - 6144
    v = presentation("title_180p.mp4").video_tracks[0]
    assert v.presentation_pts().min() == 0 and v.presentation_dts()[0] == -1024


# --- variants vs their source -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["co64", "largesize", "moov_last", "mdat_size0", "stz2", "ctts_v1", "no_stss",
                                  "v1_headers", "text_track", "unknown_codec"])
def test_variant_has_the_samples_of_its_source(name):
    src, var = presentation(mv.SOURCE), presentation(name)
    by_id = {t.track_id: t for t in var.tracks}
    expected_ids = {t.track_id for t in src.tracks} - SKIPPED.get(name, set())
    assert set(by_id) == expected_ids
    delta = None
    for s in src.tracks:
        if s.track_id not in by_id:
            continue
        v = by_id[s.track_id]
        assert (v.kind, v.timescale, v.edit_offset, v.language) == (s.kind, s.timescale, s.edit_offset, s.language)
        assert v.codec == s.codec
        for col in ("sizes", "dts", "cts", "durations"):
            np.testing.assert_array_equal(getattr(v.samples, col), getattr(s.samples, col), err_msg=col)
        if name == "no_stss" and s.kind == "video":
            assert v.samples.keyframe.all() and not s.samples.keyframe.all()
        else:
            np.testing.assert_array_equal(v.samples.keyframe, s.samples.keyframe)
        moved = v.samples.offsets.astype(np.int64) - s.samples.offsets.astype(np.int64)
        delta = int(moved[0]) if delta is None else delta
        assert (moved == delta).all()  # the whole mdat moved as one


def test_ctts_v1_is_stored_negative_and_normalised():
    data = mv.variant_path("ctts_v1").read_bytes()
    moov = mv.top(mv.parse(data), b"moov")
    ctts = moov.find(b"trak", b"mdia", b"minf", b"stbl", b"ctts")[0].payload
    assert ctts[0] == 1 and min(struct.unpack_from(">i", ctts, 12 + 8 * i)[0] for i in range(10)) < 0
    track = presentation("ctts_v1").video_tracks[0]
    assert track.samples.cts.min() == 0 and track.edit_offset == 1024


def test_moov_end_and_moov_first_read_only_headers_and_moov():
    for name in ("moov_end.mp4", "moov_last", mv.SOURCE):
        data = path_of(name).read_bytes()
        calls = []

        def read(offset, size):
            calls.append((offset, size))
            return data[offset : offset + size]

        read_presentation(read, len(data), name)
        moov = mv.top(mv.parse(data), b"moov")
        big = [c for c in calls if c[1] > 16]
        assert big == [(data.index(b"moov") - 4, len(bytes(moov)))]


def test_parse_moov_accepts_box_or_payload():
    data = fixture_path("two_audio.mp4").read_bytes()
    start = data.index(b"moov") - 4
    (size,) = struct.unpack_from(">I", data, start)
    whole, payload = parse_moov(data[start : start + size]), parse_moov(data[start + 8 : start + size])
    for a, b in zip(whole.tracks, payload.tracks):
        np.testing.assert_array_equal(a.samples.offsets, b.samples.offsets)
        assert a.codec == b.codec
    with pytest.raises(PackagerError) as e:
        parse_moov(data[start : start + size - 10])
    assert e.value.code == ErrorCode.BAD_DATA


# --- pymp4 per box ----------------------------------------------------------------------------------------------------


def _pymp4(node: mv.Node):
    return Pymp4Box.parse(bytes(node))


@pytest.mark.parametrize("name", ["title_180p.mp4", "two_audio.mp4", "hevc.mp4", "co64", "no_stss"])
def test_tables_match_pymp4_boxes(name):
    """Sizes, durations, sync samples and (by a naive per-sample loop) offsets from pymp4's parse of each box."""
    moov = mv.top(mv.parse(path_of(name).read_bytes()), b"moov")
    ours = {t.track_id: t for t in presentation(name).tracks}
    for trak in moov.find(b"trak"):
        tkhd = _pymp4(trak.find(b"tkhd")[0])
        mdhd = _pymp4(trak.find(b"mdia", b"mdhd")[0])
        track = ours[tkhd.track_ID]
        assert (track.timescale, track.language) == (mdhd.timescale, mdhd.language)
        stbl = {c.type: c for c in trak.find(b"mdia", b"minf", b"stbl")[0].children}
        sz = _pymp4(stbl[b"stsz"])  # (pymp4 cannot parse stz2)
        sizes = list(sz.entry_sizes) if sz.entry_sizes else [sz.sample_size] * sz.sample_count
        assert track.samples.sizes.tolist() == sizes
        durations = [e.sample_delta for e in _pymp4(stbl[b"stts"]).entries for _ in range(e.sample_count)]
        assert track.samples.durations.tolist() == durations
        if b"stss" in stbl:
            sync = [e.sample_number for e in _pymp4(stbl[b"stss"]).entries]
            assert (np.flatnonzero(track.samples.keyframe) + 1).tolist() == sync
        chunks = [e.chunk_offset for e in _pymp4(stbl[b"stco"] if b"stco" in stbl else stbl[b"co64"]).entries]
        runs = list(_pymp4(stbl[b"stsc"]).entries)
        offsets, sample = [], 0
        for i, run in enumerate(runs):
            last = runs[i + 1].first_chunk if i + 1 < len(runs) else len(chunks) + 1
            for chunk in range(run.first_chunk, last):
                pos = chunks[chunk - 1]
                for _ in range(run.samples_per_chunk):
                    offsets.append(pos)
                    pos += sizes[sample]
                    sample += 1
        assert track.samples.offsets.tolist() == offsets


# --- malformed files --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,code,fragment", [
    ("truncated_moov", ErrorCode.BAD_DATA, "box 'moov' at offset 32 ends at"),
    ("truncated_mdat", ErrorCode.BAD_DATA, "past the end of the file"),
    ("no_moov", ErrorCode.BAD_DATA, "no moov box"),
    ("garbage", ErrorCode.BAD_DATA, "past the end of the file"),
    ("no_usable_track", ErrorCode.NO_STREAMS, "no H.264, HEVC, AV1 or AAC track"),
])
def test_malformed_files(name, code, fragment):
    with pytest.raises(PackagerError) as e:
        open_presentation(mv.variant_path(name))
    assert e.value.code == code
    assert fragment in e.value.message and MESSAGE.match(e.value.message), e.value.message
    assert str(mv.variant_path(name)) in e.value.message


def test_empty_and_tiny_files():
    for data in (b"", b"\0\0\0", b"\0\0\0\x08free", b"\0\0\0\x10ftypisom\0\0\0\0"):
        with pytest.raises(PackagerError) as e:
            read_presentation(lambda o, n: data[o : o + n], len(data), "x.mp4")
        assert e.value.code == ErrorCode.BAD_DATA and e.value.message.startswith("find_moov: no moov box")


def _edit_moov(name: str, edit) -> bytes:
    return mv.rewrite(path_of(name).read_bytes(), lambda nodes: edit(mv.top(nodes, b"moov")))


def _stbl_box(moov: mv.Node, typ: bytes, kind: bytes = b"vide") -> mv.Node:
    trak = next(t for t in moov.find(b"trak") if mv.handler(t) == kind)
    return trak.find(b"mdia", b"minf", b"stbl", typ)[0]


def _set_u32(node: mv.Node, offset: int, value: int) -> None:
    node.payload = node.payload[:offset] + struct.pack(">I", value) + node.payload[offset + 4 :]


@pytest.mark.parametrize("edit,message", [
    (lambda m: _set_u32(_stbl_box(m, b"stsc"), 8 + 12, 1), "parse_stsc: first_chunk not increasing in track 1 of"),
    (lambda m: _set_u32(_stbl_box(m, b"stsc"), 8, 0), "parse_stsc: first_chunk 0 in track 1"),
    (lambda m: _set_u32(_stbl_box(m, b"stsc"), 12, 2), "parse_stsc: chunks hold"),
    (lambda m: _set_u32(_stbl_box(m, b"stss"), 8, 10_000), "parse_stss: sync sample number out of range"),
    (lambda m: _set_u32(_stbl_box(m, b"stts"), 8, 5), "parse_stts: stts describes"),
    (lambda m: _set_u32(_stbl_box(m, b"ctts"), 8, 500), "parse_ctts: ctts describes"),
    (lambda m: _set_u32(_stbl_box(m, b"stsz"), 8, 0xFFFFFF), "parse_stsz: sample count 16777215 exceeds the box"),
    (lambda m: _set_u32(_stbl_box(m, b"stco", b"soun"), 4, 1 << 30), "parse_stco: chunk count"),
    (lambda m: _set_u32(_stbl_box(m, b"stco", b"soun"), 8, 600_000), "past the end of the file"),
    (lambda m: _set_u32(m.find(b"trak", b"mdia", b"mdhd")[0], 12, 0), "parse_mdhd: timescale 0 in track 1"),
    (lambda m: _set_u32(m.find(b"mvhd")[0], 12, 0), "parse_mvhd: timescale 0"),
])
def test_inconsistent_tables_are_bad_data(edit, message):
    data = _edit_moov(mv.SOURCE, edit)
    with pytest.raises(PackagerError) as e:
        read_presentation(lambda o, n: data[o : o + n], len(data), "t.mp4")
    assert e.value.code == ErrorCode.BAD_DATA
    assert message in e.value.message and MESSAGE.match(e.value.message), e.value.message


def test_empty_stss_means_every_sample_is_a_sync_sample():
    def edit(moov):
        _stbl_box(moov, b"stss").payload = bytes(8)

    data = _edit_moov(mv.SOURCE, edit)
    track = read_presentation(lambda o, n: data[o : o + n], len(data), "t.mp4").video_tracks[0]
    assert len(track.samples) == 288 and track.samples.keyframe.all()


def test_lying_uniform_sample_count_does_not_allocate():
    def edit(moov):
        stsz, stts = _stbl_box(moov, b"stsz", b"soun"), _stbl_box(moov, b"stts", b"soun")
        stsz.payload = struct.pack(">IIIII", 0, 200, 0xFFFFFFFF, 0, 0)  # uniform size, absurd count
        stts.payload = struct.pack(">IIII", 0, 1, 0xFFFFFFFF, 1024)

    data = _edit_moov(mv.SOURCE, edit)
    with pytest.raises(PackagerError) as e:
        read_presentation(lambda o, n: data[o : o + n], len(data), "t.mp4")
    assert e.value.code == ErrorCode.BAD_DATA and "parse_stsz: sample_count 4294967295" in e.value.message


# --- hand-built boxes: what the fixtures do not contain ---------------------------------------------------------------


def _box(typ: str, payload: bytes):
    data = struct.pack(">I4s", 8 + len(payload), typ.encode()) + payload
    return data, parse_header(data, 0, len(data), "t")


def test_box_headers_32_64_bit_and_to_end():
    buf = (struct.pack(">I4s", 12, b"free") + b"abcd" + struct.pack(">I4sQ", 1, b"skip", 20) + b"wxyz"
           + struct.pack(">I4s", 0, b"mdat") + b"rest")
    boxes = list(iter_boxes(buf, 0, len(buf), "t"))
    assert [(b.type, b.start, b.header_size, b.size) for b in boxes] == [
        ("free", 0, 8, 12), ("skip", 12, 16, 20), ("mdat", 32, 8, 12)]
    for bad, message in ((struct.pack(">I4s", 4, b"free"), "has size 4 < its header"),
                         (struct.pack(">I4sI", 1, b"free", 0), "largesize of box 'free' truncated"),
                         (struct.pack(">I4s", 9, b"fr\nx"), "box '0x66720a78' at offset 0 ends at 9, past")):
        with pytest.raises(PackagerError) as e:
            list(iter_boxes(bad, 0, len(bad), "t"))
        assert message in e.value.message and MESSAGE.match(e.value.message)


@pytest.mark.parametrize("field_size", [4, 8, 16])
def test_stz2_field_sizes(field_size):
    sizes = np.array([3, 15, 0, 7, 9] if field_size == 4 else [1, 255, 17, 0, 200, 99], dtype=np.uint32)
    if field_size == 16:
        sizes = sizes * 257
    if field_size == 4:
        padded = np.append(sizes, 0) if len(sizes) % 2 else sizes
        packed = ((padded[0::2] << 4) | padded[1::2]).astype(np.uint8).tobytes()
    else:
        packed = sizes.astype(">u2" if field_size == 16 else "u1").tobytes()
    buf, box = _box("stz2", struct.pack(">I3xBI", 0, field_size, len(sizes)) + packed)
    parsed = tables.parse_stsz(buf, box, "t")
    assert parsed.count == len(sizes) and parsed.expand().tolist() == sizes.tolist()


def test_stz2_bad_field_size():
    buf, box = _box("stz2", struct.pack(">I3xBI", 0, 12, 1) + b"\0\0")
    with pytest.raises(PackagerError, match="parse_stz2: field_size 12"):
        tables.parse_stsz(buf, box, "t")


def test_stsc_runs_with_empty_chunks_and_co64_offsets():
    sizes = np.array([10, 20, 30, 40, 50, 60], dtype=np.uint32)
    # chunks 1-2: 2 samples each, chunk 3: none, chunk 4: 2 samples
    chunk_offsets = np.array([1000, 5000, 9000, (1 << 33)], dtype=np.uint64)
    offsets, end = tables.sample_offsets(sizes, np.array([1, 3, 4]), np.array([2, 0, 2]), chunk_offsets, "t")
    assert offsets.tolist() == [1000, 1010, 5000, 5030, 1 << 33, (1 << 33) + 50]
    assert end == (1 << 33) + 110
    # a first run starting at chunk 2 leaves chunk 1 empty
    offsets, end = tables.sample_offsets(sizes[:4], np.array([2]), np.array([2]), chunk_offsets[:3], "t")
    assert offsets.tolist() == [5000, 5010, 9000, 9030] and end == 9070


def test_ctts_version1_negative_offsets_are_normalised():
    stts = (np.array([4], np.uint32), np.array([10], np.uint32))
    ctts = (np.array([1, 1, 2], np.uint32), np.array([0, 20, -10], np.int32))
    stsz = tables.SampleSizes(4, None, 5)
    table, shift = tables.build_sample_table(stts, ctts, stsz, (np.array([1]), np.array([4])),
                                             np.array([100], np.uint64), None, "t", file_size=1000)
    assert shift == 10 and table.cts.tolist() == [10, 30, 0, 0]
    assert (table.pts - shift).tolist() == [0, 30, 10, 20]
    assert table.keyframe.all() and table.offsets.tolist() == [100, 105, 110, 115]


@pytest.mark.parametrize("version,entries,expected", [
    (0, [(-1, 500), (1024, 9000)], 1024 - 6144),  # empty edit then the B-frame edit
    (0, [(2048, 9000)], 2048),
    (1, [(-1, 1000), (-1, 250), (0, 9000)], -15360),
    (0, [(-1, 1)], 0),  # only an empty edit: nothing to offset
    (0, [], 0),
])
def test_elst(version, entries, expected):
    fmt = ">Qq4x" if version else ">Ii4x"
    body = b"".join(struct.pack(fmt, duration, media_time) for media_time, duration in entries)
    buf, box = _box("elst", struct.pack(">BxxxI", version, len(entries)) + body)
    assert parse_elst(buf, box, 1000, 12288, "t") == expected


def test_elst_invalid_media_time():
    buf, box = _box("elst", struct.pack(">IIIiI", 0, 1, 100, -7, 0x10000))
    with pytest.raises(PackagerError, match="parse_elst: media_time -7"):
        parse_elst(buf, box, 1000, 12288, "t")


def test_language_decoding():
    assert decode_language(0x15C7) == "eng" and decode_language(0x55C4) == "und"
    assert decode_language(0x1A41) == "fra" and decode_language(0) == "und"


