"""nginx-rtmp's callbacks (gateway/ingest/notify.py through rtmp/server.py's Notify hook) on real parts: the ffmpeg
CLI publishes and plays through the real ingest (start_ingest), a real aiohttp server plays the CMS and records every
call with its fields; allow, deny, redirect (rename, another local stream, a remote rtmp:// URL), timeout, on_update
drops and the done calls. The last test runs the same publish + play against nginx-rtmp (libnginx-mod-rtmp) with
the same callback URLs and compares what both send."""
from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import time
from pathlib import Path

import av
import pytest
from aiohttp import web

from gateway.ingest.service import start_ingest
from gateway.settings import Settings
from rtmp.config import ApplicationConfig, ConfigError, RtmpConfig
from rtmp.messages import MSG_COMMAND_AMF0, MSG_VIDEO
from rtmp.server import RtmpServer
from packagers.codecs import amf0
from tests.needs import needs_executable
from tests.rtmp.nginx_rtmp import NGINX, RTMP_MODULE, NginxRtmp, skip_without_nginx
from tests.rtmp.test_server_ffmpeg import RawClient, wait_until
from tests.rtmp.test_session import AVC_KEY, AVC_SEQ

pytestmark = needs_executable("ffmpeg")

CALLS = ("connect", "publish", "play", "update", "publish_done", "play_done", "done", "record_done")


class Cms:
    """A real HTTP callback service: POST /<call> records the form (GET /<call>: the query, ``methods`` says which);
    ``answer(call, form)`` returns (status, location, delay) — 200 by default."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.methods: list[str] = []        # the HTTP method of each of ``calls``
        self.answer = lambda call, form: (200, None, 0.0)
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post() if request.method == "POST" else request.query
        fields = {k: form[k] for k in form}
        call = request.match_info["call"]
        self.calls.append((call, fields))
        self.methods.append(request.method)
        status, location, delay = self.answer(call, fields)
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, headers={"Location": location} if location else None)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{call}", self.handle)
        app.router.add_get("/{call}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def of(self, path: str, /, **match) -> list[dict]:
        return [f for c, f in self.calls if c == path and all(f.get(k) == v for k, v in match.items())]

    def urls(self) -> dict:
        return {f"on_{c}": f"{self.base}/{c}" for c in CALLS}


@pytest.fixture
async def cms():
    c = Cms()
    await c.start()
    yield c
    await c.runner.cleanup()


@pytest.fixture
async def ingest(tmp_path: Path, cms: Cms):
    (tmp_path / "store").mkdir()
    config = RtmpConfig(applications={
        "cb": ApplicationConfig(live=False, record=True, **cms.urls()),
        "upd": ApplicationConfig(live=False, on_update=f"{cms.base}/update", notify_update_timeout=0.5,
                                 on_done=f"{cms.base}/done"),
        "strict": ApplicationConfig(live=False, on_update=f"{cms.base}/update", notify_update_timeout=0.5,
                                    notify_update_strict=True),
        "get": ApplicationConfig(live=False, notify_method="get", on_connect=f"{cms.base}/connect",
                                 on_publish=f"{cms.base}/publish?site=1", on_play=f"{cms.base}/play",
                                 on_publish_done=f"{cms.base}/publish_done", on_done=f"{cms.base}/done"),
        "rr": ApplicationConfig(live=False, notify_relay_redirect=True, on_publish=f"{cms.base}/publish",
                                on_play=f"{cms.base}/play")})
    ing = await start_ingest(Settings(store=tmp_path / "store"), config, "127.0.0.1", 0)
    ing.parts["notify"].timeout = 1.0
    yield ing
    await ing.close()


@pytest.fixture
async def remote(tmp_path: Path):
    """A second gateway's ingest: the target of push redirects."""
    (tmp_path / "remote").mkdir()
    ing = await start_ingest(Settings(store=tmp_path / "remote"), RtmpConfig(default=ApplicationConfig(live=False)),
                             "127.0.0.1", 0)
    yield ing
    await ing.close()


