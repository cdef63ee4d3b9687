"""Recording and live packaging on a full disk (issue 10, part 7), on a real small tmpfs mounted as the store.

The disk is filled by a filler file (written until ENOSPC) while a real ffmpeg publishes, then freed by deleting it.
Where mounting is not permitted, the same tests run with ENOSPC injected at the recorder's and live writer's writes
(``SimulatedDisk``): weaker (freeing media cannot make room for the moov there), but the same assertions hold."""
from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import m3u8
import pytest

from packagers.errors import PackagerError
from packagers.mp4 import open_presentation
from packagers.mp4.writer import Mp4Writer, TrackSpec

import rtmp.live.writer as live_writer
import rtmp.record_file as record_file
from fixtures.generate import fixture_path
from gateway.ingest.service import start_ingest
from gateway.settings import Settings
from rtmp.client import RtmpClient
from rtmp.config import ApplicationConfig, RtmpConfig
from rtmp.live import LIVE_FILE, LiveStreamWriter
from rtmp.messages import MSG_AUDIO, MSG_VIDEO
from rtmp.record import PART_DIR, RECORDING_DIR, Recorder
from tests.rtmp.test_live_packager import av_stream, run_segmenter, video_header
from tests.rtmp.test_record import Recordings, decoded, exited, feed, flv_messages, packets_ms, publish

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


class TmpfsDisk:
    """A tmpfs of ``size_kb`` at ``root``: ``fill()`` writes a filler until ENOSPC, ``free()`` deletes it."""

    simulated = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> int:
        written = 0
        with open(self.filler, "ab", buffering=0) as f:
            for chunk in (1 << 16, 1 << 12, 1):     # tmpfs counts pages: the last page too
                while True:
                    try:
                        written += f.write(bytes(chunk))
                    except OSError as e:
                        assert e.errno == errno.ENOSPC, e
                        break
        return written

    def free(self) -> None:
        self.filler.unlink()


class SimulatedDisk(TmpfsDisk):
    """No mount permission: while full, the recorder's writes and the live writer's files raise ENOSPC."""

    simulated = True

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(root)
        self.full = False
        write_all, open_ = record_file._write_all, open

        def full_write_all(fd, data):
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device (simulated)")
            return write_all(fd, data)

        def full_open(path, mode="r", *args, **kwargs):
            if self.full and "w" in mode:
                raise OSError(errno.ENOSPC, "No space left on device (simulated)")
            return open_(path, mode, *args, **kwargs)

        monkeypatch.setattr(record_file, "_write_all", full_write_all)
        monkeypatch.setattr(live_writer, "open", full_open, raising=False)

    def fill(self) -> int:
        self.full = True
        return 0

    def free(self) -> None:
        self.full = False


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An 8 MB tmpfs (unmounted afterwards), or a simulated full disk where mounting is not permitted."""
    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8192k", "tmpfs", str(root)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        if not any(s in mounted.stderr.lower() for s in ("permission denied", "not permitted", "superuser")):
            pytest.fail(f"mount tmpfs: {mounted.stderr}")
        yield SimulatedDisk(root, monkeypatch)
        return
    try:
        yield TmpfsDisk(root)
    finally:
        if subprocess.run(["umount", str(root)]).returncode != 0:     # a file still open (a failing test): detach
            subprocess.run(["umount", "--lazy", str(root)], check=True)


async def wait_until(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def source_frames(source: Path) -> dict[str, list[bytes]]:
    return {kind: [p[3] for p in packets] for kind, packets in packets_ms(source).items()}


def mpd_files(path: Path) -> list[str]:
    """Every init and media segment name a live MPD lists ($Time$ from each SegmentTimeline)."""
    names = []
    for template in ET.fromstring(path.read_text()).iterfind(".//d:SegmentTemplate", NS):
        names.append(template.get("initialization"))
        t = 0
        for s in template.iterfind("d:SegmentTimeline/d:S", NS):
            t = int(s.get("t", t))
            for _ in range(int(s.get("r", 0)) + 1):
                names.append(template.get("media").replace("$Time$", str(t)))
                t += int(s.get("d"))
    return names


def recordings_of(store: Path) -> list[Path]:
    return sorted((store / RECORDING_DIR).rglob("*.mp4"))


def assert_prefix_recording(file: Path, source: Path) -> dict[str, int]:
    """``file`` holds the source's first packets, byte for byte, and every one decodes."""
    want, got = source_frames(source), source_frames(file)
    for kind in ("video", "audio"):
        assert got[kind] == want[kind][:len(got[kind])], kind
    assert 0 < len(got["video"]) < len(want["video"])
    assert decoded(file) == {kind: len(got[kind]) for kind in got}
    return {kind: len(got[kind]) for kind in got}


