"""The RTMP control API (gateway/http/rtmp_control.py) of a real `gateway serve` process (token from its config
file), with the ffmpeg CLI publishing and scripted RTMP players on real sockets: the token, the stream list against
what ffmpeg reports sending, dropping a publisher (its players get UnpublishNotify) and a player, recording on demand
into an MP4 that PyAV decodes, redirecting a player, and nginx-rtmp's /control/ paths."""
from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import aiohttp
import av
import pytest

from fixtures.generate import fixture_path
from packagers.codecs import amf0
from rtmp.messages import MSG_COMMAND_AMF0, MSG_DATA_AMF0, MSG_VIDEO
from tests.e2e.conftest import free_port
from tests.needs import needs_executable
from tests.rtmp.test_server_ffmpeg import RawClient

from .processes import Gateway

pytestmark = needs_executable("ffmpeg")

TOKEN = "control-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    d = tmp_path_factory.mktemp("control")
    (d / "store").mkdir()
    rtmp_port = free_port()
    conf = d / "gateway.toml"
    conf.write_text(f'store = "{d / "store"}"\nrtmp_port = {rtmp_port}\nrtmp_control_token = "{TOKEN}"\n'
                    '[rtmp.default]\nlive = false\n')
    gw = Gateway(d / "gateway.log", "--config", str(conf))
    gw.rtmp_port, gw.store = rtmp_port, d / "store"
    yield gw
    gw.close()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http, gateway, path: str, method: str = "GET", headers=AUTH) -> tuple[int, str]:
    async with http.request(method, gateway.base + path, headers=headers) as r:
        return r.status, await r.text()


async def api(http, gateway, path: str, method: str = "GET") -> dict:
    async with http.request(method, gateway.base + path, headers=AUTH) as r:
        assert r.status == 200, (path, r.status, await r.text())
        return await r.json()


def publish(gateway, name: str, source: str = "title_180p.mp4", progress: Path | None = None) -> subprocess.Popen:
    extra = ["-progress", str(progress), "-stats_period", "0.1"] if progress else []
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
                             "-i", str(fixture_path(source)), "-c", "copy", *extra, "-f", "flv",
                             f"rtmp://127.0.0.1:{gateway.rtmp_port}/live/{name}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)
    return proc.returncode


async def published(http, gateway, key: str) -> dict:
    """Wait until ``key`` is listed with its codecs known; its entry."""
    deadline = time.monotonic() + 20
    while True:
        st = (await api(http, gateway, "/rtmp/streams"))["streams"].get(key)
        if st is not None and st["publishing"] and st["video_codec"]:
            return st
        assert time.monotonic() < deadline, f"{key} never published"
        await asyncio.sleep(0.1)


async def player(gateway, name: str) -> RawClient:
    c = await RawClient.connect(gateway.rtmp_port)
    c.w.write(c.c.connect("live") + c.c.command("createStream") + c.c.command("play", name, -2000.0, stream_id=1))
    while (await c.wait_status(timeout=10))["code"] != "NetStream.Play.Start":
        pass
    return c


async def until_status(c: RawClient, code: str, timeout: float = 15) -> list:
    """Messages until an onStatus with ``code`` (returned, that status last)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        m = await c.next_message(timeout=max(0.1, deadline - time.monotonic()))
        seen.append(m)
        if m.message_type_id == MSG_COMMAND_AMF0:
            values = amf0.decode_all(m.payload)
            if values[0] == "onStatus" and values[3]["code"] == code:
                return seen


async def closed(c: RawClient, timeout: float = 15) -> None:
    """Read until the server closes ``c``; fail if it has not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with pytest.raises(EOFError):
        while True:
            assert time.monotonic() < deadline, "the connection was not closed"
            await c.next_message(timeout=max(0.1, deadline - time.monotonic()))


def client_id(clients: list[dict], role: str, stream: str) -> int:
    (c,) = [c for c in clients if c["role"] == role and c["stream"] == stream]
    return c["client_id"]


def ids_of(clients: list[dict], viewers: list[RawClient]) -> list[int]:
    """The client ids of these players' connections (matched by their ports)."""
    by_peer = {c["peer"]: c["client_id"] for c in clients}
    return [by_peer[f"127.0.0.1:{v.w.get_extra_info('sockname')[1]}"] for v in viewers]


# ------------------------------------------------------------------------------------------------ token

