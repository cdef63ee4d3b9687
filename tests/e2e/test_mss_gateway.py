"""Smooth Streaming from a real `gateway serve`: dash.js (with its MSS module) plays it in Chromium; every fragment
parses with pymp4 and carries exactly the source's samples; its tfxd agrees with the manifest."""
from __future__ import annotations

import struct
import uuid
import xml.etree.ElementTree as ET

import av
import numpy as np
import pytest
from pymp4.parser import Box

from fixtures.generate import fixture_path

from .browser_player import fatal_errors, play_in_browser, require_browser
from .http import get

URLSET = "title_,360p,240p,180p,.mp4.urlset"
TFXD = uuid.UUID("6d1d9b05-42d5-44e6-80e2-141daff757b2")


def top_level(data: bytes) -> list[tuple[str, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        out.append((kind.decode(), data[pos:pos + size]))
        pos += size
    assert pos == len(data)
    return out


@pytest.mark.browser
@pytest.mark.parametrize("path", [URLSET, "two_audio.mp4"])
def test_mss_plays_in_dash_js(gateway_url, path):
    require_browser()
    report = play_in_browser(f"{gateway_url}/mss/{path}/manifest", kind="mss", seconds=3.0, timeout=60)
    assert report["ok"], report
    assert not fatal_errors(report), report["errors"]
    assert report["totalVideoFrames"] >= 48 and report.get("audioDecodedBytes", 1) > 0, report
    if path == URLSET:
        assert report["levels"] == 3


def source_samples(name: str) -> dict[str, list[tuple[bytes, int, bool]]]:
    """Per stream type (first track of each kind... and each audio track in order): (payload, duration, key)."""
    out: dict[str, list] = {}
    audio_n = 0
    with av.open(str(fixture_path(name))) as c:
        names = {}
        for s in c.streams:
            if s.type == "video":
                names[s.index] = "video"
            elif s.type == "audio":
                names[s.index] = "audio" if audio_n == 0 else f"audio_{s.language}"
                audio_n += 1
        for p in c.demux():
            if p.size:
                out.setdefault(names[p.stream.index], []).append((bytes(p), p.is_keyframe))
    return out


@pytest.mark.parametrize("name", ["title_180p.mp4", "two_audio.mp4", "audio_only.mp4"])
def test_fragments_carry_the_source_samples(gateway_url, name):
    base = f"{gateway_url}/mss/{name}/"
    manifest = ET.fromstring(get(base + "manifest"))
    assert manifest.tag == "SmoothStreamingMedia" and manifest.get("TimeScale") == "10000000"
    source = source_samples(name)
    streams = manifest.findall("StreamIndex")
    assert {s.get("Name") for s in streams} == set(source)
    for stream in streams:
        level = stream.find("QualityLevel")
        chunks = stream.findall("c")
        assert chunks[0].get("t") is not None, "the first chunk's start time is always written"
        assert int(stream.get("Chunks")) == len(chunks)
        t = int(chunks[0].get("t"))
        payloads, keys = [], []
        for c in chunks:
            d = int(c.get("d"))
            url = base + stream.get("Url").replace("{bitrate}", level.get("Bitrate")).replace("{start time}", str(t))
            data = get(url)
            kinds = [k for k, _ in top_level(data)]
            assert kinds == ["moof", "mdat"], kinds
            moof, mdat = (Box.parse(b) for _, b in top_level(data))
            traf = next(b for b in moof.children if b.type == b"traf")
            by_type = {b.type: b for b in traf.children}
            tfdt, trun = by_type[b"tfdt"], by_type[b"trun"]
            tfxd = [b for b in traf.children if b.type == b"uuid" and b.extended_type == TFXD]
            assert len(tfxd) == 1, "one tfxd box in the traf"
            version_flags, absolute, tfxd_duration = struct.unpack(">IQQ", tfxd[0].data)
            assert version_flags >> 24 == 1 and (absolute, tfxd_duration) == (t, d), "tfxd disagrees with the manifest"
            assert tfdt.baseMediaDecodeTime == t
            durations = np.array([s.sample_duration for s in trun.sample_info])
            assert durations.sum() == d, "the chunk's d is the fragment's real duration"
            sizes = [s.sample_size for s in trun.sample_info]
            if trun.flags.sample_flags_present:
                keys += [not s.sample_flags.sample_is_non_sync_sample for s in trun.sample_info]
            else:
                keys += [True] * len(sizes)  # no per-sample flags: every sample is a sync sample (audio)
            body = bytes(mdat.data)
            pos = 0
            for size in sizes:
                payloads.append(body[pos:pos + size])
                pos += size
            assert pos == len(body)
            t += d
        src = source[stream.get("Name")]
        assert len(payloads) == len(src)
        assert payloads == [p for p, _ in src], f"{stream.get('Name')}: payloads differ from the source"
        assert keys == [k for _, k in src], f"{stream.get('Name')}: sync sample flags differ from the source"
    # one past the last chunk, and a start that is no chunk's: 404
    bad = base + streams[0].get("Url").replace("{bitrate}", streams[0].find("QualityLevel").get("Bitrate"))
    import urllib.error

    for start in (t, 1):
        with pytest.raises(urllib.error.HTTPError) as e:
            get(bad.replace("{start time}", str(start)))
        assert e.value.code == 404
