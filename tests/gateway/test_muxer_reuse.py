"""One TsMuxer per media set and selection (gateway/origin/packaging.py ``Packaging.muxer``): reused by every segment
of the selection, and gone with its media set (the metadata cache's byte bound stays true)."""
from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor

from gateway.http.products import build_segment
from gateway.origin.cache import Caches
from gateway.origin.packaging import Packaging
from gateway.origin.store import Store
from gateway.settings import Settings
from packagers.media_set import MediaSet
from packagers.mp4 import open_presentation
from packagers.naming import TrackSpec
from packagers.ts import TsMuxer


def test_one_muxer_per_selection_gone_with_its_media_set(store):
    settings = Settings(store=store)
    with ThreadPoolExecutor(1) as executor:
        packaging = Packaging(settings, executor, Caches(settings))
        media_set = MediaSet([open_presentation(store / "title_360p.mp4")], 4000)
        both, video = media_set.resolve(TrackSpec(video=1, audio=1)), media_set.resolve(TrackSpec(video=1))
        first = packaging.muxer(media_set, both, "ts", TsMuxer)
        assert packaging.muxer(media_set, media_set.resolve(TrackSpec(video=1, audio=1)), "ts", TsMuxer) is first
        assert packaging.muxer(media_set, video, "ts", TsMuxer) is not first
        # the reused muxer builds, segment after segment, what a fresh one builds
        file = Store(store).identify("title_360p.mp4")
        for index in (1, 0, 1):
            reused = build_segment(packaging.store, file, media_set, both, index, first.build)
            assert reused == build_segment(packaging.store, file, media_set, both, index, TsMuxer(both.tracks).build)
        del file
        del media_set, both, video, first
        gc.collect()
        assert len(packaging._muxers) == 0
