"""Media segments of fragmented MP4 (ISO/IEC 14496-12 §8.8; DASH 23009-1 §6.3.4): [styp] moof mdat.

Layout. ``styp`` (brand msdh), ``moof`` = ``mfhd`` (sequence_number = segment index + 1) and one ``traf`` per track
with samples: ``tfhd`` (default-base-is-moof, so data offsets count from the moof's first byte; default sample
flags "sync" when every sample is a sync sample), ``tfdt`` (version 1, 64-bit baseMediaDecodeTime), optionally the
Smooth Streaming ``tfxd`` uuid box, and one ``trun`` (data_offset, per-sample sample_duration, sample_size, then
sample_flags when some samples are not sync samples, then sample_composition_time_offset when any is not 0). One
``mdat`` holds the payloads of all tracks back to back, in track order.

Timestamps (the same for every protocol as our HLS-TS output, without TS_PTS_OFFSET):
    baseMediaDecodeTime = dts of the first sample (the MP4's own decode time, >= 0),
    sample_composition_time_offset = cts - edit_offset (trun version 1: signed, §8.8.8.3),
so the presentation time in the fragment, tfdt + sum(previous sample_duration) + offset, is exactly
``dts + cts - edit_offset``: video starts at 0 and AAC priming stays at -1024 (players trim it, as MSE's append
window and ffmpeg do), with no edit list. DASH and Smooth timelines cannot state a negative time, so
``non_negative=True`` adds ``presentation_time_offset(track)`` ticks to every composition offset (0 unless some
presentation time of the track is negative, e.g. 1024 for AAC priming); the MPD declares it as
@presentationTimeOffset and the presentation times are again exactly ours.

Speed. A fragment is essentially one copy of the payload: the trun table of a track is one numpy array of
big-endian uint32 columns filled column-wise, and the output is one ``b"".join``.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..codecs.box import box_header, box_header_size
from ..errors import ErrorCode, PackagerError, bad_data, bad_request
from ..media_data import MediaSegment
from ..model import SampleTable, Track
from ..output import finished, new_bytes
from .boxes import U32, file_type

if TYPE_CHECKING:
    from ..drm.cenc import EncryptedSamples, TrackProtection

STYP_BRANDS = (b"msdh",)  # 23009-1 §6.3.4.2: a DASH media segment (no sidx, so not msix)
TFXD_UUID = bytes.fromhex("6D1D9B0542D544E680E2141DAFF757B2")  # Smooth Streaming TfxdBox (MS-SSTR §2.2.4.4)
SYNC_SAMPLE_FLAGS = 0x02000000  # sample_depends_on = 2 (an I picture), sample_is_non_sync_sample = 0 (§8.8.3.1)
NON_SYNC_SAMPLE_FLAGS = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample = 1

TFHD_SAMPLE_DESCRIPTION_INDEX = 0x000002
TFHD_DEFAULT_SAMPLE_FLAGS = 0x000020
TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
TRUN_DATA_OFFSET = 0x000001
TRUN_SAMPLE_DURATION = 0x000100
TRUN_SAMPLE_SIZE = 0x000200
TRUN_SAMPLE_FLAGS = 0x000400
TRUN_SAMPLE_COMPOSITION_TIME_OFFSET = 0x000800

# Upper bounds of the bytes a fragment adds to its payload, for manifests that must not build fragments: styp (20)
# + moof header (8) + mfhd (16) + a 64-bit mdat header (16); per track: traf (8) + tfhd (20) + tfdt (20) + tfxd (44)
# + trun header (20); per sample: duration, size, flags, composition offset (16).
FRAGMENT_OVERHEAD = 20 + 8 + 16 + 16
TRAF_OVERHEAD = 8 + 20 + 20 + 44 + 20
SAMPLE_OVERHEAD = 16
AUX_OVERHEAD = 17 + 20 + 28  # an encrypted traf's saiz (default size), saio, senc header (PIFF's uuid box: 28)

_STYP = file_type(b"styp", STYP_BRANDS[0], 0, STYP_BRANDS)
_TRAF_TFHD = struct.Struct(">I4s" "I4sII")  # traf header, tfhd up to track_ID
_TFHD_SIZE = {(False, False): 16, (True, False): 20, (False, True): 20, (True, True): 24}  # (defaults, index)
_TFDT = struct.Struct(">I4sIQ")  # version 1: 64-bit baseMediaDecodeTime
_TFXD = struct.Struct(">I4s16sIQQ")
_TRUN_HEAD = struct.Struct(">I4sIIi")
_MOOF_HEAD = struct.Struct(">I4s" "I4sII")  # moof header, mfhd


def presentation_time_offset(track: Track) -> int:
    """Ticks to add to the track's presentation times so that none is negative: max(0, edit_offset - min(pts)).

    Only samples with dts < pts[0] - min(cts) can present before the first one, so this looks at the first few
    samples (and the cts column's minimum), not at every pts."""
    s = track.samples
    if len(s) == 0:
        return 0
    first_pts = int(s.dts[0]) + int(s.cts[0])
    k = max(1, int(np.searchsorted(s.dts, first_pts - min(0, int(s.cts.min())), side="left")))
    earliest = int((s.dts[:k] + s.cts[:k]).min())
    return max(0, track.edit_offset - earliest)


def fragment_size_bound(payload_bytes, sample_counts, track_count: int = 1, aux_per_sample: int = 0):
    """An upper bound of a fragment's size from its payload bytes and sample count (works on numpy columns);
    ``aux_per_sample``: the most encryption info (senc, saiz) a sample adds (``TrackProtection.aux_bound``)."""
    aux = (AUX_OVERHEAD * track_count + aux_per_sample * sample_counts) if aux_per_sample else 0
    return payload_bytes + FRAGMENT_OVERHEAD + TRAF_OVERHEAD * track_count + SAMPLE_OVERHEAD * sample_counts + aux


@dataclass(frozen=True)
class _Run:
    count: int
    flags: bool  # a sample_flags column (some samples are not sync samples)
    cto: bool  # a sample_composition_time_offset column (some offsets are not 0)
    payload_size: int
    traf_size: int  # 0 when the track has no sample in the segment (no traf)


class Fmp4Muxer:
    """Builds the media segments of a fixed list of tracks; track i gets track_ID i + 1, as in the init segment."""

    def __init__(self, tracks: Sequence[Track], *, styp: bool = True, tfxd: bool = False, non_negative: bool = False,
                 shift: Fraction = Fraction(0), protection: "Sequence[TrackProtection | None]" = (),
                 streams: Sequence[bytes] = (), description_index: int = 1):
        """``shift``: seconds added to every track's presentation times (an HLS clip's decode-only frames moved to
        non-negative times, ``packagers.hls.playlists.clip_shift``). ``protection``: per track, how it is encrypted
        (Common Encryption: senc, saiz and saio follow its trun; Smooth's PIFF box with ``tfxd``), with ``streams``
        naming each track's source for its IVs. ``description_index``: the init segment's sample entry the
        fragments use (2: the clear entry a protected init keeps for a clear lead)."""
        if not tracks:
            raise PackagerError(ErrorCode.NO_STREAMS, "Fmp4Muxer: no tracks to mux")
        self.tracks = tuple(tracks)
        self.styp, self.tfxd = styp, tfxd
        self.protection = tuple(protection) or (None,) * len(self.tracks)
        self.streams = tuple(streams) or tuple(b"%d" % t.track_id for t in self.tracks)
        self.description_index = description_index
        # composition offset = cts + this (ticks), per track
        self.offsets = tuple((presentation_time_offset(t) if non_negative else 0) - t.edit_offset
                             + round(shift * t.timescale) for t in tracks)

    def _runs(self, tables: Sequence[SampleTable]) -> list[_Run]:
        """What each track's trun will hold; computed once per segment and shared by ``measure`` and ``build``."""
        if len(tables) != len(self.tracks):
            raise bad_request(f"Fmp4Muxer: segment has {len(tables)} tracks, the muxer {len(self.tracks)}")
        runs = []
        for i, table in enumerate(tables):
            n = len(table)
            if n == 0:
                runs.append(_Run(0, False, False, 0, 0))
                continue
            flags = np.count_nonzero(table.keyframe) != n
            shift = self.offsets[i]
            low, high = int(table.cts.min()) + shift, int(table.cts.max()) + shift
            if low < -(2**31) or high >= 2**31:
                raise bad_data(f"Fmp4Muxer: composition offset out of 32-bit range in track {self.tracks[i].track_id}")
            cto = low != 0 or high != 0
            columns = 2 + flags + cto
            tfhd = _TFHD_SIZE[not flags, self.description_index != 1]
            traf_size = 8 + tfhd + 20 + (44 if self.tfxd else 0) + 20 + 4 * columns * n
            runs.append(_Run(n, bool(flags), cto, int(table.sizes.sum()), traf_size))
        return runs

    def measure(self, tables: Sequence[SampleTable]) -> int:
        """The exact size of ``build`` for a segment with these sample tables (one per track), without payloads.
        Not for encrypted fragments (their subsample maps depend on the bytes)."""
        if any(self.protection):
            raise PackagerError(ErrorCode.UNSUPPORTED, "Fmp4Muxer.measure: encrypted sizes depend on the bytes")
        runs = self._runs(tables)
        payload = sum(r.payload_size for r in runs)
        moof = 8 + 16 + sum(r.traf_size for r in runs)
        return (len(_STYP) if self.styp else 0) + moof + box_header_size(payload) + payload

    def build(self, segment: MediaSegment) -> bytes:
        """[styp] moof mdat for ``segment`` (its tracks in the muxer's order)."""
        parts = segment.tracks
        runs = self._runs([part.samples for part in parts])
        for part, run in zip(parts, runs):
            if part.payload_size != run.payload_size:
                raise bad_data(f"Fmp4Muxer.build: track {part.track.track_id} payload has {part.payload_size} bytes, "
                               f"its samples {run.payload_size}")
        encrypted = self._encrypt(parts, runs)
        if encrypted:
            runs = [replace(r, traf_size=r.traf_size + self._aux_size(e)) if e is not None and e.aux_sizes.any()
                    else r for r, e in zip(runs, encrypted)]
        payload_size = sum(r.payload_size for r in runs)
        moof_size = 8 + 16 + sum(r.traf_size for r in runs)
        data_offset = moof_size + box_header_size(payload_size)  # default-base-is-moof: from the moof's first byte
        if data_offset + payload_size - runs[-1].payload_size >= 2**31:
            raise bad_request(f"Fmp4Muxer.build: segment {segment.index + 1} is too large for 32-bit data offsets")
        chunks = [_STYP] if self.styp else []
        chunks.append(_MOOF_HEAD.pack(moof_size, b"moof", 16, b"mfhd", 0, segment.index + 1))
        traf_at = 8 + 16  # from the moof's first byte
        for i, (part, run) in enumerate(zip(parts, runs)):
            if run.count:
                self._traf(chunks, i, part.samples, run, data_offset)
                if encrypted and encrypted[i] is not None and encrypted[i].aux_sizes.any():
                    # (a constant IV and no subsamples, cbcs audio, leave nothing to say per sample: tenc says it)
                    self._aux(chunks, encrypted[i], traf_at + run.traf_size)
                data_offset += run.payload_size
                traf_at += run.traf_size
        chunks.append(box_header(b"mdat", payload_size))
        if encrypted:
            return self._fill(chunks, parts, runs, encrypted)
        for part in parts:
            chunks += part.chunks  # the read buffers' views: the payload is copied once, into the output
        return b"".join(chunks)

    @staticmethod
    def _fill(head: list[bytes], parts: Sequence, runs: list[_Run], encrypted: list) -> bytes:
        """An encrypted fragment, written once into its final bytes: the boxes, then each track's samples, which an
        ``EncryptedSamples`` writes (encrypting on the way) into its region of the mdat."""
        header = b"".join(head)
        body, view = new_bytes(len(header) + sum(r.payload_size for r in runs))
        view[: len(header)] = np.frombuffer(header, dtype=np.uint8)
        at = len(header)
        for part, run, samples in zip(parts, runs, encrypted):
            region = view[at : at + run.payload_size]
            if samples is not None:
                samples.write(region)
            else:
                part.copy_into(region)
            at += run.payload_size
        del view, region
        return finished(body)

    def _encrypt(self, parts: Sequence, runs: list[_Run]) -> "list[EncryptedSamples | None]":
        if not any(self.protection):
            return []
        from ..drm.cenc import encrypt_samples

        return [encrypt_samples(part, p, stream) if p is not None and run.count else None
                for part, p, stream, run in zip(parts, self.protection, self.streams, runs)]

    def _aux_size(self, encrypted: "EncryptedSamples") -> int:
        """Bytes saiz + saio + senc (or PIFF's box, 16 bytes more) add to a traf."""
        from ..drm import boxes

        senc = 12 + len(encrypted.senc_body) + (16 if self.tfxd else 0)
        return boxes.saiz_size(encrypted.aux_sizes) + boxes.SAIO_SIZE + senc

    def _aux(self, chunks: list[bytes], encrypted: "EncryptedSamples", traf_end: int) -> None:
        """saiz, saio and senc (PIFF's uuid box in Smooth fragments) closing a traf that ends at ``traf_end``."""
        from ..drm import boxes

        senc = (boxes.piff_senc if self.tfxd else boxes.senc)(encrypted.senc_body, encrypted.subsamples)
        # the aux info starts after the senc's header, FullBox fields (and PIFF's user type) and sample_count
        first_info = traf_end - len(senc) + (8 + 16 + 4 if self.tfxd else 8 + 4) + 4
        chunks += (boxes.saiz(encrypted.aux_sizes), boxes.saio(first_info), senc)

    def _traf(self, chunks: list[bytes], i: int, table: SampleTable, run: _Run, data_offset: int) -> None:
        """traf(tfhd, tfdt, [tfxd], trun) of track i; the trun table is filled column by column (no sample loop)."""
        decode_time = int(table.dts[0])
        if decode_time < 0:
            raise bad_data(f"Fmp4Muxer.build: negative decode time {decode_time} in track {self.tracks[i].track_id}")
        index = self.description_index != 1
        tfhd_flags = (TFHD_DEFAULT_BASE_IS_MOOF | (0 if run.flags else TFHD_DEFAULT_SAMPLE_FLAGS)
                      | (TFHD_SAMPLE_DESCRIPTION_INDEX if index else 0))
        chunks.append(_TRAF_TFHD.pack(run.traf_size, b"traf", _TFHD_SIZE[not run.flags, index], b"tfhd", tfhd_flags,
                                      i + 1))
        if index:
            chunks.append(U32(self.description_index))
        if not run.flags:  # every sample is a sync sample: one tfhd default_sample_flags instead of a column
            chunks.append(U32(SYNC_SAMPLE_FLAGS))
        chunks.append(_TFDT.pack(20, b"tfdt", 1 << 24, decode_time))
        if self.tfxd:
            duration = int(table.durations.sum(dtype=np.uint64))
            chunks.append(_TFXD.pack(44, b"uuid", TFXD_UUID, 1 << 24, decode_time, duration))
        n, cto = run.count, run.cto
        columns = 2 + run.flags + cto
        trun_flags = (TRUN_DATA_OFFSET | TRUN_SAMPLE_DURATION | TRUN_SAMPLE_SIZE
                      | (TRUN_SAMPLE_FLAGS if run.flags else 0) | (TRUN_SAMPLE_COMPOSITION_TIME_OFFSET if cto else 0))
        chunks.append(_TRUN_HEAD.pack(20 + 4 * columns * n, b"trun", 1 << 24 | trun_flags, n, data_offset))
        rows = np.empty((n, columns), dtype=">u4")
        rows[:, 0] = table.durations
        rows[:, 1] = table.sizes
        if run.flags:
            rows[:, 2] = np.where(table.keyframe, SYNC_SAMPLE_FLAGS, NON_SYNC_SAMPLE_FLAGS)
        if cto:
            offsets = table.cts.astype(np.int64)
            offsets += self.offsets[i]
            rows[:, -1] = offsets & 0xFFFFFFFF  # two's complement of the signed offsets (trun version 1)
        chunks.append(rows.tobytes())
