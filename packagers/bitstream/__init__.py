"""Elementary-stream conversions between MP4 sample formats and the byte streams MPEG-TS carries (the ADTS header
lives with the AudioSpecificConfig in ``packagers.codecs.aac``)."""
from .annexb import nal_units, parse_avcc, parse_hvcc, to_annexb, with_start_codes

__all__ = [
    "nal_units",
    "parse_avcc",
    "parse_hvcc",
    "to_annexb",
    "with_start_codes",
]
