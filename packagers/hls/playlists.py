"""HLS master and media playlists (RFC 8216) for VOD, written from plain data about the media set.

Names follow nginx-vod-module (``packagers.hls.names``): ``index<suffix>.m3u8`` for media playlists and
``seg-<n><suffix>.ts`` for segments, n from 1, where <suffix> is the track selection (``-f1-v1-a1``). URIs are relative, so a query string or path token on
the master URL is inherited by everything a player fetches from it.

Two containers. ``ts`` (MPEG-TS, the default): audio rides in the video variants unless a file has several audio
tracks. ``fmp4`` (RFC 8216 §3.3): every playlist carries one track, ``EXT-X-MAP:URI="init<suffix>.mp4"`` names its
init segment and segments are ``seg-<n><suffix>.m4s``; audio is always demuxed into EXT-X-MEDIA groups (video-only
variants + audio renditions, as Apple's HLS authoring specification recommends and hls.js handles best), with the
renditions of ``packagers.fmp4.renditions``. ``choose_container`` resolves the 'auto' setting.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np

from ..drm.signaling import Protection, sample_aes_iv
from ..errors import ErrorCode, PackagerError, bad_request
from ..fmp4.fragment import AUX_OVERHEAD, fragment_size_bound
from ..fmp4.init import codec_string
from ..fmp4.renditions import audio_groups, video_selections
from ..media_set import MediaSet, Selection
from ..model import Track
from ..naming import TrackSpec
from .iframes import iframe_stream_inf
from .keys import key_lines
from .names import init_segment_name, media_playlist_name, segment_name

Container = Literal["ts", "fmp4"]
STREAMED_VIDEO = ("h264", "hevc")  # what the TS and fMP4 muxers carry (AV1 files: thumbnails only, for now)
MAX_REORDER = 64  # samples before a track's earliest presented one, at most (B-frame pyramids reorder a few)
FMP4_VERSION = 7  # RFC 8216 §7 asks >= 6 for EXT-X-MAP; 7 is the version that brought fMP4 (Apple's tools write it)

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


def language_name(code: str) -> str:
    """What a player lists for an ISO 639-2 code: the language's own name where we know it, else its tag."""
    tag = language_tag(code)
    return _LANG_NAME.get(tag, tag)


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


def fmp4_size_estimate(media_set: MediaSet, selection: Selection, protection: Protection | None = None) -> np.ndarray:
    """An upper bound of each fMP4 segment's size in bytes: payload plus ``fragment_size_bound``'s overhead, and the
    encryption info ``protection`` adds to each track."""
    counts = media_set.segment_sample_counts(selection)
    bound = fragment_size_bound(sum(media_set.segment_sizes(selection)), sum(counts), len(selection.tracks))
    for track, count in zip(selection.tracks, counts):
        aux = protection.aux_bound(track) if protection is not None else 0
        bound = bound + (AUX_OVERHEAD + aux * count if aux else 0)
    return bound.astype(np.float64)


def variant_figures(media_set: MediaSet, selection: Selection, container: Container = "ts",
                    protection: Protection | None = None) -> VariantFigures:
    durations = media_set.plan(selection).durations()
    size = fmp4_size_estimate(media_set, selection, protection) if container == "fmp4" else \
        ts_size_estimate(media_set, selection)
    rate = size * 8 / np.maximum(durations, 1e-3)
    return VariantFigures(int(math.ceil(rate.max())), int(math.ceil(size.sum() * 8 / max(durations.sum(), 1e-3))))


def _codecs(tracks: tuple[Track, ...]) -> str:
    return ",".join(t.codec.codec_string for t in tracks)


def choose_container(media_set: MediaSet, setting: str) -> Container:
    """The HLS container for a delivery setting: 'ts' (or 'mpegts'), 'fmp4', or 'auto' = fmp4 when any video track
    is HEVC (Apple plays HEVC only from fMP4), else ts."""
    for p in media_set.planned:  # what neither container carries here is refused before a playlist lists it
        for t in p.video_tracks:
            if t.codec.codec not in STREAMED_VIDEO:
                raise PackagerError(ErrorCode.UNSUPPORTED, f"choose_container: HLS carries H.264 and HEVC video, "
                                    f"not {t.codec.codec} ({t.codec.codec_string}) of {p.source or 'the media'}")
    if setting in ("ts", "mpegts"):
        return "ts"
    if setting == "fmp4":
        return "fmp4"
    if setting != "auto":
        raise bad_request(f"choose_container: unknown HLS container setting '{setting}'")
    hevc = any(t.codec.codec == "hevc" for p in media_set.planned for t in p.video_tracks)  # as for its segments
    return "fmp4" if hevc else "ts"


def _video_attrs(track: Track) -> list[str]:
    attrs = []
    if track.codec.width and track.codec.height:
        attrs.append(f"RESOLUTION={track.codec.width}x{track.codec.height}")
    if track.frame_rate:
        attrs.append(f"FRAME-RATE={track.frame_rate:.3f}")
    return attrs


