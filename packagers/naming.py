"""nginx-vod-module's track-selection suffix (``-f2-v1-a1``), shared by every protocol's file names.

``-fN`` picks the N-th file of a url set, ``-vN``/``-aN`` the N-th video/audio track of that file (all 1-based).
Keeping the grammar here lets manifest writers and the gateway's URL parser agree by construction. Each protocol's
file names (``packagers/<protocol>/names.py``) are built from this suffix and the 1-based segment number below.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import bad_request
from .selection import Listing

_TOKEN = re.compile(r"-([fva])([0-9]{1,3})")
MAX_SEGMENT_DIGITS = 10
MAX_SEGMENT_INDEX = 10**MAX_SEGMENT_DIGITS - 2  # 0-based index of the largest number a URL may carry


@dataclass(frozen=True)
class TrackSpec:
    """``-fN`` (a file of a url set), ``-vN`` (one video track), ``-aN`` (audio: several ``-a1-a2``, or ``-a0``
    for every audio track of the file, nginx-vod-module's grammar). ``audio`` is the first (0: all),
    ``more_audio`` the others, in the order given."""

    file: int | None = None
    video: int | None = None
    audio: int | None = None
    more_audio: tuple[int, ...] = ()
    audio_file: int | None = None  # the file of the audio tracks when it is not ``file`` (``-f1-v1-f2-a1``)

    def suffix(self) -> str:
        parts = [f"-{k}{v}" for k, v in (("f", self.file), ("v", self.video)) if v is not None]
        if self.audio_file is not None:
            parts.append(f"-f{self.audio_file}")
        parts += [f"-a{n}" for n in ((self.audio,) if self.audio is not None else ()) + self.more_audio]
        return "".join(parts)

    @classmethod
    def parse(cls, text: str) -> "TrackSpec":
        """Parse a suffix such as ``-f1-v1-a2`` or ``-v1-a1-a3``: f, v, a in that order, one file and one video
        track at most, audio tracks each once (or ``-a0`` alone), numbers ≥ 1."""
        values: dict[str, int] = {}
        audio: list[int] = []
        pos = 0
        order = "fva"
        last = -1
        for m in _TOKEN.finditer(text):
            if m.start() != pos:
                break
            letter, number = m.group(1), int(m.group(2))
            if letter == "f" and "f" in values:
                # nginx-vod-module's f1-v1-f2-a1: the video of one file, the audio of another
                if "v" not in values or "audio_file" in values or audio:
                    raise bad_request(f"TrackSpec.parse: a segment takes the video of one file and the audio of "
                                      f"another at most: -f<n>-v<n>-f<m>-a<n>, not '{text}'")
                values["audio_file"] = number
                pos = m.end()
                continue
            if letter == "v" and ("v" in values or number == 0):
                # MPEG-TS and FLV carry one video stream per segment; renditions are separate playlists
                raise bad_request(f"TrackSpec.parse: several video tracks in one segment ('{text}') are not "
                                  f"supported: a segment name selects at most one video track; '-v0' selects "
                                  f"tracks in manifest names")
            if order.index(letter) < last:
                raise bad_request(f"TrackSpec.parse: out-of-order '-{letter}' in '{text}' (f, v, a)")
            if letter == "a":
                if number in audio or (number == 0 and audio) or 0 in audio:
                    raise bad_request(f"TrackSpec.parse: audio track {number} repeated, or '-a0' (every audio "
                                      f"track) with others, in '{text}'")
                audio.append(number)
            elif number < 1:
                raise bad_request(f"TrackSpec.parse: track numbers start at 1 in '{text}'")
            else:
                values[letter] = number
            last = order.index(letter)
            pos = m.end()
        if pos != len(text):
            raise bad_request(f"TrackSpec.parse: malformed track selection '{text}'")
        if "audio_file" in values and not audio:
            raise bad_request(f"TrackSpec.parse: -f{values['audio_file']} names no audio track in '{text}'")
        return cls(values.get("f"), values.get("v"), audio[0] if audio else None, tuple(audio[1:]),
                   values.get("audio_file"))


@dataclass(frozen=True)
class MediaFile:
    """What a protocol's file name says: the kind of file, and for per-rendition files the track selection, the
    0-based segment index and (HLS segments) the container. Written by manifest writers, parsed back from URLs."""

    kind: str  # manifest | playlist | iframes | segment | init | key
    spec: TrackSpec = TrackSpec()
    index: int | None = None  # segments only; the name says index + 1
    container: str | None = None  # HLS segments only: ts (MPEG-TS) or fmp4 (.m4s)
    listing: Listing = Listing()  # manifests only: what a name such as master-f1-a2-leng.m3u8 lists
    key_id: str = ""  # HLS identity keys of DRM-protected sets: the key id (32 hex digits) the name gives


def segment_number(index: int) -> str:
    """The 1-based number a file name gives 0-based segment ``index``."""
    return str(index + 1)


def parse_segment_number(digits: str) -> int:
    """0-based index from a name's 1-based number, in canonical form only (no zero, no leading zeros), so that one
    segment has one URL and one cache key. ``digits`` are ASCII digits (the protocols' patterns say so)."""
    if digits.startswith("0"):
        raise bad_request("parse_path: segment numbers start at 1 and have no leading zeros")
    if len(digits) > MAX_SEGMENT_DIGITS:
        raise bad_request(f"parse_path: segment number longer than {MAX_SEGMENT_DIGITS} digits")
    return int(digits) - 1
