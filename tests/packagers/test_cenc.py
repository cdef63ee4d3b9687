"""Common Encryption of fMP4 ('cenc' and 'cbcs'), checked by an independent decryptor and an independent parser.

The decryptor is FFmpeg 8.1 (PyAV's mov demuxer with ``decryption_key``): every decoded frame of the encrypted
init + fragments equals the clear build's. (Debian's ffmpeg 5.1 CLI cannot decrypt fragmented CENC at all: it fails
the same way on FFmpeg 8.1's own fragmented output, "leftover packet bytes after subsample processing".) The boxes
are read back with pymp4 (tenc, pssh, saiz, saio) and a small reader here for senc (pymp4's assumes 8-byte IVs).
"""
from __future__ import annotations

import hashlib
import io
import struct
import uuid
from functools import lru_cache

import av
import numpy as np
import pytest
from pymp4.parser import Box

from fixtures.generate import fixture_path
from packagers.codecs import avc, hevc
from packagers.drm.cenc import MAX_CLEAR, MAX_SUBSAMPLES, TrackProtection, subsample_entries
from packagers.drm.keys import COMMON, WIDEVINE, ContentKey, MediaKeys, Pssh
from packagers.errors import ErrorCode, PackagerError
from packagers.fmp4 import build_init_segment
from packagers.media_set import MediaSet
from packagers.mp4 import open_presentation
from packagers.naming import TrackSpec

from .fmp4_tools import root, segments

KEY = ContentKey(bytes.fromhex("0123456789abcdef0123456789abcdef"), bytes.fromhex("00112233445566778899aabbccddeeff"),
                 pssh=(Pssh(WIDEVINE, b"widevine init data"),))
WRONG_KEY = "ffeeddccbbaa99887766554433221100"
# (slices_*: several slices a picture, so several subsamples a sample)
FILES = ["title_180p.mp4", "hevc.mp4", "two_audio.mp4", "slices_h264.mp4", "slices_hevc.mp4"]


@lru_cache(maxsize=None)
def media(name: str) -> tuple[MediaSet, bytes]:
    path = fixture_path(name)
    return MediaSet([open_presentation(path)], 2000), path.read_bytes()


def selections(name: str):
    media_set, _ = media(name)
    p = media_set.presentations[0]
    specs = [TrackSpec(None, 1, None)] * bool(p.video_tracks) + [TrackSpec(None, None, a)
                                                                   for a in range(1, len(p.audio_tracks) + 1)]
    return [media_set.resolve(s) for s in specs]


@lru_cache(maxsize=None)
def built(name: str, kind_index: int, scheme: str | None) -> tuple[bytes, list[bytes]]:
    media_set, data = media(name)
    selection = selections(name)[kind_index]
    if scheme is None:
        return build_init_segment(selection.tracks), segments(media_set, selection, data)
    protection = [TrackProtection.of(t, scheme, KEY) for t in selection.tracks]
    init = build_init_segment(selection.tracks, protection, MediaKeys((KEY,)))
    return init, segments(media_set, selection, data, protection=protection, streams=[b"test"])


def decoded(blob: bytes, key: str | None = None) -> list[str]:
    """A digest of every decoded frame's planes (video) or samples (audio)."""
    with av.open(io.BytesIO(blob), options={"decryption_key": key} if key else {}) as c:
        return [hashlib.sha1(b"".join(bytes(p) for p in f.planes)).hexdigest() for f in c.decode(c.streams[0])]


def cases():
    return [(name, k, scheme) for name in FILES for k in range(len(selections(name))) for scheme in ("cenc", "cbcs")]


@pytest.mark.parametrize("name, kind_index, scheme", cases())
def test_an_independent_decryptor_gets_every_frame_back(name, kind_index, scheme):
    clear_init, clear = built(name, kind_index, None)
    init, fragments = built(name, kind_index, scheme)
    reference = decoded(clear_init + b"".join(clear))
    assert len(reference) > 50
    assert decoded(init + b"".join(fragments), KEY.key.hex()) == reference
    with av.logging.Capture():  # a wrong key decrypts to garbage: decode errors, or pictures that differ
        try:
            wrong = decoded(init + b"".join(fragments), WRONG_KEY)
        except av.FFmpegError:
            wrong = []
    assert wrong != reference


