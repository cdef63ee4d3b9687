"""The format-neutral media model: what every demuxer produces and every muxer consumes.

Times are integers in a named timescale (ticks per second). A track's sample times are in the track's own timescale;
``Track.edit_offset`` is subtracted from ``dts + cts`` to give the presentation time, so that the usual ffmpeg
B-frame edit list (``elst`` media_time = two frame durations) makes presentation start at 0 exactly as players see it.

Sample tables are columns of read-only numpy arrays: a two-hour file has ~500k samples and nothing on a hot path may
walk them one Python object at a time.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np

TrackKind = Literal["video", "audio"]

_COLUMNS = ("offsets", "sizes", "dts", "cts", "durations", "keyframe")
_DTYPES = {
    "offsets": np.uint64,  # absolute byte offset of the sample in its file
    "sizes": np.uint32,  # sample size in bytes
    "dts": np.int64,  # decode time, track timescale
    "cts": np.int32,  # composition offset: pts = dts + cts (demuxers normalise ctts v1 so cts >= 0)
    "durations": np.uint32,  # sample_delta from stts
    "keyframe": np.bool_,  # sync sample (stss; all samples when stss is absent)
}


@dataclass(frozen=True, eq=False)
class SampleTable:
    """Per-sample columns. Slicing returns views; arrays are read-only so a cached table can be shared freely."""

    offsets: np.ndarray
    sizes: np.ndarray
    dts: np.ndarray
    cts: np.ndarray
    durations: np.ndarray
    keyframe: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.offsets)
        for name in _COLUMNS:
            arr = getattr(self, name)
            if arr.dtype != _DTYPES[name]:
                arr = arr.astype(_DTYPES[name])
            if len(arr) != n:
                raise ValueError(f"SampleTable: column {name} has {len(arr)} rows, expected {n}")
            if arr.flags.writeable:
                arr = arr.view()
                arr.flags.writeable = False
            object.__setattr__(self, name, arr)

    @classmethod
    def empty(cls) -> "SampleTable":
        return cls(**{name: np.zeros(0, _DTYPES[name]) for name in _COLUMNS})

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: slice) -> "SampleTable":
        if not isinstance(index, slice):
            raise TypeError("SampleTable supports slices only; use the columns for single samples")
        # slices of columns already checked (dtype, length, read-only) need no second check: a segment's plan
        # slices every track of it
        table = object.__new__(SampleTable)
        for name in _COLUMNS:
            object.__setattr__(table, name, getattr(self, name)[index])
        return table

    @property
    def pts(self) -> np.ndarray:
        """Composition (presentation) times before the edit offset, int64."""
        return self.dts + self.cts.astype(np.int64)

    @property
    def total_size(self) -> int:
        return int(self.sizes.sum(dtype=np.uint64))

    def end_dts(self) -> int:
        """Decode time just after the last sample."""
        if len(self) == 0:
            return 0
        return int(self.dts[-1]) + int(self.durations[-1])


@dataclass(frozen=True)
class CodecConfig:
    """Everything a muxer or manifest needs to describe a track's codec.

    ``extradata`` is the sample-entry configuration record as stored in MP4: the avcC/hvcC box payload for video, the
    AudioSpecificConfig (from esds) for AAC. ``parameter_sets`` are the raw NAL units (no length prefix, no start code)
    found in avcC/hvcC, in the order they must be sent in band: VPS, SPS, PPS for HEVC; SPS, PPS for H.264.
    """

    fourcc: str  # sample entry type: avc1, avc3, hvc1, hev1, mp4a
    codec_string: str  # RFC 6381: avc1.64001f, hvc1.1.6.L93.B0, mp4a.40.2
    extradata: bytes = b""
    parameter_sets: tuple[bytes, ...] = ()
    nal_length_size: int = 4  # bytes of the NAL length prefix in samples (avcC lengthSizeMinusOne + 1)
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0

    @property
    def codec(self) -> str:
        """Short codec family name: h264, hevc, aac."""
        return {"avc1": "h264", "avc3": "h264", "hvc1": "hevc", "hev1": "hevc", "av01": "av1",
                "mp4a": "aac"}.get(self.fourcc, self.fourcc)


@dataclass(frozen=True, eq=False)
class Track:
    track_id: int  # tkhd track_ID
    kind: TrackKind
    timescale: int  # mdhd timescale
    codec: CodecConfig
    samples: SampleTable
    edit_offset: int = 0  # subtract from dts + cts to get presentation time (track timescale)
    language: str = "und"  # ISO 639-2/T from mdhd
    source: str = ""  # path of the file the track came from (store-relative), for reads and error messages
    # where presentation stops (track timescale), when earlier than the last frame's end: a clip's clipTo. Frames
    # past it are still in the samples when later-decoded frames before it reference them (B-frames).
    presentation_end: int | None = None
    # 1-based number among the file's tracks of its kind (``-v2``), set when a URL narrows the tracks so that names
    # keep the whole file's numbers (packagers.selection); 0 = its position in the presentation
    number: int = 0

    @functools.cached_property
    def duration(self) -> int:
        """Presentation duration in track timescale: from presentation 0 to the end of the sample presented last.

        With B-frames the last sample in decode order is not the last presented, so this is max(pts + duration),
        not the end of the decode timeline.
        """
        if len(self.samples) == 0:
            return 0
        end = int((self.samples.pts + self.samples.durations.astype(np.int64)).max()) - self.edit_offset
        if self.presentation_end is not None:
            end = min(end, self.presentation_end)
        return max(0, end)

    @property
    def duration_seconds(self) -> float:
        return self.duration / self.timescale

    def presentation_pts(self) -> np.ndarray:
        """Presentation time of every sample, track timescale, int64 (may be negative before the first key frame)."""
        return self.samples.pts - self.edit_offset

    def presentation_dts(self) -> np.ndarray:
        return self.samples.dts - self.edit_offset

    @property
    def average_bitrate(self) -> int:
        """Bits per second over the track's duration."""
        if self.duration <= 0:
            return 0
        return int(self.samples.total_size * 8 * self.timescale / self.duration)

    @property
    def frame_rate(self) -> float:
        """Mean frames per second (video); 0 for audio or an empty track."""
        if self.kind != "video" or len(self.samples) == 0:
            return 0.0
        total = int(self.samples.durations.sum(dtype=np.uint64))
        return len(self.samples) * self.timescale / total if total else 0.0

    def with_samples(self, samples: SampleTable) -> "Track":
        return dataclasses.replace(self, samples=samples)


