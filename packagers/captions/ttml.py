"""TTML1 documents (W3C TTML1 §7-§10) from caption cues, for DASH ``stpp`` fragments and the Smooth Streaming text
stream.

One ``p`` per cue with clock-time begin/end on the output timeline (the track's times minus ``offset_ms``, as in
``webvtt``), a ``br`` per line break. WebVTT markup maps to TTML styling where TTML1 has it (<b>, <i>, <u> -> spans
with tts:fontWeight / fontStyle / textDecoration); the rest (<c.class>, <v Speaker>, <lang>, <ruby>/<rt>, inline
timestamps) is dropped with its text kept. Entities are decoded, then everything is XML-escaped.

Which timeline, per protocol (the caller picks it with the window and ``offset_ms``):
* DASH ``stpp``: the track's media timeline (ISO/IEC 14496-30; dash.js and shaka read it so; ffmpeg's movenc writes
  it so): ``build_ttml(track, seg_start, seg_end, offset_ms=clip_from)``.
* Smooth Streaming: relative to the fragment's start (what Smooth clients expect; dash.js adds the fragment start
  for MSS only): ``build_ttml(track, 0, seg_end - seg_start, offset_ms=clip_from + seg_start)``.
"""
from __future__ import annotations

import html
import re
from xml.sax.saxutils import escape, quoteattr

from .parse import CaptionTrack
from .webvtt import shifted

_TAG = re.compile(r"<(/?)([A-Za-z]+|[\d:.]+)([^<>]*)>")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_SPANS = {
    "b": '<span tts:fontWeight="bold">',
    "i": '<span tts:fontStyle="italic">',
    "u": '<span tts:textDecoration="underline">',
}
_HEAD = (
    '<head><styling><style xml:id="s1" tts:color="white" tts:backgroundColor="black" '
    'tts:fontFamily="proportionalSansSerif" tts:textAlign="center"/></styling>'
    '<layout><region xml:id="r1" tts:origin="10% 10%" tts:extent="80% 80%" tts:displayAlign="after"/></layout></head>'
)


def clock_time(ms: int) -> str:
    """TTML clock-time hh:mm:ss.fff (§10.3.1)."""
    seconds, ms = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{ms:03d}"


def _text(raw: str) -> str:
    # Characters XML 1.0 forbids (§2.2) would make the document unreadable: dropped, also when an entity made them.
    return escape(_NOT_XML.sub("", html.unescape(raw))).replace("\n", "<br/>")


def ttml_content(cue_text: str) -> str:
    """The content of a ``p`` for WebVTT cue text: styled spans, ``br`` line breaks, escaped text. Unbalanced
    markup is tolerated as WebVTT parsers do (a stray end tag is ignored, open tags close at the end)."""
    out, stack, pos = [], [], 0
    for m in _TAG.finditer(cue_text):
        out.append(_text(cue_text[pos:m.start()]))
        pos = m.end()
        slash, tag = m.group(1), m.group(2).lower()
        if tag[0].isdigit():  # inline timestamp (karaoke): dropped
            continue
        if not slash:
            stack.append(tag)
            out.append(_SPANS.get(tag, ""))
        elif tag in stack:
            while stack:
                top = stack.pop()
                out.append("</span>" if top in _SPANS else "")
                if top == tag:
                    break
    out.append(_text(cue_text[pos:]))
    out.extend("</span>" for tag in reversed(stack) if tag in _SPANS)
    return "".join(out)


def build_ttml(track: CaptionTrack, start_ms: int | None = None, end_ms: int | None = None, offset_ms: int = 0,
               language: str = "und") -> bytes:
    """A TTML1 document of the cues overlapping [start_ms, end_ms) of the output timeline (None: from 0 / to the
    end), with the cues' own times (a cue spanning a fragment boundary is in both fragments, as in WebVTT)."""
    paragraphs = [
        f'<p begin="{clock_time(start)}" end="{clock_time(end)}">{ttml_content(cue.text)}</p>'
        for cue, start, end in shifted(track, start_ms or 0, end_ms, offset_ms)
    ]
    document = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<tt xmlns="http://www.w3.org/ns/ttml" xmlns:tts="http://www.w3.org/ns/ttml#styling" '
        f'xmlns:ttp="http://www.w3.org/ns/ttml#parameter" ttp:timeBase="media" xml:lang={quoteattr(language)}>'
        f'{_HEAD}<body style="s1" region="r1"><div>{"".join(paragraphs)}</div></body></tt>\n'
    )
    return document.encode("utf-8")
