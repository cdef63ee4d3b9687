"""TsMuxer against independent ground truth: ffmpeg's decoders and demuxer (PyAV, ffprobe) and a small TS parser
written here from ISO/IEC 13818-1, on real fixtures cut into ~2 s segments at key frames."""
from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
import subprocess
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import av
import numpy as np
import pytest

from fixtures.generate import fixture_path
from packagers.errors import ErrorCode, PackagerError
from packagers.media_data import MediaSegment, TrackSegment
from packagers.model import CodecConfig
from packagers.ts import TS_PTS_OFFSET, TsMuxer
from tests.packagers import pyav_tracks

FIXTURES = ["title_360p.mp4", "no_bframes.mp4", "hevc.mp4", "audio_only.mp4", "two_audio.mp4"]
EXPECTED_TYPES = {  # stream_type per elementary PID
    "title_360p.mp4": {0x100: 0x1B, 0x101: 0x0F},
    "no_bframes.mp4": {0x100: 0x1B, 0x101: 0x0F},
    "hevc.mp4": {0x100: 0x24, 0x101: 0x0F},
    "audio_only.mp4": {0x101: 0x0F},
    "two_audio.mp4": {0x100: 0x1B, 0x101: 0x0F, 0x102: 0x0F},
}


# -- a tiny transport stream parser (ISO/IEC 13818-1 2.4.3) --------------------------------------------------------


@dataclass
class Packet:
    pid: int
    pusi: bool
    cc: int
    has_payload: bool
    af: bytes  # adaptation field without its length byte
    payload: bytes

    @property
    def pcr(self) -> int | None:  # 90 kHz base
        if len(self.af) >= 7 and self.af[0] & 0x10:
            return int.from_bytes(self.af[1:5], "big") << 1 | self.af[5] >> 7
        return None

    @property
    def random_access(self) -> bool:
        return bool(self.af and self.af[0] & 0x40)


def parse_packets(data: bytes) -> list[Packet]:
    assert len(data) % 188 == 0, "not a whole number of 188-byte packets"
    out = []
    for i in range(0, len(data), 188):
        pkt = data[i : i + 188]
        assert pkt[0] == 0x47, f"sync byte missing in packet {i // 188}"
        afc = pkt[3] >> 4 & 3
        assert afc != 0
        pos, af = 4, b""
        if afc & 2:
            n = pkt[4]
            assert n <= (183 if afc == 2 else 182)
            af, pos = pkt[5 : 5 + n], 5 + n
            assert all(b == 0xFF for b in af[(7 if af and af[0] & 0x10 else 1) :]), "stuffing must be 0xFF"
        pid = (pkt[1] & 0x1F) << 8 | pkt[2]
        out.append(Packet(pid, bool(pkt[1] & 0x40), pkt[3] & 15, bool(afc & 1), af, pkt[pos:]))
    return out