def publish(url: str, seconds: float = 3.0) -> subprocess.Popen:
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i",
         "testsrc=size=160x90:rate=15", "-t", str(seconds), "-c:v", "libx264", "-g", "15", "-bf", "0", "-f", "flv",
         url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def play(url: str, seconds: float = 1.0) -> subprocess.Popen:
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-rw_timeout", "10000000",
                             "-i", url, "-t", str(seconds), "-f", "null", "-"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str]:
    _, err = await asyncio.wait_for(asyncio.to_thread(proc.communicate), timeout)
    return proc.returncode, err.decode(errors="replace")


async def videos(c: RawClient, n: int) -> list[bytes]:
    got = []
    while len(got) < n:
        m = await c.next_message(timeout=10)
        if m.message_type_id == MSG_VIDEO:
            got.append(m.payload)
    return got


async def raw_play(port: int, app: str, name: str) -> tuple[RawClient, dict]:
    c = await RawClient.connect(port)
    c.w.write(c.c.connect(app) + c.c.command("createStream") + c.c.command("play", name, -2000.0, stream_id=1))
    status = await c.wait_status()
    if status["code"] == "NetStream.Play.Reset":
        status = await c.wait_status()
    return c, status


# ------------------------------------------------------------------------------------------------ allow + fields

async def test_allow_sends_every_call_with_nginx_fields(ingest, cms, tmp_path):
    port = ingest.port
    pub = publish(f"rtmp://127.0.0.1:{port}/cb/cam?token=abc", 4)
    await wait_until(lambda: ingest.relay.is_published("cb/cam"), 20, "the publisher")
    code, err = await finish(play(f"rtmp://127.0.0.1:{port}/cb/cam?viewer=v1"))
    assert code == 0, err
    code, err = await finish(pub)
    assert code == 0, err
    await wait_until(lambda: cms.of("record_done"), 20, "on_record_done")

    (p,) = cms.of("publish")
    session = {"app": "cb", "addr": "127.0.0.1", "tcurl": f"rtmp://127.0.0.1:{port}/cb", "swfurl": "", "pageurl": ""}
    assert p == {**session, "flashver": p["flashver"], "clientid": p["clientid"], "call": "publish", "name": "cam",
                 "type": "live", "token": "abc"}
    assert p["flashver"].startswith("FMLE/3.0")     # what ffmpeg says it is when publishing
    (pl,) = cms.of("play")
    assert pl == {**session, "flashver": pl["flashver"], "clientid": pl["clientid"], "call": "play", "name": "cam",
                  "start": str(-2000 & 0xFFFFFFFF), "duration": "0", "reset": "0", "viewer": "v1"}
    assert pl["clientid"] != p["clientid"]
    connects = cms.of("connect")
    assert len(connects) == 2 and all(c["call"] == "connect" and c["app"] == "cb" and c["addr"] == "127.0.0.1"
                                      and c["tcurl"] == session["tcurl"] and "epoch" in c for c in connects)
    (pd,) = cms.of("publish_done")
    assert pd == {**session, "flashver": p["flashver"], "clientid": p["clientid"], "call": "publish_done",
                  "name": "cam", "token": "abc"}
    (pld,) = cms.of("play_done")
    assert pld == {k: v for k, v in pl.items() if k not in ("start", "duration", "reset")} | {"call": "play_done"}
    dones = cms.of("done")
    assert sorted(d["clientid"] for d in dones) == sorted([p["clientid"], pl["clientid"]])
    (rd,) = cms.of("record_done")
    assert rd["call"] == "record_done" and rd["name"] == "cam" and rd["clientid"] == p["clientid"]
    assert rd["recorder"] == "" and rd["token"] == "abc"
    path = Path(rd["path"])
    assert path.is_file() and path.parent == tmp_path / "store" / "recordings" / "cb" and path.suffix == ".mp4"
    with av.open(str(path)) as f:
        assert sum(1 for _ in f.decode(video=0)) > 15


# ------------------------------------------------------------------------------------------------ refusals

