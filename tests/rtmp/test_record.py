"""Recording (rtmp/record.py) with real clients: the ffmpeg CLI publishes fixtures to an in-process RtmpServer whose
relay has the Recorder tap; the finished MP4 is compared packet by packet with PyAV's demux of the source, decoded,
and served through the gateway (HLS segments decoded by PyAV, progressive /mp4/). Sequence-header, key-frame, codec
change and full-queue rules are driven with FLV tags that ffmpeg wrote; registration goes through the real ingest."""
from __future__ import annotations

import asyncio
import dataclasses
import io
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import m3u8
import numpy as np
from aiohttp.test_utils import TestClient, TestServer

from delivery_profiles.tokens import new_secret
from fixtures.generate import fixture_path
from gateway.http.app import make_app
from gateway.catalog.catalog import Catalog, Partner, catalog_dir, write_partner
from gateway.ingest.service import register_recording, start_ingest
from gateway.settings import Settings
from packagers.codecs.flv import FILE_HEADER_SIZE, PREVIOUS_TAG_SIZE_SIZE, TAG_HEADER_SIZE, parse_tag_header
from packagers.mp4 import open_presentation
from rtmp.config import ApplicationConfig, RtmpConfig
from rtmp.messages import MSG_AUDIO, MSG_VIDEO, Message
from rtmp.record import PART_DIR, RECORDING_DIR, Recorder
from rtmp.relay import Relay
from rtmp.server import serve_rtmp
from rtmp.session import classify_media
from tests.needs import needs_executable

pytestmark = needs_executable("ffmpeg")

NAME = re.compile(r"test-\d{8}T\d{6}Z(-\d+)?\.mp4")


# ------------------------------------------------------------------------------------------------ helpers
class Recordings:
    """on_recorded as a test sees it: (path, info) pairs, and an event per call."""

    def __init__(self) -> None:
        self.done: list[tuple[str, dict]] = []
        self.event = threading.Event()

    def __call__(self, path: str, info: dict) -> None:
        self.done.append((path, info))
        self.event.set()

    async def wait(self, count: int = 1, timeout: float = 30) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        while len(self.done) < count:
            assert time.monotonic() < deadline, f"timed out waiting for {count} recording(s), got {self.done}"
            await asyncio.sleep(0.02)
        return self.done


class Watcher(threading.Thread):
    """Lists <store>/recordings/ in a loop while a test runs: every name must be a finished .mp4 that parses whole."""

    def __init__(self, store: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.stop, self.seen, self.problems = store / RECORDING_DIR, threading.Event(), set(), []

    def run(self) -> None:
        while not self.stop.is_set():
            for path in self.root.rglob("*") if self.root.exists() else ():
                if path.is_dir() or path in self.seen:
                    continue
                if not path.name.endswith(".mp4"):
                    self.problems.append(f"{path.name} visible under recordings/")
                    continue
                try:
                    open_presentation(path)
                    self.seen.add(path)
                except Exception as e:
                    self.problems.append(f"{path.name}: {e}")
            time.sleep(0.005)


def publish(port: int, source: Path, *, realtime: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *(["-re"] if realtime else []),
         "-i", str(source), "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/rec/test"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def exited(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str]:
    _, err = await asyncio.wait_for(asyncio.to_thread(proc.communicate), timeout)
    return proc.returncode, err.decode(errors="replace")


def packets_ms(path: Path) -> dict[str, list[tuple[float, float, bool, bytes]]]:
    """PyAV's packets per stream kind: (pts ms, dts ms, key, payload)."""
    out: dict[str, list] = {"video": [], "audio": []}
    with av.open(str(path)) as container:
        for p in container.demux():
            if p.size:
                tb = float(p.time_base) * 1000
                out[p.stream.type].append((p.pts * tb, p.dts * tb, p.is_keyframe, bytes(p)))
    return out


def decoded(path: Path) -> dict[str, int]:
    counts = {"video": 0, "audio": 0}
    with av.open(str(path)) as container:
        for packet in container.demux():
            counts[packet.stream.type] += len(packet.decode())
    return counts


def flv_messages(source: Path, tmp_path: Path) -> list[Message]:
    """The tags of an FLV that the ffmpeg CLI writes from ``source`` (-c copy), as RTMP messages."""
    flv = tmp_path / (source.stem + ".flv")
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(source), "-c", "copy",
                    "-f", "flv", str(flv)], check=True, timeout=60)
    data, pos, out = flv.read_bytes(), FILE_HEADER_SIZE + PREVIOUS_TAG_SIZE_SIZE, []
    while pos + TAG_HEADER_SIZE <= len(data):
        tag = parse_tag_header(data, pos)
        body = data[pos + TAG_HEADER_SIZE : pos + TAG_HEADER_SIZE + tag.data_size]
        out.append(Message(6 if tag.tag_type == MSG_VIDEO else 4, tag.timestamp, tag.tag_type, 1, body))
        pos += TAG_HEADER_SIZE + tag.data_size + PREVIOUS_TAG_SIZE_SIZE
    return out