def mpeg_crc32(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1 ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


def section(packet: Packet) -> bytes:
    assert packet.pusi
    payload = packet.payload[1 + packet.payload[0] :]
    length = (payload[1] & 0x0F) << 8 | payload[2]
    sec = payload[: 3 + length]
    assert mpeg_crc32(sec) == 0, "CRC_32 does not check"  # the CRC of a section including its CRC is 0
    return sec


def pmt_streams(sec: bytes) -> tuple[int, dict[int, tuple[int, bytes]]]:
    pcr_pid = (sec[8] & 0x1F) << 8 | sec[9]
    pos = 12 + ((sec[10] & 0x0F) << 8 | sec[11])
    streams = {}
    while pos < len(sec) - 4:
        es_len = (sec[pos + 3] & 0x0F) << 8 | sec[pos + 4]
        streams[(sec[pos + 1] & 0x1F) << 8 | sec[pos + 2]] = (sec[pos], sec[pos + 5 : pos + 5 + es_len])
        pos += 5 + es_len
    return pcr_pid, streams


@dataclass
class Pes:
    pid: int
    packets: list[Packet]
    stream_id: int
    packet_length: int
    pts: int
    dts: int | None
    data: bytes  # PES packet data bytes

    @property
    def decode_time(self) -> int:
        return self.pts if self.dts is None else self.dts


def _timestamp(b: bytes) -> int:
    return (b[0] >> 1 & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def parse_pes(packets: list[Packet]) -> Pes:
    raw = b"".join(p.payload for p in packets)
    assert raw[:3] == b"\x00\x00\x01"
    length = int.from_bytes(raw[4:6], "big")
    flags, header_len = raw[7] >> 6, raw[8]
    assert raw[6] & 0xC0 == 0x80 and flags in (2, 3)
    assert raw[9] >> 4 == flags and raw[9] & 1 and raw[11] & 1 and raw[13] & 1, "PTS prefix or marker bits"
    pts, dts = _timestamp(raw[9:14]), None
    if flags == 3:
        assert raw[14] >> 4 == 1 and raw[14] & 1 and raw[16] & 1 and raw[18] & 1
        dts = _timestamp(raw[14:19])
    assert all(b == 0xFF for b in raw[9 + 5 * flags - 5 : 9 + header_len]), "PES header stuffing must be 0xFF"
    data = raw[9 + header_len :]
    if length:
        assert len(raw) == 6 + length, "PES_packet_length disagrees with the packets"
    return Pes(packets[0].pid, packets, raw[3], length, pts, dts, data)


@dataclass
class ParsedSegment:
    packets: list[Packet]
    pcr_pid: int
    streams: dict[int, tuple[int, bytes]]
    pes: list[Pes]  # in stream order


def parse_segment(data: bytes) -> ParsedSegment:
    packets = parse_packets(data)
    assert packets[0].pid == 0 and packets[1].pid == 0x1000, "PAT then PMT first"
    pat = section(packets[0])
    assert pat[0] == 0 and pat[8:12] == b"\x00\x01\xf0\x00"  # program 1 → PMT PID 0x1000
    pmt = section(packets[1])
    assert pmt[0] == 2
    pcr_pid, streams = pmt_streams(pmt)
    open_pes: dict[int, list[Packet]] = {}
    order: list[list[Packet]] = []
    for pk in packets[2:]:
        assert pk.pid in streams, f"unexpected PID {pk.pid:#x}"
        if pk.pusi:
            open_pes[pk.pid] = [pk]
            order.append(open_pes[pk.pid])
        elif pk.has_payload:
            open_pes[pk.pid].append(pk)
    return ParsedSegment(packets, pcr_pid, streams, [parse_pes(group) for group in order])


# -- fixtures: sources, segments and their TS ------------------------------------------------------------------------


@dataclass
class Muxed:
    source: pyav_tracks.Source
    segments: list[MediaSegment]
    ts: list[bytes]

    def ranges(self) -> list[dict[int, tuple[int, int]]]:
        return pyav_tracks.segment_ranges(self.source)


@lru_cache(maxsize=None)
def muxed(name: str) -> Muxed:
    source = pyav_tracks.load(fixture_path(name))
    segments = pyav_tracks.segments(source)
    muxer = TsMuxer(source.tracks)
    return Muxed(source, segments, [muxer.build(s) for s in segments])


def expected_90k(t: np.ndarray, timescale: int) -> np.ndarray:
    """Independent of the muxer: exact fractions, rounded half up."""
    return np.array([math.floor(Fraction(int(v) * 90000, timescale) + Fraction(1, 2)) for v in t]) + TS_PTS_OFFSET


def nal_units_mp4(sample: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(sample):
        n = int.from_bytes(sample[pos : pos + 4], "big")
        out.append(sample[pos + 4 : pos + 4 + n])
        pos += 4 + n
    assert pos == len(sample)
    return out


def nal_units_annexb(data: bytes) -> list[bytes]:
    parts = data.split(b"\x00\x00\x01")
    assert parts[0].strip(b"\x00") == b""
    return [p.rstrip(b"\x00") if i < len(parts) - 1 else p for i, p in enumerate(parts[1:], 1)]


def nal_type(nal: bytes, codec: str) -> int:
    return nal[0] >> 1 & 0x3F if codec == "hevc" else nal[0] & 0x1F


def leading_pictures(track, lo: int, hi: int, data: pyav_tracks.Source) -> int:
    """HEVC RASL pictures (types 8, 9) before the segment's first IRAP in presentation order: undecodable when
    decoding starts at that CRA (open GOP), dropped by decoders."""
    if track.codec.codec != "hevc":
        return 0
    key_pts = int(track.samples.pts[lo])
    return sum(
        1
        for i in range(lo, hi)
        if int(track.samples.pts[i]) < key_pts and nal_type(nal_units_mp4(data.sample(track, i))[0], "hevc") in (8, 9)
    )


# -- structure ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_ts_structure(name):
    m = muxed(name)
    ranges = m.ranges()
    for index, (ts, seg) in enumerate(zip(m.ts, m.segments)):
        parsed = parse_segment(ts)
        assert {pid: st for pid, (st, _) in parsed.streams.items()} == EXPECTED_TYPES[name]
        video = next((t for t in seg.tracks if t.track.kind == "video"), None)
        assert parsed.pcr_pid == (0x100 if video else 0x101)
        for pid, (_, descriptors) in parsed.streams.items():
            if pid != 0x100:  # ISO_639_language_descriptor with the track's language
                track = m.source.tracks[pid - 0x101 + (1 if video else 0)]
                assert descriptors == b"\x0a\x04" + track.language.encode() + b"\x00"
        # continuity_counter: PAT/PMT carry the segment index, elementary PIDs count payload packets from 0
        assert parsed.packets[0].cc == parsed.packets[1].cc == index % 16
        expected: dict[int, int] = {}
        for pk in parsed.packets[2:]:
            assert pk.cc == expected.get(pk.pid, 0) % 16
            expected[pk.pid] = expected.get(pk.pid, 0) + pk.has_payload
        # PES per PID: count, PTS/DTS, DTS only when different, PCR on the PCR PID before DTS
        last_pcr = None
        previous_time = -1
        for pes in parsed.pes:
            first = pes.packets[0]
            assert pes.decode_time >= previous_time - 1, "PES not interleaved in DTS order"
            previous_time = pes.decode_time
            assert pes.dts is None or pes.dts != pes.pts
            if pes.pid == parsed.pcr_pid:
                assert first.pcr is not None, "no PCR in the first packet of a PES on the PCR PID"
                assert pes.decode_time - 90000 <= first.pcr <= pes.decode_time
                if last_pcr is not None:
                    assert 0 <= first.pcr - last_pcr <= 9000, "PCRs more than 100 ms apart"
                last_pcr = first.pcr
            else:
                assert first.pcr is None
            assert pes.packet_length != 0 or pes.pid == 0x100, "unbounded PES only for video"
            assert all(len(pk.af) == 0 for pk in pes.packets[1:]), "stuffing only in the first packet"
        for track_seg in seg.tracks:
            track = track_seg.track
            pid = _pid(m, track)
            mine = [pes for pes in parsed.pes if pes.pid == pid]
            lo, hi = ranges[index][track.track_id]
            s = track.samples
            pts = expected_90k(s.pts[lo:hi] - track.edit_offset, track.timescale)
            dts = expected_90k(s.dts[lo:hi] - track.edit_offset, track.timescale)
            if track.kind == "video":
                assert len(mine) == hi - lo
                assert [pes.pts for pes in mine] == pts.tolist()
                assert [pes.decode_time for pes in mine] == dts.tolist()
                assert [pes.packets[0].random_access for pes in mine] == s.keyframe[lo:hi].tolist()
                for pes, key in zip(mine, s.keyframe[lo:hi]):
                    nals = nal_units_annexb(pes.data)
                    codec = track.codec.codec
                    assert nal_type(nals[0], codec) == (35 if codec == "hevc" else 9), "AUD first"
                    if key:
                        sets = list(track.codec.parameter_sets)
                        assert nals[1 : 1 + len(sets)] == sets, "parameter sets after the AUD of a key frame"
                    assert pes.data[:4] == b"\x00\x00\x00\x01"
            else:
                frames = []
                for pes in mine:
                    pos, count = 0, 0
                    while pos < len(pes.data):
                        assert pes.data[pos] == 0xFF and pes.data[pos + 1] & 0xF6 == 0xF0, "ADTS syncword"
                        length = (pes.data[pos + 3] & 3) << 11 | pes.data[pos + 4] << 3 | pes.data[pos + 5] >> 5
                        frames.append((pes.pts if count == 0 else None, pes.data[pos + 7 : pos + length]))
                        pos, count = pos + length, count + 1
                    assert pos == len(pes.data) and 1 <= count <= 5
                    if video is not None:  # an audio PES does not reach past the next video PES
                        later = [v.decode_time for v in parsed.pes if v.pid == 0x100 and v.decode_time > pes.pts]
                        last_pts = pes.pts + (count - 1) * 2089
                        assert not later or last_pts < later[0] + 1
                assert [f[1] for f in frames] == [m.source.sample(track, i) for i in range(lo, hi)]
                starts = [i for i, f in enumerate(frames) if f[0] is not None]
                assert [frames[i][0] for i in starts] == pts[starts].tolist()


def test_ts_timestamps_continue_across_segments_and_agree_across_renditions():
    firsts = []
    for name in ("title_360p.mp4", "title_240p.mp4", "title_180p.mp4"):
        m = muxed(name)
        parsed = [parse_segment(ts) for ts in m.ts]
        video_pts = [[p.pts for p in seg.pes if p.pid == 0x100] for seg in parsed]
        video_dts = [[p.decode_time for p in seg.pes if p.pid == 0x100] for seg in parsed]
        step = 90000 // 24
        for a, b in zip(video_dts, video_dts[1:]):
            assert b[0] - a[-1] == step
        firsts.append([min(p) for p in video_pts])
        assert firsts[-1][0] == TS_PTS_OFFSET  # presentation starts at 0
    assert firsts[0] == firsts[1] == firsts[2]


# -- decoding with ffmpeg -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_ts_segments_decode(name):
    m = muxed(name)
    for index, (ts, seg) in enumerate(zip(m.ts, m.segments)):
        counts, logs = _decode_per_stream(ts)
        assert not logs, f"segment {index}: ffmpeg complained: {logs[:5]}"
        ranges = m.ranges()[index]
        for track_seg in seg.tracks:
            track = track_seg.track
            lo, hi = ranges[track.track_id]
            pid = _pid(m, track)
            expected = hi - lo - leading_pictures(track, lo, hi, m.source)
            assert counts[pid] == expected, f"segment {index} {track.kind}: {counts[pid]} frames, expected {expected}"


def _pid(m: Muxed, track) -> int:
    if track.kind == "video":
        return 0x100
    return 0x101 + [t for t in m.source.tracks if t.kind == "audio"].index(track)


def _decode_per_stream(data: bytes) -> tuple[dict[int, int], list]:
    """Decoded frame count per PID, and the warnings and errors ffmpeg logged meanwhile."""
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture(local=False) as logs:
            with av.open(io.BytesIO(data), format="mpegts") as container:
                counts = {s.id: 0 for s in container.streams}
                for packet in container.demux():
                    for _ in packet.decode():
                        counts[packet.stream.id] += 1
    finally:
        av.logging.set_level(None)
    return counts, list(logs)


@pytest.mark.parametrize("name", FIXTURES)
def test_ts_sample_fidelity(name):
    """ffmpeg's demuxer gives back exactly the source samples and times: nothing lost, duplicated or altered."""
    m = muxed(name)
    for index, (ts, seg) in enumerate(zip(m.ts, m.segments)):
        with av.open(io.BytesIO(ts), format="mpegts") as container:
            got: dict[int, list] = {s.id: [] for s in container.streams}
            for packet in container.demux():
                if packet.size:
                    got[packet.stream.id].append((packet.pts, packet.dts, bytes(packet)))
        ranges = m.ranges()[index]
        for track_seg in seg.tracks:
            track = track_seg.track
            lo, hi = ranges[track.track_id]
            packets = got[_pid(m, track)]
            assert len(packets) == hi - lo
            s = track.samples
            pts = expected_90k(s.pts[lo:hi] - track.edit_offset, track.timescale)
            dts = expected_90k(s.dts[lo:hi] - track.edit_offset, track.timescale)
            assert np.abs(np.array([p[0] for p in packets]) - pts).max() <= 1
            assert np.abs(np.array([p[1] for p in packets]) - dts).max() <= 1
            for i, (_, _, data) in zip(range(lo, hi), packets):
                source = m.source.sample(track, i)
                if track.kind == "audio":
                    assert data[:2] == b"\xff\xf1" and data[7:] == source
                    continue
                codec = track.codec.codec
                inserted = {35, 32, 33, 34} if codec == "hevc" else {9, 7, 8}
                nals = nal_units_annexb(data)
                kept = [n for n in nals if nal_type(n, codec) not in inserted or n not in track.codec.parameter_sets]
                kept = [n for n in kept if nal_type(n, codec) != (35 if codec == "hevc" else 9)]
                assert kept == nal_units_mp4(source)


@pytest.mark.parametrize("name", FIXTURES)
def test_ts_concatenation_plays(name, tmp_path):
    m = muxed(name)
    path = tmp_path / "all.ts"
    path.write_bytes(b"".join(m.ts))
    counts, logs = _decode_per_stream(path.read_bytes())
    assert not logs, logs[:5]
    for track in m.source.tracks:
        assert counts[_pid(m, track)] == len(track.samples)
    if shutil.which("ffprobe"):
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "packet=stream_index", "-of", "json", str(path)],
            capture_output=True, check=True, text=True,
        )  # fmt: skip
        probed = [p["stream_index"] for p in json.loads(out.stdout)["packets"]]
        assert len(probed) == sum(len(t.samples) for t in m.source.tracks)
        assert out.stderr == ""


# -- edge cases and variants ----------------------------------------------------------------------------------------


def _rewrite_video(m: Muxed, seg: MediaSegment, transform, **config) -> MediaSegment:
    """The segment with every video sample passed through ``transform(nals, key) -> sample bytes``."""
    parts = []
    for ts in seg.tracks:
        if ts.track.kind != "video":
            parts.append(ts)
            continue
        pos = ts.sample_positions().tolist()
        samples = [ts.payload[p : p + n] for p, n in zip(pos, ts.samples.sizes.tolist())]
        new = [transform(nal_units_mp4(s), bool(k)) for s, k in zip(samples, ts.samples.keyframe)]
        table = dataclasses.replace(ts.samples, sizes=np.array([len(x) for x in new], dtype=np.uint32))
        track = dataclasses.replace(ts.track, codec=dataclasses.replace(ts.track.codec, **config))
        parts.append(TrackSegment(track, table, b"".join(new)))
    return MediaSegment(seg.index, tuple(parts))


def _prefixed(nals, size=4) -> bytes:
    return b"".join(len(n).to_bytes(size, "big") + n for n in nals)


@pytest.mark.parametrize("name", ["title_360p.mp4", "hevc.mp4"])
def test_ts_same_output_for_equivalent_samples(name):
    """2-byte NAL lengths, in-band parameter sets, and AUDs already in the samples give the very same TS."""
    m = muxed(name)
    codec = m.source.tracks[0].codec
    aud = bytes.fromhex("4601 50") if codec.codec == "hevc" else b"\x09\xf0"
    variants = {
        "two-byte lengths": (lambda nals, key: _prefixed(nals, 2), {"nal_length_size": 2}),
        "in-band parameter sets": (lambda nals, key: _prefixed((list(codec.parameter_sets) if key else []) + nals), {}),
        "AUD in samples": (lambda nals, key: _prefixed([aud] + nals), {}),
        "avc3/hev1 style": (
            lambda nals, key: _prefixed((list(codec.parameter_sets) if key else []) + nals),
            {"parameter_sets": (), "extradata": b""},
        ),
    }
    for label, (transform, config) in variants.items():
        for seg, ts in list(zip(m.segments, m.ts))[:2]:
            variant = _rewrite_video(m, seg, transform, **config)
            muxer = TsMuxer([t.track for t in variant.tracks])
            assert muxer.build(variant) == ts, label


def test_ts_repeatable_and_thread_safe():
    m = muxed("two_audio.mp4")
    muxer = TsMuxer(m.source.tracks)
    order = list(range(len(m.segments))) * 2
    assert [muxer.build(m.segments[i]) for i in order] == [m.ts[i] for i in order]
    results: dict[int, list[bytes]] = {}

    def work(k):
        results[k] = [muxer.build(m.segments[i]) for i in order]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == [m.ts[i] for i in order] for r in results.values())


