"""Low-latency DASH output of the live packager (rtmp.live with parts): every MPD version the writer renames into
place, read with ElementTree, announces the segment in progress (listed last, its first chunk on disk, the segment
file not yet) with @availabilityTimeOffset, @availabilityTimeComplete="false" and a ServiceDescription; every DASH
segment is its chunks back to back (one moof + mdat per chunk, read with pymp4), each chunk's tfdt follows the one
before, and the video segments decode with PyAV back to the published samples."""
from __future__ import annotations

import io
import time
import xml.etree.ElementTree as ET

import av
import pytest
from pymp4.parser import Box

from rtmp.live import LiveSegmenter, LiveStreamWriter
from rtmp.live.segmenter import Part
from tests.rtmp.test_flv import flv_from_mp4, flv_messages
from tests.rtmp.test_live_packager import FRAMES, avcc_nals, source_samples

PART_MS = 500
NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


def representations(mpd: ET.Element):
    """kind → (SegmentTemplate, [(t, d)] of its timeline) of the last Period."""
    period = mpd.findall("d:Period", NS)[-1]
    out = {}
    for adaptation in period.findall("d:AdaptationSet", NS):
        template = adaptation.find("d:Representation/d:SegmentTemplate", NS)
        t, entries = 0, []
        for s in template.findall("d:SegmentTimeline/d:S", NS):
            t = int(s.get("t", t))
            for _ in range(int(s.get("r", 0)) + 1):
                entries.append((t, int(s.get("d"))))
                t += int(s.get("d"))
        out[adaptation.get("contentType")] = (template, entries)
    return out


def live_events(tmp, messages=None, target_ms: int = 1000) -> list:
    """title_360p (12 s, 2-s GOP) as ffmpeg publishes it (or ``messages``), through a low-latency segmenter: its
    parts and cuts, in order."""
    seg = LiveSegmenter(target_ms, source="live/test", part_ms=PART_MS)
    events = []
    for m in flv_messages(flv_from_mp4("title_360p", tmp)) if messages is None else messages:
        events += seg.feed(m, time.monotonic(), 1_000_000.0 + m.timestamp / 1000)
    return events + (seg.finish(time.monotonic()) if messages is None else [])


def feed(writer, events) -> None:
    for e in events:
        (writer.add_part if isinstance(e, Part) else writer.add)(e)


@pytest.fixture(scope="module")
def ll_dash(tmp_path_factory):
    """title_360p (12 s, 2-s GOP) as ffmpeg publishes it, through the segmenter and a low-latency writer; every MPD
    version with the files present then."""
    tmp = tmp_path_factory.mktemp("lldash")
    out = tmp / "out"
    writer = LiveStreamWriter(out, target_ms=1000, window=100, part_ms=PART_MS)
    versions, last = [], None
    for e in live_events(tmp):
        feed(writer, [e])
        text = (out / "manifest.mpd").read_text() if (out / "manifest.mpd").exists() else None
        if text is not None and text != last:
            versions.append((text, {p.name for p in out.iterdir()}))
            last = text
    writer.end()
    return out, versions


def test_the_segment_in_progress_is_announced_with_its_first_chunk(ll_dash):
    out, versions = ll_dash
    announced = 0
    for text, files in versions:
        mpd = ET.fromstring(text)
        assert mpd.get("minimumUpdatePeriod") == "PT0.5S"
        assert "http://www.dashif.org/guidelines/low-latency-live-v5" in mpd.get("profiles")
        latency = mpd.find("d:ServiceDescription/d:Latency", NS)
        assert latency is not None and int(latency.get("target")) == 4 * PART_MS
        for kind, (template, entries) in representations(mpd).items():
            assert template.get("availabilityTimeComplete") == "false"
            timescale = int(template.get("timescale"))
            t, d = entries[-1]
            # available a part after its start: ATO = the listed duration less a part
            assert float(template.get("availabilityTimeOffset")) == pytest.approx(d / timescale - PART_MS / 1000,
                                                                                  abs=0.002)
            name = template.get("media").replace("$Time$", str(t))
            base = name[: -len(".m4s")]
            if name not in files:   # the last one listed is in progress: its first chunk exists
                assert f"{base}.0.m4s" in files
                announced += 1
            for t0, _ in entries[:-1]:
                assert template.get("media").replace("$Time$", str(t0)) in files
    assert announced >= 10      # (12 s of 1-s segments, audio and video)