async def test_token_is_required_and_the_api_is_off_without_one(gateway, http, tmp_path):
    for path, method in (("/rtmp/streams", "GET"), ("/rtmp/clients/1/drop", "POST"),
                         ("/control/drop/publisher?app=live&name=x", "GET")):
        status, _ = await call(http, gateway, path, method, headers={})
        assert status == 401, path
        status, _ = await call(http, gateway, path, method, headers={"Authorization": "Bearer wrong-token"})
        assert status == 403, path
    async with http.get(gateway.base + "/rtmp/streams", params={"token": TOKEN}) as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    (tmp_path / "store").mkdir()
    off = Gateway(tmp_path / "off.log", "--store", str(tmp_path / "store"), "--rtmp-port", str(free_port()))
    try:
        status, _ = await call(http, off, "/rtmp/streams")
        assert status == 404
        status, _ = await call(http, off, "/control/drop/publisher?app=live&name=x")
        assert status == 404
    finally:
        off.close()


# ------------------------------------------------------------------------------------------------ list

async def test_list_shows_the_ffmpeg_publisher_with_its_codecs_and_bitrate(gateway, http, tmp_path):
    progress = tmp_path / "progress.txt"
    # a constant-bitrate encode (x264 nal-hrd=cbr) of a live source: a steady rate to compare with
    pub = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i",
         "testsrc=size=320x180:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "30",
         "-c:v", "libx264", "-preset", "ultrafast", "-x264-params", "nal-hrd=cbr", "-b:v", "400k", "-minrate", "400k",
         "-maxrate", "400k", "-bufsize", "100k", "-g", "25", "-c:a", "aac", "-b:a", "64k",
         "-progress", str(progress), "-stats_period", "0.1", "-f", "flv",
         f"rtmp://127.0.0.1:{gateway.rtmp_port}/live/listed"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await published(http, gateway, "live/listed")
        await asyncio.sleep(7)          # past the start, then a full rate window (5 s)
        st = (await api(http, gateway, "/rtmp/streams"))["streams"]["live/listed"]
        clients = (await api(http, gateway, "/rtmp/clients"))["clients"]
        text = progress.read_text()
    finally:
        stop(pub)
    # what ffmpeg wrote over its last 5 s of media, from its own -progress reports (bit/s)
    reports = [(int(t[12:]), int(s[11:])) for t, s in zip(
        [line for line in text.splitlines() if line.startswith("out_time_us=")],
        [line for line in text.splitlines() if line.startswith("total_size=")])]
    end_time, end_size = reports[-1]
    start_time, start_size = next(r for r in reversed(reports) if r[0] <= end_time - 5_000_000)
    sent = (end_size - start_size) * 8 / ((end_time - start_time) / 1e6)
    print(f"\ncontrol API bitrate {st['bitrate']} bit/s, ffmpeg sent {sent:.0f} bit/s")
    assert (st["video_codec"], st["audio_codec"]) == ("avc", "aac")
    assert (st["width"], st["height"]) == (320, 180) and st["uptime"] > 5
    assert st["bitrate"] == pytest.approx(sent, rel=0.15)
    publisher = st["publisher"]
    assert (publisher["role"], publisher["addr"], publisher["stream"]) == ("publisher", "127.0.0.1", "live/listed")
    assert publisher["client_id"] == st["publisher_id"] == client_id(clients, "publisher", "live/listed")
    assert publisher["flashver"].startswith("FMLE/3.0")


# ------------------------------------------------------------------------------------------------ drop

async def test_drop_publisher_closes_it_and_players_get_unpublish_notify(gateway, http):
    pub = publish(gateway, "dropme")
    viewers = []
    try:
        await published(http, gateway, "live/dropme")
        viewers = [await player(gateway, "dropme") for _ in range(2)]
        clients = (await api(http, gateway, "/rtmp/clients"))["clients"]
        gone = ids_of(clients, viewers)[1]
        assert await api(http, gateway, f"/rtmp/clients/{gone}/drop", "POST") == {"dropped": 1}
        await closed(viewers[1])        # that player's connection is closed ...
        assert await api(http, gateway, "/rtmp/streams/live/dropme/drop", "POST") == {"dropped": 1}
        await until_status(viewers[0], "NetStream.Play.UnpublishNotify")   # ... the other one is told
        code = await asyncio.wait_for(asyncio.to_thread(pub.wait), 20)     # ffmpeg lost its connection
        assert code != 0
        assert "live/dropme" not in (await api(http, gateway, "/rtmp/streams"))["streams"] or \
            not (await api(http, gateway, "/rtmp/streams"))["streams"]["live/dropme"]["publishing"]
    finally:
        stop(pub)
        for v in viewers:
            v.close()


# ------------------------------------------------------------------------------------------------ record

