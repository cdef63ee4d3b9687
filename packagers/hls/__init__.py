"""HLS manifest writers (RFC 8216)."""
from .names import media_playlist_name, segment_name
from .playlists import build_master_playlist, build_media_playlist

__all__ = ["build_master_playlist", "build_media_playlist", "media_playlist_name", "segment_name"]
