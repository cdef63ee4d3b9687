"""A progressive MP4 of a clipped presentation (``/mp4/…/clipFrom/…/clipTo/…``): a new moov, the samples as they
are.

The file is ``ftyp`` + ``moov`` + ``mdat``, where the mdat holds the selected samples' bytes copied from the source
in their source order (interleaving kept, so runs of samples stay contiguous and a response is a few large preads).
Nothing is built but the header: ``ClippedMp4`` says which source bytes make up any byte range of the file, so a
player's Range requests are answered piece by piece, like sendfile of a file that exists only as a layout.

Each track gets one edit (ISO/IEC 14496-12 §8.6.6) whose media_time is the media time presented at the clip's
start: the frames before it (the key frame the clip's first picture depends on, the audio frame before) are decoded
and not shown, so a player's first picture is the one at clipFrom; its duration ends presentation at clipTo.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..codecs.box import box_header, box_header_size
from ..errors import ErrorCode, PackagerError
from ..model import Presentation, Track
from .writer import MOVIE_TIMESCALE, movie_box, movie_file_type


@dataclass(frozen=True, eq=False)
class ClippedMp4:
    head: bytes  # ftyp + moov + mdat header
    sources: np.ndarray  # int64: source file offset of each piece of the mdat, in file order
    starts: np.ndarray  # int64: offset of each piece in this file, then the file's size (len(sources) + 1)

    @property
    def size(self) -> int:
        return int(self.starts[-1])

    def pieces(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """What bytes [start, stop) of the file are: (source offset or -1 for the head, offset in the head or the
        piece, length), in order."""
        out = []
        if start < len(self.head):
            end = min(stop, len(self.head))
            out.append((-1, start, end - start))
            start = end
        i = max(0, int(np.searchsorted(self.starts, start, side="right")) - 1)
        while start < stop and i < len(self.sources):
            end = min(stop, int(self.starts[i + 1]))
            out.append((int(self.sources[i]), start - int(self.starts[i]), end - start))
            start, i = end, i + 1
        return out


def build_clipped_mp4(presentation: Presentation, movie_timescale: int = MOVIE_TIMESCALE) -> ClippedMp4:
    """The layout of the MP4 holding ``presentation``'s tracks (cut by ``packagers.clipping``). Sample bytes keep
    their source order; the moov is built twice at most (its size moves the samples; stco may become co64)."""
    tracks = [t for t in presentation.tracks if len(t.samples)]
    if not tracks:
        raise PackagerError(ErrorCode.NO_STREAMS, f"build_clipped_mp4: nothing to write from {presentation.source}")
    offsets = np.concatenate([t.samples.offsets.astype(np.int64) for t in tracks])
    sizes = np.concatenate([t.samples.sizes.astype(np.int64) for t in tracks])
    order = np.argsort(offsets, kind="stable")
    placed = np.empty(len(order), np.int64)
    placed[order] = np.concatenate(([0], np.cumsum(sizes[order])[:-1]))  # each sample's offset in the mdat payload
    payload = int(sizes.sum())
    edits = [track_edits(t, movie_timescale) for t in tracks]
    ftyp = movie_file_type([t.codec for t in tracks])
    head_size = len(ftyp) + box_header_size(payload)  # a guess: the moov's size is known once it is built
    for _ in range(3):
        moov = movie_box(_placed(tracks, placed + head_size), edits, movie_timescale)
        head = ftyp + moov + box_header(b"mdat", payload)
        if len(head) == head_size:
            break
        head_size = len(head)
    else:  # pragma: no cover - the moov's size settles on the second pass (co64 once), never later
        raise PackagerError(ErrorCode.BAD_DATA, "build_clipped_mp4: the moov size does not settle")
    # pieces: runs of samples contiguous in the source
    ordered, lengths = offsets[order], sizes[order]
    breaks = np.flatnonzero(ordered[1:] != ordered[:-1] + lengths[:-1]) + 1
    run_starts = np.concatenate(([0], breaks))
    bounds = np.concatenate(([0], np.cumsum(lengths)))[np.append(run_starts, len(ordered))] + len(head)
    return ClippedMp4(head, ordered[run_starts], bounds)


def _placed(tracks: list[Track], offsets: np.ndarray) -> list[Track]:
    out, at = [], 0
    for track in tracks:
        n = len(track.samples)
        samples = dataclasses.replace(track.samples, offsets=offsets[at:at + n].astype(np.uint64))
        out.append(dataclasses.replace(track, samples=samples))
        at += n
    return out


def track_edits(track: Track, movie_timescale: int) -> list[tuple[int, int]]:
    """The elst entries presenting ``track`` from its presentation time 0 to its end (``Track.duration``): media
    time ``edit_offset`` at movie time 0, or an empty edit first when the track starts later (edit_offset < 0)."""
    ts = track.timescale

    def movie(ticks: int) -> int:
        return (2 * ticks * movie_timescale + ts) // (2 * ts)

    if track.edit_offset >= 0:
        return [(movie(track.duration), track.edit_offset)]
    delay = -track.edit_offset
    return [(movie(delay), -1), (movie(max(0, track.duration - delay)), 0)]
