"""Every protocol goes through the same HTTP semantics, caches and error taxonomy as HLS."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from .conftest import add_to_store, status

URLSET = "title_,360p,240p,180p,.mp4.urlset"

# (manifest URL, a segment URL, manifest content type, segment content type)
CASES = {
    "hls-ts": (f"/hls/{URLSET}/master.m3u8", f"/hls/{URLSET}/seg-1-f2-v1-a1.ts", "application/vnd.apple.mpegurl",
               "video/mp2t"),
    "hls-fmp4": (f"/hls/{URLSET}/index-f1-v1.m3u8", f"/hls/{URLSET}/seg-2-f1-v1.m4s", "application/vnd.apple.mpegurl",
                 "video/mp4"),
    "hls-init": (f"/hls/{URLSET}/master.m3u8", f"/hls/{URLSET}/init-f3-v1.mp4", "application/vnd.apple.mpegurl",
                 "video/mp4"),
    "dash": (f"/dash/{URLSET}/manifest.mpd", f"/dash/{URLSET}/fragment-2-f1-a1.m4s", "application/dash+xml",
             "audio/mp4"),
    "mss": (f"/mss/{URLSET}/manifest", None, "text/xml", "video/mp4"),
    "hds": (f"/hds/{URLSET}/manifest.f4m", f"/hds/{URLSET}/frag-f1-v1-a1-Seg1-Frag2", "application/f4m+xml",
            "video/f4f"),
}


async def mss_fragment_url(client) -> str:
    root = ET.fromstring(await (await client.get(CASES["mss"][0])).read())
    video = root.find("StreamIndex[@Type='video']")
    url = video.get("Url").replace("{bitrate}", video.find("QualityLevel").get("Bitrate"))
    return f"/mss/{URLSET}/" + url.replace("{start time}", video.find("c").get("t"))


@pytest.mark.parametrize("case", sorted(CASES))
async def test_manifest_and_segment_semantics(client, case):
    manifest, segment, manifest_type, segment_type = CASES[case]
    segment = segment or await mss_fragment_url(client)
    for url, ctype in ((manifest, manifest_type), (segment, segment_type)):
        get = await client.get(url)
        body = await get.read()
        assert get.status == 200, (url, body[:200])
        assert get.headers["Content-Type"].lower().startswith(ctype), (url, get.headers["Content-Type"])
        assert int(get.headers["Content-Length"]) == len(body) > 0
        assert get.headers["Access-Control-Allow-Origin"] == "*"
        assert "max-age" in get.headers["Cache-Control"] and get.headers["ETag"]
        head = await client.head(url)
        assert head.status == 200 and await head.read() == b""
        for name in ("Content-Type", "Content-Length", "ETag", "Last-Modified", "Cache-Control"):
            assert head.headers[name] == get.headers[name], name
        part = await client.get(url, headers={"Range": "bytes=10-99"})
        assert part.status == 206 and await part.read() == body[10:100]
        cached = await client.get(url, headers={"If-None-Match": get.headers["ETag"]})
        assert cached.status == 304


async def test_every_protocol_is_cached(client):
    for case in sorted(CASES):
        manifest, segment, *_ = CASES[case]
        segment = segment or await mss_fragment_url(client)
        before = (await status(client))["segment_cache"]
        first = await (await client.get(segment)).read()
        second = await (await client.get(segment)).read()
        after = (await status(client))["segment_cache"]
        assert first == second
        assert after["hits"] - before["hits"] >= 1, case


@pytest.mark.parametrize("url, code", [
    (f"/dash/{URLSET}/fragment-99-f1-v1.m4s", 404),
    (f"/dash/{URLSET}/fragment-1-f1-v1-a1.m4s", 400),  # a DASH fragment is one track
    (f"/dash/{URLSET}/fragment-1-f9-v1.m4s", 404),
    (f"/dash/{URLSET}/init-f1-v3.mp4", 404),
    (f"/dash/{URLSET}/fragment-01-f1-v1.m4s", 400),
    ("/dash/missing.mp4/manifest.mpd", 404),
    (f"/hls/{URLSET}/seg-99-f1-v1.m4s", 404),
    (f"/hds/{URLSET}/frag-f1-v1-a1-Seg1-Frag99", 404),
    (f"/hds/{URLSET}/frag-f1-v1-a1-Seg2-Frag1", 400),
    (f"/mss/{URLSET}/QualityLevels(1)/Fragments(video=0)", 404),
    (f"/mss/{URLSET}/QualityLevels(1)/Fragments(nope=0)", 404),
    (f"/mss/{URLSET}/QualityLevels(x)/Fragments(video=0)", 400),
    ("/hds/hevc.mp4/manifest.f4m", 415),
    ("/mss/hevc.mp4/manifest", 415),
])
async def test_errors(client, store, url, code):
    add_to_store(store, "hevc.mp4")
    r = await client.get(url)
    text = await r.text()
    assert r.status == code, (url, text)
    assert "\n" not in text.strip() and text.split(":")[0].isupper(), text
    assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_corrupt_file_fails_alone_in_every_protocol(client, store):
    (store / "broken.mp4").write_bytes((store / "title_180p.mp4").read_bytes()[:5000])
    for prefix, name in (("hls", "master.m3u8"), ("dash", "manifest.mpd"), ("mss", "manifest"), ("hds", "manifest.f4m")):
        r = await client.get(f"/{prefix}/broken.mp4/{name}")
        assert r.status == 500 and (await r.text()).startswith("BAD_DATA: "), prefix
        ok = await client.get(f"/{prefix}/title_180p.mp4/{name}")
        assert ok.status == 200


async def test_mpd_and_playlists_only_name_urls_that_exist(client):
    """Every URL a DASH or HDS manifest implies answers 200 (templates expanded for every segment)."""
    mpd = (await (await client.get(f"/dash/{URLSET}/manifest.mpd")).read()).decode()
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    root = ET.fromstring(mpd)
    for rep in root.iterfind(".//d:Representation", ns):
        t = rep.find("d:SegmentTemplate", ns)
        count = sum(1 + int(s.get("r", "0")) for s in t.iterfind("d:SegmentTimeline/d:S", ns))
        names = [t.get("initialization")] + [t.get("media").replace("$Number$", str(n)) for n in range(1, count + 1)]
        for name in names:
            r = await client.get(f"/dash/{URLSET}/{name.replace('$RepresentationID$', rep.get('id'))}")
            assert r.status == 200, name
        r = await client.get(f"/dash/{URLSET}/" + t.get("media").replace("$Number$", str(count + 1)))
        assert r.status == 404
    f4m = (await (await client.get(f"/hds/{URLSET}/manifest.f4m")).read()).decode()
    assert len(re.findall(r"<media ", f4m)) == 3