# ------------------------------------------------------------------------------------------------ end to end
async def test_full_disk_while_publishing(disk: TmpfsDisk) -> None:
    """ffmpeg publishes in real time to a gateway ingest (recording + live packaging) whose store fills up mid-way:
    the player loses nothing, the recording keeps what reached the disk, live packaging skips segments and resumes
    once the space is back, and the next publish records a whole file."""
    store = disk.root
    config = RtmpConfig(applications={"rec": ApplicationConfig(live=True, record=True)},
                        default=ApplicationConfig(live=False), live_segment_duration_ms=1000)
    ingest = await start_ingest(Settings(store=store), config, "127.0.0.1", 0)
    recorder, live = ingest.parts["recorder"], ingest.parts["live"]
    source = fixture_path("title_180p.mp4")     # 12 s, a key frame every 2 s
    live_dir = store / "live" / "rec" / "test"
    received: list = []
    proc = player = None
    try:
        proc = publish(ingest.port, source, realtime=True)
        await wait_until(lambda: ingest.relay.is_published("rec/test"), "the publish")
        player = await RtmpClient.connect(f"rtmp://127.0.0.1:{ingest.port}/rec", timeout=10)
        await player.play("test")

        async def play() -> None:
            while True:
                try:
                    received.append(await player.read_message())
                except EOFError:
                    return
        playing = asyncio.create_task(play())

        writer = lambda: live.stats()["streams"]["rec/test"]    # noqa: E731
        await wait_until(lambda: recorder.bytes_written > 50_000 and writer()["segments"] >= 1, "a live segment")
        disk.fill()
        await wait_until(lambda: recorder.failed == 1 and writer()["segments_skipped"] >= 1, "both to hit ENOSPC")
        written_before = writer()["segments"]
        disk.free()
        code, err = await exited(proc)
        assert code == 0, err
        await asyncio.wait_for(playing, 30)
        await wait_until(lambda: not writer()["publishing"] and recorder.stats()["writers"] == 0, "the unpublish")
        first_stats, live_stats = recorder.stats(), writer()
        first = recordings_of(store)
        playlist = (live_dir / "index.m3u8").read_text()
        listed = [s.uri for s in m3u8.loads(playlist).segments] + [p.uri for s in m3u8.loads(playlist).segments
                                                                   for p in s.parts]   # (LL-HLS parts)
        hls_missing = [uri for uri in listed if uri and not (live_dir / uri).is_file()]
        live_names = sorted(os.listdir(live_dir))
        dash_files = mpd_files(live_dir / "manifest.mpd")
        dash_missing = [name for name in dash_files if not (live_dir / name).is_file()]

        # the next publish, with space again: a whole recording
        code, err = await exited(publish(ingest.port, source))
        assert code == 0, err
        await wait_until(lambda: recorder.stats()["files_started"] == 2 and recorder.stats()["writers"] == 0,
                         "the second recording")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if player is not None:
            await player.close()
        await ingest.close()
    print(f"\nsimulated={disk.simulated} recorder {first_stats}; live {live_stats}")

    # The player got every frame, byte for byte, from its first key frame to the end, through the full disk.
    want = source_frames(source)
    video = [m.payload[5:] for m in received if m.message_type_id == MSG_VIDEO and m.payload[1] == 1]
    audio = [m.payload[2:] for m in received if m.message_type_id == MSG_AUDIO and m.payload[1] == 1]
    start = want["video"].index(video[0])
    assert video == want["video"][start:] and audio == want["audio"][-len(audio):] and len(audio) > 400

    # The recorder: counted, its thread ended normally; what reached the disk is a playable prefix, or nothing.
    assert first_stats["failed"] == 1 and first_stats["bytes_lost"] > 0 and first_stats["errors"] >= 1
    assert not list((store / PART_DIR).rglob("*.part"))
    if first:
        (file,) = first
        kept = assert_prefix_recording(file, source)
        print(f"kept {kept} of {len(want['video'])} video / {len(want['audio'])} audio frames in {file.name}")
    else:
        assert disk.simulated, "on a real tmpfs the recorder gives back media to make room for its moov"

    # Live: segments were skipped and written again after; the playlist lists only files that exist, the first
    # segment after the gap with a discontinuity; no temporary left behind.
    assert live_stats["segments_skipped"] >= 1 and live_stats["segments"] > written_before
    hls = m3u8.loads(playlist)
    assert hls.is_endlist and hls.segments and hls_missing == []
    tid = hls.segments[0].uri.split("-")[0]
    ext = ".m4s" if hls.segment_map else ".ts"      # low-latency HLS (the default) is fMP4
    assert [s.uri for s in hls.segments] == [f"{tid}-{hls.media_sequence + i}{ext}" for i in range(len(hls.segments))]
    assert any(s.discontinuity for s in hls.segments[1:]), playlist
    assert dash_files and dash_missing == []
    assert all(LIVE_FILE.fullmatch(name) for name in live_names), live_names

    # The second publish: a whole recording, every packet.
    (second,) = [f for f in recordings_of(store) if f not in first]
    assert source_frames(second) == want
    assert decoded(second) == {kind: len(want[kind]) for kind in want}


