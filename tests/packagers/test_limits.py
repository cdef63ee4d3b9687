"""Issue 10, parts 1 and 6: what a file may ask of the core is bounded, and checked before the allocation it guards.

Oracle for "before allocating": the tracemalloc peak (numpy reports its buffers to tracemalloc), never wall clock.
"""
from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest

from fixtures.generate import BENCH, RECIPES, fixture_path
from fixtures.hostile import audio_frames_file, dense_moov_file, hostile_path
from fixtures.mp4_variants import FEATURE_VARIANTS, variant_path
from packagers.errors import ErrorCode, PackagerError
from packagers.limits import Limits
from packagers.media_set import MediaSet
from packagers.model import CodecConfig, SampleTable, Track
from packagers.mp4 import read_presentation
from packagers.mp4.tables import check_chunk_overlap
from packagers.naming import TrackSpec
from packagers.segmenter import build_plan

from .synthetic import audio_track, presentation, video_track

SMALL_PEAK = 4 << 20  # what refusing a hostile file may allocate: its moov and small run arrays
LENIENT = Limits(max_frame_count=1 << 24, max_segments=1 << 40, max_segment_seconds=1e12, max_duration_seconds=1e15,
                 sparse_slack_bytes=1 << 60)


def parse_file(path, limits: Limits = Limits(), allocated: bool = True):
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        return read_presentation(lambda o, n: os.pread(fd, n, o), st.st_size, os.path.basename(path), limits=limits,
                                 allocated_bytes=st.st_blocks * 512 if allocated else None)
    finally:
        os.close(fd)


def peak_of(fn):
    """(result or the PackagerError raised, tracemalloc peak in bytes) of ``fn()``."""
    tracemalloc.start()
    try:
        try:
            result = fn()
        except PackagerError as e:
            result = e
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def assert_bad_data(result, text: str) -> None:
    assert isinstance(result, PackagerError), f"expected BAD_DATA ({text}), got {result!r}"
    assert result.code == ErrorCode.BAD_DATA and text in result.message, result.message


# --- the repro files of the issue -----------------------------------------------------------------------------------


def test_huge_grid_refused_at_parse_without_allocating():
    result, peak = peak_of(lambda: parse_file(hostile_path("huge_grid")))
    assert_bad_data(result, "check_budget: stts describes")
    assert peak < SMALL_PEAK


def test_huge_grid_plan_refused_before_the_grid_exists():
    """With durations allowed, the segment grid (10**9 entries) is what must be refused, before np.arange."""
    limits = Limits(max_duration_seconds=1e12)
    pres = parse_file(hostile_path("huge_grid"), limits)
    result, peak = peak_of(lambda: MediaSet([pres], 6000, limits=limits))
    assert_bad_data(result, "segments are more than 100000")
    assert peak < SMALL_PEAK


def test_sparse_many_samples_refused_by_the_frame_limit_without_allocating():
    result, peak = peak_of(lambda: parse_file(hostile_path("sparse_many_samples")))
    assert_bad_data(result, "check_budget: 16777216 frames")
    assert peak < SMALL_PEAK


def test_sparse_file_cannot_claim_bytes_it_does_not_hold():
    """With the frame limit out of the way, the allocated size (st_blocks) refuses the sparse file's 64 MB of
    one-byte samples before a table is expanded."""
    path = hostile_path("sparse_many_samples")
    assert os.stat(path).st_blocks * 512 < 1 << 20, "the fixture must be sparse on this filesystem"
    result, peak = peak_of(lambda: parse_file(path, Limits(max_frame_count=1 << 26)))
    assert_bad_data(result, "on disk in")
    assert peak < SMALL_PEAK


def test_overlapping_samples_refused():
    """Refused by the chunk overlap check alone (allocated size unknown), and by the byte budget when it is known
    (750 x 3 MB claimed from a 3 MB file)."""
    result, peak = peak_of(lambda: parse_file(hostile_path("overlapping_samples"), allocated=False))
    assert_bad_data(result, "check_chunk_overlap: sample data at")
    assert peak < SMALL_PEAK
    result, peak = peak_of(lambda: parse_file(hostile_path("overlapping_samples")))
    assert_bad_data(result, "check_budget: samples claim 2250000000 bytes")
    assert peak < SMALL_PEAK


def test_sample_data_inside_the_moov_is_refused(tmp_path):
    """A chunk offset pointing at the file's start (found by the fuzz suite: it served 200s of moov bytes as media)."""
    from fixtures.mp4_variants import rewrite, top

    def first_chunk_at_zero(nodes):
        stco = top(nodes, b"moov").find(b"trak", b"mdia", b"minf", b"stbl", b"stco")[0]
        stco.payload = stco.payload[:8] + b"\0\0\0\0" + stco.payload[12:]

    path = tmp_path / "chunk_at_zero.mp4"
    path.write_bytes(rewrite(fixture_path("title_180p.mp4").read_bytes(), first_chunk_at_zero))
    with pytest.raises(PackagerError, match=r"check_chunk_overlap: sample data at 0\.\.[0-9]+ lies in the moov box"):
        parse_file(path)
    parse_file(fixture_path("title_180p.mp4"))  # moov first (faststart): its real chunks all lie after it


