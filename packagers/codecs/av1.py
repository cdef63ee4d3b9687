"""AV1 in ISOBMFF (AV1 Codec ISO Media File Format Binding §2.3): the av1C record, and the codec string (§5).

Samples are temporal units of OBUs (low-overhead format, no length prefix of ours): nothing here splits them. The
record's configOBUs (a sequence header) stay in the extradata, as decoders take them.
"""
from __future__ import annotations

from ..errors import bad_data
from .avc import VideoConfig

AV1C_HEADER = 4  # marker|version, profile|level, tier|bit depth|mono|chroma, delay


def parse_av1c(av1c: bytes, fourcc: str, where: str) -> VideoConfig:
    """AV1CodecConfigurationRecord → the codec string ``av01.<profile>.<level><tier>.<bit depth>``."""
    if len(av1c) < AV1C_HEADER or av1c[0] != 0x81:  # marker 1, version 1
        raise bad_data(f"parse_av1c: not an AV1CodecConfigurationRecord (marker/version {av1c[:1].hex()}) in {where}")
    profile, level = av1c[1] >> 5, av1c[1] & 0x1F
    tier = "H" if av1c[2] & 0x80 else "M"
    high_bitdepth, twelve_bit = av1c[2] & 0x40, av1c[2] & 0x20
    depth = 12 if high_bitdepth and twelve_bit else 10 if high_bitdepth else 8
    # no NAL units: a NAL length size of 0 keeps every NAL-walking path (TS, I-frame probes) away
    return VideoConfig(f"{fourcc}.{profile}.{level:02d}{tier}.{depth:02d}", 0, ())
