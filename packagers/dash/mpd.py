"""The DASH MPD (ISO/IEC 23009-1 §5) of a VOD media set, from plain data about it (no muxing).

One static Period. Video: one AdaptationSet per codec family, one Representation per file (its first video track).
Audio: one AdaptationSet per language (the first one with Role "main"), one Representation per distinct audio track
(``packagers.fmp4.renditions``). Every Representation has its own SegmentTemplate (timescale = the track's) with a
SegmentTimeline: S@t/@d are each fragment's real presentation span in that track, from ``MediaSet.segment_times``
(run-length compressed, §5.3.9.6), plus the track's ``presentation_time_offset``, which the fragments
(``Fmp4Muxer(non_negative=True)``) add and @presentationTimeOffset takes away again (§5.3.9.2).

@bandwidth (§5.3.5.2) is the peak over segments of an upper bound of the fragment size (payload + the fMP4
overhead bound) * 8 / the segment's duration, so it is never below the real peak; @minBufferTime is the longest
segment, so that delivering any segment at @bandwidth takes no longer than playing it. @segmentAlignment is true
when the Representations of a set share one segment plan (``MediaSet.plans``: key frames aligned across files).
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from ..captions.files import CaptionRendition
from ..drm.signaling import Protection, dash_content_protection
from ..fmp4 import channel_configuration, codec_string, fragment_size_bound, presentation_time_offset
from ..fmp4.renditions import audio_groups, video_selections
from ..errors import ErrorCode, PackagerError
from ..hls.playlists import STREAMED_VIDEO, language_tag
from ..media_set import MediaSet, Selection
from ..model import Track
from .names import init_segment_name, media_template, text_name

MPD_CONTENT_TYPE = "application/dash+xml"
PROFILE = "urn:mpeg:dash:profile:isoff-live:2011"
AUDIO_CHANNEL_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"
ROLE_SCHEME = "urn:mpeg:dash:role:2011"


def content_type(kind: str) -> str:
    """HTTP Content-Type of a track's init and media segments (RFC 4337, as DASH uses them)."""
    return "video/mp4" if kind == "video" else "audio/mp4"


def xs_duration(seconds: float) -> str:
    """xs:duration with millisecond precision, rounded up (PT12S, PT6.006S)."""
    ms = math.ceil(round(seconds * 1000, 6))
    whole, frac = divmod(ms, 1000)
    return f"PT{whole}.{frac:03d}".rstrip("0").rstrip(".") + "S"


def frame_rate(track: Track) -> str:
    """@frameRate (§5.3.7.2, FrameRateType) from the most common sample duration: 24, 25, 30000/1001..."""
    durations = track.samples.durations
    values, counts = np.unique(durations, return_counts=True)
    delta = int(values[np.argmax(counts)]) if len(values) else 0
    if delta <= 0:
        return ""
    rate = Fraction(track.timescale, delta).limit_denominator(1001)
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


@dataclass(frozen=True, eq=False)
class Representation:
    selection: Selection
    starts: np.ndarray  # S@t of every segment, track timescale (presentation_time_offset included)
    durations: np.ndarray  # S@d
    presentation_time_offset: int
    bandwidth: int

    @property
    def track(self) -> Track:
        return self.selection.tracks[0]


