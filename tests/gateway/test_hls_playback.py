"""Every playlist parses with the ``m3u8`` library and every URI in it resolves to 200; segments are MPEG-TS."""
from __future__ import annotations

from urllib.parse import urljoin

import m3u8
import pytest

from .conftest import URLSET, add_to_store

MASTERS = [
    URLSET + "/master.m3u8",
    "/hls/title_,180p,.mp4.urlset/master.m3u8",
    "/hls/title_360p.mp4/master.m3u8",
    "/hls/two_audio.mp4/master.m3u8",
    "/hls/audio_only.mp4/master.m3u8",
    "/hls/moov_end.mp4/master.m3u8",
]


async def fetch(client, url: str) -> bytes:
    response = await client.get(url)
    assert response.status == 200, (url, await response.text())
    return await response.read()


@pytest.mark.parametrize("master_url", MASTERS)
async def test_every_uri_resolves(client, store, master_url):
    add_to_store(store, "moov_end.mp4")
    master = m3u8.loads((await fetch(client, master_url)).decode())
    assert master.is_variant
    media_urls = [urljoin(master_url, p.uri) for p in master.playlists]
    media_urls += [urljoin(master_url, m.uri) for m in master.media if m.uri]
    assert media_urls
    for p in master.playlists:
        assert p.stream_info.bandwidth > 0 and p.stream_info.codecs
    for url in media_urls:
        playlist = m3u8.loads((await fetch(client, url)).decode())
        assert playlist.is_endlist and playlist.playlist_type == "vod"
        assert playlist.segments
        assert playlist.target_duration >= max(s.duration for s in playlist.segments) - 0.5
        for segment in playlist.segments:
            body = await fetch(client, urljoin(url, segment.uri))
            assert body[:1] == b"\x47" and len(body) % 188 == 0
    past_end = urljoin(media_urls[0], f"seg-{len(playlist.segments) + 1}.ts")
    assert (await client.get(past_end)).status == 404  # README: 404 for a segment past the end


async def test_two_audio_tracks_make_an_audio_group(client):
    master = m3u8.loads((await fetch(client, "/hls/two_audio.mp4/master.m3u8")).decode())
    audio = [m for m in master.media if m.type == "AUDIO"]
    assert len(audio) == 2
    assert {m.language for m in audio} == {"en", "fr"}


async def test_url_set_variants_name_their_files(client):
    text = (await fetch(client, URLSET + "/master.m3u8")).decode()
    master = m3u8.loads(text)
    assert [p.uri for p in master.playlists] == ["index-f1-v1-a1.m3u8", "index-f2-v1-a1.m3u8", "index-f3-v1-a1.m3u8"]
    assert [p.stream_info.resolution for p in master.playlists] == [(640, 360), (426, 240), (320, 180)]
