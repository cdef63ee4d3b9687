"""Sidecar captions (issue 13): WebVTT and SRT files in, HLS WebVTT segments, DASH WebVTT files, TTML documents and
TTML-in-fMP4 (``stpp``) fragments out. Pure: bytes in, str/bytes out; the gateway chooses the windows (the media
segment boundaries) and the clip offset.

Modules: ``parse`` (both formats -> ``CaptionTrack``), ``webvtt``, ``ttml``, ``stpp`` (ISO/IEC 14496-30 in fMP4).
"""
from .parse import MAX_BLOCK_LINES, MAX_BYTES, MAX_CUES, CaptionTrack, Cue, parse_captions
from .stpp import build_stpp_fragment, build_stpp_init
from .ttml import build_ttml
from .webvtt import build_webvtt_file, build_webvtt_segment

__all__ = [
    "MAX_BLOCK_LINES", "MAX_BYTES", "MAX_CUES", "CaptionTrack", "Cue", "build_stpp_fragment", "build_stpp_init",
    "build_ttml", "build_webvtt_file", "build_webvtt_segment", "parse_captions",
]
