"""Which tracks fMP4 manifests (DASH MPD, HLS-fMP4 playlists) list, each as its own rendition (demuxed).

Video: the first video track of every file of the set (nginx-vod-module's ``-v1`` default), one rendition per file,
or every video track the URL leaves when it names video tracks (``/tracks/v0/``, ``manifest-v1-v2.mpd``).
Audio: every audio track of every file, except that a track identical to one already listed (same language, codec,
timing and sample sizes: the same encode of the same audio, as the files of an ABR ladder usually carry) is listed
once. ``audio_groups`` then tells, per video file, which of the listed audio renditions go with it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..media_set import MediaSet, Selection
from ..model import Track
from ..naming import TrackSpec


@dataclass(frozen=True, eq=False)
class AudioGroups:
    renditions: tuple[Selection, ...]  # distinct audio tracks, one track per selection
    of_file: tuple[tuple[int, ...], ...]  # per file: indices into ``renditions`` of its audio tracks, in order


def audio_fingerprint(track: Track) -> tuple:
    """What makes two audio tracks the same rendition (the same encode of the same audio)."""
    s = track.samples
    digest = hashlib.blake2b(s.sizes.tobytes() + s.durations.tobytes(), digest_size=16).digest()
    c = track.codec
    return (track.language, c.codec_string, c.extradata, c.sample_rate, c.channels, track.timescale,
            track.edit_offset, len(s), digest)  # fmt: skip


def _file(media_set: MediaSet, index: int) -> int | None:
    return index + 1 if media_set.is_url_set else None


def video_selections(media_set: MediaSet) -> list[Selection]:
    # tracks are named by their number in the whole file (a URL may have filtered some out)
    return [media_set.resolve(TrackSpec(_file(media_set, i), n, None))
            for i, p in enumerate(media_set.presentations) for n, t in p.numbered("video")
            if t in media_set.listed_videos(p)]  # fmt: skip


def audio_groups(media_set: MediaSet) -> AudioGroups:
    renditions: list[Selection] = []
    seen: dict[tuple, int] = {}
    of_file = []
    for i, presentation in enumerate(media_set.presentations):
        mine = []
        for n, track in presentation.numbered("audio"):
            key = audio_fingerprint(track)
            if key not in seen:
                seen[key] = len(renditions)
                renditions.append(media_set.resolve(TrackSpec(_file(media_set, i), None, n)))
            mine.append(seen[key])
        of_file.append(tuple(mine))
    return AudioGroups(tuple(renditions), tuple(of_file))
