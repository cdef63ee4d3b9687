"""Common Encryption of a fragment's samples (ISO/IEC 23001-7): 'cenc' and 'cbcs'.

'cenc': AES-128-CTR, a 16-byte IV per sample. One CTR stream serves a whole track fragment: sample i's IV is the
stream's first counter block plus the blocks the samples before it used, and the stream is advanced to a block
boundary after each sample, so one cipher context encrypts every sample (cenc §9.3: the counter runs on across a
sample's subsamples). The first counter block hashes the key id, the stream (file and track) and the fragment's
first decode time: a counter block is never used twice under one key for different bytes.
'cbcs': AES-128-CBC with a constant IV; video in a 1:9 pattern (one block encrypted, nine clear) inside each
subsample, the chain restarting at the IV for every subsample (§10.4); audio whole-sample, every complete block
(pattern 0:0 in tenc); a trailing partial block stays clear.

Video subsamples (§9.5 / 14496-15): every NAL unit's length prefix and header stay clear, and for 'cbcs' its whole
slice header (``codecs.slices``); non-VCL NAL units are clear; protected parts are whole 16-byte blocks.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..codecs import avc, hevc
from ..errors import ErrorCode, PackagerError
from ..media_data import TrackSegment
from ..model import Track
from . import boxes
from .cbc import ctr_context, ecb_context, encrypt_blocks
from .keys import ContentKey

CENC, CBCS = "cenc", "cbcs"
SCHEMES = (CENC, CBCS)
VIDEO_PATTERN = (1, 9)
BLOCK = 16
MAX_CLEAR = 0xFFFF  # BytesOfClearData is 16 bits
MAX_SUBSAMPLES = (255 - BLOCK - 2) // 6  # saiz sizes are 8 bits: IV + count + 6 bytes per subsample
MOSTLY_CLEAR = 16  # 'cenc' regions with more than 1/16 clear bytes are encrypted range by range (_ctr_by_sample)
FIX_BATCH = 65536  # blocks re-keyed at once (1 MB of keystream)


@dataclass(frozen=True)
class TrackProtection:
    """How one track is encrypted: its scheme and key, what its init segment's tenc says."""

    scheme: str
    key: ContentKey
    kind: str  # video | audio
    codec: str  # h264 | hevc for video; any audio codec is encrypted whole-sample

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise PackagerError(ErrorCode.UNSUPPORTED, f"TrackProtection: unknown scheme {self.scheme!r}")
        if self.kind == "video" and self.codec not in ("h264", "hevc"):
            raise PackagerError(ErrorCode.UNSUPPORTED, f"TrackProtection: {self.codec} video cannot be encrypted "
                                "(subsample maps for H.264 and HEVC only)")

    @classmethod
    def of(cls, track: Track, scheme: str, key: ContentKey) -> "TrackProtection":
        return cls(scheme, key, track.kind, track.codec.codec)

    @property
    def iv_size(self) -> int:
        return 16 if self.scheme == CENC else 0

    @property
    def constant_iv(self) -> bytes | None:
        """cbcs: the key's IV, or one derived from the key id (every node derives the same)."""
        if self.scheme != CBCS:
            return None
        return self.key.iv or hashlib.sha256(b"cbcs-iv:" + self.key.key_id).digest()[:16]

    @property
    def pattern(self) -> tuple[int, int]:
        return VIDEO_PATTERN if self.scheme == CBCS and self.kind == "video" else (0, 0)

    @property
    def subsamples(self) -> bool:
        return self.kind == "video"

    @property
    def aux_bound(self) -> int:
        """The most bytes of encryption info (senc entry, saiz size) a sample adds to a fragment: IV, subsample
        count and at most MAX_SUBSAMPLES entries (what the 8-bit saiz allows), or the IV alone."""
        if self.subsamples:
            return self.iv_size + 2 + 6 * MAX_SUBSAMPLES + 1
        return self.iv_size
    def tenc(self) -> bytes:
        return boxes.tenc(self.key.key_id, self.iv_size, self.constant_iv, self.pattern,
                          version=1 if self.scheme == CBCS else 0)


@dataclass(frozen=True, eq=False)
class EncryptedSamples:
    """A track fragment's encryption: its senc body and aux info sizes, and ``write``, which puts the encrypted
    samples (same sizes, back to back) into the fragment's mdat as it is filled (no copy of its own)."""

    write: Callable[[np.ndarray], None]
    senc_body: bytes
    aux_sizes: np.ndarray
    subsamples: bool


