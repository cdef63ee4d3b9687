"""MP4 samples -> one F4F fragment (Adobe Flash Video File Format Specification 10.1, Annex F: F.4 fragments).

A fragment is ``afra`` (F.3.4, Fragment Random Access box) then ``mdat`` whose payload is FLV tags (see ``flv``),
like nginx-vod-module's (which also writes a ``moof`` that players ignore; we leave it out). Inside the mdat:

* the tags of all tracks in decode order (ties: video first), timestamps on the HDS timeline (``timeline``);
* before the first tag, and before every later video key frame, the sequence headers of all tracks (AVC sequence
  header = the avcC record, AAC sequence header = the AudioSpecificConfig; E.4.3.1 / E.4.2.1) with the timestamp of
  the tag they precede, so every key frame is a self-contained random access point (as nginx-vod-module does);
* video tags: FrameType 1 (key) or 2 (inter), CodecID 7, AVCPacketType 1, CompositionTime = round_ms(pts) -
  round_ms(dts), then the MP4 sample as-is (AVCC length-prefixed NAL units, which is what FLV carries);
* audio tags: 0xAF, AACPacketType 1, then the raw AAC frame.

``afra`` has one entry per random access point: its time (ms) and the byte offset, from the start of the fragment,
of its first sequence header tag (LongIDs | LongOffsets, no global entries).
"""
from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

from ..codecs.avc import MAX_PARAMETER_SET_BYTES
from ..codecs import flv
from ..codecs.box import box, box_header, full_box
from ..errors import ErrorCode, PackagerError, bad_data, bad_request
from ..media_data import MediaSegment, TrackSegment
from ..media_set import MediaSet, Selection
from ..model import SampleTable, Track
from . import timeline
from .timeline import HDS_TIMESCALE, media_set_timestamp_offset, round_ms

AFRA_HEADER_SIZE = 8 + 4 + 1 + 4 + 4  # box header, version/flags, LongIDs|LongOffsets|GlobalEntries, TimeScale, count
AFRA_ENTRY_SIZE = 16  # Time UI64, Offset UI64
_AFRA_LONG_IDS_LONG_OFFSETS = 0xC0
_VIDEO_OVERHEAD = flv.TAG_HEADER_SIZE + flv.VIDEO_HEADER_SIZE + flv.PREVIOUS_TAG_SIZE_SIZE  # 20 bytes per video tag
_AUDIO_OVERHEAD = flv.TAG_HEADER_SIZE + flv.AUDIO_HEADER_SIZE + flv.PREVIOUS_TAG_SIZE_SIZE  # 17 per audio tag
# Rows of the per-tag table ``build`` works on (one int64 column per tag): FLVTAG fields, the two AV header words
# (see ``flv.tag_pieces``), the data size, the index of the data in the build's pool, random access point or not.
_TYPE, _TS, _W0, _W1, _AV, _SIZE, _BODY, _RAP = range(8)
_ROWS = 8


def check_hds_codecs(tracks: Sequence[Track], where: str) -> None:
    """HDS (FLV in F4F) carries H.264 video and AAC audio only: anything else is UNSUPPORTED."""
    for t in tracks:
        wanted = "h264" if t.kind == "video" else "aac"
        if t.codec.codec != wanted:
            raise PackagerError(
                ErrorCode.UNSUPPORTED,
                f"{where}: HDS carries H.264 video and AAC audio only; {t.kind} track {t.track_id} of "
                f"{t.source or 'the presentation'} is {t.codec.codec} ({t.codec.codec_string})",
            )


