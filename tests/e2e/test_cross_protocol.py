"""Segment k is the same media in every protocol.

For each segment of a file, the samples of HLS-TS, HLS-fMP4, DASH, Smooth and HDS are read back with parsers that
share no code with ours (ffmpeg's for TS, pymp4's for fMP4, FLV tags read here for HDS), reduced to (payload,
presentation time in seconds) per track, and compared: identical payloads in identical order, presentation times equal
within the precision of each container (1/90000 s for TS, the track's timescale for fMP4, 1 ms for FLV). The fMP4
protocols must agree with TS to the tick, with no offset; HDS may add one constant (FLV timestamps cannot be
negative), the same for every sample. Finally, all segments together are the source MP4's samples, as ffmpeg demuxes
them.
"""
from __future__ import annotations

import io
import re
import struct
import xml.etree.ElementTree as ET

import av
import m3u8
import pytest

from fixtures.generate import fixture_path
from packagers.ts import TS_PTS_OFFSET

from ..packagers.fmp4_tools import read_fragment, root
from .http import get
from .test_sample_fidelity import FRAMING_NALS, nal_type, nals_from_annexb, nals_from_length_prefixed, strip_adts

NAME = "title_180p.mp4"
# TS times are rounded to 90 kHz, and ffmpeg interpolates the later AAC frames of a multi-frame PES in 90 kHz ticks
TS_TOLERANCE = 1.5 / 90000


def norm_video(codec: str, nals: list[bytes]) -> tuple:
    return tuple(n for n in nals if nal_type(codec, n) not in FRAMING_NALS[codec])


# -- fMP4: read back with pymp4 (tests/packagers/fmp4_tools.py), independent of our box writer ----------------------

def mdhd_timescale(init: bytes) -> int:
    return root(init).find(b"moov", b"trak", b"mdia", b"mdhd").parsed.timescale


def fmp4_samples(fragment: bytes, timescale: int, pto: int = 0) -> list[tuple[bytes, float]]:
    """(payload, presentation seconds) of the one-track fragment ``fragment``."""
    (traf,) = read_fragment(fragment)
    ends = traf.sizes.cumsum()
    payloads = [traf.payload[end - size:end] for size, end in zip(traf.sizes.tolist(), ends.tolist())]
    return [(p, (t - pto) / timescale) for p, t in zip(payloads, traf.presentation.tolist())]


def fmp4_track(codec: str, kind: str, samples: list[tuple[bytes, float]]) -> list[tuple]:
    if kind == "video":
        return [(norm_video(codec, nals_from_length_prefixed(p)), t) for p, t in samples]
    return samples


# -- the five protocols ----------------------------------------------------------------------------------------------

def ts_segments(base: str, codec: str, path: str = NAME) -> list[dict]:
    playlist = m3u8.loads(get(f"{base}/hls/{path}/index-v1-a1.m3u8").decode())
    out = []
    for s in playlist.segments:
        seg = {"video": [], "audio": []}
        with av.open(io.BytesIO(get(f"{base}/hls/{path}/{s.uri}")), format="mpegts") as c:
            for p in c.demux():
                if not p.size:
                    continue
                t = (p.pts - TS_PTS_OFFSET) / 90000
                if p.stream.type == "video":
                    seg["video"].append((norm_video(codec, nals_from_annexb(bytes(p))), t))
                else:
                    seg["audio"].append((strip_adts(bytes(p)), t))
        out.append(seg)
    return out


def hls_fmp4_segments(base: str, codec: str, count: int, path: str = NAME) -> list[dict]:
    out = [{} for _ in range(count)]
    for kind, suffix in (("video", "-v1"), ("audio", "-a1")):
        playlist = m3u8.loads(get(f"{base}/hls/{path}/index{suffix}.m3u8").decode())
        init = get(f"{base}/hls/{path}/{playlist.segment_map[0].uri}")
        ts = mdhd_timescale(init)
        assert len(playlist.segments) == count
        for k, s in enumerate(playlist.segments):
            out[k][kind] = fmp4_track(codec, kind, fmp4_samples(get(f"{base}/hls/{path}/{s.uri}"), ts))
    return out


def dash_segments(base: str, codec: str, count: int, path: str = NAME) -> list[dict]:
    mpd = ET.fromstring(get(f"{base}/dash/{path}/manifest.mpd"))
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    out = [{} for _ in range(count)]
    for rep in mpd.iterfind(".//d:Representation", ns):
        template = rep.find("d:SegmentTemplate", ns)
        kind = "video" if rep.get("mimeType", rep.get("codecs", "")).startswith("video") or rep.get("width") else "audio"
        init = get(f"{base}/dash/{path}/{template.get('initialization').replace('$RepresentationID$', rep.get('id'))}")
        ts = int(template.get("timescale"))
        assert ts == mdhd_timescale(init)
        pto = int(template.get("presentationTimeOffset", "0"))
        for k in range(count):
            name = template.get("media").replace("$Number$", str(k + 1)).replace("$RepresentationID$", rep.get("id"))
            out[k][kind] = fmp4_track(codec, kind, fmp4_samples(get(f"{base}/dash/{path}/{name}"), ts, pto))
    return out


