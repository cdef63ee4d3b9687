"""Live playlist writers (packagers.hls.live, packagers.dash.live) read back by independent parsers: the m3u8 package
for HLS, xml.etree plus the MPD schema's rules (ISO/IEC 23009-1 §5.3, Table 3 and the XSD's element order) for DASH."""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import m3u8
import pytest

from packagers.dash.live import LivePeriod, LiveRepresentation, build_live_mpd
from packagers.hls.live import (LiveSegment, LiveVariant, bandwidth, build_live_master_playlist,
                                build_live_media_playlist, program_date_time)

NS = "{urn:mpeg:dash:schema:mpd:2011}"
XS_DURATION = re.compile(r"-?P(?:\d+Y)?(?:\d+M)?(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?")
XS_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")
T0 = 1_700_000_000.25


def seconds(duration: str) -> float:
    m = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?", duration)
    assert m, duration
    return int(m[1] or 0) * 3600 + int(m[2] or 0) * 60 + float(m[3] or 0)


def window(first: int, count: int, *, discontinuity_at: int | None = None) -> list[LiveSegment]:
    out = []
    for n in range(first, first + count):
        duration = 180_000 + 90 * (n % 3)       # 2.000, 2.001, 2.002 s at 90 kHz
        out.append(LiveSegment(n, f"abc-{n}.ts", duration, 90_000, T0 + 2 * n, discontinuity=n == discontinuity_at))
    return out


# ---------------------------------------------------------------------------------------------------- HLS
def test_media_playlist_is_a_valid_live_window():
    segments = window(7, 5)
    text = build_live_media_playlist(segments, discontinuity_sequence=2, min_target_duration=2)
    p = m3u8.loads(text)
    assert p.version == 3 and p.media_sequence == 7 and p.discontinuity_sequence == 2
    assert not p.is_endlist and p.playlist_type is None
    assert [s.uri for s in p.segments] == [s.uri for s in segments]
    assert [s.duration for s in p.segments] == [round(s.seconds, 3) for s in segments]
    assert p.target_duration == 3 and all(s.duration <= p.target_duration for s in p.segments)
    assert p.segments[0].program_date_time == datetime.fromtimestamp(T0 + 14, timezone.utc)
    assert all(s.program_date_time is None for s in p.segments[1:])      # only the first, without discontinuities
    assert "#EXT-X-PROGRAM-DATE-TIME" in text.splitlines()[6]


def test_discontinuity_and_endlist():
    segments = window(1, 4, discontinuity_at=3)
    p = m3u8.loads(build_live_media_playlist(segments, ended=True))
    assert p.is_endlist
    assert [s.discontinuity for s in p.segments] == [False, False, True, False]
    assert p.segments[2].program_date_time == datetime.fromtimestamp(T0 + 6, timezone.utc)
    # a discontinuity on the first listed segment is carried by EXT-X-DISCONTINUITY-SEQUENCE instead (§6.2.2)
    text = build_live_media_playlist(window(3, 2, discontinuity_at=3), discontinuity_sequence=1)
    assert "#EXT-X-DISCONTINUITY\n" not in text and m3u8.loads(text).discontinuity_sequence == 1


def test_target_duration_never_below_the_minimum_or_a_segment():
    assert m3u8.loads(build_live_media_playlist(window(1, 2), min_target_duration=6)).target_duration == 6
    long = [LiveSegment(1, "a-1.ts", 4_410_000, 44_100, T0)]   # 100.000 s exactly: no rounding up
    assert m3u8.loads(build_live_media_playlist(long)).target_duration == 100


def test_program_date_time_format():
    assert program_date_time(0.5) == "1970-01-01T00:00:00.500Z"
    assert XS_DATETIME.fullmatch(program_date_time(T0))


