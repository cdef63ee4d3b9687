"""MPEG-2 transport stream segments for HLS (ISO/IEC 13818-1): ``TsMuxer(tracks).build(segment) -> bytes``, or
``TsMuxer.prepare(index, tables)``: the layout first, the samples read straight into place, then ``finish()``."""
from .muxer import PCR_DELAY, PayloadBuffer, ScatterBuild, TsMuxer
from .pes import TS_PTS_OFFSET

__all__ = ["PCR_DELAY", "PayloadBuffer", "ScatterBuild", "TS_PTS_OFFSET", "TsMuxer"]