def mss_segments(base: str, codec: str, count: int, path: str = NAME) -> list[dict]:
    manifest = ET.fromstring(get(f"{base}/mss/{path}/manifest"))
    out = [{} for _ in range(count)]
    for index in manifest.findall("StreamIndex"):
        kind = index.get("Type")
        ts = int(index.get("TimeScale") or manifest.get("TimeScale"))
        bitrate = index.find("QualityLevel").get("Bitrate")
        chunks = index.findall("c")
        assert len(chunks) == count
        t = int(chunks[0].get("t"))
        for k, c in enumerate(chunks):
            url = index.get("Url").replace("{bitrate}", bitrate).replace("{start time}", str(t))
            out[k][kind] = fmp4_track(codec, kind, fmp4_samples(get(f"{base}/mss/{path}/{url}"), ts))
            t += int(c.get("d"))
    return out


def walk(data: bytes):
    """(type, start, body, end) of each top-level box; HDS's abst/afra are boxes that pymp4 does not know."""
    pos = 0
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[pos + 8:pos + 16])
            header = 16
        yield kind.decode("latin-1"), pos, pos + header, pos + size
        pos += size


def hds_segments(base: str, codec: str, count: int, path: str = NAME) -> list[dict]:
    f4m = get(f"{base}/hds/{path}/manifest.f4m").decode()
    url = re.search(r'url="([^"]+)"', f4m).group(1)
    out = []
    for k in range(count):
        fragment = get(f"{base}/hds/{path}/{url}Seg1-Frag{k + 1}")
        _, _, body, end = next(b for b in walk(fragment) if b[0] == "mdat")
        seg = {"video": [], "audio": []}
        pos = body
        while pos < end:
            tag_type = fragment[pos]
            size = int.from_bytes(fragment[pos + 1:pos + 4], "big")
            ms = int.from_bytes(fragment[pos + 4:pos + 7], "big") | fragment[pos + 7] << 24
            data = fragment[pos + 11:pos + 11 + size]
            pos += 11 + size + 4
            if tag_type == 9 and data[1] == 1:  # AVC NALU (AVCPacketType 1)
                cts = int.from_bytes(data[2:5], "big", signed=True)
                seg["video"].append((norm_video(codec, nals_from_length_prefixed(data[5:])), (ms + cts) / 1000))
            elif tag_type == 8 and data[1] == 1:  # AAC raw (AACPacketType 1)
                seg["audio"].append((data[2:], ms / 1000))
        out.append(seg)
    return out


@pytest.fixture(scope="module")
def reference(gateway_ts_url):
    return ts_segments(gateway_ts_url, "h264")


@pytest.mark.parametrize("protocol", ["hls-fmp4", "dash", "mss", "hds"])
def test_segment_k_is_the_same_in_every_protocol(reference, protocol, gateway_url, gateway_fmp4_url):
    count = len(reference)
    assert count >= 3
    if protocol == "hls-fmp4":
        other, tolerance, constant_allowed = hls_fmp4_segments(gateway_fmp4_url, "h264", count), TS_TOLERANCE, False
    elif protocol == "dash":
        other, tolerance, constant_allowed = dash_segments(gateway_url, "h264", count), TS_TOLERANCE, False
    elif protocol == "mss":
        other, tolerance, constant_allowed = mss_segments(gateway_url, "h264", count), TS_TOLERANCE, False
    else:
        other, tolerance, constant_allowed = hds_segments(gateway_url, "h264", count), 0.0011, True
    constant = other[0]["video"][0][1] - reference[0]["video"][0][1] if constant_allowed else 0.0
    for k, (ref, got) in enumerate(zip(reference, other)):
        for kind in ("video", "audio"):
            assert [p for p, _ in got[kind]] == [p for p, _ in ref[kind]], f"{protocol} segment {k + 1} {kind}: samples"
            worst = max(abs(g - constant - r) for (_, g), (_, r) in zip(got[kind], ref[kind]))
            assert worst <= tolerance, f"{protocol} segment {k + 1} {kind}: times off by {worst * 1000:.3f} ms"


def test_all_segments_together_are_the_source(reference):
    source = {"video": [], "audio": []}
    with av.open(str(fixture_path(NAME))) as c:
        for p in c.demux():
            if p.size:
                if p.stream.type == "video":
                    source["video"].append(norm_video("h264", nals_from_length_prefixed(bytes(p))))
                else:
                    source["audio"].append(bytes(p))
    for kind in ("video", "audio"):
        assert [p for seg in reference for p, _ in seg[kind]] == source[kind]