def senc_entries(raw: bytes, iv_size: int) -> list[tuple[bytes, list[tuple[int, int]] | None]]:
    """senc read here (pymp4's reader assumes 8-byte IVs): per sample (IV, [(clear, protected)...] or None)."""
    flags = int.from_bytes(raw[9:12], "big")
    count, pos, out = struct.unpack(">I", raw[12:16])[0], 16, []
    for _ in range(count):
        iv, pos = raw[pos : pos + iv_size], pos + iv_size
        entries = None
        if flags & 2:
            n, pos = struct.unpack(">H", raw[pos : pos + 2])[0], pos + 2
            entries = [struct.unpack(">HI", raw[pos + 6 * k : pos + 6 * k + 6]) for k in range(n)]
            pos += 6 * n
        out.append((iv, entries))
    assert pos == len(raw), "senc has bytes its entries do not account for"
    return out


@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
def test_boxes_follow_the_spec(scheme):
    init, fragments = built("title_180p.mp4", 0, scheme)
    _, clear = built("title_180p.mp4", 0, None)
    moov = root(init).find(b"moov")
    psshs = [Box.parse(n.raw) for n in moov.all(b"pssh")]
    assert [(p.system_ID, p.version) for p in psshs] == [(COMMON, 1), (WIDEVINE, 0)]
    assert psshs[0].key_IDs == [uuid.UUID(bytes=KEY.key_id)] and psshs[1].init_data == b"widevine init data"
    stsd = moov.find(b"trak", b"mdia", b"minf", b"stbl", b"stsd").raw
    assert stsd[16 + 4 : 16 + 8] == b"encv"
    tenc = Box.parse(stsd[stsd.index(b"tenc") - 4 :])
    assert stsd[stsd.index(b"frma") + 4 : stsd.index(b"frma") + 8] == b"avc1"
    assert stsd[stsd.index(b"schm") + 8 : stsd.index(b"schm") + 12] == scheme.encode()
    assert tenc.key_ID == uuid.UUID(bytes=KEY.key_id) and tenc.is_encrypted == 1
    if scheme == "cenc":
        assert (tenc.version, tenc.iv_size) == (0, 16)
    else:
        pattern = (tenc.default_byte_blocks.crypt, tenc.default_byte_blocks.skip)
        assert (tenc.version, tenc.iv_size, pattern) == (1, 0, (1, 9))
        assert len(tenc.constant_iv) == 16
    ivs = set()
    track = media("title_180p.mp4")[0].presentations[0].video_tracks[0]
    for fragment, clear_fragment in zip(fragments, clear):
        traf = root(fragment).find(b"moof", b"traf")
        trun = traf.find(b"trun").parsed
        sizes = [s.sample_size for s in trun.sample_info]
        saiz, saio = traf.find(b"saiz").parsed, traf.find(b"saio").parsed
        entries = senc_entries(traf.find(b"senc").raw, 16 if scheme == "cenc" else 0)
        assert len(entries) == len(sizes) == saiz.sample_count
        info_sizes = saiz.sample_info_sizes or [saiz.default_sample_info_size] * saiz.sample_count
        assert info_sizes == [len(iv) + 2 + 6 * len(e) for iv, e in entries]
        senc_at = fragment.index(b"senc") - 4
        assert saio.offsets == [senc_at + 16 - (fragment.index(b"moof") - 4)]  # the first IV, from the moof
        payload = fragment[fragment.index(b"mdat") + 4 :]
        clear_payload = clear_fragment[clear_fragment.index(b"mdat") + 4 :]
        assert len(payload) == len(clear_payload) == sum(sizes)
        at = 0
        for (iv, subsamples), size in zip(entries, sizes):
            assert sum(c + p for c, p in subsamples) == size
            ivs.add(iv)
            pos = at
            for c, p in subsamples:
                assert payload[pos : pos + c] == clear_payload[pos : pos + c], "a clear byte changed"
                if p:
                    assert p % 16 == 0 and payload[pos + c : pos + c + p] != clear_payload[pos + c : pos + c + p]
                    # the protected part starts after the NAL unit's header: it is inside slice data
                    nal_types = avc.nal_unit_types(np.frombuffer(clear_payload[pos + c - 1 : pos + c], np.uint8))
                    assert c >= track.codec.nal_length_size + 1
                pos += c + p
            at += size
    if scheme == "cenc":  # an IV per sample, never one twice (the keystream would repeat)
        assert len(ivs) == sum(len(root(f).find(b"moof", b"traf").find(b"trun").parsed.sample_info) for f in fragments)


