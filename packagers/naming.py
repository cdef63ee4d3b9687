"""nginx-vod-module's track-selection suffix (``-f2-v1-a1``), shared by every protocol's file names.

``-fN`` picks the N-th file of a url set, ``-vN``/``-aN`` the N-th video/audio track of that file (all 1-based).
Keeping the grammar here lets manifest writers and the gateway's URL parser agree by construction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import bad_request

_TOKEN = re.compile(r"-([fva])(\d{1,3})")
SUFFIX_PATTERN = r"(?:-[fva]\d{1,3})*"


@dataclass(frozen=True)
class TrackSpec:
    file: int | None = None
    video: int | None = None
    audio: int | None = None

    def suffix(self) -> str:
        parts = [f"-{k}{v}" for k, v in (("f", self.file), ("v", self.video), ("a", self.audio)) if v is not None]
        return "".join(parts)

    @classmethod
    def parse(cls, text: str) -> "TrackSpec":
        """Parse a suffix such as ``-f1-v1-a2``; each letter at most once, in f, v, a order, numbers ≥ 1."""
        values: dict[str, int] = {}
        pos = 0
        order = "fva"
        last = -1
        for m in _TOKEN.finditer(text):
            if m.start() != pos:
                break
            letter, number = m.group(1), int(m.group(2))
            if letter in values or order.index(letter) < last:
                raise bad_request(f"TrackSpec.parse: repeated or out-of-order '-{letter}' in '{text}'")
            if number < 1:
                raise bad_request(f"TrackSpec.parse: track numbers start at 1 in '{text}'")
            values[letter] = number
            last = order.index(letter)
            pos = m.end()
        if pos != len(text):
            raise bad_request(f"TrackSpec.parse: malformed track selection '{text}'")
        return cls(values.get("f"), values.get("v"), values.get("a"))
