"""Track, language and file selection (issue 13 part 2) against a real `gateway serve`, read back by real clients.

The fixture multi_track.mp4 has 2 videos (320x180, 256x144) and 3 audio tracks (eng, fra, spa); two_audio.mp4
(320x180, eng + fra) is the second file of a url set. For each row of a table of selector combinations (path
parameter x file-name selectors x language x url set ``-fN``) the manifest, parsed with m3u8 / ElementTree, must
list exactly the expected renditions, under the whole file's track numbers; and for every rendition listed, ffprobe
on a fetched segment (TS, or fMP4 init + fragment) must show exactly the streams its name stands for: videos by
size, audio by the language the container keeps (TS PMT ISO 639 descriptor, fMP4 mdhd). The /mp4 download with
``/tracks/`` is probed the same way.
"""
from __future__ import annotations

import io
import json
import re
import subprocess
import urllib.error
import xml.etree.ElementTree as ET
from urllib.parse import urljoin

import m3u8
import pytest

from tests.needs import require_executable

from .http import get

NAME = "multi_track.mp4"
URL_SET = ",multi_track,two_audio,.mp4.urlset"
# what each track number of each file is, as ffprobe tells it: video by size, audio by language tag
STREAMS = {
    1: {"v1": "320x180", "v2": "256x144", "a1": "eng", "a2": "fra", "a3": "spa"},
    2: {"v1": "320x180", "a1": "eng", "a2": "fra"},
}
_TOKENS = re.compile(r"-([fva])([0-9]+)")


def expected_streams(name: str) -> list[str]:
    """The streams a per-rendition name (``index-f2-v1-a2.m3u8``, ``init-v2.mp4``) stands for, sorted."""
    tokens = dict((k, int(v)) for k, v in _TOKENS.findall(name))
    table = STREAMS[tokens.get("f", 1)]
    return sorted(table[f"{k}{tokens[k]}"] for k in "va" if k in tokens)


def probe(data: bytes, tmp_path, suffix: str) -> list[str]:
    """The streams ffprobe finds in ``data``, as ``expected_streams`` names them."""
    path = tmp_path / f"probe{suffix}"
    path.write_bytes(data)
    out = subprocess.run([require_executable("ffprobe"), "-v", "error", "-show_streams", "-of", "json", str(path)],
                         check=True, capture_output=True, timeout=120)
    streams = json.loads(out.stdout)["streams"]
    return sorted(f"{s['width']}x{s['height']}" if s["codec_type"] == "video"
                  else s.get("tags", {}).get("language", "?") for s in streams)


def status(url: str) -> int:
    try:
        get(url)
        return 200
    except urllib.error.HTTPError as e:
        return e.code


def hls_renditions(master_url: str) -> dict[str, str]:
    """Media playlist name → absolute URL, for every variant and EXT-X-MEDIA rendition of a master playlist."""
    master = m3u8.loads(get(master_url).decode())
    uris = [p.uri for p in master.playlists] + [m.uri for m in master.media if m.uri]
    return {uri: urljoin(master_url, uri) for uri in uris}


def first_segment(playlist_url: str) -> tuple[bytes, str]:
    """The first segment of a media playlist, with its fMP4 init segment in front (EXT-X-MAP) when it has one."""
    playlist = m3u8.loads(get(playlist_url).decode())
    segment = get(urljoin(playlist_url, playlist.segments[0].uri))
    init = playlist.segment_map[0].uri if playlist.segment_map else None
    if init is None:
        return segment, ".ts"
    return get(urljoin(playlist_url, init)) + segment, ".mp4"


