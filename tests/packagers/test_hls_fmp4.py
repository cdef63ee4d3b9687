"""HLS with fMP4 segments: playlists parsed by the m3u8 library, golden playlists and segment digests (init + .m4s)
on synthetic media sets, and ffmpeg's HLS demuxer (PyAV) playing a directory of master + media playlists + init +
.m4s segments made from real files (a real client, no server), HEVC included. The TS playlists must not change (their
goldens are checked by test_golden_playlists.py).

Run ``python -m pytest tests/packagers/test_hls_fmp4.py --update-golden`` after an intended change and review
tests/golden/hls_fmp4_*.
"""
from __future__ import annotations

import dataclasses
import io
from functools import lru_cache
from pathlib import Path

import av
import m3u8
import numpy as np
import pytest

from fixtures.generate import fixture_path
from packagers.errors import ErrorCode, PackagerError
from packagers.fmp4 import Fmp4Muxer, build_init_segment
from packagers.hls.playlists import (build_master_playlist, build_media_playlist, choose_container, init_segment_name,
                                     segment_name)
from packagers.media_set import MediaSet
from packagers.model import CodecConfig
from packagers.mp4 import open_presentation
from packagers.naming import TrackSpec

from .fmp4_tools import write_track_files
from .golden import check_golden, segment_digests
from .synthetic import SCENARIOS as BASE_SCENARIOS
from .synthetic import audio_track, ladder, presentation, video_track



def _hevc(track):
    return dataclasses.replace(track, codec=CodecConfig("hvc1", "hvc1.1.6.L93.B0", width=1280, height=720))


SCENARIOS = {
    **BASE_SCENARIOS,
    "url_set_distinct_audio": lambda: MediaSet([presentation(video_track(12), audio_track(12 + k), source=f"r{k}.mp4")
                                                for k in (0, 1)], 4000),
    "audio_only_two_languages": lambda: MediaSet([presentation(audio_track(9), audio_track(9, track_id=3,
                                                                                           language="deu"))], 6000),
    "hevc": lambda: MediaSet([presentation(_hevc(video_track(12)), audio_track(12))], 6000),
}
FIXTURE_SETS = {
    "ladder": ("title_360p.mp4", "title_240p.mp4", "title_180p.mp4"),
    "two_audio": ("two_audio.mp4",),
    "hevc": ("hevc.mp4",),
    "audio_only": ("audio_only.mp4",),
    "no_bframes": ("no_bframes.mp4",),
}


def render(media_set: MediaSet) -> dict[str, str]:
    out = {"master.m3u8": build_master_playlist(media_set, container="fmp4")}
    master = m3u8.loads(out["master.m3u8"])
    for uri in [p.uri for p in master.playlists] + [m.uri for m in master.media if m.uri]:
        spec = TrackSpec.parse(uri[len("index") : -len(".m3u8")])
        out[uri] = build_media_playlist(media_set, media_set.resolve(spec), container="fmp4")
    return out


