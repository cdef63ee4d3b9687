"""Sidecar captions (packagers.captions) against ground truth: hand-written cue lists, ffmpeg/ffprobe's WebVTT and
SRT demuxers and converters, xml.etree for TTML, pymp4 per box and ffmpeg's own TTML-in-MP4 for stpp, PyAV
(ffmpeg 8) demuxing our stpp fragments."""
from __future__ import annotations

import html
import io
import json
import re
import subprocess
import tracemalloc
import xml.etree.ElementTree as ET
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymp4.parser import SampleEntryBox

from packagers.captions import (MAX_BLOCK_LINES, MAX_BYTES, MAX_CUES, CaptionTrack, Cue, build_stpp_fragment,
                                build_stpp_init, build_ttml, build_webvtt_file, build_webvtt_segment, parse_captions)
from packagers.errors import ErrorCode, PackagerError
from packagers.fmp4 import TFXD_UUID
from packagers.ts.pes import TS_PTS_OFFSET

from ..needs import needs_executable
from .fmp4_tools import root

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "captions"
VTT = (FIXTURES / "sample_eng.vtt").read_bytes()
SRT = (FIXTURES / "sample_eng.srt").read_bytes()
TT = "{http://www.w3.org/ns/ttml}"
TTS = "{http://www.w3.org/ns/ttml#styling}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

# The cues of both fixture files, read off the files by hand: (start_ms, end_ms, text as WebVTT cue text, id).
EXPECTED = [
    (500, 2000, "<i>Hello</i> there", "1"),
    (3500, 4500, "Spanning\nthe boundary", "2"),
    (7000, 13000, "Tom &amp; Jerry <b>three</b> segments", "3"),
    (12000, 12800, "Starts on a boundary", "4"),
    (15000, 16000, "Ends on a boundary", "5"),
    (3723456, 3725000, "Late cue", "6"),
]
BOUNDS = [0, 4000, 8000, 12000, 16000, 20000]  # 4 s media segments
IN_SEGMENT = [["1", "2"], ["2", "3"], ["3"], ["3", "4", "5"], []]  # cue ids per segment, by hand from the times


def cues(track: CaptionTrack) -> list[tuple]:
    return [(c.start_ms, c.end_ms, c.text, c.id) for c in track.cues]


def times(track: CaptionTrack) -> list[tuple[int, int]]:
    return [(c.start_ms, c.end_ms) for c in track.cues]


def plain(text: str) -> str:
    """Cue text without markup and entities: what a viewer reads."""
    return html.unescape(re.sub(r"<[^>]*>", "", text))


def bad_data(data: bytes, name: str) -> str:
    with pytest.raises(PackagerError) as e:
        parse_captions(data, name)
    assert e.value.code is ErrorCode.BAD_DATA
    assert e.value.message.startswith("parse_captions: ")
    return e.value.message


def ffprobe_packets(path: Path) -> list[tuple[int, int]]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_packets", "-of", "json", str(path)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return [(int(p["pts"]), int(p["pts"]) + int(p["duration"])) for p in json.loads(out)["packets"]]


def ffmpeg_convert(src: Path, dst: Path) -> bytes:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), str(dst)], check=True, timeout=60)
    return dst.read_bytes()


# -- parsing ---------------------------------------------------------------------------------------------------------
def test_vtt_and_srt_fixtures_give_the_same_cues():
    vtt, srt = parse_captions(VTT, "sample_eng.vtt"), parse_captions(SRT, "sample_eng.srt")
    assert cues(vtt) == cues(srt) == EXPECTED
    assert [c.settings for c in vtt.cues] == ["align:start line:90%", "", "position:10%,line-left", "", "", ""]
    assert {c.settings for c in srt.cues} == {""}
    assert vtt.starts.tolist() == [c[0] for c in EXPECTED] and vtt.ends.tolist() == [c[1] for c in EXPECTED]