def test_chunk_overlap_edges():
    touching = [(np.array([100, 0]), np.array([200, 100])), (np.array([200, 150]), np.array([300, 150]))]
    check_chunk_overlap(touching, "t")  # end == next start, and a zero-byte chunk, share nothing
    with pytest.raises(PackagerError, match="check_chunk_overlap"):
        check_chunk_overlap([(np.array([0]), np.array([101])), (np.array([100]), np.array([200]))], "t")


# --- limits at their edges ------------------------------------------------------------------------------------------


def parse_frames(samples: tuple[int, ...], limits: Limits):
    """An MP4 of one-byte AAC samples (``fixtures.hostile.audio_frames_file``), its sample bytes zeros read lazily."""
    head, length = audio_frames_file(samples)

    def read(offset: int, size: int) -> bytes:
        size = max(0, min(size, length - offset))
        part = head[offset : offset + size]
        return part + bytes(size - len(part))

    return read_presentation(read, length, "frames.mp4", limits=limits)


def test_frame_limit_edge_across_tracks():
    limits = Limits(max_frame_count=1000)
    assert sum(len(t.samples) for t in parse_frames((600, 400), limits).tracks) == 1000
    with pytest.raises(PackagerError, match="check_budget: 1001 frames"):
        parse_frames((600, 401), limits)


def test_default_frame_limit_edge_and_parse_memory_bound():
    """Exactly max_frame_count frames parse; one more frame is refused before its table exists."""
    limits = Limits()
    frames = limits.max_frame_count
    result, peak = peak_of(lambda: parse_frames((frames,), limits))
    assert not isinstance(result, PackagerError), result
    assert len(result.tracks[0].samples) == frames
    assert peak < Limits(max_frame_count=frames).request_memory_bytes, peak
    result, peak = peak_of(lambda: parse_frames((frames + 1,), limits))
    assert_bad_data(result, f"{frames + 1} frames")
    assert peak < SMALL_PEAK


def test_parse_memory_bound_on_the_densest_moov_we_accept(tmp_path):
    """max_frame_count frames with every table per sample (32 B of moov per frame, what the moov limit allows):
    the parse peak, moov included, stays under the bound stated in packagers.limits."""
    limits = Limits()
    frames = limits.max_frame_count
    head, length = dense_moov_file(frames)
    path = tmp_path / "dense.mp4"
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(length)
    del head
    result, peak = peak_of(lambda: parse_file(path, allocated=False))
    assert not isinstance(result, PackagerError), result
    assert len(result.tracks[0].samples) == frames
    assert peak < Limits(max_frame_count=frames).request_memory_bytes, peak


def test_moov_size_follows_the_frame_limit():
    limits = Limits(max_frame_count=100, moov_base_bytes=1000)
    assert limits.moov_size_limit == 1000 + 32 * 100
    with pytest.raises(PackagerError, match="read_presentation: moov of .* larger than the 4200"):
        parse_file(fixture_path("title_180p.mp4"), limits)


def test_timescale_above_the_limit():
    with pytest.raises(PackagerError, match="parse_mdhd: timescale 12288 is more than 1000"):
        parse_file(fixture_path("title_180p.mp4"), Limits(max_timescale=1000))


def test_max_segments_edge():
    pres = parse_file(fixture_path("audio_only.mp4"))
    count = build_plan(pres, 1000).count
    assert count > 5
    assert build_plan(pres, 1000, Limits(max_segments=count)).count == count
    with pytest.raises(PackagerError, match=f"build_plan: {count} segments are more than {count - 1}"):
        build_plan(pres, 1000, Limits(max_segments=count - 1))


def test_segment_of_exactly_an_hour_passes_one_second_more_fails():
    hour = presentation(video_track(7200, fps=1, timescale=1000, gop=3600, bframes=False))
    assert (build_plan(hour, 6000).durations() == 3600).all()
    longer = presentation(video_track(7200, fps=1, timescale=1000, gop=3601, bframes=False))
    with pytest.raises(PackagerError, match="check_plan: a segment of 3601 s is longer than 3600 s"):
        build_plan(longer, 6000)


