"""DASH MPD: structure (xml.etree), SegmentTimeline against the real fragments' tfdt/trun (read back with pymp4),
@bandwidth against the real fragment sizes, golden manifests on synthetic media sets, and ffmpeg's DASH demuxer
playing a directory of MPD + init + fragments (a real client, no server).

Run ``python -m pytest tests/packagers/test_dash_mpd.py --update-golden`` after an intended change and review
tests/golden/dash_*.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from functools import lru_cache

import numpy as np
import pytest

from fixtures.generate import fixture_path
from packagers.dash import MANIFEST_NAME, build_mpd, fragment_name, init_segment_name, media_template, parse_name
from packagers.dash.mpd import frame_rate, xs_duration
from packagers.fmp4 import Fmp4Muxer, presentation_time_offset
from packagers.media_data import MediaSegment, TrackSegment
from packagers.media_set import MediaSet
from packagers.model import SampleTable
from packagers.mp4 import open_presentation
from packagers.errors import PackagerError
from packagers.naming import MediaFile, TrackSpec
from tests.needs import missing

from .fmp4_tools import read_fragment, write_track_files
from .golden import check_golden
from .synthetic import SCENARIOS as BASE_SCENARIOS
from .synthetic import audio_track, ladder, presentation, video_track

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


SCENARIOS = {
    **BASE_SCENARIOS,
    "no_bframes_ntsc": lambda: MediaSet([presentation(video_track(10, fps=30, timescale=30000, bframes=False),
                                                      audio_track(10, rate=48000, language="und"))], 4000),
}
FIXTURE_SETS = {
    "ladder": ("title_360p.mp4", "title_240p.mp4", "title_180p.mp4"),
    "two_audio": ("two_audio.mp4",),
    "hevc": ("hevc.mp4",),
    "audio_only": ("audio_only.mp4",),
    "no_bframes": ("no_bframes.mp4",),
}


@lru_cache(maxsize=None)
def fixture_set(key: str) -> tuple[MediaSet, tuple[bytes, ...]]:
    names = FIXTURE_SETS[key]
    paths = [fixture_path(n) for n in names]
    return MediaSet([open_presentation(p) for p in paths], 4000), tuple(p.read_bytes() for p in paths)


def representations(mpd: str) -> list[tuple[ET.Element, ET.Element]]:
    root = ET.fromstring(mpd)
    return [(a, r) for a in root.iterfind("d:Period/d:AdaptationSet", NS) for r in a.iterfind("d:Representation", NS)]


def timeline(rep: ET.Element) -> tuple[np.ndarray, np.ndarray]:
    """(t, d) of every segment from <S t d r> (§5.3.9.6)."""
    starts, durations, t = [], [], None
    for s in rep.iterfind("d:SegmentTemplate/d:SegmentTimeline/d:S", NS):
        if "t" in s.attrib:
            t = int(s.attrib["t"])
        assert t is not None, "the first S must have @t"
        for _ in range(int(s.attrib.get("r", 0)) + 1):
            d = int(s.attrib["d"])
            starts.append(t)
            durations.append(d)
            t += d
    return np.array(starts, dtype=np.int64), np.array(durations, dtype=np.int64)


def selection_of(media_set: MediaSet, rep: ET.Element):
    return media_set.resolve(TrackSpec.parse("-" + rep.attrib["id"]))


# -- structure -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_mpd_structure(scenario):
    media_set = SCENARIOS[scenario]()
    mpd = build_mpd(media_set)
    assert mpd.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    root = ET.fromstring(mpd)
    assert root.tag == "{urn:mpeg:dash:schema:mpd:2011}MPD"
    assert root.attrib["type"] == "static" and root.attrib["profiles"] == "urn:mpeg:dash:profile:isoff-live:2011"
    duration = max(p.duration_seconds for p in media_set.presentations)
    assert root.attrib["mediaPresentationDuration"] == xs_duration(duration)
    assert root.attrib["minBufferTime"].startswith("PT")
    periods = root.findall("d:Period", NS)
    assert len(periods) == 1
    sets = periods[0].findall("d:AdaptationSet", NS)
    kinds = [a.attrib["contentType"] for a in sets]
    assert kinds == sorted(kinds, key=lambda k: k != "video")
    audio_sets = [a for a in sets if a.attrib["contentType"] == "audio"]
    langs = [a.attrib.get("lang") for a in audio_sets]
    assert len(set(langs)) == len(langs), "one AdaptationSet per audio language"
    for n, a in enumerate(audio_sets):
        role = a.find("d:Role", NS)
        assert role.attrib == {"schemeIdUri": "urn:mpeg:dash:role:2011", "value": "main" if n == 0 else "alternate"}
    ids = set()
    for a in sets:
        assert a.attrib["mimeType"] == f"{a.attrib['contentType']}/mp4"
        assert a.attrib["segmentAlignment"] == "true" and a.attrib["startWithSAP"] == "1"  # scenarios are aligned
        for rep in a.iterfind("d:Representation", NS):
            ids.add(rep.attrib["id"])
            selection = selection_of(media_set, rep)
            (track,) = selection.tracks
            assert track.kind == a.attrib["contentType"]
            assert int(rep.attrib["bandwidth"]) > 0 and rep.attrib["codecs"] == track.codec.codec_string
            template = rep.find("d:SegmentTemplate", NS)
            assert template.attrib["timescale"] == str(track.timescale) and template.attrib["startNumber"] == "1"
            assert template.attrib["initialization"] == init_segment_name(selection.spec)
            assert template.attrib["media"] == media_template(selection.spec)
            assert int(template.attrib.get("presentationTimeOffset", 0)) == presentation_time_offset(track)
            if track.kind == "video":
                assert rep.attrib["width"] == str(track.codec.width) and "frameRate" in rep.attrib
            else:
                assert rep.attrib["audioSamplingRate"] == str(track.codec.sample_rate)
                channels = rep.find("d:AudioChannelConfiguration", NS)
                assert channels.attrib["schemeIdUri"] == "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"
            t, d = timeline(rep)
            assert len(d) == media_set.plan(selection).count and (d > 0).all()
            assert (t[1:] == t[:-1] + d[:-1]).all(), "segments tile the timeline"
            pto = presentation_time_offset(track)
            assert t[0] - pto == track.presentation_pts()[0]
            assert t[-1] + d[-1] - pto == track.duration  # the timeline sums to the track's duration
    assert len(ids) == len(representations(mpd))


def test_frame_rate_and_names():
    (_, video), *_ = representations(build_mpd(SCENARIOS["no_bframes_ntsc"]()))
    assert video.attrib["frameRate"] == "30"
    n = 60
    ntsc = SampleTable(np.zeros(n, np.uint64), np.full(n, 100, np.uint32), np.arange(n) * 3003, np.zeros(n, np.int32),
                       np.full(n, 3003, np.uint32), np.ones(n, bool))  # fmt: skip
    assert frame_rate(dataclasses.replace(video_track(2), timescale=90000, samples=ntsc)) == "30000/1001"
    spec = TrackSpec(2, None, 1)
    assert init_segment_name(spec) == "init-f2-a1.mp4" and fragment_name(0, spec) == "fragment-1-f2-a1.m4s"
    assert media_template(spec) == "fragment-$Number$-f2-a1.m4s"
    assert parse_name("init-f1-v1.mp4") == MediaFile("init", TrackSpec(1, 1, None))
    assert parse_name("fragment-12-f2-a1.m4s") == MediaFile("segment", TrackSpec(2, None, 1), 11)
    with pytest.raises(PackagerError):
        parse_name("fragment-0-v1.m4s")
    assert MANIFEST_NAME == "manifest.mpd"
    assert xs_duration(12) == "PT12S" and xs_duration(6.0054) == "PT6.006S" and xs_duration(0.5) == "PT0.5S"


def test_unaligned_renditions_are_not_segment_aligned():
    """Files whose key frames do not line up get their own plans: each timeline follows its own file, and the
    AdaptationSet says segmentAlignment="false"."""
    unaligned = MediaSet([presentation(video_track(12, gop=48), audio_track(12), source="a.mp4"),
                          presentation(video_track(12, gop=60), audio_track(12.5), source="b.mp4")], 4000)
    assert not unaligned.shared_plan
    mpd = build_mpd(unaligned)
    video_set = ET.fromstring(mpd).find("d:Period/d:AdaptationSet", NS)
    assert video_set.attrib["segmentAlignment"] == "false"
    for _, rep in representations(mpd):
        selection = selection_of(unaligned, rep)
        t, d = timeline(rep)
        pto = presentation_time_offset(selection.tracks[0])
        assert len(t) == unaligned.plan(selection).count and t[-1] + d[-1] - pto == selection.tracks[0].duration


def test_audio_dedup_and_escaping():
    """Identical audio in every file of a ladder is one Representation; distinct audio is listed per file."""
    reps = [r.attrib["id"] for _, r in representations(build_mpd(ladder()))]
    assert reps == ["f1-v1", "f2-v1", "f3-v1", "f1-a1"]
    distinct = MediaSet([presentation(video_track(8), audio_track(8 + k), source=f"r{k}.mp4") for k in (0, 1)], 4000)
    assert [r.attrib["id"] for _, r in representations(build_mpd(distinct))] == ["f1-v1", "f2-v1", "f1-a1", "f2-a1"]
    mpd = build_mpd(ladder(), base_url="https://cdn.example/a&b<c>/")
    assert ET.fromstring(mpd).find("d:BaseURL", NS).text == "https://cdn.example/a&b<c>/"


# -- golden manifests and fragment digests ---------------------------------------------------------------------------


def _fragment_digests(media_set: MediaSet) -> str:
    """sha256 of every fragment of every representation, built from zero-filled payloads (byte layout regressions)."""
    lines = []
    for _, rep in representations(build_mpd(media_set)):
        selection = selection_of(media_set, rep)
        muxer = Fmp4Muxer(selection.tracks, non_negative=True)
        for index in range(media_set.plan(selection).count):
            (table,) = media_set.segment_tables(selection, index)
            segment = MediaSegment(index, (TrackSegment(selection.tracks[0], table, bytes(table.total_size)),))
            digest = hashlib.sha256(muxer.build(segment)).hexdigest()
            lines.append(f"{fragment_name(index, selection.spec)} {digest}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_golden(scenario, update_golden):
    media_set = SCENARIOS[scenario]()
    rendered = {MANIFEST_NAME: build_mpd(media_set), "fragments.sha256": _fragment_digests(media_set)}
    check_golden(f"dash_{scenario}", rendered, update_golden)


# -- against real fragments -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(FIXTURE_SETS))
def test_timeline_and_bandwidth_match_real_fragments(key, tmp_path):
    media_set, datas = fixture_set(key)
    mpd = build_mpd(media_set)
    for adaptation, rep in representations(mpd):
        selection = selection_of(media_set, rep)
        (track,) = selection.tracks
        built = write_track_files(tmp_path, media_set, selection, list(datas), init_segment_name(selection.spec),
                                  fragment_name, non_negative=True)  # fmt: skip
        t, d = timeline(rep)
        assert len(built) == len(t)
        template = rep.find("d:SegmentTemplate", NS)
        pto = int(template.attrib.get("presentationTimeOffset", 0))
        rates = []
        for index, fragment in enumerate(built):
            (traf,) = read_fragment(fragment)
            earliest = int(traf.presentation.min())
            end = int((traf.presentation + traf.durations).max())
            assert earliest >= 0
            assert t[index] == earliest, f"S@t of segment {index + 1} of {rep.attrib['id']}"
            assert t[index] + d[index] == end, f"S@d of segment {index + 1} of {rep.attrib['id']}"
            rates.append(len(fragment) * 8 * track.timescale / d[index])
        assert int(rep.attrib["bandwidth"]) >= max(rates)
        assert int(rep.attrib["bandwidth"]) <= max(rates) * 1.1 + 20_000, "bandwidth should stay honest, not huge"
        # presentation times in the MPD (t - PTO) are ours: video starts at 0, AAC priming at -1024
        assert t[0] - pto == track.presentation_pts().min()


def _ffprobe_dash() -> str | None:
    exe = shutil.which("ffprobe")
    if exe is None:
        return None
    demuxers = subprocess.run([exe, "-hide_banner", "-demuxers"], capture_output=True, text=True).stdout
    return exe if any(line.split()[1:2] == ["dash"] for line in demuxers.splitlines() if line.strip()) else None


@pytest.mark.parametrize("key", sorted(FIXTURE_SETS))
def test_ffmpeg_dash_demuxer_plays_every_representation(key, tmp_path):
    """A real DASH client: ffmpeg's dash demuxer (libxml2) reads the MPD from a directory, fetches init + fragments
    through SegmentTemplate/SegmentTimeline, and decodes every representation: all frames, no error. PyAV's bundled
    ffmpeg has no dash demuxer, so this uses the system ffprobe (one run per stream: ffmpeg's dashdec stops all
    streams as soon as one ends)."""
    exe = _ffprobe_dash()
    if exe is None:
        missing("no ffprobe with a dash demuxer on this machine")
    media_set, datas = fixture_set(key)
    mpd = build_mpd(media_set)
    (tmp_path / MANIFEST_NAME).write_text(mpd)
    expected = {}
    for _, rep in representations(mpd):
        selection = selection_of(media_set, rep)
        write_track_files(tmp_path, media_set, selection, list(datas), init_segment_name(selection.spec),
                          fragment_name, non_negative=True)  # fmt: skip
        expected[rep.attrib["id"]] = len(selection.tracks[0].samples)
    for index, (rep_id, frames) in enumerate(expected.items()):
        r = subprocess.run([exe, "-v", "error", "-select_streams", str(index), "-count_frames", "-show_entries",
                            "stream=index,nb_read_frames:stream_tags=id", "-of", "json", MANIFEST_NAME],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert r.returncode == 0 and not r.stderr.strip(), r.stderr
        (stream,) = json.loads(r.stdout)["streams"]
        assert stream["tags"]["id"] == rep_id
        assert int(stream["nb_read_frames"]) == frames, rep_id
