"""MPEG-2 transport stream segments for HLS (ISO/IEC 13818-1): ``TsMuxer(tracks).build(segment) -> bytes``."""
from .muxer import PCR_DELAY, TsMuxer
from .pes import TS_PTS_OFFSET

__all__ = ["PCR_DELAY", "TS_PTS_OFFSET", "TsMuxer"]
