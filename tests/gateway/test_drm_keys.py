"""KeySource against a real DRM info service over loopback HTTP: what it asks, what it makes of the answers,
caching and single flight, and each way the service can fail; derived keys."""
from __future__ import annotations

import asyncio
import base64
import json
import socket
import pytest

from delivery_profiles import DrmConfig
from gateway.catalog.catalog import Entry, Partner
from gateway.catalog.delivery import hls_key
from gateway.catalog.drm import DrmAnswerError, DrmUnavailable, KeySource, derived_keys
from packagers.drm.keys import PLAYREADY, WIDEVINE, ContentKey, MediaKeys, Pssh

from .drm_service import STREAM_LIMIT, DrmService

SECRET = "0123456789abcdef" * 4
PARTNER = Partner(101, "Acme", SECRET)
ENTRY = Entry("0_abcd1234", 101, "Movie", True, ())
OTHER = Entry("0_efgh5678", 101, "Other", True, ())
BOUND = 30  # seconds: a generous bound on any one call, never a measured duration


def key(n: int, **fields) -> ContentKey:
    return ContentKey(bytes([n]) * 16, bytes([n + 100]) * 16, **fields)


ONE_KEY = MediaKeys((key(1),))
PER_TYPE = MediaKeys((
    key(2, iv=bytes(range(16)), track_type="video",
        pssh=(Pssh(WIDEVINE, b"\x08\x01\x12\x10" + bytes([2]) * 16), Pssh(PLAYREADY, b"<WRMHEADER/>"))),
    key(3, track_type="audio", pssh=(Pssh(WIDEVINE, b"\x08\x01\x12\x10" + bytes([3]) * 16),)),
))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def service():
    async with DrmService({ENTRY.id: ONE_KEY, OTHER.id: PER_TYPE}) as running:
        yield running


@pytest.fixture
async def source():
    keys = KeySource()
    yield keys
    await keys.close()


def drm(url: str, **fields) -> DrmConfig:
    return DrmConfig(service_url=url, **{"timeout_s": 5, **fields})


async def ask(source: KeySource, config: DrmConfig, entry: Entry = ENTRY, partner: Partner = PARTNER) -> MediaKeys:
    return await asyncio.wait_for(source.keys(partner, entry, config), BOUND)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- what is asked, what comes back

async def test_get_asks_with_the_entry_and_partner_in_the_query(service, source):
    assert await ask(source, drm(service.url)) == ONE_KEY
    (call,) = service.calls
    assert (call.method, call.path, call.body) == ("GET", "/drm/keys", b"")
    assert call.query == {"entry_id": ENTRY.id, "partner_id": "101"}


async def test_get_encodes_the_query_and_keeps_the_url_own_query(service, source):
    odd = Entry("0_a&b=c +é/?#%", 101, "Odd", True, ())
    service.keys[odd.id] = ONE_KEY
    assert await ask(source, drm(service.url + "?token=a%20b&x=1"), odd) == ONE_KEY
    assert service.calls[0].query == {"token": "a b", "x": "1", "entry_id": odd.id, "partner_id": "101"}


async def test_post_sends_a_json_body(service, source):
    assert await ask(source, drm(service.url + "?x=1", method="POST"), OTHER) == PER_TYPE
    (call,) = service.calls
    assert (call.method, call.content_type, call.query) == ("POST", "application/json", {"x": "1"})
    assert json.loads(call.body) == {"entry_id": OTHER.id, "partner_id": 101}


async def test_the_answer_parses_to_keys_per_track_type_with_pssh(service, source):
    keys = await ask(source, drm(service.url), OTHER)
    assert keys == PER_TYPE
    assert keys.for_kind("video").key_id == bytes([2]) * 16 and keys.for_kind("audio").key_id == bytes([3]) * 16
    assert keys.for_kind("video").iv == bytes(range(16)) and keys.for_kind("audio").iv is None
    assert [p.system_id for p in keys.pssh()] == [WIDEVINE, PLAYREADY, WIDEVINE]
    assert keys.for_kind("video").system(PLAYREADY).data == b"<WRMHEADER/>"


# ---------------------------------------------------------------- caching and single flight

