"""The fast path (gateway/http/fast_path.py) answers exactly what the full request path answers, and steps aside as
soon as anything the answer depended on changes: the catalog, the file, the cached body, or the request's headers.

Whether a request took the fast path is read from /status: the full path opens the media set (a metadata-cache hit),
the fast path does not, and both count a response-cache hit.
"""
from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from fixtures.generate import fixture_path
from gateway.catalog.catalog import Partner, catalog_dir, write_entry, write_partner

from .conftest import status
from .test_access_every_url import entry

TITLE = "title_360p.mp4"
URLS = [f"/hls/{TITLE}/master.m3u8", f"/hls/{TITLE}/index-v1-a1.m3u8", f"/hls/{TITLE}/seg-2-v1-a1.ts",
        f"/dash/{TITLE}/manifest.mpd", f"/dash/{TITLE}/init-v1.mp4", f"/dash/{TITLE}/fragment-2-a1.m4s",
        f"/mss/{TITLE}/Manifest", f"/hds/{TITLE}/manifest.f4m", f"/hds/{TITLE}/frag-v1-a1-Seg1-Frag2",
        f"/hls/title_,360p,240p,.mp4.urlset/master.m3u8"]


def headers_of(response) -> dict:
    return {k: v for k, v in response.headers.items() if k != "Date"}


async def counters(client) -> tuple[int, int]:
    """(media set lookups that hit, response cache hits) so far."""
    s = await status(client)
    return s["media_set_cache"]["hits"], s["segment_cache"]["hits"]


async def fetch(client, url: str, method: str = "GET", **headers):
    response = await client.request(method, url, headers=headers)
    return response, await response.read()


@pytest.mark.parametrize("url", URLS)
async def test_the_fast_answer_is_the_full_answer(make_client, url):
    client = await make_client()
    full, full_body = await fetch(client, url)  # builds and remembers
    assert full.status == 200 and full_body
    before = await counters(client)
    fast, fast_body = await fetch(client, url)
    head, head_body = await fetch(client, url, "HEAD")
    after = await counters(client)
    assert after[0] - before[0] == 0, "the media set was opened: the full path answered"
    assert after[1] - before[1] == 2, "both answers are response-cache hits"
    assert (fast.status, headers_of(fast), fast_body) == (200, headers_of(full), full_body)
    assert (head.status, headers_of(head), head_body) == (200, headers_of(full), b"")


async def test_conditional_and_range_requests_take_the_full_path(make_client):
    client = await make_client()
    url = URLS[2]
    full, body = await fetch(client, url)
    before = await counters(client)
    cached, _ = await fetch(client, url, **{"If-None-Match": full.headers["ETag"]})
    assert cached.status == 304
    part, part_body = await fetch(client, url, Range="bytes=0-99")
    assert part.status == 206 and part_body == body[:100]
    stale, stale_body = await fetch(client, url, **{"If-None-Match": '"other"'})
    assert stale.status == 200 and stale_body == body
    assert (await counters(client))[0] - before[0] == 3  # each one opened the media set


async def test_a_catalog_change_is_obeyed_at_once(make_client, store):
    """A public file answered from the fast path becomes part of a secured entry: the next request after the
    catalog reload is refused, as on the full path."""
    # the stat cache outlives the test: only the catalog view can send the request back to the full path
    client = await make_client(catalog_ttl=0.2, stat_cache_seconds=60)
    url = URLS[0]
    for _ in range(3):
        assert (await fetch(client, url))[0].status == 200
    directory = catalog_dir(store)
    write_partner(directory, Partner(101, "P101", "a1" * 32, {}))
    write_entry(directory, entry("0_secure01", 101, [TITLE], secured=True))
    deadline = time.monotonic() + 20
    while (response := (await fetch(client, url))[0]).status == 200:
        assert time.monotonic() < deadline, "still served after the entry became secured"
        await asyncio.sleep(0.05)
    assert response.status == 403