# (path before the file name, master name, the media playlists it lists)
HLS_TS = [
    (NAME, "master.m3u8", {"index-v1.m3u8", "index-a1.m3u8", "index-a2.m3u8", "index-a3.m3u8"}),
    (f"tracks/v2-a3/{NAME}", "master.m3u8", {"index-v2-a3.m3u8"}),
    (f"{NAME}/Tracks/v0-a0", "master.m3u8",
     {"index-v1.m3u8", "index-v2.m3u8", "index-a1.m3u8", "index-a2.m3u8", "index-a3.m3u8"}),
    (f"tracks/v2/tracks/v1/{NAME}", "master.m3u8", {"index-v2.m3u8"}),  # the first of a name counts
    (NAME, "master-v2.m3u8", {"index-v2.m3u8"}),
    (NAME, "master-v1-a2.m3u8", {"index-v1-a2.m3u8"}),
    (NAME, "master-v0-a3.m3u8", {"index-v1-a3.m3u8", "index-v2-a3.m3u8"}),
    (NAME, "master-a2.m3u8", {"index-a2.m3u8"}),
    (NAME, "master-leng.m3u8", {"index-v1-a1.m3u8"}),
    (NAME, "master-lfre-lspa.m3u8", {"index-v1.m3u8", "index-a2.m3u8", "index-a3.m3u8"}),  # fre: ISO 639-2/B
    (NAME, "master-f1-a0-lfra.m3u8", {"index-a2.m3u8"}),
    (f"tracks/v0-a1-a3/{NAME}", "master-v2-a0.m3u8", {"index-v2.m3u8", "index-a1.m3u8", "index-a3.m3u8"}),
    (f"tracks/a1-a2/{NAME}", "master-a2-a3.m3u8", {"index-a2.m3u8"}),  # AND-ed
    (f"tracks/v1-a0/{NAME}", "master-lspa.m3u8", {"index-v1-a3.m3u8"}),
    (f"shift/v500-a0/{NAME}", "master-v1-a1.m3u8", {"index-v1-a1.m3u8"}),
    (URL_SET, "master.m3u8", {"index-f1-v1.m3u8", "index-f1-a1.m3u8", "index-f1-a2.m3u8", "index-f1-a3.m3u8",
                              "index-f2-v1.m3u8", "index-f2-a1.m3u8", "index-f2-a2.m3u8"}),
    (URL_SET, "master-f2.m3u8", {"index-f2-v1.m3u8", "index-f2-a1.m3u8", "index-f2-a2.m3u8"}),
    (URL_SET, "master-f1-f2-v1-a2.m3u8", {"index-f1-v1-a2.m3u8", "index-f2-v1-a2.m3u8"}),
    # track tokens apply to the files just before them (nginx-vod): video 2 of file 1, audio 2 of file 2
    (URL_SET, "master-f1-v2-f2-a2.m3u8", {"index-f1-v2.m3u8", "index-f2-a2.m3u8"}),
    (f"tracks/v2-a0/{NAME}", "master-f1-lfra.m3u8", {"index-v2-a2.m3u8"}),
    (f"clipFrom/2500/tracks/v2-a3/{NAME}", "master.m3u8", {"index-v2-a3.m3u8"}),  # with a clip
    (f"tracks/v1-a3/{URL_SET}", "master.m3u8", {"index-f1-v1-a3.m3u8", "index-f2-v1.m3u8"}),  # two_audio: no a3
]


@pytest.mark.parametrize("path,name,listed", HLS_TS, ids=[f"{p}/{n}" for p, n, _ in HLS_TS])
def test_hls_ts_lists_and_segments_carry_exactly_the_selection(gateway_ts_url, tmp_path, path, name, listed):
    master_url = f"{gateway_ts_url}/hls/{path}/{name}"
    renditions = hls_renditions(master_url)
    assert set(renditions) == listed
    for uri, url in renditions.items():
        data, suffix = first_segment(url)
        assert probe(data, tmp_path, suffix) == expected_streams(uri), uri


HLS_FMP4 = [
    (NAME, "master.m3u8", {"index-v1.m3u8", "index-a1.m3u8", "index-a2.m3u8", "index-a3.m3u8"}),
    (f"tracks/v2-a3/{NAME}", "master.m3u8", {"index-v2.m3u8", "index-a3.m3u8"}),
    (NAME, "master-v0-a0-lfra.m3u8", {"index-v1.m3u8", "index-v2.m3u8", "index-a2.m3u8"}),
    (NAME, "master-v0.m3u8", {"index-v1.m3u8", "index-v2.m3u8"}),  # -v alone: no audio (nginx-vod)
    (URL_SET, "master-f2-a2.m3u8", {"index-f2-a2.m3u8"}),
]


