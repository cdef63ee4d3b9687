"""The F4M manifest (Adobe Flash Media Manifest File Format Specification 1.0).

One ``<media>`` per rendition: each file of a url set (or the single file) with its first video and first audio
track muxed, audio-only files as they are; further audio tracks of the first file that has several become alternate
audio ``<media type="audio" alternate="true" lang=...>`` (OSMF late-binding audio), as nginx-vod-module does. Each
``<media>`` has its own ``<bootstrapInfo profile="named">`` with the ``abst`` box inline (base64), and an AMF0
``onMetaData`` in ``<metadata>`` (base64). ``url`` is ``frag<suffix>-``: a player appends ``Seg1-Frag<n>`` (``packagers.hds.names``).

Times are milliseconds here and only here become seconds (``<duration>``, onMetaData ``duration``).
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from pathlib import PurePosixPath
from xml.sax.saxutils import escape, quoteattr

from ..codecs import amf0, flv
from ..media_set import MediaSet, Selection
from ..naming import TrackSpec
from .bootstrap import build_bootstrap
from .fragment import check_hds_codecs, fragment_sizes
from .names import fragment_url

F4M_NAMESPACE = "http://ns.adobe.com/f4m/1.0"
MANIFEST_CONTENT_TYPE = "application/f4m+xml"
FRAGMENT_CONTENT_TYPE = "video/f4f"


@dataclass(frozen=True)
class MediaEntry:
    """One ``<media>`` of the manifest."""

    selection: Selection
    alternate_audio: bool = False


def media_entries(media_set: MediaSet) -> list[MediaEntry]:
    """The renditions the manifest lists, in url-set order, then the alternate audio tracks."""
    out = []
    # tracks by their number in the whole file: a URL's selection may have left some out (packagers.selection)
    for file_index, presentation in enumerate(media_set.presentations):
        f = file_index + 1 if media_set.is_url_set else None
        audio = presentation.numbered("audio")
        listed = media_set.listed_videos(presentation)
        videos = [n for n, t in presentation.numbered("video") if t in listed]
        out += [MediaEntry(media_set.resolve(TrackSpec(f, n, audio[0][0] if audio else None))) for n in videos]
        if not videos and audio:
            out.append(MediaEntry(media_set.resolve(TrackSpec(f))))
    for file_index, presentation in enumerate(media_set.presentations):
        if len(presentation.audio_tracks) > 1:
            f = file_index + 1 if media_set.is_url_set else None
            out += [MediaEntry(media_set.resolve(TrackSpec(f, None, n)), True)
                    for n, _ in presentation.numbered("audio")[1:]]  # fmt: skip
            break
    return out


def _seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


def bitrate_kbps(media_set: MediaSet, selection: Selection) -> int:
    """Average bitrate of the fragments a player downloads (FLV and box overhead included), kbit/s rounded up."""
    seconds = float(media_set.plan(selection).durations().sum())
    total = int(fragment_sizes(media_set, selection).sum())
    return max(1, math.ceil(total * 8 / max(seconds, 1e-3) / 1000))


def on_metadata(media_set: MediaSet, selection: Selection) -> bytes:
    """The AMF0 ``onMetaData`` script data of a rendition (FLV spec E.5; fields as nginx-vod-module writes them)."""
    tracks = selection.tracks
    video = next((t for t in tracks if t.kind == "video"), None)
    audio = next((t for t in tracks if t.kind == "audio"), None)
    # an ECMA array, as FLV files and nginx-vod-module carry onMetaData (a plain dict would be an anonymous object)
    meta = amf0.EcmaArray(duration=max(t.duration_seconds for t in tracks))
    if video is not None:
        meta.update(width=video.codec.width, height=video.codec.height, videodatarate=video.average_bitrate / 1000,
                    framerate=video.frame_rate, videocodecid=flv.CODEC_ID_AVC)  # fmt: skip
    if audio is not None:
        meta.update(audiodatarate=audio.average_bitrate / 1000, audiosamplerate=audio.codec.sample_rate,
                    audiosamplesize=16, stereo=audio.codec.channels > 1, audiochannels=audio.codec.channels,
                    audiocodecid=flv.SOUND_FORMAT_AAC)  # fmt: skip
    meta["filesize"] = int(fragment_sizes(media_set, selection).sum())
    return amf0.script_data("onMetaData", meta)


def _manifest_id(media_set: MediaSet) -> str:
    source = media_set.presentations[0].source
    return PurePosixPath(source.replace("\\", "/")).stem or "manifest"


def build_f4m(media_set: MediaSet, manifest_id: str | None = None) -> str:
    """The F4M manifest of a VOD media set (see the module docstring); UNSUPPORTED unless H.264/AAC."""
    for p in media_set.presentations:
        check_hds_codecs(p.tracks, "build_f4m")
    duration_ms = round(max(p.duration_seconds for p in media_set.presentations) * 1000)  # listed files only
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<manifest xmlns="{F4M_NAMESPACE}">',
        f"  <id>{escape(manifest_id or _manifest_id(media_set))}</id>",
        "  <streamType>recorded</streamType>",
        f"  <duration>{_seconds(duration_ms)}</duration>",
    ]
    entries = media_entries(media_set)
    for k, entry in enumerate(entries):
        abst = base64.b64encode(build_bootstrap(media_set, entry.selection)).decode("ascii")
        lines.append(f'  <bootstrapInfo profile="named" id="bootstrap{k}">{abst}</bootstrapInfo>')
    for k, entry in enumerate(entries):
        sel = entry.selection
        spec = sel.spec
        attrs = [f"streamId={quoteattr(spec.suffix().lstrip('-'))}", f"url={quoteattr(fragment_url(spec))}",
                 f'bitrate="{bitrate_kbps(media_set, sel)}"']  # fmt: skip
        video = next((t for t in sel.tracks if t.kind == "video"), None)
        if video is not None:
            attrs += [f'width="{video.codec.width}"', f'height="{video.codec.height}"']
        if entry.alternate_audio:
            lang = sel.tracks[0].language
            attrs += ['type="audio"', 'alternate="true"', f"lang={quoteattr(lang)}",
                      f"label={quoteattr(lang if lang != 'und' else f'Audio {spec.audio}')}"]  # fmt: skip
        attrs.append(f'bootstrapInfoId="bootstrap{k}"')
        metadata = base64.b64encode(on_metadata(media_set, sel)).decode("ascii")
        lines += [f"  <media {' '.join(attrs)}>", f"    <metadata>{metadata}</metadata>", "  </media>"]
    lines.append("</manifest>")
    return "\n".join(lines) + "\n"
