"""WebVTT (W3C WebVTT §4, the file parsing algorithm, simplified) and SRT sidecar files -> ``CaptionTrack``.

Both formats become the same cues: times in milliseconds, the cue text as WebVTT cue text (multi-line; WebVTT
markup kept as written, SRT's converted to it; the writers re-emit it or map it), WebVTT cue settings ('' for SRT)
and the cue identifier (the SRT index). STYLE blocks are kept for re-emission, NOTE and REGION blocks are skipped.
Input is untrusted: every inconsistency is ``PackagerError(BAD_DATA)`` naming the line, and the size and cue count
are capped before the work they allow.
"""
from __future__ import annotations

import io
import itertools
import re
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..errors import bad_data
from ..limits import DEFAULT_LIMITS

MAX_BYTES = 16 << 20  # a two-hour film has ~2k cues, ~150 KB
MAX_CUES = 200_000  # blocks (cues, NOTE, STYLE) of one file
MAX_BLOCK_LINES = 10_000  # a cue has a few lines, a STYLE block a few hundred
MAX_TIME_MS = int(DEFAULT_LIMITS.max_duration_seconds * 1000)  # as for media: 31 days (int64 columns, sane windows)

# WebVTT §4.3 timestamps: hours optional (2+ digits), minutes and seconds 00-59, exactly 3 fraction digits.
_VTT_TIME = re.compile(r"(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})")
# SRT: hh:mm:ss,mmm (ffmpeg and most authoring tools also accept a '.'); hours may have any number of digits.
_SRT_TIME = re.compile(r"(\d+):([0-5]\d):([0-5]\d)[,.](\d{3})")
_ARROW = re.compile(r"[ \t]+-->[ \t]+")
_SRT_ARROW = re.compile(r"[ \t]*-->[ \t]*")  # some SRT writers leave out the spaces
# SRT text -> WebVTT cue text (§4.2.2): SRT's <i> <b> <u> stay, <font> and ASS overrides such as {\an8} go (no
# WebVTT equivalent; ffmpeg drops them too), any other '<' and every '&' are literal text in SRT, so they are escaped.
_SRT_MARKUP = re.compile(r"<(/?)([A-Za-z]+)([^<>]*)>|\{\\[^{}]*\}|[&<]")
_SRT_TAGS = {"i", "b", "u"}
_VTT_HEADER = re.compile(r"WEBVTT(?:[ \t].*)?")
_KEYWORD_BLOCK = re.compile(r"(NOTE|STYLE|REGION)(?:[ \t].*)?")


@dataclass(frozen=True, slots=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str  # lines joined by '\n', markup as written
    settings: str = ""  # WebVTT cue settings, e.g. "align:start line:90%" (whitespace normalised)
    id: str = ""


@dataclass(frozen=True)
class CaptionTrack:
    """Cues sorted by start (stable: equal starts keep file order; sorted here if given unsorted), with their times as
    read-only int64 columns for the vectorised window lookup of the writers."""
    cues: tuple[Cue, ...]
    styles: tuple[str, ...] = ()  # bodies of WebVTT STYLE blocks
    starts: np.ndarray = field(init=False, repr=False, compare=False)
    ends: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if any(a.start_ms > b.start_ms for a, b in zip(self.cues, self.cues[1:])):
            object.__setattr__(self, "cues", tuple(sorted(self.cues, key=lambda c: c.start_ms)))
        starts = np.fromiter((c.start_ms for c in self.cues), np.int64, len(self.cues))
        ends = np.fromiter((c.end_ms for c in self.cues), np.int64, len(self.cues))
        starts.flags.writeable = ends.flags.writeable = False
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "ends", ends)

    def overlapping(self, start_ms: int, end_ms: int) -> np.ndarray:
        """Indexes of the cues that overlap [start_ms, end_ms): start < end_ms and end > start_ms; a zero-length cue
        counts as lasting one millisecond, so it belongs to exactly the window that holds its start."""
        hi = int(np.searchsorted(self.starts, end_ms, side="left"))
        ends = np.maximum(self.ends[:hi], self.starts[:hi] + 1)
        return np.flatnonzero(ends > start_ms)


def parse_captions(data: bytes, name: str) -> CaptionTrack:
    """The cues of a WebVTT or SRT file; the format from the extension of ``name`` (.vtt/.webvtt, .srt), else sniffed
    from the content."""
    if len(data) > MAX_BYTES:
        raise bad_data(f"parse_captions: {len(data)} bytes, more than {MAX_BYTES}, line 1 of {name}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad_data(f"parse_captions: not UTF-8 (byte 0x{data[e.start]:02x}), line {_line_of(data, e.start)} of "
                       f"{name}") from None
    # WebVTT §6.1 preprocessing: one BOM dropped, NUL -> U+FFFD, CRLF/CR -> LF (by StringIO's universal newlines).
    text = text.removeprefix("\ufeff")
    if "\0" in text:
        text = text.replace("\0", "\ufffd")
    # Lines are read lazily and blocks kept one at a time: 16 MB of two-character lines would be ~300 MB as a list.
    lines = enumerate((line.removesuffix("\n") for line in io.StringIO(text, newline=None)), 1)
    ext = name.lower().rpartition(".")[2] if "." in name else ""
    if ext in ("vtt", "webvtt"):
        vtt = True
    elif ext == "srt":
        vtt = False
    else:
        vtt = text.startswith("WEBVTT")
    return _parse_vtt(lines, name) if vtt else _parse_srt(lines, name)