# ------------------------------------------------------------------------------------------------ the recorder alone
def test_recording_cut_by_a_full_disk_keeps_a_playable_prefix(disk: TmpfsDisk, tmp_path: Path) -> None:
    messages = flv_messages(fixture_path("title_180p.mp4"), tmp_path)
    half = len(messages) // 2
    recordings = Recordings()
    recorder = Recorder(disk.root, on_recorded=recordings)
    recorder.on_publish("rec/test")
    feed(recorder, "rec/test", messages[:half])
    worker = recorder._streams["rec/test"].worker
    deadline = time.monotonic() + 30
    while recorder.bytes_written < worker.writer.position:     # the first half is on disk
        assert time.monotonic() < deadline, "the worker did not write"
        time.sleep(0.01)
    disk.fill()
    feed(recorder, "rec/test", messages[half:])
    recorder.on_unpublish("rec/test")
    recorder.close()
    stats = recorder.stats()
    assert stats["failed"] == 1 and stats["bytes_lost"] > 0 and stats["writers"] == 0
    assert not list((disk.root / PART_DIR).rglob("*.part"))
    if disk.simulated:      # the moov has no room either: nothing kept, nothing left behind
        assert recordings.done == [] and not recordings_of(disk.root)
        return
    ((path, info),) = recordings.done
    kept = assert_prefix_recording(disk.root / path, fixture_path("title_180p.mp4"))
    assert info["samples"] == kept and "No space left" in info["error"]
    assert info["bytes"] == (disk.root / path).stat().st_size

    # space again: the next publish records everything
    disk.free()
    recorder = Recorder(disk.root, on_recorded=recordings)
    recorder.on_publish("rec/test")
    feed(recorder, "rec/test", messages)
    recorder.on_unpublish("rec/test")
    recorder.close()
    assert recorder.stats()["failed"] == 0 and len(recordings.done) == 2
    assert source_frames(disk.root / recordings.done[1][0]) == source_frames(fixture_path("title_180p.mp4"))


def test_nothing_playable_leaves_no_part_file(disk: TmpfsDisk, tmp_path: Path) -> None:
    messages = flv_messages(fixture_path("title_180p.mp4"), tmp_path)
    (disk.root / PART_DIR / "rec").mkdir(parents=True)
    (disk.root / RECORDING_DIR / "rec").mkdir(parents=True)
    disk.fill()
    recordings = Recordings()
    recorder = Recorder(disk.root, on_recorded=recordings)
    recorder.on_publish("rec/test")
    feed(recorder, "rec/test", messages)
    recorder.on_unpublish("rec/test")
    recorder.close()
    stats = recorder.stats()
    assert stats["failed"] == 1 and stats["bytes_lost"] > 0 and stats["files_finished"] == 0
    assert recordings.done == [] and not list((disk.root / PART_DIR).rglob("*.part")) and not recordings_of(disk.root)