def feed(recorder: Recorder, key: str, messages: list[Message]) -> None:
    for m in messages:
        if m.message_type_id in (MSG_AUDIO, MSG_VIDEO):
            key_frame, header = classify_media(m)
            recorder.on_message(key, m, keyframe=key_frame, sequence_header=header)
        else:
            recorder.on_message(key, m, keyframe=False, sequence_header=False)


def shifted(messages: list[Message], by: int) -> list[Message]:
    return [Message(m.chunk_stream_id, m.timestamp + by, m.message_type_id, m.message_stream_id, m.payload)
            for m in messages]


def media(messages: list[Message], kind: int) -> list[Message]:
    """The coded frames of one kind (FLV AVC/AAC packet type 1): no sequence header, no end of sequence."""
    return [m for m in messages if m.message_type_id == kind and m.payload[1] == 1]


# ------------------------------------------------------------------------------------------------ end to end
async def test_ffmpeg_publish_is_recorded_served_and_decoded(tmp_path: Path) -> None:
    store = tmp_path / "store"
    recordings, watcher = Recordings(), Watcher(store)
    recorder = Recorder(store, enabled=lambda app: app == "rec", on_recorded=recordings)
    server = await serve_rtmp("127.0.0.1", 0, Relay(taps=[recorder]))
    watcher.start()
    source = fixture_path("title_360p.mp4")
    t0 = time.monotonic()
    try:
        code, err = await exited(publish(server.port, source))
        assert code == 0, err
        ((path, info),) = await recordings.wait()
        finished_after = time.monotonic() - t0
    finally:
        await server.close()
        await asyncio.to_thread(recorder.close)
        watcher.stop.set()
        watcher.join()
    assert watcher.problems == []
    file = store / path
    assert path.startswith("recordings/rec/") and NAME.fullmatch(file.name), path
    assert not list((store / PART_DIR).rglob("*.part"))
    assert info["reason"] == "unpublish" and info["bytes"] == file.stat().st_size and info["dropped"] == 0
    print(f"\nrecorded {path}: {info['bytes']} bytes, {info['duration_ms']} ms, ready {finished_after * 1000:.0f} ms "
          f"after ffmpeg started; {recorder.stats()}")

    # Every packet of the source, in order, byte for byte; times equal up to the FLV's ms rounding, after the one
    # shift ffmpeg's FLV muxer applies to all streams (it makes the first dts 0).
    want, got = packets_ms(source), packets_ms(file)
    shift = got["video"][0][0] - want["video"][0][0]
    for kind in ("video", "audio"):
        assert [p[3] for p in got[kind]] == [p[3] for p in want[kind]], kind
        assert [p[2] for p in got[kind]] == [p[2] for p in want[kind]], kind
        pts_error = np.abs(np.array([p[0] for p in got[kind]]) - [p[0] + shift for p in want[kind]]).max()
        dts_error = np.abs(np.array([p[1] for p in got[kind]]) - [p[1] + shift for p in want[kind]]).max()
        assert pts_error <= 1.0 and dts_error <= 1.0, (kind, pts_error, dts_error)
    # Every packet decodes. FLV has no edit list, so the AAC priming frame the source's elst hides is kept.
    assert decoded(file) == {"video": decoded(source)["video"], "audio": len(want["audio"])}
    assert info["samples"] == {kind: len(want[kind]) for kind in want}
    # audio in samples, gapless as in the source (whole 1024-sample frames despite the ms timestamps of FLV)
    audio = open_presentation(file).audio_tracks[0]
    assert audio.timescale == 44100 and set(audio.samples.durations[:-1].tolist()) == {1024}

    # The VOD path serves it: HLS (every TS segment decodes on its own) and progressive download.
    client = TestClient(TestServer(make_app(Settings(store=store))))
    await client.start_server()
    try:
        response = await client.get(f"/hls/{path}/master.m3u8")
        assert response.status == 200
        master = m3u8.loads(await response.text())
        playlist = m3u8.loads(await (await client.get(f"/hls/{path}/{master.playlists[0].uri}")).text())
        frames = {"video": 0, "audio": 0}
        for segment in playlist.segments:
            response = await client.get(f"/hls/{path}/{segment.uri}")
            assert response.status == 200
            with av.open(io.BytesIO(await response.read()), format="mpegts") as container:
                for packet in container.demux():
                    frames[packet.stream.type] += len(packet.decode())
        assert frames == {kind: len(want[kind]) for kind in want}
        assert len(playlist.segments) >= 2
        response = await client.get(f"/mp4/{path}")
        assert response.status == 200 and await response.read() == file.read_bytes()
        # the file being written sits under a hidden name: README's "400 malformed name", never served
        assert (await client.get(f"/mp4/{PART_DIR}/rec/{file.name}.part")).status == 400
    finally:
        await client.close()


