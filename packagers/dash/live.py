"""The dynamic MPD of a live stream (ISO/IEC 23009-1 §5.4, DASH-IF IOP v4.3 §4), from plain data.

Layout. One Period per timeline of the stream (a publish, or a codec change inside one); Period@start is its offset
from MPD@availabilityStartTime, and its media times start at 0, so no @presentationTimeOffset is needed. Each Period
has a video and/or an audio AdaptationSet with one Representation (video: also one per rendition of a transcoded
ladder, each in the files of its own stream) whose SegmentTemplate (@timescale = the track's,
``$Number$`` media names, @startNumber = the first listed segment) carries a SegmentTimeline of the segments in the
window: S@t is each segment's earliest presentation time, S@d its span (§5.3.9.6), with an explicit @t after a gap.

Live attributes (§5.3.1.2): @publishTime (when this MPD was written), @minimumUpdatePeriod (a segment target: a
player reloads about once per new segment), @timeShiftBufferDepth (the window), @suggestedPresentationDelay,
@maxSegmentDuration, @minBufferTime. A `<UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014">` points at the
gateway's clock, so players compute the live edge with the server's time, not their own (IOP §4.7).

Low latency (DASH-IF "Low-latency Modes for DASH", v1.0 §9.X.4): the segment in progress is listed last with the
duration expected of it, and SegmentTemplate@availabilityTimeOffset (segment − chunk) with
@availabilityTimeComplete="false" tells players it can be requested after its first CMAF chunk and arrives chunk by
chunk; a ServiceDescription gives the target latency and the playback-rate range for catching up, and the profile
``http://www.dashif.org/guidelines/low-latency-live-v5`` is added. dash.js switches to its low-latency mode on these.

End of stream (IOP §4.4.3.1): the MPD stays dynamic, @minimumUpdatePeriod goes and @mediaPresentationDuration says
where the presentation ends; players then play to the end instead of waiting for segments that never come.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

import numpy as np

from .mpd import AUDIO_CHANNEL_SCHEME, PROFILE, content_type, segment_timeline, xs_duration

UTC_TIMING_SCHEME = "urn:mpeg:dash:utc:http-iso:2014"
LOW_LATENCY_PROFILE = "http://www.dashif.org/guidelines/low-latency-live-v5"


@dataclass(frozen=True)
class LiveRepresentation:
    id: str                     # stable across periods ("v", "a"), so players keep their choice
    kind: str                   # "video" | "audio"
    codecs: str
    bandwidth: int
    timescale: int
    initialization: str
    media: str                  # template with $Number$
    start_number: int
    starts: Sequence[int]       # S@t of each listed segment, ticks of period media time
    durations: Sequence[int]    # S@d
    width: int = 0
    height: int = 0
    frame_rate: str = ""
    sample_rate: int = 0
    channel_configuration: int = 0
    availability_time_offset: float | None = None   # seconds; set: low latency (chunked, not complete when listed)


@dataclass(frozen=True)
class DashLowLatency:
    update_period_ms: int       # @minimumUpdatePeriod while live
    target_latency_ms: int      # ServiceDescription/Latency@target
    min_rate: float = 0.96      # ServiceDescription/PlaybackRate: how fast a player may catch up or fall back
    max_rate: float = 1.04


@dataclass(frozen=True)
class LivePeriod:
    id: str
    start_ms: int               # from availabilityStartTime
    representations: tuple[LiveRepresentation, ...]


def xs_datetime(posix: float) -> str:
    when = datetime.fromtimestamp(posix, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def build_live_mpd(periods: Sequence[LivePeriod], *, availability_start: float, publish_time: float,
                   minimum_update_period_ms: int, time_shift_buffer_ms: int, suggested_delay_ms: int,
                   max_segment_ms: int, min_buffer_ms: int, ended_ms: int | None = None,
                   utc_timing: str = "/time", low_latency: DashLowLatency | None = None) -> str:
    """``ended_ms``: None while live, else the end of the presentation (ms after availabilityStartTime)."""
    if low_latency is not None and ended_ms is None:
        minimum_update_period_ms = low_latency.update_period_ms
    attrs = {
        "xmlns": "urn:mpeg:dash:schema:mpd:2011", "type": "dynamic",
        "profiles": PROFILE if low_latency is None else f"{PROFILE},{LOW_LATENCY_PROFILE}",
        "availabilityStartTime": xs_datetime(availability_start), "publishTime": xs_datetime(publish_time),
    }
    if ended_ms is None:
        attrs["minimumUpdatePeriod"] = xs_duration(minimum_update_period_ms / 1000)
    else:
        attrs["mediaPresentationDuration"] = xs_duration(ended_ms / 1000)
    attrs.update({
        "timeShiftBufferDepth": xs_duration(time_shift_buffer_ms / 1000),
        "suggestedPresentationDelay": xs_duration(suggested_delay_ms / 1000),
        "maxSegmentDuration": xs_duration(max_segment_ms / 1000),
        "minBufferTime": xs_duration(min_buffer_ms / 1000),
    })
    root = ET.Element("MPD", attrs)
    if low_latency is not None:     # (before the Periods: ISO/IEC 23009-1 MPDtype order)
        service = ET.SubElement(root, "ServiceDescription", {"id": "0"})
        target = low_latency.target_latency_ms
        ET.SubElement(service, "Latency", {"referenceId": "0", "target": str(target), "min": str(target // 2),
                                           "max": str(3 * target)})
        ET.SubElement(service, "PlaybackRate", {"min": f"{low_latency.min_rate:g}",
                                                "max": f"{low_latency.max_rate:g}"})
    for period in periods:
        element = ET.SubElement(root, "Period", {"id": period.id, "start": xs_duration(period.start_ms / 1000)})
        kinds = list(dict.fromkeys(rep.kind for rep in period.representations))
        for index, kind in enumerate(kinds):
            _adaptation_set(element, index, [rep for rep in period.representations if rep.kind == kind])
    ET.SubElement(root, "UTCTiming", {"schemeIdUri": UTC_TIMING_SCHEME, "value": utc_timing})
    ET.indent(root, "  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _adaptation_set(period: ET.Element, index: int, reps: list[LiveRepresentation]) -> None:
    """One AdaptationSet of ``reps`` (one kind): a stream's own track, and for video the renditions a ladder made of
    it, each Representation with its own SegmentTemplate (files of another stream's directory)."""
    kind = reps[0].kind
    attrs = {"id": str(index), "contentType": kind, "mimeType": content_type(kind),
             "segmentAlignment": "true", "startWithSAP": "1"}
    if kind == "video" and len(reps) > 1 and all(r.width and r.height for r in reps):
        attrs.update(maxWidth=str(max(r.width for r in reps)), maxHeight=str(max(r.height for r in reps)))
    adaptation = ET.SubElement(period, "AdaptationSet", attrs)
    for rep in sorted(reps, key=lambda r: -r.bandwidth) if len(reps) > 1 else reps:
        _representation(adaptation, rep)


def _representation(adaptation: ET.Element, rep: LiveRepresentation) -> None:
    rep_attrs = {"id": rep.id, "bandwidth": str(max(1, rep.bandwidth)), "codecs": rep.codecs}
    if rep.kind == "video":
        if rep.width and rep.height:
            rep_attrs.update(width=str(rep.width), height=str(rep.height))
        if rep.frame_rate:
            rep_attrs["frameRate"] = rep.frame_rate
    else:
        rep_attrs["audioSamplingRate"] = str(rep.sample_rate or rep.timescale)
    element = ET.SubElement(adaptation, "Representation", rep_attrs)
    if rep.kind == "audio":
        ET.SubElement(element, "AudioChannelConfiguration",
                      {"schemeIdUri": AUDIO_CHANNEL_SCHEME, "value": str(rep.channel_configuration or 2)})
    template_attrs = {"timescale": str(rep.timescale), "initialization": rep.initialization, "media": rep.media,
                      "startNumber": str(rep.start_number)}
    if rep.availability_time_offset is not None:
        template_attrs.update(availabilityTimeOffset=f"{rep.availability_time_offset:.3f}",
                              availabilityTimeComplete="false")
    template = ET.SubElement(element, "SegmentTemplate", template_attrs)
    template.append(segment_timeline(np.asarray(rep.starts, dtype=np.int64), np.asarray(rep.durations, dtype=np.int64)))
