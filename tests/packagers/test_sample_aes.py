"""HLS SAMPLE-AES (packagers.drm.sample_aes + TsMuxer(sample_aes=True)) against independent decryptors: ffmpeg's
HLS demuxer (it implements Apple's "MPEG-2 Stream Encryption Format for HTTP Live Streaming" for TS) decoding the
segments through a media playlist, and a small decryptor written here from the spec; the PMT is read back by a
small parser written here from ISO/IEC 13818-1 and by ffprobe."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from fractions import Fraction
from functools import lru_cache

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fixtures.generate import fixture_path
from packagers.codecs import avc
from packagers.drm import cbc, sample_aes
from packagers.drm.sample_aes import SampleAesMuxer, encrypt_segment, iv_attribute
from packagers.errors import ErrorCode, PackagerError
from packagers.media_data import MediaSegment, TrackSegment
from packagers.model import CodecConfig, SampleTable, Track
from packagers.ts import TsMuxer
from tests.packagers import pyav_tracks

from .nal_reference import escape

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
IV = bytes.fromhex("0f0e0d0c0b0a09080706050403020100")
WRONG_KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100")
EPB = re.compile(b"\x00\x00\x03")


# -- an independent SAMPLE-AES decryptor (Apple's spec, Listings 2-1 and 2-2) ----------------------------------------


def _cbc_decrypt(blocks: list[bytes], key: bytes) -> list[bytes]:
    plain = Cipher(algorithms.AES(key), modes.CBC(IV)).decryptor().update(b"".join(blocks))
    return [plain[i : i + 16] for i in range(0, len(plain), 16)]


def strip_escapes(nal: bytes) -> bytes:
    """H.264 7.3.1: drop the 0x03 of every 00 00 03 (left to right, as a NAL unit reader does)."""
    return EPB.sub(b"\x00\x00", nal)


def decrypt_nal(nal: bytes, key: bytes = KEY) -> bytes:
    """One level of emulation prevention off, then the 1:9 pattern decrypted: blocks at 32, 192, ... while more
    than 16 bytes remain after the block's start, one CBC chain from the IV per NAL unit."""
    data = bytearray(strip_escapes(nal))
    at = list(range(32, len(data) - 16, 160))
    for pos, block in zip(at, _cbc_decrypt([bytes(data[p : p + 16]) for p in at], key)):
        data[pos : pos + 16] = block
    return bytes(data)


def decrypt_aac(frame: bytes, key: bytes = KEY) -> bytes:
    """A raw AAC frame: 16 clear bytes, every whole block after them encrypted (one chain), the rest clear."""
    n = (len(frame) - 16) // 16 if len(frame) > 16 else 0
    return frame[:16] + b"".join(_cbc_decrypt([frame[16 + 16 * i : 32 + 16 * i] for i in range(n)], key)) + frame[
        16 + 16 * n :]


def nal_units(sample: bytes, size: int = 4) -> list[bytes]:
    out, pos = [], 0
    while pos < len(sample):
        n = int.from_bytes(sample[pos : pos + size], "big")
        out.append(sample[pos + size : pos + size + n])
        pos += size + n
    assert pos == len(sample)
    return out


def samples(ts: TrackSegment) -> list[bytes]:
    data, ends = bytes(ts.payload), np.cumsum(ts.samples.sizes.astype(np.int64)).tolist()
    assert ends[-1] == len(data), "the sample table's sizes must add up to the payload"
    return [data[a:b] for a, b in zip([0] + ends[:-1], ends)]


def well_escaped(nal: bytes) -> bool:
    """H.264 7.4.1: no 00 00 00/01/02, a 00 00 03 only before 00..03 or at the end, no 00 as the last byte."""
    return (re.search(b"\x00\x00[\x00-\x02]", nal) is None and re.search(b"\x00\x00\x03[\x04-\xff]", nal) is None
            and not nal.endswith(b"\x00"))


# -- a tiny TS reader: PMT and elementary stream bytes (ISO/IEC 13818-1 2.4.3, 2.4.4.8) ------------------------------


def ts_payloads(data: bytes) -> dict[int, list[tuple[bool, bytes]]]:
    out: dict[int, list[tuple[bool, bytes]]] = {}
    for i in range(0, len(data), 188):
        pkt = data[i : i + 188]
        assert pkt[0] == 0x47
        pid, afc = (pkt[1] & 0x1F) << 8 | pkt[2], pkt[3] >> 4 & 3
        pos = 5 + pkt[4] if afc & 2 else 4
        if afc & 1:
            out.setdefault(pid, []).append((bool(pkt[1] & 0x40), pkt[pos:]))
    return out