def build_master_playlist(media_set: MediaSet, container: Container = "ts",
                          iframe_files: frozenset[int] = frozenset(), protection: Protection | None = None) -> str:
    """Every file of the set as a variant (each listed video track of it, ``MediaSet.listed_videos``); with TS,
    files with several audio tracks get an EXT-X-MEDIA audio group,
    and the video variants of ``iframe_files`` (0-based file indexes) an I-frame playlist (``packagers.hls.iframes``);
    with fMP4, see ``_fmp4_master_playlist`` (whose BANDWIDTH counts ``protection``'s encryption info)."""
    if container == "fmp4":
        return _fmp4_master_playlist(media_set, protection)
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    variants, iframes = [], []
    for file_index, presentation in enumerate(media_set.presentations):
        f = file_index + 1 if media_set.is_url_set else None
        # tracks by their number in the whole file: a URL's selection may have left some out (packagers.selection)
        audio = presentation.numbered("audio")
        listed = media_set.listed_videos(presentation)
        video = [(n, t) for n, t in presentation.numbered("video") if t in listed]
        if video and len(audio) > 1:
            group = f"audio{f or ''}"
            audio_peak = audio_avg = 0
            for k, (n, track) in enumerate(audio, start=1):
                sel = media_set.resolve(TrackSpec(f, None, n))
                audio_fig = variant_figures(media_set, sel)
                audio_peak, audio_avg = max(audio_peak, audio_fig.peak_bps), max(audio_avg, audio_fig.average_bps)
                lang = language_tag(track.language)
                name = _LANG_NAME.get(lang, lang if lang != "und" else f"Audio {n}")
                default = "YES" if k == 1 else "NO"
                lines.append(
                    f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{group}",LANGUAGE="{lang}",NAME="{name} ({n})",'
                    f'DEFAULT={default},AUTOSELECT=YES,URI="{media_playlist_name(sel.spec)}"'
                )
            for n, track in video:
                sel = media_set.resolve(TrackSpec(f, n, None))
                fig = variant_figures(media_set, sel)
                attrs = [
                    f"BANDWIDTH={fig.peak_bps + audio_peak}",
                    f"AVERAGE-BANDWIDTH={fig.average_bps + audio_avg}",
                    f'CODECS="{_codecs((track, audio[0][1]))}"',
                    *_video_attrs(track),
                    f'AUDIO="{group}"',
                ]
                variants.append((fig.peak_bps, attrs, media_playlist_name(sel.spec)))
                if file_index in iframe_files:
                    iframes.append(iframe_stream_inf(sel))
        elif presentation.tracks:
            for n, track in video or [(None, None)]:
                spec = TrackSpec(f) if n is None else TrackSpec(f, n, audio[0][0] if audio else None)
                sel = media_set.resolve(spec)
                fig = variant_figures(media_set, sel)
                attrs = [f"BANDWIDTH={fig.peak_bps}", f"AVERAGE-BANDWIDTH={fig.average_bps}",
                         f'CODECS="{_codecs(sel.tracks)}"']
                if track is not None:
                    attrs += _video_attrs(track)
                variants.append((fig.peak_bps, attrs, media_playlist_name(sel.spec)))
                if track is not None and file_index in iframe_files:
                    iframes.append(iframe_stream_inf(sel))
    # Highest quality first is not required; hls.js and Safari pick by BANDWIDTH. Keep url-set order (operator's).
    for _, attrs, uri in variants:
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(uri)
    lines += iframes
    return "\n".join(lines) + "\n"


def _rendition_name(track: Track, n: int) -> str:
    lang = language_tag(track.language)
    return f"{_LANG_NAME.get(lang, lang if lang != 'und' else f'Audio {n}')} ({n})"


