"""HDS packaging against independent ground truth: ffmpeg's FLV demuxer and decoders (PyAV) on the fragments'
FLV tags, PyAV's own demux of the source MP4, and a bootstrap (abst) parser and an AMF0 decoder written here from the
specs (Adobe Flash Video File Format Specification 10.1 Annex E/F, AMF0). Golden F4M manifests for synthetic media.

Run ``python -m pytest tests/packagers/test_hds.py --update-golden`` after an intended change of the manifest or
fragment layout, then review the diff of tests/golden/hds_*.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import math
import os
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache

import av
import av.logging
import numpy as np
import pytest

from fixtures.generate import fixture_path
from packagers.errors import ErrorCode, PackagerError
from packagers.hds import (BootstrapInfo, HdsMuxer, build_bootstrap, build_f4m, fragment_muxer, fragment_name,
                           fragment_sizes, parse_name)  # fmt: skip
from packagers.codecs import amf0, flv
from packagers.media_set import MediaSet
from packagers.model import CodecConfig
from packagers.mp4 import open_presentation
from packagers.naming import TrackSpec

from .golden import check_golden
from .synthetic import audio_track, presentation, video_track

NS = {"f4m": "http://ns.adobe.com/f4m/1.0"}
SEGMENT_MS = 2000

# -- independent readers: boxes, FLV tags, abst, AMF0 -----------------------------------------------------------------


def boxes(data: bytes) -> list[tuple[str, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        assert size >= header and pos + size <= len(data), f"box {kind!r} at {pos} overruns"
        out.append((kind.decode(), data[pos + header : pos + size]))
        pos += size
    return out


@dataclass
class Tag:
    offset: int  # of the tag inside the mdat payload
    type: int
    timestamp: int
    data: bytes  # the tag's data, AV header included


def flv_tags(payload: bytes) -> list[Tag]:
    """FLV tags back to back, each followed by its PreviousTagSize (E.3), as an F4F mdat carries them."""
    tags, pos = [], 0
    while pos < len(payload):
        assert pos + 15 <= len(payload), "truncated tag"
        kind, size = payload[pos], int.from_bytes(payload[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(payload[pos + 4 : pos + 7], "big") | payload[pos + 7] << 24
        assert payload[pos + 8 : pos + 11] == b"\0\0\0", "StreamID must be 0"
        data = payload[pos + 11 : pos + 11 + size]
        assert len(data) == size
        (previous,) = struct.unpack_from(">I", payload, pos + 11 + size)
        assert previous == 11 + size, "PreviousTagSize"
        tags.append(Tag(pos, kind, ts, data))
        pos += 15 + size
    return tags


def parse_abst(data: bytes) -> dict:
    """abst (F.3.1) with its asrt/afrt, read field by field as the spec lists them."""
    pos = 0

    def u(n):
        nonlocal pos
        pos += n
        return int.from_bytes(data[pos - n : pos], "big")

    def string():
        nonlocal pos
        end = data.index(b"\0", pos)
        text, pos = data[pos:end].decode(), end + 1
        return text

    size, kind = u(4), data[4:8]
    pos = 8
    assert kind == b"abst" and size == len(data)
    out = {"version_flags": u(4), "bootstrap_version": u(4)}
    flags = u(1)
    out.update(profile=flags >> 6, live=flags >> 5 & 1, update=flags >> 4 & 1, timescale=u(4), current=u(8),
               smpte=u(8), movie=string())  # fmt: skip
    out["servers"] = [string() for _ in range(u(1))]
    out["qualities"] = [string() for _ in range(u(1))]
    out["drm"], out["meta"] = string(), string()
    out["asrt"] = []
    for _ in range(u(1)):
        start, size = pos, u(4)
        assert data[pos : pos + 4] == b"asrt"
        pos += 4 + 4
        modifiers = [string() for _ in range(u(1))]
        entries = [(u(4), u(4)) for _ in range(u(4))]
        assert pos == start + size
        out["asrt"].append((modifiers, entries))
    out["afrt"] = []
    for _ in range(u(1)):
        start, size = pos, u(4)
        assert data[pos : pos + 4] == b"afrt"
        pos += 4 + 4
        timescale = u(4)
        modifiers = [string() for _ in range(u(1))]
        entries = []
        for _ in range(u(4)):
            first, ts, duration = u(4), u(8), u(4)
            entries.append((first, ts, duration, u(1) if duration == 0 else None))
        assert pos == start + size
        out["afrt"].append((timescale, modifiers, entries))
    assert pos == len(data)
    return out


def fragment_table(abst: dict, count: int) -> list[tuple[int, int]]:
    """(timestamp, duration) of fragments 1..count from the afrt runs (each entry covers up to the next one)."""
    _, _, entries = abst["afrt"][0]
    runs = [e for e in entries if e[2] != 0]
    out = []
    for n in range(1, count + 1):
        first, ts, duration, _ = [e for e in runs if e[0] <= n][-1]
        out.append((ts + (n - first) * duration, duration))
    return out


def amf0_decode(data: bytes, pos: int = 0):
    """(value, next position) for the AMF0 types onMetaData uses."""
    marker = data[pos]
    pos += 1
    if marker == 0x00:
        return struct.unpack_from(">d", data, pos)[0], pos + 8
    if marker == 0x01:
        return bool(data[pos]), pos + 1
    if marker == 0x02:
        n = struct.unpack_from(">H", data, pos)[0]
        return data[pos + 2 : pos + 2 + n].decode(), pos + 2 + n
    if marker == 0x0C:
        n = struct.unpack_from(">I", data, pos)[0]
        return data[pos + 4 : pos + 4 + n].decode(), pos + 4 + n
    if marker == 0x05:
        return None, pos
    if marker in (0x03, 0x08):
        if marker == 0x08:
            pos += 4  # associative count
        out = {}
        while True:
            n = struct.unpack_from(">H", data, pos)[0]
            key = data[pos + 2 : pos + 2 + n].decode()
            pos += 2 + n
            if not key and data[pos] == 0x09:
                return out, pos + 1
            out[key], pos = amf0_decode(data, pos)
    raise AssertionError(f"unexpected AMF0 marker {marker}")


# -- serving fragments the way the gateway does ------------------------------------------------------------------


@dataclass
class Served:
    media_set: MediaSet
    spec: TrackSpec
    fragments: list[bytes]

    @property
    def selection(self):
        return self.media_set.resolve(self.spec)

    def mdat(self, k: int) -> bytes:
        kinds = boxes(self.fragments[k])
        assert [kind for kind, _ in kinds] == ["afra", "mdat"]
        return kinds[1][1]

    def tags(self, k: int) -> list[Tag]:
        return flv_tags(self.mdat(k))

    def flv_file(self, ks=None, script: bytes = b"") -> bytes:
        kinds = {t.kind for t in self.selection.tracks}
        head = flv.file_header("audio" in kinds, "video" in kinds)
        body = [self.mdat(k) for k in (range(len(self.fragments)) if ks is None else ks)]
        return head + (flv.tag(flv.TAG_TYPE_SCRIPT_DATA, 0, script) if script else b"") + b"".join(body)


def serve(media_set: MediaSet, spec: TrackSpec) -> Served:
    sel = media_set.resolve(spec)
    muxer = fragment_muxer(media_set, sel)
    out = []
    fd = os.open(sel.source, os.O_RDONLY)
    try:
        for k in range(media_set.plan(sel).count):
            reqs = media_set.segment_reads(sel, k)
            bufs = [os.pread(fd, r.size, r.offset) for r in reqs]
            out.append(muxer.build(media_set.media_segment(sel, k, reqs, bufs)))
    finally:
        os.close(fd)
    return Served(media_set, spec, out)


@lru_cache(maxsize=None)
def media_set_of(*names: str) -> MediaSet:
    return MediaSet([open_presentation(fixture_path(n)) for n in names], SEGMENT_MS)


@lru_cache(maxsize=None)
def served(name: str, suffix: str = "") -> Served:
    return serve(media_set_of(name), TrackSpec.parse(suffix))


# -- the source as PyAV sees it ------------------------------------------------------------------------------------


@dataclass
class SourcePacket:
    dts_ms: float
    pts_ms: float
    data: bytes
    key: bool


@lru_cache(maxsize=None)
def source_packets(name: str) -> dict[int, list[SourcePacket]]:
    """Per stream index of the MP4 (PyAV, edit lists applied: first video dts = -2 frames, AAC pts = -1024)."""
    out: dict[int, list[SourcePacket]] = {}
    with av.open(str(fixture_path(name))) as c:
        for p in c.demux():
            if p.size == 0:
                continue
            tb = float(p.time_base) * 1000
            out.setdefault(p.stream.index, []).append(SourcePacket(p.dts * tb, p.pts * tb, bytes(p), p.is_keyframe))
    return out


def documented_offset(name: str) -> int:
    """The HDS timeline constant, from PyAV's view of the file: minus the earliest decode time, rounded to ms."""
    firsts = [math.floor(pk[0].dts_ms + 0.5) for pk in source_packets(name).values()]
    return max(0, -min(firsts))


