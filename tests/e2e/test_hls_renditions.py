"""ABR properties players rely on: declared bandwidths are honest and renditions switch seamlessly."""
from __future__ import annotations

import io
from urllib.parse import urljoin

import av
import m3u8
import pytest

from .http import get

URLSET = "/hls/title_,360p,240p,180p,.mp4.urlset/master.m3u8"




def segments(playlist_url: str) -> list[tuple[float, bytes]]:
    playlist = m3u8.loads(get(playlist_url).decode())
    return [(s.duration, get(urljoin(playlist_url, s.uri))) for s in playlist.segments]


@pytest.mark.parametrize("path", [URLSET, "/hls/two_audio.mp4/master.m3u8", "/hls/hevc.mp4/master.m3u8"])
def test_bandwidth_bounds_every_segment(gateway_url, path):
    """RFC 8216 §4.3.4.2: BANDWIDTH is the peak segment bit rate; AVERAGE-BANDWIDTH the average. Both from the
    real segment sizes, including audio renditions of the variant's group."""
    master_url = gateway_url + path
    master = m3u8.loads(get(master_url).decode())
    audio_groups: dict[str, list[str]] = {}
    for m in master.media:
        audio_groups.setdefault(m.group_id, []).append(urljoin(master_url, m.uri))
    for variant in master.playlists:
        segs = segments(urljoin(master_url, variant.uri))
        sizes = [len(b) for _, b in segs]
        durations = [d for d, _ in segs]
        if variant.stream_info.audio:
            extra = [[len(b) for _, b in segments(u)] for u in audio_groups[variant.stream_info.audio]]
            sizes = [s + max(e[i] for e in extra) for i, s in enumerate(sizes)]
        peak = max(s * 8 / d for s, d in zip(sizes, durations))
        average = sum(sizes) * 8 / sum(durations)
        info = variant.stream_info
        assert peak <= info.bandwidth, f"{variant.uri}: real peak {peak:.0f} > BANDWIDTH {info.bandwidth}"
        assert info.bandwidth <= peak * 1.25, f"{variant.uri}: BANDWIDTH {info.bandwidth} overstates peak {peak:.0f}"
        assert average * 0.97 <= info.average_bandwidth <= average * 1.25, (variant.uri, average, info.average_bandwidth)


def test_renditions_share_boundaries_and_timestamps(gateway_url):
    """Segment k of every rendition covers the same time and starts on a key frame with the same PTS."""
    master_url = gateway_url + URLSET
    master = m3u8.loads(get(master_url).decode())
    firsts = []
    for variant in master.playlists:
        playlist_url = urljoin(master_url, variant.uri)
        playlist = m3u8.loads(get(playlist_url).decode())
        starts = []
        for s in playlist.segments:
            with av.open(io.BytesIO(get(urljoin(playlist_url, s.uri))), format="mpegts") as c:
                video = next(p for p in c.demux(c.streams.video[0]) if p.size)
                assert video.is_keyframe
                starts.append(video.pts)
        firsts.append(([s.duration for s in playlist.segments], starts))
    assert len(firsts) == 3
    assert all(f == firsts[0] for f in firsts[1:]), firsts