def test_ts_partial_segments():
    """A segment where a track has no samples, or only one, is still a valid segment."""
    m = muxed("title_360p.mp4")
    seg = m.segments[1]
    video, audio = seg.tracks
    muxer = TsMuxer(m.source.tracks)
    empty_audio = TrackSegment(audio.track, audio.samples[0:0], b"")
    one_video = TrackSegment(video.track, video.samples[0:1], video.payload[: int(video.samples.sizes[0])])
    for parts in [(video, empty_audio), (one_video, audio)]:
        data = muxer.build(MediaSegment(1, parts))
        parse_segment(data)
        counts, logs = _decode_per_stream(data)
        assert not [log for log in logs if log[0] <= av.logging.ERROR]  # (the PMT still lists the empty stream)
        for part in parts:
            assert counts.get(0x100 if part.track.kind == "video" else 0x101, 0) == len(part.samples)
    for parts in [(empty_audio,), ()]:  # nothing to carry: PAT and PMT only
        assert len(parse_segment(muxer.build(MediaSegment(17, parts))).packets) == 2


def test_ts_errors():
    m = muxed("title_360p.mp4")
    video, audio = m.source.tracks
    with pytest.raises(PackagerError) as e:
        TsMuxer([])
    assert e.value.code is ErrorCode.NO_STREAMS
    with pytest.raises(PackagerError) as e:
        TsMuxer([video, video])
    assert e.value.code is ErrorCode.BAD_REQUEST
    vp9 = dataclasses.replace(video, codec=CodecConfig("vp09", "vp09.00.10.08"))
    with pytest.raises(PackagerError) as e:
        TsMuxer([vp9])
    assert e.value.code is ErrorCode.UNSUPPORTED
    seg = m.segments[0]
    muxer = TsMuxer(m.source.tracks)
    short = MediaSegment(0, (TrackSegment(video, seg.tracks[0].samples, seg.tracks[0].payload[:-1]), seg.tracks[1]))
    with pytest.raises(PackagerError) as e:
        muxer.build(short)
    assert e.value.code is ErrorCode.BAD_DATA
    corrupt = bytearray(seg.tracks[0].payload)
    corrupt[0] = 0x7F  # first NAL length far past its sample
    with pytest.raises(PackagerError) as e:
        muxer.build(MediaSegment(0, (TrackSegment(video, seg.tracks[0].samples, bytes(corrupt)), seg.tracks[1])))
    assert e.value.code is ErrorCode.BAD_DATA
    other = dataclasses.replace(audio, track_id=99)
    with pytest.raises(PackagerError) as e:
        muxer.build(MediaSegment(0, (TrackSegment(other, seg.tracks[1].samples, seg.tracks[1].payload),)))
    assert e.value.code is ErrorCode.BAD_REQUEST
    # the muxer still works after errors (its scratch buffers are not left pinned)
    assert muxer.build(seg) == m.ts[0]


