"""Low-latency HLS delivery directives (draft-pantos-hls-rfc8216bis §6.2.5, §6.2.6), pure: what a live media
playlist's tail says, and what a request's ``_HLS_msn``/``_HLS_part``/``_HLS_skip`` asks of it.

The gateway holds a blocked playlist reload until `reload_ready` holds on the playlist it would serve, and a request
for a preload-hinted part that does not exist yet until `part_settled` holds; this module never waits or reads a file.

Positions. The playlist's segments are numbered by media sequence number (MSN); the last complete one is
``last_msn`` (EXT-X-MEDIA-SEQUENCE + skipped + listed - 1) and the segment in progress, whose parts follow it
(EXT-X-PART lines with no EXTINF yet), is ``last_msn + 1``. Part file names carry the same numbers
(``<tid>-<msn>.<part index>.m4s``, rtmp.live.writer), which is how a part request is placed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, NamedTuple

from ..errors import bad_request

__all__ = ["Directives", "PartName", "PlaylistTail", "advance_part_limit", "check_ahead", "parse_directives",
           "parse_part_name", "parse_tail", "part_hinted", "part_settled", "reload_ready"]

SKIP_VALUES = ("YES", "v2")                 # §6.2.5.1: an enumerated string
_DECIMAL = re.compile(r"[0-9]{1,20}")       # decimal-integer (§4.2): 0 to 2^64-1, digits only
PART_NAME = re.compile(r"(?P<tid>[0-9a-z]{1,13})-(?P<msn>[0-9]{1,12})\.(?P<k>[0-9]{1,6})\.m4s")
_TARGET = re.compile(r"^#EXT-X-TARGETDURATION:([0-9]+)", re.M)
_SEQUENCE = re.compile(r"^#EXT-X-MEDIA-SEQUENCE:([0-9]+)", re.M)
_SKIP = re.compile(r"^#EXT-X-SKIP:(?:.*,)?SKIPPED-SEGMENTS=([0-9]+)", re.M)
_CONTROL = re.compile(r"^#EXT-X-SERVER-CONTROL:(.*)$", re.M)
_PART_TARGET = re.compile(r"^#EXT-X-PART-INF:(?:.*,)?PART-TARGET=([0-9]+(?:\.[0-9]+)?)", re.M)
_URI = re.compile(r'(?:^|,)URI="([^"]*)"')
_MEDIA_TAGS = ("#EXTINF:", "#EXT-X-PART:", "#EXT-X-PRELOAD-HINT:")


class PartName(NamedTuple):
    tid: str        # the writer's id
    msn: int        # the parent segment's media sequence number
    k: int          # part index within it, from 0

    def successors(self) -> tuple[PartName, PartName]:
        """The next part of the same segment, and part 0 of the next segment: which one comes next is only known
        once the segment closes."""
        return PartName(self.tid, self.msn, self.k + 1), PartName(self.tid, self.msn + 1, 0)


def parse_part_name(name: str) -> PartName | None:
    m = PART_NAME.fullmatch(name)
    return PartName(m["tid"], int(m["msn"]), int(m["k"])) if m else None


@dataclass(frozen=True)
class Directives:
    msn: int | None = None
    part: int | None = None
    skip: bool = False

    @property
    def blocking(self) -> bool:
        return self.msn is not None


def parse_directives(query: Mapping[str, str]) -> Directives | None:
    """The delivery directives of a playlist request's query, None when it has none. BAD_REQUEST for a value that is
    not a decimal-integer (or YES/v2 for ``_HLS_skip``) and for ``_HLS_part`` without ``_HLS_msn`` (§6.2.5.2-M6)."""
    msn, part, skip = (query.get(k) for k in ("_HLS_msn", "_HLS_part", "_HLS_skip"))
    if msn is None and part is None and skip is None:
        return None
    for name, value in (("_HLS_msn", msn), ("_HLS_part", part)):
        if value is not None and not _DECIMAL.fullmatch(value):
            raise bad_request(f"parse_directives: {name} must be a decimal-integer")
    if part is not None and msn is None:
        raise bad_request("parse_directives: _HLS_part needs _HLS_msn")
    if skip is not None and skip not in SKIP_VALUES:
        raise bad_request("parse_directives: _HLS_skip must be YES or v2")
    return Directives(None if msn is None else int(msn), None if part is None else int(part), skip is not None)


@dataclass(frozen=True)
class PlaylistTail:
    """What the directives need from one version of a media playlist (or of its delta update)."""

    target_duration: int = 0        # seconds (EXT-X-TARGETDURATION)
    part_target: float = 0.0        # seconds (EXT-X-PART-INF), 0 without parts
    can_block: bool = False         # EXT-X-SERVER-CONTROL: CAN-BLOCK-RELOAD=YES
    can_skip: bool = False          # ... CAN-SKIP-UNTIL
    ended: bool = False             # EXT-X-ENDLIST
    last_msn: int = -1              # the last complete segment; first MSN - 1 when none is listed
    last_parts: int = 0             # parts listed for it
    trailing_parts: int = 0         # parts of the segment in progress (last_msn + 1)
    newest_part: PartName | None = None   # the last EXT-X-PART, when its URI follows the writer's grammar
    hint: PartName | None = None    # EXT-X-PRELOAD-HINT TYPE=PART, likewise

    @property
    def low_latency(self) -> bool:
        """Whether blocking reload applies at all (§6.2.5.2-M5: never once the playlist ended)."""
        return self.can_block and not self.ended


def parse_tail(text: str) -> PlaylistTail:
    """Header tags by a search over the lines before the first segment; the segment count by counting EXTINF; only
    the lines from the next-to-last EXTINF on are walked (the last segment's parts, the parts in progress, the
    hint), so the cost barely grows with the window."""
    first_media = min((i for i in (text.find(t) for t in _MEDIA_TAGS) if i >= 0), default=len(text))
    head = text[:first_media]
    control = _CONTROL.search(head)
    attributes = control[1].split(",") if control else []
    part_target = _PART_TARGET.search(head)
    listed = text.count("#EXTINF:")
    last_extinf = text.rfind("#EXTINF:")
    walk_from = text.rfind("#EXTINF:", 0, last_extinf) if last_extinf >= 0 else -1
    open_parts = last_parts = 0
    newest = hint = None
    extinf_open = False
    for line in text[walk_from if walk_from >= 0 else first_media:].splitlines():
        if line.startswith("#EXT-X-PART:"):
            open_parts += 1
            newest = _uri(line)
        elif line.startswith("#EXTINF:"):
            extinf_open = True
        elif line.startswith("#EXT-X-PRELOAD-HINT:") and "TYPE=PART" in line:
            hint = _uri(line)
        elif extinf_open and line and not line.startswith("#"):  # the segment's URI: it is complete
            extinf_open, last_parts, open_parts = False, open_parts, 0
    sequence = _int(_SEQUENCE.search(head))
    return PlaylistTail(
        target_duration=_int(_TARGET.search(head)),
        part_target=float(part_target[1]) if part_target else 0.0,
        can_block="CAN-BLOCK-RELOAD=YES" in attributes,
        can_skip=any(a.startswith("CAN-SKIP-UNTIL=") for a in attributes),
        ended="#EXT-X-ENDLIST" in text,
        last_msn=sequence + _int(_SKIP.search(head)) + listed - 1,
        last_parts=last_parts if listed else 0,
        trailing_parts=open_parts,
        newest_part=parse_part_name(newest) if newest else None,
        hint=parse_part_name(hint) if hint else None,
    )


def _int(match: re.Match | None) -> int:
    return int(match[1]) if match else 0


def _uri(line: str) -> str | None:
    m = _URI.search(line[line.index(":") + 1:])   # the attribute list: URI may be its first attribute
    return m[1] if m else None


def advance_part_limit(part_target: float) -> float:
    """§6.2.5.2-S1: how many parts past the last one a request may ask for."""
    return 3 / part_target if 0 < part_target < 1 else 3


def check_ahead(tail: PlaylistTail, msn: int, part: int | None) -> None:
    """BAD_REQUEST when the request is too far ahead to be worth holding (§6.2.5.2-S1): ``_HLS_msn`` past the last
    MSN + 2, or ``_HLS_part`` more than the Advance Part Limit past the last part. A part index past the end of a
    complete segment is part 0 of the next one (§6.2.5.2-M3), never too far; in a segment not complete yet, parts
    are counted with the last complete segment's part count (or TARGETDURATION / PART-TARGET without one)."""
    if msn > tail.last_msn + 2:
        raise bad_request(f"check_ahead: _HLS_msn={msn} is past the last segment ({tail.last_msn}) + 2")
    if part is None or not tail.part_target or msn <= tail.last_msn:
        return
    per_segment = tail.last_parts or max(1, round(tail.target_duration / tail.part_target))
    ahead = (msn - tail.last_msn - 1) * per_segment + part - (tail.trailing_parts - 1)
    if ahead > advance_part_limit(tail.part_target):
        raise bad_request(f"check_ahead: _HLS_part={part} of segment {msn} is {ahead} parts past the last one")