def test_master_playlist():
    peak, average = bandwidth([250_000, 500_000, 250_000], [2.0, 2.0, 1.0])
    assert (peak, average) == (2_000_000, 1_600_000)
    text = build_live_master_playlist([LiveVariant("index.m3u8", peak, average, ("avc1.64001e", "mp4a.40.2"),
                                                   640, 360, 24.0)])
    p = m3u8.loads(text)
    assert p.is_variant and len(p.playlists) == 1
    info = p.playlists[0].stream_info
    assert (info.bandwidth, info.average_bandwidth, info.codecs, info.resolution, info.frame_rate) == (
        2_000_000, 1_600_000, "avc1.64001e,mp4a.40.2", (640, 360), 24.0)
    assert p.playlists[0].uri == "index.m3u8"


# ---------------------------------------------------------------------------------------------------- DASH
def representations(start_number: int = 5) -> tuple[LiveRepresentation, ...]:
    video = LiveRepresentation("v", "video", "avc1.64001e", 900_000, 90_000, "t-0-v-init.mp4", "t-0-v-$Time$.m4s",
                               start_number, [7470, 187_470, 367_470], [180_000, 180_000, 180_360], 640, 360, "24")
    audio = LiveRepresentation("a", "audio", "mp4a.40.2", 99_000, 44_100, "t-0-a-init.mp4", "t-0-a-$Time$.m4s",
                               start_number, [2646, 88_662, 176_726], [86_016, 88_064, 90_112], sample_rate=44_100,
                               channel_configuration=2)
    return video, audio


def build(periods, ended_ms=None) -> ET.Element:
    text = build_live_mpd(periods, availability_start=T0, publish_time=T0 + 30, minimum_update_period_ms=2000,
                          time_shift_buffer_ms=6000, suggested_delay_ms=4000, max_segment_ms=2004,
                          min_buffer_ms=2004, ended_ms=ended_ms)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(text.split("\n", 1)[1])


def expand(template: ET.Element) -> list[tuple[int, int]]:
    out, t = [], None
    for s in template.find(f"{NS}SegmentTimeline"):
        t = int(s.get("t", t))
        for _ in range(int(s.get("r", 0)) + 1):
            out.append((t, int(s.get("d"))))
            t += int(s.get("d"))
    return out


def check_schema_rules(mpd: ET.Element) -> None:
    """What the MPD XSD and §5.3 require of what we write: element order, attribute types, dynamic attributes."""
    assert mpd.tag == f"{NS}MPD" and mpd.get("profiles") == "urn:mpeg:dash:profile:isoff-live:2011"
    assert mpd.get("type") == "dynamic"
    assert XS_DATETIME.fullmatch(mpd.get("availabilityStartTime")) and XS_DATETIME.fullmatch(mpd.get("publishTime"))
    for name in ("minimumUpdatePeriod", "timeShiftBufferDepth", "suggestedPresentationDelay", "maxSegmentDuration",
                 "minBufferTime", "mediaPresentationDuration"):
        assert mpd.get(name) is None or XS_DURATION.fullmatch(mpd.get(name)), name
    assert mpd.get("minBufferTime")                                     # mandatory (Table 3)
    tags = [c.tag for c in mpd]
    assert tags == [f"{NS}Period"] * (len(tags) - 1) + [f"{NS}UTCTiming"]  # MPDtype: Period+, ..., UTCTiming*
    starts = [seconds(p.get("start")) for p in mpd.findall(f"{NS}Period")]
    assert starts == sorted(starts)
    for period in mpd.findall(f"{NS}Period"):
        assert period.get("id")
        for adaptation in period.findall(f"{NS}AdaptationSet"):
            for rep in adaptation.findall(f"{NS}Representation"):
                assert rep.get("id") and int(rep.get("bandwidth")) > 0
                order = [c.tag for c in rep]
                assert order[-1] == f"{NS}SegmentTemplate"             # RepresentationBase elements come first
                template = rep.find(f"{NS}SegmentTemplate")
                assert "$Time$" in template.get("media") or "$Number$" in template.get("media")
                assert int(template.get("timescale")) > 0


