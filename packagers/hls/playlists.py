"""HLS master and media playlists (RFC 8216) for VOD, written from plain data about the media set.

Names follow nginx-vod-module: ``index<suffix>.m3u8`` for media playlists and ``seg-<n><suffix>.ts`` for segments,
n from 1, where <suffix> is the track selection (``-f1-v1-a1``). URIs are relative, so a query string or path token on
the master URL is inherited by everything a player fetches from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..media_set import MediaSet, Selection
from ..model import Track
from ..naming import TrackSpec

# ISO 639-2/T (mdhd) → RFC 5646 primary tag for the languages players show most; others pass through unchanged.
_LANG_639_1 = {
    "eng": "en", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de", "spa": "es", "ita": "it", "por": "pt",
    "nld": "nl", "dut": "nl", "rus": "ru", "jpn": "ja", "zho": "zh", "chi": "zh", "kor": "ko", "ara": "ar",
    "heb": "he", "hin": "hi", "pol": "pl", "swe": "sv", "tur": "tr",
}
_LANG_NAME = {"en": "English", "fr": "Français", "de": "Deutsch", "es": "Español", "it": "Italiano", "pt": "Português"}

TS_PACKET = 188
TS_PAYLOAD = 184


@dataclass(frozen=True)
class VariantFigures:
    peak_bps: int
    average_bps: int


def language_tag(code: str) -> str:
    return _LANG_639_1.get(code, code)


def ts_size_estimate(media_set: MediaSet, selection: Selection) -> np.ndarray:
    """An upper bound of each TS segment's size in bytes, without muxing.

    Per PES: a 19-byte header and up to one extra partly filled 188-byte packet; per video frame a 6-byte AUD and,
    on key frames, the parameter sets; per AAC frame a 7-byte ADTS header; PAT and PMT once per segment. Payloads
    ride in 184 of every 188 bytes.
    """
    sizes = media_set.segment_sizes(selection)
    counts = media_set.segment_sample_counts(selection)
    total = np.full(len(sizes[0]), 2 * TS_PACKET, dtype=np.float64)
    for track, size, count in zip(selection.tracks, sizes, counts):
        if track.kind == "video":
            ranges = media_set.sample_ranges(selection, track)
            keys = np.diff(np.concatenate(([0], np.cumsum(track.samples.keyframe, dtype=np.int64)))[ranges])
            ps = sum(len(p) + 4 for p in track.codec.parameter_sets)
            elementary = size + count * (6 + 19) + keys * ps
            pes = count
        else:
            elementary = size + count * (7 + 19)
            pes = count
        total += elementary * TS_PACKET / TS_PAYLOAD + pes * TS_PACKET
    return total


def variant_figures(media_set: MediaSet, selection: Selection) -> VariantFigures:
    durations = media_set.plan(selection).durations()
    size = ts_size_estimate(media_set, selection)
    rate = size * 8 / np.maximum(durations, 1e-3)
    return VariantFigures(int(math.ceil(rate.max())), int(math.ceil(size.sum() * 8 / max(durations.sum(), 1e-3))))


def _codecs(tracks: tuple[Track, ...]) -> str:
    return ",".join(t.codec.codec_string for t in tracks)


def _video_attrs(track: Track) -> list[str]:
    attrs = []
    if track.codec.width and track.codec.height:
        attrs.append(f"RESOLUTION={track.codec.width}x{track.codec.height}")
    if track.frame_rate:
        attrs.append(f"FRAME-RATE={track.frame_rate:.3f}")
    return attrs


def media_playlist_name(spec: TrackSpec) -> str:
    return f"index{spec.suffix()}.m3u8"


def segment_name(index: int, spec: TrackSpec, extension: str = "ts") -> str:
    """URL file name of 0-based segment ``index``."""
    return f"seg-{index + 1}{spec.suffix()}.{extension}"


def build_master_playlist(media_set: MediaSet) -> str:
    """Every file of the set as a variant; files with several audio tracks get an EXT-X-MEDIA audio group."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    variants = []
    for file_index, presentation in enumerate(media_set.presentations):
        f = file_index + 1 if media_set.is_url_set else None
        audio = presentation.audio_tracks
        video = presentation.video_tracks
        if video and len(audio) > 1:
            group = f"audio{f or ''}"
            audio_peak = 0
            for n, track in enumerate(audio, start=1):
                sel = media_set.resolve(TrackSpec(f, None, n))
                audio_peak = max(audio_peak, variant_figures(media_set, sel).peak_bps)
                lang = language_tag(track.language)
                name = _LANG_NAME.get(lang, lang if lang != "und" else f"Audio {n}")
                default = "YES" if n == 1 else "NO"
                lines.append(
                    f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{group}",LANGUAGE="{lang}",NAME="{name} ({n})",'
                    f'DEFAULT={default},AUTOSELECT=YES,URI="{media_playlist_name(sel.spec)}"'
                )
            sel = media_set.resolve(TrackSpec(f, 1, None))
            fig = variant_figures(media_set, sel)
            audio_avg = max(variant_figures(media_set, media_set.resolve(TrackSpec(f, None, n))).average_bps
                            for n in range(1, len(audio) + 1))
            attrs = [
                f"BANDWIDTH={fig.peak_bps + audio_peak}",
                f"AVERAGE-BANDWIDTH={fig.average_bps + audio_avg}",
                f'CODECS="{_codecs((video[0], audio[0]))}"',
                *_video_attrs(video[0]),
                f'AUDIO="{group}"',
            ]
        else:
            sel = media_set.resolve(TrackSpec(f))
            fig = variant_figures(media_set, sel)
            attrs = [f"BANDWIDTH={fig.peak_bps}", f"AVERAGE-BANDWIDTH={fig.average_bps}", f'CODECS="{_codecs(sel.tracks)}"']
            if video:
                attrs += _video_attrs(video[0])
        variants.append((fig.peak_bps, attrs, media_playlist_name(sel.spec)))
    # Highest quality first is not required; hls.js and Safari pick by BANDWIDTH. Keep url-set order (operator's).
    for _, attrs, uri in variants:
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(uri)
    return "\n".join(lines) + "\n"


def build_media_playlist(media_set: MediaSet, selection: Selection, extension: str = "ts") -> str:
    """VOD media playlist: every segment with its real duration (RFC 8216 §4.3.2.1), then ENDLIST."""
    durations = media_set.plan(selection).durations()
    target = max(1, int(math.ceil(float(durations.max())))) if len(durations) else 1
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:1",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    for index, d in enumerate(durations.tolist()):
        lines.append(f"#EXTINF:{d:.3f},")
        lines.append(segment_name(index, selection.spec, extension))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