@pytest.mark.parametrize("name", ["sample_eng.vtt", "sample_eng.srt"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_bom_and_line_endings(name, bom, newline):
    source = VTT if name.endswith(".vtt") else SRT
    data = bom + source.replace(b"\n", newline)
    expected = parse_captions(source, name)
    assert parse_captions(data, name) == expected
    assert parse_captions(data, "no_extension") == expected  # sniffed


def test_webvtt_blocks_settings_and_markup():
    data = (
        "WEBVTT\tsome title\nKind: subtitles\n\n"
        "REGION\nid:fred\nwidth:40%\n\n"
        "STYLE\n::cue(.loud) {\n  color: red;\n}\n\n"
        "NOTE\na comment\n\n"
        "late\n00:00:10.000 --> 00:00:11.000   line:0   align:end\n<v Roger Bingham>Hi <c.loud>you</c>\n"
        "  indented second line\n\n"
        "01:00.000 --> 01:02.000\n<lang fr>Bonjour</lang> <00:01:01.000>karaoke\n\n"
        "00:00:01.000 --> 00:00:02.000\nfirst (sorted before the others)\n"
    ).encode()
    track = parse_captions(data, "subs.vtt")
    assert [(c.start_ms, c.end_ms, c.id, c.settings) for c in track.cues] == [
        (1000, 2000, "", ""), (10000, 11000, "late", "line:0 align:end"), (60000, 62000, "", "")]
    assert track.cues[1].text == "<v Roger Bingham>Hi <c.loud>you</c>\n  indented second line"
    assert track.styles == ("::cue(.loud) {\n  color: red;\n}",)
    assert "STYLE\n::cue(.loud) {\n  color: red;\n}\n\n" in build_webvtt_file(track)
    assert "STYLE" not in build_webvtt_file(track, styles=False)


def test_header_directly_followed_by_a_cue_and_empty_files():
    assert times(parse_captions(b"WEBVTT\n00:01.000 --> 00:02.000\nno blank line after the header\n", "a.vtt")) == \
        [(1000, 2000)]
    for data, name in [(b"WEBVTT\n", "a.vtt"), (b"WEBVTT - empty\n\nNOTE nothing\n", "a.vtt"), (b"", "a.srt"),
                       (b"\n\n", "a.srt")]:
        track = parse_captions(data, name)
        assert track.cues == () and len(track.starts) == 0
        assert build_webvtt_segment(track, 0, 4000, mpegts=0) == \
            "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n"
        assert ET.fromstring(build_ttml(track)).find(f"{TT}body/{TT}div") is not None


def test_srt_markup_becomes_webvtt_cue_text():
    srt = (b"7\n00:00:01,000 --> 00:00:02,000 X1:10 X2:20 Y1:30 Y2:40\n<I>it</I> <font color=\"red\">red</font> "
           b"<u>u</u>\n{\\an8}I <3 R&D <b class=x>b</b> {not ASS}\n\n"
           b"8\n00:00:02,000-->00:00:03,000\nno spaces --> arrow\n")
    track = parse_captions(srt, "a.srt")
    assert cues(track) == [
        (1000, 2000, "<i>it</i> red <u>u</u>\nI &lt;3 R&amp;D &lt;b class=x>b</b> {not ASS}", "7"),
        (2000, 3000, "no spaces --> arrow", "8"),
    ]
    # the arrow would end the cue in WebVTT (it would read as a timing line): written escaped
    assert "no spaces --&gt; arrow" in build_webvtt_file(track)


# -- ffmpeg as the independent reader --------------------------------------------------------------------------------
@needs_executable("ffprobe")
@pytest.mark.parametrize("name", ["sample_eng.vtt", "sample_eng.srt"])
def test_cue_times_equal_ffprobes(name):
    assert ffprobe_packets(FIXTURES / name) == times(parse_captions((FIXTURES / name).read_bytes(), name))


@needs_executable("ffmpeg")
def test_ffmpegs_srt_to_webvtt_conversion_agrees(tmp_path):
    converted = parse_captions(ffmpeg_convert(FIXTURES / "sample_eng.srt", tmp_path / "out.vtt"), "out.vtt")
    ours = parse_captions(SRT, "sample_eng.srt")
    assert times(converted) == times(ours)
    assert [plain(c.text) for c in converted.cues] == [plain(c.text) for c in ours.cues]


@needs_executable("ffmpeg")
@needs_executable("ffprobe")
def test_our_webvtt_file_read_back_by_ffmpeg(tmp_path):
    """ffprobe reads our cue times; ffmpeg converts our WebVTT to SRT and gets the source SRT's cues back."""
    track = parse_captions(SRT, "sample_eng.srt")
    path = tmp_path / "ours.vtt"
    path.write_text(build_webvtt_file(track), encoding="utf-8")
    assert ffprobe_packets(path) == [c[:2] for c in EXPECTED]
    assert cues(parse_captions(ffmpeg_convert(path, tmp_path / "back.srt"), "back.srt")) == EXPECTED
    assert parse_captions(path.read_bytes(), "ours.vtt") == track  # and our own parser


# -- HLS segments ----------------------------------------------------------------------------------------------------
@needs_executable("ffprobe")
def test_segments_repeat_spanning_cues_and_carry_the_timestamp_map(tmp_path):
    track = parse_captions(VTT, "sample_eng.vtt")
    by_id = {c.id: c for c in track.cues}
    for i, (start, end) in enumerate(zip(BOUNDS, BOUNDS[1:])):
        text = build_webvtt_segment(track, start, end, mpegts=TS_PTS_OFFSET)
        assert text.startswith(f"WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:{TS_PTS_OFFSET},LOCAL:00:00:00.000\n\n")
        segment = parse_captions(text.encode(), f"seg{i}.vtt")
        assert [c.id for c in segment.cues] == IN_SEGMENT[i]
        assert list(segment.cues) == [by_id[k] for k in IN_SEGMENT[i]]  # original times, settings, text
        path = tmp_path / f"seg{i}.vtt"
        path.write_text(text, encoding="utf-8")
        assert ffprobe_packets(path) == times(segment)
    assert build_webvtt_segment(track, 0, 4000).startswith("WEBVTT\n\n1\n")  # no map unless asked
    assert "MPEGTS:5," in build_webvtt_segment(track, 0, 4000, mpegts=(1 << 33) + 5)  # 33-bit PTS wraps


@settings(max_examples=150)
@given(st.lists(st.tuples(st.integers(0, 30_000), st.integers(0, 8000)), max_size=30),
       st.lists(st.integers(1, 9000), min_size=1, max_size=8), st.integers(0, 12_000))
def test_every_cue_is_in_exactly_the_segments_it_overlaps(spans, durations, offset):
    track = CaptionTrack(tuple(sorted((Cue(s, s + d, f"cue {i}", "", str(i)) for i, (s, d) in enumerate(spans)),
                                      key=lambda c: c.start_ms)))
    bounds = [0]
    for d in durations:
        bounds.append(bounds[-1] + d)
    for start, end in zip(bounds, bounds[1:]):
        got = [c.id for c in parse_captions(build_webvtt_segment(track, start, end, offset).encode(), "s.vtt").cues]
        # naive reference, on the output timeline: [s, e) overlaps [start, end); a zero-length cue sits at its start
        want = [c.id for c in track.cues if c.start_ms - offset < end and max(c.end_ms, c.start_ms + 1) - offset > start
                and max(c.end_ms, c.start_ms + 1) > offset]
        assert got == want


def test_clipping_shifts_drops_and_clamps():
    track = parse_captions(VTT, "sample_eng.vtt")
    clip = parse_captions(build_webvtt_file(track, offset_ms=10_000).encode(), "clip.vtt")
    # cue 3 (7-13 s) starts before the clip: clamped to 0; 1 and 2 end before 10 s: dropped; a cue at 12 s is at 2 s
    assert [(c.id, c.start_ms, c.end_ms) for c in clip.cues] == [
        ("3", 0, 3000), ("4", 2000, 2800), ("5", 5000, 6000), ("6", 3713456, 3715000)]
    clip = parse_captions(build_webvtt_file(track, offset_ms=10_000, duration_ms=5500).encode(), "clip.vtt")
    assert [(c.id, c.start_ms, c.end_ms) for c in clip.cues] == [("3", 0, 3000), ("4", 2000, 2800), ("5", 5000, 5500)]
    # a cue ending exactly at the clip start is gone
    assert [c.id for c in parse_captions(build_webvtt_file(track, offset_ms=13_000).encode(), "c.vtt").cues] == \
        ["5", "6"]
    segment = build_webvtt_segment(track, 0, 4000, offset_ms=10_000, mpegts=TS_PTS_OFFSET)
    assert [(c.id, c.start_ms, c.end_ms) for c in parse_captions(segment.encode(), "s.vtt").cues] == [
        ("3", 0, 3000), ("4", 2000, 2800)]


# -- TTML ------------------------------------------------------------------------------------------------------------
def test_ttml_document_has_the_cues():
    track = parse_captions(SRT, "sample_eng.srt")
    tt = ET.fromstring(build_ttml(track, language="eng"))
    assert tt.tag == f"{TT}tt" and tt.get(XML_LANG) == "eng"
    ps = list(tt.iter(f"{TT}p"))
    assert [(p.get("begin"), p.get("end")) for p in ps] == [
        ("00:00:00.500", "00:00:02.000"), ("00:00:03.500", "00:00:04.500"), ("00:00:07.000", "00:00:13.000"),
        ("00:00:12.000", "00:00:12.800"), ("00:00:15.000", "00:00:16.000"), ("01:02:03.456", "01:02:05.000")]
    assert ["".join(p.itertext()) for p in ps] == [plain(c.text).replace("\n", "") for c in track.cues]
    assert [len(p.findall(f".//{TT}br")) for p in ps] == [0, 1, 0, 0, 0, 0]
    assert ps[0].find(f"{TT}span").get(f"{TTS}fontStyle") == "italic"
    assert ps[2].find(f"{TT}span").get(f"{TTS}fontWeight") == "bold"
    assert "".join(ps[2].itertext()) == "Tom & Jerry three segments"


def test_ttml_window_and_offset():
    track = parse_captions(VTT, "sample_eng.vtt")
    tt = ET.fromstring(build_ttml(track, 4000, 8000))
    assert [p.get("begin") for p in tt.iter(f"{TT}p")] == ["00:00:03.500", "00:00:07.000"]
    tt = ET.fromstring(build_ttml(track, 0, 4000, offset_ms=10_000))
    assert [(p.get("begin"), p.get("end")) for p in tt.iter(f"{TT}p")] == [
        ("00:00:00.000", "00:00:03.000"), ("00:00:02.000", "00:00:02.800")]


def test_ttml_fragment_relative_times_for_smooth_streaming():
    """MSS: times relative to the fragment [12 s, 16 s): cue 3 (7-13 s) starts at 0, cue 5 (15-16 s) at 3 s."""
    tt = ET.fromstring(build_ttml(parse_captions(VTT, "sample_eng.vtt"), 0, 4000, offset_ms=12_000))
    assert [(p.get("begin"), p.get("end")) for p in tt.iter(f"{TT}p")] == [
        ("00:00:00.000", "00:00:01.000"), ("00:00:00.000", "00:00:00.800"), ("00:00:03.000", "00:00:04.000")]


def test_ttml_maps_webvtt_markup_and_escapes():
    text = "<v Roger>Hi <c.loud>you</c> <b>bold <i>both</b> x</i> &lt;tag&gt; &amp; < 3\nnext\x01 &#1;line <u>open"
    tt = ET.fromstring(build_ttml(CaptionTrack((Cue(0, 1000, text),)), language='x"<'))
    p = next(tt.iter(f"{TT}p"))
    assert "".join(p.itertext()) == "Hi you bold both x <tag> & < 3next line open"
    spans = [(s.get(f"{TTS}fontWeight"), s.get(f"{TTS}fontStyle"), s.get(f"{TTS}textDecoration"))
             for s in p.iter(f"{TT}span")]
    assert spans == [("bold", None, None), (None, "italic", None), (None, None, "underline")]
    assert tt.get(XML_LANG) == 'x"<'


@settings(max_examples=200)
@given(st.lists(st.one_of(st.sampled_from(["<b>", "</b>", "<i>", "</i>", "<u>", "</u>", "<c.x>", "</c>", "<v A>",
                                           "</v>", "<", ">", "&", "&amp;", "&#0;", "&#x1F600;", "\n", "<00:00.500>"]),
                          st.text(max_size=5)), max_size=20))
def test_ttml_is_well_formed_for_any_markup(parts):
    ET.fromstring(build_ttml(CaptionTrack((Cue(0, 1000, "".join(parts)),))))


# -- stpp (TTML in fMP4) ---------------------------------------------------------------------------------------------
def _leaf(node, *path):
    return node.find(*path).parsed


@needs_executable("ffmpeg")
def test_stpp_init_matches_ffmpegs_ttml_track(tmp_path):
    init = build_stpp_init("eng", timescale=1000)
    ours = root(init)  # pymp4 parses every leaf box whole, containers are tiled exactly
    assert [n.type for n in ours.children] == [b"ftyp", b"moov"]
    trak = ours.find(b"moov", b"trak")
    assert _leaf(trak, b"tkhd").track_ID == 1
    mdhd = _leaf(trak, b"mdia", b"mdhd")
    assert (mdhd.timescale, mdhd.language) == (1000, "eng")
    assert _leaf(ours, b"moov", b"mvex", b"trex").track_ID == 1
    # ffmpeg's own TTML-in-MP4 (movenc, independent writer) for the handler, media header and sample entry
    # (without the cue at 1 h: ffmpeg 5.1's movenc cannot write a TTML sample that long)
    (tmp_path / "ref.srt").write_bytes(SRT[:SRT.index(b"\n6\n")])
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp_path / "ref.srt"), "-c:s", "ttml",
                    str(tmp_path / "ref.mp4")], check=True, timeout=60)
    ref = root((tmp_path / "ref.mp4").read_bytes()).find(b"moov", b"trak")
    for path in [(b"mdia", b"hdlr"), (b"mdia", b"minf", b"sthd")]:
        ours_box, ref_box = trak.find(*path), ref.find(*path)
        if path[-1] == b"hdlr":
            assert ours_box.parsed.handler_type == ref_box.parsed.handler_type == b"subt"
        else:
            assert ours_box.raw == ref_box.raw == b"\0\0\0\x0csthd\0\0\0\0"
    ours_entry = SampleEntryBox.parse(trak.find(b"mdia", b"minf", b"stbl", b"stsd").raw[16:])
    ref_entry = SampleEntryBox.parse(ref.find(b"mdia", b"minf", b"stbl", b"stsd").raw[16:])
    assert ours_entry.format == ref_entry.format == b"stpp"
    # XMLSubtitleSampleEntry after its 8 SampleEntry bytes: namespace, schema_location, auxiliary_mime_types, each
    # null-terminated; ffmpeg adds a btrt box after them
    fields = b"http://www.w3.org/ns/ttml\0\0\0"
    assert ours_entry.data == fields
    assert ref_entry.data[:len(fields)] == fields and ref_entry.data[len(fields) + 4:len(fields) + 8] == b"btrt"