async def test_answers_are_cached_for_the_ttl():
    clock = Clock()
    source = KeySource(clock=clock)
    try:
        async with DrmService({ENTRY.id: ONE_KEY}) as service:
            config = drm(service.url, ttl_s=60)
            assert await ask(source, config) == ONE_KEY
            clock.now += 59.9
            assert await ask(source, config) == ONE_KEY
            assert service.requests == 1
            clock.now += 0.1
            assert await ask(source, config) == ONE_KEY
            assert service.requests == 2
            assert await ask(source, config) == ONE_KEY  # the new answer is cached in turn
            assert service.requests == 2
            assert source.stats() == {"cached": 1, "hits": 2, "requests": 2, "failures": 0}
    finally:
        await source.close()


async def test_ttl_zero_asks_every_time(service, source):
    for _ in range(3):
        await ask(source, drm(service.url, ttl_s=0))
    assert service.requests == 3 and source.stats()["cached"] == 0


async def test_the_cache_key_holds_partner_entry_and_service_url(service, source):
    await ask(source, drm(service.url))
    await ask(source, drm(service.url), OTHER)
    await ask(source, drm(service.url + "?v=2"))
    await ask(source, drm(service.url), ENTRY, Partner(102, "Other partner", SECRET))
    await ask(source, drm(service.url))  # the first again: cached
    assert service.requests == 4


async def test_the_cache_is_a_bounded_lru(service):
    source = KeySource(max_entries=2)
    try:
        third = Entry("0_ijkl9012", 101, "Third", True, ())
        service.keys[third.id] = ONE_KEY
        await ask(source, drm(service.url))  # ENTRY
        await ask(source, drm(service.url), OTHER)
        await ask(source, drm(service.url))  # ENTRY used last: OTHER is the least recently used
        await ask(source, drm(service.url), third)  # evicts OTHER
        assert source.stats()["cached"] == 2 and service.requests == 3
        await ask(source, drm(service.url))
        assert service.requests == 3
        await ask(source, drm(service.url), OTHER)
        assert service.requests == 4
    finally:
        await source.close()


async def test_concurrent_misses_share_one_call(service, source):
    answers = await asyncio.wait_for(asyncio.gather(*(source.keys(PARTNER, ENTRY, drm(service.url))
                                                      for _ in range(20))), BOUND)
    assert answers == [ONE_KEY] * 20
    assert service.requests == 1


async def test_a_waiter_that_goes_away_does_not_cancel_the_others_call(service, source):
    service.mode, service.delay = "slow", 0.5
    first = asyncio.ensure_future(source.keys(PARTNER, ENTRY, drm(service.url)))
    second = asyncio.ensure_future(source.keys(PARTNER, ENTRY, drm(service.url)))
    await asyncio.sleep(0)
    first.cancel()
    assert await asyncio.wait_for(second, BOUND) == ONE_KEY
    assert service.requests == 1 and first.cancelled()


# ---------------------------------------------------------------- the service fails: no answer → DrmUnavailable

async def test_http_500_is_unavailable_not_retried_and_not_cached(service, source):
    service.mode = "error"
    with pytest.raises(DrmUnavailable, match=r"^KeySource\.keys: partner 101 entry 0_abcd1234: .*HTTP 500$"):
        await ask(source, drm(service.url))
    assert service.requests == 1  # not retried within the request
    service.mode = "ok"
    assert await ask(source, drm(service.url)) == ONE_KEY  # the failure was not cached: asked again
    assert service.requests == 2
    assert source.stats() == {"cached": 1, "hits": 0, "requests": 2, "failures": 1}


async def test_concurrent_requests_share_a_failure_then_the_next_asks_again(service, source):
    service.mode = "error"
    results = await asyncio.wait_for(asyncio.gather(*(source.keys(PARTNER, ENTRY, drm(service.url))
                                                      for _ in range(20)), return_exceptions=True), BOUND)
    assert all(isinstance(r, DrmUnavailable) for r in results) and service.requests == 1
    with pytest.raises(DrmUnavailable):
        await ask(source, drm(service.url))
    assert service.requests == 2


