"""One track's share of a TS segment as PES packets (ISO/IEC 13818-1 2.4.3.6), column-wise.

Every sample becomes a *unit*: a prefix (AUD [+ parameter sets] for video, the ADTS header for AAC) followed by the
sample's bytes. Runs of units form PES packets: one per video access unit, up to ``AUDIO_FRAMES_PER_PES`` AAC frames
otherwise. Timestamps are the samples' presentation times on the 90 kHz clock plus ``TS_PTS_OFFSET``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..codecs import avc, hevc
from ..codecs.aac import ADTS_HEADER_SIZE, adts_headers
from ..errors import bad_data
from ..media_data import TrackSegment
from ..model import SampleTable, Track

# Added to every presentation time (90 kHz): 2 s, so that negative times (B-frame decode times before the first
# presentation, AAC priming, edit lists: typically -0.1 s) and the PCR's lead stay positive. Presentation time 0 is
# PTS 180000 in every segment of every rendition (players and WebVTT's X-TIMESTAMP-MAP rely on that).
TS_PTS_OFFSET = 2 * 90000
AUDIO_FRAMES_PER_PES = 5  # ~116 ms of 44.1 kHz AAC
MAX_PCR_INTERVAL = 9000  # 2.7.2: at most 100 ms between PCRs (bounds audio PES length when audio carries the PCR)
# Rows of the per-PES table (int64, one column per PES). The first seven are the sources of the header bytes.
(AF_LENGTH, FLAGS, PCR7, PES_LENGTH, HEADER_LENGTH, PTS2, DTS2,
 FIRST, PTS, DTS, RAI, STREAM, COUNT, LEN, STUFFING, AF, PACKETS, CC, BOTH) = range(19)  # fmt: skip


@dataclass(frozen=True, eq=False)
class Stream:
    """An elementary stream of the muxer's program: a track and how it is carried."""

    index: int
    track: Track
    pid: int
    stream_id: int
    stream_type: int
    codec: str
    carries_pcr: bool
    prefixes: tuple[np.ndarray, ...] = ()  # video: AUD, AUD + parameter sets (Annex B)
    nal_length_size: int = 4
    adts: int = 0  # audio: the constant bits of the ADTS header

    @functools.cached_property
    def head(self) -> np.ndarray:
        """Video: the AUD in 7 bytes (H.264's is 6: the last byte is never part of the output)."""
        return np.concatenate((self.prefixes[0], np.zeros(7 - len(self.prefixes[0]), dtype=np.uint8)))


@dataclass
class Units:
    """One track's share of a segment: one unit per sample (a prefix, then the sample), grouped into PES packets."""

    stream: Stream
    bodies: list | None  # memoryview slices of the samples; None when they are read straight into place
    prefix_len: np.ndarray  # AUD [+ parameter sets] or ADTS header bytes per unit
    unit_len: np.ndarray  # prefix_len + body length
    pes: np.ndarray  # (19, n_pes) int64 table with FIRST (counting the units of all streams), PTS, DTS, RAI, STREAM
    with_ps: np.ndarray | None = None  # video: the unit gets parameter sets
    start_codes: np.ndarray | None = None  # video: NAL length prefix offsets relative to the unit's body
    start_code_owner: np.ndarray | None = None  # video: their unit
    adts: np.ndarray | None = None  # audio: (n, 7) headers


def to_90k(t: np.ndarray, timescale: int) -> np.ndarray:
    """round(t * 90000 / timescale) + TS_PTS_OFFSET for a column (half-up rounding, exact in int64)."""
    if timescale == 90000:
        return t + TS_PTS_OFFSET
    return (t * 180000 + (timescale + 2 * timescale * TS_PTS_OFFSET)) // (2 * timescale)


def _pes_table(first, pts, dts, rai, stream: int) -> np.ndarray:
    pes = np.empty((BOTH + 1, len(first)), dtype=np.int64)
    pes[FIRST] = first
    pes[PTS] = pts
    pes[DTS] = dts
    pes[RAI] = rai
    pes[STREAM] = stream
    return pes  # the other rows are filled in once all streams are known


def video_units(s: Stream, ts: TrackSegment) -> Units:
    """One PES per access unit: AUD, parameter sets before key frames (unless the sample has an SPS), the NALs."""
    samples = ts.samples
    sizes = samples.sizes.astype(np.int64)
    if ts.payload_size != int(sizes.sum()):
        raise bad_data(f"TsMuxer.build: video payload has {ts.payload_size} bytes, its samples {int(sizes.sum())}")
    if s.nal_length_size != 4:
        payload, sizes = avc.widen_length_prefixes(ts.payload, sizes, s.nal_length_size)
        starts = np.cumsum(sizes) - sizes
    else:  # the samples where they were read: no joined copy of the payload
        payload, starts = ts.sample_locations()
    offsets, lengths, owner, types = nal_layout(s.codec, np.frombuffer(payload, dtype=np.uint8), starts, sizes)
    nal_syntax = hevc if s.codec == "hevc" else avc
    body_start, body_len = starts, sizes
    drop = types == nal_syntax.AUD_NAL_TYPE
    if drop.any():  # an AUD already heading a sample is dropped: ours comes first, then the parameter sets
        drop &= offsets == starts[owner]
        body_start, body_len = starts.copy(), sizes.copy()
        body_start[owner[drop]] += 4 + lengths[drop]
        body_len[owner[drop]] -= 4 + lengths[drop]
        offsets, owner, types = offsets[~drop], owner[~drop], types[~drop]
    with_ps = samples.keyframe
    sps = types == nal_syntax.SPS
    if sps.any():
        with_ps = with_ps.copy()
        with_ps[owner[sps]] = False
    mv = memoryview(payload)
    bodies = list(map(mv.__getitem__, map(slice, body_start.tolist(), (body_start + body_len).tolist())))
    units = video_layout(s, samples, with_ps, body_len)
    units.bodies, units.start_codes, units.start_code_owner = bodies, offsets - body_start[owner], owner
    return units