class HdsMuxer:
    """Builds F4F fragments for at most one H.264 video and one AAC audio track (FLV has one stream of each).

    ``timestamp_offset_ms`` is the HDS timeline constant (``timeline`` module); it must be the media set's, the one
    the bootstrap uses: ``fragment_muxer(media_set, selection)`` passes it. Left out, it is computed from ``tracks``
    alone, which is the same for a single file whose selection includes its video and audio tracks.
    """

    def __init__(self, tracks: Sequence[Track], timestamp_offset_ms: int | None = None):
        if not tracks:
            raise PackagerError(ErrorCode.NO_STREAMS, "HdsMuxer: no tracks to mux")
        check_hds_codecs(tracks, "HdsMuxer")
        videos = [t for t in tracks if t.kind == "video"]
        audios = [t for t in tracks if t.kind == "audio"]
        if len(videos) > 1 or len(audios) > 1:
            raise bad_request(f"HdsMuxer: an FLV stream carries one video and one audio track, got "
                              f"{len(videos)} video and {len(audios)} audio")  # fmt: skip
        for t in tracks:
            if not t.codec.extradata:
                raise bad_data(f"HdsMuxer: {t.kind} track {t.track_id} of {t.source} has no decoder configuration")
            if len(t.codec.extradata) > MAX_PARAMETER_SET_BYTES:  # a sequence header tag goes before every key frame
                raise bad_data(f"HdsMuxer: {len(t.codec.extradata)} bytes of decoder configuration in {t.kind} track "
                               f"{t.track_id} of {t.source}")
        self.tracks: tuple[Track, ...] = tuple(videos + audios)
        needed = timeline.timestamp_offset_ms(self.tracks)
        self.offset = needed if timestamp_offset_ms is None else int(timestamp_offset_ms)
        if self.offset < needed:
            raise bad_request(f"HdsMuxer: timestamp offset {self.offset} ms is below the {needed} ms these tracks need")
        # The sequence header tags written at each random access point: (tag type, AV words, data).
        self._configs = []
        for t in self.tracks:
            if t.kind == "video":
                words = (flv.FRAME_TYPE_KEY << 4 | flv.CODEC_ID_AVC, flv.AVC_SEQUENCE_HEADER << 24)
                self._configs.append((flv.TAG_TYPE_VIDEO, words, flv.VIDEO_HEADER_SIZE, t.codec.extradata))
            else:
                words = (flv.AAC_SOUND_INFO, flv.AAC_SEQUENCE_HEADER << 24)
                self._configs.append((flv.TAG_TYPE_AUDIO, words, flv.AUDIO_HEADER_SIZE, t.codec.extradata))
        self._config_columns = np.array(
            [(tag, 0, w0, w1, av, len(data), k, 0) for k, (tag, (w0, w1), av, data) in enumerate(self._configs)],
            dtype=np.int64,
        ).T.copy()
        self._config_size = sum(flv.TAG_HEADER_SIZE + av + len(data) + flv.PREVIOUS_TAG_SIZE_SIZE
                                for _, _, av, data in self._configs)  # fmt: skip
        self._by_track = {id(t): i for i, t in enumerate(self.tracks)}

    @classmethod
    def for_selection(cls, media_set: MediaSet, selection: Selection) -> "HdsMuxer":
        """The muxer of one rendition, on the media set's timeline (consistent with its bootstrap)."""
        return cls(selection.tracks, media_set_timestamp_offset(media_set))

    # -- building ---------------------------------------------------------------------------------------------------

    def build(self, segment: MediaSegment) -> bytes:
        """The F4F bytes of one fragment (URL fragment number ``segment.index + 1``)."""
        pool: list = [data for *_, data in self._configs]  # every tag's data: sequence headers, then samples
        tables = [self._sample_columns(ts, pool) for _, ts in self._match(segment.tracks) if len(ts.samples)]
        if not tables:
            return self._afra(np.zeros(0, np.int64), np.zeros(0, np.int64)) + box(b"mdat", b"")
        # -- the samples of all tracks in decode order (ties: video first) -------------------------------------------
        samples = np.concatenate(tables, axis=1) if len(tables) > 1 else tables[0]
        if len(tables) > 1:
            key = samples[_TS] * 2 + (samples[_TYPE] == flv.TAG_TYPE_AUDIO)
            samples = samples[:, np.argsort(key, kind="stable")]
        samples[_RAP, 0] = 1
        # -- sequence header tags before each random access point ----------------------------------------------------
        g, n = len(self._configs), samples.shape[1]
        rap_at = np.flatnonzero(samples[_RAP])
        pos = np.arange(n) + g * np.cumsum(samples[_RAP])  # unit (tag) index of each sample
        units = np.empty((_ROWS, n + g * len(rap_at)), dtype=np.int64)
        units[:, pos] = samples
        cfg_pos = ((pos[rap_at] - g)[:, None] + np.arange(g)).ravel()  # per random access point, g tags
        units[:, cfg_pos] = np.tile(self._config_columns, len(rap_at))
        units[_TS, cfg_pos] = np.repeat(samples[_TS, rap_at], g)
        data = list(map(pool.__getitem__, units[_BODY].tolist()))
        pieces, total = flv.tag_pieces(units[_TYPE], units[_TS], units[_W0 : _W1 + 1].T, units[_AV], data, units[_SIZE])
        # -- afra (random access points) and the mdat header ---------------------------------------------------------
        tag_size = flv.TAG_HEADER_SIZE + units[_AV] + units[_SIZE] + flv.PREVIOUS_TAG_SIZE_SIZE
        tag_start = np.cumsum(tag_size) - tag_size
        mdat = box_header(b"mdat", total)
        afra = self._afra(samples[_TS, rap_at], tag_start[cfg_pos[::g]] + len(mdat))
        return b"".join([afra, mdat, *pieces])

    def _afra(self, times: np.ndarray, offsets: np.ndarray) -> bytes:
        """afra (F.3.4): LongIDs | LongOffsets, TimeScale 1000, one (Time, Offset) per random access point; offsets
        count from the start of the fragment (``offsets`` from the end of the afra box)."""
        count = len(times)
        entries = np.empty((count, 2), dtype=">u8")
        entries[:, 0] = times
        entries[:, 1] = offsets + AFRA_HEADER_SIZE + AFRA_ENTRY_SIZE * count
        head = struct.pack(">BII", _AFRA_LONG_IDS_LONG_OFFSETS, HDS_TIMESCALE, count)
        return full_box(b"afra", 0, 0, head, entries.tobytes())

    def _sample_columns(self, ts: TrackSegment, pool: list) -> np.ndarray:
        """One track's tag table (rows ``_TYPE`` .. ``_RAP``, one column per sample); appends the samples' data
        (zero-copy slices of the payload) to ``pool``."""
        track, samples = ts.track, ts.samples
        n = len(samples)
        out = np.empty((_ROWS, n), dtype=np.int64)
        out[_TS] = round_ms(samples.dts - track.edit_offset, track.timescale) + self.offset
        out[_SIZE] = samples.sizes
        ends = np.cumsum(out[_SIZE])
        if ts.payload_size != int(ends[-1]):
            raise bad_data(f"HdsMuxer.build: payload of track {track.track_id} is {ts.payload_size} bytes, "
                           f"its samples {int(ends[-1])}")  # fmt: skip
        out[_BODY] = np.arange(len(pool), len(pool) + n)
        pool += ts.sample_views()
        if track.kind == "video":
            pts = round_ms(samples.pts - track.edit_offset, track.timescale) + self.offset
            out[_TYPE], out[_AV], out[_RAP] = flv.TAG_TYPE_VIDEO, flv.VIDEO_HEADER_SIZE, samples.keyframe
            out[_W0] = np.where(samples.keyframe, flv.FRAME_TYPE_KEY << 4, flv.FRAME_TYPE_INTER << 4) | flv.CODEC_ID_AVC
            out[_W1] = flv.AVC_NALU << 24 | ((pts - out[_TS]) & 0xFFFFFF)  # CompositionTime SI24
        else:
            out[_TYPE], out[_AV], out[_RAP] = flv.TAG_TYPE_AUDIO, flv.AUDIO_HEADER_SIZE, 0
            out[_W0], out[_W1] = flv.AAC_SOUND_INFO, flv.AAC_RAW << 24
        return out

    def _match(self, track_segments: Sequence[TrackSegment]) -> list[tuple[int, TrackSegment]]:
        """Pair each TrackSegment with one of this muxer's tracks: the same object, else (kind, track_id, source)."""
        out, used = [], set()
        for ts in track_segments:
            t = ts.track
            i = self._by_track.get(id(t))
            if i is None:
                i = next((k for k, m in enumerate(self.tracks)
                          if (m.kind, m.track_id, m.source) == (t.kind, t.track_id, t.source)), None)  # fmt: skip
            if i is None or i in used:
                raise bad_request(f"HdsMuxer.build: track {t.track_id} ({t.kind}) is not one of this muxer's tracks")
            used.add(i)
            out.append((i, ts))
        return sorted(out, key=lambda p: p[0])

    # -- sizes without building -----------------------------------------------------------------------------------

    def measure(self, tables: Sequence[SampleTable]) -> int:
        """The exact size of the fragment ``build`` makes from these samples (one table per track, in ``tracks``
        order, as ``MediaSet.segment_tables`` returns them for the same selection)."""
        if len(tables) != len(self.tracks):
            raise bad_request(f"HdsMuxer.measure: {len(tables)} sample tables for {len(self.tracks)} tracks")
        counts, nbytes, keys, first_ts, first_key = [], [], [], [], []
        for track, table in zip(self.tracks, tables):
            n = len(table)
            counts.append(np.array([n]))
            nbytes.append(np.array([table.total_size]))
            keys.append(np.array([int(table.keyframe.sum()) if track.kind == "video" else 0]))
            t0 = int(round_ms(int(table.dts[0]) - track.edit_offset, track.timescale)) if n else 0
            first_ts.append(np.array([t0]))
            first_key.append(np.array([bool(n and table.keyframe[0])]))
        return int(self._sizes(counts, nbytes, keys, first_ts, first_key)[0])

    def _sizes(self, counts, nbytes, keys, first_ts, first_key) -> np.ndarray:
        """Fragment sizes from per-track, per-fragment columns (see ``measure``), vectorised over fragments."""
        total = np.zeros(len(counts[0]), dtype=np.int64)
        samples = np.zeros_like(total)
        video_key_first = np.zeros(len(total), dtype=bool)
        video_ts = None
        for track, c, b, f, t in zip(self.tracks, counts, nbytes, first_key, first_ts):
            total += b + c * (_VIDEO_OVERHEAD if track.kind == "video" else _AUDIO_OVERHEAD)
            samples += c
            if track.kind == "video":
                video_key_first, video_ts = f & (c > 0), t
        if video_ts is not None:
            for track, c, t in zip(self.tracks, counts, first_ts):
                if track.kind == "audio":  # audio strictly ahead of the key frame: the fragment starts with audio
                    video_key_first &= ~((c > 0) & (t < video_ts))
        raps = np.sum(keys, axis=0) + ~video_key_first
        raps = np.where(samples > 0, raps, 0)
        total += raps * self._config_size
        mdat_header = np.where(total + 8 <= 0xFFFFFFFF, 8, 16)
        return AFRA_HEADER_SIZE + AFRA_ENTRY_SIZE * raps + mdat_header + total