async def test_abrupt_disconnect_still_yields_a_valid_mp4(tmp_path: Path) -> None:
    store = tmp_path / "store"
    recordings, watcher = Recordings(), Watcher(store)
    recorder = Recorder(store, on_recorded=recordings)
    server = await serve_rtmp("127.0.0.1", 0, Relay(taps=[recorder]))
    watcher.start()
    proc = publish(server.port, fixture_path("title_180p.mp4"), realtime=True)
    try:
        deadline = time.monotonic() + 30
        while recorder.bytes_written < 150_000:     # about 2 s of media through the worker
            assert time.monotonic() < deadline and proc.poll() is None, "ffmpeg did not publish"
            await asyncio.sleep(0.05)
        assert not list((store / RECORDING_DIR).rglob("*.mp4"))   # nothing visible while recording
        proc.kill()
        await exited(proc)
        ((path, info),) = await recordings.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        await server.close()
        await asyncio.to_thread(recorder.close)
        watcher.stop.set()
        watcher.join()
    assert watcher.problems == []
    file = store / path
    presentation = open_presentation(file)
    video = presentation.video_tracks[0]
    assert video.samples.keyframe[0] and video.duration_seconds >= 1.5
    got = packets_ms(file)
    assert decoded(file)["video"] == len(got["video"]) == info["samples"]["video"]
    assert info["samples"]["audio"] == len(got["audio"]) > 0
    print(f"\nkilled publisher: {path} kept {video.duration_seconds:.2f} s, {info['bytes']} bytes")


PYAV_PUBLISH = """
import sys, av
with av.open(sys.argv[2]) as src, av.open(sys.argv[1], "w", format="flv", timeout=10) as out:
    streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
    for p in src.demux():
        if p.dts is not None:
            p.stream = streams[p.stream.index]
            out.mux(p)
"""