# ------------------------------------------------------------------------------------------------ the live writer alone
def test_live_writer_skips_segments_on_a_full_disk_and_resumes(disk: TmpfsDisk, caplog) -> None:
    """Two periods (the second a new codec configuration): segments of the first are skipped, and so is the start
    of the second; once the space is back, the second period starts with its own tracks and init segments. The
    skips are logged once per ERROR_LOG_INTERVAL (a clock that does not move: once)."""
    out = disk.root / "live" / "s"
    writer = LiveStreamWriter(out, target_ms=1000, window=20, keep_extra=2, monotonic=lambda: 100.0)
    seg, cuts = run_segmenter(av_stream(0, 6.4, fps=25, gop=25), target_ms=1000)
    second = [video_header(6400, "title_180p.mp4")] + av_stream(6400, 4.4, fps=25, gop=25, headers=False)
    seg, more = run_segmenter(second, target_ms=1000, segmenter=seg)
    cuts += more
    assert [c.new_period for c in cuts].count(True) == 2
    switch = next(i for i, c in enumerate(cuts) if c.new_period and i)
    for cut in cuts[:3]:
        writer.add(cut)
    disk.fill()
    for cut in cuts[3:switch + 1]:      # the rest of period 0 and the first segment of period 1
        writer.add(cut)
    assert writer.segments_written == 3 and writer.segments_skipped == switch + 1 - 3 >= 2
    errors = [r.getMessage() for r in caplog.records if r.name == "rtmp.live" and r.levelname == "ERROR"]
    assert len(errors) == 1 and "segment skipped (1 in a row)" in errors[0] and "No space left" in errors[0], errors
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    listed = m3u8.loads((out / "index.m3u8").read_text()).segments
    assert len(listed) == 3 and all((out / s.uri).is_file() for s in listed)
    disk.free()
    for cut in cuts[switch + 1:]:
        writer.add(cut)
    writer.end()
    assert any("writing again after" in r.getMessage() for r in caplog.records)
    assert writer.segments_written == len(cuts) - writer.segments_skipped
    hls = m3u8.loads((out / "index.m3u8").read_text())
    assert [s.uri for s in hls.segments] == [f"{writer.tid}-{n}.ts" for n in range(1, writer.segments_written + 1)]
    assert [s.discontinuity for s in hls.segments] == [False, False, False, True] + [False] * (len(hls.segments) - 4)
    assert all((out / s.uri).is_file() for s in hls.segments) and hls.is_endlist
    # DASH: period 1 has its own init segments (the 180p configuration), every listed file exists
    mpd = ET.fromstring((out / "manifest.mpd").read_text())
    periods = mpd.findall("d:Period", NS)
    assert len(periods) == 2
    video = periods[1].find("d:AdaptationSet/d:Representation[@id='v']", NS)
    assert video.get("height") == "180" and video.find("d:SegmentTemplate", NS).get("initialization") == \
        f"{writer.tid}-1-v-init.mp4"
    assert all((out / name).is_file() for name in mpd_files(out / "manifest.mpd"))
    assert all(LIVE_FILE.fullmatch(p.name) for p in out.iterdir())


# ------------------------------------------------------------------------------------------------ Mp4Writer.truncate
def test_mp4_writer_truncate_describes_only_whole_samples(tmp_path: Path) -> None:
    video, audio = (t.codec for t in open_presentation(fixture_path("title_180p.mp4")).tracks)
    writer = Mp4Writer([TrackSpec("video", video, 1000), TrackSpec("audio", audio, 44100)])
    data = bytearray(writer.header())
    for i in range(20):     # interleaved, as a recorder writes them
        data += writer.add("video", 40 * i, 0, i % 10 == 0, bytes([i]) * (1000 + i))
        data += writer.add("audio", 1024 * i, 0, True, bytes([100 + i]) * (200 + i))
    video_ends = [int(o) + 1000 + i for i, o in enumerate(writer.tracks()[0].samples.offsets)]
    cut = video_ends[12] + 150          # inside the audio sample after video sample 12

    def closed_file(name: str) -> Path:
        offset, patch, moov = writer.finish()
        body = bytearray(data[:writer.position]) + moov
        body[offset:offset + len(patch)] = patch
        (tmp_path / name).write_bytes(body)
        return tmp_path / name

    end = writer.truncate(cut)
    assert end == video_ends[12] and writer.samples("video") == 13 and writer.samples("audio") == 12
    with pytest.raises(PackagerError):
        writer.add("video", 10_000, 0, True, b"x")
    tracks = open_presentation(closed_file("a.mp4")).tracks
    assert [len(t.samples) for t in tracks] == [13, 12]
    assert bytes(data[int(tracks[0].samples.offsets[-1]):end]) == bytes([12]) * 1012
    writer.truncate(video_ends[3] - 1)   # after finish() too (a moov that did not fit): finish() again
    assert [len(t.samples) for t in open_presentation(closed_file("b.mp4")).tracks] == [3, 3]
    writer.truncate(10)                 # inside the header: nothing playable
    with pytest.raises(PackagerError):
        writer.finish()
