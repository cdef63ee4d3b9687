"""I-frame playlists (issue 13 part 5): every byte range is one TS key frame that ffmpeg decodes alone.

Ground truth: the source MP4's key frames as PyAV (ffmpeg) demuxes them; the TS bytes are fetched from the gateway
and decoded by PyAV after the PAT and PMT the playlist's EXT-X-MAP names.
"""
from __future__ import annotations

import io
import shutil
import subprocess

import av
import m3u8
import numpy as np
import pytest

from fixtures.generate import fixture_path
from gateway.catalog.catalog import Partner, catalog_dir, write_entry, write_partner

from .conftest import add_to_store
from .test_access_every_url import entry

TS_PTS_OFFSET = 180000  # presentation time 0 is PTS 180000 in every segment (packagers/ts/pes.py)


def source_key_frames(name: str) -> list[int]:
    """Presentation times (90 kHz, from the first key frame's) of the source's video key frames, in decode order."""
    with av.open(str(fixture_path(name))) as c:
        stream = c.streams.video[0]
        times = [p.pts for p in c.demux(stream) if p.size and p.is_keyframe]
        tb = stream.time_base
    return [round((t - times[0]) * tb * 90000) for t in times]


async def text(client, path: str) -> str:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.text()


@pytest.mark.parametrize("name", ["title_360p.mp4", "two_audio.mp4", "no_bframes.mp4"])
async def test_each_byte_range_is_one_key_frame(make_client, store, name):
    add_to_store(store, name)
    client = await make_client()
    master = m3u8.loads(await text(client, f"/hls/{name}/master.m3u8"))
    assert len(master.iframe_playlists) == 1 == len([p for p in master.playlists if p.stream_info.resolution])
    entry = master.iframe_playlists[0]
    # the I-frame playlist uses the variant's own segments (two_audio: the video-only variant of the audio group)
    assert entry.uri == master.playlists[0].uri.replace("index", "iframes")
    playlist = m3u8.loads(await text(client, f"/hls/{name}/{entry.uri}"))
    assert playlist.is_i_frames_only and playlist.version == 5
    segments: dict[str, bytes] = {}
    times = []
    for item in playlist.segments:
        if item.uri not in segments:
            segments[item.uri] = await (await client.get(f"/hls/{name}/{item.uri}")).read()
        data = segments[item.uri]
        size, start = map(int, item.byterange.split("@"))
        assert start % 188 == 0 and size % 188 == 0 and start + size <= len(data)
        head = data[start : start + 4]
        assert head[0] == 0x47 and head[1] & 0x40  # a TS packet that starts a PES...
        assert data[start + 3] & 0x20 and data[start + 5] & 0x40  # ...with random_access_indicator set
        with av.open(io.BytesIO(data[:376] + data[start : start + size]), format="mpegts") as c:
            frames = list(c.decode(video=0))
        assert len(frames) == 1 and frames[0].key_frame
        times.append(frames[0].pts - TS_PTS_OFFSET)
    expected = source_key_frames(name)
    assert times == expected  # every key frame, in order, at its time
    durations = [item.duration for item in playlist.segments]
    assert all(abs(d - (b - a) / 90000) < 0.0015 for d, a, b in zip(durations, times, times[1:]))
    media = m3u8.loads(await text(client, f"/hls/{name}/{master.playlists[0].uri}"))
    total = sum(s.duration for s in media.segments)
    assert abs(sum(durations) - total) < 0.002  # the last I-frame lasts until the end
    assert entry.iframe_stream_info.bandwidth >= max(
        size * 8 / d for size, d in ((int(i.byterange.split("@")[0]), i.duration) for i in playlist.segments))


