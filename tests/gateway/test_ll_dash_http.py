"""Low-latency DASH over HTTP (issue 15 item 1): a DASH segment still being written is answered at once with chunked
transfer coding, its chunks sent as the live packager writes them, against the real app on a loopback port with the
real writer (rtmp.live) producing title_360p on its own thread at twice real time.

What shows the streaming: the first bytes of the answer arrive while the segment file does not exist yet, and the
whole body equals the segment file once written (decoded by PyAV after its init segment). A segment written otherwise
than it was streamed is never spliced: the connection is cut before the final chunk."""
from __future__ import annotations

import asyncio
import io
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import av
import pytest

from rtmp.live import LiveStreamWriter
from rtmp.live.segmenter import Part
from tests.gateway.test_ll_hls_http import TID, Producer, until, waits_of
from tests.needs import needs_executable
from tests.rtmp.test_ll_dash import live_events

PART_MS = 500
NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


class PacedWriter:
    """The live writer fed title_360p's parts and segments on a thread, a part every ``PART_MS / 2`` (``pace``: the
    share of real time)."""

    def __init__(self, directory: Path, tmp: Path, pace: float = 0.5):
        self.pace = pace
        self.writer = LiveStreamWriter(directory, target_ms=1000, window=100, part_ms=PART_MS)
        self.events = live_events(tmp)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for e in self.events:
            if self.stop.is_set():
                return
            if isinstance(e, Part):
                self.writer.add_part(e)
                self.stop.wait(PART_MS / 1000 * self.pace)
            else:
                self.writer.add(e)
        self.writer.end()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def in_progress(directory: Path) -> tuple[str, str] | None:
    """(init, name) of the video segment the MPD lists last when only its chunks exist yet."""
    try:
        mpd = ET.fromstring((directory / "manifest.mpd").read_text())
    except (FileNotFoundError, ET.ParseError):
        return None
    template = mpd.find("d:Period/d:AdaptationSet[@contentType='video']/d:Representation/d:SegmentTemplate", NS)
    t = 0
    for s in template.findall("d:SegmentTimeline/d:S", NS):
        t = int(s.get("t", t)) + int(s.get("d")) * int(s.get("r", 0))
        last, t = t, t + int(s.get("d"))
    name = template.get("media").replace("$Time$", str(last))
    if (directory / name).exists():
        return None
    return template.get("initialization"), name


async def test_a_segment_in_progress_streams_its_chunks_as_they_are_written(make_client, store, tmp_path):
    client = await make_client()
    directory = store / "live" / "ll" / "cam"
    seen = []
    with PacedWriter(directory, tmp_path):
        for _ in range(3):      # three segments in a row, each asked for while in progress
            found = None

            def announced():
                nonlocal found
                found = in_progress(directory)
                return found is not None and found[1] not in seen
            await until(announced, "the MPD announces a segment in progress")
            init, name = found
            seen.append(name)
            r = await client.get(f"/live/ll/cam/{name}")
            assert r.status == 200 and r.headers["Transfer-Encoding"] == "chunked"
            assert r.headers["Content-Type"] == "video/mp4" and r.headers["X-Accel-Buffering"] == "no"
            first = await r.content.readany()
            assert first and not (directory / name).exists()    # bytes before the segment is complete
            body = first + await r.content.read()
            assert body == (directory / name).read_bytes()
            with av.open(io.BytesIO((directory / init).read_bytes() + body)) as c:
                assert sum(1 for _ in c.decode(video=0)) >= 10
    assert len(set(seen)) == 3


async def test_absent_dash_segments_are_404_and_head_sends_no_body(make_client, store, tmp_path):
    client = await make_client()
    directory = store / "live" / "ll" / "cam"
    with PacedWriter(directory, tmp_path):
        await until(lambda: in_progress(directory) is not None, "a segment in progress")
        _, name = in_progress(directory)
        r = await client.head(f"/live/ll/cam/{name}")
        assert r.status == 200 and await r.read() == b""
        tid, period, kind, _ = name[: -len(".m4s")].split("-")
        r = await client.get(f"/live/ll/cam/{tid}-{period}-{kind}-1.m4s")     # no such segment, no chunk
        assert r.status == 404