def test_segment_shorter_than_a_millisecond_is_bad_data():
    """1 us frames: the whole presentation is one segment, which manifests would state as EXTINF:0.000 or PT0S."""
    build_plan(presentation(video_track(0.001, fps=10**6, timescale=10**6, bframes=False)), 6000)  # exactly 1 ms
    short = presentation(video_track(0.000999, fps=10**6, timescale=10**6, bframes=False))
    with pytest.raises(PackagerError, match="check_plan: a segment of 999 ticks .* is shorter than 0.001 s"):
        MediaSet([short], 6000)


def test_segment_frame_count_edge():
    pres = presentation(video_track(7200, fps=1, timescale=1000, gop=3600, bframes=False))
    build_plan(pres, 6000, Limits(segment_max_frame_count=3600))
    with pytest.raises(PackagerError, match="check_plan: segment 1 has 3600 frames, more than 3599"):
        build_plan(pres, 6000, Limits(segment_max_frame_count=3599))


# --- sanity of what manifests are made from -------------------------------------------------------------------------


def test_zero_duration_is_bad_data():
    n = 48
    table = SampleTable(np.arange(n, dtype=np.uint64) * 100, np.full(n, 100, np.uint32), np.zeros(n, np.int64),
                        np.zeros(n, np.int32), np.zeros(n, np.uint32), np.ones(n, bool))
    track = Track(1, "video", 12288, CodecConfig("avc1", "avc1.64001e"), table)
    with pytest.raises(PackagerError, match="check_tracks: track 1 has samples but no duration"):
        MediaSet([presentation(track)], 6000)


def aac_track_of(durations: np.ndarray) -> Track:
    """Track 2: AAC at 44.1 kHz with these sample durations, 300-byte samples laid out one after another."""
    n = len(durations)
    dts = np.concatenate(([0], np.cumsum(durations[:-1], dtype=np.int64)))
    table = SampleTable(np.arange(n, dtype=np.uint64) * 300 + 10_000_000, np.full(n, 300, np.uint32), dts,
                        np.zeros(n, np.int32), durations, np.ones(n, bool))
    return Track(2, "audio", 44100, CodecConfig("mp4a", "mp4a.40.2", sample_rate=44100, channels=2), table)


def test_a_track_segment_longer_than_the_limit_is_bad_data():
    """The plan (video, key frames every 2 s) is sane, but an audio sample lasting 4000 s makes that track's own
    segment span (DASH S@d, MSS d) longer than an hour."""
    video = video_track(4200, fps=1, timescale=1000, gop=2, bframes=False)
    audio = aac_track_of(np.array([1024, 1024, 4000 * 44100], np.uint32))  # last: the segments after it are empty
    media_set = MediaSet([presentation(video, audio)], 6000)
    selection = media_set.resolve(TrackSpec())
    media_set.segment_times(selection, video)
    with pytest.raises(PackagerError, match="MediaSet.segment_times: a segment of track 2"):
        media_set.segment_times(selection, audio)


def test_a_track_with_no_sample_in_a_middle_segment_is_bad_data():
    """An audio gap spanning a whole segment (found by the fuzz suite in a mutated HEVC file) would be a 0-length
    S@d in DASH and d="0" in MSS; only trailing empty segments (a track ending early) are left out of a timeline."""
    video = video_track(30, fps=1, timescale=1000, gop=2, bframes=False)
    durations = np.full(517, 1024, np.uint32)
    durations[258] = int(6.1 * 44100)  # the sample that starts at 5.99 s ends at 12.09 s: nothing starts in 6..12 s
    audio = aac_track_of(durations)
    media_set = MediaSet([presentation(video, audio)], 6000)
    selection = media_set.resolve(TrackSpec())
    media_set.segment_times(selection, video)
    with pytest.raises(PackagerError, match="track 2 has no sample in segment 2 but has in later ones"):
        media_set.segment_times(selection, audio)


# --- no regression on real files ------------------------------------------------------------------------------------


REAL = [n for n in RECIPES if n not in BENCH and n != "long_302s.mp4"]


@pytest.mark.parametrize("name", REAL + [f"variant:{v}" for v in FEATURE_VARIANTS])
def test_real_files_parse_under_the_default_limits_to_the_same_tables(name):
    path = variant_path(name.split(":")[1]) if name.startswith("variant:") else fixture_path(name)
    strict, lenient = parse_file(path), parse_file(path, LENIENT, allocated=False)
    assert len(strict.tracks) == len(lenient.tracks)
    for a, b in zip(strict.tracks, lenient.tracks):
        assert (a.track_id, a.timescale, a.edit_offset) == (b.track_id, b.timescale, b.edit_offset)
        for column in ("offsets", "sizes", "dts", "cts", "durations", "keyframe"):
            assert np.array_equal(getattr(a.samples, column), getattr(b.samples, column)), column
    media_set = MediaSet([strict], 6000)
    assert media_set.plans[0].count >= 1