def test_stpp_fragment_boxes():
    ttml = build_ttml(parse_captions(VTT, "sample_eng.vtt"), 4000, 8000, language="eng")
    fragment = root(build_stpp_fragment(3, 4000, 4000, ttml))
    assert [n.type for n in fragment.children] == [b"styp", b"moof", b"mdat"]
    moof = fragment.find(b"moof")
    assert _leaf(moof, b"mfhd").sequence_number == 3
    tfhd = _leaf(moof, b"traf", b"tfhd")
    assert tfhd.track_ID == 1 and tfhd.flags.default_base_is_moof
    assert _leaf(moof, b"traf", b"tfdt").baseMediaDecodeTime == 4000
    trun = _leaf(moof, b"traf", b"trun")
    assert trun.sample_count == 1
    assert (trun.sample_info[0].sample_duration, trun.sample_info[0].sample_size) == (4000, len(ttml))
    mdat = fragment.find(b"mdat")
    assert trun.data_offset == len(moof.raw) + 8 and mdat.raw[8:] == ttml  # default-base-is-moof: from moof start
    # Smooth Streaming variant: tfxd with the same time and duration, timescale 10 MHz (rounded on the end time)
    mss = root(build_stpp_fragment(1, 1001, 999, ttml, timescale=10_000_000, tfxd=True))
    uuid = mss.find(b"moof", b"traf", b"uuid").raw
    assert uuid[8:24] == TFXD_UUID
    assert (int.from_bytes(uuid[28:36], "big"), int.from_bytes(uuid[36:44], "big")) == (10_010_000, 9_990_000)
    assert _leaf(mss, b"moof", b"traf", b"tfdt").baseMediaDecodeTime == 10_010_000