async def test_unknown_entry_404_is_unavailable(service, source):
    with pytest.raises(DrmUnavailable, match="HTTP 404"):
        await ask(source, drm(service.url), Entry("0_zzzzzzzz", 101, "Unknown", True, ()))


async def test_a_service_that_never_answers_times_out(service, source):
    service.mode = "hang"
    with pytest.raises(DrmUnavailable, match=r"no answer within 0\.5 s"):
        await asyncio.wait_for(source.keys(PARTNER, ENTRY, drm(service.url, timeout_s=0.5)), 0.5 + 10)
    service.mode = "ok"
    assert await ask(source, drm(service.url, timeout_s=0.5)) == ONE_KEY


async def test_slow_but_in_time_is_fine_too_slow_is_unavailable(service, source):
    service.mode, service.delay = "slow", 0.3
    assert await ask(source, drm(service.url, timeout_s=10)) == ONE_KEY
    service.delay = 60
    with pytest.raises(DrmUnavailable, match="no answer within"):
        await asyncio.wait_for(source.keys(PARTNER, OTHER, drm(service.url, timeout_s=0.5)), 0.5 + 10)


async def test_connection_refused_is_unavailable(source):
    with pytest.raises(DrmUnavailable, match="unreachable"):
        await ask(source, drm(f"http://127.0.0.1:{closed_port()}/drm"))
    assert source.stats()["failures"] == 1


# ---------------------------------------------------------------- an unusable answer → DrmAnswerError

@pytest.mark.parametrize("mode, reason", [
    ("malformed", "not JSON"),
    ("short_kid", r"\[0\]\.key_id must be 16 bytes, got 15"),
    ("empty", "expected an array"),
    ("oversize_declared", "larger than 1048576 bytes"),
])
async def test_unusable_answers(service, source, mode, reason):
    service.modes[ENTRY.id] = mode
    with pytest.raises(DrmAnswerError, match=r"^KeySource\.keys: partner 101 entry 0_abcd1234: .*" + reason) as e:
        await ask(source, drm(service.url))
    message = str(e.value)
    assert "\n" not in message
    for secret in (ONE_KEY.keys[0].key, ONE_KEY.keys[0].key_id[:15]):
        assert secret.hex() not in message and base64.b64encode(secret).decode() not in message
    assert await ask(source, drm(service.url), OTHER) == PER_TYPE  # the other entries are unaffected
    service.modes.clear()
    assert await ask(source, drm(service.url)) == ONE_KEY  # not cached


async def test_an_endless_answer_is_refused_without_reading_it(service, source):
    service.mode = "oversize"
    with pytest.raises(DrmAnswerError, match="larger than"):
        await ask(source, drm(service.url, timeout_s=20))
    await service.close()  # the streaming handler stops: its count is final
    assert service.streamed < STREAM_LIMIT // 4  # 1 MB read, then the connection dropped (plus socket buffers)


# ---------------------------------------------------------------- derived keys

async def test_without_a_service_url_the_keys_are_derived(source):
    assert await ask(source, DrmConfig()) == derived_keys(SECRET, ENTRY.id)
    assert source.stats()["requests"] == 0


def test_derived_keys_are_stable_and_differ_per_entry_and_secret():
    keys = derived_keys(SECRET, ENTRY.id)
    (only,) = keys.keys
    assert keys == derived_keys(SECRET, ENTRY.id)
    assert len({only.key_id, only.key, only.iv}) == 3 and not only.pssh and only.track_type is None
    assert keys.for_kind("audio") is keys.for_kind("video") is only
    others = [derived_keys(SECRET, OTHER.id).keys[0], derived_keys("f" * 64, ENTRY.id).keys[0]]
    for other in others:
        assert {other.key_id, other.key, other.iv}.isdisjoint({only.key_id, only.key, only.iv})
    # fixed vectors: every node, and every later version, must derive these very bytes (players and licenses
    # hold them); and the content key is not the entry's HLS AES-128 key
    assert (only.key_id.hex(), only.key.hex(), only.iv.hex()) == (
        "dea2ff4cfc8f2e876f07463f4ba2b7e2", "083677b9c7eac670e222597efe00f16b", "b8d7a1d447be804c2e1e018a508fb086")
    assert only.key != hls_key(SECRET, ENTRY.id)
