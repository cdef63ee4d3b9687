"""Thumbnails (nginx-vod-module ``/thumb/``): file names, which samples to decode, decoding (PyAV), JPEG encoding.

Pure and synchronous like the rest of ``packagers``: the caller reads the bytes ``sample_reads`` asks for and runs
``decode_frame`` + ``encode_jpeg`` in its worker pool. PyAV is imported inside the functions that need it.
"""
from __future__ import annotations

from .frames import FrameRange, decode_frame, locate, sample_reads
from .jpeg import encode_jpeg, output_size
from .live import latest_from_gop, latest_from_segment
from .names import ThumbFile, parse_thumb_name, thumb_name

__all__ = ["FrameRange", "ThumbFile", "decode_frame", "encode_jpeg", "latest_from_gop", "latest_from_segment", "locate",
           "output_size", "parse_thumb_name", "sample_reads", "thumb_name"]
