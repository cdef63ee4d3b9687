"""What a packaged URL produces (``Product``), shared by the builders of every kind of file."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable

from ..origin.packaging import Packaging, timed
from ..origin.prefetch import Prefetch


@dataclass(frozen=True)
class Product:
    key: Hashable  # canonical: two URLs naming the same bytes share one cache entry and ETag
    build: Callable[[], bytes]  # blocking; runs in the executor
    content_type: str
    max_age: int
    private: bool = False  # keys: never stored by shared caches
    # the same build, tried first on the event loop: raises WouldBlock unless every byte it reads is in the page cache
    build_inline: Callable[[], bytes] | None = None
    # from a remote store: the bytes fetched on the event loop, then the same build run there (origin/prefetch.py)
    prefetch: Prefetch | None = None


def text_product(packaging: Packaging, fn: Callable[..., str], *args) -> Callable[[], bytes]:
    """A blocking build of a manifest or playlist: ``fn(*args)`` encoded, its time reported as "manifest"."""
    return lambda: timed(packaging.observe_stage, "manifest", fn, *args).encode()
