"""A media set: the presentations one request addresses (one file, or the files of a url set) and their plans.

This is nginx-vod-module's "media set": built once per request target from cached presentations, it resolves track
selections, knows the segment plan of every file, and turns (selection, segment index) into read requests and then
into a ``MediaSegment`` for a muxer. It holds no bytes and does no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Sequence, TypeVar

import numpy as np

from .captions.files import CaptionSource
from .clipping import Clip
from .errors import ErrorCode, PackagerError, bad_data, bad_request, not_found
from .limits import DEFAULT_LIMITS, Limits
from .media_data import MediaSegment, ReadRequest, TrackSegment, gather_runs, plan_reads
from .model import Presentation, SampleTable, Track
from .naming import TrackSpec
from .selection import Narrowing, listed_presentation, narrow_presentation, number_tracks
from .segmenter import DEFAULT_SEGMENT_DURATION_MS, SegmentPlan, build_shared_plans

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Selection:
    """Resolved tracks of one file of the set (or a file's video and another's audio), in a fixed order: video
    first, then audio."""

    file_index: int  # 0-based
    spec: TrackSpec  # canonical spec (file present only for url sets)
    tracks: tuple[Track, ...]
    track_files: tuple[int, ...] = ()  # each track's file index when they are not all ``file_index``'s

    @property
    def source(self) -> str:
        return self.tracks[0].source


class MediaSet:
    def __init__(
        self,
        presentations: Sequence[Presentation],
        segment_duration_ms: int = DEFAULT_SEGMENT_DURATION_MS,
        is_url_set: bool | None = None,
        limits: Limits = DEFAULT_LIMITS,
        clip: Clip = Clip(),
        narrowing: Narrowing = Narrowing(),
        captions: Sequence[CaptionSource] = (),
        caption_offset_ms: int = 0,
    ):
        if not presentations:
            raise PackagerError(ErrorCode.NO_STREAMS, "MediaSet: no presentation")
        self.is_url_set = len(presentations) > 1 if is_url_set is None else is_url_set
        self.segment_duration_ms = segment_duration_ms
        self.limits = limits
        self.clip = clip  # what the presentations were cut to (they are already cut): part of every cache key
        self.narrowing = narrowing  # applied here (packagers.selection): part of every cache key too
        self.captions = tuple(captions)  # sidecar caption files of a url set (numbered after the media files)
        self.caption_offset_ms = caption_offset_ms  # the caption files' time at the set's time 0 (a clip's start)
        planned = tuple(presentations)
        if not narrowing.is_default:
            planned = tuple(narrow_presentation(number_tracks(p), narrowing) for p in planned)
            empty = next((i for i, p in enumerate(planned) if not p.tracks), None)
            if empty is not None:  # a url set's file left without a track has no plan (nginx-vod: no track)
                raise not_found(f"MediaSet: the URL's /tracks/ selection leaves no track in "
                                f"{planned[empty].source or f'file {empty + 1}'}")
        # build_shared_plans is the sanity check all manifests share (durations, segment lengths and frames)
        self.plans: tuple[SegmentPlan, ...] = build_shared_plans(planned, segment_duration_ms, limits)
        self.planned = planned  # every track the files under this path carry: what set-wide values derive from
        # what manifests list and names resolve in: a manifest name's selectors keep fewer of the same tracks (files
        # left out keep their place, empty, so that -f2 stays the second file), over the plans above
        self.presentations = tuple(listed_presentation(p, i + 1, narrowing.listing) for i, p in enumerate(planned))
        if not any(p.tracks for p in self.presentations):
            raise not_found(f"MediaSet: the manifest's selectors '{narrowing.listing.suffix()}' leave no track")
        self._ranges: dict[int, np.ndarray] = {}
        self._derived: dict[Hashable, object] = {}

    def derived(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()``, once per media set: what a protocol derives from the whole set and needs for every request
        (Smooth streams, HDS timelines) is computed when first asked for, like the plans, not per fragment. Only
        a result is kept; a ``make`` that raises runs again next time."""
        try:
            return self._derived[key]  # type: ignore[return-value]
        except KeyError:
            value = self._derived[key] = make()
            return value

    def derived_value(self, key: Hashable) -> object | None:
        """What ``derived`` keeps for ``key``, None when nothing."""
        return self._derived.get(key)

    @property
    def shared_plan(self) -> bool:
        return all(p is self.plans[0] for p in self.plans)

    def caption(self, spec: TrackSpec) -> CaptionSource | None:
        """The caption file ``spec`` names (``-fN`` alone, N past the media files), None for any other name."""
        if spec.file is None or spec.video is not None or spec.audio is not None or spec.more_audio:
            return None
        return next((c for c in self.captions if c.number == spec.file), None)

    def listed_videos(self, presentation: Presentation) -> tuple[Track, ...]:
        """The video tracks of a file that manifests list: the first one, unless the URL names video tracks."""
        videos = presentation.video_tracks
        return videos if self.narrowing.lists_every_video else videos[:1]

    def resolve(self, spec: TrackSpec) -> Selection:
        """Tracks named by ``spec`` (by their numbers in the whole file); no -v/-a at all means the first video
        plus the first audio track the URL leaves. ``-f1-v1-f2-a1``: the audio of another file of the set, whose
        segments must be the same (a shared plan)."""
        file_index = self._file_index(spec.file)
        presentation = self.presentations[file_index]
        audio_index = file_index if spec.audio_file is None else self._file_index(spec.audio_file)
        audio_presentation = self.presentations[audio_index]
        if audio_index != file_index and self.plans[audio_index] is not self.plans[file_index]:
            raise bad_request(f"MediaSet.resolve: files {file_index + 1} and {audio_index + 1} are cut into different "
                              f"segments (their key frames do not line up): '{spec.suffix()}' cannot join them")
        video, audio = spec.video, spec.audio
        if video is None and audio is None:
            video = next((n for n, _ in presentation.numbered("video")), None)
            audio = next((n for n, _ in presentation.numbered("audio")), None)
        if audio == 0:  # -a0: every audio track the URL leaves, in order
            audios = tuple(n for n, _ in audio_presentation.numbered("audio"))
        else:
            audios = (audio, *spec.more_audio) if audio is not None else ()
        videos = presentation.select(video, None)
        tracks = videos + tuple(t for n in audios for t in audio_presentation.select(None, n))
        if not tracks:
            raise PackagerError(ErrorCode.NO_STREAMS, f"MediaSet.resolve: selection '{spec.suffix()}' has no track")
        canonical = TrackSpec(file_index + 1 if self.is_url_set else None, video, audio, spec.more_audio,
                              spec.audio_file if audio_index != file_index else None)
        track_files = () if audio_index == file_index else (file_index,) * len(videos) + (audio_index,) * (
            len(tracks) - len(videos))
        return Selection(file_index, canonical, tracks, track_files)

    def _file_index(self, number: int | None) -> int:
        if number is not None and not self.is_url_set:
            raise bad_request(f"MediaSet.resolve: '-f{number}' given for a single file")
        index = (number or 1) - 1
        if not 0 <= index < len(self.presentations):
            raise not_found(f"MediaSet.resolve: no file {index + 1} in a set of {len(self.presentations)}")
        return index

    def plan(self, selection: Selection) -> SegmentPlan:
        return self.plans[selection.file_index]

    def sample_ranges(self, selection: Selection, track: Track) -> np.ndarray:
        key = id(track)
        ranges = self._ranges.get(key)
        if ranges is None:
            ranges = self._ranges[key] = self.plan(selection).sample_ranges(track)
        return ranges

    def segment_tables(self, selection: Selection, index: int) -> list[SampleTable]:
        """Per selected track, the samples of segment ``index`` (0-based); NOT_FOUND past the end."""
        self.plan(selection).check_index(index)
        tables = []
        for track in selection.tracks:
            r = self.sample_ranges(selection, track)
            tables.append(track.samples[int(r[index]) : int(r[index + 1])])
        return tables

    def segment_reads(self, selection: Selection, index: int) -> list[ReadRequest]:
        """The coalesced byte ranges of ``selection.source`` that segment ``index`` needs."""
        return plan_reads(self.segment_tables(selection, index))

    def segment_job(self, selection: Selection, index: int) -> tuple[list[SampleTable], list[ReadRequest]]:
        """The sample tables of segment ``index`` and the reads they need, computed once for a build."""
        tables = self.segment_tables(selection, index)
        return tables, plan_reads(tables)

    def media_segment(
        self, selection: Selection, index: int, requests: Sequence[ReadRequest], buffers: Sequence[bytes],
        tables: Sequence[SampleTable] | None = None,
    ) -> MediaSegment:
        """The segment a muxer builds from, once ``requests`` were read into ``buffers`` (``tables`` from
        ``segment_job``, or computed again)."""
        if tables is None:
            tables = self.segment_tables(selection, index)
        parts = tuple(
            TrackSegment(track, table, gather_runs(table, requests, buffers)) for track, table in zip(selection.tracks, tables)
        )
        return MediaSegment(index, parts)

    def segment_sizes(self, selection: Selection) -> list[np.ndarray]:
        """Per track, the payload bytes of every segment (for bitrate figures in manifests)."""
        out = []
        for track in selection.tracks:
            r = self.sample_ranges(selection, track)
            csum = np.concatenate(([0], np.cumsum(track.samples.sizes, dtype=np.int64)))
            out.append(np.diff(csum[r]))
        return out

    def segment_sample_counts(self, selection: Selection) -> list[np.ndarray]:
        return [np.diff(self.sample_ranges(selection, t)) for t in selection.tracks]

    def segment_times(self, selection: Selection, track: Track, decode: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per segment of ``track``: (start, duration) in the track's timescale, int64; starts tile the timeline
        (start[k + 1] == start[k] + duration[k]).

        By default times are presentation times (what a DASH SegmentTimeline or an MSS chunk list states): a
        segment starts at the presentation time of its first sample (the key frame, for video) and the last one
        ends at the track's presentation end. With ``decode=True`` they are decode times (dts - edit_offset), as a
        fragment's tfdt carries them, and durations are the sums of the sample durations.
        """
        ranges = self.sample_ranges(selection, track)
        n = len(track.samples)
        if decode:
            times = track.presentation_dts()
            end = int(times[-1]) + int(track.samples.durations[-1]) if n else 0
        else:
            times = track.presentation_pts()
            end = track.duration
        bounds = np.append(times, end)[ranges]
        durations = np.diff(bounds).astype(np.int64)
        # A track's own segment spans (DASH S@d, MSS chunk d) must be as sane as the plan's. Segments where the
        # track has no sample keep their 0, which only trailing ones may (a track that ends before the others: the
        # writers leave them out); an empty one before a full one would be a 0-length entry of the timeline.
        filled = np.diff(ranges) > 0
        if filled.any() and not filled[: int(np.flatnonzero(filled)[-1])].all():
            raise bad_data(f"MediaSet.segment_times: track {track.track_id} has no sample in segment "
                           f"{int(np.flatnonzero(~filled)[0]) + 1} but has in later ones, in "
                           f"{track.source or 'presentation'}")
        spans = durations[filled]
        low, high = self.limits.min_segment_seconds, self.limits.max_segment_seconds
        if len(spans) and (spans.min() < low * track.timescale or spans.max() > high * track.timescale):
            raise bad_data(f"MediaSet.segment_times: a segment of track {track.track_id} lasts {spans.min()} or "
                           f"{spans.max()} ticks (timescale {track.timescale}) in {track.source or 'presentation'}")
        return bounds[:-1].astype(np.int64), durations
