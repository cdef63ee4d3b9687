"""Every error case: status, one-line ``CODE: message`` body, no absolute paths, and the server keeps serving."""
from __future__ import annotations

import io
import os
import re
import shutil

import av
import pytest

from fixtures.generate import fixture_path

from .conftest import URLSET, add_to_store

CASES = [
    ("/hls/missing.mp4/master.m3u8", 404, "NOT_FOUND"),
    ("/hls/missing.mp4/seg-1.ts", 404, "NOT_FOUND"),
    ("/mp4/missing.mp4", 404, "NOT_FOUND"),
    ("/hls/title_360p.mp4/seg-x.ts", 400, "BAD_REQUEST"),
    ("/hls/title_360p.mp4/seg-1-q1.ts", 400, "BAD_REQUEST"),
    ("/hls/title_360p.mp4/seg-0.ts", 400, "BAD_REQUEST"),
    ("/hls/title_360p.mp4/seg-001.ts", 400, "BAD_REQUEST"),
    ("/hls/title_360p.mp4/seg-12345678901.ts", 400, "BAD_REQUEST"),
    ("/hls/title_360p.mp4/seg-99.ts", 404, "NOT_FOUND"),
    ("/hls/title_360p.mp4/seg-9999999999.ts", 404, "NOT_FOUND"),
    ("/hls/title_360p.mp4/index-v9.m3u8", 404, "NOT_FOUND"),
    ("/hls/title_360p.mp4/seg-1-v9.ts", 404, "NOT_FOUND"),
    ("/hls/title_360p.mp4/seg-1-a2.ts", 404, "NOT_FOUND"),
    ("/hls/title_360p.mp4/index-f1.m3u8", 400, "BAD_REQUEST"),
    ("/hls/title_360p.mp4/manifest.mpd", 400, "BAD_REQUEST"),
    ("/hls/audio_only.mp4/index-v1.m3u8", 404, "NOT_FOUND"),
    (URLSET + "/index-f4.m3u8", 404, "NOT_FOUND"),
    (URLSET + "/seg-1-f9-v1.ts", 404, "NOT_FOUND"),
    ("/hls/title_,360p,missing,.mp4.urlset/master.m3u8", 404, "NOT_FOUND"),
    ("/hls/title_,360p,.mp4.urlset/index-f2.m3u8", 404, "NOT_FOUND"),
    ("/hls/,..%2Fb.mp4,c.mp4,.urlset/master.m3u8", 400, "BAD_REQUEST"),  # a url set name with a .. component
    ("/hls/x,a%2Fb,.mp4.urlset/master.m3u8", 404, "NOT_FOUND"),  # subdirectory names are allowed: no such file
    ("/nope", 404, "NOT_FOUND"),
    ("/hls/" + "a/" * 2100 + "master.m3u8", 414, "URI_TOO_LONG"),
]


def _assert_one_line(text: str, code: str, store) -> None:
    assert text.startswith(code + ": ")
    assert text.endswith("\n") and text.count("\n") == 1
    assert str(store) not in text and os.path.realpath(store) not in text
    assert "Traceback" not in text
    # the message speaks of the request and the file, never of the function that found the problem
    message = text.split(": ", 1)[1]
    assert not re.match(r"(?:[A-Z][A-Za-z0-9]*\.)?[a-z_][a-z0-9_]*: ", message), text


@pytest.mark.parametrize("path, status, code", CASES)
async def test_error_case(client, store, path, status, code):
    response = await client.get(path)
    assert response.status == status
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    text = await response.text()
    assert int(response.headers["Content-Length"]) == len(text.encode())
    _assert_one_line(text, code, store)


async def test_messages_name_the_file_not_the_function(client):
    response = await client.get("/hls/missing.mp4/master.m3u8")
    assert await response.text() == "NOT_FOUND: no such file 'missing.mp4'\n"