def test_stpp_demuxed_by_ffmpeg_as_a_subtitle_track():
    """PyAV (ffmpeg 8) reads init + fragments as a subtitle stream with our samples. (ffprobe 5.1 on this machine
    reports any 'subt' track, ffmpeg's own TTML MP4 too, as an unknown data stream.)"""
    track = parse_captions(VTT, "sample_eng.vtt")
    documents = [build_ttml(track, s, e, language="eng") for s, e in zip(BOUNDS, BOUNDS[1:])]
    data = build_stpp_init("eng") + b"".join(build_stpp_fragment(i + 1, s, e - s, doc)
                                             for i, (doc, s, e) in enumerate(zip(documents, BOUNDS, BOUNDS[1:])))
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams[0]
        assert (stream.type, stream.language, stream.time_base.denominator) == ("subtitle", "eng", 1000)
        packets = [(p.pts, p.duration, bytes(p)) for p in container.demux(stream) if p.size]
    assert packets == [(s, e - s, doc) for doc, s, e in zip(documents, BOUNDS, BOUNDS[1:])]


def test_stpp_rejects_impossible_fragments():
    for args in [(-1, 0, 1000), (1, -5, 1000), (1, 0, -1)]:
        with pytest.raises(PackagerError) as e:
            build_stpp_fragment(*args, b"<tt/>")
        assert e.value.code is ErrorCode.BAD_REQUEST and e.value.message.startswith("build_stpp_fragment: ")


