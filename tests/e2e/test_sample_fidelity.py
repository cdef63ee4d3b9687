"""Sample fidelity through the whole pipeline (our demuxer → segmenter → TS muxer → HTTP).

Ground truth is PyAV's (ffmpeg's) demux of the source MP4. For every track of every media playlist, the packets of
all segments, demuxed by ffmpeg's MPEG-TS demuxer, must equal the source packets: the same NAL units (after removing
the access unit delimiters and parameter sets that Annex-B framing adds) or the same raw AAC frames (after the ADTS
header), in order, none lost or duplicated, with PTS/DTS equal to the source's at 90 kHz within one tick. EXTINF
durations must add up to the source duration.
"""
from __future__ import annotations

import io
from urllib.parse import urljoin

import av
import m3u8
import numpy as np
import pytest

from fixtures.generate import fixture_path
from packagers.ts import TS_PTS_OFFSET

from .http import get

CASES = {
    "title_360p.mp4": "/hls/title_360p.mp4/master.m3u8",
    "two_audio.mp4": "/hls/two_audio.mp4/master.m3u8",
    "audio_only.mp4": "/hls/audio_only.mp4/master.m3u8",
    "hevc.mp4": "/hls/hevc.mp4/master.m3u8",
    "moov_end.mp4": "/hls/moov_end.mp4/master.m3u8",
    "no_bframes.mp4": "/hls/no_bframes.mp4/master.m3u8",
}
# NAL unit types that Annex-B framing adds in band: AUD and parameter sets
FRAMING_NALS = {"h264": {7, 8, 9}, "hevc": {32, 33, 34, 35}}




def nal_type(codec: str, nal: bytes) -> int:
    return nal[0] & 0x1F if codec == "h264" else (nal[0] >> 1) & 0x3F


def nals_from_length_prefixed(data: bytes, length_size: int = 4) -> list[bytes]:
    out, pos = [], 0
    while pos + length_size <= len(data):
        n = int.from_bytes(data[pos:pos + length_size], "big")
        out.append(data[pos + length_size:pos + length_size + n])
        pos += length_size + n
    return out


def nals_from_annexb(data: bytes) -> list[bytes]:
    parts = data.replace(b"\x00\x00\x01", b"\x00\x00\x00\x01").split(b"\x00\x00\x00\x01")
    return [p.rstrip(b"\x00") for p in parts if p.rstrip(b"\x00")]


def strip_adts(data: bytes) -> bytes:
    assert data[0] == 0xFF and data[1] & 0xF0 == 0xF0, "not an ADTS frame"
    header = 7 if data[1] & 1 else 9
    length = ((data[3] & 3) << 11) | (data[4] << 3) | (data[5] >> 5)
    assert length == len(data), "one ADTS frame per packet"
    return data[header:]


def source_packets(name: str) -> dict[int, list[tuple[bytes, int, int, str]]]:
    """Per stream index: (payload, pts_90k, dts_90k, codec) of the MP4's packets as ffmpeg sees them."""
    out: dict[int, list] = {}
    with av.open(str(fixture_path(name))) as c:
        for p in c.demux():
            if not p.size:
                continue
            tb = p.stream.time_base
            to90 = lambda t: int(round(t * tb.numerator * 90000 / tb.denominator))  # noqa: E731
            out.setdefault(p.stream.index, []).append((bytes(p), to90(p.pts), to90(p.dts), p.stream.codec_context.name))
    return out


def normalise(codec: str, payload: bytes, annexb: bool) -> bytes | tuple:
    if codec == "aac":
        return strip_adts(payload) if annexb else payload
    nals = nals_from_annexb(payload) if annexb else nals_from_length_prefixed(payload)
    return tuple(n for n in nals if nal_type(codec, n) not in FRAMING_NALS[codec])


def playlist_packets(playlist_url: str) -> tuple[dict[str, list], float]:
    playlist = m3u8.loads(get(playlist_url).decode())
    data = b"".join(get(urljoin(playlist_url, s.uri)) for s in playlist.segments)
    out: dict[str, list] = {}
    with av.open(io.BytesIO(data), format="mpegts") as c:
        for p in c.demux():
            if p.size:
                out.setdefault(p.stream.type, []).append((bytes(p), p.pts - TS_PTS_OFFSET, p.dts - TS_PTS_OFFSET))
    return out, sum(s.duration for s in playlist.segments)


@pytest.mark.parametrize("name", sorted(CASES))
def test_packets_equal_source(gateway_ts_url, name):
    master_url = gateway_ts_url + CASES[name]
    master = m3u8.loads(get(master_url).decode())
    source = source_packets(name)
    video_src = [v for v in source.values() if v[0][3] in ("h264", "hevc")]
    audio_src = [v for v in source.values() if v[0][3] == "aac"]
    with av.open(str(fixture_path(name))) as c:
        duration = max(float(s.duration * s.time_base) for s in c.streams if s.duration)

    # Which source tracks each media playlist carries, from its track selection suffix.
    playlists = [p.uri for p in master.playlists] + [m.uri for m in master.media if m.uri]
    seen_audio = set()
    for uri in playlists:
        got, total = playlist_packets(urljoin(master_url, uri))
        assert total == pytest.approx(duration, abs=0.05), f"{uri}: EXTINF sum {total} vs duration {duration}"
        expected = {}
        if "-v" in uri or ("-a" not in uri and video_src):
            expected["video"] = video_src[0]
        a_index = int(uri.split("-a")[1].split("-")[0].split(".")[0]) if "-a" in uri else (1 if audio_src else None)
        if a_index and (("-a" in uri) or "-v" not in uri):
            expected["audio"] = audio_src[a_index - 1]
            seen_audio.add(a_index)
        assert set(got) == set(expected), f"{uri}: streams {set(got)} vs {set(expected)}"
        for kind, src in expected.items():
            out = got[kind]
            codec = src[0][3]
            assert len(out) == len(src), f"{uri} {kind}: {len(out)} packets, source has {len(src)}"
            src_norm = [normalise(codec, p[0], False) for p in src]
            out_norm = [normalise(codec, p[0], True) for p in out]
            mismatch = [i for i, (a, b) in enumerate(zip(src_norm, out_norm)) if a != b]
            assert not mismatch, f"{uri} {kind}: payload differs at packets {mismatch[:5]}"
            for col, label in ((1, "pts"), (2, "dts")):
                s = np.array([p[col] for p in src], dtype=np.int64)
                o = np.array([p[col] for p in out], dtype=np.int64)
                if kind == "audio" and label == "dts":
                    continue  # AAC: dts == pts on both sides
                worst = int(np.abs(s - o).max())
                assert worst <= 1, f"{uri} {kind} {label}: off by up to {worst} ticks of 90 kHz"
    assert seen_audio == set(range(1, len(audio_src) + 1)), "every audio track is reachable from the master"
