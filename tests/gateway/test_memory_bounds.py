"""What a worker keeps between builds is bounded (docs/performance.md, memory): a thread's read buffer and TS
payload buffer never grow past their caps, and bigger segments get buffers that go with the build."""
from __future__ import annotations

import os

import numpy as np

from gateway.origin import store as store_module
from gateway.origin.store import SCRATCH_KEEP, read_into_scratch
from packagers.media_data import ReadRequest
from packagers.ts import muxer as ts_muxer


def test_read_buffer_kept_by_a_thread_is_capped_and_big_reads_get_their_own(tmp_path):
    data = np.random.default_rng(7).integers(0, 256, 3 * SCRATCH_KEEP, dtype=np.uint8).tobytes()
    path = tmp_path / "media.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for size in (1000, SCRATCH_KEEP // 2 + 1, SCRATCH_KEEP):  # doubling would pass the cap: it stops there
            (view,) = read_into_scratch(fd, [ReadRequest(5, size)])
            assert bytes(view) == data[5 : 5 + size] and view.obj is store_module._scratch.buffer
            assert len(store_module._scratch.buffer) <= SCRATCH_KEEP
        big = [ReadRequest(0, SCRATCH_KEEP), ReadRequest(2 * SCRATCH_KEEP, SCRATCH_KEEP // 2)]
        views = read_into_scratch(fd, big)
        assert [bytes(v) for v in views] == [data[0:SCRATCH_KEEP], data[2 * SCRATCH_KEEP : 5 * SCRATCH_KEEP // 2]]
        assert views[0].obj is not store_module._scratch.buffer  # its own buffer, freed with the build
        assert len(store_module._scratch.buffer) <= SCRATCH_KEEP
    finally:
        os.close(fd)


def test_ts_payload_buffer_kept_by_a_thread_is_capped():
    scratch = ts_muxer._Scratch()
    scratch.payload_for(ts_muxer.PAYLOAD_BUFFER_KEEP)
    scratch.release_large()
    assert scratch.payload_size == ts_muxer.PAYLOAD_BUFFER_KEEP  # kept: at the cap
    scratch.payload_for(ts_muxer.PAYLOAD_BUFFER_KEEP + 188)
    scratch.release_large()
    assert scratch.payload_size == 0 and len(scratch.payload.getbuffer()) == 0  # above it: let go after the build