async def test_a_replaced_file_is_noticed_as_on_the_full_path(make_client, store):
    """Within stat_cache_seconds both paths answer from the identity they saw; after it, the new file's bytes."""
    client = await make_client(stat_cache_seconds=0.3)
    url = URLS[0]  # the master playlist names the resolution: 360p before, 240p after
    first, first_body = await fetch(client, url)
    assert (await fetch(client, url))[1] == first_body
    shutil.copyfile(fixture_path("title_240p.mp4"), store / "incoming.mp4")
    (store / "incoming.mp4").replace(store / TITLE)
    await asyncio.sleep(0.5)
    after, after_body = await fetch(client, url)
    assert after.status == 200 and after.headers["ETag"] != first.headers["ETag"] and after_body != first_body
    # and the fast path now answers the new file
    again, again_body = await fetch(client, url)
    assert (headers_of(again), again_body) == (headers_of(after), after_body)


async def test_an_evicted_body_is_built_again(make_client):
    """The fast path never keeps a body: once the response cache dropped it, the full path builds it again."""
    client = await make_client(segment_cache_mb=0.5)  # one 360p segment and a playlist fit, not two segments
    first = URLS[2]
    other = f"/hls/{TITLE}/seg-3-v1-a1.ts"
    _, body = await fetch(client, first)
    await fetch(client, other)  # evicts the first segment
    before = await status(client)
    response, again = await fetch(client, first)
    after = await status(client)
    assert response.status == 200 and again == body
    assert after["segment_cache"]["builds"] - before["segment_cache"]["builds"] == 1


async def test_without_a_stat_cache_every_request_takes_the_full_path(make_client):
    """stat_cache_seconds = 0: every request stats its files, so no answer is ever vouched for."""
    client = await make_client(stat_cache_seconds=0)
    url = URLS[0]
    await fetch(client, url)
    before = await counters(client)
    for _ in range(3):
        assert (await fetch(client, url))[0].status == 200
    assert (await counters(client))[0] - before[0] == 3


async def test_a_public_file_linked_into_a_secured_entry_is_refused_after_the_stat_ttl(make_client, store):
    """The remembered answer of a public file whose inode then becomes a secured flavor (a hardlink under the
    flavor's path): once the stat cache lets go of the old identity, the full path sees the new ctime, the catalog
    rescans its identities and the file is refused, exactly as without the fast path."""
    directory = catalog_dir(store)
    write_partner(directory, Partner(101, "P101", "a1" * 32, {}))
    write_entry(directory, entry("0_secure01", 101, ["flavor.mp4"], secured=True))  # its file does not exist yet
    client = await make_client(catalog_ttl=0.2, stat_cache_seconds=0.3)
    url = URLS[0]
    for _ in range(3):
        assert (await fetch(client, url))[0].status == 200
    (store / "flavor.mp4").hardlink_to(store / TITLE)
    deadline = time.monotonic() + 20
    while (response := (await fetch(client, url))[0]).status == 200:
        assert time.monotonic() < deadline, "a secured inode is still served under its public name"
        await asyncio.sleep(0.05)
    assert response.status == 403


def test_what_is_remembered_stays_bounded(store):
    """Hostile clients cannot grow it: at most max_answers paths, only the current catalog view is kept, and the
    ETags remembered per media set are capped."""
    from gateway.catalog.catalog import Catalog, CatalogView
    from gateway.http.fast_path import FastAnswers, PackagedAnswer
    from gateway.origin.cache import ByteLRU, StatCache
    from gateway.origin.packaging import Validators
    from gateway.origin.store import Store

    answers = FastAnswers(Catalog(store), StatCache(1.0), ByteLRU(1 << 20), max_answers=8)
    answer = PackagedAnswer((TITLE,), (), ("key",), "text/plain", {})
    old, new = CatalogView(), CatalogView()
    for i in range(20):
        answers.remember(f"/hls/{i}/master.m3u8", answer, old, ("hls", "manifest"))
    assert len(answers._answers) == 8 and "/hls/19/master.m3u8" in answers._answers
    answers.remember("/hls/new/master.m3u8", answer, new, ("hls", "manifest"))
    assert list(answers._answers) == ["/hls/new/master.m3u8"]  # answers made under the old view are gone with it

    validators = Validators((Store(store).identify(TITLE),), (6000, False))
    tags = {validators.etag(("hls", "seg", i)) for i in range(1000)}
    assert len(tags) == 1000  # every key its own tag
    assert len(validators._etags) <= Validators.MAX_ETAGS
    assert validators.etag(("hls", "seg", 3)) == Validators((Store(store).identify(TITLE),), (6000, False)).etag(
        ("hls", "seg", 3))  # a remembered tag is the tag