def test_announced_times_are_the_segments_times_and_expected_durations_come_close(ll_dash):
    out, versions = ll_dash
    final = representations(ET.fromstring((out / "manifest.mpd").read_text()))
    for kind, (_, entries) in final.items():
        truth = dict(entries)
        for text, _ in versions[:-1]:
            rep = representations(ET.fromstring(text)).get(kind)
            if rep is None:
                continue
            t, d = rep[1][-1]
            assert t in truth       # the name the player asks for is the segment's name
            assert abs(d - truth[t]) <= truth[t]     # a guess (the previous segment's), never wildly off


def test_dash_segments_are_their_chunks_and_decode_to_the_published_frames(ll_dash):
    out, _ = ll_dash
    mpd = ET.fromstring((out / "manifest.mpd").read_text())
    assert mpd.get("availabilityTimeOffset") is None and mpd.find("d:ServiceDescription", NS) is None  # ended
    bodies = {}
    for kind, (template, entries) in representations(mpd).items():
        assert template.get("availabilityTimeOffset") is None
        body, chunked = b"", 0
        for t, d in entries:
            name = template.get("media").replace("$Time$", str(t))
            data = (out / name).read_bytes()
            chunks = sorted(out.glob(name[: -len(".m4s")] + ".*.m4s"), key=lambda p: int(p.name.split(".")[-2]))
            assert chunks, name
            assert data == b"".join(p.read_bytes() for p in chunks)
            chunked += len(chunks) > 1
            boxes = list(_boxes(data))
            assert [b.type for b in boxes] == [b"styp"] + [b"moof", b"mdat"] * len(chunks)
            times = [_tfdt(b) for b in boxes if b.type == b"moof"]
            assert times == sorted(times) and len(set(times)) == len(times)
            body += data
        assert chunked >= len(entries) // 2
        bodies[kind] = (out / template.get("initialization")).read_bytes() + body
    packets = []
    with av.open(io.BytesIO(bodies["video"])) as c:
        packets = [bytes(p) for p in c.demux(video=0) if p.size]
    assert [avcc_nals(d) for d in packets] == [avcc_nals(s) for s in source_samples("title_360p.mp4", "video")]
    with av.open(io.BytesIO(bodies["audio"])) as c:
        assert sum(1 for p in c.demux(audio=0) if p.size) == FRAMES["title_360p"][1]


def _boxes(data: bytes):
    pos = 0
    while pos < len(data):
        box = Box.parse(data[pos:])
        yield box
        pos += box.end if hasattr(box, "end") else int.from_bytes(data[pos:pos + 4], "big")


def _tfdt(moof) -> int:
    traf = next(b for b in moof.children if b.type == b"traf")
    return next(b for b in traf.children if b.type == b"tfdt").baseMediaDecodeTime


def test_after_a_skipped_segment_the_next_starts_its_own_parts_and_chunks(tmp_path):
    """A segment whose write fails (ENOSPC at its close) is skipped; the next segment's parts and DASH chunks start
    from its own first part (they once continued the skipped segment's, making a segment of both)."""
    class FailingOnce(LiveStreamWriter):
        failed = False

        def _write_segment(self, cut):
            if self.segments_written == 2 and not self.failed:
                FailingOnce.failed = True
                raise OSError(28, "No space left on device")
            return super()._write_segment(cut)

    out = tmp_path / "out"
    writer = FailingOnce(out, target_ms=1000, window=100, part_ms=PART_MS)
    feed(writer, live_events(tmp_path))
    writer.end()
    assert writer.segments_skipped == 1
    after = writer._listed[2]      # the segment after the skipped one (numbers are reused)
    assert after.parts and after.parts[0].uri.endswith(".0.m4s")
    assert (out / after.hls_name).read_bytes() == b"".join((out / p.uri).read_bytes() for p in after.parts)
    for kind, (start, duration, _, name) in after.dash.items():
        chunks = [n for n in after.chunks if n.startswith(name[: -len(".m4s")] + ".")]
        assert (out / name).read_bytes() == b"".join((out / n).read_bytes() for n in chunks)
        assert int(chunks[0].split(".")[-2]) == 0
        with av.open(io.BytesIO((out / after.period.init_names[kind]).read_bytes() + (out / name).read_bytes())) as c:
            assert sum(p.duration or 0 for p in c.demux() if p.size) == pytest.approx(duration, rel=0.05)