async def test_deny_refuses_publish_play_and_connect_with_the_reason(ingest, cms):
    cms.answer = lambda call, form: (403, None, 0.0) if form.get("name") == "no" or form.get("bad") else \
        (200, None, 0.0)
    code, err = await finish(publish(f"rtmp://127.0.0.1:{ingest.port}/cb/no", 1))
    assert code != 0 and "on_publish answered 403" in err
    assert not ingest.relay.is_published("cb/no") and not cms.of("publish_done")

    pub = await RawClient.connect(ingest.port)
    pub.w.write(pub.c.connect("cb") + pub.c.command("createStream") + pub.c.command("publish", "ok", "live",
                                                                                     stream_id=1))
    assert (await pub.wait_status())["code"] == "NetStream.Publish.Start"
    player, status = await raw_play(ingest.port, "cb", "no")
    assert status["code"] == "NetStream.Play.Failed" and "on_play answered 403" in status["description"]
    with pytest.raises(EOFError):
        await player.next_message()

    c = await RawClient.connect(ingest.port)
    c.w.write(c.c.connect("cb?bad=1") + c.c.command("createStream"))
    m = await c.next_message()
    while m.message_type_id != MSG_COMMAND_AMF0:      # held: not even the connect's control messages come first
        m = await c.next_message()
    values = amf0.decode_all(m.payload)
    assert values[0] == "_error"
    assert values[3]["code"] == "NetConnection.Connect.Rejected"
    assert "on_connect answered 403" in values[3]["description"]
    with pytest.raises(EOFError):
        await c.next_message()
    assert cms.of("connect", bad="1")
    pub.close()


async def test_timeout_refuses_and_tells_the_client(ingest, cms):
    cms.answer = lambda call, form: (200, None, 3.0 if call == "publish" else 0.0)
    c = await RawClient.connect(ingest.port)
    c.w.write(c.c.connect("cb") + c.c.command("createStream") + c.c.command("publish", "slow", "live", stream_id=1))
    status = await c.wait_status(timeout=10)
    assert status["code"] == "NetStream.Publish.BadName"
    assert status["description"] == "on_publish did not answer within 1 s"
    with pytest.raises(EOFError):
        await c.next_message()
    assert not ingest.relay.is_published("cb/slow")


# ------------------------------------------------------------------------------------------------ redirects

async def test_publish_redirect_renames_the_stream(ingest, cms):
    cms.answer = lambda call, form: (302, "renamed", 0.0) if call == "publish" else (200, None, 0.0)
    pub = publish(f"rtmp://127.0.0.1:{ingest.port}/cb/asked?token=t", 5)
    try:
        await wait_until(lambda: ingest.relay.is_published("cb/renamed"), 20, "the renamed stream")
        assert not ingest.relay.is_published("cb/asked")
        player, status = await raw_play(ingest.port, "cb", "renamed")
        assert status["code"] == "NetStream.Play.Start"
        assert len(await videos(player, 10)) == 10
        player.close()
    finally:
        code, err = await finish(pub)
    assert code == 0, err
    await wait_until(lambda: cms.of("publish_done"), 10, "on_publish_done")
    assert cms.of("publish_done")[0]["name"] == "renamed" and cms.of("publish_done")[0]["token"] == "t"


async def test_play_redirect_to_a_local_stream_and_to_a_remote_url(ingest, cms):
    remote = RtmpServer()
    await remote.start("127.0.0.1", 0)
    targets = {"alias": "real", "far": f"rtmp://127.0.0.1:{remote.port}/live/test"}
    cms.answer = lambda call, form: (302, targets[form["name"]], 0.0) if call == "play" and form["name"] in targets \
        else (200, None, 0.0)
    local = publish(f"rtmp://127.0.0.1:{ingest.port}/cb/real", 6)
    far = publish(f"rtmp://127.0.0.1:{remote.port}/live/test", 6)
    try:
        await wait_until(lambda: ingest.relay.is_published("cb/real") and remote.relay.is_published("live/test"),
                         20, "both publishers")
        player, status = await raw_play(ingest.port, "cb", "alias")
        assert status["code"] == "NetStream.Play.Start" and "real" in status["description"]
        assert len(await videos(player, 10)) == 10
        assert ingest.relay.stats()["cb/real"]["subscribers"] == 1
        relayed, status = await raw_play(ingest.port, "cb", "far")
        assert status["code"] == "NetStream.Play.Start"
        assert len(await videos(relayed, 10)) == 10      # pulled from the second server, under the name asked for
        assert ingest.parts["pull"].stats()["cb/far"]["upstream"] == targets["far"]
        assert remote.relay.stats()["live/test"]["subscribers"] == 1
        for c in (player, relayed):
            c.close()
    finally:
        for p in (local, far):
            code, err = await finish(p)
            assert code == 0, err
        await remote.close()


