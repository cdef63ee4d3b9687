"""MPEG-DASH (ISO/IEC 23009-1) manifests for VOD, isoff-live profile: SegmentTemplate + SegmentTimeline over fMP4.

URL names are nginx-vod-module's, so its users can switch: ``manifest.mpd``, init segments ``init<suffix>.mp4`` and
media segments ``fragment-<n><suffix>.m4s`` (n from 1), where <suffix> is the track selection of one representation
(``-v1``, ``-f2-a1``, see ``packagers.dash.names``). Each init and media segment carries exactly one track; build them
with ``packagers.fmp4``: ``build_init_segment([track])`` and ``Fmp4Muxer([track], non_negative=True)``.
"""
from .mpd import MPD_CONTENT_TYPE, build_mpd, content_type
from .names import MANIFEST_NAME, fragment_name, init_segment_name, media_template, parse_name

__all__ = ["MANIFEST_NAME", "MPD_CONTENT_TYPE", "build_mpd", "content_type", "fragment_name", "init_segment_name",
           "media_template", "parse_name"]