async def test_not_found_may_be_cached_briefly_when_configured(make_client):
    client = await make_client(not_found_max_age=10)
    response = await client.get("/hls/missing.mp4/master.m3u8")
    assert response.status == 404 and response.headers["Cache-Control"] == "public, max-age=10"
    bad = await client.get("/hls/title_360p.mp4/seg-0.ts")
    assert bad.status == 400 and bad.headers["Cache-Control"] == "no-store"


def _truncated(store, size: int, name: str) -> str:
    data = fixture_path("title_180p.mp4").read_bytes()
    (store / name).write_bytes(data[:size])
    return name


def _garbled_moov(store, name: str) -> str:
    data = bytearray(fixture_path("title_180p.mp4").read_bytes())
    moov = data.find(b"moov")
    for box in (b"stsz", b"stco", b"stts", b"stsc"):
        at = data.find(box, moov)
        data[at + 8 : at + 24] = b"\xff" * 16  # absurd entry counts / sizes
    (store / name).write_bytes(bytes(data))
    return name


@pytest.mark.parametrize(
    "make",
    [
        lambda store: _truncated(store, 3000, "truncated_moov.mp4"),
        lambda store: _truncated(store, 0, "empty.mp4"),
        lambda store: _garbled_moov(store, "garbled.mp4"),
        lambda store: (store / "text.mp4").write_text("this is not an mp4\n") and "text.mp4",
    ],
    ids=["truncated-moov", "empty", "garbled-moov", "not-mp4"],
)
async def test_corrupt_mp4_is_500_then_server_keeps_serving(client, store, make):
    name = make(store)
    for path in (f"/hls/{name}/master.m3u8", f"/hls/{name}/seg-1.ts", f"/hls/{name}/index.m3u8"):
        response = await client.get(path)
        text = await response.text()
        assert response.status == 500, text  # README: "500 BAD_DATA: …" corrupt or truncated MP4
        _assert_one_line(text, "BAD_DATA", store)
    good = await client.get("/hls/title_360p.mp4/seg-1.ts")
    assert good.status == 200 and (await good.read())[:1] == b"\x47"
    # the progressive endpoint does not parse: a corrupt file is still downloadable as bytes
    assert (await client.get(f"/mp4/{name}")).status == 200


async def test_truncated_mdat_is_500_for_that_file_only(client, store):
    """Sample tables pointing past the end of the file are refused when the file is parsed (packagers/mp4/tables.py):
    every request for it is 500 BAD_DATA, as the README says of truncated MP4s, and other files are still served."""
    full = fixture_path("title_180p.mp4").read_bytes()
    (store / "cut.mp4").write_bytes(full[: len(full) * 2 // 3])
    for path in ("/hls/cut.mp4/master.m3u8", "/hls/cut.mp4/seg-1.ts", "/hls/cut.mp4/seg-2.ts"):
        response = await client.get(path)
        text = await response.text()
        assert response.status == 500, text
        _assert_one_line(text, "BAD_DATA", store)
    assert (await client.get("/hls/title_240p.mp4/master.m3u8")).status == 200


async def test_failed_build_is_not_cached(client, store):
    """A corrupt file that is fixed in place (new identity) is served at once; failures never stick."""
    name = _truncated(store, 3000, "fixme.mp4")
    assert (await client.get(f"/hls/{name}/seg-1.ts")).status == 500
    shutil.copyfile(fixture_path("title_180p.mp4"), store / name)
    assert (await client.get(f"/hls/{name}/seg-1.ts")).status == 200


async def test_hevc_in_mpeg_ts_is_served(client, store):
    """HEVC is packaged in MPEG-TS too (docs/rtmp.md; only HDS and MSS refuse it with 415, see test_protocols): a
    .ts segment of an HEVC file is 200, and ffmpeg's TS demuxer (PyAV) finds and decodes HEVC in it."""
    add_to_store(store, "hevc.mp4")
    response = await client.get("/hls/hevc.mp4/seg-1.ts")
    body = await response.read()
    assert response.status == 200, body[:200]
    with av.open(io.BytesIO(body), format="mpegts") as container:
        (video,) = container.streams.video
        assert video.codec_context.name == "hevc"
        assert sum(len(packet.decode()) for packet in container.demux(video)) > 0