# ------------------------------------------------------------------------------------------------ push redirects

def decode(url: str, n: int) -> list[tuple[int, int]]:
    """The sizes of the first ``n`` pictures PyAV (FFmpeg's RTMP client) decodes from ``url``."""
    sizes = []
    with av.open(url, timeout=10) as f:
        for frame in f.decode(video=0):
            sizes.append((frame.width, frame.height))
            if len(sizes) == n:
                break
    return sizes


async def raw_publish(port: int, app: str, name: str) -> tuple[RawClient, dict]:
    c = await RawClient.connect(port)
    c.w.write(c.c.connect(app) + c.c.command("createStream") + c.c.command("publish", name, "live", stream_id=1))
    return c, await c.wait_status()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_publish_redirect_to_rtmp_publishes_here_and_pushes_there(ingest, remote, cms):
    """nginx-rtmp's notify push: a 3xx to rtmp://B/app/name keeps the publish here, under the name asked for, and
    relays it to the second gateway as app/name until the publisher leaves."""
    target = f"rtmp://127.0.0.1:{remote.port}/live/other"
    cms.answer = lambda call, form: (302, target, 0.0) if call == "publish" else (200, None, 0.0)
    pub = publish(f"rtmp://127.0.0.1:{ingest.port}/cb/asked?token=t", 8)
    try:
        await wait_until(lambda: remote.relay.is_published("live/other"), 20, "the stream pushed to the 2nd gateway")
        assert ingest.relay.is_published("cb/asked") and not remote.relay.is_published("live/asked")
        assert await asyncio.to_thread(decode, f"rtmp://127.0.0.1:{remote.port}/live/other", 10) == [(160, 90)] * 10
        near, status = await raw_play(ingest.port, "cb", "asked")
        assert status["code"] == "NetStream.Play.Start"
        assert len(await videos(near, 10)) == 10
        near.close()
        (push,) = ingest.parts["push"].stats().values()
        assert push["stream"] == "cb/asked" and push["target"] == target and push["connected"]
    finally:
        code, err = await finish(pub)
    assert code == 0, err
    await wait_until(lambda: not remote.relay.is_published("live/other"), 20, "the push to end with the publish")
    assert not ingest.parts["push"].stats()
    (p,) = cms.of("publish")
    assert p["call"] == "publish" and p["name"] == "asked" and p["token"] == "t" and p["app"] == "cb"
    await wait_until(lambda: cms.of("publish_done"), 10, "on_publish_done")
    assert cms.of("publish_done")[0]["name"] == "asked"


async def test_push_redirect_to_an_unreachable_server_still_publishes_here(ingest, cms):
    """nginx-rtmp ignores a failed notify push (the local publish goes on) but refuses a Location it cannot parse."""
    target = f"rtmp://127.0.0.1:{closed_port()}/live/x"
    locations = {"cam": target, "bad": "rtmp://127.0.0.1:99999/live/x"}
    cms.answer = lambda call, form: (302, locations[form["name"]], 0.0) if call == "publish" else (200, None, 0.0)
    pub, status = await raw_publish(ingest.port, "cb", "cam")
    assert status["code"] == "NetStream.Publish.Start"
    pub.w.write(pub.c.media(MSG_VIDEO, 0, AVC_SEQ) + pub.c.media(MSG_VIDEO, 40, AVC_KEY))
    player, status = await raw_play(ingest.port, "cb", "cam")
    assert status["code"] == "NetStream.Play.Start"
    assert len(await videos(player, 2)) == 2
    key = f"cb/cam -> {target}"
    await wait_until(lambda: ingest.parts["push"].stats()[key]["last_error"], 20, "the failed push")
    assert not ingest.parts["push"].stats()[key]["connected"] and ingest.relay.is_published("cb/cam")
    bad, status = await raw_publish(ingest.port, "cb", "bad")
    assert status["code"] == "NetStream.Publish.BadName" and "99999" in status["description"]
    assert not ingest.relay.is_published("cb/bad")
    for c in (pub, player, bad):
        c.close()