# -- broken input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_not_utf8_names_the_line(newline):
    data = b"WEBVTT\n\n00:01.000 --> 00:02.000\nfine\n\xff not UTF-8\n".replace(b"\n", newline)
    assert bad_data(data, "x.vtt") == "parse_captions: not UTF-8 (byte 0xff), line 5 of x.vtt"
    assert "line 3 of x.srt" in bad_data(b"1\n00:00:01,000 --> 00:00:02,000\n\xe9t\xe9\n", "x.srt")


@pytest.mark.parametrize("data,name,line,what", [
    (b"WEBVTT\n\n00:01.00 --> 00:02.000\nx\n", "a.vtt", 3, "bad timestamp '00:01.00'"),
    (b"WEBVTT\n\n00:01.000 --> 00:60.000\nx\n", "a.vtt", 3, "bad timestamp '00:60.000'"),
    (b"WEBVTT\n\nid\n00:01,000 --> 00:02.000\nx\n", "a.vtt", 4, "bad timestamp '00:01,000'"),
    (b"WEBVTT\n\n00:01.000 -> 00:02.000\nx\n", "a.vtt", 3, "block without a cue timing line"),
    (b"WEBVTT\n\n00:01.000-->00:02.000\nx\n", "a.vtt", 3, "bad cue timing"),
    (b"WEBVTT\n\n\n\n00:05.000 --> 00:02.000\nx\n", "a.vtt", 5, "cue ends before it starts"),
    (b"1\n00:00:01,000 --> 00:00:02,000\nx\n\n2\n00:00:01,5 --> 00:00:02,000\ny\n", "a.srt", 6, "bad timestamp"),
    (b"1\n00:00:01,000 --> 00:00:02,000\nx\n\n2\n00:00:03,000 --> 00:00:02,999\ny\n", "a.srt", 6,
     "cue ends before it starts"),
    (b"1\n00:00:01,000 --> 00:00:02,000\nx\n\nstray text\n", "a.srt", 5, "expected an SRT cue number and timing"),
    (b"00:00:01.000 --> 00:00:02.000\nno header\n", "a.vtt", 1, "no WEBVTT header"),
    (b"", "a.vtt", 1, "no WEBVTT header"),
    (b"WEBVTT\n\n00:01.000 --> 99999999999999999999:00:00.000\nx\n", "a.vtt", 3, "past 744 hours"),
])
def test_broken_files_name_the_line(data, name, line, what):
    message = bad_data(data, name)
    assert what in message and message.endswith(f", line {line} of {name}")