def _ladder_pair(tmp_path, skip_keyframes: int = 0):
    """A source writer and a "rendition" writer (``<stream>_240p`` beside it) fed the same published stream, the
    rendition from its ``skip_keyframes``-th key frame on; the source's MPD lists the rendition's video."""
    messages = flv_messages(flv_from_mp4("title_360p", tmp_path))
    keyframes = [i for i, m in enumerate(messages) if m.message_type_id == 9 and m.payload[0] >> 4 == 1
                 and m.payload[1] == 1]
    headers = [m for m in messages[: keyframes[0]]]
    rendition_messages = headers + messages[keyframes[skip_keyframes]:] if skip_keyframes else messages
    rendition = LiveStreamWriter(tmp_path / "cam_240p", target_ms=1000, window=6, part_ms=PART_MS)
    source = LiveStreamWriter(tmp_path / "cam", target_ms=1000, window=6, part_ms=PART_MS, dash_siblings=lambda: [
        r for r in [rendition.dash_representation("../cam_240p/", "v240p")] if r is not None],
        siblings=lambda: [(rendition.base_ms, v) for v in [rendition.variant("../cam_240p/index.m3u8")] if v])
    for writer, stream in ((rendition, rendition_messages), (source, messages)):
        feed(writer, live_events(tmp_path, stream[: len(stream) * 2 // 3]))    # (still live: the MPD has no end)
    return ET.fromstring((tmp_path / "cam" / "manifest.mpd").read_text())


def test_the_source_mpd_and_master_list_the_ladder_renditions(tmp_path):
    mpd = _ladder_pair(tmp_path)
    (video,) = [a for a in mpd.findall("d:Period/d:AdaptationSet", NS) if a.get("contentType") == "video"]
    reps = video.findall("d:Representation", NS)
    assert [r.get("id") for r in reps] == ["v", "v240p"]
    assert "../cam_240p/index.m3u8" in (tmp_path / "cam" / "master.m3u8").read_text()    # HLS lists it too
    own, other = (r.find("d:SegmentTemplate", NS) for r in reps)
    assert other.get("media").startswith("../cam_240p/") and other.get("initialization").startswith("../cam_240p/")
    assert (tmp_path / "cam" / other.get("initialization")).exists()
    timeline = [(s.get("t"), s.get("d")) for s in other.findall("d:SegmentTimeline/d:S", NS)]
    assert timeline and timeline == [(s.get("t"), s.get("d")) for s in own.findall("d:SegmentTimeline/d:S", NS)]
    t = 0
    for s in other.findall("d:SegmentTimeline/d:S", NS)[:-1]:      # (the last may be in progress: its chunk)
        t = int(s.get("t", t))
        assert (tmp_path / "cam" / other.get("media").replace("$Time$", str(t))).exists()
        t += int(s.get("d"))


def test_a_rendition_that_does_not_start_with_the_source_is_left_out_of_mpd_and_master(tmp_path):
    mpd = _ladder_pair(tmp_path, skip_keyframes=1)     # its media time 0 is the source's second key frame
    (video,) = [a for a in mpd.findall("d:Period/d:AdaptationSet", NS) if a.get("contentType") == "video"]
    assert [r.get("id") for r in video.findall("d:Representation", NS)] == ["v"]
    assert "cam_240p" not in (tmp_path / "cam" / "master.m3u8").read_text()       # nor as an HLS variant
