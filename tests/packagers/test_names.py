"""One file-name grammar per protocol (packagers/<protocol>/names.py): every name a manifest writer writes parses back
to what it was written from, and the names the old copies of the grammar disagreed on get the URL's answer.

Before issue 11 the names were parsed three times: the gateway's URL grammar (segment numbers of up to 10 digits, no
leading zero, HDS ``Seg1`` only), packagers/dash/mpd.py (``[1-9]\\d{0,8}``: 9 digits) and packagers/hds/f4m.py (any
``Seg<n>``, refused afterwards; 9 digits). The URL grammar's answer is the one kept.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import m3u8
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.generate import fixture_path
from packagers.dash import build_mpd
from packagers.dash import names as dash
from packagers.errors import ErrorCode, PackagerError
from packagers.hds import build_f4m
from packagers.hds import names as hds
from packagers.hls import names as hls
from packagers.hls.playlists import build_master_playlist, build_media_playlist
from packagers.media_set import MediaSet
from packagers.mp4 import open_presentation
from packagers.mss import build_smooth_manifest
from packagers.mss import names as mss
from packagers.naming import MAX_SEGMENT_INDEX, MediaFile, TrackSpec

from .synthetic import SCENARIOS

SPECS = [TrackSpec(), TrackSpec(None, 1), TrackSpec(None, None, 2), TrackSpec(None, 1, 1), TrackSpec(3),
         TrackSpec(2, 1), TrackSpec(1, None, 1), TrackSpec(2, 1, 2), TrackSpec(999, 999, 999), TrackSpec(10, 100, 1)]
INDICES = [0, 1, 8, 9, 10, 98, 99, 12345, 999_999_998, 999_999_999, 10**9, MAX_SEGMENT_INDEX - 1, MAX_SEGMENT_INDEX]
SEGMENT_NAMES = {  # one protocol's segment name of (0-based index, spec)
    "hls-ts": lambda i, spec: hls.segment_name(i, spec, "ts"),
    "hls-fmp4": lambda i, spec: hls.segment_name(i, spec, "m4s"),
    "dash": dash.fragment_name,
    "dash-template": lambda i, spec: dash.media_template(spec).replace(dash.NUMBER_TEMPLATE, str(i + 1)),
    "hds": hds.fragment_name,
    "hds-url": lambda i, spec: f"{hds.fragment_url(spec)}Seg1-Frag{i + 1}",
}
PARSE = {"hls-ts": hls.parse_name, "hls-fmp4": hls.parse_name, "dash": dash.parse_name,
         "dash-template": dash.parse_name, "hds": hds.parse_name, "hds-url": hds.parse_name}
CONTAINER = {"hls-ts": "ts", "hls-fmp4": "fmp4"}


# --- the writers' names parse back ---------------------------------------------------------------------------------

@pytest.mark.parametrize("writer", sorted(SEGMENT_NAMES))
def test_every_segment_name_parses_back(writer):
    for spec in SPECS:
        for index in INDICES:
            name = SEGMENT_NAMES[writer](index, spec)
            assert PARSE[writer](name) == MediaFile("segment", spec, index, CONTAINER.get(writer)), name


@pytest.mark.parametrize("spec", SPECS)
def test_every_other_name_parses_back(spec):
    assert hls.parse_name(hls.media_playlist_name(spec)) == MediaFile("playlist", spec)
    assert hls.parse_name(hls.init_segment_name(spec)) == MediaFile("init", spec)
    assert dash.parse_name(dash.init_segment_name(spec)) == MediaFile("init", spec)
    assert hls.parse_name(hls.MASTER_PLAYLIST_NAME) == MediaFile("manifest")
    assert hls.parse_name(hls.KEY_NAME) == MediaFile("key")
    assert dash.parse_name(dash.MANIFEST_NAME) == MediaFile("manifest")
    assert hds.parse_name(hds.MANIFEST_NAME) == MediaFile("manifest")


@pytest.mark.parametrize("stream", ["video", "audio", "audio_fra", "audio_und_", "a" * 32, "Z_9"])
@pytest.mark.parametrize("bitrate, start", [(1, 0), (96000, 20_000_000), (9_999_999_999, 10**20 - 1)])
def test_every_smooth_fragment_parses_back(stream, bitrate, start):
    path = ["d", "x.mp4", *mss.fragment_path(stream, bitrate, start).split("/")]
    file = mss.parse_name(path)
    assert file == mss.SmoothFile("segment", stream, bitrate, start) and file.path_segments == 2
    assert mss.parse_name(["x.mp4", mss.MANIFEST_NAME]) == mss.SmoothFile("manifest")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_names_in_written_hls_playlists_parse_back(scenario):
    media_set = SCENARIOS[scenario]()
    for container, extension in (("ts", "ts"), ("fmp4", "m4s")):
        master = m3u8.loads(build_master_playlist(media_set, container))
        uris = [p.uri for p in master.playlists] + [m.uri for m in master.media if m.uri]
        assert uris
        for uri in uris:
            playlist = hls.parse_name(uri)
            assert playlist.kind == "playlist"
            selection = media_set.resolve(playlist.spec)
            assert selection.spec == playlist.spec  # the writer names canonical selections
            media = m3u8.loads(build_media_playlist(media_set, selection, extension, container))
            segments = [hls.parse_name(s.uri) for s in media.segments]
            assert segments == [MediaFile("segment", playlist.spec, k, container) for k in range(len(segments))]
            if container == "fmp4":
                assert hls.parse_name(media.segment_map[0].uri) == MediaFile("init", playlist.spec)


MPD_NS = {"mpd": "urn:mpeg:dash:schema:mpd:2011"}
F4M_NS = {"f4m": "http://ns.adobe.com/f4m/1.0"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_names_in_a_written_mpd_parse_back(scenario):
    media_set = SCENARIOS[scenario]()
    templates = ET.fromstring(build_mpd(media_set)).findall(".//mpd:SegmentTemplate", MPD_NS)
    assert templates
    for template in templates:
        init = dash.parse_name(template.get("initialization"))
        assert init.kind == "init" and template.get("startNumber") == "1"
        count = sum(int(s.get("r", 0)) + 1 for s in template.findall(".//mpd:S", MPD_NS))
        for number in (1, count):
            name = template.get("media").replace(dash.NUMBER_TEMPLATE, str(number))
            assert dash.parse_name(name) == MediaFile("segment", init.spec, number - 1)


FIXTURE_SETS = [["title_180p.mp4"], ["two_audio.mp4"], ["audio_only.mp4"], ["title_360p.mp4", "title_240p.mp4"]]


def fixture_set(files: list[str]) -> MediaSet:
    """HDS and Smooth need real decoder configurations (and aligned key frames across a url set)."""
    return MediaSet([open_presentation(fixture_path(name)) for name in files], 6000)


@pytest.mark.parametrize("files", FIXTURE_SETS)
def test_names_in_a_written_f4m_parse_back(files):
    media_set = fixture_set(files)
    medias = ET.fromstring(build_f4m(media_set)).findall("f4m:media", F4M_NS)
    assert medias
    for media in medias:
        first = hds.parse_name(media.get("url") + "Seg1-Frag1")
        assert first.kind == "segment" and first.index == 0
        assert media.get("streamId") == first.spec.suffix().lstrip("-")
        assert hds.fragment_name(0, first.spec) == media.get("url") + "Seg1-Frag1"


@pytest.mark.parametrize("files", FIXTURE_SETS)
def test_names_in_a_written_smooth_manifest_parse_back(files):
    root = ET.fromstring(build_smooth_manifest(fixture_set(files)))
    assert root.findall("StreamIndex")
    for index in root.findall("StreamIndex"):
        starts, t = [], 0
        for chunk in index.findall("c"):
            t = int(chunk.get("t", t))
            starts.append(t)
            t += int(chunk.get("d"))
        for level in index.findall("QualityLevel"):
            for start in starts:
                url = index.get("Url").replace("{bitrate}", level.get("Bitrate")).replace("{start time}", str(start))
                assert mss.parse_name(["x.mp4", *url.split("/")]) == \
                    mss.SmoothFile("segment", index.get("Name"), int(level.get("Bitrate")), start)


# --- the names the old copies disagreed on: the URL grammar's answer -----------------------------------------------

LEADING_ZERO = "parse_path: segment numbers start at 1 and have no leading zeros"
TOO_LONG = "parse_path: segment number longer than 10 digits"
UNKNOWN = {
    "hls": "parse_hls: unknown HLS file name (master.m3u8, index<tracks>.m3u8, iframes<tracks>.m3u8, "
           "seg-<n><tracks>.ts|.m4s, init<tracks>.mp4, encryption.key, key-<key id>.key)",
    "dash": "parse_dash: unknown DASH file name (manifest.mpd, init<tracks>.mp4, fragment-<n><tracks>.m4s)",
    "hds": "parse_hds: unknown HDS file name (manifest.f4m or frag<tracks>-Seg1-Frag<n>)",
    "mss": "parse_mss: expected /mss/<media path>/manifest or .../QualityLevels(<bitrate>)/Fragments(<stream>=<t>)",
}
NUMBERED = {"hls": "seg-{}-v1.ts", "dash": "fragment-{}-v1.m4s", "hds": "frag-v1-Seg1-Frag{}"}
PARSERS = {"hls": hls.parse_name, "dash": dash.parse_name, "hds": hds.parse_name}


def refusal(parse, name) -> str:
    with pytest.raises(PackagerError) as info:
        parse(name)
    assert info.value.code is ErrorCode.BAD_REQUEST
    return info.value.message


@pytest.mark.parametrize("protocol", sorted(NUMBERED))
def test_segment_numbers_are_the_url_grammars(protocol):
    parse, pattern = PARSERS[protocol], NUMBERED[protocol]
    assert parse(pattern.format("9999999999")).index == MAX_SEGMENT_INDEX == 9_999_999_998  # 10 digits: accepted
    assert parse(pattern.format("1000000000")).index == 999_999_999
    assert refusal(parse, pattern.format("10000000000")) == TOO_LONG
    for number in ("0", "01", "007", "0000000001"):
        assert refusal(parse, pattern.format(number)) == LEADING_ZERO


@pytest.mark.parametrize("name", ["frag-v1-Seg2-Frag1", "frag-v1-Seg0-Frag1", "frag-v1-Seg01-Frag1",
                                  "frag-v1-Seg-Frag1", "frag-v1-Seg1-Frag", "frag-v1-Seg1-Frag1.f4f",
                                  "frag-v1-seg1-frag1"])
def test_hds_fragments_are_in_segment_one_only(name):
    assert refusal(hds.parse_name, name) == UNKNOWN["hds"]


@pytest.mark.parametrize("protocol, name", [
    ("hls", "playlist.m3u8"), ("hls", "seg-1.mp4"), ("hls", "seg-.ts"), ("hls", "Master.m3u8"), ("hls", "key"),
    ("dash", "manifest.m3u8"), ("dash", "fragment-1-v1.mp4"), ("dash", "seg-1-v1.m4s"), ("dash", "fragment--1.m4s"),
    ("hds", "manifest.xml"), ("hds", "Frag-v1-Seg1-Frag1"), ("hds", "frag-v1-a1Seg1-Frag1"),
    ("mss", "QualityLevels(abc)/Fragments(video=0)"), ("mss", "QualityLevels(100)/Fragments(video=-1)"),
    ("mss", "QualityLevels(100)/Fragments(vid eo=1)"), ("mss", "Fragments(video=1)"),
    ("mss", "QualityLevels(12345678901)/Fragments(video=1)"), ("mss", "manifest.ism"),
])  # fmt: skip
def test_unknown_names_get_the_gateways_message(protocol, name):
    parse = PARSERS.get(protocol) or (lambda n: mss.parse_name(["x.mp4", *n.split("/")]))
    assert refusal(parse, name) == UNKNOWN[protocol]


def test_a_smooth_name_needs_a_media_path():
    assert refusal(mss.parse_name, ["manifest"]) == UNKNOWN["mss"]
    assert refusal(mss.parse_name, ["QualityLevels(1)", "Fragments(video=0)"]) == UNKNOWN["mss"]


def test_track_selections_are_refused_by_the_shared_suffix_grammar():
    for parse, name in ((hls.parse_name, "seg-1-a1-v1.ts"), (dash.parse_name, "init-v1-v2.mp4"),
                        (hds.parse_name, "frag-v0-Seg1-Frag1"), (hls.parse_name, "index-x.m3u8")):
        assert refusal(parse, name).startswith("TrackSpec.parse: ")


# --- nothing else escapes, and what parses is canonical -------------------------------------------------------------

WRITE_BACK = {
    "hls": lambda f: {"manifest": hls.MASTER_PLAYLIST_NAME,
                      "key": hls.key_name(bytes.fromhex(f.key_id)) if f.key_id else hls.KEY_NAME,
                      "playlist": hls.media_playlist_name(f.spec), "init": hls.init_segment_name(f.spec),
                      "iframes": hls.iframe_playlist_name(f.spec)}.get(f.kind)
    or hls.segment_name(f.index, f.spec, "ts" if f.container == "ts" else "m4s"),
    "dash": lambda f: {"manifest": dash.MANIFEST_NAME, "init": dash.init_segment_name(f.spec)}.get(f.kind)
    or dash.fragment_name(f.index, f.spec),
    "hds": lambda f: hds.MANIFEST_NAME if f.kind == "manifest" else hds.fragment_name(f.index, f.spec),
}
NAME_LIKE = st.one_of(
    st.text(),
    st.from_regex(r"(seg|fragment)-[0-9]{1,12}(-[fva][0-9]{1,4}){0,4}\.(ts|m4s|mp4)", fullmatch=True),
    st.from_regex(r"(index|init|iframes)(-[fva][0-9]{1,4}){0,4}\.(m3u8|mp4)", fullmatch=True),
    st.from_regex(r"key-[0-9a-fA-F]{30,34}\.key", fullmatch=True),
    st.from_regex(r"frag(-[fva][0-9]{1,4}){0,4}-Seg[0-9]{1,2}-Frag[0-9]{1,12}", fullmatch=True),
)


@settings(max_examples=600)
@given(st.sampled_from(sorted(PARSERS)), NAME_LIKE)
def test_a_name_parses_to_its_canonical_writing_or_is_refused(protocol, name):
    try:
        file = PARSERS[protocol](name)
    except PackagerError as e:
        assert e.code is ErrorCode.BAD_REQUEST
        assert e.message.startswith((f"parse_{protocol}: ", "parse_path: ", "TrackSpec.parse: "))
        return
    assert file.index is None or 0 <= file.index <= MAX_SEGMENT_INDEX
    # the one spelling of a file: TrackSpec reads "-a01" as "-a1", everything else is written back as it came
    assert WRITE_BACK[protocol](file) == re.sub(r"-([fva])0+(?=[0-9])", r"-\1", name)