def test_size_and_cue_count_caps():
    assert "more than 16777216" in bad_data(b"WEBVTT\n\n" + b" " * MAX_BYTES, "big.vtt")
    cue = b"00:01.000 --> 00:02.000\nx\n\n"
    assert len(parse_captions(b"WEBVTT\n\n" + cue * MAX_CUES, "max.vtt").cues) == MAX_CUES
    assert f"more than {MAX_CUES} cues" in bad_data(b"WEBVTT\n\n" + cue * (MAX_CUES + 1), "many.vtt")
    # the last cue counts too when no blank line follows it
    assert f"more than {MAX_CUES} cues" in bad_data(b"WEBVTT\n\n" + cue * MAX_CUES + cue.strip(), "many.vtt")


def test_a_file_of_tiny_lines_stays_small_in_memory():
    """~15 MB of 2-character lines: as a list of str that is ~400 MB; read lazily, one block at a time, the parse
    stops at the block-length cap holding a few times the file."""
    data = b"WEBVTT\n\n00:01.000 --> 00:02.000\n" + b"ab\n" * 5_000_000
    tracemalloc.start()
    try:
        message = bad_data(data, "l.vtt")
        assert f"more than {MAX_BLOCK_LINES} lines in one block, line {MAX_BLOCK_LINES + 3} of" in message
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * len(data)