def encrypt_samples(part: TrackSegment, protection: TrackProtection, stream: bytes) -> EncryptedSamples:
    """How one track's share of a fragment is encrypted. ``stream`` names the track's source (file and track) for
    the IVs. The subsample maps come from the samples where they were read (``sample_locations``); ``write`` then
    fills the mdat region: 'cenc' streams the samples through one CTR context straight into it, 'cbcs' copies them
    and encrypts its blocks in place."""
    sizes = part.samples.sizes.astype(np.int64)
    n = len(sizes)
    starts = np.cumsum(sizes) - sizes  # in the mdat region
    if int(sizes.sum()) != part.payload_size:
        raise PackagerError(ErrorCode.BAD_DATA, f"encrypt_samples: {part.payload_size} payload bytes for samples "
                            f"of {int(sizes.sum())}")
    key = protection.key.key
    if protection.subsamples:
        buffer, at = part.sample_locations()
        r_sample, r_start, r_avail = _video_ranges(np.frombuffer(buffer, dtype=np.uint8), at, sizes, part.track,
                                                   protection.scheme)
        r_start = r_start - at[r_sample] + starts[r_sample]  # from the read buffer to the mdat region
        if protection.scheme == CENC:  # ranges start on a block of the region: one CTR stream fits them all
            aligned = -(-r_start // BLOCK) * BLOCK
            r_avail, r_start = r_avail - (aligned - r_start), aligned
        r_len = np.maximum(r_avail, 0) // BLOCK * BLOCK
        keep = r_len >= BLOCK
        r_sample, r_start, r_len = r_sample[keep], r_start[keep], r_len[keep]
    else:  # whole-sample encryption
        r_sample, r_start, r_len = np.arange(n), starts, sizes - (sizes % BLOCK if protection.scheme == CBCS else 0)
    ivs = None
    if protection.scheme == CENC:
        first = int(part.samples.dts[0]) if n else 0
        hi = hashlib.sha256(b"cenc-iv:%s:%s:%d" % (protection.key.key_id, stream, first)).digest()[:8]
        if protection.subsamples:
            ivs, write = _ctr_stream(part, key, hi, starts, r_sample, r_start, r_len)
        else:
            ivs, write = _ctr_whole(part, key, hi, sizes)
    else:
        crypt, skip = protection.pattern if protection.subsamples else (1, 0)
        constant_iv = protection.constant_iv

        def write(region: np.ndarray) -> None:
            part.copy_into(region)
            _cbc_pattern(region, key, constant_iv, r_start, r_len, crypt, skip)
    if protection.subsamples:
        counts, clear, protected = subsample_entries(starts, sizes, r_sample, r_start, r_len)
        body, aux = boxes.senc_payload(ivs, counts, clear, protected, n)
    else:
        body, aux = boxes.senc_payload(ivs, None, None, None, n)
    return EncryptedSamples(write, body, aux, protection.subsamples)


def _video_ranges(data: np.ndarray, starts: np.ndarray, sizes: np.ndarray, track: Track,
                  scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample, start, bytes to the NAL unit's end) of every VCL NAL unit's protectable part: after its length
    prefix and header, and for 'cbcs' after its whole slice header (§10.4.2). Positions are ``data``'s."""
    codec = track.codec
    length_size = codec.nal_length_size
    offsets, lengths, owner = avc.nal_units(data, starts, sizes, length_size)
    if len(owner) > 1 and (owner[1:] < owner[:-1]).any():  # samples stored out of order: ranges go by sample
        order = np.argsort(owner, kind="stable")
        offsets, lengths, owner = offsets[order], lengths[order], owner[order]
    syntax = hevc if codec.codec == "hevc" else avc
    types = syntax.nal_unit_types(data[np.minimum(offsets + length_size, max(len(data) - 1, 0))])
    types[lengths == 0] = 0xFF
    vcl = types < 32 if codec.codec == "hevc" else (types >= 1) & (types <= 5)
    if scheme == CBCS:
        from ..codecs.slices import slice_header_sizes

        header = slice_header_sizes(codec, data, offsets, lengths, types) if vcl.any() else np.zeros_like(lengths)
    else:
        header = np.full(len(offsets), 2 if codec.codec == "hevc" else 1, dtype=np.int64)
    return owner[vcl], (offsets + length_size + header)[vcl], (lengths - header)[vcl]


def subsample_entries(starts: np.ndarray, sizes: np.ndarray, r_sample: np.ndarray, r_start: np.ndarray,
                      r_len: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(entries per sample, BytesOfClearData, BytesOfProtectedData) covering every byte of every sample: one entry
    per protected range (the clear bytes before it, then it), one more for clear bytes after the last range;
    clear runs longer than 65,535 bytes get leading (65535, 0) entries."""
    n = len(sizes)
    new_sample = np.ones(len(r_sample), dtype=bool)
    new_sample[1:] = r_sample[1:] != r_sample[:-1]
    prev_end = np.empty(len(r_sample), dtype=np.int64)
    prev_end[1:] = r_start[:-1] + r_len[:-1]
    prev_end[new_sample] = starts[r_sample[new_sample]]
    clear = r_start - prev_end
    last_end = starts.copy()
    last = np.ones(len(r_sample), dtype=bool)
    last[:-1] = new_sample[1:]
    last_end[r_sample[last]] = r_start[last] + r_len[last]
    tail = starts + sizes - last_end
    tails = np.flatnonzero(tail > 0)
    ent_sample = np.concatenate((r_sample, tails))
    ent_clear = np.concatenate((clear, tail[tails]))
    ent_prot = np.concatenate((r_len, np.zeros(len(tails), dtype=np.int64)))
    order = np.argsort(ent_sample * 2 + np.concatenate((np.zeros(len(r_sample), np.int64),
                                                       np.ones(len(tails), np.int64))), kind="stable")
    ent_sample, ent_clear, ent_prot = ent_sample[order], ent_clear[order], ent_prot[order]
    extra = np.maximum(ent_clear - 1, 0) // MAX_CLEAR
    if extra.any():  # split long clear runs: `extra` entries of (65535, 0) before each
        reps = extra + 1
        idx = np.repeat(np.arange(len(ent_clear)), reps)
        head = np.arange(len(idx)) - np.repeat(np.cumsum(reps) - reps, reps) < np.repeat(extra, reps)
        ent_sample = ent_sample[idx]
        ent_clear = np.where(head, MAX_CLEAR, (ent_clear - extra * MAX_CLEAR)[idx])
        ent_prot = np.where(head, 0, ent_prot[idx])
    counts = np.bincount(ent_sample, minlength=n)
    if len(counts) and counts.max() > MAX_SUBSAMPLES:
        raise PackagerError(ErrorCode.UNSUPPORTED, f"subsample_entries: a sample needs {int(counts.max())} "
                            f"subsamples (at most {MAX_SUBSAMPLES} fit its aux info)")
    return counts, ent_clear, ent_prot


def _ctr_stream(part: TrackSegment, key: bytes, hi: bytes, starts: np.ndarray, r_sample: np.ndarray,
                r_start: np.ndarray, r_len: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], None]]:
    """'cenc' with subsamples, every range starting on a block of the region: (IVs, write).

    ``write`` runs the samples through one CTR context (counter = the region's block number after ``hi``) straight
    into the region, so a range's keystream starts at its sample's IV = ``hi`` + its first block; then the bytes that
    stay clear get their keystream XORed out again (a few per sample: one ECB call over their blocks), and a
    sample's later ranges (several slices) get the keystream cenc gives them instead: the sample's counter running on
    over its earlier ranges only (§9.3)."""
    n = len(starts)
    counter = np.where(np.bincount(r_sample, minlength=n) > 0, 0, starts // BLOCK)
    first = np.ones(len(r_sample), dtype=bool)
    first[1:] = r_sample[1:] != r_sample[:-1]
    counter[r_sample[first]] = r_start[first] // BLOCK
    ivs = np.empty((n, BLOCK), dtype=np.uint8)
    ivs[:, :8] = np.frombuffer(hi, dtype=np.uint8)
    ivs[:, 8:] = counter.astype(">u8").view(np.uint8).reshape(n, 8)

    def write(region: np.ndarray) -> None:
        ends = r_start + r_len
        gap_from = np.concatenate(([0], ends))  # bytes outside every range: before, between and after them
        gap_len = np.concatenate((r_start, [len(region)])) - gap_from
        if int(gap_len.sum()) > len(region) // MOSTLY_CLEAR:  # (their index would outweigh the payload)
            _ctr_by_sample(part, region, key, hi, counter, r_sample, r_start, r_len)
            return
        encryptor = ctr_context(key, hi + bytes(8))
        view, at = memoryview(region), 0
        for chunk in part.chunks:
            encryptor.update_into(chunk, view[at : at + len(chunk)])
            at += len(chunk)
        keystream = _Keystream(key, hi)
        clear = np.repeat(gap_from - np.cumsum(gap_len) + gap_len, gap_len) + np.arange(int(gap_len.sum()))
        region[clear] ^= keystream.bytes_at(clear)
        later = ~first
        if later.any():  # a sample's second and later ranges: its own counter, not the region's
            done = np.cumsum(r_len) - r_len
            sample_done = np.maximum.accumulate(np.where(first, done, 0))
            right = counter[r_sample[later]] + (done - sample_done)[later] // BLOCK
            blocks = r_len[later] // BLOCK
            k = np.arange(int(blocks.sum())) - np.repeat(np.cumsum(blocks) - blocks, blocks)
            wrong = np.repeat(r_start[later] // BLOCK, blocks) + k
            right = np.repeat(right, blocks) + k
            rows = region[: len(region) // BLOCK * BLOCK].reshape(-1, BLOCK)  # ranges start on a block
            for a in range(0, len(wrong), FIX_BATCH):  # bounded memory: a batch of blocks at a time
                w, r = wrong[a : a + FIX_BATCH], right[a : a + FIX_BATCH]
                rows[w] ^= keystream.blocks(w) ^ keystream.blocks(r)

    return ivs, write


def _ctr_by_sample(part: TrackSegment, region: np.ndarray, key: bytes, hi: bytes, counter: np.ndarray,
                   r_sample: np.ndarray, r_start: np.ndarray, r_len: np.ndarray) -> None:
    """The same encryption, a CTR context per sample over its ranges: for regions that are mostly clear bytes
    (many or large non-VCL NAL units), where indexing every clear byte would cost more than the payload."""
    part.copy_into(region)
    view = memoryview(region)
    bounds = np.searchsorted(r_sample, np.arange(len(counter) + 1)).tolist()
    starts, ends = r_start.tolist(), (r_start + r_len).tolist()
    for i in np.unique(r_sample).tolist():
        context = ctr_context(key, hi + int(counter[i]).to_bytes(8, "big"))
        for s, e in zip(starts[bounds[i] : bounds[i + 1]], ends[bounds[i] : bounds[i + 1]]):
            context.update_into(view[s:e], view[s:e])


class _Keystream:
    """Blocks of the CTR keystream ``AES(hi || counter)`` for chosen counters: one ECB call."""

    def __init__(self, key: bytes, hi: bytes) -> None:
        self.ecb = ecb_context(key)
        self.hi = np.frombuffer(hi, dtype=np.uint8)

    def blocks(self, counters: np.ndarray) -> np.ndarray:
        plain = np.empty((len(counters), BLOCK), dtype=np.uint8)
        plain[:, :8] = self.hi
        plain[:, 8:] = counters.astype(">u8").view(np.uint8).reshape(-1, 8)
        out = np.empty((len(counters) + 1, BLOCK), dtype=np.uint8)  # ECB wants room for a block more
        self.ecb.update_into(plain, out)
        return out[:-1]

    def bytes_at(self, positions: np.ndarray) -> np.ndarray:
        """The keystream bytes at byte ``positions`` (ascending) of the stream: each block computed once."""
        blocks = positions >> 4
        new = np.empty(len(blocks), dtype=bool)
        new[:1] = True
        np.not_equal(blocks[1:], blocks[:-1], out=new[1:])
        which = np.cumsum(new) - 1
        return self.blocks(blocks[new])[which, positions & (BLOCK - 1)]


def _ctr_whole(part: TrackSegment, key: bytes, hi: bytes, sizes: np.ndarray
               ) -> tuple[np.ndarray, Callable[[np.ndarray], None]]:
    """'cenc' whole-sample encryption (audio): one keystream call for every sample's blocks (each sample's IV starts
    a block), laid over the samples with one join. (IVs, write)."""
    n = len(sizes)
    blocks = -(-sizes // BLOCK)
    first_block = np.cumsum(blocks) - blocks
    ivs = np.empty((n, BLOCK), dtype=np.uint8)
    ivs[:, :8] = np.frombuffer(hi, dtype=np.uint8)
    ivs[:, 8:] = first_block.astype(">u8").view(np.uint8).reshape(n, 8)

    def write(region: np.ndarray) -> None:
        stream = ctr_context(key, hi + bytes(8)).update(bytes(BLOCK * int(blocks.sum())))
        begin = first_block * BLOCK
        # each sample's keystream, back to back (one slice a sample: fewer passes than a per-byte index)
        keystream = b"".join(map(stream.__getitem__, map(slice, begin.tolist(), (begin + sizes).tolist())))
        part.copy_into(region)
        np.bitwise_xor(region, np.frombuffer(keystream, dtype=np.uint8), out=region)

    return ivs, write


def _cbc_pattern(data: np.ndarray, key: bytes, iv: bytes, r_start: np.ndarray, r_len: np.ndarray,
                 crypt: int, skip: int) -> None:
    """'cbcs', in place: in each range, CBC from ``iv`` over its encrypted blocks (``crypt`` of every
    ``crypt + skip``; the k-th at start + (k // crypt * period + k % crypt) * 16), each range a chain."""
    n_blocks = r_len // BLOCK
    period = crypt + skip
    per_range = n_blocks // period * crypt + np.minimum(n_blocks % period, crypt)
    first = np.cumsum(per_range) - per_range
    k = np.arange(int(per_range.sum())) - np.repeat(first, per_range)
    block_at = np.repeat(r_start, per_range) + (k // crypt * period + k % crypt) * BLOCK
    encrypt_blocks(data, block_at, per_range, key, iv)
