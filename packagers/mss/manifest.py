"""Microsoft Smooth Streaming: the client manifest and the fragment lookup (MS-SSTR §2.2.2, §2.2.4).

One StreamIndex for video (a QualityLevel per file of a url set: their chunks must coincide, so the files' key frames
must align) and one per distinct audio track (``audio``, ``audio_fra``...). Each StreamIndex carries its own
TimeScale, the track's, so fragments keep the source's exact times (MS-SSTR §2.2.2.3 allows it; dash.js honours
it). Chunk ``t`` is the fragment's decode start, the same value as its tfxd ``fragment_absolute_time`` and tfdt; the
presentation times inside are exactly those of every other protocol (see packagers.fmp4.fragment).

Fragments are named by stream, bitrate and start time (``packagers.mss.names``), so ``locate_fragment`` maps a request back to (selection, segment index) and answers NOT_FOUND for any other value.
"""
from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..captions.files import CaptionRendition
from ..drm.keys import PLAYREADY
from ..drm.signaling import Protection, playready_header
from ..errors import ErrorCode, PackagerError, not_found
from ..fmp4.renditions import audio_fingerprint, audio_groups, video_selections
from ..media_set import MediaSet, Selection
from ..model import Track
from ..naming import TrackSpec
from ..selection import ALL, Listing, Narrowing, TrackMask
from .names import url_template

MANIFEST_CONTENT_TYPE = "text/xml"  # what IIS Smooth Streaming and nginx-vod-module send
MANIFEST_TIMESCALE = 10_000_000  # MS-SSTR default: 100 ns ticks
_FOURCC = {"h264": "H264", "aac": "AACL"}
TEXT_BITRATE = 1000  # the one QualityLevel of a caption stream: its name in fragment URLs


@dataclass(frozen=True, eq=False)
class SmoothStream:
    """A StreamIndex: its quality levels (bitrate → selection) share one chunk list."""

    name: str
    kind: str  # video | audio
    timescale: int
    levels: tuple[tuple[int, Selection], ...]
    starts: np.ndarray  # chunk t, int64, stream timescale
    durations: np.ndarray  # chunk d

    def url(self) -> str:
        return url_template(self.name)


def _chunks(media_set: MediaSet, selection: Selection) -> tuple[np.ndarray, np.ndarray]:
    """Decode-time chunk list of a one-track selection in the source's own time base (raw dts, never negative)."""
    track = selection.tracks[0]
    starts, durations = media_set.segment_times(selection, track, decode=True)
    return starts + track.edit_offset, durations


def _unique_bitrates(tracks: list[Track]) -> list[int]:
    """Bitrates as QualityLevel names: the URL names a level by bitrate, so equal ones get nudged apart by 1 bps."""
    out: list[int] = []
    for t in tracks:
        b = max(1, t.average_bitrate)
        while b in out:
            b += 1
        out.append(b)
    return out


def smooth_streams(media_set: MediaSet) -> tuple[SmoothStream, ...]:
    """The Smooth streams a manifest of this media set lists, computed once per set: its listed tracks (the first
    video of each file unless the URL names video tracks, the audio renditions, fewer with a manifest name's
    selectors such as ``manifest-a2``), under the names and bitrates ``stream_catalog`` gives them."""
    return media_set.derived("mss.streams", lambda: _listed_streams(media_set))


def stream_catalog(media_set: MediaSet) -> tuple[SmoothStream, ...]:
    """Every stream and level the files under this path can serve (every video track too): what fragment URLs
    name, so that a fragment has the same URL whichever manifest listed it."""
    return media_set.derived("mss.catalog", lambda: _smooth_streams(MediaSet(
        media_set.planned, media_set.segment_duration_ms, media_set.is_url_set, media_set.limits,
        clip=media_set.clip, narrowing=Narrowing(listing=Listing(tracks=TrackMask(video=ALL))))))