async def test_notify_relay_redirect_names_the_local_stream_after_the_url(ingest, remote, cms):
    """notify_relay_redirect on: the local stream of a push (or pull) redirect is md5(Location) in hex."""
    push_url = f"rtmp://127.0.0.1:{remote.port}/live/other"
    pull_url = f"rtmp://127.0.0.1:{remote.port}/live/other?via=pull"
    cms.answer = lambda call, form: (302, push_url if call == "publish" else pull_url, 0.0)
    pushed = "rr/" + hashlib.md5(push_url.encode()).hexdigest()
    pulled = "rr/" + hashlib.md5(pull_url.encode()).hexdigest()
    pub, status = await raw_publish(ingest.port, "rr", "cam")
    assert status["code"] == "NetStream.Publish.Start"
    pub.w.write(pub.c.media(MSG_VIDEO, 0, AVC_SEQ) + pub.c.media(MSG_VIDEO, 40, AVC_KEY))
    await wait_until(lambda: ingest.relay.is_published(pushed) and remote.relay.is_published("live/other"), 20,
                     "the pushed stream")
    assert not ingest.relay.is_published("rr/cam")
    player, status = await raw_play(ingest.port, "rr", "anything")
    assert status["code"] == "NetStream.Play.Start"
    pub.w.write(pub.c.media(MSG_VIDEO, 80, AVC_KEY))
    assert len(await videos(player, 2)) == 2        # there and back: pushed to the 2nd gateway, pulled from it
    assert ingest.parts["pull"].stats()[pulled]["upstream"] == f"rtmp://127.0.0.1:{remote.port}/live/other?via=pull"
    for c in (pub, player):
        c.close()


# ------------------------------------------------------------------------------------------------ notify_method

async def test_notify_method_get_sends_the_fields_as_query_args(ingest, cms):
    port = ingest.port
    pub = publish(f"rtmp://127.0.0.1:{port}/get/cam?token=abc", 4)
    await wait_until(lambda: ingest.relay.is_published("get/cam"), 20, "the publisher")
    code, err = await finish(play(f"rtmp://127.0.0.1:{port}/get/cam?viewer=v1"))
    assert code == 0, err
    code, err = await finish(pub)
    assert code == 0, err
    await wait_until(lambda: len(cms.of("done")) >= 2 and cms.of("publish_done"), 20, "the done calls")
    assert set(cms.methods) == {"GET"} and len(cms.methods) == len(cms.calls)
    session = {"app": "get", "addr": "127.0.0.1", "tcurl": f"rtmp://127.0.0.1:{port}/get", "swfurl": "", "pageurl": ""}
    (p,) = cms.of("publish")
    assert p == {**session, "flashver": p["flashver"], "clientid": p["clientid"], "call": "publish", "name": "cam",
                 "type": "live", "token": "abc", "site": "1"}      # site=1: the on_publish URL's own query
    (pl,) = cms.of("play")
    assert pl == {**session, "flashver": pl["flashver"], "clientid": pl["clientid"], "call": "play", "name": "cam",
                  "start": str(-2000 & 0xFFFFFFFF), "duration": "0", "reset": "0", "viewer": "v1"}
    assert len(cms.of("connect", call="connect", app="get")) == 2
    (pd,) = cms.of("publish_done")
    assert pd == {**session, "flashver": p["flashver"], "clientid": p["clientid"], "call": "publish_done",
                  "name": "cam", "token": "abc"}


def test_notify_settings_are_validated():
    conf = ApplicationConfig.from_dict({"notify_method": "GET", "notify_update_strict": True,
                                        "notify_relay_redirect": True})
    assert conf.notify_method == "get" and ApplicationConfig().notify_method == "post"
    for bad in ({"notify_method": "put"}, {"notify_method": 1}, {"notify_update_strict": "yes"},
                {"notify_relay_redirect": 1}):
        with pytest.raises(ConfigError):
            ApplicationConfig.from_dict(bad)


# ------------------------------------------------------------------------------------------------ on_update