@pytest.mark.parametrize("path,name,listed", HLS_FMP4, ids=[f"{p}/{n}" for p, n, _ in HLS_FMP4])
def test_hls_fmp4_lists_and_segments_carry_exactly_the_selection(gateway_fmp4_url, tmp_path, path, name, listed):
    renditions = hls_renditions(f"{gateway_fmp4_url}/hls/{path}/{name}")
    assert set(renditions) == listed
    for uri, url in renditions.items():
        data, suffix = first_segment(url)
        assert suffix == ".mp4"
        assert probe(data, tmp_path, suffix) == expected_streams(uri), uri


DASH = [
    (NAME, "manifest.mpd", {"v1", "a1", "a2", "a3"}),
    (NAME, "manifest-v2-a3.mpd", {"v2", "a3"}),
    (f"tracks/a2/{NAME}", "manifest.mpd", {"a2"}),
    (f"tracks/v0-a1-a2/{NAME}", "manifest-lfra.mpd", {"v1", "v2", "a2"}),
    (URL_SET, "manifest-f2.mpd", {"f2-v1", "f2-a1", "f2-a2"}),
]
MPD = "{urn:mpeg:dash:schema:mpd:2011}"


@pytest.mark.parametrize("path,name,listed", DASH, ids=[f"{p}/{n}" for p, n, _ in DASH])
def test_dash_lists_and_fragments_carry_exactly_the_selection(gateway_url, tmp_path, path, name, listed):
    base = f"{gateway_url}/dash/{path}/"
    root = ET.fromstring(get(base + name))
    reps = {r.get("id"): r for r in root.iter(f"{MPD}Representation")}
    assert set(reps) == listed
    for rep_id, rep in reps.items():
        template = rep.find(f"{MPD}SegmentTemplate")
        data = get(base + template.get("initialization")) + get(base + template.get("media").replace("$Number$", "1"))
        assert probe(data, tmp_path, ".mp4") == expected_streams("-" + rep_id), rep_id


HDS = [
    (NAME, "manifest.f4m", {"v1-a1", "a2", "a3"}),
    (NAME, "manifest-a2.f4m", {"a2"}),
    (NAME, "manifest-v0-a3.f4m", {"v1-a3", "v2-a3"}),
    (f"tracks/v2-a1-a3/{NAME}", "manifest.f4m", {"v2-a1", "a3"}),
    (URL_SET, "manifest-f1-v2.f4m", {"f1-v2"}),
]
F4M = "{http://ns.adobe.com/f4m/1.0}"


@pytest.mark.parametrize("path,name,listed", HDS, ids=[f"{p}/{n}" for p, n, _ in HDS])
def test_hds_lists_exactly_the_selection(gateway_url, path, name, listed):
    base = f"{gateway_url}/hds/{path}/"
    root = ET.fromstring(get(base + name))
    media = {m.get("streamId"): m for m in root.iter(f"{F4M}media")}
    assert set(media) == listed
    for stream_id, m in media.items():
        assert status(base + m.get("url") + "Seg1-Frag1") == 200, stream_id


def test_mss_follows_the_tracks_path_parameter(gateway_url):
    root = ET.fromstring(get(f"{gateway_url}/mss/tracks/v2-a2-a3/{NAME}/manifest"))
    streams = {s.get("Name"): s for s in root.iter("StreamIndex")}
    assert sorted(streams) == ["audio", "audio_spa", "video"]
    assert [q.get("MaxWidth") for q in streams["video"].iter("QualityLevel")] == ["256"]
    assert streams["audio"].get("Language") == "fra" and streams["audio_spa"].get("Language") == "spa"


def first_packets() -> dict[int, bytes]:
    """The first packet of every stream of the source, as ffmpeg demuxes it (stream index → payload)."""
    import av

    from fixtures.generate import fixture_path

    out: dict[int, bytes] = {}
    with av.open(str(fixture_path(NAME))) as c:
        for p in c.demux():
            if p.size and p.stream.index not in out:
                out[p.stream.index] = bytes(p)
    return out