def _demuxed(data: bytes) -> dict[int, list[tuple[int, int, bytes]]]:
    with av.open(io.BytesIO(data), format="mpegts") as container:
        got: dict[int, list] = {s.id: [] for s in container.streams}
        for packet in container.demux():
            if packet.size:
                got[packet.stream.id].append((packet.pts, packet.dts, bytes(packet)))
    return got


@pytest.mark.parametrize("name", ["title_360p.mp4", "audio_only.mp4"])
def test_ts_audio_gap_starts_a_new_pes(name):
    """Frames after a hole in the audio timeline keep their own times (a PES carries one PTS; the rest is implied)."""
    m = muxed(name)
    segment = m.segments[1]
    audio = segment.tracks[-1]
    keep = np.ones(len(audio.samples), dtype=bool)
    keep[[9, 10, 22, 41]] = False
    s = audio.samples
    table = type(s)(**{c: getattr(s, c)[keep] for c in ("offsets", "sizes", "dts", "cts", "durations", "keyframe")})
    pos = audio.sample_positions()
    payload = b"".join(audio.payload[a : a + n] for a, n, k in zip(pos, s.sizes, keep) if k)
    segment = MediaSegment(1, segment.tracks[:-1] + (TrackSegment(audio.track, table, payload),))
    got = _demuxed(TsMuxer(m.source.tracks).build(segment))[0x101]
    expected = expected_90k(table.pts - audio.track.edit_offset, audio.track.timescale)
    assert len(got) == len(table)
    assert np.abs(np.array([g[0] for g in got]) - expected).max() <= 1