@dataclass(frozen=True, eq=False)
class Presentation:
    """The tracks of one media file (one rendition). A url set is a tuple of presentations."""

    tracks: tuple[Track, ...]
    source: str = ""
    timescale: int = 1000  # mvhd timescale, informational
    brand: str = ""

    @property
    def video_tracks(self) -> tuple[Track, ...]:
        return tuple(t for t in self.tracks if t.kind == "video")

    @property
    def audio_tracks(self) -> tuple[Track, ...]:
        return tuple(t for t in self.tracks if t.kind == "audio")

    @property
    def duration_seconds(self) -> float:
        return max((t.duration_seconds for t in self.tracks), default=0.0)

    def numbered(self, kind: str) -> tuple[tuple[int, Track], ...]:
        """(number, track) of every track of ``kind``: the number names it in URLs (``-v2``), whatever was filtered."""
        pool = self.video_tracks if kind == "video" else self.audio_tracks
        return tuple((t.number or n, t) for n, t in enumerate(pool, start=1))

    def select(self, video: int | None, audio: int | None) -> tuple[Track, ...]:
        """Track selection by 1-based number within kind (nginx-vod-module's ``-v1-a2``); None = none of that kind.
        A number the URL filtered out (``/tracks/``) is no track: NOT_FOUND."""
        picked = []
        for kind, index in (("video", video), ("audio", audio)):
            if index is None:
                continue
            track = next((t for n, t in self.numbered(kind) if n == index), None)
            if track is None:
                from .errors import not_found

                raise not_found(f"Presentation.select: no {kind} track {index} in {self.source or 'presentation'}"
                                f"{' (not in the selection)' if any(t.number for t in self.tracks) else ''}")
            picked.append(track)
        return tuple(picked)
