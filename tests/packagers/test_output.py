"""packagers/output.py: the bytes a muxer fills in place are the bytes it returns, on CPython and the fallback."""
from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

from packagers import output


@pytest.mark.parametrize("size", [1, 188, 1_600_000])
def test_written_view_is_the_returned_bytes(size):
    body, view = output.new_bytes(size)
    pattern = np.arange(size, dtype=np.uint64).astype(np.uint8)
    view[:] = pattern
    del view
    result = output.finished(body)
    assert type(result) is bytes and result == pattern.tobytes()
    if sys.implementation.name == "cpython":
        assert result is body  # no copy: the very object written
        assert sys.getrefcount(result) == 3  # result, body, getrefcount's argument: no view keeps it


def test_each_body_is_its_own_object_and_survives_collection():
    bodies = []
    for value in range(3):
        body, view = output.new_bytes(4096)
        view[:] = value
        del view
        bodies.append(output.finished(body))
    gc.collect()
    assert [b == bytes([v]) * 4096 for v, b in enumerate(bodies)] == [True] * 3
    assert len({id(b) for b in bodies}) == 3 and hash(bodies[0]) == hash(bytes(4096))


def test_portable_fallback_gives_equal_bytes(monkeypatch):
    monkeypatch.setattr(output, "_new_bytes", None)
    body, view = output.new_bytes(5)
    view[:] = [104, 101, 108, 108, 111]
    del view
    assert output.finished(body) == b"hello" and type(output.finished(body)) is bytes


def test_empty_body():
    body, view = output.new_bytes(0)
    assert output.finished(body) == b"" and len(view) == 0