def representation(media_set: MediaSet, selection: Selection, protection: Protection | None = None) -> Representation:
    """Timeline and peak bandwidth of a one-track selection. Trailing segments without a sample of this track (a
    track that ends earlier than the others) are left out of its timeline; they would have no duration."""
    track = selection.tracks[0]
    if track.kind == "video" and track.codec.codec not in STREAMED_VIDEO:
        raise PackagerError(ErrorCode.UNSUPPORTED, f"representation: DASH here carries H.264 and HEVC video, not "
                            f"{track.codec.codec} ({track.codec.codec_string}) of {track.source or 'the media'}")
    starts, durations = media_set.segment_times(selection, track)
    _, decode_durations = media_set.segment_times(selection, track, decode=True)
    counts = media_set.segment_sample_counts(selection)[0]
    sizes = media_set.segment_sizes(selection)[0]
    keep = int(np.flatnonzero(counts)[-1]) + 1 if counts.any() else 0
    starts, durations, decode_durations = starts[:keep], durations[:keep], decode_durations[:keep]
    counts, sizes = counts[:keep], sizes[:keep]
    span = np.maximum(np.minimum(durations, decode_durations), 1)  # the shorter span gives the higher rate
    aux = protection.aux_bound(track) if protection is not None else 0
    rate = fragment_size_bound(sizes, counts, 1, aux).astype(np.float64) * 8 * track.timescale / span  # no overflow
    peak = int(math.ceil(float(rate[counts > 0].max()))) if keep else 0
    pto = presentation_time_offset(track)
    return Representation(selection, starts + pto, durations, pto, peak)


def text_element(period: ET.Element, index: int, caption: CaptionRendition, media_set: MediaSet,
                 text_format: str) -> None:
    """The text AdaptationSet of one caption file: WebVTT as one file, or "smpte-tt": an ``stpp`` Representation
    whose segments (``init-fN.mp4``, ``fragment-<n>-fN.m4s``, milliseconds) are the media segments' windows."""
    stpp = text_format == "smpte-tt"
    attrs = {"id": str(index), "contentType": "text", "mimeType": "application/mp4" if stpp else "text/vtt"}
    if stpp:
        attrs["codecs"] = "stpp"
    if caption.language:
        attrs["lang"] = caption.language
    adaptation = ET.SubElement(period, "AdaptationSet", attrs)
    ET.SubElement(adaptation, "Role", {"schemeIdUri": ROLE_SCHEME, "value": "subtitle"})
    ET.SubElement(adaptation, "Label").text = caption.name
    rep = ET.SubElement(adaptation, "Representation", {"id": f"text{caption.spec.suffix()}", "bandwidth": "256"})
    if not stpp:
        ET.SubElement(rep, "BaseURL").text = text_name(caption.spec)
        return
    plan = media_set.plans[0]
    bounds = plan.boundaries * 1000 // plan.timescale
    template = ET.SubElement(rep, "SegmentTemplate", {
        "timescale": "1000", "initialization": init_segment_name(caption.spec),
        "media": media_template(caption.spec), "startNumber": "1"})  # fmt: skip
    template.append(segment_timeline(bounds[:-1], np.diff(bounds)))


def segment_timeline(starts: np.ndarray, durations: np.ndarray) -> ET.Element:
    """<SegmentTimeline> with one <S> per run of equal durations (§5.3.9.6); @t on the first S and after a gap."""
    timeline = ET.Element("SegmentTimeline")
    n = len(durations)
    if n == 0:
        return timeline
    gap = np.ones(n, dtype=bool)
    gap[1:] = starts[1:] != starts[:-1] + durations[:-1]
    new = gap.copy()
    new[1:] |= durations[1:] != durations[:-1]
    firsts = np.flatnonzero(new)
    repeats = np.diff(np.append(firsts, n)) - 1
    for i, r in zip(firsts.tolist(), repeats.tolist()):
        attrs = {"t": str(int(starts[i]))} if gap[i] else {}
        attrs["d"] = str(int(durations[i]))
        if r:
            attrs["r"] = str(r)
        ET.SubElement(timeline, "S", attrs)
    return timeline


