"""MP4 samples → one MPEG-TS segment (ISO/IEC 13818-1), built column-wise with numpy.

Layout. Every segment starts with a PAT and a PMT whose continuity_counter is the segment index mod 16, so they
stay continuous from segment to segment (as nginx-vod-module does); elementary PIDs count from 0 in each segment.
PES packets (see ``pes``) of all tracks follow each other in DTS order. The adaptation field of the *first* TS
packet of a PES carries the PCR (PCR PID), random_access_indicator (key frames) and all the stuffing the PES needs,
so every later packet carries exactly 184 payload bytes (2.4.3.4). PES headers have one layout: PTS and DTS, or
PTS and 5 stuffing bytes when DTS would equal PTS; when a PCR would not fit the first packet's adaptation field,
1 to 8 more PES header stuffing bytes (2.4.3.7 allows 32) push the PES over one more packet so that it does.

Speed. No Python loop runs per byte or per TS packet. Each unit (sample) gets a prefix: a PES's first unit gets the
PES's *lead* ([adaptation field][PES header][AUD or ADTS header], written over 0xFF stuffing), the others their ADTS
header, and key frames the parameter sets after their AUD. ``prepare`` computes all of it from the sample tables
before any byte is read: the prefixes go into the TS payload buffer (reused per thread, or the caller's
``PayloadBuffer``) and the gateway reads every sample straight into its place behind them (``ScatterBuild.reads``);
``finish`` overwrites the NAL length prefixes with start codes. ``build`` does the same from samples already read:
one ``writelines`` of (prefix, sample) slices. Either way the payload's length is a multiple of 184 by construction;
the packet headers (sync byte, PUSI, PID, continuity_counter) are one uint32 column, and one strided copy lays the
184-byte rows behind them, straight into the ``bytes`` that is returned (``packagers.output``).
"""
from __future__ import annotations

import io
import threading
from typing import Sequence

import numpy as np

from ..codecs import avc, hevc
from ..codecs.aac import adts_constant, parse_audio_specific_config
from ..drm.sample_aes import pmt_stream as sample_aes_pmt_stream
from ..errors import ErrorCode, PackagerError, bad_data, bad_request
from ..media_data import MediaSegment, ScatterRead, TrackSegment, scatter_reads
from ..output import finished, new_bytes
from ..model import SampleTable, Track
from . import packets as p
from .layout import HEAD_SIZE, PES_HEADER_SIZE, SegmentLayout
from .pes import (AF, AF_LENGTH, BOTH, CC, COUNT, DTS, DTS2, FIRST, FLAGS, HEADER_LENGTH, LEN, PACKETS, PCR7,
                  PES_LENGTH, PTS, PTS2, RAI, STREAM, STUFFING, TS_PTS_OFFSET, Stream, Units, audio_layout,
                  audio_units, nal_layout, video_layout, video_units)  # fmt: skip

__all__ = ["PAYLOAD_BUFFER_KEEP", "PCR_DELAY", "PayloadBuffer", "ScatterBuild", "TS_PTS_OFFSET", "TsMuxer"]

# PCR = DTS - PCR_DELAY: each PES "arrives" 100 ms before it is decoded (more than a frame at >= 10 fps, so a
# whole access unit is in the T-STD buffer by its DTS); never after the DTS of the PES that carries it.
PCR_DELAY = 9000

_AF_WITH_PCR = 8  # adaptation_field_length, flags, program_clock_reference (2.4.3.4)
# The adaptation field head (8 bytes) and PES header (19) of a PES from the 7 first rows of its table (length, flags,
# PCR base << 7, PES_packet_length, PES_header_data_length, PTS << 1, DTS << 1): each byte is
# (row[_LEAD_SOURCE] >> _LEAD_SHIFT) & _LEAD_MASK, ORed with the stream's template (constant bits, markers).
_LEAD_SOURCE = np.array([0, 1, 2, 2, 2, 2, 2, 2] + [0] * 4 + [3, 3, 0, 0, 4] + [5] * 5 + [6] * 5)
_LEAD_SHIFT = np.array([0, 0, 32, 24, 16, 8, 0, 0] + [0] * 4 + [8, 0, 0, 0, 0] + [30, 23, 15, 8, 0] * 2)[:, None]
_LEAD_MASK = np.array([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0] + [0] * 4 + [0xFF, 0xFF, 0, 0, 0xFF]
                      + [0x0E, 0xFF, 0xFE, 0xFF, 0xFE] * 2)[:, None]  # fmt: skip