def test_cenc_ivs_differ_between_renditions_and_fragments():
    """Two streams (files or tracks) under one key never share a counter block: their IVs differ."""
    media_set, data = media("title_180p.mp4")
    selection = selections("title_180p.mp4")[0]
    protection = [TrackProtection.of(t, "cenc", KEY) for t in selection.tracks]
    a = segments(media_set, selection, data, protection=protection, streams=[b"file-a"])
    b = segments(media_set, selection, data, protection=protection, streams=[b"file-b"])
    first_iv = [senc_entries(root(f).find(b"moof", b"traf").find(b"senc").raw, 16)[0][0] for f in a + b]
    assert len(set(first_iv)) == len(first_iv)


def test_subsample_entries_split_long_clear_runs_and_refuse_too_many():
    starts, sizes = np.array([0, 200_000]), np.array([200_000, 100])
    # sample 0: 150,000 clear bytes, 32 protected, then 49,968 clear; sample 1: no protected range
    counts, clear, protected = subsample_entries(starts, sizes, np.array([0]), np.array([150_000]), np.array([32]))
    assert counts.tolist() == [4, 1]
    assert list(zip(clear.tolist(), protected.tolist())) == [
        (MAX_CLEAR, 0), (MAX_CLEAR, 0), (150_000 - 2 * MAX_CLEAR, 32), (49_968, 0), (100, 0)]
    many = MAX_SUBSAMPLES + 1
    with pytest.raises(PackagerError) as e:
        subsample_entries(np.array([0]), np.array([many * 64]), np.zeros(many, np.int64),
                          np.arange(many) * 64 + 16, np.full(many, 32))
    assert e.value.code is ErrorCode.UNSUPPORTED


@pytest.mark.parametrize("counts", [[2, 2, 2], [2, 1, 3], [1]], ids=["equal", "unequal", "one"])
@pytest.mark.parametrize("iv_size", [16, 0])
def test_senc_table_matches_the_spec_layout_sample_by_sample(counts, iv_size):
    """The column-wise senc table (one path for equal subsample counts, one for any) against the layout of
    23001-7 §7.2 written sample by sample: IV, subsample_count, then (BytesOfClearData, BytesOfProtectedData)."""
    from packagers.drm.boxes import senc_payload

    rng = np.random.default_rng(len(counts) + iv_size)
    n, entries = len(counts), sum(counts)
    ivs = rng.integers(0, 256, (n, iv_size), dtype=np.uint8) if iv_size else None
    clear, protected = rng.integers(0, 65536, entries), rng.integers(0, 2**32, entries)
    body, sizes = senc_payload(ivs, np.array(counts), clear, protected, n)
    expected, k = [struct.pack(">I", n)], 0
    for i, count in enumerate(counts):
        expected.append((ivs[i].tobytes() if iv_size else b"") + struct.pack(">H", count))
        for _ in range(count):
            expected.append(struct.pack(">HI", clear[k], protected[k]))
            k += 1
    assert body == b"".join(expected)
    assert sizes.tolist() == [iv_size + 2 + 6 * c for c in counts]


