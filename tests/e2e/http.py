"""Tiny HTTP helpers shared by the end-to-end tests (urllib: no client-side path normalisation or caching)."""
from __future__ import annotations

import urllib.request
from urllib.parse import urljoin

import m3u8


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


def media_playlists(master_url: str) -> list[str]:
    """Absolute URLs of every media playlist a master lists: variants, then EXT-X-MEDIA renditions."""
    master = m3u8.loads(get(master_url).decode())
    urls = [urljoin(master_url, p.uri) for p in master.playlists]
    return urls + [urljoin(master_url, m.uri) for m in master.media if m.uri]