_PAYLOAD = p.TS_PAYLOAD_SIZE
_AR4 = np.arange(4)
_START_CODE = np.array([0, 0, 0, 1], dtype=np.uint8)
PAYLOAD_BUFFER_KEEP = 4 << 20  # keep the payload buffer up to this size (docs/performance.md, memory)


class TsMuxer:
    """Builds MPEG-TS segments for a fixed set of tracks: at most one video (H.264/HEVC), any AAC audio."""

    def __init__(self, tracks: Sequence[Track], sample_aes: bool = False):
        """``sample_aes``: the segments given to ``build`` went through ``packagers.drm.sample_aes.encrypt_segment``;
        the PMT signals the encrypted stream types and their descriptors (H.264 and AAC only), and ``prepare`` and
        ``key_frame_ranges`` answer None (encrypted sample sizes are not those of the sample tables)."""
        videos = [t for t in tracks if t.kind == "video"]
        audios = [t for t in tracks if t.kind == "audio"]
        if not tracks:
            raise PackagerError(ErrorCode.NO_STREAMS, "TsMuxer: no tracks to mux")
        if len(videos) > 1:
            raise bad_request(f"TsMuxer: MPEG-TS segments carry one video track, got {len(videos)}")
        streams = []
        for track in videos + audios:
            index, codec, config = len(streams), track.codec.codec, track.codec
            if track.kind == "video":
                if codec not in ("h264", "hevc"):
                    raise PackagerError(ErrorCode.UNSUPPORTED, f"TsMuxer: video codec {codec} not supported in TS")
                nal_syntax = hevc if codec == "hevc" else avc
                nls, sets = config.nal_length_size, tuple(config.parameter_sets)
                if not sets and config.extradata:
                    parsed = nal_syntax.parse_config(config.extradata, config.fourcc, f"track {track.track_id}")
                    nls, sets = parsed.nal_length_size, parsed.parameter_sets
                if sum(len(ps) for ps in sets) > avc.MAX_PARAMETER_SET_BYTES:
                    raise bad_data(f"TsMuxer: {sum(len(ps) for ps in sets)} bytes of parameter sets in track "
                                   f"{track.track_id} of {track.source or 'media'}")
                aud = nal_syntax.AUD
                prefixes = tuple(np.frombuffer(b, dtype=np.uint8) for b in (aud, aud + avc.with_start_codes(sets)))
                stream_type = p.STREAM_TYPE_HEVC if codec == "hevc" else p.STREAM_TYPE_H264
                streams.append(
                    Stream(index, track, p.PID_VIDEO, p.STREAM_ID_VIDEO, stream_type, codec, True,
                           prefixes=prefixes, nal_length_size=nls)
                )  # fmt: skip
            else:
                if codec != "aac":
                    raise PackagerError(ErrorCode.UNSUPPORTED, f"TsMuxer: audio codec {codec} not supported in TS")
                n = index - len(videos)
                where = f"track {track.track_id} of {track.source or 'media'}"
                adts = adts_constant(parse_audio_specific_config(config.extradata, where))
                streams.append(
                    Stream(index, track, p.PID_AUDIO_FIRST + n, p.STREAM_ID_AUDIO_FIRST + n, p.STREAM_TYPE_AAC_ADTS,
                           codec, not videos and n == 0, adts=adts)
                )  # fmt: skip
        self.streams: tuple[Stream, ...] = tuple(streams)
        self.tracks = tuple(s.track for s in streams)
        given = [id(t) for t in tracks]
        self._table_index = [given.index(id(s.track)) for s in streams]  # prepare: the table of each stream
        self._narrow_lengths = any(s.nal_length_size != 4 for s in streams if s.track.kind == "video")
        # Set once a segment shows samples with an AUD or SPS of their own (their layout needs their bytes):
        # from then on every segment of this muxer is built from gathered samples.
        self._in_band = False
        self._by_track = {id(s.track): s for s in streams}
        pcr_pid = next(s.pid for s in streams if s.carries_pcr)
        descriptors = [p.language_descriptor(s.track.language) if s.track.kind == "audio" else b"" for s in streams]
        stream_types = [s.stream_type for s in streams]
        self.sample_aes = sample_aes
        if sample_aes:
            signalled = [sample_aes_pmt_stream(s.track) for s in streams]
            stream_types = [stream_type for stream_type, _ in signalled]
            descriptors = [d + extra for d, (_, extra) in zip(descriptors, signalled)]
        pat = p.pat_section()
        pmt = p.pmt_section(pcr_pid, [(t, s.pid, d) for t, s, d in zip(stream_types, streams, descriptors)])
        if 1 + len(pmt) > p.TS_PAYLOAD_SIZE:  # SAMPLE-AES's descriptors take ~30 bytes per audio track
            raise PackagerError(ErrorCode.UNSUPPORTED, f"TsMuxer: a PMT of {len(pmt)} bytes for {len(streams)} "
                                "streams does not fit one TS packet")
        # PAT + PMT for each continuity_counter value (the segment index mod 16)
        self._psi = [p.psi_packet(p.PID_PAT, pat, cc) + p.psi_packet(p.PID_PMT, pmt, cc) for cc in range(16)]
        # per stream: PCR or not, packet header constant bits, PES header templates (PTS + stuffing, PTS + DTS)
        self._pcr = np.array([s.carries_pcr for s in streams])
        self._ts_header = np.array([(p.SYNC_BYTE << 24) | (s.pid << 8) | 0x10 for s in streams])  # payload only
        self._lead_templates = np.zeros((8 + PES_HEADER_SIZE, 2 * len(streams)), dtype=np.int64)
        for s in streams:
            # adaptation field: length, flags, PCR (reserved bits 0x7E), or 0xFF stuffing where no PCR is carried
            af = (0, 0, 0, 0, 0, 0, 0x7E, 0) if s.carries_pcr else (0, 0) + (0xFF,) * 6
            # PES header (2.4.3.6): prefix, stream_id, [length], '10' + data_alignment_indicator, PTS_DTS_flags,
            # [PES_header_data_length], then '0010' PTS + 5 stuffing bytes, or '0011' PTS + '0001' DTS (markers set)
            head = (0, 0, 1, s.stream_id, 0, 0, 0x84)
            self._lead_templates[:, 2 * s.index] = af + head + (0x80, 0, 0x21, 0, 1, 0, 1) + (0xFF,) * 5
            self._lead_templates[:, 2 * s.index + 1] = af + head + (0xC0, 0, 0x31, 0, 1, 0, 1, 0x11, 0, 1, 0, 1)

    def build(self, segment: MediaSegment) -> bytes:
        """The TS bytes of one segment, from samples already read and gathered."""
        matched = self._match(segment.tracks)
        units, video_dts, base = [], None, 0
        for s, ts in matched:
            if s.track.kind == "video" and len(ts.samples):
                units.append(video_units(s, ts))
                video_dts, base = units[-1].pes[DTS], len(ts.samples)
        for s, ts in matched:
            if s.track.kind == "audio" and len(ts.samples):
                units.append(audio_units(s, ts, video_dts, base))
                base += len(ts.samples)
        head = self._psi[segment.index & 0x0F]
        if not units:
            return head
        layout = self._layout(units)
        bio = _scratch.payload_for(layout.n_rows * _PAYLOAD)
        bio.writelines(layout.pieces())
        if bio.tell() != layout.n_rows * _PAYLOAD:
            raise AssertionError("TsMuxer: the PES packets do not fill whole TS packets")
        view, payload = bio.getbuffer(), None
        try:
            payload = np.frombuffer(view, dtype=np.uint8, count=layout.n_rows * _PAYLOAD)
            video = units[0]
            if video.start_codes is not None:  # the video comes first: its NAL length prefixes become start codes
                at = layout.body_at[layout.out_pos[video.start_code_owner]] + video.start_codes
                payload[at[:, None] + _AR4] = _START_CODE
            return self._packetize(layout, payload, head)
        finally:
            del payload
            view.release()
            _scratch.release_large()

    def prepare(self, index: int, tables: Sequence[SampleTable],
                buffers: "PayloadBuffer | None" = None) -> "ScatterBuild | None":
        """Segment ``index`` laid out from its sample tables (one per track given to the constructor, in that order)
        before any byte is read: the returned build asks for each sample to be read straight into its place in the
        TS payload (``ScatterBuild.reads``), then ``finish`` adds the packet headers. None when the segment must come
        from gathered samples (``build``): NAL length prefixes other than 4 bytes, samples that overlap in the file,
        or a track already seen carrying its own AUD or SPS; and always with SAMPLE-AES (encryption changes sizes).
        ``buffers``: where the payload is laid out, for a caller that awaits between ``prepare`` and ``finish``
        (its own buffer: this thread's, the default, may serve another build meanwhile)."""
        found = self._layout_of(tables)
        if found is None:
            return None
        layout, offsets = found
        return ScatterBuild.start(self, layout, self._psi[index & 0x0F], offsets, buffers or _scratch)

    def key_frame_ranges(self, tables: Sequence[SampleTable]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Where each video key frame of a segment lies in its TS bytes, without reading or building it (I-frame
        playlists): (presentation time on the 90 kHz clock, TS_PTS_OFFSET included; byte offset; byte size) of the
        TS packets of each key frame's PES. ``tables`` as for ``prepare``; None when the layout needs the samples'
        bytes (a track seen with its own AUD or SPS, 2-byte NAL lengths: see ``prepare``)."""
        found = self._layout_of(tables)
        if found is None:
            return None
        pes, rows_after = found[0].pes, found[0].rows_after
        key = (pes[STREAM] == self.streams[0].index) & (pes[RAI] != 0) & (self.streams[0].track.kind == "video")
        packets = pes[PACKETS][key]
        return pes[PTS][key], (rows_after[key] - packets + 2) * p.TS_PACKET_SIZE, packets * p.TS_PACKET_SIZE

    def _layout_of(self, tables: Sequence[SampleTable]) -> tuple[SegmentLayout, np.ndarray] | None:
        """The layout of a segment from its sample tables, and the file offset of every unit's sample (units in
        stream order); None when it needs the samples' bytes or has no sample."""
        if self._in_band or self._narrow_lengths or self.sample_aes or len(tables) != len(self.streams):
            return None
        units, offsets, video_dts, base = [], [], None, 0
        for s in self.streams:  # the video first, as in build
            table = tables[self._table_index[s.index]]
            if not len(table):
                continue
            if s.track.kind == "video":
                units.append(video_layout(s, table))
                video_dts, base = units[-1].pes[DTS], len(table)
            else:
                units.append(audio_layout(s, table, video_dts, base))
                base += len(table)
            offsets.append(table.offsets)
        if not units:
            return None
        return self._layout(units), np.concatenate(offsets)

    def _match(self, track_segments: Sequence[TrackSegment]) -> list[tuple[Stream, TrackSegment]]:
        """Pair each TrackSegment with its stream: the same Track object, else the same (kind, track_id, source)."""
        fast = [self._by_track.get(id(ts.track)) for ts in track_segments]
        if None not in fast and len(set(map(id, fast))) == len(fast):
            return list(zip(fast, track_segments))
        out, free = [], list(self.streams)
        for ts in track_segments:
            t = ts.track
            stream = next((s for s in free if s.track is t), None) or next(
                (s for s in free if (s.track.kind, s.track.track_id, s.track.source) == (t.kind, t.track_id, t.source)),
                None,
            )
            if stream is None:
                raise bad_request(f"TsMuxer.build: track {t.track_id} ({t.kind}) is not one of this muxer's tracks")
            free.remove(stream)
            out.append((stream, ts))
        return out

    def _pes_layout(self, pes: np.ndarray, unit_len: np.ndarray, blocks: list[int]) -> np.ndarray:
        """Fill in the per-PES table (its rows are in ``pes``) and sort it in DTS order. ``blocks``: PES per stream.

        Per PES: units, length, stuffing, packets, continuity_counter and the header fields; the first packet takes
        what is left over after whole 184-byte packets and fills up with its adaptation field, and PES header
        stuffing (0..8 bytes) makes room when a PCR would not fit there.
        """
        count, pes_len, stuffing, af_len, n_packets, cc = (pes[row] for row in (COUNT, LEN, STUFFING, AF, PACKETS, CC))
        firsts = pes[FIRST]
        count[:-1] = firsts[1:] - firsts[:-1]
        count[-1] = len(unit_len) - firsts[-1]
        np.add.reduceat(unit_len, firsts, out=pes_len)
        pes_len += PES_HEADER_SIZE
        pcr = self._pcr[pes[STREAM]]
        spill = (pes_len - 1) % _PAYLOAD - (_PAYLOAD - _AF_WITH_PCR - 1)  # > 0: no room for the PCR
        np.multiply(pcr & (spill > 0), _AF_WITH_PCR + 1 - spill, out=stuffing)
        pes_len += stuffing
        np.subtract(_PAYLOAD - 1, (pes_len - 1) % _PAYLOAD, out=af_len)  # 0..183 bytes
        np.floor_divide(pes_len + _PAYLOAD - 1, _PAYLOAD, out=n_packets)
        np.cumsum(n_packets, out=cc)  # packets of the same PID before each PES (each stream is contiguous here)
        cc -= n_packets
        start = 0
        for size in blocks:
            cc[start : start + size] -= cc[start]
            start += size
        np.subtract(af_len, 1, out=pes[AF_LENGTH])
        np.bitwise_or(pes[RAI] * p.RANDOM_ACCESS_INDICATOR, pcr * p.PCR_FLAG, out=pes[FLAGS])
        np.left_shift(pes[DTS] - PCR_DELAY, 7, out=pes[PCR7])
        length = pes_len - 6  # PES_packet_length; 0 (unbounded) is allowed for video only, whose frames may be big
        np.multiply(length, length <= 0xFFFF, out=pes[PES_LENGTH])
        np.add(stuffing, 10, out=pes[HEADER_LENGTH])
        np.left_shift(pes[PTS], 1, out=pes[PTS2])
        np.left_shift(pes[DTS], 1, out=pes[DTS2])
        np.not_equal(pes[PTS], pes[DTS], out=pes[BOTH])
        return pes[:, np.argsort(pes[DTS] * len(self.streams) + pes[STREAM], kind="stable")]  # DTS, then stream

    def _layout(self, units: list[Units]) -> "SegmentLayout":
        """Interleave the PES packets of all tracks in DTS order: where every unit goes in the TS payload, and the
        bytes before each body (see the module docstring)."""
        if len(units) == 1:
            (u,) = units
            unit_len, prefix_len, pes = u.unit_len, u.prefix_len, u.pes
        else:
            unit_len = np.concatenate([u.unit_len for u in units])
            prefix_len = np.concatenate([u.prefix_len for u in units])
            pes = np.concatenate([u.pes for u in units], axis=1)
        n_units = len(unit_len)
        ps_len = np.concatenate([_parameter_set_lengths(u) for u in units])
        pes = self._pes_layout(pes, unit_len, [u.pes.shape[1] for u in units])
        first, count, stuffing, af_len = pes[FIRST], pes[COUNT], pes[STUFFING], pes[AF]

        out_first = np.cumsum(count) - count  # output position of each PES's first unit
        unit_order = np.repeat(first - out_first, count) + np.arange(n_units)
        out_pos = np.empty(n_units, dtype=np.int64)
        out_pos[unit_order] = np.arange(n_units)
        unit_prefix = prefix_len[unit_order]
        total_prefix = unit_prefix.copy()
        total_prefix[out_first] += af_len + PES_HEADER_SIZE + stuffing
        body_len = unit_len[unit_order] - unit_prefix
        body_at = np.cumsum(body_len + total_prefix) - body_len

        # -- the lead of every PES (``SegmentLayout.leads``): its first bytes up to its first unit's parameter sets or
        # body:
        # the adaptation field head and the PES header, byte by byte from the table's first 7 rows, then the AUD or
        # ADTS header of its first unit (7 bytes; a 6-byte AUD spills one byte into what follows, written later)
        template = self._lead_templates[:, 2 * pes[STREAM] + pes[BOTH]]
        lead = (((pes[_LEAD_SOURCE] >> _LEAD_SHIFT) & _LEAD_MASK) | template).astype(np.uint8)  # (27, n_pes)
        heads = np.empty((len(first), HEAD_SIZE), dtype=np.uint8)
        base = 0
        for u in units:
            k = np.flatnonzero(pes[STREAM] == u.stream.index) if len(units) > 1 else slice(None)
            heads[k] = u.adts[first[k] - base] if u.adts is not None else u.stream.head
            base += len(u.unit_len)
        rows_after = np.cumsum(pes[PACKETS])
        lead_len = (total_prefix - ps_len[unit_order])[out_first]
        return SegmentLayout(units, pes, unit_order, out_pos, out_first, body_len, body_at, ps_len[unit_order], lead,
                             heads, lead_len, rows_after, int(rows_after[-1]))

    def _packetize(self, layout: "SegmentLayout", payload: np.ndarray, head: bytes) -> bytes:
        """PAT, PMT, then each 184-byte row of ``payload`` behind its 4-byte packet header (2.4.3.2), written
        straight into the returned bytes."""
        pes, n_rows, rows_after = layout.pes, layout.n_rows, layout.rows_after
        n_packets, af_len = pes[PACKETS], pes[AF]
        first_row = rows_after - n_packets
        header = np.repeat(pes[CC] - first_row, n_packets) + np.arange(n_rows)
        header &= 0x0F
        header |= np.repeat(self._ts_header[pes[STREAM]], n_packets)
        header[first_row] |= 0x400000 | (af_len > 0) * 0x20  # payload_unit_start_indicator; 11: AF + payload
        segment_bytes, flat_out = new_bytes((n_rows + 2) * p.TS_PACKET_SIZE)  # returned as is: written in place
        out = flat_out.reshape(n_rows + 2, p.TS_PACKET_SIZE)
        out[:2] = np.frombuffer(head, dtype=np.uint8).reshape(2, p.TS_PACKET_SIZE)
        out[2:, 4:] = payload[: n_rows * _PAYLOAD].reshape(n_rows, _PAYLOAD)
        out.view(">u4")[2:, 0] = header
        del out, flat_out
        return finished(segment_bytes)


