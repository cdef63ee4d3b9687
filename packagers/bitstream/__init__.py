"""Elementary-stream conversions between MP4 sample formats and the byte streams MPEG-TS carries."""
from .adts import AudioSpecificConfig, adts_headers, parse_audio_specific_config, to_adts
from .annexb import nal_units, parse_avcc, parse_hvcc, to_annexb, with_start_codes

__all__ = [
    "AudioSpecificConfig",
    "adts_headers",
    "nal_units",
    "parse_audio_specific_config",
    "parse_avcc",
    "parse_hvcc",
    "to_adts",
    "to_annexb",
    "with_start_codes",
]