def fragment_muxer(media_set: MediaSet, selection: Selection) -> HdsMuxer:
    """``HdsMuxer.for_selection``: what the gateway should use, so fragments and bootstrap share one timeline."""
    return HdsMuxer.for_selection(media_set, selection)


def fragment_sizes(media_set: MediaSet, selection: Selection) -> np.ndarray:
    """The exact byte size of every fragment of ``selection`` (int64), without reading or building anything."""
    muxer = fragment_muxer(media_set, selection)
    counts, nbytes, keys, first_ts, first_key = [], [], [], [], []
    for track, size, count in zip(selection.tracks, media_set.segment_sizes(selection),
                                  media_set.segment_sample_counts(selection)):  # fmt: skip
        ranges = media_set.sample_ranges(selection, track)
        n = len(track.samples)
        counts.append(count)
        nbytes.append(size)
        if track.kind == "video":
            keys.append(np.diff(np.concatenate(([0], np.cumsum(track.samples.keyframe, dtype=np.int64)))[ranges]))
        else:
            keys.append(np.zeros_like(count))
        first = np.minimum(ranges[:-1], max(n - 1, 0))
        first_ts.append(round_ms(track.samples.dts[first] - track.edit_offset, track.timescale) if n
                        else np.zeros_like(count))  # fmt: skip
        first_key.append(track.samples.keyframe[first] if n else np.zeros(len(count), bool))
    order = sorted(range(len(selection.tracks)), key=lambda i: selection.tracks[i].kind != "video")
    pick = lambda cols: [cols[i] for i in order]  # noqa: E731 - the muxer's track order (video first)
    return muxer._sizes(pick(counts), pick(nbytes), pick(keys), pick(first_ts), pick(first_key))