def reload_ready(tail: PlaylistTail, msn: int, part: int | None) -> bool:
    """Whether this playlist version answers a blocked reload (§6.2.5.2-M1/M2): it lists segment ``msn`` (or a
    later one) complete, or with ``part``, that part of segment ``msn`` or a later part. A part index past the last
    part of a complete segment stands for part 0 of the next (§6.2.5.2-M3)."""
    if part is None or not tail.part_target:
        return msn <= tail.last_msn
    if msn < tail.last_msn:
        return True             # segment msn and the one after it are complete: whichever part it names exists
    if msn == tail.last_msn:
        if part < tail.last_parts:
            return True
        msn, part = msn + 1, 0
    return msn == tail.last_msn + 1 and part < tail.trailing_parts


def part_hinted(tail: PlaylistTail, name: PartName) -> bool:
    """Whether a request for a part that does not exist yet may be held (§6.2.6): it is the preload hint, or the part
    after the hint or after the newest listed part (a player whose playlist came from a fresher view of the store,
    one part ahead of this one). Never once the playlist ended, nor for another writer's part."""
    if tail.ended or tail.hint is None or name.tid != tail.hint.tid:
        return False
    near = {tail.hint, *tail.hint.successors()}
    if tail.newest_part is not None:
        near.update(tail.newest_part.successors())
    return name in near


def part_settled(tail: PlaylistTail, name: PartName) -> bool:
    """Whether waiting for part ``name`` is over: the playlist lists it (or a later part, or its segment complete),
    or will never list it (ended, another writer). The caller then reads the file: there, or 404 (§6.2.6-S3)."""
    if tail.ended or name.msn <= tail.last_msn:
        return True
    for known in (tail.newest_part, tail.hint):
        if known is not None and known.tid != name.tid:
            return True
    newest = tail.newest_part
    return newest is not None and (newest.msn, newest.k) >= (name.msn, name.k)