async def test_hevc_published_over_enhanced_rtmp_by_pyav(tmp_path: Path) -> None:
    """ffmpeg 8.1 (in PyAV) sends HEVC as E-RTMP (FourCC hvc1). A subprocess: PyAV keeps the GIL while it blocks on
    the socket, which would stall the server's event loop in this process."""
    store = tmp_path / "store"
    recordings = Recordings()
    recorder = Recorder(store, on_recorded=recordings)
    server = await serve_rtmp("127.0.0.1", 0, Relay(taps=[recorder]))
    source = fixture_path("hevc.mp4")
    try:
        proc = subprocess.Popen([sys.executable, "-c", PYAV_PUBLISH, f"rtmp://127.0.0.1:{server.port}/rec/test",
                                 str(source)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        code, err = await exited(proc)
        assert code == 0, err
        ((path, info),) = await recordings.wait()
    finally:
        await server.close()
        await asyncio.to_thread(recorder.close)
    file = store / path
    assert info["codecs"]["video"].startswith("hvc1.")
    # the same parameter sets, profile and size; the hvcC bytes are the FLV muxer's (array_completeness cleared)
    ours, theirs = (open_presentation(f).video_tracks[0].codec for f in (file, source))
    assert dataclasses.replace(ours, extradata=b"") == dataclasses.replace(theirs, extradata=b"")
    want, got = packets_ms(source), packets_ms(file)
    for kind in ("video", "audio"):
        assert [p[3] for p in got[kind]] == [p[3] for p in want[kind]], kind
    assert decoded(file) == {kind: len(want[kind]) for kind in want}


# ------------------------------------------------------------------------------------------------ rules, from FLV tags
def test_recording_starts_at_a_key_frame_after_the_sequence_headers(tmp_path: Path) -> None:
    messages = flv_messages(fixture_path("title_180p.mp4"), tmp_path)
    frames = media(messages, MSG_VIDEO)
    second_key = next(i for i, m in enumerate(frames) if classify_media(m)[0] and i > 0)
    recordings = Recordings()
    recorder = Recorder(tmp_path / "store", on_recorded=recordings)
    recorder.on_publish("rec/test")
    # frames before the sequence header, then the headers, then joining mid-GOP: all skipped up to a key frame
    start = next(i for i, m in enumerate(messages) if m is frames[5])
    feed(recorder, "rec/test", frames[:5] + [m for m in messages if classify_media(m)[1]] + messages[start:])
    recorder.on_unpublish("rec/test")
    recorder.close()
    ((path, info),) = recordings.done
    got = packets_ms(tmp_path / "store" / path)
    assert got["video"][0][2] and got["video"][0][3] == frames[second_key].payload[5:]
    assert [p[3] for p in got["video"]] == [m.payload[5:] for m in frames[second_key:]]
    after = messages[messages.index(frames[second_key]) + 1 :]    # audio from there on, in publisher order
    assert [p[3] for p in got["audio"]] == [m.payload[2:] for m in media(after, MSG_AUDIO)]
    assert info["samples"] == {"video": len(frames) - second_key, "audio": len(media(after, MSG_AUDIO))}


def test_audio_only_and_audio_first_streams(tmp_path: Path) -> None:
    """A stream without video starts at its first audio frame; one whose onMetaData declares video waits for the
    video key frame even when audio comes first."""
    store = tmp_path / "store"
    recordings = Recordings()
    recorder = Recorder(store, on_recorded=recordings)
    audio_only = flv_messages(fixture_path("audio_only.mp4"), tmp_path)
    recorder.on_publish("rec/test")
    feed(recorder, "rec/test", audio_only)
    recorder.on_unpublish("rec/test")

    both = flv_messages(fixture_path("title_180p.mp4"), tmp_path)
    metadata, video_header = both[0], both[1]
    assert metadata.message_type_id == 18 and classify_media(video_header) == (False, True)
    audio_first = [m for m in both if m.message_type_id == MSG_AUDIO][:6]    # its header and five frames
    rest = [m for m in both[2:] if not any(m is a for a in audio_first)]
    recorder.on_publish("rec/test")
    feed(recorder, "rec/test", [metadata, *audio_first, video_header, *rest])
    recorder.on_unpublish("rec/test")
    recorder.close()
    (first, _), (second, _) = sorted(recordings.done, key=lambda r: r[1]["samples"]["video"])
    got = packets_ms(store / first)
    assert got["video"] == [] and [p[3] for p in got["audio"]] == [m.payload[2:] for m in media(audio_only, MSG_AUDIO)]
    assert [t.kind for t in open_presentation(store / second).tracks] == ["video", "audio"]
    got = packets_ms(store / second)
    assert [p[3] for p in got["video"]] == [m.payload[5:] for m in media(both, MSG_VIDEO)]
    assert got["audio"][0][3] == media(rest, MSG_AUDIO)[0].payload[2:]


def test_a_codec_change_finishes_the_file_and_starts_the_next(tmp_path: Path) -> None:
    a = flv_messages(fixture_path("title_180p.mp4"), tmp_path)
    b = flv_messages(fixture_path("title_240p.mp4"), tmp_path)
    recordings = Recordings()
    recorder = Recorder(tmp_path / "store", on_recorded=recordings)
    recorder.on_publish("rec/test")
    feed(recorder, "rec/test", a + shifted(b, a[-1].timestamp + 40))
    recorder.on_unpublish("rec/test")
    recorder.close()
    # the two files are finished by two workers, in either order
    (first, first_info), (second, second_info) = sorted(recordings.done, key=lambda r: r[1]["reason"] != "codec change")
    assert first != second and first_info["reason"] == "codec change" and second_info["reason"] == "unpublish"
    assert NAME.fullmatch(Path(first).name) and NAME.fullmatch(Path(second).name)
    store = tmp_path / "store"
    sizes = [(t.codec.width, t.codec.height) for p in (first, second) for t in open_presentation(store / p).video_tracks]
    assert sizes == [(320, 180), (426, 240)]
    for path, messages in ((first, a), (second, b)):
        got = packets_ms(store / path)
        assert [p[3] for p in got["video"]] == [m.payload[5:] for m in media(messages, MSG_VIDEO)]
        assert decoded(store / path)["video"] == len(got["video"])
        assert got["video"][0][1] == 0     # each file has its own time 0


def test_a_full_queue_drops_counted_samples_and_the_file_stays_valid(tmp_path: Path) -> None:
    messages = flv_messages(fixture_path("title_180p.mp4"), tmp_path)
    key_frames = [m for m in media(messages, MSG_VIDEO) if classify_media(m)[0]]
    limit = min(len(m.payload) for m in key_frames) - 100       # no key frame fits: video waits, audio goes on
    recordings = Recordings()
    recorder = Recorder(tmp_path / "store", on_recorded=recordings, max_queue_bytes=limit)
    recorder.on_publish("rec/test")
    t0 = time.perf_counter()
    feed(recorder, "rec/test", messages)
    fed = time.perf_counter() - t0
    recorder.on_unpublish("rec/test")
    recorder.close()
    ((path, info),) = recordings.done
    total = {kind: len(media(messages, t)) for kind, t in (("video", MSG_VIDEO), ("audio", MSG_AUDIO))}
    recorded = info["samples"]
    assert recorded["video"] == 0 and recorded["audio"] > 0
    assert recorder.dropped == info["dropped"] == total["video"] + total["audio"] - recorded["audio"]
    got = packets_ms(tmp_path / "store" / path)
    assert got["video"] == [] and len(got["audio"]) == recorded["audio"]
    assert decoded(tmp_path / "store" / path)["audio"] == recorded["audio"]
    print(f"\n{len(messages)} messages fed in {fed * 1000:.1f} ms with {recorder.dropped} dropped")


def test_apps_not_enabled_are_not_recorded_and_bad_messages_are_counted(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "store", enabled=lambda app: app == "rec")
    recorder.on_publish("live/test")
    recorder.on_publish("rec/test")
    feed(recorder, "live/test", [Message(6, 0, MSG_VIDEO, 1, b"\x17\x00")])
    assert recorder.errors == 0                             # not recorded: not even parsed
    feed(recorder, "rec/test", [Message(6, 0, MSG_VIDEO, 1, b"\x17\x00")])
    assert recorder.errors == 1                             # malformed: counted, the stream goes on
    recorder.on_unpublish("rec/test")
    recorder.close()
    assert recorder.stats()["files_started"] == 0 and not (tmp_path / "store" / RECORDING_DIR).exists()


# ------------------------------------------------------------------------------------------------ registration
def test_register_recording_adds_one_entry_per_file(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "recordings" / "rec").mkdir(parents=True)
    path = "recordings/rec/test-20250101T000000Z.mp4"
    shutil.copyfile(fixture_path("title_180p.mp4"), store / path)
    directory = catalog_dir(store)
    assert register_recording(directory, 101, path, {}) is None        # no such partner: nothing written
    write_partner(directory, Partner(101, "Acme", new_secret(), {}))
    entry = register_recording(directory, 101, path, {})
    assert entry is not None and entry.paths == (path,) and entry.name == "test-20250101T000000Z"
    assert register_recording(directory, 101, path, {}) == entry      # idempotent
    other = register_recording(directory, 101, "recordings/rec/test-20250101T000001Z.mp4", {})
    assert other is not None and other.id != entry.id
    view = Catalog(store, ttl=0).view()
    assert view.entry(entry.id, 101).paths == (path,) and view.entries_for_path(path) == (entry,)


async def test_ingest_records_registers_and_play_manifest_serves_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    write_partner(catalog_dir(store), Partner(101, "Acme", new_secret(), {}))
    config = RtmpConfig(applications={"rec": ApplicationConfig(live=False, record=True, partner_id=101)},
                        default=ApplicationConfig(live=False))
    settings = Settings(store=store, catalog_ttl=0)
    ingest = await start_ingest(settings, config, "127.0.0.1", 0)
    try:
        code, err = await exited(publish(ingest.port, fixture_path("title_180p.mp4")))
        assert code == 0, err
        catalog = Catalog(store, ttl=0)
        deadline = time.monotonic() + 30
        while not (entries := catalog.view().entries(101)):
            assert time.monotonic() < deadline, "no entry registered"
            await asyncio.sleep(0.05)
    finally:
        await ingest.close()
    (entry,) = entries
    (flavor_path,) = entry.paths
    assert flavor_path.startswith("recordings/rec/") and (store / flavor_path).is_file()
    client = TestClient(TestServer(make_app(settings)))
    await client.start_server()
    try:
        response = await client.get(f"/p/101/playManifest/entryId/{entry.id}/format/applehttp/a.m3u8",
                                    allow_redirects=False)
        assert response.status == 302, await response.text()
        location = response.headers["Location"]
        assert flavor_path in location
        response = await client.get(location[location.index("/hls/"):] if "://" in location else location)
        assert response.status == 200 and "#EXT-X-STREAM-INF" in await response.text()
    finally:
        await client.close()