def pmt(data: bytes) -> dict[int, tuple[int, list[tuple[int, bytes]]]]:
    """elementary_PID → (stream_type, [(descriptor_tag, descriptor bytes)])."""
    payload = ts_payloads(data)[0x1000][0][1]
    sec = payload[1 + payload[0] :]
    sec = sec[: 3 + ((sec[1] & 0x0F) << 8 | sec[2])]
    pos, streams = 12 + ((sec[10] & 0x0F) << 8 | sec[11]), {}
    while pos < len(sec) - 4:
        end = pos + 5 + ((sec[pos + 3] & 0x0F) << 8 | sec[pos + 4])
        descriptors, d = [], pos + 5
        while d < end:
            descriptors.append((sec[d], sec[d + 2 : d + 2 + sec[d + 1]]))
            d += 2 + sec[d + 1]
        streams[(sec[pos + 1] & 0x1F) << 8 | sec[pos + 2]] = (sec[pos], descriptors)
        pos = end
    return streams


def adts_frames(data: bytes, pid: int) -> list[bytes]:
    """The ADTS frames (header included) of an audio PID, PES headers removed."""
    es, pes = b"", b""
    for start, chunk in ts_payloads(data)[pid] + [(True, b"")]:
        if start and pes:
            es += pes[9 + pes[8] :]
            pes = b""
        pes += chunk
    frames, pos = [], 0
    while pos < len(es):
        length = (es[pos + 3] & 3) << 11 | es[pos + 4] << 3 | es[pos + 5] >> 5
        frames.append(es[pos : pos + length])
        pos += length
    return frames


# -- material ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Material:
    source: pyav_tracks.Source
    clear: list[MediaSegment]
    encrypted: list[MediaSegment]
    clear_ts: list[bytes]
    encrypted_ts: list[bytes]


@lru_cache(maxsize=None)
def material(name: str) -> Material:
    source = pyav_tracks.load(fixture_path(name))
    clear = pyav_tracks.segments(source)
    encrypted = [encrypt_segment(s, KEY, IV) for s in clear]
    plain_muxer, muxer = TsMuxer(source.tracks), TsMuxer(source.tracks, sample_aes=True)
    return Material(source, clear, encrypted, [plain_muxer.build(s) for s in clear],
                    [muxer.build(s) for s in encrypted])


def epb_count(m: Material) -> int:
    """Emulation prevention bytes in the slice NAL units that get encrypted."""
    return sum(len(EPB.findall(nal)) for seg in m.clear for ts in seg.tracks if ts.track.kind == "video"
               for s in samples(ts) for nal in nal_units(s) if nal[0] & 0x1F in (1, 5) and len(nal) > 48)


def write_playlist(tmp_path, segments: list[bytes], name: str, key: bytes | None) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:3", "#EXT-X-MEDIA-SEQUENCE:0"]
    if key is not None:
        (tmp_path / f"{name}.key").write_bytes(key)
        lines.append(f'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="{name}.key",IV={iv_attribute(IV)}')
    for i, data in enumerate(segments):
        (tmp_path / f"{name}{i}.ts").write_bytes(data)
        lines += ["#EXTINF:2.0,", f"{name}{i}.ts"]
    (tmp_path / f"{name}.m3u8").write_text("\n".join(lines + ["#EXT-X-ENDLIST", ""]))
    return str(tmp_path / f"{name}.m3u8")


def decode(playlist: str) -> tuple[dict[str, dict[int, str]], int, Fraction | None]:
    """Frames decoded by the ffmpeg CLI through its HLS demuxer, which decrypts SAMPLE-AES: {kind: {pts: MD5 of the
    frame}}, ffmpeg's exit status, and the video frames' time base. A process of its own: garbage from a wrong key
    may crash a decoder, which must fail a test, not the test run."""
    run = subprocess.run(["ffmpeg", "-v", "error", "-allowed_extensions", "ALL", "-copyts", "-i", playlist,
                          "-fps_mode", "passthrough", "-f", "framemd5", "-"], capture_output=True, timeout=300)
    kinds, bases, frames = {}, {}, {"video": {}, "audio": {}}
    for line in run.stdout.decode().splitlines():
        if line.startswith(("#media_type", "#tb")):
            index, value = line.split()[1:]
            (kinds if line.startswith("#media") else bases)[index.rstrip(":")] = value
        elif line and not line.startswith("#"):
            index, _, pts, _, _, digest = (field.strip() for field in line.split(","))
            frames[kinds[index]][int(pts)] = digest
    video_base = next((Fraction(bases[i]) for i, kind in kinds.items() if kind == "video"), None)
    return frames, run.returncode, video_base