def _listed_streams(media_set: MediaSet) -> tuple[SmoothStream, ...]:
    # a video level is its file's and tkhd id's track (the catalog's set numbers its own copies of the tracks); an
    # audio stream, any listed track of that rendition (an ABR ladder's files carry the same audio: one stream)
    listed = {(t.source, t.track_id) for p in media_set.presentations for t in media_set.listed_videos(p)}
    listed |= {audio_fingerprint(t) for p in media_set.presentations for t in p.audio_tracks}
    streams = []
    for stream in stream_catalog(media_set):
        levels = tuple((b, sel) for b, sel in stream.levels if _key(sel.tracks[0]) in listed)
        if levels:
            streams.append(dataclasses.replace(stream, levels=levels))
    if not streams:
        raise PackagerError(ErrorCode.NO_STREAMS, "smooth_streams: the manifest's selectors leave no stream")
    return tuple(streams)


def _key(track: Track) -> tuple:
    return (track.source, track.track_id) if track.kind == "video" else audio_fingerprint(track)


def _smooth_streams(media_set: MediaSet) -> tuple[SmoothStream, ...]:
    streams = []
    videos = video_selections(media_set)
    if videos:
        tracks = [s.tracks[0] for s in videos]
        for t in tracks:
            if t.codec.codec not in _FOURCC:
                raise PackagerError(ErrorCode.UNSUPPORTED,
                                    f"smooth_streams: Smooth Streaming carries H.264 and AAC, not {t.codec.codec}")
        chunk_lists = [_chunks(media_set, s) for s in videos]
        same = all(t.timescale == tracks[0].timescale for t in tracks) and all(
            np.array_equal(c[0], chunk_lists[0][0]) and np.array_equal(c[1], chunk_lists[0][1]) for c in chunk_lists)
        if not same:
            raise PackagerError(ErrorCode.UNSUPPORTED, "smooth_streams: the renditions' fragments do not line up "
                                "(key frames or timescales differ), which one Smooth video stream cannot express")
        levels = tuple(zip(_unique_bitrates(tracks), videos))
        streams.append(SmoothStream("video", "video", tracks[0].timescale, levels, *chunk_lists[0]))
    names: set[str] = set()
    for selection in audio_groups(media_set).renditions:
        track = selection.tracks[0]
        if track.codec.codec != "aac":
            raise PackagerError(ErrorCode.UNSUPPORTED, f"smooth_streams: audio codec {track.codec.codec} not supported")
        name = "audio" if not names else f"audio_{track.language}"
        while name in names:
            name += "_"
        names.add(name)
        streams.append(SmoothStream(name, "audio", track.timescale, ((_unique_bitrates([track])[0], selection),),
                                    *_chunks(media_set, selection)))
    if not streams:
        raise PackagerError(ErrorCode.NO_STREAMS, "smooth_streams: nothing to stream")
    for stream in streams:  # shared by every request for the set: read-only
        stream.starts.flags.writeable = stream.durations.flags.writeable = False
    return tuple(streams)


def locate_fragment(media_set: MediaSet, stream: str, bitrate: int, start: int) -> tuple[Selection, int]:
    """(selection, 0-based segment index) of ``QualityLevels(bitrate)/Fragments(stream=start)``."""
    for s in stream_catalog(media_set):
        if s.name != stream:
            continue
        selection = next((sel for b, sel in s.levels if b == bitrate), None)
        if selection is None:
            raise not_found(f"locate_fragment: stream {stream} has no quality level of bitrate {bitrate}")
        index = int(np.searchsorted(s.starts, start))
        if index >= len(s.starts) or int(s.starts[index]) != start:
            raise not_found(f"locate_fragment: no {stream} fragment starts at {start}")
        return selection, index
    raise not_found(f"locate_fragment: no stream named {stream}")


def _hex(data: bytes) -> str:
    return data.hex().upper()