def test_ts_aud_inside_a_sample_is_kept():
    """Only an AUD heading a sample is replaced by ours; anything else in the sample is carried as it is."""
    m = muxed("title_360p.mp4")
    aud = b"\x09\xf0"
    variant = _rewrite_video(m, m.segments[1], lambda nals, key: _prefixed(nals[:1] + [aud] + nals[1:]))
    parsed = parse_segment(TsMuxer([t.track for t in variant.tracks]).build(variant))
    for pes in (p for p in parsed.pes if p.pid == 0x100):
        nals = nal_units_annexb(pes.data)
        assert nals[0] == aud and aud in nals[1:]


def test_ts_timestamps_wrap_at_33_bits():
    """PTS, DTS and PCR are 33-bit counters (2.4.3.7): a presentation running past 26.5 hours wraps around."""
    m = muxed("title_360p.mp4")
    seg = m.segments[1]
    parts = []
    for ts in seg.tracks:
        # shift every time so that the segment starts 0.5 s before the 33-bit counter wraps
        target = (1 << 33) - 45000 - TS_PTS_OFFSET
        first = int(ts.samples.pts[0]) - ts.track.edit_offset
        delta = target * ts.track.timescale // 90000 - first
        table = dataclasses.replace(ts.samples, dts=ts.samples.dts + delta)
        parts.append(TrackSegment(dataclasses.replace(ts.track, samples=table), table, ts.payload))
    segment = MediaSegment(1, tuple(parts))
    parsed = parse_segment(TsMuxer([t.track for t in parts]).build(segment))
    for part, pid in zip(parts, (0x100, 0x101)):
        s, track = part.samples, part.track
        pts = expected_90k(s.pts - track.edit_offset, track.timescale) % (1 << 33)
        pes = [p for p in parsed.pes if p.pid == pid]
        if pid == 0x100:
            assert [p.pts for p in pes] == pts.tolist()
            assert pts.min() < 90000 < (1 << 33) - 90000 < pts.max()  # the wrap is inside the segment
            for p in pes:
                assert p.packets[0].pcr == (p.decode_time - 9000) % (1 << 33)
        else:
            assert set(p.pts for p in pes) <= set(pts.tolist())