async def test_a_segment_written_otherwise_than_streamed_cuts_the_connection(make_client, store):
    client = await make_client()
    directory = store / "live" / "ll" / "cam"
    producer = Producer(directory).fill(2)      # an LL-HLS playlist the wait can follow
    name = f"{TID}-0-v-9000.m4s"
    (directory / f"{TID}-0-v-9000.0.m4s").write_bytes(b"chunk zero" * 10)
    r = await client.get(f"/live/ll/cam/{name}")
    assert r.status == 200
    assert await r.content.readany() == b"chunk zero" * 10
    (directory / name).write_bytes(b"something else entirely" * 10)
    producer.step()     # the playlist moves on: the request looks again
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(r.content.read(), 30)


async def test_the_rest_of_a_segment_comes_from_its_file_when_its_chunks_are_gone(make_client, store):
    client = await make_client()
    directory = store / "live" / "ll" / "cam"
    producer = Producer(directory).fill(2)
    name = f"{TID}-0-v-9000.m4s"
    (directory / f"{TID}-0-v-9000.0.m4s").write_bytes(b"chunk zero" * 10)
    r = await client.get(f"/live/ll/cam/{name}")
    assert await r.content.readany() == b"chunk zero" * 10
    (directory / name).write_bytes(b"chunk zero" * 10 + b"chunk one" * 10)
    producer.step()
    assert await asyncio.wait_for(r.content.read(), 30) == b"chunk one" * 10


@needs_executable("nginx")
def test_players_behind_nginx_each_get_the_segment_in_progress_as_it_is_written(tmp_path):
    """Two real nodes behind the rendered nginx configuration, the real writer producing: three players asking for
    the segment in progress at once each get its first bytes before the segment is complete (the cache lock holds
    the others only until the first answer's headers say it is not stored), all the same bytes; the complete
    segment is then cached."""
    from tests.nginx.conftest import Nginx, Node, Pool, nginx_config
    store = tmp_path / "store"
    directory = store / "live" / "ll" / "cam"
    directory.mkdir(parents=True)
    nodes = [Node(f"lld-node{i}", store, tmp_path) for i in range(2)]
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    lb = Nginx(prefix, nginx_config(prefix, Pool(nodes, store), cache=True))

    def first_bytes_then_rest(url: str) -> tuple[bool, bytes]:
        with urllib.request.urlopen(url, timeout=30) as r:
            first = r.read1(65536)
            early = not (directory / name).exists()
            return early, first + r.read()

    try:
        for node in nodes:
            node.start()
        lb.start()
        with PacedWriter(directory, tmp_path, pace=1.0):   # (a 1-s segment is in progress for 0.5 s of it)
            deadline = time.monotonic() + 30
            while (found := in_progress(directory)) is None:
                assert time.monotonic() < deadline, "no segment in progress"
                time.sleep(0.01)
            _, name = found
            with ThreadPoolExecutor(3) as pool:
                answers = list(pool.map(first_bytes_then_rest, [f"{lb.base}/live/ll/cam/{name}"] * 3))
            assert all(early for early, _ in answers), "a player waited for the segment to be complete"
            assert {body for _, body in answers} == {(directory / name).read_bytes()}
            again = [urllib.request.urlopen(f"{lb.base}/live/ll/cam/{name}", timeout=30) for _ in range(2)]
            assert [r.headers.get("X-Cache-Status") for r in again][-1] == "HIT"
    finally:
        lb.stop()
        for node in nodes:
            node.stop()


async def test_a_segment_that_never_completes_on_an_ended_stream_is_cut_not_spun(make_client, store):
    """Chunks of a segment whose stream ended without writing it (the packager died): the answer ends (cut) at
    once instead of looking again and again."""
    client = await make_client()
    directory = store / "live" / "ll" / "cam"
    producer = Producer(directory).fill(2)
    producer.end()
    (directory / f"{TID}-0-v-9000.0.m4s").write_bytes(b"chunk zero" * 10)
    r = await client.get(f"/live/ll/cam/{TID}-0-v-9000.m4s")
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(r.content.read(), 10)
    assert waits_of(client).stats()["polls"] == 0       # it never waited for a playlist that cannot change