# manifest name → {stream name: (MaxWidth or Language, source stream index of its one level)}
MSS = [
    ("manifest", {"video": ("320", 0), "audio": ("eng", 2), "audio_fra": ("fra", 3), "audio_spa": ("spa", 4)}),
    ("manifest-v2-a3", {"video": ("256", 1), "audio_spa": ("spa", 4)}),
    ("manifest-a2", {"audio_fra": ("fra", 3)}),
    ("manifest-lspa", {"video": ("320", 0), "audio_spa": ("spa", 4)}),
]


@pytest.mark.parametrize("name,expected", MSS, ids=[n for n, _ in MSS])
def test_mss_manifest_selectors_keep_the_whole_sets_stream_names(gateway_url, name, expected):
    """Smooth fragment URLs name streams (audio_fra): a narrowed manifest lists fewer under the same names, and each
    level's fragment carries that track (its first sample is the source's first packet of that stream)."""
    from ..packagers.fmp4_tools import read_fragment

    root = ET.fromstring(get(f"{gateway_url}/mss/{NAME}/{name}"))
    packets = first_packets()
    got = {}
    for index in root.iter("StreamIndex"):
        (level,) = index.iter("QualityLevel")
        got[index.get("Name")] = (level.get("MaxWidth") or index.get("Language"),)
        url = index.get("Url").replace("{bitrate}", level.get("Bitrate")).replace(
            "{start time}", next(index.iter("c")).get("t"))
        (traf,) = read_fragment(get(f"{gateway_url}/mss/{NAME}/{url}"))
        source = expected[index.get("Name")][1]
        assert traf.payload[: int(traf.sizes[0])] == packets[source], (name, index.get("Name"))
    assert got == {k: v[:1] for k, v in expected.items()}


MP4 = [
    (f"tracks/v2-a3/{NAME}", ["256x144", "spa"]),
    (f"{NAME}/tracks/a0", ["eng", "fra", "spa"]),
    (f"tracks/v1-v2-a2/{NAME}", ["256x144", "320x180", "fra"]),
    (NAME, ["256x144", "320x180", "eng", "fra", "spa"]),  # the file itself
    (f"clipTo/4000/tracks/v2-a2/{NAME}", ["256x144", "fra"]),
]


@pytest.mark.parametrize("path,streams", MP4, ids=[p for p, _ in MP4])
def test_mp4_download_has_exactly_the_selected_tracks(gateway_url, tmp_path, path, streams):
    assert probe(get(f"{gateway_url}/mp4/{path}"), tmp_path, ".mp4") == streams


def start_times(data: bytes, tmp_path) -> dict[str, float]:
    path = tmp_path / "shift.ts"
    path.write_bytes(data)
    out = subprocess.run([require_executable("ffprobe"), "-v", "error", "-show_streams", "-of", "json", str(path)],
                         check=True, capture_output=True, timeout=120)
    return {s["codec_type"]: float(s["start_time"]) for s in json.loads(out.stdout)["streams"]}


def test_shift_moves_that_kind_later(gateway_ts_url, tmp_path):
    plain = start_times(get(f"{gateway_ts_url}/hls/{NAME}/seg-1-v1-a1.ts"), tmp_path)
    shifted = start_times(get(f"{gateway_ts_url}/hls/shift/v500-s100/{NAME}/seg-1-v1-a1.ts"), tmp_path)
    moved = (shifted["video"] - shifted["audio"]) - (plain["video"] - plain["audio"])
    assert abs(moved - 0.5) < 0.03, (plain, shifted)


