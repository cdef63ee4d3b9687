"""Live packaging of RTMP streams into live HLS (MPEG-TS) and live DASH (fMP4, dynamic MPD), with the VOD muxers.

Stages: ``segmenter`` (sans-I/O: FLV messages → per-segment sample tables, cut at key frames), ``writer`` (blocking:
segments, playlists, MPD, sliding window on the store), ``packager`` (the `RelayTap`: one worker thread per stream).
"""
from .packager import STREAM_NAME, LivePackager
from .segmenter import Cut, LiveSegmenter, TrackCut
from .writer import LIVE_FILE, MASTER_PLAYLIST, MEDIA_PLAYLIST, MPD, LiveStreamWriter

__all__ = ["Cut", "LIVE_FILE", "LivePackager", "LiveSegmenter", "LiveStreamWriter", "MASTER_PLAYLIST",
           "MEDIA_PLAYLIST", "MPD", "STREAM_NAME", "TrackCut"]