# -- builds laid out before the read (TsMuxer.prepare): samples read straight into place ------------------------------


def scatter_read(job, file: bytes) -> None:
    """Perform ``job.reads`` from ``file`` in memory, as ScatterRead documents them (the gateway uses preadv)."""
    for r in job.reads:
        into, pos = np.frombuffer(r.into, dtype=np.uint8), r.offset
        for at, n in zip(r.at.tolist(), r.lengths.tolist()):
            if at >= 0:
                into[at : at + n] = np.frombuffer(file, dtype=np.uint8, count=n, offset=pos)
            pos += n
        assert pos == r.offset + r.size
        del into


def scatter_build(muxer: TsMuxer, segment: MediaSegment, file: bytes, tables=None) -> bytes | None:
    job = muxer.prepare(segment.index, tables or [ts.samples for ts in segment.tracks])
    if job is None:
        return None
    with job:
        scatter_read(job, file)
        return job.finish()


def laid_out(segment: MediaSegment, gap: int = 0) -> tuple[list, bytes]:
    """A file holding the segment's samples one track after the other, ``gap`` bytes between samples; the tables."""
    tables, parts, at = [], [], 0
    for ts in segment.tracks:
        sizes = ts.samples.sizes.astype(np.int64)
        offsets = at + np.arange(len(sizes)) * gap + np.cumsum(sizes) - sizes
        payload = memoryview(ts.payload)
        for o, p, n in zip(offsets.tolist(), ts.sample_positions().tolist(), sizes.tolist()):
            parts += [b"\xee" * (o - at), payload[p : p + n]]
            at = o + n
        tables.append(dataclasses.replace(ts.samples, offsets=offsets.astype(np.uint64)))
    return tables, b"".join(parts)