def source_streams(name: str, spec: TrackSpec) -> dict[str, int]:
    """FLV stream kind -> source stream index, for a selection of the file."""
    with av.open(str(fixture_path(name))) as c:
        videos = [s.index for s in c.streams if s.type == "video"]
        audios = [s.index for s in c.streams if s.type == "audio"]
    if spec.video is None and spec.audio is None:
        picked = {"video": videos[:1], "audio": audios[:1]}
    else:
        picked = {"video": videos[spec.video - 1 : spec.video] if spec.video else [],
                  "audio": audios[spec.audio - 1 : spec.audio] if spec.audio else []}  # fmt: skip
    return {k: v[0] for k, v in picked.items() if v}


def frame_digest(frame) -> str:
    return hashlib.sha1(frame.to_ndarray().tobytes()).hexdigest()


def demux_and_decode(data: bytes, fmt: str | None = None):
    """(packets per stream kind, decoded frame digests per kind, error log lines) of a whole container."""
    packets: dict[str, list] = {}
    frames: dict[str, list] = {}
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs:
            src = io.BytesIO(data) if isinstance(data, bytes) else str(data)
            with av.open(src, format=fmt) as c:
                for p in c.demux():
                    kind = p.stream.type
                    if p.size:
                        packets.setdefault(kind, []).append((p.dts, p.pts, bytes(p), p.is_keyframe))
                    frames.setdefault(kind, []).extend(frame_digest(f) for f in p.decode())
    finally:
        av.logging.set_level(level)
    return packets, frames, [entry for entry in logs if entry[0] <= av.logging.ERROR]


