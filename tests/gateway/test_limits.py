"""Issue 10 parts 1 and 6 through a real `gateway serve`: the hostile files answer 500 BAD_DATA in every protocol,
quickly and without taking the node down, and the server's frame limits reach the packaging core."""
from __future__ import annotations

import shutil

import pytest

from fixtures.generate import fixture_path
from fixtures.hostile import HOSTILE, copy_sparse, hostile_path

from .processes import gateways, get  # noqa: F401 (gateways is a fixture)

MANIFESTS = ("/hls/{}/master.m3u8", "/hls/{}/index.m3u8", "/dash/{}/manifest.mpd", "/mss/{}/manifest",
             "/hds/{}/manifest.f4m")
SEGMENTS = ("/hls/{}/seg-1.ts", "/dash/{}/fragment-1-v1.m4s")


@pytest.fixture
def hostile_store(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    for name in HOSTILE:
        copy_sparse(hostile_path(name), store / f"{name}.mp4")  # keeps the sparse file's hole
    shutil.copyfile(fixture_path("title_180p.mp4"), store / "title.mp4")
    return store


def assert_bad_data(base: str, path: str, text: str = "") -> None:
    status, _, body = get(base, path)
    assert status == 500 and body.startswith(b"BAD_DATA: "), (path, status, body[:300])
    assert text.encode() in body, (path, body)


def test_hostile_files_are_bad_data_in_every_protocol(gateways, hostile_store):
    gw = gateways(store=hostile_store)
    reasons = {"huge_grid": "stts describes", "sparse_many_samples": "16777216 frames",
               "overlapping_samples": "claim 2250000000 bytes"}
    for name in HOSTILE:
        for url in MANIFESTS + SEGMENTS:
            assert_bad_data(gw.base, url.format(f"{name}.mp4"), reasons[name])
    for url in MANIFESTS:  # the node still serves real files
        assert get(gw.base, url.format("title.mp4"))[0] == 200, url
    assert get(gw.base, "/health")[0] == 200


def test_server_limits_reach_the_core(gateways, hostile_store):
    """--max-frame-count low: a real 12 s file is refused; high: the sparse file gets past the frame limit and is
    refused by its allocated size (st_blocks of the open file)."""
    low = gateways("--max-frame-count", "100", store=hostile_store)
    assert_bad_data(low.base, "/hls/title.mp4/index.m3u8", "more than the 100 we accept")
    high = gateways("--max-frame-count", str(1 << 26), store=hostile_store)
    assert_bad_data(high.base, "/dash/sparse_many_samples.mp4/manifest.mpd", "on disk")
    assert get(high.base, "/dash/title.mp4/manifest.mpd")[0] == 200