@pytest.mark.parametrize("name", FIXTURES)
def test_ts_scatter_build_equals_build(name):
    """Read straight into place from the fixture's own file layout (interleaved chunks): the same bytes as build."""
    m = muxed(name)
    muxer = TsMuxer(m.source.tracks)
    for segment, expected in zip(m.segments, m.ts):
        assert scatter_build(muxer, segment, m.source.data) == expected
    assert not muxer._in_band


def test_ts_scatter_reads_skip_gaps_and_split_long_ones(monkeypatch):
    from packagers import media_data

    m = muxed("two_audio.mp4")
    muxer, segment = TsMuxer(m.source.tracks), m.segments[1]
    for gap, reads in ((0, 1), (100, 1), (media_data.SKIP_LIMIT + 1, None)):
        tables, file = laid_out(segment, gap)
        job = muxer.prepare(segment.index, tables)
        pieces = sum(len(r.at) for r in job.reads)
        n_samples = sum(len(t) for t in tables)
        # tracks follow each other with no gap: a read per track change less when every gap is too long to read
        assert len(job.reads) == (reads or n_samples - len(tables) + 1)
        assert pieces == (n_samples if gap == 0 or reads is None else 2 * n_samples - len(tables))
        assert all(r.lengths.sum() == r.size for r in job.reads)
        job.close()
        assert scatter_build(muxer, segment, file, tables) == m.ts[1]
    monkeypatch.setattr(media_data, "MAX_PIECES_PER_READ", 7)
    tables, file = laid_out(segment, 100)
    job = muxer.prepare(segment.index, tables)
    assert max(len(r.at) for r in job.reads) == 7 and len(job.reads) > 1
    job.close()
    assert scatter_build(muxer, segment, file, tables) == m.ts[1]


