"""MP4 samples → one MPEG-TS segment (ISO/IEC 13818-1), built column-wise with numpy.

Layout. Every segment starts with a PAT and a PMT whose continuity_counter is the segment index mod 16, so they
stay continuous from segment to segment (as nginx-vod-module does); elementary PIDs count from 0 in each segment.
PES packets (see ``pes``) of all tracks follow each other in DTS order. The adaptation field of the *first* TS
packet of a PES carries the PCR (PCR PID), random_access_indicator (key frames) and all the stuffing the PES needs,
so every later packet carries exactly 184 payload bytes (2.4.3.4). PES headers have one layout: PTS and DTS, or
PTS and 5 stuffing bytes when DTS would equal PTS; when a PCR would not fit the first packet's adaptation field,
1 to 8 more PES header stuffing bytes (2.4.3.7 allows 32) push the PES over one more packet so that it does.

Speed. No Python loop runs per byte or per TS packet. Each unit (sample) gets a prefix -- [adaptation field][PES
header] when it starts a PES, then AUD or its ADTS header -- as the right-aligned tail of a row of a 0xFF-filled
matrix (the parameter sets of key frames are joined behind it: in the matrix they would widen every row). The TS
payload of the whole segment is one ``writelines`` of (prefix, sample) slices whose length is a multiple of 184 by
construction; NAL length prefixes are overwritten there with start codes; the packet headers (sync byte, PUSI,
PID, continuity_counter) are one uint32 column, and one strided copy lays the 184-byte rows behind them, straight
into the ``bytes`` that is returned (``packagers.output``). The payload buffer is reused per thread (``_Scratch``).
"""
from __future__ import annotations

import io
import threading
from typing import Sequence

import numpy as np

from ..codecs import avc, hevc
from ..codecs.aac import ADTS_HEADER_SIZE, adts_constant, parse_audio_specific_config
from ..errors import ErrorCode, PackagerError, bad_data, bad_request
from ..media_data import MediaSegment, TrackSegment
from ..output import finished, new_bytes
from ..model import Track
from . import packets as p
from .pes import (AF, AF_LENGTH, BOTH, CC, COUNT, DTS, DTS2, FIRST, FLAGS, HEADER_LENGTH, LEN, PACKETS, PCR7,
                  PES_LENGTH, PTS, PTS2, RAI, STREAM, STUFFING, TS_PTS_OFFSET, Stream, Units, audio_units,
                  video_units)  # fmt: skip

__all__ = ["PAYLOAD_BUFFER_KEEP", "PCR_DELAY", "TS_PTS_OFFSET", "TsMuxer"]

# PCR = DTS - PCR_DELAY: each PES "arrives" 100 ms before it is decoded (more than a frame at >= 10 fps, so a
# whole access unit is in the T-STD buffer by its DTS); never after the DTS of the PES that carries it.
PCR_DELAY = 9000

PES_HEADER_SIZE = 19  # 6 + 3 + PTS 5 + (DTS or 5 stuffing bytes), before any PCR stuffing
_AF_WITH_PCR = 8  # adaptation_field_length, flags, program_clock_reference (2.4.3.4)
_PAYLOAD = p.TS_PAYLOAD_SIZE
# The adaptation field head (8 bytes) and PES header (19) of a PES from the 7 first rows of its table (length, flags,
# PCR base << 7, PES_packet_length, PES_header_data_length, PTS << 1, DTS << 1): each byte is
# (row[_LEAD_SOURCE] >> _LEAD_SHIFT) & _LEAD_MASK, ORed with the stream's template (constant bits, markers).
_LEAD_SOURCE = np.array([0, 1, 2, 2, 2, 2, 2, 2] + [0] * 4 + [3, 3, 0, 0, 4] + [5] * 5 + [6] * 5)
_LEAD_SHIFT = np.array([0, 0, 32, 24, 16, 8, 0, 0] + [0] * 4 + [8, 0, 0, 0, 0] + [30, 23, 15, 8, 0] * 2)[:, None]
_LEAD_MASK = np.array([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0] + [0] * 4 + [0xFF, 0xFF, 0, 0, 0xFF]
                      + [0x0E, 0xFF, 0xFE, 0xFF, 0xFE] * 2)[:, None]  # fmt: skip
