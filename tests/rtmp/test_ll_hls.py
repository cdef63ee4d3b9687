"""Low-latency HLS output of the live packager (rtmp.live with parts): the segmenter's parts against its segments
(same samples, in order, none longer than the part target, INDEPENDENT exactly on key frames), and the writer on a
real stream: every playlist version it renames into place read with the m3u8 parser (parts, preload hint, server
control, delta updates), the part and segment files decoded by PyAV back to the published samples."""
from __future__ import annotations

import dataclasses
import io
import time

import av
import m3u8
import numpy as np
import pytest

from rtmp.live import LiveSegmenter, LiveStreamWriter
from rtmp.live.segmenter import Part
from rtmp.live.writer import DELTA_PLAYLIST
from tests.rtmp.test_flv import flv_from_mp4, flv_messages
from rtmp.messages import MSG_VIDEO
from tests.rtmp.test_live_packager import (FRAMES, audio_frame, audio_header, av_stream, avcc_nals, run_segmenter,
                                           source_samples)

PART_MS = 500


def split(events):
    """(segments, the parts of each segment) from the segmenter's events, checking parts come before their cut."""
    segments, parts, current = [], [], []
    for e in events:
        if isinstance(e, Part):
            current.append(e)
        else:
            segments.append(e)
            parts.append(current)
            current = []
    assert not current, "parts after the last segment"
    return segments, parts


def jittered(messages):
    """Video frames 1 ms late every third frame, as FLV's whole-ms times of a 30-fps encoder are (33, 34, 33...)."""
    out, n = [], 0
    for m in messages:
        if m.message_type_id == MSG_VIDEO and m.payload[1] == 1:
            n += 1
            m = dataclasses.replace(m, timestamp=m.timestamp + (n % 3 == 0))
        out.append(m)
    return out


def audio_on_video_times(messages):
    """An AAC frame at the very ms of every video frame: a part (and segment) boundary falls on an audio frame."""
    out = []
    for m in messages:
        if m.message_type_id == MSG_VIDEO and m.payload[1] == 1:   # (sent first: pending when the video comes)
            out.append(audio_frame(m.timestamp, len(out)))
        out.append(m)
    return out


@pytest.mark.parametrize("fps, gop, audio, video, variant", [
    (25, 25, True, True, None), (30, 60, True, True, jittered), (24, 48, False, True, None),
    (30000 / 1001, 30, True, True, None),
    (25, 25, True, False, None), (25, 25, False, True, audio_on_video_times)])
def test_parts_tile_their_segment_and_never_exceed_the_part_target(fps, gop, audio, video, variant):
    seg = LiveSegmenter(2000, source="live/test", part_ms=PART_MS)
    messages = av_stream(0, 9, fps=fps, gop=gop, audio=audio, video=video)
    if variant is not None:
        messages = variant(messages)
    if variant is audio_on_video_times:
        messages.insert(1, audio_header())
    _, events = run_segmenter(messages, segmenter=seg)
    events += seg.finish(time.monotonic())
    segments, parts = split(events)
    assert len(segments) >= 4
    for cut, its_parts in zip(segments, parts):
        assert len(its_parts) >= 2
        for t, tc in enumerate(cut.tracks):
            in_parts = [p.tracks[[x.track.kind for x in p.tracks].index(tc.track.kind)] for p in its_parts
                        if tc.track.kind in [x.track.kind for x in p.tracks]]
            assert b"".join(b"".join(x.chunks) for x in in_parts) == b"".join(tc.chunks)     # same bytes, in order
            # (an audio part's last frame lasts one frame: the next one has not arrived when the part closes, so
            # only video durations are the segment's own)
            for column in ("dts", "cts", "keyframe") + (("durations",) if tc.track.kind == "video" else ()):
                joined = np.concatenate([getattr(x.samples, column) for x in in_parts])
                assert (joined == getattr(tc.samples, column)).all(), column
        for p in its_parts:
            main = p.main
            assert main.duration <= PART_MS * main.track.timescale // 1000, "a part longer than PART-TARGET"
            assert p.independent == (main.track.kind != "video" or bool(main.samples.keyframe[0]))
        assert its_parts[0].independent                     # a segment starts on a key frame
        # the parts of one segment end where the next begins (no gap, no overlap)
        mains = [p.main for p in its_parts]
        assert all(a.samples.dts[-1] + a.samples.durations[-1] == b.samples.dts[0] for a, b in zip(mains, mains[1:]))