def last_video_pts(playlist: str, time_base: Fraction) -> int:
    """The pts of the last video packet in stream order (ffprobe, 90 kHz), in the decoded frames' time base."""
    run = subprocess.run(["ffprobe", "-v", "error", "-allowed_extensions", "ALL", "-select_streams", "v",
                          "-show_entries", "packet=pts", "-of", "csv=p=0", playlist], capture_output=True, check=True,
                         timeout=300)
    return round(Fraction(int(run.stdout.split()[-1]), 90000) / time_base)


# -- the independent decryptors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["title_360p.mp4", "audio_only.mp4"])
def test_ffmpeg_decrypts_to_the_clear_frames(name, tmp_path):
    m = material(name)
    if name == "title_360p.mp4":  # so that encrypting the RBSP, or escaping it wrongly, is seen
        assert epb_count(m) >= 5, "the material needs emulation prevention bytes in its slices"
    clear, status, _ = decode(write_playlist(tmp_path, m.clear_ts, "clear", None))
    assert status == 0
    playlist = write_playlist(tmp_path, m.encrypted_ts, "enc", KEY)
    frames, status, video_base = decode(playlist)
    assert status == 0
    for kind, track in (("video", "video"), ("audio", "audio")):
        expected = sum(len(ts.samples) for seg in m.clear for ts in seg.tracks if ts.track.kind == track)
        assert len(clear[kind]) >= expected - 2 and frames[kind].keys() == clear[kind].keys()
    different = {pts for pts, digest in frames["video"].items() if digest != clear["video"][pts]}
    # ffmpeg 5.1's hls demuxer does not decrypt the one packet its parser flushes at the end of the stream (no
    # segment is current then): that frame alone may differ. test_nal_units checks its bytes with our decryptor.
    assert not different or different == {last_video_pts(playlist, video_base)}, f"{len(different)} frames differ"
    assert frames["audio"] == clear["audio"]


def test_wrong_key_does_not_give_the_clear_frames(tmp_path):
    m = material("title_360p.mp4")
    clear, _, _ = decode(write_playlist(tmp_path, m.clear_ts, "clear", None))
    frames, _, _ = decode(write_playlist(tmp_path, m.encrypted_ts, "wrong", WRONG_KEY))
    for kind in ("video", "audio"):
        same = sum(frames[kind].get(pts) == digest for pts, digest in clear[kind].items())
        assert same <= len(clear[kind]) // 20, f"{same} of {len(clear[kind])} {kind} frames decode as the clear ones"


# -- structure ---------------------------------------------------------------------------------------------------------


def test_nal_units():
    m = material("title_360p.mp4")
    encrypted_units = 0
    for clear_seg, enc_seg in zip(m.clear, m.encrypted):
        for ts, enc in zip(clear_seg.tracks, enc_seg.tracks):
            if ts.track.kind != "video":
                continue
            assert enc.samples.offsets is ts.samples.offsets or (enc.samples.offsets == ts.samples.offsets).all()
            for clear_sample, enc_sample in zip(samples(ts), samples(enc), strict=True):
                for nal, out in zip(nal_units(clear_sample), nal_units(enc_sample), strict=True):
                    if nal[0] & 0x1F not in (1, 5) or len(nal) <= 48:
                        assert out == nal  # other types and small units stay clear, byte for byte
                        continue
                    encrypted_units += 1
                    assert well_escaped(out)
                    assert decrypt_nal(out) == nal
                    inner = strip_escapes(out)
                    assert len(inner) == len(nal) and inner[:32] == nal[:32]
                    blocks = list(range(32, len(nal) - 16, 160))
                    clear_at = np.ones(len(nal), bool)
                    for b in blocks:
                        clear_at[b : b + 16] = False
                        assert inner[b : b + 16] != nal[b : b + 16]
                    a, b = np.frombuffer(inner, np.uint8), np.frombuffer(nal, np.uint8)
                    assert (a[clear_at] == b[clear_at]).all(), "bytes outside the pattern's blocks must stay clear"
    assert encrypted_units > 250


