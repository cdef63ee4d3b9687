"""Recordings on a remote store are uploaded (gateway/origin/upload.py, wired in gateway/ingest/service.py): real
`gateway serve` processes with RTMP recording, the ffmpeg CLI publishing, a real nginx (its WebDAV PUT location) and
moto's S3 server as origins. The finished MP4 ends up on the origin, byte for byte what the recorder wrote (every
packet of the source; the exact bytes where the local file could be kept), plays back from the remote store through
the same gateway, goes in parts above the threshold, and stays local when the origin refuses it, to be uploaded at
the next start."""
from __future__ import annotations

import asyncio
import http.server
import io
import json
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp
import av
import m3u8
from aiohttp import web

from fixtures.generate import fixture_path
from delivery_profiles.tokens import new_secret
from gateway.catalog.catalog import Catalog, Partner, write_partner
from gateway.ingest.service import start_ingest
from gateway.origin.origin_client import OriginClient, OriginOptions
from gateway.origin.upload import upload_file
from gateway.settings import Settings
from rtmp.config import ApplicationConfig, RtmpConfig
from tests.e2e.conftest import free_port
from tests.gateway.processes import gateways  # noqa: F401  (a fixture: real `gateway serve` processes)
from tests.needs import needs_executable
from tests.origin.conftest import PREFIX, RW_PREFIX
from tests.origin.s3_server import s3_env, s3_server  # noqa: F401  (fixtures)
from tests.rtmp.test_record import packets_ms

pytestmark = needs_executable("ffmpeg")
SOURCE = "title_360p.mp4"  # 1.5 MB, 10 s
WAIT = 90.0  # bound on waits for publishing, finishing and uploading on a busy machine (never a timing assertion)


def serve(gateways, tmp_path: Path, store: str, state: Path, *args: str, rtmp: str = ""):
    """`gateway serve` on ``store`` (an origin URL) with RTMP, every publish recorded, state in ``state``."""
    port = free_port()
    conf = tmp_path / f"gateway-{port}.toml"
    conf.write_text(f'store = "{store}"\nstate_dir = "{state}"\nrtmp_port = {port}\n'
                    f'[rtmp.default]\nlive = false\nrecord = true\n{rtmp}')
    gw = gateways("--config", str(conf), *args)
    gw.rtmp_port, gw.state = port, state
    return gw


def publish(gw, name: str, loops: int = 0) -> None:
    """The whole source (``loops`` more times), as fast as it goes, then unpublish (ffmpeg exits)."""
    proc = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-stream_loop", str(loops),
                           "-i", str(fixture_path(SOURCE)), "-c", "copy", "-f", "flv",
                           f"rtmp://127.0.0.1:{gw.rtmp_port}/live/{name}"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


def status(gw) -> dict:
    with urllib.request.urlopen(f"{gw.base}/status", timeout=30) as r:
        return json.load(r)


def until_uploads(gw, done: int = 0, failed: int = 0) -> dict:
    """The uploader's stats once ``done`` uploads succeeded and ``failed`` failed (bounded wait)."""
    deadline = time.monotonic() + WAIT
    while True:
        up = status(gw)["rtmp"]["upload"]
        if up["uploads_done"] + up["uploads_failed"] >= done + failed and not up["upload_queue"]:
            assert (up["uploads_done"], up["uploads_failed"]) == (done, failed), up
            return up
        assert time.monotonic() < deadline, (up, gw.log.read_text()[-3000:])
        time.sleep(0.1)


def get(gw, path: str) -> bytes:
    with urllib.request.urlopen(f"{gw.base}/{path}", timeout=60) as r:
        assert r.status == 200, path
        return r.read()


def local_recordings(state: Path) -> list[Path]:
    return sorted(state.glob("recordings/*/*.mp4"))


def same_packets(file: Path, loops: int = 0) -> None:
    """Every packet of the source (``loops`` more times), in order, byte for byte: what the recorder wrote from
    ffmpeg's `-c copy` publish (an independent decode of the uploaded file)."""
    want, got = packets_ms(fixture_path(SOURCE)), packets_ms(file)
    for kind in ("video", "audio"):
        assert [p[3] for p in got[kind]] == [p[3] for p in want[kind]] * (loops + 1), kind