def _segment_digests(media_set: MediaSet, playlists: dict[str, str]) -> str:
    """``fragments.sha256`` of every init segment and .m4s segment the media playlists list."""
    segments = []
    for name, text in playlists.items():
        if name != "master.m3u8":
            spec, playlist = TrackSpec.parse(name[len("index") : -len(".m3u8")]), m3u8.loads(text)
            segments.append((playlist.segment_map[0].uri, spec, None))
            segments += [(segment.uri, spec, k) for k, segment in enumerate(playlist.segments)]
    # the gateway's muxers for HLS fMP4 (products.py): fragments keep signed composition offsets (no non_negative)
    return segment_digests(media_set, segments, lambda selection: Fmp4Muxer(selection.tracks).build,
                           lambda selection: build_init_segment(selection.tracks))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_golden(scenario, update_golden):
    media_set = SCENARIOS[scenario]()
    rendered = render(media_set)
    rendered["fragments.sha256"] = _segment_digests(media_set, rendered)
    check_golden(f"hls_fmp4_{scenario}", rendered, update_golden)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_playlists_are_valid_fmp4_hls(scenario):
    media_set = SCENARIOS[scenario]()
    rendered = render(media_set)
    master = m3u8.loads(rendered["master.m3u8"])
    assert "#EXT-X-VERSION:7" in rendered["master.m3u8"]
    groups = {}
    for media in master.media:
        assert media.type == "AUDIO" and media.uri and media.channels
        groups.setdefault(media.group_id, []).append(media)
    for members in groups.values():
        assert [m.default for m in members] == ["YES"] + ["NO"] * (len(members) - 1)
        assert len({m.name for m in members}) == len(members)
    has_video = any(p.video_tracks for p in media_set.presentations)
    for variant in master.playlists:
        info = variant.stream_info
        assert info.bandwidth >= info.average_bandwidth > 0
        spec = TrackSpec.parse(variant.uri[len("index") : -len(".m3u8")])
        assert (spec.video is not None) == has_video and (spec.audio is None) == has_video, "one track per playlist"
        if has_video:
            assert info.audio in groups and info.resolution
            codecs = info.codecs.split(",")
            assert codecs[0].startswith(("avc1", "hvc1")) and all(c.startswith("mp4a") for c in codecs[1:])
    for name, text in rendered.items():
        if name == "master.m3u8":
            continue
        spec = TrackSpec.parse(name[len("index") : -len(".m3u8")])
        assert (spec.video is None) != (spec.audio is None)
        pl = m3u8.loads(text)
        assert pl.version == 7 and pl.is_endlist and pl.playlist_type == "vod"
        assert pl.segment_map[0].uri == init_segment_name(spec) == f"init{spec.suffix()}.mp4"
        assert [s.uri for s in pl.segments] == [f"seg-{n}{spec.suffix()}.m4s" for n in range(1, len(pl.segments) + 1)]
        durations = np.array([s.duration for s in pl.segments])
        assert (np.round(durations) <= pl.target_duration).all()
        assert durations.sum() == pytest.approx(media_set.presentations[0].duration_seconds, abs=0.002 * len(durations))


def test_demuxed_audio_groups():
    master = m3u8.loads(build_master_playlist(ladder(), "fmp4"))
    assert [m.uri for m in master.media] == ["index-f1-a1.m3u8"]  # identical audio in every rendition: one group
    assert {p.stream_info.audio for p in master.playlists} == {"audio"}
    distinct = m3u8.loads(render(SCENARIOS["url_set_distinct_audio"]())["master.m3u8"])
    assert [(m.group_id, m.uri) for m in distinct.media] == [("audio1", "index-f1-a1.m3u8"),
                                                             ("audio2", "index-f2-a1.m3u8")]  # fmt: skip
    assert [p.stream_info.audio for p in distinct.playlists] == ["audio1", "audio2"]


def test_choose_container():
    avc = SCENARIOS["single_file"]()
    hevc = SCENARIOS["hevc"]()
    assert choose_container(avc, "auto") == "ts" and choose_container(hevc, "auto") == "fmp4"
    assert choose_container(hevc, "ts") == "ts" and choose_container(hevc, "mpegts") == "ts"
    assert choose_container(avc, "fmp4") == "fmp4"
    assert choose_container(SCENARIOS["audio_only"](), "auto") == "ts"
    with pytest.raises(PackagerError) as e:
        choose_container(avc, "webm")
    assert e.value.code is ErrorCode.BAD_REQUEST


def test_ts_default_unchanged():
    media_set = SCENARIOS["single_file"]()
    assert build_master_playlist(media_set) == build_master_playlist(media_set, "ts")
    sel = media_set.resolve(TrackSpec())
    text = build_media_playlist(media_set, sel)
    assert "EXT-X-MAP" not in text and "#EXT-X-VERSION:3" in text and "seg-1-v1-a1.ts" in text


# -- real files played by ffmpeg's HLS demuxer -----------------------------------------------------------------------


@lru_cache(maxsize=None)
def fixture_set(key: str) -> tuple[MediaSet, tuple[bytes, ...]]:
    paths = [fixture_path(n) for n in FIXTURE_SETS[key]]
    return MediaSet([open_presentation(p) for p in paths], 4000), tuple(p.read_bytes() for p in paths)


def write_hls(folder: Path, media_set: MediaSet, datas) -> dict[str, tuple]:
    """master + media playlists + init + segments; returns {uri: (selection, segments)}."""
    rendered = render(media_set)
    out = {}
    for name, text in rendered.items():
        (folder / name).write_text(text)
        if name != "master.m3u8":
            selection = media_set.resolve(TrackSpec.parse(name[len("index") : -len(".m3u8")]))
            built = write_track_files(folder, media_set, selection, list(datas), init_segment_name(selection.spec),
                                      lambda i, spec: segment_name(i, spec, "m4s"))  # fmt: skip
            out[name] = (selection, built)
    return out


