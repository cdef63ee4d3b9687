"""Where an entry's content keys come from: a partner's DRM info service, or keys derived from its secret.

A partner with a ``drm.service_url`` is asked per entry, the way nginx-vod-module asks its ``vod_drm_upstream``:
GET ``<url>?entry_id=…&partner_id=…`` or a POST of ``{"entry_id": …, "partner_id": …}``, answered with the JSON of
``packagers.drm.keys.parse_drm_info``. Answers are cached per (partner, entry, service URL) for ``drm.ttl_s`` seconds
in a bounded LRU, and concurrent misses share one call (single flight). A failed call is not cached, so the next
request asks again, and it is not retried within a request: the player's own retry is the retry. Redirects are
not followed (a 3xx is a status not 200), as nginx-vod-module's upstream does not follow them either.

Two failures, kept apart because the gateway answers them differently: ``DrmUnavailable`` (no answer: refused,
timed out, status not 200 → 503, and never clear media) and ``DrmAnswerError`` (an answer that gives no usable keys
→ 500 with one log line). Their messages are one line, name the partner and the entry, and never hold key bytes.

Without a service URL the keys are derived from the partner secret (HMAC-SHA256, like ``delivery.hls_key``), so
every node serves the same keys without shared state.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from typing import Callable

import aiohttp
from aiohttp import web
from yarl import URL

from delivery_profiles import DrmConfig
from packagers.drm.keys import MAX_ANSWER_BYTES, ContentKey, MediaKeys, parse_drm_info
from packagers.errors import PackagerError

from .catalog import Entry, Partner

MAX_CACHED = 10_000  # entries; an answer is a few hundred bytes
MAX_REASON = 200


def _derive(secret: str, label: str, entry_id: str) -> bytes:
    # labels differ before the ':' so no (label, entry) pair can produce another's message
    return hmac.new(secret.encode(), f"{label}:{entry_id}".encode(), hashlib.sha256).digest()[:16]


def derived_keys(secret: str, entry_id: str) -> MediaKeys:
    """One key for every track, its key id, key and IV derived from the partner secret and the entry id."""
    return MediaKeys((ContentKey(_derive(secret, "drm-key-id", entry_id), _derive(secret, "drm-key", entry_id),
                                 _derive(secret, "drm-iv", entry_id)),))


class DrmError(Exception):
    """A DRM info service gave no keys; ``reason`` is one line without key bytes."""

    def __init__(self, function: str, partner_id: int, entry_id: str, reason: str):
        reason = " ".join(reason.split())[:MAX_REASON]
        super().__init__(f"{function}: partner {partner_id} entry {entry_id}: {reason}")
        self.partner_id, self.entry_id, self.reason = partner_id, entry_id, reason


class DrmUnavailable(DrmError):
    """The service did not answer (connection refused, timeout, status not 200): 503, never clear media."""


class DrmAnswerError(DrmError):
    """The service answered something unusable (not JSON, wrong key or key id size, no key, too large): 500."""


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes | None:
    """The body, or None as soon as it exceeds MAX_ANSWER_BYTES (nothing more is read)."""
    if response.content_length is not None and response.content_length > MAX_ANSWER_BYTES:
        return None
    body = bytearray()
    while chunk := await response.content.read(MAX_ANSWER_BYTES + 1 - len(body)):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            return None
    return bytes(body)


class KeySource:
    """The keys of an entry, per its partner's DRM settings; one per app (``KEY_SOURCE``), closed at cleanup."""

    def __init__(self, max_entries: int = MAX_CACHED, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[tuple, tuple[float, MediaKeys]] = OrderedDict()  # key → (fetched at, keys)
        self._flights: dict[tuple, asyncio.Future] = {}
        self._session: aiohttp.ClientSession | None = None
        self._hits = self._requests = self._failures = 0

    async def keys(self, partner: Partner, entry: Entry, drm: DrmConfig) -> MediaKeys:
        if not drm.service_url:
            return derived_keys(partner.secret, entry.id)
        key = (partner.id, entry.id, drm.service_url)
        cached = self._cache.get(key)
        if cached is not None:
            if self._clock() - cached[0] < drm.ttl_s:
                self._cache.move_to_end(key)
                self._hits += 1
                return cached[1]
            del self._cache[key]
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = asyncio.ensure_future(self._fetch(key, partner, entry, drm))
            flight.add_done_callback(_retrieve)
        # shielded: a player that goes away does not cancel the call the others wait for
        return await asyncio.shield(flight)

    async def _fetch(self, key: tuple, partner: Partner, entry: Entry, drm: DrmConfig) -> MediaKeys:
        self._requests += 1
        try:
            keys = await self._ask(partner, entry, drm)
        except Exception:
            self._failures += 1
            raise
        finally:
            if self._flights.get(key) is asyncio.current_task():
                del self._flights[key]
        if drm.ttl_s > 0:
            self._cache[key] = (self._clock(), keys)
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return keys

    async def _ask(self, partner: Partner, entry: Entry, drm: DrmConfig) -> MediaKeys:
        def fail(cls: type[DrmError], reason: str) -> DrmError:
            return cls("KeySource.keys", partner.id, entry.id, reason)

        try:
            async with asyncio.timeout(drm.timeout_s):  # connect, headers and body: one bound for the whole call
                if self._session is None or self._session.closed:
                    self._session = aiohttp.ClientSession(headers={"Accept": "application/json"})
                options = {"timeout": aiohttp.ClientTimeout(total=drm.timeout_s), "allow_redirects": False}
                if drm.method.upper() == "POST":
                    request = self._session.post(URL(drm.service_url), **options,
                                                 json={"entry_id": entry.id, "partner_id": partner.id})
                else:
                    url = URL(drm.service_url).extend_query(entry_id=entry.id, partner_id=str(partner.id))
                    request = self._session.get(url, **options)
                async with request as response:
                    if response.status != 200:
                        raise fail(DrmUnavailable, f"DRM service answered HTTP {response.status}")
                    body = await _read_bounded(response)
                    if body is None:
                        response.close()  # drop the connection rather than drain what we refuse to read
                        raise fail(DrmAnswerError, f"DRM service answer is larger than {MAX_ANSWER_BYTES} bytes")
        except TimeoutError:
            raise fail(DrmUnavailable, f"DRM service gave no answer within {drm.timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as e:
            raise fail(DrmUnavailable, f"DRM service unreachable: {type(e).__name__}: {e}") from None
        try:
            return parse_drm_info(body)
        except PackagerError as e:
            raise fail(DrmAnswerError, e.message) from None

    def stats(self) -> dict:
        return {"cached": len(self._cache), "hits": self._hits, "requests": self._requests,
                "failures": self._failures}

    async def close(self) -> None:
        for flight in self._flights.values():
            flight.cancel()
        self._flights.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None


def _retrieve(flight: asyncio.Future) -> None:
    # every waiter may have gone away: mark the outcome as seen so asyncio does not log it as lost
    if not flight.cancelled():
        flight.exception()


KEY_SOURCE = web.AppKey("key_source", KeySource)