def plays(gw, path: str) -> None:
    """The recording plays from the remote store through the gateway: HLS playlists, and a segment that decodes."""
    master = m3u8.loads(get(gw, f"hls/{path}/master.m3u8").decode())
    playlist = m3u8.loads(get(gw, f"hls/{path}/{master.playlists[0].uri}").decode())
    assert len(playlist.segments) >= 2
    with av.open(io.BytesIO(get(gw, f"hls/{path}/{playlist.segments[1].uri}")), format="mpegts") as container:
        frames = sum(len(packet.decode()) for packet in container.demux(video=0))
    assert frames > 0


# ------------------------------------------------------------------------------------------------ HTTP origin
class Callbacks(http.server.BaseHTTPRequestHandler):
    """on_record_done's POSTs, as forms."""
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        Callbacks.received.append(dict(urllib.parse.parse_qsl(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_http_origin_gets_the_recording_by_put_and_serves_it(origin, gateways, tmp_path) -> None:
    state = tmp_path / "state"
    callbacks = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Callbacks)
    threading.Thread(target=callbacks.serve_forever, daemon=True).start()
    rw_url = origin.url.replace(f"/{PREFIX}/", f"/{RW_PREFIX}/")
    gw = serve(gateways, tmp_path, rw_url, state,
               rtmp=f'on_record_done = "http://127.0.0.1:{callbacks.server_address[1]}/done"\n')
    mark = origin.mark()
    publish(gw, "cam1")
    up = until_uploads(gw, done=1)
    (uploaded,) = (origin.workdir / RW_PREFIX).glob("recordings/live/cam1-*.mp4")
    path = uploaded.relative_to(origin.workdir / RW_PREFIX).as_posix()
    assert up["upload_bytes"] == uploaded.stat().st_size
    assert local_recordings(state) == []  # deleted once the upload was verified
    writes = [(line.method, line.status) for line in origin.since(mark) if line.uri == f"/{RW_PREFIX}/{path}"]
    assert writes[:2] == [("PUT", 201), ("HEAD", 200)], writes  # one PUT, checked by a HEAD
    same_packets(uploaded)
    plays(gw, path)
    assert get(gw, f"mp4/{path}") == uploaded.read_bytes()
    # on_record_done names where the recording is now: its URL on the origin, not the deleted local file
    deadline = time.monotonic() + WAIT
    while not Callbacks.received and time.monotonic() < deadline:
        time.sleep(0.05)
    callbacks.shutdown()
    assert [c["path"] for c in Callbacks.received] == [rw_url + path]


def test_a_recording_finished_by_the_shutdown_is_uploaded_before_the_exit(origin, gateways, tmp_path) -> None:
    state = tmp_path / "state"
    gw = serve(gateways, tmp_path, origin.url.replace(f"/{PREFIX}/", f"/{RW_PREFIX}/"), state)
    proc = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
                             "-i", str(fixture_path(SOURCE)), "-c", "copy", "-f", "flv",
                             f"rtmp://127.0.0.1:{gw.rtmp_port}/live/cam7"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + WAIT
        while status(gw)["rtmp"]["recorder"]["bytes_written"] < 200_000:  # a few seconds of media in the file
            assert time.monotonic() < deadline and proc.poll() is None, gw.log.read_text()[-3000:]
            time.sleep(0.1)
        gw.send(signal.SIGTERM)  # while publishing: the recorder finishes the file, then the uploader drains
        try:
            gw.proc.wait(10)
        except subprocess.TimeoutExpired:
            # rtmp/server.py's close can wait for a publisher that keeps sending (Python 3.11's wait_for may swallow
            # the cancellation of its read): once ffmpeg is gone the shutdown goes on
            proc.kill()
        assert gw.stop() == 0
    finally:
        proc.kill()
        proc.wait()
    (uploaded,) = (origin.workdir / RW_PREFIX).glob("recordings/live/cam7-*.mp4")
    assert local_recordings(state) == []
    with av.open(str(uploaded)) as container:
        assert sum(1 for p in container.demux(video=0) if p.size) > 10


def test_refused_upload_keeps_the_file_and_the_next_start_uploads_it(origin, gateways, tmp_path) -> None:
    """/media/ takes no PUT: the recording stays in the state directory, with one log line naming the origin and
    what to configure. A gateway started on that state directory with a writable origin uploads it, byte for byte."""
    state = tmp_path / "state"
    first = serve(gateways, tmp_path, origin.url, state)
    publish(first, "cam2")
    until_uploads(first, failed=1)
    (kept,) = local_recordings(state)
    recorded = kept.read_bytes()
    path = kept.relative_to(state).as_posix()
    refusals = [line for line in first.log.read_text().splitlines() if "refused PUT" in line]
    assert len(refusals) == 1 and f"127.0.0.1:{origin.port}" in refusals[0] and "dav_methods PUT" in refusals[0]
    assert first.stop() == 0
    assert kept.read_bytes() == recorded  # still there after a clean stop

    second = serve(gateways, tmp_path, origin.url.replace(f"/{PREFIX}/", f"/{RW_PREFIX}/"), state)
    until_uploads(second, done=1)
    assert (origin.workdir / RW_PREFIX / path).read_bytes() == recorded
    assert local_recordings(state) == []
    plays(second, path)


def test_an_upload_the_origin_does_not_hold_is_caught_and_kept(origin, fault_proxy, gateways, tmp_path) -> None:
    """Through a proxy that forwards the PUT without its body, the origin stores an empty file and says 201: the
    HEAD after the upload shows the wrong size, so the upload counts as failed and the recording stays local."""
    state = tmp_path / "state"
    gw = serve(gateways, tmp_path, fault_proxy.url.replace(f"/{PREFIX}/", f"/{RW_PREFIX}/"), state)
    publish(gw, "cam6")
    until_uploads(gw, failed=1)
    (kept,) = local_recordings(state)
    stored = origin.workdir / RW_PREFIX / kept.relative_to(state)
    assert stored.stat().st_size == 0 < kept.stat().st_size
    assert "does not match the local file" in gw.log.read_text()


async def test_a_5xx_is_retried_with_the_whole_body_again(origin, tmp_path) -> None:
    """A real proxy in front of nginx's PUT location answers the first PUT 503 after reading its body (a failing
    load balancer): the upload is tried again, the file streamed anew from its start, and the origin holds its
    exact bytes."""
    puts: list[int] = []
    upstream = f"http://127.0.0.1:{origin.port}"

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "PUT":
            puts.append(len(body))
            if len(puts) == 1:
                return web.Response(status=503, text="try again\n")
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, upstream + request.rel_url.raw_path, data=body or None) as r:
                headers = {k: v for k, v in r.headers.items() if k.lower() in ("content-length", "etag")}
                return web.Response(status=r.status, body=await r.read() if request.method != "HEAD" else None,
                                    headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = OriginClient(f"http://127.0.0.1:{port}/{RW_PREFIX}/", OriginOptions(backoff=(0.01,)))
    local = tmp_path / "rec.mp4"
    local.write_bytes(fixture_path("title_180p.mp4").read_bytes())
    try:
        path = "recordings/retry/rec.mp4"
        assert await upload_file(client, client.base_url + path, local, path, s3=False) == local.stat().st_size
    finally:
        await client.close()
        await runner.cleanup()
    assert puts == [local.stat().st_size] * 2
    assert (origin.workdir / RW_PREFIX / path).read_bytes() == local.read_bytes()


async def test_registered_in_the_catalog_only_once_on_the_origin(origin, tmp_path) -> None:
    """The ingest itself (start_ingest) on an origin store, for an application with a partner: a recording the
    origin refuses is not registered; one it takes is registered under its store path, which the origin then
    holds."""
    catalog = tmp_path / "catalog"
    write_partner(catalog, Partner(101, "Acme", new_secret(), {}))
    config = RtmpConfig(applications={"rec": ApplicationConfig(live=False, record=True, partner_id=101)},
                        default=ApplicationConfig(live=False))
    for url, state in ((origin.url, tmp_path / "refused"), (origin.url.replace(f"/{PREFIX}/", f"/{RW_PREFIX}/"),
                                                            tmp_path / "taken")):
        state.mkdir()
        settings = Settings(store=state, origin=url, catalog=catalog, catalog_ttl=0)
        ingest = await start_ingest(settings, config, "127.0.0.1", 0)
        try:
            proc = await asyncio.to_thread(subprocess.run, [
                "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(fixture_path("title_180p.mp4")),
                "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{ingest.port}/rec/cam8"], capture_output=True,
                timeout=WAIT)
            assert proc.returncode == 0, proc.stderr
            deadline = time.monotonic() + WAIT
            while sum((up := ingest.parts["upload"].stats())[k] for k in ("uploads_done", "uploads_failed")) < 1 \
                    or up["upload_queue"]:
                assert time.monotonic() < deadline, up
                await asyncio.sleep(0.05)
        finally:
            await ingest.close()
        entries = Catalog(state, catalog, ttl=0).view().entries(101)
        if state.name == "refused":
            assert (up["uploads_done"], up["uploads_failed"]) == (0, 1) and entries == ()
            assert len(local_recordings(state)) == 1
        else:
            assert up["uploads_done"] == 1 and len(entries) == 1
            (path,) = entries[0].paths
            assert path.startswith("recordings/rec/cam8-") and (origin.workdir / RW_PREFIX / path).is_file()


# ------------------------------------------------------------------------------------------------ S3
def s3_object(s3, key: str) -> tuple[bytes, str]:
    got = s3.client().get_object(Bucket=s3.bucket, Key=key)
    return got["Body"].read(), got["ETag"]


def keys(s3, prefix: str) -> list[str]:
    # listed by the prefix's first segment: moto cannot check the signature of a query holding a "/"
    listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix.partition("/")[0]).get("Contents", [])
    return [o["Key"] for o in listed if o["Key"].startswith(prefix)]


def only_key(s3, prefix: str) -> str:
    (key,) = keys(s3, prefix)
    return key


def test_s3_single_put(s3_env, gateways, tmp_path) -> None:
    state = tmp_path / "state"
    gw = serve(gateways, tmp_path, f"s3://{s3_env.bucket}/single/", state)
    publish(gw, "cam3")
    up = until_uploads(gw, done=1)
    key = only_key(s3_env, "single/recordings/live/cam3-")
    body, etag = s3_object(s3_env, key)
    assert "-" not in etag and up["upload_bytes"] == len(body) < 16 << 20  # one PUT (a multipart ETag has "-N")
    assert local_recordings(state) == []
    (tmp_path / "got.mp4").write_bytes(body)
    same_packets(tmp_path / "got.mp4")
    path = key.removeprefix("single/")
    plays(gw, path)
    assert get(gw, f"mp4/{path}") == body


def test_s3_multipart_above_the_threshold(s3_env, gateways, tmp_path, monkeypatch) -> None:
    """A 1 MB threshold and 5 MB parts (S3's minimum, which moto enforces): a ~6 MB recording goes in two parts."""
    monkeypatch.setenv("GATEWAY_UPLOAD_SINGLE_MAX", str(1 << 20))
    monkeypatch.setenv("GATEWAY_UPLOAD_PART_SIZE", str(5 << 20))
    state = tmp_path / "state"
    gw = serve(gateways, tmp_path, f"s3://{s3_env.bucket}/multi/", state)
    publish(gw, "cam4", loops=3)
    up = until_uploads(gw, done=1)
    key = only_key(s3_env, "multi/recordings/live/cam4-")
    body, etag = s3_object(s3_env, key)
    assert etag.endswith('-2"') and up["upload_bytes"] == len(body) > 5 << 20, (etag, len(body))
    assert local_recordings(state) == []
    (tmp_path / "got.mp4").write_bytes(body)
    same_packets(tmp_path / "got.mp4", loops=3)
    assert not s3_env.client().list_multipart_uploads(Bucket=s3_env.bucket).get("Uploads")


def test_s3_failed_multipart_is_aborted_and_the_file_kept(s3_env, gateways, tmp_path, monkeypatch) -> None:
    """Parts of 1 MB are below S3's minimum: CompleteMultipartUpload fails (EntityTooSmall). The upload is aborted
    (nothing left half-uploaded in the bucket), the recording stays local, and a start with sizes S3 takes
    uploads it, byte for byte."""
    monkeypatch.setenv("GATEWAY_UPLOAD_SINGLE_MAX", str(1 << 20))
    monkeypatch.setenv("GATEWAY_UPLOAD_PART_SIZE", str(1 << 20))
    state = tmp_path / "state"
    first = serve(gateways, tmp_path, f"s3://{s3_env.bucket}/abort/", state)
    publish(first, "cam5")
    until_uploads(first, failed=1)
    (kept,) = local_recordings(state)
    recorded = kept.read_bytes()
    assert "EntityTooSmall" in first.log.read_text()
    assert not s3_env.client().list_multipart_uploads(Bucket=s3_env.bucket).get("Uploads")
    assert keys(s3_env, "abort/") == []
    assert first.stop() == 0

    monkeypatch.delenv("GATEWAY_UPLOAD_SINGLE_MAX")
    monkeypatch.delenv("GATEWAY_UPLOAD_PART_SIZE")
    second = serve(gateways, tmp_path, f"s3://{s3_env.bucket}/abort/", state)
    until_uploads(second, done=1)
    key = only_key(s3_env, "abort/recordings/live/cam5-")
    assert s3_object(s3_env, key)[0] == recorded and local_recordings(state) == []
