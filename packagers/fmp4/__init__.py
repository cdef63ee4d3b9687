"""Fragmented MP4 (ISO/IEC 14496-12 §8.8), shared by DASH, HLS-fMP4 and Smooth Streaming.

``build_init_segment(tracks)`` writes ftyp + moov; ``Fmp4Muxer(tracks).build(segment)`` writes styp + moof + mdat
and ``measure(tables)`` its exact size. Modules: ``boxes`` (box writing), ``init`` (init segment, sample entries,
codec strings as written), ``fragment`` (moof/mdat, the timestamp convention, size bounds for manifests),
``renditions`` (which tracks fMP4 manifests list, as demuxed renditions).
"""
from .fragment import (FRAGMENT_OVERHEAD, SAMPLE_OVERHEAD, TFXD_UUID, TRAF_OVERHEAD, Fmp4Muxer, fragment_size_bound,
                       presentation_time_offset)
from .init import build_init_segment, channel_configuration, codec_string, sample_entry_type

__all__ = [
    "FRAGMENT_OVERHEAD", "SAMPLE_OVERHEAD", "TFXD_UUID", "TRAF_OVERHEAD", "Fmp4Muxer", "build_init_segment",
    "channel_configuration", "codec_string", "fragment_size_bound", "presentation_time_offset", "sample_entry_type",
]