_AR4, _AR8, _AR19 = np.arange(4), np.arange(8), np.arange(PES_HEADER_SIZE)
_START_CODE = np.array([0, 0, 0, 1], dtype=np.uint8)
PAYLOAD_BUFFER_KEEP = 4 << 20  # keep the payload buffer up to this size (docs/performance.md, memory)


class TsMuxer:
    """Builds MPEG-TS segments for a fixed set of tracks: at most one video (H.264/HEVC), any AAC audio."""

    def __init__(self, tracks: Sequence[Track]):
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
        self._by_track = {id(s.track): s for s in streams}
        pcr_pid = next(s.pid for s in streams if s.carries_pcr)
        descriptors = [p.language_descriptor(s.track.language) if s.track.kind == "audio" else b"" for s in streams]
        pat = p.pat_section()
        pmt = p.pmt_section(pcr_pid, [(s.stream_type, s.pid, d) for s, d in zip(streams, descriptors)])
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
        """The TS bytes of one segment."""
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
        return self._assemble(units, head) if units else head

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
        return pes[:, np.lexsort((pes[STREAM], pes[DTS]))]

    def _assemble(self, units: list[Units], head: bytes) -> bytes:
        """Interleave the PES packets of all tracks in DTS order and packetise them (see the module docstring)."""
        # -- the PES packets of all tracks, in DTS order ---------------------------------------------------------
        if len(units) == 1:
            (u,) = units
            unit_len, prefix_len, pes, bodies = u.unit_len, u.prefix_len, u.pes, u.bodies
        else:
            unit_len = np.concatenate([u.unit_len for u in units])
            prefix_len = np.concatenate([u.prefix_len for u in units])
            pes = np.concatenate([u.pes for u in units], axis=1)
            bodies = [b for u in units for b in u.bodies] if len(units) > 2 else units[0].bodies + units[1].bodies
        n_units = len(unit_len)
        # Parameter sets (before video key frames) stay out of the prefix matrix, whose every row is as wide as the
        # longest prefix: a file may declare kilobytes of them. They are joined behind their row's tail instead.
        ps_len = np.concatenate([_parameter_set_lengths(u) for u in units])
        pes = self._pes_layout(pes, unit_len, [u.pes.shape[1] for u in units])
        first, count, stuffing, af_len, n_packets, cc_first = (
            pes[r] for r in (FIRST, COUNT, STUFFING, AF, PACKETS, CC)
        )

        out_first = np.cumsum(count) - count  # output position of each PES's first unit
        unit_order = np.repeat(first - out_first, count) + np.arange(n_units)
        out_pos = np.empty(n_units, dtype=np.int64)
        out_pos[unit_order] = np.arange(n_units)

        # -- prefixes: right-aligned tails of the rows of a 0xFF matrix (0xFF = adaptation field stuffing) --------
        unit_prefix = prefix_len[unit_order]
        total_prefix = unit_prefix.copy()
        total_prefix[out_first] += af_len + PES_HEADER_SIZE + stuffing
        unit_ps = ps_len[unit_order]
        in_matrix = total_prefix - unit_ps
        width = int(in_matrix.max())
        m = np.full((n_units, width), 0xFF, dtype=np.uint8)
        flat = m.reshape(-1)
        header_at = out_first * width + (width - PES_HEADER_SIZE) - stuffing - (prefix_len - ps_len)[first]
        # The adaptation field head and the PES header of every PES, byte by byte from the table's first 7 rows.
        # Written in this order so that each write may spill into the next one's place: adaptation fields (8 bytes
        # even when shorter, the PES header overwrites the rest), PES headers, then the AUD/ADTS prefixes.
        template = self._lead_templates[:, 2 * pes[STREAM] + pes[BOTH]]
        lead = (((pes[_LEAD_SOURCE] >> _LEAD_SHIFT) & _LEAD_MASK) | template).astype(np.uint8)  # (27, n_pes)
        flat[_AR8[:, None] + (header_at - af_len)] = lead[:8]
        flat[_AR19[:, None] + header_at] = lead[8:]
        start = 0
        for u in units:
            rows = out_pos[start : start + len(u.unit_len)]
            start += len(u.unit_len)
            if u.adts is not None:
                m[rows, width - ADTS_HEADER_SIZE :] = u.adts
                continue
            aud = u.stream.prefixes[0]
            m[rows, width - len(aud) :] = aud

        # -- the TS payload of every packet, back to back: (prefix, sample) for each unit in output order ---------
        mv = memoryview(flat)
        pieces: list = [None] * (2 * n_units)
        row_end = np.arange(width, (n_units + 1) * width, width)
        pieces[0::2] = map(mv.__getitem__, map(slice, (row_end - in_matrix).tolist(), row_end.tolist()))
        keyed = np.flatnonzero(unit_ps).tolist()
        if keyed:  # only video carries parameter sets, and the video comes first
            parameter_sets = units[0].stream.prefixes[1][len(units[0].stream.prefixes[0]) :].tobytes()
            for r in keyed:
                pieces[2 * r] = b"".join((pieces[2 * r], parameter_sets))
        pieces[1::2] = list(map(bodies.__getitem__, unit_order.tolist()))
        rows_after = np.cumsum(n_packets)
        n_rows = int(rows_after[-1])
        bio = _scratch.payload_for(n_rows * _PAYLOAD)
        bio.writelines(pieces)
        if bio.tell() != n_rows * _PAYLOAD:
            raise AssertionError("TsMuxer: the PES packets do not fill whole TS packets")

        # -- packet headers (2.4.3.2) as one big-endian uint32 column -----------------------------------------------
        first_row = rows_after - n_packets
        header = np.repeat(cc_first - first_row, n_packets) + np.arange(n_rows)
        header &= 0x0F
        header |= np.repeat(self._ts_header[pes[STREAM]], n_packets)
        header[first_row] |= 0x400000 | (af_len > 0) * 0x20  # payload_unit_start_indicator; 11: AF + payload

        # -- the packets: PAT, PMT, then the 4-byte headers with the 184-byte rows of the payload behind them ---------
        segment_bytes, flat_out = new_bytes((n_rows + 2) * p.TS_PACKET_SIZE)  # returned as is: written in place
        out = flat_out.reshape(n_rows + 2, p.TS_PACKET_SIZE)
        out[:2] = np.frombuffer(head, dtype=np.uint8).reshape(2, p.TS_PACKET_SIZE)
        out.view(">u4")[2:, 0] = header
        view, payload = bio.getbuffer(), None
        try:
            payload = np.frombuffer(view, dtype=np.uint8, count=n_rows * _PAYLOAD)
            video = units[0]
            if video.start_codes is not None:  # the video comes first: its NAL length prefixes become start codes
                body_len = unit_len[unit_order] - unit_prefix
                body_at = np.cumsum(body_len + total_prefix) - body_len
                payload[(body_at[out_pos[video.start_code_owner]] + video.start_codes)[:, None] + _AR4] = _START_CODE
            out[2:, 4:] = payload.reshape(n_rows, _PAYLOAD)
        finally:
            del payload, out, flat_out
            view.release()
            _scratch.release_large()
        return finished(segment_bytes)


def _parameter_set_lengths(u: Units) -> np.ndarray:
    """Per unit, the bytes of parameter sets in its prefix (after the AUD): video key frames only."""
    if u.with_ps is None:
        return np.zeros(len(u.unit_len), dtype=np.int64)
    return u.with_ps * (len(u.stream.prefixes[1]) - len(u.stream.prefixes[0]))


class _Scratch(threading.local):
    """The per-thread TS payload buffer, reused from build to build: a fresh multi-megabyte buffer costs a page fault
    per 4 KB, which is more than the copies themselves. The packets are written straight into the returned bytes."""

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


_scratch = _Scratch()