def _line_of(data: bytes, offset: int) -> int:
    head = data[:offset]
    return head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n") + 1


def _blocks(lines: Iterator[tuple[int, str]], name: str) -> Iterator[tuple[int, list[str]]]:
    """(line number of the block's first line, its lines) for each run of non-blank lines."""
    block: list[str] = []
    first = count = 0
    for lineno, line in lines:
        if line.strip(" \t"):
            if not block:
                count += 1
                if count > MAX_CUES:
                    raise bad_data(f"parse_captions: more than {MAX_CUES} cues, line {lineno} of {name}")
                first = lineno
            elif len(block) >= MAX_BLOCK_LINES:
                raise bad_data(f"parse_captions: more than {MAX_BLOCK_LINES} lines in one block, line {lineno} of "
                               f"{name}")
            block.append(line)
        elif block:
            yield first, block
            block = []
    if block:
        yield first, block


def _time(match: re.Match) -> int:
    h, m, s, ms = match.groups()
    return (int(h or 0) * 3600 + int(m) * 60 + int(s)) * 1000 + int(ms)


def _timing(line: str, lineno: int, name: str, srt: bool) -> tuple[int, int, str]:
    """start, end, settings of a cue timing line (WebVTT §4.3.1; SRT: anything after the end time is dropped, some
    files put display coordinates there)."""
    parts = (_SRT_ARROW if srt else _ARROW).split(line.strip(" \t"), maxsplit=1)
    if len(parts) != 2:
        raise bad_data(f"parse_captions: bad cue timing '{line[:60]}', line {lineno} of {name}")
    start_text, rest = parts
    end_text, *settings = re.split(r"[ \t]+", rest, maxsplit=1)
    pattern = _SRT_TIME if srt else _VTT_TIME
    start, end = pattern.fullmatch(start_text), pattern.fullmatch(end_text)
    if start is None or end is None:
        bad = start_text if start is None else end_text
        raise bad_data(f"parse_captions: bad timestamp '{bad[:30]}', line {lineno} of {name}")
    start_ms, end_ms = _time(start), _time(end)
    if end_ms > MAX_TIME_MS:
        raise bad_data(f"parse_captions: cue time {end_text} past {MAX_TIME_MS // 3_600_000} hours, line {lineno} of "
                       f"{name}")
    if end_ms < start_ms:
        raise bad_data(f"parse_captions: cue ends before it starts ({start_text} --> {end_text}), line {lineno} of "
                       f"{name}")
    return start_ms, end_ms, "" if srt else " ".join(" ".join(settings).split())


def _parse_vtt(lines: Iterator[tuple[int, str]], name: str) -> CaptionTrack:
    _, first = next(lines, (1, ""))
    if not _VTT_HEADER.fullmatch(first):
        raise bad_data(f"parse_captions: no WEBVTT header, line 1 of {name}")
    # The header's free text ends at a blank line, or at a cue timing line when the blank line is missing (§6.1).
    for lineno, line in lines:
        if not line.strip(" \t"):
            break
        if "-->" in line:
            lines = itertools.chain([(lineno, line)], lines)
            break
    cues, styles = [], []
    for lineno, block in _blocks(lines, name):
        keyword = _KEYWORD_BLOCK.fullmatch(block[0])
        if keyword and "-->" not in block[0]:
            if keyword.group(1) == "STYLE":
                styles.append("\n".join(block[1:]))
            continue
        ident = ""
        if "-->" not in block[0]:
            if len(block) < 2 or "-->" not in block[1]:
                raise bad_data(f"parse_captions: block without a cue timing line, line {lineno} of {name}")
            ident, block, lineno = block[0], block[1:], lineno + 1
        start, end, settings = _timing(block[0], lineno, name, srt=False)
        cues.append(Cue(start, end, "\n".join(block[1:]), settings, ident))
    return CaptionTrack(tuple(cues), tuple(styles))


def _parse_srt(lines: Iterator[tuple[int, str]], name: str) -> CaptionTrack:
    cues = []
    for lineno, block in _blocks(lines, name):
        ident = ""
        if "-->" not in block[0]:  # the cue number; a few tools omit it
            if not (block[0].strip(" \t").isascii() and block[0].strip(" \t").isdigit()) or len(block) < 2:
                raise bad_data(f"parse_captions: expected an SRT cue number and timing, line {lineno} of {name}")
            ident, block, lineno = block[0].strip(" \t"), block[1:], lineno + 1
        start, end, _ = _timing(block[0], lineno, name, srt=True)
        cues.append(Cue(start, end, _SRT_MARKUP.sub(_srt_markup, "\n".join(block[1:])), "", ident))
    return CaptionTrack(tuple(cues))


def _srt_markup(m: re.Match) -> str:
    slash, tag, attributes = m.groups()
    if tag is None:
        return {"&": "&amp;", "<": "&lt;"}.get(m.group(0), "")
    tag = tag.lower()
    if tag in _SRT_TAGS and not attributes.strip():
        return f"<{slash}{tag}>"
    return "" if tag == "font" else "&lt;" + m.group(0)[1:]