def test_ts_scatter_overlapping_samples_are_built_from_gathered_ones():
    m = muxed("title_360p.mp4")
    muxer, segment = TsMuxer(m.source.tracks), m.segments[1]
    video, audio = (ts.samples for ts in segment.tracks)
    offsets = video.offsets.copy()
    offsets[3] = offsets[2]  # two samples share bytes
    assert muxer.prepare(1, [dataclasses.replace(video, offsets=offsets), audio]) is None
    assert muxer.prepare(1, [video, audio]) is not None  # (released by the garbage collector: no export pinned)


@pytest.mark.parametrize("name", ["title_360p.mp4", "hevc.mp4"])
def test_ts_scatter_in_band_samples_fall_back_to_build(name):
    """Samples whose layout depends on their bytes (their own AUD or SPS, 2-byte lengths): prepare gives None, or
    finish does once it has seen them, and from then on the muxer builds from gathered samples."""
    m = muxed(name)
    codec = m.source.tracks[0].codec
    aud = bytes.fromhex("4601 50") if codec.codec == "hevc" else b"\x09\xf0"
    variants = {
        "two-byte lengths": (lambda nals, key: _prefixed(nals, 2), {"nal_length_size": 2}, "prepare"),
        "in-band parameter sets": (lambda nals, key: _prefixed((list(codec.parameter_sets) if key else []) + nals),
                                   {}, "finish"),
        "AUD in samples": (lambda nals, key: _prefixed([aud] + nals), {}, "finish"),
        "AUD inside samples": (lambda nals, key: _prefixed(nals[:1] + [aud] + nals[1:]), {}, "neither"),
    }
    for label, (transform, config, where) in variants.items():
        variant = _rewrite_video(m, m.segments[1], transform, **config)
        muxer = TsMuxer([t.track for t in variant.tracks])
        tables, file = laid_out(variant)
        job = muxer.prepare(1, tables)
        assert (job is None) == (where == "prepare"), label
        if job is not None:
            with job:
                scatter_read(job, file)
                built = job.finish()
            assert (built is None) == (where == "finish"), label
            assert muxer._in_band == (where == "finish"), label
            if built is not None:
                assert built == muxer.build(variant), label
        if where == "finish":
            assert muxer.prepare(1, tables) is None, label
        if label != "AUD inside samples":
            assert muxer.build(variant) == m.ts[1], label


def test_ts_scatter_corrupt_samples_are_bad_data_and_release_the_buffer():
    m = muxed("title_360p.mp4")
    muxer, segment = TsMuxer(m.source.tracks), m.segments[0]
    tables, file = laid_out(segment)
    corrupt = bytearray(file)
    corrupt[0] = 0x7F  # first NAL length far past its sample
    with pytest.raises(PackagerError) as e:
        scatter_build(muxer, segment, bytes(corrupt), tables)
    assert e.value.code is ErrorCode.BAD_DATA
    assert scatter_build(muxer, segment, file, tables) == m.ts[0]
    assert muxer.build(segment) == m.ts[0]  # the payload buffer is not left pinned


@pytest.mark.parametrize("empty", [[0], [-1], [0, 1, -1]])
def test_ts_scatter_empty_video_samples(empty):
    """An empty video sample is a PES of AUD (+ parameter sets) alone: its lead ends its last TS packet, also when
    it is the last PES of the segment (the 6-byte H.264 AUD is written 7 bytes wide, spilling past the PES)."""
    m = muxed("title_360p.mp4")
    segment = m.segments[1]
    video = segment.tracks[0]
    keep = np.ones(len(video.samples), dtype=bool)
    keep[empty] = False
    pos, sizes = video.sample_positions(), video.samples.sizes
    payload = b"".join(video.payload[p : p + n] if k else b"" for p, n, k in zip(pos, sizes, keep))
    table = dataclasses.replace(video.samples, sizes=np.where(keep, sizes, 0).astype(np.uint32))
    variant = MediaSegment(1, (TrackSegment(video.track, table, payload),) + segment.tracks[1:])
    muxer = TsMuxer(m.source.tracks)
    expected = muxer.build(variant)
    tables, file = laid_out(variant)
    assert scatter_build(muxer, variant, file, tables) == expected
    only_video = MediaSegment(1, variant.tracks[:1])  # the empty sample ends the segment's payload
    tables, file = laid_out(only_video)
    assert scatter_build(TsMuxer(m.source.tracks[:1]), only_video, file, tables) == TsMuxer(
        m.source.tracks[:1]).build(only_video)