def _quality_level(index: int, bitrate: int, track: Track) -> ET.Element:
    c = track.codec
    attrs = {"Index": str(index), "Bitrate": str(bitrate), "FourCC": _FOURCC[c.codec]}
    if track.kind == "video":
        attrs["MaxWidth"], attrs["MaxHeight"] = str(c.width), str(c.height)
        # Annex-B parameter sets (MS-SSTR §2.2.2.5: CodecPrivateData for H264)
        attrs["CodecPrivateData"] = "".join("00000001" + _hex(ps) for ps in c.parameter_sets)
    else:
        attrs.update(SamplingRate=str(c.sample_rate), Channels=str(c.channels), BitsPerSample="16",
                     PacketSize=str(4 * c.channels), AudioTag="255", CodecPrivateData=_hex(c.extradata))
    return ET.Element("QualityLevel", attrs)


def text_stream_name(spec: TrackSpec) -> str:
    """The StreamIndex Name of a caption file (``text_f3``): fragment URLs name it."""
    return f"text_f{spec.file}"


def text_chunks(media_set: MediaSet) -> np.ndarray:
    """Chunk starts (and the end) of caption streams in the manifest timescale: the media segments' windows, ms."""
    plan = media_set.plans[0]
    return plan.boundaries * 1000 // plan.timescale * (MANIFEST_TIMESCALE // 1000)


def _text_stream(root: ET.Element, caption: CaptionRendition, bounds: np.ndarray) -> None:
    name = text_stream_name(caption.spec)
    index = ET.SubElement(root, "StreamIndex", {
        "Type": "text", "Name": name, "Subtype": "CAPT", "Chunks": str(len(bounds) - 1), "QualityLevels": "1",
        "Url": url_template(name), "TimeScale": str(MANIFEST_TIMESCALE), "Language": caption.language or "und"})
    ET.SubElement(index, "QualityLevel", {"Index": "0", "Bitrate": str(TEXT_BITRATE), "FourCC": "TTML",
                                          "CodecPrivateData": ""})
    for k, (t, d) in enumerate(zip(bounds[:-1].tolist(), np.diff(bounds).tolist())):
        ET.SubElement(index, "c", {"t": str(t), "d": str(d)} if k == 0 else {"d": str(d)})


def build_smooth_manifest(media_set: MediaSet, text: Sequence[CaptionRendition] = (),
                          protection: Protection | None = None) -> str:
    """The client manifest; ``text``: caption files, each a text StreamIndex of TTML fragments (FourCC TTML) on the
    media segments' windows; ``protection`` with a PlayReady key: its ProtectionHeader (MS-SSTR §2.2.2.2)."""
    root = ET.Element("SmoothStreamingMedia", {
        "MajorVersion": "2", "MinorVersion": "2", "TimeScale": str(MANIFEST_TIMESCALE),
        "Duration": str(round(max(p.duration_seconds for p in media_set.presentations) * MANIFEST_TIMESCALE)),
    })
    header = playready_header(protection, "video") if protection is not None else None
    if header is not None:
        element = ET.SubElement(ET.SubElement(root, "Protection"), "ProtectionHeader", {"SystemID": str(PLAYREADY)})
        element.text = header
    for s in smooth_streams(media_set):
        attrs = {"Type": s.kind, "Name": s.name, "Chunks": str(len(s.starts)), "QualityLevels": str(len(s.levels)),
                 "Url": s.url(), "TimeScale": str(s.timescale)}
        tracks = [sel.tracks[0] for _, sel in s.levels]
        if s.kind == "video":
            width, height = max(t.codec.width for t in tracks), max(t.codec.height for t in tracks)
            attrs.update(MaxWidth=str(width), MaxHeight=str(height), DisplayWidth=str(width), DisplayHeight=str(height))
        else:
            attrs["Language"] = tracks[0].language
        index = ET.SubElement(root, "StreamIndex", attrs)
        for i, (bitrate, sel) in enumerate(s.levels):
            index.append(_quality_level(i, bitrate, sel.tracks[0]))
        for k, (t, d) in enumerate(zip(s.starts.tolist(), s.durations.tolist())):
            # the first chunk's start is always written; later ones follow from the durations
            ET.SubElement(index, "c", {"t": str(t), "d": str(d)} if k == 0 else {"d": str(d)})
    for caption in text:
        _text_stream(root, caption, text_chunks(media_set))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