async def test_no_iframe_playlists_without_a_layout_known_in_advance(make_client, store, tmp_path):
    """fMP4 variants, audio-only files and video whose samples carry their own parameter sets get none: the master
    lists none and the I-frame playlist URL is 404."""
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg CLI not installed")
    for name in ("hevc.mp4", "audio_only.mp4"):
        add_to_store(store, name)
    # SPS and PPS in every key frame sample, as live encoders write them: ffmpeg turns the stream to Annex B (which
    # repeats them before each IDR) and muxes it back into MP4 (length prefixes, the parameter sets kept in band)
    elementary = tmp_path / "video.h264"
    ffmpeg = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run(ffmpeg + ["-i", str(fixture_path("no_bframes.mp4")), "-an", "-c", "copy", "-bsf:v",
                             "h264_mp4toannexb", "-f", "h264", str(elementary)], check=True)
    subprocess.run(ffmpeg + ["-framerate", "24", "-i", str(elementary), "-c", "copy", str(store / "in_band.mp4")],
                   check=True)
    client = await make_client()
    for name, suffix in (("hevc.mp4", "-v1-a1"), ("audio_only.mp4", "-a1"), ("in_band.mp4", "-v1")):
        master = await text(client, f"/hls/{name}/master.m3u8")
        assert "I-FRAME" not in master, name
        response = await client.get(f"/hls/{name}/iframes{suffix}.m3u8")
        assert response.status == 404, (name, response.status)
    # the in-band file's segments still play: built from their bytes
    ts = await (await client.get("/hls/in_band.mp4/seg-1-v1.ts")).read()
    with av.open(io.BytesIO(ts), format="mpegts") as c:
        assert sum(1 for _ in c.decode(video=0)) > 0


async def test_a_partner_can_turn_iframe_playlists_off(make_client, store):
    """``iframes: false`` in a partner's hls profile (`gateway partners set-profile 101 hls iframes=false`): its
    entries' masters list none and their I-frame playlists are 404; other media keep them."""
    add_to_store(store, "title_240p.mp4")
    directory = catalog_dir(store)
    write_partner(directory, Partner(101, "P101", "a1" * 32, {"profiles": {"hls": {"iframes": False}}}))
    write_entry(directory, entry("0_plain001", 101, ["title_360p.mp4"]))
    client = await make_client()
    assert "I-FRAME" not in await text(client, "/hls/title_360p.mp4/master.m3u8")
    assert (await client.get("/hls/title_360p.mp4/iframes-v1-a1.m3u8")).status == 404
    assert 'URI="iframes-v1-a1.m3u8"' in await text(client, "/hls/title_240p.mp4/master.m3u8")  # no partner's
    assert (await client.get("/hls/title_240p.mp4/iframes-v1-a1.m3u8")).status == 200


def test_own_headers_reads_only_the_first_nal_units():
    """The probe of a first key frame (at most 64 KB of it): an AUD first or an SPS among its first NAL units means the
    segments' layout needs their bytes; a probe cut inside a NAL unit, or a corrupt one, ends the walk quietly."""
    from packagers.model import CodecConfig, SampleTable, Track
    from packagers.ts.pes import own_headers

    def nal(kind: int, size: int = 5) -> bytes:
        body = bytes([kind]) + b"\x00" * (size - 1)
        return len(body).to_bytes(4, "big") + body

    empty = SampleTable(*(np.zeros(0, t) for t in (np.uint64, np.uint32, np.int64, np.int32, np.uint32, bool)))
    track = Track(1, "video", 90000, CodecConfig("avc1", "avc1.64001e"), empty)
    aud, sei, sps, idr = 0x09, 0x06, 0x67, 0x65
    assert own_headers(track, nal(aud) + nal(idr))
    assert own_headers(track, nal(sei) + nal(sps) + nal(0x68) + nal(idr))
    assert not own_headers(track, nal(sei) + nal(idr, 100_000)[:2000])  # cut inside the slice
    assert not own_headers(track, nal(idr) + nal(aud))  # an AUD that does not come first is kept as it is
    assert not own_headers(track, b"\xff\xff\xff\xff" + b"\x65" + nal(sps))  # a length past the probe ends the walk
    assert own_headers(track, b"\xff\xff\xff\xff" + b"\x67")  # but its header byte still says SPS
    assert not own_headers(track, b"")
    narrow = Track(1, "video", 90000, CodecConfig("avc1", "avc1.64001e", nal_length_size=2), empty)
    assert own_headers(narrow, nal(idr))


async def test_no_iframe_playlist_past_the_segment_bound(make_client, monkeypatch):
    """Laying out every segment costs ~0.2 ms each: a rendition with more than MAX_IFRAME_SEGMENTS gets none."""
    from gateway.http import products

    monkeypatch.setattr(products, "MAX_IFRAME_SEGMENTS", 1)  # title_360p.mp4 has 2 segments of 6 s
    client = await make_client()
    assert "I-FRAME" not in await text(client, "/hls/title_360p.mp4/master.m3u8")
    response = await client.get("/hls/title_360p.mp4/iframes-v1-a1.m3u8")
    assert response.status == 404 and "more than 1 segments" in await response.text()
