"""Between handlers and the packaging core: identities → cached MediaSet → packaged bytes from the response cache.

Every blocking step (stat, pread, moov parse, plan) runs in the app's thread pool, each as one executor job, so the
event loop keeps answering cache hits while NFS stalls. A segment build is the exception when it cannot block: on a
store answering non-blocking reads (RWF_NOWAIT) whose bytes are all in the page cache, it is read and muxed on the
event loop (no thread hop), else it runs in the pool as one job. Cache keys start with
the identities of the files involved, so a file replaced on disk is never served from stale entries.
"""
from __future__ import annotations

import asyncio
import os
import hashlib
import time
import weakref
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable, Hashable, Mapping, TypeVar

from aiohttp import web

from packagers.captions.files import CaptionSource, is_caption_path, language_from_name
from packagers.clipping import clip_presentation, clip_start
from packagers.errors import bad_request
from packagers.selection import number_tracks
from packagers.limits import Limits
from packagers.media_set import MediaSet, Selection
from packagers.model import Presentation

from .. import __version__
from .cache import Caches
from ..settings import Settings
from .prefetch import Prefetch
from .remote import make_store
from .store import ContentStore, FileIdentity, Store, WouldBlock, parse_presentation
from .paths import MediaTarget

T = TypeVar("T")
M = TypeVar("M")
# media set keys whose validators are remembered, and ETags per key: at most 1024 x 64 small strings (~15 MB) however
# many distinct segments a client asks for; a segment's ETag (~2 µs) matters little, a playlist's is what is saved
MAX_VALIDATORS = 1024


class Validators:
    """What a set of file identities gives every response made from them: Last-Modified, the cache-key prefix and
    the ETags (a sha256 each), computed once per media set key rather than once per request."""

    MAX_ETAGS = 64  # per media set: its playlists, and the segments most recently asked for

    def __init__(self, files: tuple[FileIdentity, ...], variant: tuple):
        self.last_modified = max(f.mtime_ns for f in files) / 1e9
        self.file_keys = tuple(f.cache_key for f in files)
        self._etag_prefix = (__version__, [f.etag_key for f in files], *variant)
        self._etags: dict[Hashable, str] = {}

    def etag(self, request_key: Hashable) -> str:
        tag = self._etags.get(request_key)
        if tag is None:
            text = repr((*self._etag_prefix, request_key))
            tag = '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
            if len(self._etags) >= self.MAX_ETAGS:
                self._etags.clear()
            self._etags[request_key] = tag
        return tag


@dataclass(frozen=True, eq=False)
class OpenedSet:
    """A MediaSet together with the identities of the files it was built from."""

    files: tuple[FileIdentity, ...]  # the media files, in media set order (``Selection.file_index``)
    media_set: MediaSet
    validators: Validators | None = None  # Packaging.open passes the remembered ones
    caption_files: Mapping[int, FileIdentity] = field(default_factory=dict)  # by -fN (``MediaSet.captions``)

    def __post_init__(self) -> None:
        if self.validators is None:
            files = self.files + tuple(self.caption_files.values())
            object.__setattr__(self, "validators", Validators(files, self._variant))

    @property
    def last_modified(self) -> float:
        return self.validators.last_modified

    def etag(self, request_key: Hashable) -> str:
        """Strong validator from what the bytes depend on; equal on every node sharing the store."""
        return self.validators.etag(request_key)

    def cache_key(self, request_key: Hashable) -> tuple:
        return (self.validators.file_keys, *self._variant, request_key)

    @property
    def _variant(self) -> tuple:
        """What else shapes the bytes: one file and a url set of that one file name things differently (``-f1``);
        a clip is another presentation."""
        return (self.media_set.segment_duration_ms, self.media_set.is_url_set, self.media_set.clip,
                self.media_set.narrowing)