async def test_on_update_refusal_drops_that_client_only(ingest, cms):
    cms.answer = lambda call, form: (403, None, 0.0) if call == "update" and form.get("viewer") == "bad" \
        else (200, None, 0.0)
    pub = await RawClient.connect(ingest.port)
    pub.w.write(pub.c.connect("upd") + pub.c.command("createStream") + pub.c.command("publish", "s", "live",
                                                                                      stream_id=1))
    assert (await pub.wait_status())["code"] == "NetStream.Publish.Start"
    pub.w.write(pub.c.media(MSG_VIDEO, 0, AVC_SEQ) + pub.c.media(MSG_VIDEO, 40, AVC_KEY))
    good, status = await raw_play(ingest.port, "upd", "s?viewer=good")
    assert status["code"] == "NetStream.Play.Start"
    bad, status = await raw_play(ingest.port, "upd", "s?viewer=bad")
    assert status["code"] == "NetStream.Play.Start"
    deadline = time.monotonic() + 15
    with pytest.raises(EOFError):       # the refused player is dropped
        while True:
            assert time.monotonic() < deadline, "the player was not dropped"
            await bad.next_message(timeout=max(0.1, deadline - time.monotonic()))
    await wait_until(lambda: len(cms.of("update", call="update_publish")) >= 2, 10, "two publisher updates")
    up = cms.of("update", call="update_publish")[-1]
    assert up["name"] == "s" and up["timestamp"] == "40" and int(up["time"]) >= 0 and up["app"] == "upd"
    assert ingest.relay.is_published("upd/s")
    assert ingest.relay.stats()["upd/s"]["subscribers"] == 1
    await wait_until(lambda: cms.of("done", viewer="bad"), 10, "on_done of the dropped player")
    assert not cms.of("done", viewer="good")
    for c in (pub, good):
        c.close()


async def test_notify_update_strict_drops_on_anything_but_2xx(ingest, cms):
    """An on_update 3xx is fine by default (its Location, even an rtmp:// one, is not used) and drops the client
    with notify_update_strict (nginx-rtmp's rule)."""
    cms.answer = lambda call, form: (302, "rtmp://127.0.0.1:1/live/elsewhere", 0.0) if call == "update" \
        else (200, None, 0.0)
    strict, status = await raw_publish(ingest.port, "strict", "s")
    assert status["code"] == "NetStream.Publish.Start"
    lenient, status = await raw_publish(ingest.port, "upd", "s")
    assert status["code"] == "NetStream.Publish.Start"
    deadline = time.monotonic() + 15
    with pytest.raises(EOFError):
        while True:
            assert time.monotonic() < deadline, "the strict publisher was not dropped"
            await strict.next_message(timeout=max(0.1, deadline - time.monotonic()))
    await wait_until(lambda: len(cms.of("update", app="upd")) >= 2, 10, "two updates of the lenient publisher")
    assert ingest.relay.is_published("upd/s") and not ingest.relay.is_published("strict/s")
    assert cms.of("update", app="strict")
    lenient.close()


# ------------------------------------------------------------------------------------------------ vs nginx-rtmp

NGINX_CONF = """\
load_module {module};
master_process off;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        notify_method {method};
        on_connect {base}/connect;
        application cb {{
            live on;
            on_publish {base}/publish;
            on_play {base}/play;
            on_publish_done {base}/publish_done;
            on_play_done {base}/play_done;
            on_done {base}/done;
        }}
    }}
}}
"""


class NginxWithCallbacks(NginxRtmp):
    def __init__(self, directory: Path, base: str, method: str = "post") -> None:
        super().__init__(directory)
        self.base = base
        self.method = method

    def start(self, timeout: float = 10.0) -> NginxWithCallbacks:
        skip_without_nginx()
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(module=RTMP_MODULE, dir=self.dir, port=self.port, base=self.base,
                                          method=self.method))
        self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self


async def _session(cms: Cms, port: int) -> dict[str, list[dict]]:
    """ffmpeg publishes cb/cam?token=abc and plays it with ?viewer=v1; every call by name, the port made neutral."""
    cms.calls.clear()
    cms.methods.clear()
    pub = publish(f"rtmp://127.0.0.1:{port}/cb/cam?token=abc", 30)
    try:
        await wait_until(lambda: cms.of("publish"), 20, "on_publish")
        await asyncio.sleep(1.0)        # past nginx-rtmp's wait for the first key frame
        code, err = await finish(play(f"rtmp://127.0.0.1:{port}/cb/cam?viewer=v1"))
        assert code == 0, err
    finally:
        pub.terminate()                 # the publisher leaves while it streams (nginx and ours see the same)
        await finish(pub)
    await wait_until(lambda: len(cms.of("done")) >= 2 and cms.of("publish_done"), 20, "the done calls")
    out: dict[str, list[dict]] = {}
    for call, form in cms.calls:
        out.setdefault(call, []).append({k: v.replace(str(port), "PORT") for k, v in form.items()})
    return out


