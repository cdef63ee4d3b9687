"""Adobe HDS (HTTP Dynamic Streaming): F4M manifest, ``abst`` bootstrap and F4F fragments of FLV tags.

``build_f4m(media_set) -> str``, ``build_bootstrap(media_set, selection) -> bytes``,
``HdsMuxer(tracks, timestamp_offset_ms).build(media_segment) -> bytes`` (use ``fragment_muxer(media_set, selection)``
so fragments share the bootstrap's timeline), URL names ``manifest.f4m`` and ``frag<suffix>-Seg1-Frag<n>``.
Modules: ``amf0`` (onMetaData encoder), ``flv`` (tags), ``timeline`` (ms timestamps and the fragment table),
``bootstrap`` (abst/asrt/afrt), ``fragment`` (afra + mdat muxer), ``f4m`` (manifest), ``names`` (file names).
"""
from .bootstrap import (BootstrapInfo, FragmentRunEntry, FragmentRunTable, SegmentRunEntry, SegmentRunTable,
                        build_bootstrap)  # fmt: skip
from .f4m import FRAGMENT_CONTENT_TYPE, MANIFEST_CONTENT_TYPE, build_f4m, on_metadata
from .names import MANIFEST_NAME, fragment_name, fragment_url, parse_name
from .fragment import HdsMuxer, fragment_muxer, fragment_sizes
from .timeline import fragment_times, media_set_timestamp_offset

__all__ = [
    "BootstrapInfo", "FRAGMENT_CONTENT_TYPE", "FragmentRunEntry", "FragmentRunTable", "HdsMuxer",
    "MANIFEST_CONTENT_TYPE", "MANIFEST_NAME", "SegmentRunEntry", "SegmentRunTable", "build_bootstrap", "build_f4m",
    "fragment_muxer", "fragment_name", "fragment_sizes", "fragment_times", "fragment_url",
    "media_set_timestamp_offset", "on_metadata", "parse_name",
]
