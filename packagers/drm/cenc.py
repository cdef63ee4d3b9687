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

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..codecs import avc, hevc
from ..errors import ErrorCode, PackagerError
from ..media_data import TrackSegment
from ..model import Track
from . import boxes
from .cbc import encrypt_blocks
from .keys import ContentKey

CENC, CBCS = "cenc", "cbcs"
SCHEMES = (CENC, CBCS)
VIDEO_PATTERN = (1, 9)
BLOCK = 16
MAX_CLEAR = 0xFFFF  # BytesOfClearData is 16 bits
MAX_SUBSAMPLES = (255 - BLOCK - 2) // 6  # saiz sizes are 8 bits: IV + count + 6 bytes per subsample
# whole-sample payloads up to this size are XORed through a per-byte index (faster than a cipher call per sample)
WHOLE_SAMPLE_XOR_LIMIT = 1024 * 1024


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
    """A track fragment's samples encrypted (same sizes, back to back), and its senc body and aux info sizes."""

    payload: memoryview
    senc_body: bytes
    aux_sizes: np.ndarray
    subsamples: bool


def encrypt_samples(part: TrackSegment, protection: TrackProtection, stream: bytes) -> EncryptedSamples:
    """Encrypt one track's share of a fragment. ``stream`` names the track's source (file and track) for the IVs.

    The samples are copied once, back to back, into a buffer that is then encrypted in place and becomes the
    track's part of the mdat."""
    sizes = part.samples.sizes.astype(np.int64)
    n = len(sizes)
    total = int(sizes.sum())
    out = np.empty(total + BLOCK, dtype=np.uint8)  # cipher calls want room for a block more than they write
    view, at = memoryview(out), 0
    for chunk in part.chunks:
        view[at : at + len(chunk)] = chunk
        at += len(chunk)
    if at != total:
        raise PackagerError(ErrorCode.BAD_DATA, f"encrypt_samples: {at} payload bytes for samples of {total}")
    starts = np.cumsum(sizes) - sizes
    if protection.subsamples:
        r_sample, r_start, r_len = _video_ranges(out[:total], starts, sizes, part.track, protection.scheme)
    else:  # whole-sample encryption
        r_sample, r_start, r_len = np.arange(n), starts, sizes
        if protection.scheme == CBCS:
            r_len = sizes - sizes % BLOCK
    key = protection.key.key
    ivs = None
    if protection.scheme == CENC:
        first = int(part.samples.dts[0]) if n else 0
        hi = hashlib.sha256(b"cenc-iv:%s:%s:%d" % (protection.key.key_id, stream, first)).digest()[:8]
        ivs = _ctr(view, n, key, hi, r_sample, r_start, r_len, whole=not protection.subsamples)
    else:
        crypt, skip = protection.pattern if protection.subsamples else (1, 0)
        _cbc_pattern(out, key, protection.constant_iv, r_start, r_len, crypt, skip)
    if protection.subsamples:
        counts, clear, protected = subsample_entries(starts, sizes, r_sample, r_start, r_len)
        body, aux = boxes.senc_payload(ivs, counts, clear, protected, n)
    else:
        body, aux = boxes.senc_payload(ivs, None, None, None, n)
    return EncryptedSamples(view[:total], body, aux, protection.subsamples)


def _video_ranges(data: np.ndarray, starts: np.ndarray, sizes: np.ndarray, track: Track,
                  scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample, start, length) of every protected range: the slice data of each VCL NAL unit, whole blocks."""
    codec = track.codec
    length_size = codec.nal_length_size
    offsets, lengths, owner = avc.nal_units(data, starts, sizes, length_size)
    syntax = hevc if codec.codec == "hevc" else avc
    types = syntax.nal_unit_types(data[np.minimum(offsets + length_size, max(len(data) - 1, 0))])
    types[lengths == 0] = 0xFF
    vcl = types < 32 if codec.codec == "hevc" else (types >= 1) & (types <= 5)
    if scheme == CBCS:
        from ..codecs.slices import slice_header_sizes  # the slice header stays clear (§10.4.2)

        header = slice_header_sizes(codec, data, offsets, lengths, types) if vcl.any() else np.zeros_like(lengths)
    else:
        header = np.full(len(offsets), 2 if codec.codec == "hevc" else 1, dtype=np.int64)
    start = offsets + length_size + header
    length = lengths - header
    length -= length % BLOCK
    keep = vcl & (length >= BLOCK)
    return owner[keep], start[keep], length[keep]


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


def _ctr(buffer: memoryview, n: int, key: bytes, hi: bytes, r_sample: np.ndarray, r_start: np.ndarray,
         r_len: np.ndarray, whole: bool = False) -> np.ndarray:
    """'cenc', in place: one CTR context runs over every range, moved on to a block boundary after each sample
    (sample i's IV is the context's first counter block plus the blocks used before it). Returns the (n, 16) IVs."""
    per_sample = np.bincount(r_sample, weights=r_len, minlength=n).astype(np.int64)
    blocks = -(-per_sample // BLOCK)
    first_block = np.cumsum(blocks) - blocks
    ivs = np.empty((n, BLOCK), dtype=np.uint8)
    ivs[:, :8] = np.frombuffer(hi, dtype=np.uint8)
    ivs[:, 8:] = first_block.astype(">u8").view(np.uint8).reshape(n, 8)
    last = np.ones(len(r_sample), dtype=bool)
    last[:-1] = r_sample[1:] != r_sample[:-1]
    pad = np.where(last, (-per_sample[r_sample]) % BLOCK, 0)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(hi + bytes(8))).encryptor()
    if whole and int(r_len.sum()) <= WHOLE_SAMPLE_XOR_LIMIT:
        # whole samples back to back (audio): one keystream call, laid over the payload with one gather
        stream = np.frombuffer(encryptor.update(bytes(BLOCK * int(blocks.sum()))), dtype=np.uint8)
        total = int(r_len.sum())
        at = np.repeat(first_block * BLOCK - r_start, r_len) + np.arange(total)
        data = np.frombuffer(buffer, dtype=np.uint8)[:total]
        np.bitwise_xor(data, stream[at], out=data)
        return ivs
    update_into, update, zeros = encryptor.update_into, encryptor.update, bytes(BLOCK)
    for s, e, p in zip(r_start.tolist(), (r_start + r_len).tolist(), pad.tolist()):
        update_into(buffer[s:e], buffer[s:])
        if p:
            update(zeros[:p])
    return ivs



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