@pytest.mark.parametrize("key", sorted(FIXTURE_SETS))
def test_ffmpeg_hls_demuxer_plays_fmp4(key, tmp_path):
    """Every stream of the master (video variants and audio renditions) demuxes to exactly the source samples
    (bytes, in order) and decodes every frame without error; timestamps are ours plus ffmpeg's per-track
    normalisation of negative composition offsets (it adds -min(offset) to pts)."""
    media_set, datas = fixture_set(key)
    written = write_hls(tmp_path, media_set, datas)
    master = str(tmp_path / "master.m3u8")
    with av.logging.Capture() as logs:
        with av.open(master) as c:
            packets: dict[int, list] = {}
            for p in c.demux():
                if p.size:
                    packets.setdefault(p.stream.index, []).append((p.pts, bytes(p)))
        frames = {}
        for index in packets:
            with av.open(master) as c:
                frames[index] = sum(1 for _ in c.decode(c.streams[index]))
    errors = [entry for entry in logs if entry[0] <= av.logging.ERROR]
    assert not errors, errors[:5]
    assert len(packets) == len(written)
    assert frames == {index: len(got) for index, got in packets.items()}
    for uri, (selection, _) in written.items():
        (track,) = selection.tracks
        data = datas[selection.file_index]
        source = [data[o : o + s] for o, s in zip(track.samples.offsets.tolist(), track.samples.sizes.tolist())]
        match = [i for i, got in packets.items() if [b for _, b in got] == source]
        assert match, f"no ffmpeg stream carries exactly the samples of {uri}"
        pts = np.array([t for t, _ in packets[match[0]]], dtype=np.int64)
        offsets = track.samples.cts.astype(np.int64) - track.edit_offset
        np.testing.assert_array_equal(pts - max(0, -int(offsets.min())), track.presentation_pts())


def test_hevc_init_is_hvc1_and_plays_alone(tmp_path):
    media_set, datas = fixture_set("hevc")
    written = write_hls(tmp_path, media_set, datas)
    selection, built = written["index-v1.m3u8"]
    init = (tmp_path / "init-v1.mp4").read_bytes()
    assert b"hvc1" in init and b"hev1" not in init
    with av.open(io.BytesIO(init + b"".join(built))) as c:
        assert c.streams.video[0].codec_context.name == "hevc"
        assert sum(1 for _ in c.decode(video=0)) == len(selection.tracks[0].samples)
    master = m3u8.loads((tmp_path / "master.m3u8").read_text())
    assert master.playlists[0].stream_info.codecs.startswith("hvc1.")


@pytest.mark.parametrize("key", ["ladder", "two_audio", "hevc"])
def test_bandwidth_bounds_real_fmp4_sizes(key, tmp_path):
    """BANDWIDTH >= the real peak of (video segment + the largest audio rendition's segment) * 8 / EXTINF, and
    AVERAGE-BANDWIDTH >= the real average, with the fMP4 segments actually built."""
    media_set, datas = fixture_set(key)
    written = write_hls(tmp_path, media_set, datas)
    master = m3u8.loads((tmp_path / "master.m3u8").read_text())
    groups: dict[str, list[str]] = {}
    for media in master.media:
        groups.setdefault(media.group_id, []).append(media.uri)
    for variant in master.playlists:
        pl = m3u8.loads((tmp_path / variant.uri).read_text())
        durations = np.array([s.duration for s in pl.segments])
        sizes = np.array([len(b) for b in written[variant.uri][1]], dtype=np.float64)
        audio = [np.array([len(b) for b in written[uri][1]], dtype=np.float64) for uri in groups.get(
            variant.stream_info.audio, [])]  # fmt: skip
        peak_audio = max((float((a * 8 / durations).max()) for a in audio), default=0.0)
        avg_audio = max((float(a.sum() * 8 / durations.sum()) for a in audio), default=0.0)
        assert variant.stream_info.bandwidth >= (sizes * 8 / durations).max() + peak_audio - 1
        assert variant.stream_info.average_bandwidth >= sizes.sum() * 8 / durations.sum() + avg_audio - 1