def nal_layout(codec: str, data: np.ndarray, starts: np.ndarray,
               sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``avc.nal_units`` of samples with 4-byte NAL lengths, and each NAL unit's type (0xFF for an empty one, which
    has no header byte: a byte that exists is read, then given no type)."""
    offsets, lengths, owner = avc.nal_units(data, starts, sizes, 4)
    nal_syntax = hevc if codec == "hevc" else avc
    types = nal_syntax.nal_unit_types(data[np.minimum(offsets + 4, len(data) - 1)])
    types[lengths == 0] = 0xFF
    return offsets, lengths, owner, types


HEADER_PROBE_BYTES = 64 * 1024  # what ``own_headers`` reads of a key frame: parameter sets come before its slices
_PROBED_NAL_UNITS = 32


def own_headers(track: Track, head: bytes) -> bool:
    """Whether a video key frame carries its own AUD (first) or SPS, or NAL lengths other than 4 bytes: then the TS
    layout of the track's samples depends on their bytes (``video_units``), not on the sample table alone
    (``video_layout``). ``head``: the sample's first bytes; its first NAL units are looked at, the rest never read."""
    if track.codec.nal_length_size != 4:
        return True
    nal_syntax = hevc if track.codec.codec == "hevc" else avc
    data, pos = np.frombuffer(head, dtype=np.uint8), 0
    for k in range(_PROBED_NAL_UNITS):
        if pos + 5 > len(data):
            break
        length = int.from_bytes(head[pos : pos + 4], "big")
        kind = int(nal_syntax.nal_unit_types(data[pos + 4 : pos + 5])[0]) if length else 0xFF
        if (k == 0 and kind == nal_syntax.AUD_NAL_TYPE) or kind == nal_syntax.SPS:
            return True
        pos += 4 + length
    return False


def video_layout(s: Stream, samples: SampleTable, with_ps: np.ndarray | None = None,
                 body_len: np.ndarray | None = None) -> Units:
    """The units of ``samples`` from their table alone (no bodies yet). Unless told otherwise (``video_units``,
    which has looked into the samples), every key frame gets the parameter sets and every body is the whole sample:
    right for samples without an AUD or SPS of their own."""
    track = s.track
    if with_ps is None:
        with_ps, body_len = samples.keyframe, samples.sizes.astype(np.int64)
    prefix_len = np.where(with_ps, len(s.prefixes[1]), len(s.prefixes[0]))
    pres_dts = samples.dts - track.edit_offset
    pts = to_90k(pres_dts + samples.cts, track.timescale)
    pes = _pes_table(np.arange(len(body_len)), pts, to_90k(pres_dts, track.timescale), samples.keyframe, s.index)
    return Units(s, None, prefix_len, prefix_len + body_len, pes, with_ps)


def audio_units(s: Stream, ts: TrackSegment, video_dts: np.ndarray | None, base: int) -> Units:
    """``audio_layout`` with the bodies: each sample a view of the bytes read."""
    size = int(ts.samples.sizes.sum(dtype=np.int64))
    if ts.payload_size != size:
        raise bad_data(f"TsMuxer.build: audio payload has {ts.payload_size} bytes, its samples {size}")
    units = audio_layout(s, ts.samples, video_dts, base)
    units.bodies = ts.sample_views()
    return units


def audio_layout(s: Stream, samples: SampleTable, video_dts: np.ndarray | None, base: int) -> Units:
    """ADTS frames; a PES holds up to AUDIO_FRAMES_PER_PES of them, and starts anew at a gap in the timeline and
    wherever a video PES falls in between (so no audio PES reaches past the next video PES in DTS order)."""
    track = s.track
    n, sizes = len(samples), samples.sizes.astype(np.int64)
    pts = to_90k((samples.pts if samples.cts.any() else samples.dts) - track.edit_offset, track.timescale)
    limit = AUDIO_FRAMES_PER_PES
    if s.carries_pcr:
        longest = int(samples.durations.max()) * 90000 // track.timescale
        limit = max(1, min(limit, MAX_PCR_INTERVAL // max(1, longest)))
    brk = np.empty(n, dtype=bool)  # a PES must start here
    brk[0] = True
    np.not_equal(samples.dts[1:], samples.dts[:-1] + samples.durations[:-1], out=brk[1:])
    if video_dts is not None:
        slot = np.searchsorted(video_dts, pts, side="right")
        brk[1:] |= slot[1:] != slot[:-1]
    pes_first = np.flatnonzero(brk)
    if n - pes_first[-1] > limit or (len(pes_first) > 1 and (pes_first[1:] - pes_first[:-1]).max() > limit):
        run = np.append(pes_first[1:], n) - pes_first  # long runs: cut every `limit` frames
        pes_first = np.flatnonzero((np.arange(n) - np.repeat(pes_first, run)) % limit == 0)
    pes_pts = pts[pes_first]
    pes = _pes_table(pes_first + base, pes_pts, pes_pts, 0, s.index)
    headers = adts_headers(s.adts, sizes)
    return Units(s, None, np.full(n, ADTS_HEADER_SIZE), sizes + ADTS_HEADER_SIZE, pes, adts=headers)