ERRORS = [
    (f"/hls/tracks/v2-a3/{NAME}/seg-1-v1-a1.ts", 404),  # a masked-out track is no track
    (f"/hls/tracks/v2-a3/{NAME}/index-v2-a1.m3u8", 404),
    (f"/dash/tracks/a1/{NAME}/init-a2.mp4", 404),
    (f"/hls/{NAME}/master-v3.m3u8", 404),
    (f"/hls/tracks/v3/{NAME}/master.m3u8", 404),
    (f"/hls/{NAME}/master-f2.m3u8", 404),
    (f"/hls/tracks/v2/{URL_SET}/master.m3u8", 404),  # two_audio.mp4 is left without a track
    (f"/hls/{NAME}/master-lita.m3u8", 200),  # no audio in Italian: the video alone (nginx-vod filters audio only)
    (f"/hls/{NAME}/seg-1-v0.ts", 400),  # several video tracks in one segment: not supported
    (f"/hls/{NAME}/seg-1-a0-a1.ts", 400),  # -a0 is every audio track already
    (f"/dash/{NAME}/fragment-1-a1-a2.m4s", 400),  # a DASH fragment carries one track
    (f"/hds/{NAME}/frag-v1-a1-a2-Seg1-Frag1", 400),  # FLV carries one audio track
    (f"/hds/{URL_SET}/frag-f1-v1-f2-a1-Seg1-Frag1", 400),  # FLV: the audio of the video's file only
    (f"/hls/{URL_SET}/seg-1-f1-f2-v1.ts", 400),  # one video, and the audio of one other file, at most
    (f"/hls/tracks/x1/{NAME}/master.m3u8", 400),
    (f"/hls/tracks//{NAME}/master.m3u8", 400),
    (f"/hls/shift/v-100/{NAME}/master.m3u8", 400),
    (f"/hls/{NAME}/master-a1-f1.m3u8", 400),  # out of order
    (f"/hls/{NAME}/master-len.m3u8", 400),
    (f"/hls/{NAME}/master-f0.m3u8", 400),
    (f"/mp4/tracks/v9/{NAME}", 404),
]


# several audio tracks in one HLS segment (nginx-vod-module's -a0, -a1-a3): name → the streams ffprobe must see
MULTI_AUDIO = [
    ("index-v1-a0.m3u8", ["320x180", "eng", "fra", "spa"]),
    ("index-v2-a1-a3.m3u8", ["256x144", "eng", "spa"]),
    ("index-a3-a2.m3u8", ["fra", "spa"]),
]


@pytest.mark.parametrize("name,streams", MULTI_AUDIO, ids=[n for n, _ in MULTI_AUDIO])
def test_several_audio_tracks_in_one_hls_segment(gateway_ts_url, gateway_fmp4_url, tmp_path, name, streams):
    for base in (gateway_ts_url, gateway_fmp4_url):
        data, suffix = first_segment(f"{base}/hls/{NAME}/{name}")
        assert probe(data, tmp_path, suffix) == streams, (base, name)


def test_the_video_of_one_file_with_the_audio_of_another(gateway_ts_url, gateway_fmp4_url, tmp_path):
    """nginx-vod-module's f1-v2-f2-a2 in a segment name: video 2 of multi_track.mp4, audio 2 (fra) of
    two_audio.mp4, one segment (the two files' key frames line up: one plan). The audio is two_audio's: its 10 s of
    packets, where multi_track's fra has 8 s."""
    import av

    from fixtures.generate import fixture_path

    with av.open(str(fixture_path("two_audio.mp4"))) as c:
        fra = sum(1 for p in c.demux(c.streams.audio[1]) if p.size)
    with av.open(str(fixture_path(NAME))) as c:
        assert fra != sum(1 for p in c.demux(c.streams.audio[1]) if p.size)
    for base in (gateway_ts_url, gateway_fmp4_url):
        url = f"{base}/hls/{URL_SET}/index-f1-v2-f2-a2.m3u8"
        data, suffix = first_segment(url)
        assert probe(data, tmp_path, suffix) == ["256x144", "fra"], base
        playlist = m3u8.loads(get(url).decode())
        init = get(urljoin(url, playlist.segment_map[0].uri)) if playlist.segment_map else b""
        audio = 0
        for segment in playlist.segments:
            with av.open(io.BytesIO(init + get(urljoin(url, segment.uri))), format="mpegts" if not init else None) as c:
                audio += sum(1 for p in c.demux(c.streams.audio[0]) if p.size)
        assert audio == fra, base


@pytest.mark.parametrize("path,code", ERRORS, ids=[p for p, _ in ERRORS])
def test_bad_or_empty_selections(gateway_url, path, code):
    assert status(gateway_url + path) == code