def test_audio_frames():
    m = material("title_360p.mp4")
    for clear_seg, enc_seg, clear_ts, enc_ts in zip(m.clear, m.encrypted, m.clear_ts, m.encrypted_ts):
        ts, enc = clear_seg.tracks[1], enc_seg.tracks[1]
        assert ts.track.kind == "audio"
        assert (enc.samples.sizes == ts.samples.sizes).all()
        for frame, out in zip(samples(ts), samples(enc), strict=True):
            assert decrypt_aac(out) == frame
            whole = 16 + (len(frame) - 16) // 16 * 16
            assert out[:16] == frame[:16] and out[whole:] == frame[whole:]
            assert all(out[p : p + 16] != frame[p : p + 16] for p in range(16, whole, 16))
        # in the TS: the same ADTS headers (clear) and the same first 16 bytes of every frame
        clear_frames, enc_frames = adts_frames(clear_ts, 0x101), adts_frames(enc_ts, 0x101)
        assert len(clear_frames) == len(enc_frames) == len(ts.samples)
        for a, b in zip(clear_frames, enc_frames):
            assert a[: 7 + 16] == b[: 7 + 16] and len(a) == len(b)


def test_pmt_signals_the_encrypted_streams():
    m = material("two_audio.mp4")
    streams = pmt(m.encrypted_ts[0])
    assert {pid: t for pid, (t, _) in streams.items()} == {0x100: 0xDB, 0x101: 0xCF, 0x102: 0xCF}
    assert streams[0x100][1] == [(0x0F, b"zavc")]
    audio = [t for t in m.source.tracks if t.kind == "audio"]
    for pid, track in zip((0x101, 0x102), audio):
        descriptors = dict(streams[pid][1])
        assert descriptors[0x0A][:3] == track.language.encode()
        assert descriptors[0x0F] == b"aacd"
        registration = descriptors[0x05]
        asc = bytes(track.codec.extradata)
        # format_identifier 'apad', then audio_setup_information: 'zaac', priming 0, version 1, the ASC
        assert registration == b"apad" + b"zaac" + b"\x00\x00" + bytes([1, len(asc)]) + asc
    assert pmt(m.clear_ts[0])[0x100][0] == 0x1B  # the clear muxer is unchanged
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,codec_tag_string",
                            "-of", "json", "-"], input=m.encrypted_ts[0], capture_output=True, check=True, timeout=60)
    seen = [(s["codec_name"], s["codec_tag_string"]) for s in json.loads(probe.stdout)["streams"]]
    assert seen == [("h264", "[219][0][0][0]"), ("aac", "apad"), ("aac", "apad")]


def test_scatter_path_and_key_frame_ranges_are_off():
    m = material("title_360p.mp4")
    tables = [ts.samples for ts in m.clear[1].tracks]
    muxer = TsMuxer(m.source.tracks, sample_aes=True)
    assert muxer.prepare(1, tables) is None and muxer.key_frame_ranges(tables) is None
    assert TsMuxer(m.source.tracks).prepare(1, tables) is not None
    one_step = SampleAesMuxer(m.source.tracks, KEY, IV)  # encrypt_segment then the muxer, as the gateway runs it
    assert one_step.prepare(1, tables) is None and one_step.build(m.clear[1]) == m.encrypted_ts[1]


def test_refusals():
    hevc = pyav_tracks.load(fixture_path("hevc.mp4"))
    with pytest.raises(PackagerError) as e:
        encrypt_segment(pyav_tracks.segments(hevc)[0], KEY, IV)
    assert e.value.code is ErrorCode.UNSUPPORTED and e.value.message.startswith("encrypt_segment:")
    with pytest.raises(PackagerError) as e:
        TsMuxer(hevc.tracks, sample_aes=True)
    assert e.value.code is ErrorCode.UNSUPPORTED
    segment = material("title_360p.mp4").clear[0]
    for key, iv in ((KEY[:15], IV), (KEY, IV + b"\x00")):
        with pytest.raises(PackagerError) as e:
            encrypt_segment(segment, key, iv)
        assert e.value.code is ErrorCode.BAD_DATA and e.value.message.startswith("encrypt_segment:")
    assert iv_attribute(IV) == "0x0f0e0d0c0b0a09080706050403020100"
    # the PMT must fit one TS packet (spec §3): SAMPLE-AES descriptors take ~30 bytes per audio track
    video, audio = material("title_360p.mp4").source.tracks
    many = [video] + [dataclasses.replace(audio, track_id=10 + i) for i in range(6)]
    TsMuxer(many)
    with pytest.raises(PackagerError) as e:
        TsMuxer(many, sample_aes=True)
    assert e.value.code is ErrorCode.UNSUPPORTED and "PMT" in e.value.message


# -- the vectorised parts against plain loops ----------------------------------------------------------------------


