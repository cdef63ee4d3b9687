"""The boxes of Common Encryption (ISO/IEC 23001-7) and of Smooth Streaming's PIFF protection.

Init segment: ``pssh`` (§8.1) in the moov; ``sinf`` = ``frma`` (original sample entry type) + ``schm`` (scheme,
version 0x00010000) + ``schi`` > ``tenc`` (§8.2) closing an ``encv``/``enca`` sample entry. Fragments: ``senc``
(§7.2: per sample its IV and subsample map), ``saiz`` and ``saio`` (14496-12 §8.7.8–9: where that auxiliary
information is, so parsers that only know the generic boxes find it).
"""
from __future__ import annotations

import uuid

import numpy as np

from ..codecs.box import box, full_box
from ..fmp4.boxes import U8, U16, U32

# PIFF 1.1 (Smooth Streaming) boxes are 'uuid' boxes with these user types
PIFF_SAMPLE_ENCRYPTION = bytes.fromhex("a2394f525a9b4f14a2446c427c648df4")
PIFF_TRACK_ENCRYPTION = bytes.fromhex("8974dbce7be74c5184f97148f9882554")
SENC_USE_SUBSAMPLES = 0x2


def pssh(system_id: uuid.UUID, data: bytes, key_ids: tuple[bytes, ...] = ()) -> bytes:
    """Protection System Specific Header: version 1 (with the KIDs) when key ids are given, as the W3C common
    system requires; version 0 otherwise."""
    if key_ids:
        return full_box(b"pssh", 1, 0, system_id.bytes, U32(len(key_ids)), *key_ids, U32(len(data)), data)
    return full_box(b"pssh", 0, 0, system_id.bytes, U32(len(data)), data)


def tenc(key_id: bytes, iv_size: int, constant_iv: bytes | None = None, pattern: tuple[int, int] = (0, 0),
         version: int = 0) -> bytes:
    """TrackEncryptionBox: version 1 carries the pattern (cbcs); a constant IV when the per-sample IV size is 0."""
    crypt, skip = pattern
    fields = U8(0) + U8((crypt << 4 | skip) if version else 0) + U8(1) + U8(iv_size) + key_id
    if iv_size == 0:
        fields += U8(len(constant_iv)) + constant_iv
    return full_box(b"tenc", version, 0, fields)


def sinf(original_format: bytes, scheme: bytes, tenc_box: bytes) -> bytes:
    return box(b"sinf", box(b"frma", original_format), full_box(b"schm", 0, 0, scheme, U32(0x00010000)),
               box(b"schi", tenc_box))


def protect_sample_entry(entry: bytes, scheme: bytes, tenc_box: bytes) -> bytes:
    """A sample entry box (avc1, mp4a...) turned into encv/enca with a sinf appended (23001-7 §4.2)."""
    original = entry[4:8]
    protected = b"encv" if original in (b"avc1", b"avc3", b"hvc1", b"hev1") else b"enca"
    return box(protected, entry[8:], sinf(original, scheme, tenc_box))


def senc_payload(ivs: np.ndarray | None, counts: np.ndarray | None, clear: np.ndarray | None,
                 protected: np.ndarray | None, sample_count: int) -> tuple[bytes, np.ndarray]:
    """(senc body after the FullBox fields, per-sample aux info sizes). ``ivs``: (n, iv_size) uint8 or None for a
    constant IV; ``counts``: subsamples per sample (None: no subsample maps); ``clear``/``protected``: all samples'
    entries back to back. Built column-wise: one structured array per table, no per-sample loop."""
    iv_size = 0 if ivs is None else ivs.shape[1]
    if counts is None:
        body = ivs.tobytes() if iv_size else b""
        return U32(sample_count) + body, np.full(sample_count, iv_size, dtype=np.int64)
    sizes = iv_size + 2 + 6 * counts.astype(np.int64)
    if len(counts) and (counts == counts[0]).all():  # the common case: one table of equal rows
        return U32(sample_count) + _regular_rows(ivs, int(counts[0]), clear, protected, sample_count), sizes
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    starts = np.cumsum(sizes) - sizes
    if iv_size:
        out[(starts[:, None] + np.arange(iv_size)).ravel()] = ivs.ravel()
    count_at = starts + iv_size
    out[count_at] = counts >> 8
    out[count_at + 1] = counts & 0xFF
    entries = np.empty((len(clear), 6), dtype=np.uint8)
    entries[:, 0:2] = np.asarray(clear, dtype=">u2").view(np.uint8).reshape(-1, 2)
    entries[:, 2:6] = np.asarray(protected, dtype=">u4").view(np.uint8).reshape(-1, 4)
    # entry k of sample i sits at count_at[i] + 2 + 6k
    first_entry = np.cumsum(counts) - counts
    sample_of = np.repeat(np.arange(len(counts)), counts)
    at = count_at[sample_of] + 2 + 6 * (np.arange(len(clear)) - first_entry[sample_of])
    out[(at[:, None] + np.arange(6)).ravel()] = entries.ravel()
    return U32(sample_count) + out.tobytes(), sizes


def _regular_rows(ivs: np.ndarray | None, count: int, clear: np.ndarray, protected: np.ndarray, n: int) -> bytes:
    """senc_payload's table when every sample has ``count`` subsamples: (n, row) bytes filled by columns."""
    iv_size = 0 if ivs is None else ivs.shape[1]
    rows = np.empty((n, iv_size + 2 + 6 * count), dtype=np.uint8)
    if iv_size:
        rows[:, :iv_size] = ivs
    rows[:, iv_size : iv_size + 2] = np.array([count], dtype=">u2").view(np.uint8)
    entries = rows[:, iv_size + 2 :].reshape(n, count, 6)
    entries[:, :, 0:2] = np.asarray(clear, dtype=">u2").view(np.uint8).reshape(n, count, 2)
    entries[:, :, 2:6] = np.asarray(protected, dtype=">u4").view(np.uint8).reshape(n, count, 4)
    return rows.tobytes()


def senc(body: bytes, subsamples: bool) -> bytes:
    return full_box(b"senc", 0, SENC_USE_SUBSAMPLES if subsamples else 0, body)


def piff_senc(body: bytes, subsamples: bool) -> bytes:
    """PIFF SampleEncryptionBox (the same table as senc, in a uuid box; flags without override fields)."""
    return box(b"uuid", PIFF_SAMPLE_ENCRYPTION, U32(SENC_USE_SUBSAMPLES if subsamples else 0), body)


def saiz(sizes: np.ndarray) -> bytes:
    """One default size when every sample's aux info has the same size, else a table of 8-bit sizes."""
    n = len(sizes)
    if n and (sizes == sizes[0]).all():
        return full_box(b"saiz", 0, 0, U8(int(sizes[0])), U32(n))
    return full_box(b"saiz", 0, 0, U8(0), U32(n), sizes.astype(np.uint8).tobytes())


def saiz_size(sizes: np.ndarray) -> int:
    return 17 if len(sizes) and (sizes == sizes[0]).all() else 17 + len(sizes)


SAIO_SIZE = 20


def saio(offset: int) -> bytes:
    """One offset (the senc's first aux info byte, from the moof: tfhd says default-base-is-moof)."""
    return full_box(b"saio", 0, 0, U32(1), U32(offset))