@settings(max_examples=300)
@given(st.binary(max_size=300) | st.builds(lambda cut, junk: VTT[:cut] + junk + VTT[cut:], st.integers(0, len(VTT)),
                                           st.binary(max_size=8)))
def test_any_bytes_parse_or_fail_with_bad_data(data):
    for name in ("f.vtt", "f.srt", "f"):
        try:
            parse_captions(data, name)
        except PackagerError as e:
            assert e.code is ErrorCode.BAD_DATA and re.search(r", line \d+ of ", e.message)


_LINE = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12).filter(
    lambda s: s.strip(" \t") and "-->" not in s)


@settings(max_examples=150)
@given(st.lists(st.tuples(st.integers(0, 10**8), st.integers(0, 10**5), st.lists(_LINE, min_size=1, max_size=3),
                          st.sampled_from(["", "align:start", "line:90% position:20%"]),
                          _LINE.filter(lambda s: not re.match(r"(NOTE|STYLE|REGION)([ \t]|$)", s)) | st.just("")),
                max_size=10))
def test_webvtt_round_trip(rows):
    track = CaptionTrack(tuple(sorted((Cue(s, s + d, "\n".join(lines), setting, ident)
                                       for s, d, lines, setting, ident in rows), key=lambda c: c.start_ms)))
    assert parse_captions(build_webvtt_file(track).encode(), "rt.vtt").cues == track.cues