def _fmp4_master_playlist(media_set: MediaSet, protection: Protection | None = None) -> str:
    """Video-only variants (one per file) whose AUDIO group lists that file's distinct audio renditions; variants
    whose files carry the same audio share one group. Audio-only sets: one variant per file, on its first audio
    rendition (with the group when the file has several). BANDWIDTH = video peak + the group's highest peak."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{FMP4_VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    groups = audio_groups(media_set)
    figures = [variant_figures(media_set, sel, "fmp4", protection) for sel in groups.renditions]
    videos: dict[int, list[Selection]] = {}
    for sel in video_selections(media_set):
        videos.setdefault(sel.file_index, []).append(sel)  # several when the URL names video tracks
    files = sorted(videos) if videos else [i for i, m in enumerate(groups.of_file) if m]
    members = list(dict.fromkeys(groups.of_file[i] for i in files if groups.of_file[i]))  # in file order
    group_ids = {key: "audio" if len(members) == 1 else f"audio{k}" for k, key in enumerate(members, 1)}
    for key, group_id in group_ids.items():
        if not videos and len(key) == 1:
            continue  # an audio-only variant with one rendition needs no group
        for n, index in enumerate(key, start=1):
            sel = groups.renditions[index]
            track = sel.tracks[0]
            lines.append(
                f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{group_id}",LANGUAGE="{language_tag(track.language)}",'
                f'NAME="{_rendition_name(track, n)}",DEFAULT={"YES" if n == 1 else "NO"},AUTOSELECT=YES,'
                f'CHANNELS="{track.codec.channels or 2}",URI="{media_playlist_name(sel.spec)}"'
            )
    for i in files:
        key = groups.of_file[i]
        audio_codecs = list(dict.fromkeys(codec_string(groups.renditions[k].tracks[0].codec) for k in key))
        audio_peak = max((figures[k].peak_bps for k in key), default=0)
        audio_avg = max((figures[k].average_bps for k in key), default=0)
        for sel in videos.get(i) or [groups.renditions[key[0]]]:
            if i in videos:
                fig = variant_figures(media_set, sel, "fmp4", protection)
                attrs = [f"BANDWIDTH={fig.peak_bps + audio_peak}", f"AVERAGE-BANDWIDTH={fig.average_bps + audio_avg}",
                         f'CODECS="{",".join([codec_string(sel.tracks[0].codec), *audio_codecs])}"',
                         *_video_attrs(sel.tracks[0])]
            else:
                attrs = [f"BANDWIDTH={audio_peak}", f"AVERAGE-BANDWIDTH={audio_avg}",
                         f'CODECS="{",".join(audio_codecs)}"']
            if key and (i in videos or len(key) > 1):
                attrs.append(f'AUDIO="{group_ids[key]}"')
            lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
            lines.append(media_playlist_name(sel.spec))
    return "\n".join(lines) + "\n"


def clip_start_offset(media_set: MediaSet, selection: Selection) -> float:
    """Seconds from a clip's first decoded sample to its presentation time 0 (clipFrom): the decode-only frames
    before it (the rest of the key frame's GOP). MPEG-TS players place a playlist's start at its earliest timestamp,
    so EXT-X-START:TIME-OFFSET with PRECISE=YES makes them start on the picture at clipFrom. 0 for whole files."""
    if media_set.clip.is_whole:
        return 0.0
    earliest = min((int(t.presentation_dts()[0]) / t.timescale for t in selection.tracks if len(t.samples)),
                   default=0.0)
    return max(0.0, -earliest)


def clip_shift(media_set: MediaSet) -> Fraction:
    """Seconds an HLS fMP4 clip's presentation times move later, the same for every track of the set, so that the
    decode-only frames before clipFrom are at times >= 0: MSE players drop frames before 0, and with them every frame
    up to the next key frame. The playlists' EXT-X-START then names clipFrom. 0 for whole files."""
    if media_set.clip.is_whole:
        return Fraction(0)
    return media_set.derived(("hls", "clip shift"), lambda: max(
        [Fraction(0)] + [Fraction(-int(t.presentation_pts()[:MAX_REORDER].min()), t.timescale)
                         for p in media_set.planned for t in p.tracks if len(t.samples)]))


def build_media_playlist(media_set: MediaSet, selection: Selection, extension: str = "ts",
                         container: Container = "ts", key_uri: str | None = None,
                         protection: Protection | None = None) -> str:
    """VOD media playlist: every segment with its real duration (RFC 8216 §4.3.2.1), then ENDLIST. With fMP4, the
    EXT-X-MAP of the selection's init segment (§4.3.2.5) comes first and segments end in .m4s. ``key_uri``: the
    segments are AES-128 encrypted with the key at that (relative) URI and, with no IV attribute, the media sequence
    number as IV (§4.3.2.4, §5.2). ``protection``: SAMPLE-AES (TS), or cbcs / cenc (fMP4) from the first segment
    after the clear lead (``protection_key_lines``). A TS clip starts at ``clip_start_offset`` (EXT-X-START,
    §4.3.5.2)."""
    durations = media_set.plan(selection).durations()
    target = max(1, int(math.ceil(float(durations.max())))) if len(durations) else 1
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{FMP4_VERSION if container == 'fmp4' else 3}",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:1",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    start = clip_start_offset(media_set, selection) if container == "ts" else float(clip_shift(media_set))
    if start > 0:
        lines.append(f"#EXT-X-START:TIME-OFFSET={start:.3f},PRECISE=YES")
    if container == "fmp4":
        extension = "m4s"
        lines.append(f'#EXT-X-MAP:URI="{init_segment_name(selection.spec)}"')
    if key_uri is not None:
        lines.append(f'#EXT-X-KEY:METHOD=AES-128,URI="{key_uri}"')
    key_lines = protection_key_lines(protection, selection) if protection is not None else []
    for index, d in enumerate(durations.tolist()):
        if key_lines and index == protection.clear_lead:
            lines += key_lines
        lines.append(f"#EXTINF:{d:.3f},")
        lines.append(segment_name(index, selection.spec, extension))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def protection_key_lines(protection: Protection, selection: Selection) -> list[str]:
    """The EXT-X-KEY lines of a media playlist (``Protection.segment_key``); MPEG-TS states its IV."""
    key = protection.segment_key({t.kind for t in selection.tracks})
    return key_lines(protection, key, sample_aes_iv(key) if protection.scheme == "sample-aes" else None)
