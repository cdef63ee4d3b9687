"""nginx-vod-module's track, language and file selection: the grammar (``/tracks/``, ``/shift/``, manifest name
selectors, segment names) and what a media set keeps, over the real multi-track fixture (2 videos, eng/fra/spa)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from fixtures.generate import fixture_path
from packagers.dash import names as dash_names
from packagers.errors import ErrorCode, PackagerError
from packagers.hds import names as hds_names
from packagers.hls import names as hls_names
from packagers.media_set import MediaSet
from packagers.mp4 import read_presentation
from packagers.naming import TrackSpec
from packagers.selection import ALL, Listing, Narrowing, Shift, TrackMask, language_code

E = frozenset()


def code_of(call, *args) -> ErrorCode:
    with pytest.raises(PackagerError) as info:
        call(*args)
    return info.value.code


@pytest.mark.parametrize("text,video,audio", [
    ("v1-a2", {1}, {2}), ("v0", ALL, E), ("a0-v2", {2}, ALL), ("V1-A1", {1}, {1}), ("v1-v2-a3", {1, 2}, {3}),
    ("a1-a0", E, ALL), ("v2", {2}, E),
])
def test_tracks_parameter(text, video, audio):
    assert TrackMask.parse(text) == TrackMask(frozenset(video), frozenset(audio))


@pytest.mark.parametrize("text", ["", "x1", "v", "v1-", "v1--a1", "v1234", "s1", "v1a1", "-v1"])
def test_tracks_parameter_refused(text):
    assert code_of(TrackMask.parse, text) is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("text,shift", [
    ("v100-a0", Shift(100, 0)), ("a250", Shift(0, 250)), ("s10", Shift(0, 0, 10)), ("v1-v2", Shift(1)),
    ("V5-S7", Shift(5, 0, 7)),
])
def test_shift_parameter(text, shift):
    assert Shift.parse(text) == shift


@pytest.mark.parametrize("text", ["", "v-100", "x5", "v100000000", "v1.5", "v"])
def test_shift_parameter_refused(text):
    assert code_of(Shift.parse, text) is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("text,listing", [
    ("-f1", Listing(frozenset({1}))),
    ("-f1-f2", Listing(frozenset({1, 2}))),
    ("-v1-a2", Listing(tracks=TrackMask(frozenset({1}), frozenset({2})))),
    ("-a0", Listing(tracks=TrackMask(E, ALL))),
    ("-leng", Listing(languages=frozenset({"eng"}))),
    ("-lfre-lger", Listing(languages=frozenset({"fra", "deu"}))),  # ISO 639-2/B as /T
    ("-f2-v0-a1-lspa", Listing(frozenset({2}), TrackMask(ALL, frozenset({1})), frozenset({"spa"}))),
    ("-f1-v1-f2-a1", Listing(frozenset({1, 2}), per_file=((1, TrackMask(frozenset({1}), E)),
                                                         (2, TrackMask(E, frozenset({1})))))),
    ("-f1-f3-v2-f2", Listing(frozenset({1, 2, 3}), per_file=((1, TrackMask(frozenset({2}), E)),
                                                            (3, TrackMask(frozenset({2}), E)), (2, TrackMask())))),
])
def test_manifest_selectors(text, listing):
    assert Listing.parse(text) == listing


@pytest.mark.parametrize("text", ["-a1-f1", "-leng-a1", "-len", "-lengx", "-f0", "-x1", "-v1-", "v1", "-l123"])
def test_manifest_selectors_refused(text):
    assert code_of(Listing.parse, text) is ErrorCode.BAD_REQUEST


def test_language_codes_map_bibliographic_to_terminology():
    assert [language_code(c) for c in ("fre", "GER", "chi", "eng", "fra")] == ["fra", "deu", "zho", "eng", "fra"]


@pytest.mark.parametrize("parse,name,listing", [
    (hls_names.parse_name, "master.m3u8", Listing()),
    (hls_names.parse_name, "master-f1.m3u8", Listing(frozenset({1}))),
    (hls_names.parse_name, "master-v1-a2.m3u8", Listing(tracks=TrackMask(frozenset({1}), frozenset({2})))),
    (hls_names.parse_name, "master-leng.m3u8", Listing(languages=frozenset({"eng"}))),
    (dash_names.parse_name, "manifest-f2.mpd", Listing(frozenset({2}))),
    (dash_names.parse_name, "manifest-lfra.mpd", Listing(languages=frozenset({"fra"}))),
    (hds_names.parse_name, "manifest-a1.f4m", Listing(tracks=TrackMask(E, frozenset({1})))),
])
def test_manifest_names_carry_their_selectors(parse, name, listing):
    file = parse(name)
    assert (file.kind, file.listing) == ("manifest", listing)


@pytest.mark.parametrize("parse,name", [
    (hls_names.parse_name, "master-.m3u8"), (hls_names.parse_name, "master-a1-f1.m3u8"),
    (dash_names.parse_name, "manifest-l.mpd"), (hds_names.parse_name, "manifest-q1.f4m"),
])
def test_bad_manifest_names(parse, name):
    assert code_of(parse, name) is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("suffix,spec", [
    ("-a0", TrackSpec(None, None, 0)), ("-v1-a1-a2", TrackSpec(None, 1, 1, (2,))),
    ("-f2-a3-a1", TrackSpec(2, None, 3, (1,))), ("-f1-v1-f2-a1", TrackSpec(1, 1, 1, (), 2)),
])
def test_segment_names_may_carry_several_audio_tracks(suffix, spec):
    assert TrackSpec.parse(suffix) == spec and spec.suffix() == suffix


@pytest.mark.parametrize("suffix,reason", [
    ("-v0", "several video tracks"), ("-v1-v2", "several video tracks"), ("-a0-a1", "'-a0'"),
    ("-a1-a1", "repeated"), ("-f1-f2-v1", "another at most"), ("-f1-v1-f2", "names no audio"),
    ("-a1-v1", "out-of-order"),
])
def test_segment_names_carry_one_track_per_kind(suffix, reason):
    with pytest.raises(PackagerError) as info:
        TrackSpec.parse(suffix)
    assert info.value.code is ErrorCode.BAD_REQUEST and reason in info.value.message


@pytest.fixture(scope="module")
def multi():
    path = fixture_path("multi_track.mp4")
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_presentation(lambda offset, n: os.pread(fd, n, offset), os.fstat(fd).st_size, "multi_track.mp4")
    finally:
        os.close(fd)


def kept(media_set: MediaSet, file_index: int = 0) -> tuple[list[int], list[str]]:
    p = media_set.presentations[file_index]
    return [n for n, _ in p.numbered("video")], [t.language for _, t in p.numbered("audio")]


# (/tracks/, manifest selectors, video numbers kept, audio languages kept)
FILTERS = [
    (None, "", [1, 2], ["eng", "fra", "spa"]),
    ("v2-a3", "", [2], ["spa"]),
    ("v0", "", [1, 2], []),
    ("a0", "", [], ["eng", "fra", "spa"]),
    (None, "-v2", [2], []),
    (None, "-a2-a3", [], ["fra", "spa"]),
    (None, "-leng", [1, 2], ["eng"]),
    (None, "-v1-a0-lfre-lspa", [1], ["fra", "spa"]),
    ("v0-a1-a2", "-v2-a2-a3", [2], ["fra"]),  # AND-ed
    ("v1-a0", "-lita", [1], []),  # a language filters audio only
    (None, "-f1-v0-a0", [1, 2], ["eng", "fra", "spa"]),
]


@pytest.mark.parametrize("tracks,selectors,videos,languages", FILTERS)
def test_media_set_keeps_the_selected_tracks_under_their_numbers(multi, tracks, selectors, videos, languages):
    narrowing = Narrowing(TrackMask() if tracks is None else TrackMask.parse(tracks),
                          listing=Listing.parse(selectors) if selectors else Listing())
    media_set = MediaSet([multi], 4000, False, narrowing=narrowing)
    assert kept(media_set) == (videos, languages)
    numbers = {t.language: n for n, t in multi.numbered("audio")}
    for n in (1, 2):
        spec = TrackSpec(None, n, None)
        if n in videos:
            assert media_set.resolve(spec).tracks[0].codec.width == multi.video_tracks[n - 1].codec.width
        else:
            assert code_of(media_set.resolve, spec) is ErrorCode.NOT_FOUND
    for language, n in numbers.items():
        if language in languages:
            assert media_set.resolve(TrackSpec(None, None, n)).tracks[0].language == language
        else:
            assert code_of(media_set.resolve, TrackSpec(None, None, n)) is ErrorCode.NOT_FOUND


def test_selectors_leave_the_plans_of_the_path(multi):
    """A manifest name's selectors narrow what it lists, never the segments: the same plan boundaries."""
    whole = MediaSet([multi], 4000, False)
    listed = MediaSet([multi], 4000, False, narrowing=Narrowing(listing=Listing.parse("-a3")))
    assert np.array_equal(whole.plans[0].durations(), listed.plans[0].durations())
    audio = listed.resolve(TrackSpec(None, None, 3))
    assert listed.segment_tables(audio, 1)[0].sizes.tolist() == whole.segment_tables(
        whole.resolve(TrackSpec(None, None, 3)), 1)[0].sizes.tolist()


