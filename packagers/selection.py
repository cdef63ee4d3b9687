"""What a URL narrows a media set to, beyond the clip: nginx-vod-module's ``/tracks/`` and ``/shift/`` path parameters
and a manifest name's selectors (``master-f1-v1-a2-leng.m3u8``).

Two stages, because segment names never carry a manifest's selectors: the path parameters (``Narrowing.tracks``,
``Narrowing.shift``) change the presentations themselves, so the segment plans and every file under that path follow
them; a manifest name's selectors (``Narrowing.listing``) only narrow what that manifest lists, over the plans of
the path's media set, so a rendition it lists has the same name, segments and cache keys as in the plain manifest.
Tracks keep their original 1-based number per kind (``Track.number``) through both stages: names written in a
narrowed manifest are those of the whole file (``index-v2-a3.m3u8``, never renumbered).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from .errors import bad_request
from .model import Presentation, Track

ALL = frozenset({0})  # nginx-vod-module's v0/a0: every track of that kind
MAX_SHIFT_MS = 10**7  # ~2.8 hours: a timing shift beyond it is a typo
_TRACKS = re.compile(r"[va][0-9]{1,3}(?:-[va][0-9]{1,3})*")
_SHIFT = re.compile(r"[vas][0-9]{1,8}(?:-[vas][0-9]{1,8})*")
# <fileparams><trackparams><langparams>, each token after a '-' (nginx-vod-module's "Filename structure")
_LISTING = re.compile(r"((?:-[fva][0-9]{1,3})*)((?:-l[a-z]{3})*)")
# ISO 639-2/B codes and their /T form (mdhd holds /T, nginx-vod-module matches ISO 639-3, which uses /T)
ISO639_2B = {
    "alb": "sqi", "arm": "hye", "baq": "eus", "bur": "mya", "chi": "zho", "cze": "ces", "dut": "nld", "fre": "fra",
    "geo": "kat", "ger": "deu", "gre": "ell", "ice": "isl", "mac": "mkd", "mao": "mri", "may": "msa", "per": "fas",
    "rum": "ron", "slo": "slk", "tib": "bod", "wel": "cym",
}


def language_code(code: str) -> str:
    """A three-letter language code as ISO 639-2/T (= ISO 639-3 for these): ``fre`` → ``fra``."""
    code = code.lower()
    return ISO639_2B.get(code, code)


@dataclass(frozen=True)
class TrackMask:
    """Track numbers (1-based, per kind) a URL selects. None: that kind was not mentioned (the default applies);
    ``ALL``: v0/a0; an empty set: the kind was left out (``v1`` alone selects no audio, as in nginx-vod-module)."""

    video: frozenset[int] | None = None
    audio: frozenset[int] | None = None

    @property
    def is_default(self) -> bool:
        return self.video is None and self.audio is None

    def numbers(self, kind: str) -> frozenset[int] | None:
        return self.video if kind == "video" else self.audio

    def allows(self, kind: str, number: int) -> bool:
        numbers = self.numbers(kind)
        return numbers is None or numbers == ALL or number in numbers

    @classmethod
    def parse_tokens(cls, tokens: list[tuple[str, int]]) -> "TrackMask":
        if not tokens:
            return cls()
        kinds: dict[str, frozenset[int]] = {"v": frozenset(), "a": frozenset()}
        for letter, number in tokens:
            kinds[letter] = ALL if number == 0 or kinds[letter] == ALL else kinds[letter] | {number}
        return cls(kinds["v"], kinds["a"])

    @classmethod
    def parse(cls, text: str) -> "TrackMask":
        """The ``/tracks/`` value: ``v1-a2``, ``v0`` (every video, no audio), ``v1-v2-a0``..."""
        if not _TRACKS.fullmatch(text.lower()):
            raise bad_request(f"TrackMask.parse: tracks must be v<n>/a<n> joined by '-' (v1-a2, v0), got '{text[:40]}'")
        return cls.parse_tokens([(t[0], int(t[1:])) for t in text.lower().split("-")])


@dataclass(frozen=True)
class Shift:
    """``/shift/v100-a0/``: milliseconds added to the presentation times of every track of a kind. ``s``
    (subtitles) is accepted and kept for captions."""

    video_ms: int = 0
    audio_ms: int = 0
    subtitles_ms: int = 0

    @property
    def is_default(self) -> bool:
        return not (self.video_ms or self.audio_ms or self.subtitles_ms)

    def of(self, kind: str) -> int:
        return self.video_ms if kind == "video" else self.audio_ms

    @classmethod
    def parse(cls, text: str) -> "Shift":
        if not _SHIFT.fullmatch(text.lower()):
            raise bad_request(f"Shift.parse: shift must be v<ms>/a<ms>/s<ms> joined by '-' (v100-a0), "
                              f"got '{text[:40]}'")
        values: dict[str, int] = {}
        for token in text.lower().split("-"):
            values.setdefault(token[0], int(token[1:]))  # the first of a kind counts
        if any(v > MAX_SHIFT_MS for v in values.values()):
            raise bad_request(f"Shift.parse: a shift is at most {MAX_SHIFT_MS} ms, got '{text[:40]}'")
        return cls(values.get("v", 0), values.get("a", 0), values.get("s", 0))


@dataclass(frozen=True)
class Listing:
    """A manifest name's selectors: which files (1-based), tracks and audio languages the manifest lists. Track
    tokens apply to the files named just before them (nginx-vod-module: ``f1-v1-f2-a1`` is video 1 of file 1 and
    audio 1 of file 2, ``f1-f2-v1`` video 1 of both): ``per_file`` holds those masks when the groups differ."""

    files: frozenset[int] | None = None
    tracks: TrackMask = TrackMask()
    languages: frozenset[str] | None = None  # ISO 639-2/T
    per_file: tuple[tuple[int, TrackMask], ...] = ()  # (file number, its mask), overriding ``tracks``

    @property
    def is_default(self) -> bool:
        return self.files is None and self.tracks.is_default and self.languages is None and not self.per_file

    def mask_for(self, file_number: int) -> TrackMask:
        return next((m for f, m in self.per_file if f == file_number), self.tracks)

    @property
    def names_video(self) -> bool:
        return self.tracks.video is not None or any(m.video is not None for _, m in self.per_file)

    def suffix(self) -> str:
        """The canonical selectors text (for messages and tests)."""
        def track_tokens(mask: TrackMask) -> list[str]:
            return [f"-{letter}{n}" for letter, numbers in (("v", mask.video), ("a", mask.audio))
                    for n in sorted(numbers or ())]

        if self.per_file:
            parts = [t for f, mask in self.per_file for t in [f"-f{f}", *track_tokens(mask)]]
        else:
            parts = [f"-f{n}" for n in sorted(self.files or ())] + track_tokens(self.tracks)
        return "".join(parts + [f"-l{code}" for code in sorted(self.languages or ())])

    @classmethod
    def parse(cls, text: str) -> "Listing":
        """``-f1-f2``, ``-v1-a2`` (``-v0``/``-a0``: all of the kind), ``-f1-v1-f2-a1``, then ``-leng-lfra``."""
        m = _LISTING.fullmatch(text)
        if not m:
            raise bad_request(f"Listing.parse: manifest selectors are -f<n>/-v<n>/-a<n>..., then -l<iso639>..., "
                              f"got '{text[:40]}'")
        groups: list[tuple[set[int], list[tuple[str, int]]]] = []  # files, then the track tokens after them
        for token in m.group(1).split("-")[1:]:
            letter, number = token[0], int(token[1:])
            if letter == "f":
                if number == 0:
                    raise bad_request(f"Listing.parse: file numbers start at 1 in '{text[:40]}'")
                if not groups or groups[-1][1]:
                    groups.append((set(), []))
                groups[-1][0].add(number)
            else:
                if not groups:
                    groups.append((set(), []))
                groups[-1][1].append((letter, number))
        files = frozenset(f for g, _ in groups for f in g) or None
        if files is not None and not groups[0][0]:
            raise bad_request(f"Listing.parse: -f<n> comes before the tracks it selects, in '{text[:40]}'")
        languages = frozenset(language_code(t[1:]) for t in m.group(2).split("-")[1:]) or None
        if len(groups) <= 1:
            return cls(files, TrackMask.parse_tokens(groups[0][1] if groups else []), languages)
        per_file = tuple((f, TrackMask.parse_tokens(tokens)) for g, tokens in groups for f in sorted(g))
        return cls(files, TrackMask(), languages, per_file)


@dataclass(frozen=True)
class Narrowing:
    """Everything a URL narrows a media set to besides the clip. The default narrows nothing."""

    tracks: TrackMask = TrackMask()  # /tracks/
    shift: Shift = Shift()  # /shift/
    listing: Listing = Listing()  # a manifest name's selectors

    @property
    def is_default(self) -> bool:
        return self.tracks.is_default and self.shift.is_default and self.listing.is_default

    @property
    def lists_every_video(self) -> bool:
        """Manifests list the first video track of each file unless the URL names video tracks itself."""
        return self.tracks.video is not None or self.listing.names_video


def number_tracks(presentation: Presentation) -> Presentation:
    """The presentation with each track's 1-based number per kind set (``Track.number``), so that it survives
    filtering and clipping (which drops empty tracks)."""
    if all(t.number for t in presentation.tracks):
        return presentation
    counts = {"video": 0, "audio": 0}
    tracks = []
    for track in presentation.tracks:
        counts[track.kind] = counts.get(track.kind, 0) + 1
        tracks.append(track if track.number else dataclasses.replace(track, number=counts[track.kind]))
    return dataclasses.replace(presentation, tracks=tuple(tracks))


def _shifted(track: Track, shift: Shift) -> Track:
    ms = shift.of(track.kind)
    if not ms:
        return track
    ticks = ms * track.timescale // 1000
    end = track.presentation_end
    # presentation times move later; a clip's end moves with them
    return dataclasses.replace(track, edit_offset=track.edit_offset - ticks,
                               presentation_end=None if end is None else end + ticks)


def narrow_presentation(presentation: Presentation, narrowing: Narrowing) -> Presentation:
    """The path stage: tracks the ``/tracks/`` mask keeps, shifted by ``/shift/`` (numbers set first)."""
    if narrowing.tracks.is_default and narrowing.shift.is_default:
        return presentation
    numbered = number_tracks(presentation)
    tracks = tuple(_shifted(t, narrowing.shift) for t in numbered.tracks
                   if narrowing.tracks.allows(t.kind, t.number))
    return dataclasses.replace(numbered, tracks=tracks)


def listed_presentation(presentation: Presentation, file_number: int, listing: Listing) -> Presentation:
    """The manifest stage: the same Track objects (their plans and sample ranges are the path's), fewer of them."""
    if listing.is_default:
        return presentation
    if listing.files is not None and file_number not in listing.files:
        return dataclasses.replace(presentation, tracks=())
    numbered = number_tracks(presentation)
    mask = listing.mask_for(file_number)
    tracks = tuple(
        t for t in numbered.tracks if mask.allows(t.kind, t.number)
        and (t.kind != "audio" or listing.languages is None or language_code(t.language) in listing.languages))
    return dataclasses.replace(numbered, tracks=tracks)