def test_only_h264_and_hevc_video_can_be_encrypted():
    track = media("title_180p.mp4")[0].presentations[0].video_tracks[0]
    with pytest.raises(PackagerError) as e:
        TrackProtection("cenc", KEY, "video", "av1")
    assert e.value.code is ErrorCode.UNSUPPORTED
    assert TrackProtection.of(track, "cbcs", KEY).pattern == (1, 9)


def test_cached_products_depend_on_the_key_bytes_not_only_the_key_id():
    """A DRM service may rotate a key and keep its id: what was encrypted with the old key must not be served."""
    from packagers.drm.signaling import Protection

    rotated = ContentKey(KEY.key_id, bytes(16))
    assert Protection("cenc", MediaKeys((KEY,))).cache_key != Protection("cenc", MediaKeys((rotated,))).cache_key
    assert Protection("cenc", MediaKeys((KEY,))).cache_key == Protection("cenc", MediaKeys((KEY,))).cache_key
    assert KEY.key.hex() not in repr(Protection("cenc", MediaKeys((KEY,))).cache_key)


@pytest.mark.parametrize("name", ["slices_h264.mp4", "slices_hevc.mp4"])
def test_the_bounded_paths_write_the_same_bytes(monkeypatch, name):
    """Mostly-clear regions are encrypted range by range, and later slices are re-keyed a batch of blocks at a time
    (memory bounded whatever the input): both give the bytes the one-stream path gives."""
    from packagers.drm import cenc

    built.cache_clear()
    reference = built(name, 0, "cenc")
    clear_init, clear = built(name, 0, None)
    frames = decoded(clear_init + b"".join(clear))
    for setting in (("MOSTLY_CLEAR", 10**12), ("FIX_BATCH", 3)):
        monkeypatch.setattr(cenc, *setting)
        built.cache_clear()
        init, fragments = built(name, 0, "cenc")
        assert (init, fragments) == reference, setting
        assert decoded(init + b"".join(fragments), KEY.key.hex()) == frames  # and FFmpeg decrypts them
        monkeypatch.undo()
    built.cache_clear()


@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
def test_samples_stored_out_of_order_are_encrypted_as_stored_in_order(scheme):
    """A file may store a fragment's samples in any order: read into one buffer, sample i can sit after sample
    i + 1. The encryption (subsample maps, IVs, bytes) must not depend on that layout."""
    from packagers.drm.cenc import encrypt_samples
    from packagers.media_data import TrackSegment

    media_set, data = media("slices_h264.mp4")
    selection = selections("slices_h264.mp4")[0]
    reads = media_set.segment_reads(selection, 0)
    part = media_set.media_segment(selection, 0, reads, [data[r.offset : r.end] for r in reads]).tracks[0]
    payload = part.payload
    starts = np.cumsum(part.samples.sizes) - part.samples.sizes
    pieces = [payload[a : a + n] for a, n in zip(starts.tolist(), part.samples.sizes.tolist())]
    buffer = memoryview(b"".join(reversed(pieces)))  # last sample first
    at = np.cumsum([len(p) for p in reversed(pieces)]) - [len(p) for p in reversed(pieces)]
    views = [buffer[a : a + len(p)] for a, p in zip(reversed(at.tolist()), pieces)]
    shuffled = TrackSegment(part.track, part.samples, views)
    assert shuffled.sample_locations()[1][0] > shuffled.sample_locations()[1][-1]  # really out of order
    protection = TrackProtection.of(part.track, scheme, KEY)
    results = []
    for segment in (part, shuffled):
        encrypted = encrypt_samples(segment, protection, b"test")
        region = np.zeros(segment.payload_size, dtype=np.uint8)
        encrypted.write(region)
        results.append((encrypted.senc_body, encrypted.aux_sizes.tolist(), region.tobytes()))
    assert results[0] == results[1]