def test_default_narrowing_changes_nothing(multi):
    media_set = MediaSet([multi], 4000, False)
    assert media_set.presentations[0] is multi and media_set.planned[0] is multi


@pytest.mark.parametrize("tracks,selectors", [("v3", ""), (None, "-v3-a9"), (None, "-f2"), ("a1", "-v1")])
def test_nothing_left_is_not_found(multi, tracks, selectors):
    narrowing = Narrowing(TrackMask() if tracks is None else TrackMask.parse(tracks),
                          listing=Listing.parse(selectors) if selectors else Listing())
    with pytest.raises(PackagerError) as info:
        MediaSet([multi], 4000, False, narrowing=narrowing)
    assert info.value.code is ErrorCode.NOT_FOUND


def test_shift_moves_presentation_times_of_that_kind(multi):
    plain = MediaSet([multi], 4000, False)
    shifted = MediaSet([multi], 4000, False, narrowing=Narrowing(shift=Shift.parse("v100-a0")))
    for kind, ms in (("video", 100), ("audio", 0)):
        for (_, before), (_, after) in zip(plain.presentations[0].numbered(kind),
                                           shifted.presentations[0].numbered(kind)):
            moved = after.presentation_pts() - before.presentation_pts()
            assert set(moved.tolist()) == {ms * before.timescale // 1000}
