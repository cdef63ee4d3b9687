"""TS segments read straight into place (gateway/origin/store.py ``read_scatter``, products.build_segment): preadv2
through ctypes with an iovec array built by numpy, checked against the build from gathered samples.

Everything here reads a real file on a real file system; short reads are made real by giving the kernel a shorter
iovec array than asked for, and a truncated file is truncated on disk.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gateway.http.products import Scatter, build_segment
from gateway.origin import store as store_module
from gateway.origin.packaging import parse_presentation
from gateway.origin.store import FileChanged, Store, WouldBlock
from packagers.errors import ErrorCode, PackagerError
from packagers.media_data import ScatterRead
from packagers.media_set import MediaSet
from packagers.naming import TrackSpec
from packagers.ts import TsMuxer

from .conftest import add_to_store


def opened(store: Path, name: str = "title_360p.mp4"):
    add_to_store(store, name)
    content = Store(store)
    file = content.identify(name)
    media_set = MediaSet([parse_presentation(content, file)], 2000, False)
    selection = media_set.resolve(TrackSpec())
    return content, file, media_set, selection, TsMuxer(selection.tracks)


def both_ways(content, file, media_set, selection, muxer, index, nowait=False) -> tuple[bytes, bytes]:
    gathered = build_segment(content, file, media_set, selection, index, muxer.build, nowait=nowait)
    scattered = build_segment(content, file, media_set, selection, index, muxer.build, nowait=nowait,
                              scatter=Scatter(muxer.prepare))
    return gathered, scattered


@pytest.mark.parametrize("name", ["title_360p.mp4", "two_audio.mp4", "hevc.mp4", "audio_only.mp4"])
def test_scattered_segments_equal_gathered_ones(store, name):
    content, file, media_set, selection, muxer = opened(store, name)
    count = media_set.plan(selection).count
    assert count >= 3
    for index in range(count):
        gathered, scattered = both_ways(content, file, media_set, selection, muxer, index)
        assert scattered == gathered
    assert muxer.prepare(0, media_set.segment_tables(selection, 0)) is not None  # the scatter path was taken


def test_without_preadv2_the_views_are_read_with_os_preadv(store, monkeypatch):
    content, file, media_set, selection, muxer = opened(store)
    expected = both_ways(content, file, media_set, selection, muxer, 1)[0]
    monkeypatch.setattr(store_module, "_preadv2", None)
    assert both_ways(content, file, media_set, selection, muxer, 1)[1] == expected


def test_short_reads_go_on_where_they_stopped(store, monkeypatch):
    """The kernel may return fewer bytes than asked (NFS, signals): here it is handed at most 3,000 bytes of iovecs
    per call, cut inside a piece, and the segment still comes out whole."""
    content, file, media_set, selection, muxer = opened(store)
    expected = both_ways(content, file, media_set, selection, muxer, 1)[0]
    real, calls = store_module._call_preadv2, []

    def short(fd, iov, offset, flags):
        ends = np.cumsum(iov[:, 1].astype(np.int64))
        keep = min(len(iov), int(np.searchsorted(ends, 3000)) + 1)
        cut = iov[:keep].copy()
        cut[-1, 1] -= max(0, int(ends[keep - 1]) - 3000)
        calls.append(int(cut[:, 1].sum()))
        return real(fd, cut, offset, flags)

    monkeypatch.setattr(store_module, "_call_preadv2", short)
    scattered = build_segment(content, file, media_set, selection, 1, muxer.build, scatter=Scatter(muxer.prepare))
    assert scattered == expected
    assert len(calls) > 10 and max(calls) == 3000


def test_a_file_truncated_while_read_is_file_changed(store):
    content, file, media_set, selection, muxer = opened(store)
    last = media_set.plan(selection).count - 1
    with content.open(file) as reader:
        job = muxer.prepare(last, media_set.segment_tables(selection, last))
        os.truncate(store / "title_360p.mp4", file.size // 2)
        with job, pytest.raises(FileChanged):
            reader.read_scatter(job.reads)


def test_samples_past_the_end_of_the_file_are_bad_data(store):
    content, file, media_set, selection, muxer = opened(store)
    into = bytearray(100)
    with content.open(file) as reader:
        with pytest.raises(PackagerError) as e:
            reader.read_scatter([ScatterRead(file.size - 50, 100, into, np.array([0]), np.array([100]))])
        assert e.value.code is ErrorCode.BAD_DATA
        assert bytes(into[50:]) == bytes(50)  # the part that exists was read, nothing else written


def test_pieces_outside_their_buffer_are_refused_before_any_read(store):
    content, file, media_set, selection, muxer = opened(store)
    into = bytearray(100)
    bad = [ScatterRead(0, 101, into, np.array([0]), np.array([101])),  # past the end of ``into``
           ScatterRead(0, 10, into, np.array([95, 0]), np.array([6, 4])),
           ScatterRead(0, 10, into, np.array([0]), np.array([-10])),
           ScatterRead(0, 1 << 20, into, np.array([-1]), np.array([1 << 20])),  # more skipped bytes than the sink
           ScatterRead(0, 1025, into, np.zeros(1025, dtype=np.int64), np.ones(1025, dtype=np.int64))]  # > IOV_MAX
    with content.open(file) as reader:
        for r in bad:
            with pytest.raises(ValueError):
                reader.read_scatter([r])
    assert into == bytearray(100)


def test_nowait_reads_are_whole_or_would_block(store):
    from .test_inline_builds import drop_from_page_cache

    content, file, media_set, selection, muxer = opened(store)
    if not store_module.RWF_NOWAIT or not store_module.probe_nowait_reads(file):
        pytest.skip("this file system has no non-blocking reads")
    (store / "title_360p.mp4").read_bytes()
    gathered, scattered = both_ways(content, file, media_set, selection, muxer, 2, nowait=True)
    assert scattered == gathered
    drop_from_page_cache(store / "title_360p.mp4")
    with pytest.raises(WouldBlock):
        build_segment(content, file, media_set, selection, 2, muxer.build, nowait=True,
                      scatter=Scatter(muxer.prepare))
    assert build_segment(content, file, media_set, selection, 2, muxer.build,
                         scatter=Scatter(muxer.prepare)) == scattered


async def test_served_ts_segments_are_read_into_place(make_client, store, monkeypatch):
    """Over HTTP, a TS segment comes from the scatter path (whether built on the loop or in the executor) and is
    byte for byte the segment built from gathered samples."""
    from gateway.origin.store import FileReader

    seen: list[bool] = []
    real = FileReader.read_scatter

    def recording(self, reads, nowait=False):
        seen.append(nowait)
        return real(self, reads, nowait)

    monkeypatch.setattr(FileReader, "read_scatter", recording)
    client = await make_client(segment_cache_mb=0)
    response = await client.get("/hls/title_360p.mp4/seg-2-v1-a1.ts")
    assert response.status == 200
    served = await response.read()
    assert seen  # the scatter path ran

    content = Store(store)
    file = content.identify("title_360p.mp4")
    media_set = MediaSet([parse_presentation(content, file)], 6000, False)  # the server's default duration
    selection = media_set.resolve(TrackSpec(None, 1, 1))
    muxer = TsMuxer(selection.tracks)
    assert served == build_segment(content, file, media_set, selection, 1, muxer.build)  # gathered: no scatter
