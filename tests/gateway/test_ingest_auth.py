"""RTMP publish/play authorization (gateway/ingest/auth.py) through the real ingest (gateway.ingest.service.start_ingest):
the ffmpeg CLI publishes with good, bad, expired and missing stream keys; a real aiohttp server plays the
on_publish/on_play callback (200, 403, too slow, gone); refused clients never disturb a running publisher."""
from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from pathlib import Path

import av
import pytest
from aiohttp import web

from delivery_profiles.tokens import new_secret
from gateway.catalog.catalog import Partner, catalog_dir, write_partner
from gateway.runtime.cli import main as gateway_main
from gateway.ingest.service import start_ingest
from gateway.ingest.auth import IngestAuth, play_key, publish_key, query_args
from gateway.settings import Settings
from rtmp.config import ApplicationConfig, RtmpConfig
from rtmp.messages import MSG_VIDEO
from rtmp.server import RtmpServer
from tests.needs import needs_executable
from tests.rtmp.test_server_ffmpeg import RawClient, wait_until
from tests.rtmp.test_session import AVC_KEY, AVC_SEQ

pytestmark = needs_executable("ffmpeg")

PARTNER = 7


@pytest.fixture
def secret(tmp_path: Path) -> str:
    (tmp_path / "store").mkdir()
    s = new_secret()
    write_partner(catalog_dir(tmp_path / "store"), Partner(PARTNER, "Seven", s, {}))
    return s