@pytest.mark.parametrize("fps", [24, 30, 50])
def test_parts_meet_whole_second_key_frames(fps):
    """A 1-s GOP at a frame rate that divides PART-TARGET: every part is exactly PART-TARGET long, so every key frame
    starts a part (INDEPENDENT=YES each second: a player joins, or switches, decoding at most one part ahead)."""
    seg = LiveSegmenter(2000, part_ms=PART_MS)
    _, events = run_segmenter(av_stream(0, 8.5, fps=fps, gop=fps), segmenter=seg)
    segments, parts = split(events)
    assert len(segments) >= 3
    for its in parts:
        assert [len(p.main.samples) for p in its] == [fps // 2] * 4
        assert [p.main.duration for p in its] == [PART_MS * 90] * 4
        assert [p.independent for p in its] == [True, False, True, False]


def test_a_part_that_runs_past_the_part_target_gives_its_last_frame_to_the_next():
    """29.97 fps: 15 frames last 500.5 ms, 500 or 501 in FLV's whole ms; a 501-ms part would break PART-TARGET, so
    its 15th frame starts the next part (and a 500-ms one keeps it)."""
    seg = LiveSegmenter(2000, part_ms=PART_MS)
    _, events = run_segmenter(av_stream(0, 8.5, fps=30000 / 1001, gop=30), segmenter=seg)
    events += seg.finish(time.monotonic())
    _, parts = split(events)
    mains = [p.main for its in parts for p in its]
    assert max(m.duration for m in mains) <= PART_MS * 90
    lengths = [len(m.samples) for its in parts for m in [p.main for p in its][:-1]]    # (a segment's last: a rest)
    assert 14 in lengths and 15 in lengths


@pytest.mark.parametrize("gop, all_independent", [(11, True), (10, False)])
def test_a_part_closes_at_a_key_frame_once_85_percent_full(gop, all_independent):
    """25 fps: a key frame every 11 frames (440 ms, 88 % of PART-TARGET) starts its own part, so every part is
    independent; every 10 frames (400 ms, 80 %) it cannot (RFC 8216bis: a part that is not its segment's last nor
    independent lasts at least 85 % of PART-TARGET), so the parts stay 12 frames long."""
    seg = LiveSegmenter(2000, part_ms=PART_MS)
    _, events = run_segmenter(av_stream(0, 8.5, fps=25, gop=gop), segmenter=seg)
    segments, parts = split(events + seg.finish(time.monotonic()))
    assert len(segments) >= 3
    assert all(p.independent for its in parts for p in its) == all_independent
    for its in parts:
        assert all(p.main.duration >= 0.85 * PART_MS * 90 for p in its[:-1])
        assert all(p.main.duration <= PART_MS * 90 for p in its)


def test_a_long_gop_gives_parts_that_are_not_independent():
    seg = LiveSegmenter(2000, part_ms=PART_MS)
    _, events = run_segmenter(av_stream(0, 6.5, fps=25, gop=75), segmenter=seg)
    segments, parts = split(events)
    flags = [p.independent for p in parts[0]]
    # a 3-s GOP at 25 fps: 12 frames (480 ms) fit in a 500-ms part, so 7 parts, one starting on a key frame
    assert flags[0] and not any(flags[1:]) and [len(p.main.samples) for p in parts[0]] == [12] * 6 + [3]


def write_ll(messages, out, target_ms=1000):
    """``messages`` through the segmenter and a low-latency writer with a long window; every version of index.m3u8
    (and its delta) the writer renamed into place, with the files present at that moment."""
    writer = LiveStreamWriter(out, target_ms=target_ms, window=100, part_ms=PART_MS)
    versions = []
    seg = LiveSegmenter(target_ms, source="live/test", part_ms=PART_MS)
    for m in messages:
        for e in seg.feed(m, time.monotonic(), 1_000_000.0 + m.timestamp / 1000):
            (writer.add_part if isinstance(e, Part) else writer.add)(e)
            versions.append(((out / "index.m3u8").read_text(), (out / DELTA_PLAYLIST).read_text(),
                             {p.name for p in out.iterdir()}))
    for e in seg.finish(time.monotonic()):
        (writer.add_part if isinstance(e, Part) else writer.add)(e)
    writer.end()
    return out, versions


@pytest.fixture(scope="module")
def ll_stream(tmp_path_factory):
    """title_360p (12 s, 2-s GOP) as ffmpeg publishes it, written as LL-HLS."""
    tmp = tmp_path_factory.mktemp("ll")
    return write_ll(flv_messages(flv_from_mp4("title_360p", tmp)), tmp / "out")


def test_every_playlist_version_lists_only_written_files_and_hints_the_next_part(ll_stream):
    out, versions = ll_stream
    assert len(versions) > 25                               # a version per part and per segment (12 s)
    hinted_then_written = 0
    for i, (text, _, files) in enumerate(versions):
        p = m3u8.loads(text)
        assert p.version == 6 and p.server_control.can_block_reload == "YES"
        assert p.part_inf.part_target == pytest.approx(PART_MS / 1000)
        assert p.server_control.part_hold_back == pytest.approx(3 * PART_MS / 1000)
        assert p.segment_map and all(m.uri in files for m in p.segment_map)
        for s in p.segments:
            assert s.uri is None or (s.uri in files and s.init_section is not None)
            assert all(part.uri in files and part.duration <= p.part_inf.part_target for part in s.parts)
        number, k = (int(x) for x in p.preload_hint.uri.split("-")[1].split(".")[:2])
        in_progress = p.media_sequence + len([s for s in p.segments if s.uri])
        trailing = [part for s in p.segments if not s.uri for part in s.parts]
        # the segment in progress, or the next when this one is already as long as the one before (same GOP)
        assert (number, k) in ((in_progress, len(trailing)), (in_progress + 1, 0))
        complete = [s for s in p.segments if s.uri]
        if number > in_progress and complete:
            assert sum(part.duration for part in trailing) >= complete[-1].duration - 1e-3
        hint = p.preload_hint.uri
        assert hint not in files                              # hinted before it exists
        for later in versions[i + 1:i + 3]:   # the next part (after the version that closes a segment, if any)
            if hint in [part.uri for s in m3u8.loads(later[0]).segments for part in s.parts]:
                hinted_then_written += 1
                break
    # all but the first segment's (a 2-s GOP in 1-s segments: nothing before says it is not yet over) and the last
    assert hinted_then_written >= len(versions) - 4


def test_segments_are_their_parts_and_decode_to_the_published_frames(ll_stream):
    out, _ = ll_stream
    final = m3u8.loads((out / "index.m3u8").read_text())
    assert final.is_endlist and final.preload_hint is None
    init = (out / final.segments[0].init_section.uri).read_bytes()
    body = b""
    for s in final.segments:
        data = (out / s.uri).read_bytes()
        if s.parts:       # (parts are listed for the last 3 target durations only)
            assert data == b"".join((out / part.uri).read_bytes() for part in s.parts)
        body += data
    packets = []
    with av.open(io.BytesIO(init + body)) as c:
        assert {s.type for s in c.streams} == {"video", "audio"}
        for packet in c.demux(video=0):
            if packet.size:
                packets.append(bytes(packet))
    assert [avcc_nals(d) for d in packets] == [avcc_nals(s) for s in source_samples("title_360p.mp4", "video")]
    with av.open(io.BytesIO(init + body)) as c:
        assert sum(1 for _ in c.decode(video=0)) == FRAMES["title_360p"][0]


def test_an_independent_part_decodes_on_its_own(ll_stream):
    out, versions = ll_stream
    p = m3u8.loads(versions[len(versions) // 2][0])
    init = (out / p.segments[-1].init_section.uri).read_bytes()
    independent = [part for s in p.segments for part in s.parts if part.independent]
    assert independent
    data = (out / independent[-1].uri).read_bytes()
    with av.open(io.BytesIO(init + data)) as c:
        assert sum(1 for _ in c.decode(video=0)) >= 1


def test_delta_updates_skip_what_is_older_than_can_skip_until(tmp_path):
    out, versions = write_ll(av_stream(0, 40, fps=25, gop=25), tmp_path / "out")   # 40 segments of 1 s
    early = m3u8.loads(versions[10][0])
    assert early.server_control.can_skip_until is None      # a window of 6 target durations or less: no skipping
    text, delta, _ = versions[-1]
    full, skipped = m3u8.loads(text), m3u8.loads(delta)
    until = full.server_control.can_skip_until
    assert until == pytest.approx(6 * full.target_duration)
    assert skipped.version == 9 and skipped.skip.skipped_segments > 0
    n = skipped.skip.skipped_segments
    complete = [s for s in full.segments if s.uri]
    assert [s.uri for s in skipped.segments if s.uri] == [s.uri for s in complete[n:]]
    assert sum(s.duration for s in complete[n:]) >= until - 1e-6                 # nothing newer than the boundary
    assert sum(s.duration for s in complete[n - 1:]) > until
    assert skipped.media_sequence == full.media_sequence                           # the delta keeps the numbering
    assert skipped.segments[0].init_section is not None


def test_a_dvr_window_lists_its_seconds_and_deletes_what_is_older(tmp_path):
    out = tmp_path / "out"
    writer = LiveStreamWriter(out, target_ms=1000, window=3, keep_extra=2, part_ms=PART_MS, dvr_s=10)
    seg = LiveSegmenter(1000, part_ms=PART_MS)
    for m in av_stream(0, 40, fps=25, gop=25):                  # 1-s segments
        for e in seg.feed(m, time.monotonic(), 1_000_000.0 + m.timestamp / 1000):
            (writer.add_part if isinstance(e, Part) else writer.add)(e)
    p = m3u8.loads((out / "index.m3u8").read_text())
    complete = [s for s in p.segments if s.uri]
    listed = sum(s.duration for s in complete)
    assert 10 <= listed < 10 + complete[0].duration + 1e-6 and len(complete) > 3   # seconds, not `window` segments
    names = {f.name for f in out.iterdir()}
    first = int(complete[0].uri.split("-")[1].split(".")[0])
    tid = complete[0].uri.split("-")[0]
    assert f"{tid}-{first - 2}.m4s" in names and f"{tid}-{first - 3}.m4s" not in names   # keep_extra = 2
    assert not any(n.startswith(f"{tid}-{first - 3}.") for n in names)                  # its parts too
    mpd = (out / "manifest.mpd").read_text()
    assert 'timeShiftBufferDepth="PT1' in mpd                    # 10-11 s


def test_config_takes_a_dvr_window_in_seconds():
    from rtmp.config import ApplicationConfig, ConfigError

    assert ApplicationConfig.from_dict({"dvr_window_s": 7200}).dvr_window_s == 7200
    for bad in (-1, "2h", True, 86401):
        with pytest.raises(ConfigError):
            ApplicationConfig.from_dict({"dvr_window_s": bad})


def test_each_rendition_of_a_ladder_reports_the_others(tmp_path):
    """EXT-X-RENDITION-REPORT (RFC 8216bis §4.4.5.4): the source's playlist reports each rendition being packaged,
    and each rendition's the source and the other renditions, with the LAST-MSN/LAST-PART their own playlists showed
    when it was written (each stream has its own worker: at most a segment behind, never ahead)."""
    from rtmp.config import ApplicationConfig, RtmpConfig
    from rtmp.live import LivePackager
    from rtmp.messages import MSG_VIDEO as VIDEO
    from tests.rtmp.test_live_packager import wait_for

    config = RtmpConfig(applications={"tv": ApplicationConfig(transcode=("240p@300k", "180p@200k"))},
                        live_segment_duration_ms=1000, live_part_duration_ms=PART_MS)
    packager = LivePackager(tmp_path / "live", config)
    keys = ["tv/cam", "tv/cam_240p", "tv/cam_180p"]
    try:
        for key in keys:
            packager.on_publish(key)
        for m in av_stream(0, 6.3, fps=25, gop=25):
            keyframe = m.message_type_id == VIDEO and m.payload[0] >> 4 == 1 and m.payload[1] == 1
            for key in keys:
                packager.on_message(key, m, keyframe=keyframe, sequence_header=m.payload[1] == 0)
        wait_for(lambda: all(packager.stats()["streams"][k]["segments"] >= 5 for k in keys))
        time.sleep(0.5)     # (the workers are idle: every playlist is final for this input)
        out = tmp_path / "live" / "tv"
        playlists = {k: m3u8.loads((out / k.split("/")[1] / "index.m3u8").read_text()) for k in keys}
        for key, p in playlists.items():
            reports = {r.uri: (r.last_msn, r.last_part) for r in p.rendition_reports}
            others = [k for k in keys if k != key]
            assert sorted(reports) == sorted(f"../{k.split('/')[1]}/index.m3u8" for k in others), key
            for other in others:
                q = playlists[other]
                last = q.segments[-1]
                msn = q.media_sequence + len(q.segments) - 1
                reported = reports[f"../{other.split('/')[1]}/index.m3u8"]
                assert reported <= (msn, len(last.parts) - 1) and reported[0] >= msn - 1, (key, other, reported)
                assert reported[1] is not None
    finally:
        for key in keys:
            packager.on_unpublish(key)
        packager.close()