def _representation_element(parent: ET.Element, rep: Representation) -> None:
    track, spec = rep.track, rep.selection.spec
    attrs = {"id": spec.suffix().lstrip("-"), "bandwidth": str(rep.bandwidth), "codecs": codec_string(track.codec)}
    if track.kind == "video":
        if track.codec.width and track.codec.height:
            attrs.update(width=str(track.codec.width), height=str(track.codec.height))
        rate = frame_rate(track)
        if rate:
            attrs["frameRate"] = rate
    else:
        attrs["audioSamplingRate"] = str(track.codec.sample_rate or track.timescale)
    element = ET.SubElement(parent, "Representation", attrs)
    if track.kind == "audio":
        ET.SubElement(element, "AudioChannelConfiguration",
                      {"schemeIdUri": AUDIO_CHANNEL_SCHEME, "value": str(channel_configuration(track.codec))})
    template = {"timescale": str(track.timescale)}
    if rep.presentation_time_offset:
        template["presentationTimeOffset"] = str(rep.presentation_time_offset)
    template.update(initialization=init_segment_name(spec), media=media_template(spec), startNumber="1")
    ET.SubElement(element, "SegmentTemplate", template).append(segment_timeline(rep.starts, rep.durations))


def build_mpd(media_set: MediaSet, *, base_url: str = "", text: Sequence[CaptionRendition] = (),
              text_format: str = "webvtt", protection: Protection | None = None) -> str:
    """The static MPD of ``media_set``; ``base_url`` (optional) becomes the MPD-level <BaseURL>; ``text``: caption
    files, each a text AdaptationSet: one WebVTT file (its BaseURL, ``sub-fN.vtt``) that players load whole, or with
    ``text_format`` "smpte-tt", TTML in fMP4 (``stpp``) segments on the media's timeline (``text_element``).
    ``protection``: the audio and video AdaptationSets get their ContentProtection descriptors."""
    sets: dict[tuple[str, str], list[Representation]] = {}
    for selection in video_selections(media_set):
        rep = representation(media_set, selection, protection)
        sets.setdefault(("video", selection.tracks[0].codec.codec), []).append(rep)
    for selection in audio_groups(media_set).renditions:
        rep = representation(media_set, selection, protection)
        sets.setdefault(("audio", selection.tracks[0].language), []).append(rep)
    reps = [r for group in sets.values() for r in group]
    longest = max((float((r.durations / r.track.timescale).max()) for r in reps if len(r.durations)), default=0.0)
    duration = max(p.duration_seconds for p in media_set.presentations)
    root = ET.Element("MPD", {
        "xmlns": "urn:mpeg:dash:schema:mpd:2011", "profiles": PROFILE, "type": "static",
        "mediaPresentationDuration": xs_duration(duration), "maxSegmentDuration": xs_duration(longest),
        "minBufferTime": xs_duration(longest),
    })  # fmt: skip
    if base_url:
        ET.SubElement(root, "BaseURL").text = base_url
    period = ET.SubElement(root, "Period", {"id": "0", "start": "PT0S"})
    first_audio = True
    for index, ((kind, key), group) in enumerate(sets.items()):
        attrs = {"id": str(index), "contentType": kind, "mimeType": content_type(kind)}
        if kind == "audio" and key != "und":
            attrs["lang"] = language_tag(key)
        if kind == "video":
            attrs["maxWidth"] = str(max(r.track.codec.width for r in group))
            attrs["maxHeight"] = str(max(r.track.codec.height for r in group))
        aligned = all(media_set.plan(r.selection) is media_set.plan(group[0].selection) for r in group)
        attrs.update(segmentAlignment="true" if aligned else "false", startWithSAP="1")
        adaptation = ET.SubElement(period, "AdaptationSet", attrs)
        if kind == "audio":
            ET.SubElement(adaptation, "Role", {"schemeIdUri": ROLE_SCHEME, "value": "main" if first_audio else
                                               "alternate"})  # fmt: skip
            first_audio = False
        for rep in group:
            _representation_element(adaptation, rep)
        if protection is not None:
            dash_content_protection(adaptation, protection, kind)
    for index, caption in enumerate(text, start=len(sets)):
        text_element(period, index, caption, media_set, text_format)
    ET.indent(root, "  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