class Callback:
    """A real HTTP auth service: answers by stream name (``ok*`` 200, ``slow*`` after 3 s, else 403)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.calls.append({k: form.getall(k) if len(form.getall(k)) > 1 else form[k] for k in form})
        name = form.get("name", "")
        if name.startswith("slow"):
            await asyncio.sleep(3)
        return web.Response(status=200 if name.startswith(("ok", "slow")) else 403, text="")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/auth", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/auth"


@pytest.fixture
async def callback():
    cb = Callback()
    await cb.start()
    yield cb
    await cb.runner.cleanup()


@pytest.fixture
async def ingest(tmp_path: Path, secret: str, callback: Callback):
    config = RtmpConfig(applications={
        "live": ApplicationConfig(publish_auth="key", play_auth="key", partner_id=PARTNER),
        "cb": ApplicationConfig(publish_auth="callback", on_publish=callback.url,
                                play_auth="callback", on_play=callback.url),
        "open": ApplicationConfig(),
    })
    ing = await start_ingest(Settings(store=tmp_path / "store"), config, "127.0.0.1", 0)
    yield ing
    await ing.close()


def ffmpeg_publish(url: str, seconds: float = 2.0) -> subprocess.Popen:
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i",
         "testsrc=size=160x90:rate=15", "-t", str(seconds), "-c:v", "libx264", "-g", "15", "-f", "flv", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str]:
    """Wait for ffmpeg without blocking the loop that runs the server."""
    _, err = await asyncio.wait_for(asyncio.to_thread(proc.communicate), timeout)
    return proc.returncode, err.decode(errors="replace")


async def raw_play(port: int, app: str, name: str) -> tuple[RawClient, dict]:
    c = await RawClient.connect(port)
    c.w.write(c.c.connect(app) + c.c.command("createStream") + c.c.command("play", name, -2000.0, stream_id=1))
    status = await c.wait_status()
    if status["code"] == "NetStream.Play.Reset":
        status = await c.wait_status()
    return c, status


async def closed_by_server(c: RawClient) -> bool:
    try:
        while True:
            await c.next_message(timeout=5)
    except EOFError:
        return True


def refusals(caplog, action: str, key: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rtmp.server" and f"{action} {key} refused" in
            r.getMessage()]


# ------------------------------------------------------------------------------------------------ unit

def test_query_args_and_keys_are_distinct(secret):
    assert query_args("cam?key=a%2Bb&x=&x=2") == [("key", "a+b"), ("x", ""), ("x", "2")]
    assert query_args("cam") == []
    exp = int(time.time()) + 60
    assert publish_key(secret, "live/a", exp) != play_key(secret, "live/a", exp)


def test_stream_key_command_prints_a_working_url(tmp_path, secret, capsys):
    assert gateway_main(["stream-key", "--store", str(tmp_path / "store"), str(PARTNER), "live/cam1",
                         "--base-url", "rtmp://ingest.example.com:1935", "--ttl", "600"]) == 0
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines()[1:])
    assert rows["server"] == "rtmp://ingest.example.com:1935/live"
    assert rows["url"] == rows["server"] + "/" + rows["stream_key"]
    key = rows["stream_key"].split("?key=")[1]
    expires = int(key.split("-")[0])
    assert abs(expires - (time.time() + 600)) < 5
    assert key == publish_key(secret, "live/cam1", expires)
    assert gateway_main(["stream-key", "--store", str(tmp_path / "store"), "99", "live/cam1"]) == 1
    assert gateway_main(["stream-key", "--store", str(tmp_path / "store"), str(PARTNER), "nostream"]) == 2


# ------------------------------------------------------------------------------------------------ stream keys

class CountingTap:
    """Counts what the relay accepted per stream (a tap sees every message, so no polling window can miss it)."""

    def __init__(self) -> None:
        self.messages: dict[str, int] = {}

    def on_publish(self, key: str) -> None:
        self.messages.setdefault(key, 0)

    def on_message(self, key: str, message, *, keyframe: bool, sequence_header: bool) -> None:
        self.messages[key] = self.messages.get(key, 0) + 1

    def on_unpublish(self, key: str) -> None:
        pass


async def test_ffmpeg_publish_with_good_key_is_published(ingest, secret):
    tap = CountingTap()
    ingest.relay.add_tap(tap)
    key = publish_key(secret, "live/test", int(time.time()) + 60)
    code, err = await finish(ffmpeg_publish(f"rtmp://127.0.0.1:{ingest.port}/live/test?key={key}"))
    assert code == 0, err
    assert tap.messages.get("live/test", 0) > 10, tap.messages     # 2 s at 15 fps, all accepted
    assert ingest.server.stats()["refused"] == 0


@pytest.mark.parametrize("which", ["bad", "expired", "missing", "other_stream", "play_key"])
async def test_ffmpeg_publish_with_wrong_key_fails_badname(ingest, secret, caplog, which):
    caplog.set_level(logging.INFO, logger="rtmp.server")
    exp = int(time.time()) + 60
    key = {"bad": publish_key(new_secret(), "live/test", exp),
           "expired": publish_key(secret, "live/test", int(time.time()) - 5),
           "missing": None,
           "other_stream": publish_key(secret, "live/other", exp),
           "play_key": play_key(secret, "live/test", exp)}[which]
    url = f"rtmp://127.0.0.1:{ingest.port}/live/test" + (f"?key={key}" if key else "")
    code, err = await finish(ffmpeg_publish(url))
    assert code != 0
    reason = {"expired": "bad stream key: expired", "missing": "missing stream key"}.get(which,
                                                                                       "bad stream key: bad signature")
    assert reason in err      # ffmpeg prints the onStatus description of an error-level status
    (line,) = refusals(caplog, "publish", "live/test")
    assert "(NetStream.Publish.BadName)" in line and reason in line
    assert "live/test" not in ingest.relay.stats()
    await wait_until(lambda: ingest.server.stats()["connections"] == 0, 5, "the refused connection to close")
    assert ingest.server.stats()["refused"] == 1


async def test_play_key(ingest, secret, caplog):
    caplog.set_level(logging.INFO, logger="rtmp.server")
    exp = int(time.time()) + 60
    pub = await RawClient.connect(ingest.port)
    pub.w.write(pub.c.connect("live") + pub.c.command("createStream")
                + pub.c.command("publish", f"test?key={publish_key(secret, 'live/test', exp)}", "live", stream_id=1))
    assert (await pub.wait_status())["code"] == "NetStream.Publish.Start"
    pub.w.write(pub.c.media(MSG_VIDEO, 0, AVC_SEQ) + pub.c.media(MSG_VIDEO, 0, AVC_KEY))

    for name in ("test", f"test?key={publish_key(secret, 'live/test', exp)}",
                 f"test?key={play_key(secret, 'live/test', int(time.time()) - 1)}"):
        bad, status = await raw_play(ingest.port, "live", name)
        assert status["code"] == "NetStream.Play.Failed" and status["level"] == "error"
        assert await closed_by_server(bad)
    assert len(refusals(caplog, "play", "live/test")) == 3

    good, status = await raw_play(ingest.port, "live", f"test?key={play_key(secret, 'live/test', exp)}")
    assert status["code"] == "NetStream.Play.Start"
    videos = []
    while len(videos) < 2:
        m = await good.next_message()
        if m.message_type_id == MSG_VIDEO:
            videos.append(m.payload)
    assert videos == [AVC_SEQ, AVC_KEY]
    for c in (pub, good):
        c.close()


async def test_pyav_player_with_play_key_decodes_and_without_is_refused(ingest, secret, caplog):
    """ffmpeg's own RTMP client (PyAV) as the player: the play key in the URL's query reaches the server."""
    caplog.set_level(logging.INFO, logger="rtmp.server")
    exp = int(time.time()) + 60
    pub = ffmpeg_publish(f"rtmp://127.0.0.1:{ingest.port}/live/test?key={publish_key(secret, 'live/test', exp)}", 5)

    def play(key: str) -> int:
        frames = 0
        with av.open(f"rtmp://127.0.0.1:{ingest.port}/live/test?key={key}", options={"rw_timeout": "5000000"},
                     timeout=10) as c:
            for packet in c.demux(video=0):
                frames += len(packet.decode())
                if frames >= 10:
                    return frames
        return frames

    try:
        await wait_until(lambda: ingest.relay.is_published("live/test"), 20, "the keyed publisher")
        assert await asyncio.wait_for(asyncio.to_thread(play, play_key(secret, "live/test", exp)), 30) >= 10
        with pytest.raises(av.error.FFmpegError):
            await asyncio.wait_for(asyncio.to_thread(play, publish_key(secret, "live/test", exp)), 30)
    finally:
        code, err = await finish(pub)
    assert code == 0, err
    (line,) = refusals(caplog, "play", "live/test")
    assert "(NetStream.Play.Failed): bad stream key: bad signature" in line


# ------------------------------------------------------------------------------------------------ callbacks

async def test_callback_allows_on_200_refuses_on_403_with_nginx_fields(ingest, callback, caplog):
    caplog.set_level(logging.INFO, logger="rtmp.server")
    code, err = await finish(ffmpeg_publish(f"rtmp://127.0.0.1:{ingest.port}/cb/ok1?token=abc&x=1", 1.5))
    assert code == 0, err
    code, err = await finish(ffmpeg_publish(f"rtmp://127.0.0.1:{ingest.port}/cb/no1?token=zzz"))
    assert code != 0 and "on_publish answered 403" in err
    assert refusals(caplog, "publish", "cb/no1")
    ok, no = callback.calls
    assert ok == {"call": "publish", "app": "cb", "name": "ok1", "addr": "127.0.0.1", "type": "live",
                  "token": "abc", "x": "1"}
    assert no["name"] == "no1" and no["token"] == "zzz"


async def test_play_callback_and_refused_clients_never_disturb_the_publisher(ingest, callback, secret, caplog):
    caplog.set_level(logging.INFO, logger="rtmp.server")
    pub = ffmpeg_publish(f"rtmp://127.0.0.1:{ingest.port}/cb/ok2", 6)
    try:
        await wait_until(lambda: ingest.relay.is_published("cb/ok2"), 20, "the publisher")
        player, status = await raw_play(ingest.port, "cb", "ok2?ticket=t1")
        assert status["code"] == "NetStream.Play.Start"
        # while it plays: refused publishers (same key, other keys, other apps) and refused players come and go
        before = ingest.relay.stats()["cb/ok2"]["messages_in"]
        attempts = [ffmpeg_publish(f"rtmp://127.0.0.1:{ingest.port}/cb/ok2", 1),      # allowed, but busy
                    ffmpeg_publish(f"rtmp://127.0.0.1:{ingest.port}/cb/no2", 1),      # callback says 403
                    ffmpeg_publish(f"rtmp://127.0.0.1:{ingest.port}/live/ok2?key=nope", 1)]
        refused_player, status = await raw_play(ingest.port, "cb", "no-such-viewer")
        assert status["code"] == "NetStream.Play.Failed"
        results = [await finish(p) for p in attempts]
        assert [code != 0 for code, _ in results] == [True, True, True], results
        received = 0
        while received < 30:
            m = await player.next_message()
            received += m.message_type_id == MSG_VIDEO
        assert ingest.relay.stats()["cb/ok2"]["messages_in"] > before + 30
        assert ingest.relay.stats()["cb/ok2"]["publishing"]
    finally:
        code, err = await finish(pub)
    assert code == 0, err
    play_calls = [c for c in callback.calls if c["call"] == "play"]
    assert play_calls[0] == {"call": "play", "app": "cb", "name": "ok2", "addr": "127.0.0.1", "start": "-2000",
                             "ticket": "t1"}
    player.close()
    refused_player.close()


async def test_slow_or_unreachable_callback_refuses(tmp_path, callback):
    """A callback that does not answer within the timeout, or cannot be reached, refuses (never lets in)."""
    dead = "http://127.0.0.1:9/auth"   # discard port: nothing listens
    config = RtmpConfig(applications={
        "cb": ApplicationConfig(publish_auth="callback", on_publish=callback.url),
        "dead": ApplicationConfig(publish_auth="callback", on_publish=dead)})
    auth = IngestAuth(config, None, callback_timeout=0.5)
    server = RtmpServer(authorize=auth)
    await server.start("127.0.0.1", 0)
    try:
        for app, name, reason in (("cb", "slow1", "on_publish did not answer within 0.5 s"),
                                  ("dead", "x", "on_publish failed: ClientConnectorError")):
            c = await RawClient.connect(server.port)
            c.w.write(c.c.connect(app) + c.c.command("createStream")
                      + c.c.command("publish", name, "live", stream_id=1))
            status = await c.wait_status()
            assert status["code"] == "NetStream.Publish.BadName" and reason in status["description"]
            assert await closed_by_server(c)
    finally:
        await server.close()
        await auth.close()
