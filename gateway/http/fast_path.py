"""A repeated request for a packaged response that is still cached, answered without walking the request path again.

Players ask for the same playlists and segments over and over. The full path (parse the URL, look up the catalog,
authorize, open the media set, pick the product, compute the validators) costs a cached master playlist about half
of its CPU time, and every step gives the same result as long as three things hold, which are exactly what the full
path's own caches would have reused:
- the catalog view is the same object (any catalog change, or an identity rescan, makes a new one), and is not due
  for a refresh;
- the stat cache still vouches for the same file identities (it expires after ``stat_cache_seconds``, and forgets a
  file found replaced): past that, the full path stats again;
- the response cache still holds the body (it is looked up, counted and timed as a hit, as the full path would).

Only plain GET/HEAD requests qualify, and only answers the full path gave to a plain request: a 200 with the whole
body, not signed (a signed answer's Cache-Control depends on the token's expiry) and not private. A Range or a
conditional header takes the full path, which answers 206/304/416. The remembered answer is the 200 the full path
built (validators, Cache-Control), so both paths send the same headers and bytes (tests/gateway/test_fast_path.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

from aiohttp import web

from ..catalog.catalog import Catalog, CatalogView
from ..origin.cache import ByteLRU, StatCache
from .responses import whole_body

MAX_ANSWERS = 4096  # raw paths remembered (each entry holds strings and keys, never a body): ~20 MB at the most
# headers that change the answer: such a request takes the full path
_PLAIN_ONLY = ("Range", "If-None-Match", "If-Modified-Since", "If-Range")


@dataclass(frozen=True)
class PackagedAnswer:
    """What the full path answered to a plain request, and what it depended on (gateway/http/packaged.py)."""

    paths: tuple[str, ...]  # the store files, as the request named them
    file_keys: tuple  # their identities' cache keys when the answer was made
    cache_key: Hashable  # the response cache entry holding the body
    content_type: str
    headers: dict[str, str]  # validators, Cache-Control, Accept-Ranges


@dataclass(frozen=True)
class _Remembered:
    answer: PackagedAnswer
    view: CatalogView
    label: tuple[str, str]  # the metrics label of the request (gateway/ops/labels.py)
    stream: tuple | None = None  # the analytics' (stream, partner) of the request (gateway/ops/audience_node.py)


class FastAnswers:
    def __init__(self, catalog: Catalog, stats: StatCache, responses: ByteLRU, max_answers: int = MAX_ANSWERS):
        self.catalog, self.stats, self.responses = catalog, stats, responses
        self.max_answers = max_answers
        self._answers: dict[str, _Remembered] = {}
        self._view: CatalogView | None = None  # the view every remembered answer was made under

    @staticmethod
    def plain(request: web.BaseRequest) -> bool:
        headers = request.headers
        return request.method in ("GET", "HEAD") and not any(name in headers for name in _PLAIN_ONLY)

    def remember(self, raw_path: str, answer: PackagedAnswer, view: CatalogView, label: tuple[str, str],
                 stream: tuple | None = None) -> None:
        if view is not self._view:  # the catalog changed: every answer made before is void, and no old view is kept
            self._answers.clear()
            self._view = view
        if len(self._answers) >= self.max_answers and raw_path not in self._answers:
            self._answers.pop(next(iter(self._answers)))  # the oldest remembered
        self._answers[raw_path] = _Remembered(answer, view, label, stream)

    def answer(self, request: web.BaseRequest) -> tuple[web.Response, tuple[str, str], tuple | None] | None:
        """The response, its metrics label and its analytics stream, or None: then the full path answers (and may
        remember)."""
        remembered = self._answers.get(request.rel_url.raw_path)
        if remembered is None or not self.plain(request):
            return None
        catalog = self.catalog
        if catalog.due() or catalog.current is not remembered.view:
            return None
        answer = remembered.answer
        files = self.stats.get(answer.paths)
        if files is None or tuple(f.cache_key for f in files) != answer.file_keys:
            return None
        body = self.responses.peek(answer.cache_key)
        if body is None:
            return None
        return whole_body(body, answer.content_type, answer.headers), remembered.label, remembered.stream