@lru_cache(maxsize=None)
def source_frames(name: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    with av.open(str(fixture_path(name))) as c:
        for p in c.demux():
            out.setdefault(p.stream.index, []).extend(frame_digest(f) for f in p.decode())
    return out


CASES = [("title_180p.mp4", ""), ("two_audio.mp4", ""), ("two_audio.mp4", "-a2"), ("audio_only.mp4", ""),
         ("no_bframes.mp4", ""), ("no_bframes.mp4", "-v1")]  # fmt: skip


# -- (1) every packet and every decoded frame equals the source -------------------------------------------------------


@pytest.mark.parametrize("name,suffix", CASES)
def test_whole_stream_equals_source(name, suffix):
    s = served(name, suffix)
    packets, frames, errors = demux_and_decode(s.flv_file(), "flv")
    assert not errors, errors
    offset = documented_offset(name)
    streams = source_streams(name, s.spec)
    assert set(packets) == set(streams)
    for kind, index in streams.items():
        src, got = source_packets(name)[index], packets[kind]
        assert len(got) == len(src), f"{kind}: {len(got)} packets served, {len(src)} in the source"
        for i, ((dts, pts, data, key), ref) in enumerate(zip(got, src)):
            assert data == ref.data, f"{kind} packet {i}: payload differs"
            # within 1 ms is the requirement; rounding to the nearest ms (as documented) gives half of that
            assert abs(dts - (ref.dts_ms + offset)) <= 0.5 + 1e-6, f"{kind} {i}: dts {dts} vs {ref.dts_ms + offset}"
            assert abs(pts - (ref.pts_ms + offset)) <= 0.5 + 1e-6, f"{kind} {i}: pts {pts} vs {ref.pts_ms + offset}"
            if kind == "video":
                assert key == ref.key, f"video packet {i}: key frame flag"
        # Every packet decodes to a frame. FLV cannot say "drop the AAC priming" (MP4 does, with its edit list), so
        # the source's decoder skips the first 1024 samples and outputs one frame fewer; every other frame is equal.
        reference = source_frames(name)[index]
        assert len(frames[kind]) == len(src), f"{kind}: {len(frames[kind])} frames from {len(src)} packets"
        skip = len(frames[kind]) - len(reference)
        assert skip == (1 if kind == "audio" else 0)
        assert frames[kind][skip:] == reference, f"{kind}: decoded frames differ from the source's"
    # The timeline starts at 0 (the earliest track of the file) and never goes back within a track. (Across tracks
    # it may at a fragment boundary: audio presented just before the cut has later decode times than the key frame
    # that starts the next fragment, by at most its composition offset.)
    tags = [t for k in range(len(s.fragments)) for t in s.tags(k) if t.data[1] == 1]
    if not suffix:
        assert min(t.timestamp for t in tags) == 0
    for kind in (8, 9):
        stamps = [t.timestamp for t in tags if t.type == kind]
        assert stamps == sorted(stamps)


@pytest.mark.parametrize("name,suffix", CASES)
def test_each_fragment_decodes_on_its_own(name, suffix):
    s = served(name, suffix)
    sel = s.selection
    tables = lambda k: s.media_set.segment_tables(sel, k)  # noqa: E731
    for k in range(len(s.fragments)):
        packets, frames, errors = demux_and_decode(s.flv_file([k]), "flv")
        assert not errors, (k, errors)
        for track, table in zip(sel.tracks, tables(k)):
            assert len(packets.get(track.kind, [])) == len(table), (k, track.kind)
            assert len(frames.get(track.kind, [])) == len(table), f"fragment {k + 1}: {track.kind} frames lost"
            if track.kind == "video":
                assert packets["video"][0][3], f"fragment {k + 1} does not start with a key frame"


@pytest.mark.parametrize("name,suffix", CASES)
def test_fragment_layout(name, suffix):
    """afra points at the sequence headers before each key frame; sizes match measure() and fragment_sizes()."""
    s = served(name, suffix)
    sel = s.selection
    sizes = fragment_sizes(s.media_set, sel)
    muxer = fragment_muxer(s.media_set, sel)
    config = {t.kind: t.codec.extradata for t in sel.tracks}
    for k, frag in enumerate(s.fragments):
        assert len(frag) == sizes[k] == muxer.measure(s.media_set.segment_tables(sel, k))
        (_, afra), (_, mdat) = boxes(frag)
        flags, timescale, count = struct.unpack_from(">BII", afra, 4)
        assert (flags, timescale) == (0xC0, 1000)
        entries = [struct.unpack_from(">QQ", afra, 13 + 16 * i) for i in range(count)]
        tags = s.tags(k)
        by_offset = {len(frag) - len(mdat) + t.offset: t for t in tags}
        heads = [i for i, t in enumerate(tags) if t.data[1] == 0]  # AVC/AAC sequence headers
        assert heads[0] == 0
        for time, offset in entries:
            tag = by_offset[offset]
            assert tag.timestamp == time and tag.data[1] == 0
        keys = [t for t in tags if t.type == 9 and t.data[0] >> 4 == 1 and t.data[1] == 1]
        first = tags[len(config)]  # the first sample, after the sequence headers
        assert len(entries) == len(keys) + (0 if first.type == 9 and first.data[0] >> 4 == 1 else 1)
        for t in tags:
            if t.data[1] == 0:
                assert (t.data[5:] if t.type == 9 else t.data[2:]) == config["video" if t.type == 9 else "audio"]
            if t.type == 8:
                assert t.data[0] == 0xAF


# -- (2) the bootstrap states the fragments actually served ---------------------------------------------------------


@pytest.mark.parametrize("name,suffix", CASES)
def test_bootstrap_matches_fragments(name, suffix):
    s = served(name, suffix)
    sel = s.selection
    raw = build_bootstrap(s.media_set, sel)
    abst = parse_abst(raw)
    count = s.media_set.plan(sel).count
    assert (abst["profile"], abst["live"], abst["update"], abst["timescale"]) == (0, 0, 0, 1000)
    assert abst["asrt"] == [([], [(1, count)])]
    timescale, _, entries = abst["afrt"][0]
    assert timescale == 1000 and entries[-1] == (0, 0, 0, 0)  # end of presentation
    table = fragment_table(abst, count)
    assert len(table) == len(s.fragments) == count
    for k, (start, duration) in enumerate(table):
        tags = s.tags(k)
        assert abs(tags[0].timestamp - start) <= 1, f"fragment {k + 1}: first tag at {tags[0].timestamp}, table {start}"
        # Fragment times are decode times of the driving track (video, else audio); the other track's tags may run
        # past the next fragment's start by up to the key frame's composition offset (see above).
        driving = 9 if sel.tracks[0].kind == "video" else 8
        assert all(start <= t.timestamp < start + duration for t in tags if t.type == driving)
        assert all(start <= t.timestamp < start + duration + 200 for t in tags)
        if k:
            assert start == table[k - 1][0] + table[k - 1][1]
    assert abst["current"] == table[-1][0] + table[-1][1]
    # run-length compressed: consecutive entries differ in duration
    runs = [e for e in entries if e[2]]
    assert all(a[2] != b[2] for a, b in zip(runs, runs[1:]))
    assert bytes(BootstrapInfo.parse(raw)) == raw


def test_url_set_shares_one_timeline():
    names = ("title_360p.mp4", "title_240p.mp4", "title_180p.mp4")
    media_set = media_set_of(*names)
    starts = []
    for f in (1, 2, 3):
        s = serve(media_set, TrackSpec(f))
        table = fragment_table(parse_abst(build_bootstrap(media_set, s.selection)), len(s.fragments))
        assert [t for t, _ in table] == [s.tags(k)[0].timestamp for k in range(len(s.fragments))]
        starts.append(table)
        assert fragment_name(2, s.selection.spec) == f"frag-f{f}-v1-a1-Seg1-Frag3"
    assert starts[0] == starts[1] == starts[2]


# -- (3) the manifest ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["title_180p.mp4", "two_audio.mp4", "audio_only.mp4"])
def test_manifest(name):
    media_set = media_set_of(name)
    root = ET.fromstring(build_f4m(media_set))
    assert root.tag == "{http://ns.adobe.com/f4m/1.0}manifest"
    assert root.find("f4m:streamType", NS).text == "recorded"
    duration = float(root.find("f4m:duration", NS).text)
    assert duration == pytest.approx(media_set.presentations[0].duration_seconds, abs=0.001)
    boots = {b.get("id"): base64.b64decode(b.text) for b in root.findall("f4m:bootstrapInfo", NS)}
    medias = root.findall("f4m:media", NS)
    assert len(medias) == (2 if name == "two_audio.mp4" else 1)
    for media in medias:
        url = media.get("url")
        assert url.startswith("frag") and url.endswith("-")
        first = parse_name(url + "Seg1-Frag1")
        spec, index = first.spec, first.index
        assert index == 0 and media.get("streamId") == spec.suffix().lstrip("-")
        sel = media_set.resolve(spec)
        assert boots[media.get("bootstrapInfoId")] == build_bootstrap(media_set, sel)
        s = served(name, spec.suffix())
        total = sum(len(f) for f in s.fragments)
        assert abs(int(media.get("bitrate")) - math.ceil(total * 8 / duration / 1000)) <= 1
        meta_raw = base64.b64decode(media.find("f4m:metadata", NS).text)
        title, pos = amf0_decode(meta_raw)
        meta, end = amf0_decode(meta_raw, pos)
        assert title == "onMetaData" and end == len(meta_raw)
        assert meta["duration"] == pytest.approx(duration, abs=0.05)
        assert meta["filesize"] == total
        video = next((t for t in sel.tracks if t.kind == "video"), None)
        if video is not None:
            assert (meta["width"], meta["height"], meta["videocodecid"]) == (video.codec.width, video.codec.height, 7)
            assert (media.get("width"), media.get("height")) == (str(video.codec.width), str(video.codec.height))
            assert meta["framerate"] == pytest.approx(24)
        else:
            assert "width" not in meta and media.get("width") is None
        if any(t.kind == "audio" for t in sel.tracks):
            assert (meta["audiocodecid"], meta["audiosamplerate"], meta["stereo"]) == (10, 44100, True)
        if spec.audio == 2:
            assert (media.get("type"), media.get("alternate"), media.get("lang")) == ("audio", "true", "fra")
        # ffmpeg's FLV demuxer reads the same onMetaData as the first script tag of the FLV file
        with av.open(io.BytesIO(s.flv_file(script=meta_raw)), format="flv") as c:
            assert c.duration / 1e6 == pytest.approx(meta["duration"], abs=0.001)  # not estimated from the tags
            if "audiochannels" in meta:  # a key ffmpeg does not interpret lands in the container metadata
                assert c.metadata.get("audiochannels") == "2"
            for stream in c.streams.video:
                assert (stream.codec_context.width, stream.codec_context.height) == (meta["width"], meta["height"])


# -- (4) golden manifests and fragment digests on synthetic media -------------------------------------------------


def _with_config(track):
    extradata = b"\x01\x64\x00\x1e\xff\xe1\x00\x04gd\x00\x1e\x01\x00\x02h\xee" if track.kind == "video" else b"\x12\x10"
    return dataclasses.replace(track, codec=dataclasses.replace(track.codec, extradata=extradata))


def _synthetic(*tracks, source="synthetic.mp4"):
    return presentation(*map(_with_config, tracks), source=source)


SCENARIOS = {
    "single_file": lambda: MediaSet([_synthetic(video_track(20), audio_track(20))], 6000),
    "url_set_ladder": lambda: MediaSet([_synthetic(video_track(20, timescale=12288 * k), audio_track(20),
                                                   source=f"r{k}.mp4") for k in (1, 2, 3)], 6000),  # fmt: skip
    "two_audio": lambda: MediaSet([_synthetic(video_track(13), audio_track(13, track_id=2),
                                              audio_track(13, track_id=3, language="fra"))], 4000),  # fmt: skip
    "audio_only": lambda: MediaSet([_synthetic(audio_track(14.5))], 6000),
    "long_gop": lambda: MediaSet([_synthetic(video_track(25, gop=24 * 7), audio_track(25))], 6000),
}


def _fake_bytes(offset: int, size: int) -> bytes:
    return (np.arange(offset, offset + size, dtype=np.int64) % 251).astype(np.uint8).tobytes()


def _render(media_set: MediaSet) -> dict[str, str]:
    out = {"manifest.f4m": build_f4m(media_set)}
    digests = []
    for media in ET.fromstring(out["manifest.f4m"]).findall("f4m:media", NS):
        sel = media_set.resolve(parse_name(media.get("url") + "Seg1-Frag1").spec)
        muxer = fragment_muxer(media_set, sel)
        for k in range(media_set.plan(sel).count):
            reqs = media_set.segment_reads(sel, k)
            data = muxer.build(media_set.media_segment(sel, k, reqs, [_fake_bytes(r.offset, r.size) for r in reqs]))
            digests.append(f"{fragment_name(k, sel.spec)} {len(data)} {hashlib.sha256(data).hexdigest()}")
    out["fragments.sha256"] = "\n".join(digests) + "\n"
    return out


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_golden(scenario, update_golden):
    check_golden(f"hds_{scenario}", _render(SCENARIOS[scenario]()), update_golden)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_synthetic_bootstraps_are_consistent(scenario):
    media_set = SCENARIOS[scenario]()
    root = ET.fromstring(build_f4m(media_set))
    for boot in root.findall("f4m:bootstrapInfo", NS):
        abst = parse_abst(base64.b64decode(boot.text))
        _, entries = abst["asrt"][0]
        table = fragment_table(abst, entries[0][1])
        assert table[0][0] >= 0 and all(d > 0 for _, d in table)
        assert abst["current"] == table[-1][0] + table[-1][1]
        assert abs(abst["current"] - media_set.presentations[0].duration_seconds * 1000) <= 100


def test_selection_with_empty_fragments():
    """Audio that ends long before the video: its alternate-audio fragments past the end are empty (an afra without
    entries and an empty mdat), and the bootstrap marks them as zero-duration fragments at the end of the timeline."""
    media_set = MediaSet([_synthetic(video_track(20), audio_track(3))], 6000)
    sel = media_set.resolve(TrackSpec(None, None, 1))
    muxer = fragment_muxer(media_set, sel)
    count = media_set.plan(sel).count
    sizes = fragment_sizes(media_set, sel)
    for k in range(count):
        reqs = media_set.segment_reads(sel, k)
        frag = muxer.build(media_set.media_segment(sel, k, reqs, [_fake_bytes(r.offset, r.size) for r in reqs]))
        assert len(frag) == sizes[k] == muxer.measure(media_set.segment_tables(sel, k))
        if k:
            assert boxes(frag) == [("afra", bytes(4) + struct.pack(">BII", 0xC0, 1000, 0)), ("mdat", b"")]
    abst = parse_abst(build_bootstrap(media_set, sel))
    _, _, entries = abst["afrt"][0]
    assert entries[0][:3] == (1, 60, abst["current"] - 60)  # 60 ms: the AAC priming after the video's 83 ms offset
    assert entries[1] == (2, abst["current"], 0, 1) and entries[-1] == (0, 0, 0, 0)


# -- (5) fragment names: tests/packagers/test_names.py ---------------------------------------------------------------


# -- (6) codecs HDS cannot carry, and muxer contracts -----------------------------------------------------------------


def test_hevc_is_unsupported():
    media_set = MediaSet([open_presentation(fixture_path("hevc.mp4"))], SEGMENT_MS)
    sel = media_set.resolve(TrackSpec())
    for call in (lambda: HdsMuxer(sel.tracks), lambda: build_f4m(media_set), lambda: fragment_muxer(media_set, sel)):
        with pytest.raises(PackagerError) as e:
            call()
        assert e.value.code is ErrorCode.UNSUPPORTED and "H.264" in e.value.message and "hevc" in e.value.message


def test_muxer_contracts():
    v, a = _with_config(video_track(4)), _with_config(audio_track(4))
    a2 = _with_config(audio_track(4, track_id=3))
    with pytest.raises(PackagerError) as e:
        HdsMuxer([v, a, a2])
    assert e.value.code is ErrorCode.BAD_REQUEST
    with pytest.raises(PackagerError) as e:
        HdsMuxer([video_track(4)])  # no avcC
    assert e.value.code is ErrorCode.BAD_DATA
    with pytest.raises(PackagerError) as e:
        HdsMuxer([v, a], timestamp_offset_ms=10)  # the B-frame video needs 83 ms
    assert e.value.code is ErrorCode.BAD_REQUEST
    mp3 = dataclasses.replace(a, codec=CodecConfig("mp4a", "mp4a.40.34", b"\x00", sample_rate=44100, channels=2))
    mp3 = dataclasses.replace(mp3, codec=dataclasses.replace(mp3.codec, fourcc=".mp3"))
    with pytest.raises(PackagerError) as e:
        HdsMuxer([v, mp3])
    assert e.value.code is ErrorCode.UNSUPPORTED


# -- AMF0 encoder ---------------------------------------------------------------------------------------------------


def test_amf0_round_trip():
    value = {"duration": 12.5, "stereo": True, "name": "x" * 10, "long": "é" * 40000, "none": None, "n": 3,
             "obj": {"a": 1.0, "b": False}}  # fmt: skip
    raw = amf0.script_data("onMetaData", amf0.EcmaArray(value))
    name, pos = amf0_decode(raw)
    decoded, end = amf0_decode(raw, pos)
    assert name == "onMetaData" and end == len(raw)
    assert decoded == {**value, "n": 3.0}
    assert raw.index(b"\x00\x03obj\x03") > 0  # a plain dict is an anonymous object (2.5), not an ECMA array
    assert raw[pos] == 0x08 and struct.unpack_from(">I", raw, pos + 1)[0] == len(value)
    assert amf0.encode(2.0) == b"\x00\x40\x00\x00\x00\x00\x00\x00\x00"
    with pytest.raises(amf0.Amf0Error):
        amf0.encode(object())