class Packaging:
    """One app's path from store files to packaged bytes: its ``executor`` runs the blocking steps, ``caches`` (the
    worker's, possibly shared with the previous app generation) hold what was built, and ``observe_stage(stage, ns)``
    is told the time of each parse, plan, read, mux and manifest build (the metrics; bench and unit tests pass
    nothing)."""

    def __init__(self, settings: Settings, executor: Executor, caches: Caches,
                 observe_stage: Callable[[str, int], None] | None = None):
        self.settings = settings
        self.executor = executor
        self.store: ContentStore = make_store(settings)  # the local directory, or an origin read by range (remote.py)
        self.limits = limits_from(settings)
        self.caches = caches
        self.stats = caches.stats
        self.metadata = caches.metadata
        self.responses = caches.responses
        self.observe_stage: Callable[[str, int], None] = observe_stage or ignore_stage
        self._validators: dict[tuple, Validators] = {}  # by media set key: no MediaSet kept alive here
        self._fetch_slots = asyncio.Semaphore(settings.io_threads)  # remote segments fetched and built on the loop
        # muxers by media set (weakly: they go with it), then by selection and kind
        self._muxers: weakref.WeakKeyDictionary[MediaSet, dict] = weakref.WeakKeyDictionary()

    def purge(self, paths: tuple[str, ...] | None) -> dict[str, int]:
        """Drop what the caches made from these store files (None: everything) and forget their identities, so that
        the next request reads the file (or object) as it is now."""
        files = None
        if paths is not None:
            stores = [getattr(self.store, "primary", self.store), getattr(self.store, "fallback", None)]
            files = set()
            for store in filter(None, stores):
                for path in paths:
                    if getattr(store, "is_remote", False):
                        files.add(store.url(path))
                        store.forget(path)
                    else:
                        files.add(os.path.realpath(os.path.join(store.root, path)))
            files = frozenset(files)
        return self.caches.purge(files)

    async def run(self, fn: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def identify_all(self, paths: tuple[str, ...], fresh: bool = False) -> tuple[FileIdentity, ...]:
        """The files' identities, from the stat cache unless ``fresh`` (a download opens the file by name right after:
        it must be authorized on what that name is now, not on what it was up to a second ago)."""
        files = None if fresh else self.stats.get(paths)
        if files is None:
            files = await self.store.identify_all(paths, self.executor)
            self.stats.put(files)
        return files

    async def open(self, target: MediaTarget, segment_duration_ms: int | None = None) -> OpenedSet:
        """Stat the files (that is how replaced files are noticed), then the cached MediaSet. The segment duration
        is the server's unless the files' partner profile sets its own. A clip is cut from the cached
        presentations of the whole files."""
        duration = segment_duration_ms or self.settings.segment_duration_ms
        every_file = await self.identify_all(target.paths)
        files, captions, caption_files = every_file, (), {}
        if target.caption_paths:  # a url set with sidecar captions: they are no media
            files = tuple(f for f, p in zip(every_file, target.paths) if not is_caption_path(p))
            if not files:
                raise bad_request("Packaging.open: a url set needs a media file besides its caption files")
            captions = tuple(CaptionSource(len(files) + k, target.caption_language or language_from_name(p), p)
                             for k, p in enumerate(target.caption_paths, start=1))
            caption_files = {c.number: f for c, f in zip(captions, (f for f, p in zip(every_file, target.paths)
                                                                      if is_caption_path(p)))}
        variant = (duration, target.is_url_set, target.clip, target.narrowing)
        key = (tuple(f.cache_key for f in every_file), *variant, target.caption_language)

        async def load() -> MediaSet:
            presentations = await asyncio.gather(*(self.presentation(f) for f in files))
            return await self.run(timed, self.observe_stage, "plan", _media_set, presentations, duration,
                                  target, self.limits, captions)

        media_set = await self.metadata.media_set(key, load)
        validators = self._validators.get(key)
        if validators is None:
            validators = Validators(every_file, variant)
            if len(self._validators) >= MAX_VALIDATORS:
                self._validators.pop(next(iter(self._validators)))  # the oldest: a dict keeps insertion order
            self._validators[key] = validators
        return OpenedSet(files, media_set, validators, caption_files)

    async def presentation(self, file: FileIdentity) -> Presentation:
        async def load() -> Presentation:
            return await self.run(timed, self.observe_stage, "parse", parse_presentation, self.store, file,
                                  self.limits)

        return await self.metadata.presentation(file.cache_key, load)

    def muxer(self, media_set: MediaSet, selection: Selection, kind: Hashable, make: Callable[[tuple], M]) -> M:
        """The one muxer of ``kind`` for a selection of a media set. A muxer does not change once built (its buffers
        are per thread), and building a TsMuxer parses the codec configuration and precomputes the PSI packets of
        every continuity counter: ~8 % of a cold TS segment, the same for every segment of the selection."""
        muxers = self._muxers.get(media_set)
        if muxers is None:
            muxers = self._muxers[media_set] = {}
        key = (kind, selection.file_index, selection.spec)
        muxer = muxers.get(key)
        if muxer is None:
            muxer = muxers[key] = make(selection.tracks)
        return muxer

    async def prefetched(self, prefetch: Prefetch) -> bytes:
        """A remote segment fetched, then built on the loop: at most ``io_threads`` at a time, as many as the
        executor builds (each holds its fetched bytes or payload buffer: up to INLINE_READ_LIMIT), the others wait."""
        async with self._fetch_slots:
            return await prefetch.run(self.store)

    async def packaged(self, opened: OpenedSet, request_key: Hashable, build: Callable[[], bytes],
                       build_inline: Callable[[], bytes] | None = None, prefetch: Prefetch | None = None) -> bytes:
        """The response cache in front of a blocking ``build`` that runs in the executor, or of ``build_inline`` run
        right here on the event loop when the store answers non-blocking reads and it does not raise WouldBlock, or
        (a remote store's file) of ``prefetch``: its bytes fetched on the loop, then built here."""
        async def make() -> bytes:
            if prefetch is not None:
                try:
                    return await self.prefetched(prefetch)
                except WouldBlock:
                    pass
            if build_inline is not None and self.store.nowait_reads:
                try:
                    return build_inline()
                except WouldBlock as would_block:
                    if would_block.unsupported:  # a mount under the store root without RWF_NOWAIT: stop trying
                        self.store.nowait_reads = False
            return await self.run(build)

        return await self.responses.get_or_build(opened.cache_key(request_key), make)


def _media_set(presentations: list[Presentation], duration: int, target: MediaTarget, limits: Limits,
               captions: tuple[CaptionSource, ...] = ()) -> MediaSet:
    """The clip is cut from the cached presentations; the URL's track selection and shift are the media set's to
    apply (``packagers.selection``). Tracks are numbered first, since a clip drops the tracks it leaves empty."""
    if not target.narrowing.is_default:
        presentations = [number_tracks(p) for p in presentations]
    clipped = [clip_presentation(p, target.clip) for p in presentations]
    # where the clip starts on the caption files' timeline (they have no frames of their own to snap to)
    offset = round(clip_start(presentations[0], target.clip) * 1000) if not target.clip.is_whole else 0
    return MediaSet(clipped, duration, target.is_url_set, limits, clip=target.clip, narrowing=target.narrowing,
                    captions=captions, caption_offset_ms=offset)


def ignore_stage(_stage: str, _elapsed_ns: int) -> None:
    pass


def timed(observe_stage: Callable[[str, int], None], stage: str, fn: Callable[..., T], *args) -> T:
    """``fn(*args)``, its duration reported as ``stage`` when it returns (failures are not timed)."""
    started = time.perf_counter_ns()
    result = fn(*args)
    observe_stage(stage, time.perf_counter_ns() - started)
    return result


def limits_from(settings: Settings) -> Limits:
    """The packaging core's limits from the server settings (the rest keep packagers.limits' defaults)."""
    return Limits(max_frame_count=settings.max_frame_count, segment_max_frame_count=settings.segment_max_frame_count)


PACKAGING = web.AppKey("packaging", Packaging)
