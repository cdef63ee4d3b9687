"""HDS through a real `gateway serve`: the F4M's media, the bootstrap's fragment count, and FLV tags that ffmpeg
decodes frame for frame like the source."""
from __future__ import annotations

import base64
import io
import struct
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import av
import pytest

from fixtures.generate import fixture_path

F4M = "{http://ns.adobe.com/f4m/1.0}"


def get(url: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read(), r.headers["Content-Type"]


def boxes(data: bytes) -> dict[str, bytes]:
    out, pos = {}, 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        out[kind.decode()] = data[pos + 8:pos + size]
        pos += size
    assert pos == len(data), "boxes do not tile the fragment"
    return out


def fragment_count(abst: bytes) -> int:
    """FragmentsPerSegment of the single segment run in the abst's asrt (F4V spec: SegmentRunEntry)."""
    body = boxes(abst)["abst"]
    asrt = body[body.find(b"asrt") + 4:]
    pos = 4
    quality_count = asrt[pos]; pos += 1
    for _ in range(quality_count):
        pos = asrt.index(b"\0", pos) + 1
    (entries,) = struct.unpack(">I", asrt[pos:pos + 4]); pos += 4
    assert entries == 1
    first_segment, fragments = struct.unpack(">II", asrt[pos:pos + 8])
    assert first_segment == 1
    return fragments


@pytest.mark.parametrize("name", ["title_180p.mp4", "two_audio.mp4", "audio_only.mp4"])
def test_hds_plays_like_the_source(gateway_url, name):
    base = f"{gateway_url}/hds/{name}/"
    body, ctype = get(base + "manifest.f4m")
    assert ctype.startswith("application/f4m+xml")
    root = ET.fromstring(body)
    media = root.findall(f"{F4M}media")
    assert media
    first = media[0]
    # fragments: probe until 404, then compare with the bootstrap
    flv = bytearray(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00")
    n = 0
    while True:
        try:
            data, ctype = get(base + first.get("url") + f"Seg1-Frag{n + 1}")
        except urllib.error.HTTPError as e:
            assert e.code == 404
            break
        assert ctype == "video/f4f"
        flv += boxes(data)["mdat"]
        n += 1
    bootstrap = root.find(f"{F4M}bootstrapInfo[@id='{first.get('bootstrapInfoId')}']")
    assert fragment_count(base64.b64decode(bootstrap.text)) == n >= 1
    decoded = {"video": 0, "audio": 0}
    with av.open(io.BytesIO(bytes(flv)), format="flv") as c:
        for frame in c.decode(*c.streams):
            decoded["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
    with av.open(str(fixture_path(name))) as c:
        source = {"video": 0, "audio": 0}
        first_audio = next((s.index for s in c.streams if s.type == "audio"), None)
        for p in c.demux():
            if p.size and (p.stream.type == "video" or p.stream.index == first_audio):
                source[p.stream.type] += 1
    assert decoded["video"] == source["video"]
    # FLV cannot trim AAC priming: one more decoded audio frame than the MP4's edit list presents
    assert source["audio"] <= decoded["audio"] <= source["audio"] + 1


def test_crossdomain_policy(gateway_url):
    body, ctype = get(gateway_url + "/crossdomain.xml")
    assert ET.fromstring(body).tag == "cross-domain-policy" and ctype.startswith("text/x-cross-domain-policy")