def test_emulation_prevention_matches_a_sequential_escaper():
    rng = np.random.default_rng(14)
    for trial in range(200):
        # zero-heavy units with a nonzero first byte (a NAL header), separated by zero-heavy length prefixes
        units = [bytes([0x65]) + bytes(rng.choice([0, 0, 0, 1, 2, 3, 4, 0xFF], size=rng.integers(0, 40)).astype(
            np.uint8)) for _ in range(rng.integers(1, 6))]
        data, starts, ends = b"", [], []
        for u in units:
            data += b"\x00" * int(rng.integers(1, 4))
            starts.append(len(data))
            data += u
            ends.append(len(data))
        data += b"\x00" * int(rng.integers(0, 3))
        arr = np.frombuffer(data, np.uint8)
        inserted = avc.emulation_prevention_insertions(arr, np.array(starts), np.array(ends))
        escaped = avc.with_escapes(arr, inserted)
        expected, pos = b"", 0
        for s, e in zip(starts, ends):
            expected += data[pos:s] + escape(data[s:e], cabac_zero_words=True)
            pos = e
        assert escaped == expected + data[pos:], f"trial {trial}"


@pytest.mark.parametrize("lengths", [[1] * 50, [3, 700, 1, 1, 2, 650, 40] + [5] * 30, [30] * 9, [1, 400]])
def test_cbc_chains_match_one_cbc_per_chain(lengths):
    rng = np.random.default_rng(len(lengths))
    lengths = np.array(lengths)
    plain = rng.integers(0, 256, size=(int(lengths.sum()), 16), dtype=np.uint8)
    out = cbc.cbc_chains(plain.copy(), lengths, KEY, IV)  # shared with 'cbcs' (packagers/drm/cenc.py)
    pos = 0
    for n in lengths.tolist():
        expected = Cipher(algorithms.AES(KEY), modes.CBC(IV)).encryptor().update(plain[pos : pos + n].tobytes())
        assert out[pos : pos + n].tobytes() == expected
        pos += n


@pytest.mark.parametrize("nal_length_size", [1, 2, 4])
def test_synthetic_nal_units(nal_length_size):
    """Units around every size boundary (48/49 bytes, a last block with exactly 16 bytes left or 17), full of zeros
    and 03s, with 1-, 2- and 4-byte length prefixes; one sample with no unit to encrypt; the payload in two chunks,
    as the gateway's reads give it."""
    rng = np.random.default_rng(nal_length_size)
    sizes = [2, 47, 48, 49, 64, 65, 176, 177, 192] if nal_length_size == 1 else [
        48, 49, 208, 209, 368, 369, 1000, 5000, 3]
    sample_list, units_list = [], []
    for i in range(0, len(sizes), 3):
        units = []
        for size in sizes[i : i + 3]:
            header = 0x65 if size % 2 else 0x41  # IDR and non-IDR slices
            body = rng.choice([0, 0, 3, 1, 0xFF, 0x80], size=size - 1).astype(np.uint8).tobytes()
            unit = escape(bytes([header]) + body, cabac_zero_words=True)[: size - 1]  # an escaped unit of `size` bytes,
            units.append(unit + b"\x80")  # ending as a NAL unit does (rbsp_stop_one_bit)
        units_list.append(units)
    units_list.append([bytes([0x06]) + bytes(60), bytes([0x09, 0xF0])])  # SEI and AUD: never encrypted
    for units in units_list:
        sample_list.append(b"".join(len(u).to_bytes(nal_length_size, "big") + u for u in units))
    n = len(sample_list)
    sizes_col = np.array([len(s) for s in sample_list])
    table = SampleTable(np.cumsum(sizes_col) - sizes_col, sizes_col, np.arange(n) * 512, np.zeros(n),
                        np.full(n, 512), np.ones(n, bool))
    track = Track(1, "video", 12288, CodecConfig("avc1", "avc1.64001e", nal_length_size=nal_length_size), table)
    payload = memoryview(b"".join(sample_list))
    chunks = (payload[: len(payload) // 3], payload[len(payload) // 3 :])
    out = encrypt_segment(MediaSegment(0, (TrackSegment(track, table, chunks),)), KEY, IV).tracks[0]
    for units, enc_sample in zip(units_list, samples(out), strict=True):
        for unit, enc in zip(units, nal_units(enc_sample, nal_length_size), strict=True):
            if unit[0] & 0x1F in (1, 5) and len(unit) > 48:
                assert well_escaped(enc) and decrypt_nal(enc) == unit
                assert strip_escapes(enc) != unit  # at least one block: more than 16 bytes after byte 32
            else:
                assert enc == unit
