"""Who may fetch a media URL, and with which partner's delivery settings.

Every media request (manifest, segment, key, MP4) is checked against the shared catalog: a file that belongs to a
secured entry is served only under ``/s/<entry>/<token>/`` with a token that the entry's partner signed over the
media target and an expiry; anything else gets 403 with the reason and no media byte. A file of a catalog entry is
packaged with its partner's delivery profile (segment duration, HLS container, AES-128); other store files with the
server's settings. If any entry owning a file is secured, the file is secured: a public entry cannot open a hole.
Likewise, a delivery type (hls, dash, mss, hds, http = ``/mp4/``) that the partner of any entry owning a file
disables is refused (403) on that file's direct URLs, signed or not: a file shared by two partners obeys the
stricter of the two, so one partner's profile cannot be bypassed through another's entry.

A file is owned by an entry when the request names it by a flavor's path, by the realpath of one (a symlink), or is
the same inode (device, inode) as a flavor file: a hardlink or any other name of a secured file needs its token.
The identity index is the catalog's (gateway.catalog.catalog); ``IdentityWatch`` has it rebuilt before answering for a file
whose ctime is newer than what the index vouches for (making a link or renaming over a flavor file updates the
inode's ctime). Copies are other files (another inode, not in the catalog): they are the operator's business.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping, Protocol, Sequence

from delivery_profiles import SYSTEM_DEFAULTS, DeliveryConfig, DrmConfig, merge
from delivery_profiles.tokens import TokenError, verify_path

from aiohttp import web
from packagers.drm.signaling import Protection

from .catalog import Catalog, CatalogView, Entry, Partner
from .delivery import hls_key

DRM_SCHEMES = ("sample-aes", "cenc", "cbcs")  # the encryptions whose keys a DRM service (or the partner secret) gives
from ..settings import Settings
from ..origin.store import FileIdentity


CATALOG = web.AppKey("catalog", Catalog)
log = logging.getLogger("gateway.catalog")


async def catalog_view(app: web.Application, run) -> CatalogView:
    """The catalog as of now: from memory while fresh (no thread hop on the hot path), else refreshed in ``run``
    (the executor), since a refresh stats the shared store. A catalog on an origin, once loaded, is refreshed in
    the background while requests go on with the view they have (up to a ttl plus a listing old): two listings
    through a slow or failing origin must not hold every request that finds the ttl run out."""
    catalog = app[CATALOG]
    if not catalog.due():
        return catalog.current  # never catalog.view(): the ttl may run out in between, and that refreshes here
    if catalog.loaded and not catalog.files.identifies:
        task = getattr(catalog, "refreshing", None)
        if task is None or task.done():
            catalog.refreshing = asyncio.ensure_future(run(catalog.view))
            catalog.refreshing.add_done_callback(_retrieved)
        return catalog.current
    return await run(catalog.view)


def _retrieved(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("catalog: background refresh failed: %s", task.exception())


class IdentityWatch:
    """Makes sure the catalog's identity index has seen the names a request's files have now.

    A request's files were stat'ed just before (``FileIdentity.ctime_ns``). When one is newer than the view's
    ``identity_ctime_ns``, it may have gained a name after the index was built, so the request waits for a full
    identity pass that starts after its stat. Passes are single-flight (every request waiting when a pass starts
    shares it) and at most one per catalog ttl; the waiting happens on the event loop, never in a thread, so a
    file that keeps changing costs its requests latency, not the executor. The common case is one comparison.
    """

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._next: asyncio.Future | None = None  # the pass not started yet, which newcomers join
        self._pending = 0  # the newest ctime among the requests waiting for ``_next``
        self._last = -math.inf  # monotonic start of the last pass

    async def view(self, view: CatalogView, files: Sequence[FileIdentity],
                   run: Callable[..., Awaitable]) -> CatalogView:
        newest = max((f.ctime_ns for f in files), default=0)
        if newest <= view.identity_ctime_ns or not view.restricts_access:  # no rule another name could get around
            return view
        self._pending = max(self._pending, newest)
        if self._next is None:
            self._next = asyncio.ensure_future(self._rescan(run))
        return await asyncio.shield(self._next)  # a client that goes away does not cancel the others' pass

    async def _rescan(self, run: Callable[..., Awaitable]) -> CatalogView:
        delay = self._last + self.catalog.ttl - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        # whoever arrives from now on may have stat'ed after this pass began: they wait for the next one
        self._next, covered, self._pending = None, self._pending, 0
        self._last = time.monotonic()
        return await run(self.catalog.rescan_identities, covered)


IDENTITY_WATCH = web.AppKey("identity_watch", IdentityWatch)


class AccessDenied(Exception):
    """403: the message says why (one line), never anything about the media."""


class MediaAccess(Protocol):
    """What access control needs of a media request (gateway.http.urls' requests have it; catalog/ sits below the
    http layer and never imports it)."""

    @property
    def delivery_type(self) -> str | None:
        """hls | dash | mss | hds | http (the file itself): what a partner's delivery profile enables or disables,
        and whose profile settings apply (a DASH init segment is DASH's, though HLS has init segments too). None
        for what is no delivery type (thumbnails): the server's packaging settings apply."""

    @property
    def features(self) -> frozenset[str]:
        """The partner-switchable features the request uses (delivery_profiles.FEATURES: clipping, thumbnails)."""

    @property
    def store_paths(self) -> tuple[str, ...]:
        """The store files the request reads, in request order."""

    @property
    def signed_name(self) -> str:
        """The path a signed URL's token covers: the media target (file or url set), whatever the protocol."""


class Signature(Protocol):
    """The ``/s/<entry>/<token>/`` part of a signed URL."""

    @property
    def entry_id(self) -> str: ...

    @property
    def token(self) -> str: ...


@dataclass(frozen=True)
class DeliveryContext:
    """How this request's media is packaged: the server's settings, or those of the owning entry's partner."""

    segment_duration_ms: int
    hls_container: str
    entry: Entry | None = None
    partner: Partner | None = None
    hls_key: bytes | None = None  # AES-128 key when the entry's HLS segments are encrypted
    hls_iframes: bool = True  # I-frame playlists in TS master playlists (the partner's hls profile may turn them off)
    caption_languages: Mapping[str, str] = field(default_factory=dict)  # caption file → ISO 639-2, from the entry
    captions: bool = True  # caption files listed and served (every owning partner's ``captions`` feature)
    encryption: str = "none"  # sample-aes, cenc or cbcs: packaged only once the keys are found (gateway.catalog.drm)
    drm: DrmConfig | None = None  # the owning partner's DRM settings (where keys come from, clear lead)
    protection: Protection | None = None  # the keys found, for the products (gateway/http/protected.py)


def partner_config(partner: Partner) -> DeliveryConfig:
    return merge(SYSTEM_DEFAULTS, partner.delivery)


def authorize(view: CatalogView, settings: Settings, request: MediaAccess, signed: Signature | None,
              files: Sequence[FileIdentity] = (), now: float | None = None) -> DeliveryContext:
    """The delivery context of an allowed request; AccessDenied otherwise.

    ``files`` are the requested files as stat'ed (in request order): a symlink or a hardlink in the store must not
    reach a secured file under another name, so ownership is looked up by the requested name, the realpath and the
    (device, inode). Without them (unit use), by the requested names only."""
    now = time.time() if now is None else now
    paths = request.store_paths
    found: Sequence[FileIdentity | None] = files or (None,) * len(paths)

    def owners_of(path: str, file: FileIdentity | None) -> dict[str, Entry]:
        owners = {e.id: e for e in view.entries_for_path(path)}
        if file is not None:
            owners.update((e.id, e) for e in view.entries_for_path(file.store_path))
            owners.update((e.id, e) for e in view.entries_for_identity(file.device, file.inode))
        return owners

    names = tuple(zip(paths, found))
    owners = {k: e for path, file in names for k, e in owners_of(path, file).items()}
    secured = [e for e in owners.values() if e.secured]
    entry: Entry | None = None
    if signed is not None:
        entry = view.by_entry.get(signed.entry_id)
        if entry is None:
            raise AccessDenied(f"authorize: signed URL names unknown entry {signed.entry_id}")
        missing = [path for path, file in names if entry.id not in owners_of(path, file)]
        if missing:
            raise AccessDenied(f"authorize: entry {entry.id} does not contain {missing[0]}")
        partner = view.partner(entry.partner_id)
        try:
            verify_path(partner.secret, request.signed_name, signed.token, now)
        except TokenError as e:
            raise AccessDenied(f"authorize: {e}") from None
    elif secured:
        raise AccessDenied(f"authorize: {request.signed_name} belongs to secured entry {secured[0].id}: "
                           "use the signed URL that playManifest issues")
    else:
        entry = next(iter(owners.values()), None)
    protocol = request.delivery_type
    # an entry of a partner missing from the catalog is a catalog problem (reported) that restricts nothing here
    configs = {p.id: partner_config(p) for e in owners.values() if (p := view.by_partner.get(e.partner_id))}
    for owner in owners.values():
        config = configs.get(owner.partner_id)
        if config is None:
            continue
        if protocol is not None and not config.is_enabled(protocol):
            raise AccessDenied(f"authorize: {protocol} delivery is disabled for entry {owner.id} (partner "
                               f"{owner.partner_id}), which contains {request.signed_name}")
        for feature in sorted(request.features):
            if not config.allows(feature):
                raise AccessDenied(f"authorize: {feature} is disabled for entry {owner.id} (partner "
                                   f"{owner.partner_id}), which contains {request.signed_name}")
    captions = all(config.allows("captions") for config in configs.values())
    if entry is None or protocol is None:
        partner = view.by_partner.get(entry.partner_id) if entry is not None else None
        languages = entry.caption_languages if entry is not None else {}
        return DeliveryContext(settings.segment_duration_ms, settings.hls_container, entry, partner,
                               caption_languages=languages, captions=captions)
    partner = view.partner(entry.partner_id)
    profile = (configs.get(partner.id) or partner_config(partner)).profile(protocol)
    key = None
    if entry.secured and signed is not None and profile.encryption == "aes-128":
        key = hls_key(partner.secret, entry.id)
    # AES-128 whole-segment encryption and SAMPLE-AES are MPEG-TS (an encrypted EXT-X-MAP would need explicit IVs);
    # Common Encryption is fMP4
    container = {"aes-128": "ts" if key is not None else profile.hls_container, "sample-aes": "ts", "cenc": "fmp4",
                 "cbcs": "fmp4"}.get(profile.encryption, profile.hls_container)
    encryption = profile.encryption if profile.encryption in DRM_SCHEMES else "none"
    config = configs.get(partner.id) or partner_config(partner)
    return DeliveryContext(profile.segment_duration_ms, container, entry, partner, key, profile.iframes,
                           entry.caption_languages, captions, encryption, config.drm)