class ScatterBuild:
    """A TS segment whose samples are read straight into their places in the TS payload (``TsMuxer.prepare``).

    The gateway performs ``reads`` (each: preadv of ``buffers`` at ``offset``), then ``finish`` turns the NAL length
    prefixes into start codes and lays the packets out; ``close`` (or leaving the ``with`` block) releases the
    thread's payload buffer, finished or not. Saves the gather of the samples and one full copy of the payload."""

    def __init__(self, muxer: TsMuxer, layout: SegmentLayout, head: bytes, view: memoryview, reads: list[ScatterRead],
                 buffers: "PayloadBuffer"):
        self.muxer, self.layout, self.head, self._view, self.reads = muxer, layout, head, view, reads
        self._buffers = buffers

    @classmethod
    def start(cls, muxer: TsMuxer, layout: SegmentLayout, head: bytes, file_offsets: np.ndarray,
              buffers: "PayloadBuffer") -> "ScatterBuild | None":
        """Prefixes written into the payload; ``file_offsets``: of every unit's sample (units in stream order)."""
        view = buffers.payload_for(layout.n_rows * _PAYLOAD + HEAD_SIZE).getbuffer()
        reads = payload = None
        placed = False
        try:
            reads = scatter_reads(view, layout.body_at[layout.out_pos], layout.body_len[layout.out_pos], file_offsets)
            if reads is not None:
                payload = np.frombuffer(view, dtype=np.uint8, count=layout.n_rows * _PAYLOAD + HEAD_SIZE)
                layout.place_prefixes(payload)
                placed = True
        finally:
            del payload  # its export must go before the view can be released
            if not placed:
                view.release()
        return cls(muxer, layout, head, view, reads, buffers) if placed else None

    def __enter__(self) -> "ScatterBuild":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.reads = []
        if self._view is not None:
            self._view.release()
            self._view = None
            self._buffers.release_large()

    def finish(self) -> bytes | None:
        """The segment, once ``reads`` were done; None when its video samples turn out to carry their own AUD or
        SPS (the muxer then builds this and every later segment from gathered samples: ``build``)."""
        layout, payload = self.layout, None
        try:
            payload = np.frombuffer(self._view, dtype=np.uint8, count=layout.n_rows * _PAYLOAD)
            video = layout.units[0]
            if video.adts is None:
                n = len(video.unit_len)
                rows = layout.out_pos[:n]
                starts, sizes = layout.body_at[rows], layout.body_len[rows]
                offsets, _, owner, types = nal_layout(video.stream.codec, payload, starts, sizes)
                nal_syntax = hevc if video.stream.codec == "hevc" else avc
                own_aud = (types == nal_syntax.AUD_NAL_TYPE) & (offsets == starts[owner])
                if own_aud.any() or ((types == nal_syntax.SPS) & video.with_ps[owner]).any():
                    self.muxer._in_band = True
                    return None
                payload[offsets[:, None] + _AR4] = _START_CODE
            return self.muxer._packetize(layout, payload, self.head)
        finally:
            del payload
            self.close()