async def test_record_start_stop_makes_a_playable_mp4(gateway, http):
    pub = publish(gateway, "rec")
    watcher = None
    try:
        await published(http, gateway, "live/rec")
        watcher = await player(gateway, "rec")      # sees the publisher's timestamps as the server gets them
        seen: list[int] = []

        async def watch() -> None:
            while True:
                m = await watcher.next_message(timeout=10)
                if m.message_type_id == MSG_VIDEO:
                    seen.append(m.timestamp)

        task = asyncio.create_task(watch())
        body = await api(http, gateway, "/rtmp/streams/live/rec/record/start", "POST")
        await asyncio.sleep(0.1)    # the player's copy of what the server has (relay batches: 20 ms)
        first = seen[-1]            # start answers once the first key frame has opened the file
        assert body["recording"] and body["path"].startswith("recordings/live/rec-") and body["path"].endswith(".mp4")
        await asyncio.sleep(4)
        stopped = await api(http, gateway, "/rtmp/streams/live/rec/record/stop", "POST")
        await asyncio.sleep(0.1)
        window = (seen[-1] - first) / 1000
        task.cancel()
    finally:
        stop(pub)
        if watcher is not None:
            watcher.close()
    assert stopped["path"] == body["path"] and not stopped["recording"]
    with av.open(str(gateway.store / stopped["path"])) as f:
        stream = f.streams.video[0]
        frames = sum(1 for _ in f.decode(stream))
        duration = float(stream.duration * stream.time_base)
    print(f"\nrecorded {frames} frames, {duration:.2f} s; the server got {window:.2f} s of video from start to stop")
    assert abs(frames - duration * 24) <= 2                  # 24 fps: every frame of the file decodes
    assert abs(duration - window) <= 0.25                    # what came in between start and stop, all of it
    async with http.get(f"{gateway.base}/hls/{stopped['path']}/master.m3u8") as r:
        assert r.status == 200 and "#EXTM3U" in await r.text()     # a VOD entry like any store file


# ------------------------------------------------------------------------------------------------ redirect

async def test_redirect_a_player_to_another_stream(gateway, http):
    small, big = publish(gateway, "small", "title_180p.mp4"), publish(gateway, "big", "title_360p.mp4")
    viewer = None
    try:
        await published(http, gateway, "live/small")
        await published(http, gateway, "live/big")
        viewer = await player(gateway, "small")
        clients = (await api(http, gateway, "/rtmp/clients"))["clients"]
        cid = client_id(clients, "player", "live/small")
        assert await api(http, gateway, f"/rtmp/clients/{cid}/redirect?name=big", "POST") == {"redirected": 1}
        after = await until_status(viewer, "NetStream.Play.Start")
        meta, video = None, 0
        while meta is None or video < 10:
            m = await viewer.next_message(timeout=10)
            if m.message_type_id == MSG_DATA_AMF0:
                meta = amf0.decode_all(m.payload)[1]
            video += m.message_type_id == MSG_VIDEO
        assert (meta["width"], meta["height"]) == (640, 360)     # the other stream's
        assert "big" in amf0.decode_all(after[-1].payload)[3]["description"]
        streams = (await api(http, gateway, "/rtmp/streams"))["streams"]
        assert [p["client_id"] for p in streams["live/big"]["players"]] == [cid]
        assert streams["live/small"]["players"] == []
    finally:
        for p in (small, big):
            stop(p)
        if viewer is not None:
            viewer.close()


# ------------------------------------------------------------------------------------------------ nginx-rtmp

async def test_nginx_rtmp_control_paths(gateway, http):
    pub = publish(gateway, "ng")
    viewers = []
    try:
        await published(http, gateway, "live/ng")
        viewers = [await player(gateway, "ng") for _ in range(2)]
        assert await call(http, gateway, "/control/drop/publisher?app=live&name=nosuch") == (200, "0")
        assert await call(http, gateway, "/control/redirect/subscriber?app=live&name=ng") == \
            (500, "newname not specified")
        status, path = await call(http, gateway, "/control/record/start?app=live&name=ng")
        assert status == 200 and path.startswith(str(gateway.store / "recordings" / "live" / "ng-"))
        await asyncio.sleep(2)
        assert await call(http, gateway, "/control/record/stop?app=live&name=ng") == (200, path)
        assert Path(path).is_file()
        assert (await call(http, gateway, "/control/record/stop?app=live&name=ng"))[0] == 204  # nothing recording
        ids = ids_of((await api(http, gateway, "/rtmp/clients"))["clients"], viewers)
        assert await call(http, gateway, f"/control/redirect/subscriber?app=live&name=ng&newname=other"
                                         f"&clientid={ids[0]}") == (200, "1")
        await until_status(viewers[0], "NetStream.Play.StreamNotFound")      # nobody publishes live/other
        assert await call(http, gateway, f"/control/drop/client?app=live&name=ng&addr=127.0.0.1"
                                         f"&clientid={ids[1]}") == (200, "1")
        await closed(viewers[1])
        assert await call(http, gateway, "/control/drop/publisher?app=live&name=ng") == (200, "1")
        assert await asyncio.wait_for(asyncio.to_thread(pub.wait), 20) != 0
    finally:
        stop(pub)
        for v in viewers:
            v.close()
