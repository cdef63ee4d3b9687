"""Live transcoding core: one source video decoded once, encoded per rendition of a ladder (``LadderEncoder``)."""
from .ladder import LadderEncoder, EncodedSample, Rendition, parse_rendition, rendition_sizes

__all__ = ["LadderEncoder", "EncodedSample", "Rendition", "parse_rendition", "rendition_sizes"]