def test_dynamic_mpd_while_live():
    mpd = build([LivePeriod("0", 0, representations())])
    check_schema_rules(mpd)
    assert mpd.get("minimumUpdatePeriod") == "PT2S" and mpd.get("mediaPresentationDuration") is None
    assert (mpd.get("timeShiftBufferDepth"), mpd.get("suggestedPresentationDelay")) == ("PT6S", "PT4S")
    assert datetime.fromisoformat(mpd.get("availabilityStartTime").replace("Z", "+00:00")).timestamp() == T0
    timing = mpd.find(f"{NS}UTCTiming")
    assert timing.get("schemeIdUri") == "urn:mpeg:dash:utc:http-iso:2014" and timing.get("value") == "/time"
    video, audio = mpd.findall(f"{NS}Period/{NS}AdaptationSet/{NS}Representation")
    assert (video.get("width"), video.get("height"), video.get("frameRate"), video.get("codecs")) == (
        "640", "360", "24", "avc1.64001e")
    assert audio.find(f"{NS}AudioChannelConfiguration").get("value") == "2"
    for rep, source in zip((video, audio), representations()):
        template = rep.find(f"{NS}SegmentTemplate")
        assert expand(template) == list(zip(source.starts, source.durations))
        assert template.get("startNumber") == "5" and template.get("timescale") == str(source.timescale)


def test_ended_mpd_and_several_periods():
    periods = [LivePeriod("0", 0, representations()), LivePeriod("1", 9000, representations(8))]
    mpd = build(periods, ended_ms=15_500)
    check_schema_rules(mpd)
    assert mpd.get("minimumUpdatePeriod") is None and mpd.get("mediaPresentationDuration") == "PT15.5S"
    assert [(p.get("id"), p.get("start")) for p in mpd.findall(f"{NS}Period")] == [("0", "PT0S"), ("1", "PT9S")]


def test_timeline_gap_gets_an_explicit_t():
    video, audio = representations()
    gap = LiveRepresentation(**{**video.__dict__, "starts": [0, 180_000, 400_000], "durations": [180_000] * 3})
    mpd = build([LivePeriod("0", 0, (gap, audio))])
    template = mpd.find(f"{NS}Period/{NS}AdaptationSet/{NS}Representation/{NS}SegmentTemplate")
    s = template.findall(f"{NS}SegmentTimeline/{NS}S")
    assert [e.get("t") for e in s] == ["0", "400000"] and expand(template) == [(0, 180_000), (180_000, 180_000),
                                                                              (400_000, 180_000)]


@pytest.mark.parametrize("ms, text", [(0, "PT0S"), (2004, "PT2.004S"), (61_000, "PT61S")])
def test_durations_in_ms(ms, text):
    mpd = build([LivePeriod("0", ms, representations())])
    assert mpd.find(f"{NS}Period").get("start") == text
    assert math.isclose(seconds(text), ms / 1000)


def test_cached_lines_render_the_same_playlist_as_the_window_slides():
    """A DVR writer keeps each settled segment's lines (``cache``): every render must equal the one without it,
    as the window slides, across a discontinuity with a new map, with parts moving out of the listed range."""
    from packagers.hls.live import LivePart, LowLatency

    def segment(n):
        return LiveSegment(n, f"t-{n}.m4s", 180_000, 90_000, T0 + 2 * n, discontinuity=n == 30,
                           parts=tuple(LivePart(f"t-{n}.{k}.m4s", 0.5, k == 0) for k in range(4)),
                           map_uri="t-0-init.mp4" if n < 30 else "t-1-init.mp4")

    cache = {}
    for last in range(1, 60):
        window = [segment(n) for n in range(max(1, last - 25), last + 1)]
        ll = LowLatency(0.5, (LivePart(f"t-{last + 1}.0.m4s", 0.5, True),), f"t-{last + 1}.1.m4s",
                        window[-1].map_uri, last + 1)
        for skip in (0, 3):
            if skip >= len(window):
                continue
            assert build_live_media_playlist(window, low_latency=ll, skip=skip, cache=cache) == \
                build_live_media_playlist(window, low_latency=ll, skip=skip)
    assert cache