@pytest.mark.parametrize("method", ["post", "get"])
async def test_the_same_fields_as_nginx_rtmp(tmp_path, cms, method):
    skip_without_nginx()
    nginx = NginxWithCallbacks(tmp_path / "nginx", cms.base, method).start()
    try:
        await wait_until(lambda: _accepts(nginx.port), 10, "nginx")
        theirs = await _session(cms, nginx.port)
        assert set(cms.methods) == {method.upper()}
    finally:
        nginx.stop()
    (tmp_path / "store").mkdir()
    urls = {k: v for k, v in cms.urls().items() if k not in ("on_update", "on_record_done")}
    ingest = await start_ingest(Settings(store=tmp_path / "store"), RtmpConfig(applications={
        "cb": ApplicationConfig(live=False, notify_method=method, **urls)}), "127.0.0.1", 0)
    try:
        ours = await _session(cms, ingest.port)
        assert set(cms.methods) == {method.upper()}
    finally:
        await ingest.close()
    assert set(ours) == set(theirs) == {"connect", "publish", "play", "publish_done", "play_done", "done"}
    varying = {"clientid", "epoch"}     # connection numbers and clocks differ between servers
    for call in ours:
        assert len(ours[call]) == len(theirs[call]), call
        for mine, nginx_form in zip(sorted(ours[call], key=_order), sorted(theirs[call], key=_order)):
            assert set(mine) == set(nginx_form), (call, set(mine) ^ set(nginx_form))
            # nginx-rtmp keeps 31 bytes of flashver (a fixed buffer): "FMLE/3.0 (compatible; Lavf59.27"
            assert mine["flashver"].startswith(nginx_form["flashver"]), call
            assert {k: v for k, v in mine.items() if k not in varying | {"flashver"}} == \
                {k: v for k, v in nginx_form.items() if k not in varying | {"flashver"}}, call


async def test_push_redirect_as_nginx_rtmp_does_it(tmp_path, cms, remote):
    """The same 302 to rtmp:// answered to nginx-rtmp: it too keeps the publish under the name asked for and pushes
    it to the URL's app/name, and a push that cannot connect leaves the publish alone (what our tests expect of us)."""
    skip_without_nginx()
    target = f"rtmp://127.0.0.1:{remote.port}/live/other"
    locations = {"asked": target, "cam": f"rtmp://127.0.0.1:{closed_port()}/live/x"}
    cms.answer = lambda call, form: (302, locations[form["name"]], 0.0) if call == "publish" else (200, None, 0.0)
    nginx = NginxWithCallbacks(tmp_path / "nginx", cms.base).start()
    pub = unreachable = None
    try:
        await wait_until(lambda: _accepts(nginx.port), 10, "nginx")
        pub = publish(f"rtmp://127.0.0.1:{nginx.port}/cb/asked?token=t", 30)
        await wait_until(lambda: remote.relay.is_published("live/other"), 20, "nginx-rtmp's push")
        assert not remote.relay.is_published("live/asked")
        assert await asyncio.to_thread(decode, f"rtmp://127.0.0.1:{remote.port}/live/other", 5) == [(160, 90)] * 5
        assert await asyncio.to_thread(decode, f"rtmp://127.0.0.1:{nginx.port}/cb/asked", 5) == [(160, 90)] * 5
        unreachable = publish(f"rtmp://127.0.0.1:{nginx.port}/cb/cam", 30)     # its push fails: the publish stays
        assert await asyncio.to_thread(decode, f"rtmp://127.0.0.1:{nginx.port}/cb/cam", 5) == [(160, 90)] * 5
    finally:
        for p in (pub, unreachable):
            if p is not None:
                p.terminate()
                await finish(p)
        nginx.stop()
    await wait_until(lambda: not remote.relay.is_published("live/other"), 20, "the push to end with the publish")


def _order(form: dict) -> str:
    return form.get("flashver", "")     # publisher (FMLE/...) and player (LNX ...) in a stable order


def _accepts(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False