def _parameter_set_lengths(u: Units) -> np.ndarray:
    """Per unit, the bytes of parameter sets in its prefix (after the AUD): video key frames only."""
    if u.with_ps is None:
        return np.zeros(len(u.unit_len), dtype=np.int64)
    return u.with_ps * (len(u.stream.prefixes[1]) - len(u.stream.prefixes[0]))


class PayloadBuffer:
    """A TS payload buffer, reused from build to build: a fresh multi-megabyte buffer costs a page fault per 4 KB,
    which is more than the copies themselves. The packets are written straight into the returned bytes. One build
    at a time: each thread has its own (``_scratch``)."""

    def __init__(self) -> None:
        self.payload, self.payload_size = io.BytesIO(), 0

    def payload_for(self, size: int) -> io.BytesIO:
        """The BytesIO to write a segment's TS payload into, sized in one step (not by doubling as it fills)."""
        try:
            self.payload.write(b"")  # raises if a buffer export leaked by an earlier failure pins the buffer
        except BufferError:
            self.payload, self.payload_size = io.BytesIO(), 0
        if size > self.payload_size:
            self.payload.seek(size - 1)
            self.payload.write(b"\0")
            self.payload_size = size
        self.payload.seek(0)
        return self.payload

    def release_large(self) -> None:
        if self.payload_size > PAYLOAD_BUFFER_KEEP:
            self.payload, self.payload_size = io.BytesIO(), 0


class _Scratch(PayloadBuffer, threading.local):
    """This thread's PayloadBuffer."""


_scratch = _Scratch()
