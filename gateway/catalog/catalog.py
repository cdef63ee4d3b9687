"""The entry/partner catalog: JSON files on the shared store, read by every node, written atomically by operators.

Layout and schema are in docs/catalog.md: ``<catalog>/partners/<id>.json`` and ``<catalog>/entries/<entry_id>.json``,
``<catalog>`` defaulting to ``<store>/.catalog`` — a hidden name, so ``gateway.http.urls`` never serves it. Nodes keep no
state of their own: a running ``Catalog`` re-stats the files at most every ``ttl`` seconds and re-reads only those whose
(mtime_ns, size, inode) changed. Writers write a temporary file and rename it over the old one, so a reader sees the
old or the new version, never half of one; a file that is invalid anyway (a hand edit gone wrong) is logged and its
last good version kept, so a typo never takes a partner offline.

Disk access: ``Catalog.refresh()`` lists, stats and reads files, and so do ``Catalog.view()`` and the shortcuts
``partner/entry/entries_for_path`` when ``due()``; a ``CatalogView`` and its lookups are memory only and immutable.
Everything is synchronous: the gateway runs ``view()`` in its executor when ``due()``, and looks up in the view.

Flavor files are known by name (declared path and realpath) and by identity (device, inode), so a hardlink or any
other name of a secured file is recognised too. Identities are stat'ed when an entry is (re)loaded, in a full pass
over every entry at most every ``rescan`` seconds, and on demand (``rescan_identities``): gateway.catalog.access asks for
one when a requested file changed (its ctime) after the index was last made whole, since a new name or a replaced
flavor file changes the ctime of the inode concerned.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from delivery_profiles import SYSTEM_DEFAULTS, DeliveryType, merge
from packagers.errors import PackagerError

from .schema import (
    CATALOG_DIR_NAME, ENTRY_ID, SECRET, RULES, CatalogError, CatalogNotFound, Partner, Flavor, Entry, check_delivery, path_problem, parse_partner, parse_entry, resolve_flavors, missing_flavors, _decode,
)
from ..origin.store import FileIdentity, Store
from .files import CatalogConflict, CatalogFiles, as_files, origin_files, write_json_atomic

# the documents and their validation live in gateway/catalog/schema.py; importers may keep using this module for them
__all__ = ["CATALOG_DIR_NAME", "ENTRY_ID", "SECRET", "RULES", "CatalogError", "CatalogNotFound", "Partner", "Flavor",
           "Entry", "check_delivery", "path_problem", "parse_partner", "parse_entry", "resolve_flavors",
           "missing_flavors", "CatalogView", "Catalog", "open_catalog", "catalog_dir", "read_partner", "read_entry",
           "write_partner",
           "write_entry", "write_json_atomic", "write_lock", "CatalogConflict", "CatalogFiles", "delete_partner",
           "delete_entry"]

log = logging.getLogger("gateway.catalog")

# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class CatalogView:
    """One consistent state of the catalog: immutable, memory only, safe to share between threads."""

    by_partner: dict[int, Partner] = field(default_factory=dict)
    by_entry: dict[str, Entry] = field(default_factory=dict)
    by_path: dict[str, tuple[Entry, ...]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # invalid files, missing flavor files, entries of unknown partners
    by_identity: dict[tuple[int, int], tuple[Entry, ...]] = field(default_factory=dict)  # (st_dev, st_ino)
    # A file whose ctime is at most this was last linked, renamed or replaced before the last full identity pass
    # started, so by_identity knows it; a newer one may have a name the index has not seen (gateway.catalog.access).
    identity_ctime_ns: int = 0
    # entry id -> the other entries with a flavor file in common (same path, realpath or inode): a secured one among
    # them makes this entry's files need signed URLs too (gateway.catalog.access: secured wins)
    sharing: dict[str, tuple[Entry, ...]] = field(default_factory=dict)

    def partner(self, partner_id: int) -> Partner:
        try:
            return self.by_partner[partner_id]
        except KeyError:
            raise CatalogNotFound(f"Catalog.partner: no partner {partner_id}") from None

    def entry(self, entry_id: str, partner_id: int | None = None) -> Entry:
        """The entry; with ``partner_id``, only if it belongs to that partner (one partner never sees another's)."""
        entry = self.by_entry.get(entry_id)
        if entry is None or (partner_id is not None and entry.partner_id != partner_id):
            of = f" of partner {partner_id}" if partner_id is not None else ""
            raise CatalogNotFound(f"Catalog.entry: no entry {entry_id!r}{of}")
        return entry

    def entries_for_path(self, store_path: str) -> tuple[Entry, ...]:
        """Entries with a flavor at ``store_path``: its declared path or its realpath (``FileIdentity.store_path``)."""
        return self.by_path.get(store_path, ())

    @functools.cached_property
    def restricts_access(self) -> bool:
        """Whether any entry is secured or any partner disables a delivery type: only then can another name of an
        entry's file (a hardlink) be a way around a rule, so only then is the identity index worth a wait."""
        if any(e.secured for e in self.by_entry.values()):
            return True
        return any(not merge(SYSTEM_DEFAULTS, p.delivery).is_enabled(t) for p in self.by_partner.values()
                   for t in DeliveryType)

    def entries_for_identity(self, device: int, inode: int) -> tuple[Entry, ...]:
        """Entries with a flavor file that is this inode, under whatever name it was requested."""
        return self.by_identity.get((device, inode), ())

    def shares_with(self, entry: Entry) -> tuple[Entry, ...]:
        """The other entries that have one of ``entry``'s flavor files."""
        return self.sharing.get(entry.id, ())

    def needs_signing(self, entry: Entry) -> bool:
        """Whether players need signed URLs for ``entry``'s files: it is secured, or shares a file with an entry
        that is (a file of a secured entry is served signed only, under whichever entry)."""
        return entry.secured or any(e.secured for e in self.shares_with(entry))

    def partners(self) -> tuple[Partner, ...]:
        return tuple(self.by_partner[k] for k in sorted(self.by_partner))

    def entries(self, partner_id: int | None = None) -> tuple[Entry, ...]:
        return tuple(self.by_entry[k] for k in sorted(self.by_entry)
                     if partner_id is None or self.by_entry[k].partner_id == partner_id)


@dataclass
class _File:
    signature: Any  # of the version last read, valid or not: (mtime_ns, size, inode) in a directory, an ETag...
    value: Partner | Entry | None  # the last good version
    error: str | None = None
    resolved: tuple[FileIdentity | None, ...] = ()  # entries: flavor files; () = not identified yet


class Catalog:
    """The catalog as this node sees it, re-checked against the shared store at most every ``ttl`` seconds."""

    def __init__(self, store: Path | str | None, catalog_dir: Path | str | CatalogFiles | None = None, ttl: float = 1.0,
                 quiet: bool = False, rescan: float = 60.0, *, identify: bool = True):
        """``store``: the directory flavor files are identified in; ``catalog_dir``: where the catalog is (default
        ``<store>/.catalog``), or its files on an origin (gateway.catalog.files). ``identify=False`` for media
        on an origin: flavors are known by their declared paths only (no stat, no hardlinks there)."""
        self.files = as_files(catalog_dir if catalog_dir is not None else Path(store) / CATALOG_DIR_NAME)
        self.identify = identify and self.files.identifies
        self.store = Store(store) if self.identify else None
        if ttl < 0:
            raise ValueError(f"catalog ttl must be >= 0, got {ttl}")
        self.ttl = ttl
        self.quiet = quiet  # no log lines: the caller reports ``view().problems`` itself (the CLI)
        # Backstop for what no ctime announces: a symlinked flavor path re-pointed at an older file, NFS clock skew.
        self.rescan = rescan
        self._rescanned: float | None = None  # monotonic time of the last full identity pass
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}  # by "partners/101.json"
        self._view = CatalogView()
        self._checked: float | None = None
        self._checked_missing = False

    def due(self) -> bool:
        return self._checked is None or time.monotonic() - self._checked >= self.ttl

    @property
    def current(self) -> CatalogView:
        """The view as last loaded, never refreshed here (memory only: safe on the event loop)."""
        return self._view

    @property
    def loaded(self) -> bool:
        return self._checked is not None

    def view(self) -> CatalogView:
        """The current view, refreshed first if the ttl ran out (then it touches the disk)."""
        if self.due():
            with self._lock:
                if self.due():  # not refreshed by another thread while we waited
                    self._refresh()
        return self._view

    def partner(self, partner_id: int) -> Partner:
        return self.view().partner(partner_id)

    def entry(self, entry_id: str, partner_id: int | None = None) -> Entry:
        return self.view().entry(entry_id, partner_id)

    def entries_for_path(self, store_path: str) -> tuple[Entry, ...]:
        return self.view().entries_for_path(store_path)

    def refresh(self) -> CatalogView:
        """Stat every catalog file now, whatever the ttl. Blocking."""
        with self._lock:
            self._refresh()
        return self._view

    def rescan_identities(self, covered_ctime_ns: int = 0) -> CatalogView:
        """Stat every entry's flavor files now (the catalog files too when due). Blocking: one stat per flavor.

        ``covered_ctime_ns``: the newest ctime the caller saw in stats made before this call; the new view vouches
        for it (``identity_ctime_ns``), since any name change it records happened before this pass began."""
        with self._lock:
            # the catalog files themselves only when due: they cost a stat each too, and have their own ttl
            self._refresh(full=True, covered_ctime_ns=covered_ctime_ns, scan=self.due())
        return self._view

    def _refresh(self, full: bool = False, covered_ctime_ns: int = 0, scan: bool = True) -> None:
        """Re-read the files that changed, identify new and missing flavor files (all of them in a full pass),
        rebuild the view if anything moved."""
        now = time.monotonic()
        full = full or self._rescanned is None or now - self._rescanned >= self.rescan
        changed = False
        if scan and self._files and not self.files.present():
            # The whole directory gone is an unmounted share, not an operator deleting every partner: forgetting
            # the catalog would make secured files look unsecured. Keep the last view until it is back.
            if not self._checked_missing:
                log.warning("catalog: %s is missing; keeping the catalog loaded before", self.files.where)
            self._checked_missing = True
        elif scan:
            self._checked_missing = False
            changed = self._scan("partners", parse_partner) | self._scan("entries", parse_entry)
        for state in self._files.values():
            if self.identify and isinstance(state.value, Entry) and \
                    (full or not state.resolved or None in state.resolved):
                resolved = identify_flavors(state.value, self.store, state.resolved)
                changed |= resolved != state.resolved
                state.resolved = resolved
        identity_ctime_ns = self._view.identity_ctime_ns
        if full:
            self._rescanned = now
            identity_ctime_ns = max(identity_ctime_ns, covered_ctime_ns)
        if changed:
            self._view = self._build_view(identity_ctime_ns)
            if not self.quiet:
                log.info("catalog: %d partner(s), %d entrie(s) loaded from %s", len(self._view.by_partner),
                         len(self._view.by_entry), self.files.where)
        elif identity_ctime_ns != self._view.identity_ctime_ns:
            self._view = dataclasses.replace(self._view, identity_ctime_ns=identity_ctime_ns)
        if scan:
            self._checked = time.monotonic()

    def _scan(self, kind: str, parse) -> bool:
        try:
            listed = self.files.list(kind)
        except (OSError, CatalogError) as e:  # an NFS or origin hiccup must not empty the catalog: keep what we have
            log.warning("catalog: cannot list %s/%s: %s", self.files.where, kind, e)
            return False
        changed = False
        gone = {rel for rel in self._files if rel.startswith(kind + "/")} - {f"{kind}/{n}" for n in listed}
        for rel in gone:
            del self._files[rel]
            log.debug("catalog: %s removed", rel)
            changed = True
        for name, signature in listed.items():
            old = self._files.get(f"{kind}/{name}")
            if old is None or old.signature != signature:
                changed |= self._load(f"{kind}/{name}", parse)
        return changed

    def _load(self, rel: str, parse) -> bool:
        old = self._files.get(rel)
        try:
            got = self.files.read(rel)
        except FileNotFoundError:
            changed = self._files.pop(rel, None) is not None  # renamed away since the listing
            return changed
        except OSError as e:
            log.warning("catalog: cannot read %s: %s", rel, e)
            return False
        if got is None:  # not a regular file
            return False
        signature, raw = got
        try:
            value = parse(_decode(raw, rel), rel)
        except Exception as e:  # CatalogError, or a bug in a validator: either way this file is not usable
            message = str(e) if isinstance(e, CatalogError) else f"{rel}: (document): {type(e).__name__}: {e}"
            kept = old.value if old else None
            suffix = "keeping the last good version" if kept else "not loaded"
            self._files[rel] = _File(signature, kept, f"{message} ({suffix})", old.resolved if old else ())
            return True
        if old is not None and old.error and not self.quiet:
            log.info("catalog: %s is valid again", rel)
        self._files[rel] = _File(signature, value, None)  # its flavor files are identified by _refresh
        return True

    def _build_view(self, identity_ctime_ns: int) -> CatalogView:
        partners, entries, by_path, by_identity, problems = {}, {}, {}, {}, []
        for rel, state in sorted(self._files.items()):
            if state.error:
                problems.append(state.error)
            if isinstance(state.value, Partner):
                partners[state.value.id] = state.value
            elif isinstance(state.value, Entry):
                entry = state.value
                entries[entry.id] = entry
                problems += missing_flavors(entry, rel, state.resolved)
                for key in dict.fromkeys(entry.paths + tuple(f.store_path for f in state.resolved if f)):
                    by_path[key] = by_path.get(key, ()) + (entry,)
                for key in dict.fromkeys((f.device, f.inode) for f in state.resolved if f):
                    by_identity[key] = by_identity.get(key, ()) + (entry,)
        for entry in entries.values():
            if entry.partner_id not in partners:
                problems.append(f"entries/{entry.id}.json: partner_id: no partner {entry.partner_id} in the catalog")
        for problem in sorted(set(problems) - set(self._view.problems)) if not self.quiet else ():
            log.warning("catalog: %s", problem)
        return CatalogView(partners, entries, by_path, tuple(problems), by_identity, identity_ctime_ns,
                           sharing_index((*by_path.values(), *by_identity.values())))


def sharing_index(groups) -> dict[str, tuple[Entry, ...]]:
    """entry id -> the other entries of any group (entries owning one file) it is in."""
    found: dict[str, dict[str, Entry]] = {}
    for group in groups:
        if len(group) > 1:
            for entry in group:
                found.setdefault(entry.id, {}).update((e.id, e) for e in group if e.id != entry.id)
    return {k: tuple(v[i] for i in sorted(v)) for k, v in found.items()}


def identify_flavors(entry: Entry, store: Store, known: tuple[FileIdentity | None, ...] = ()
                     ) -> tuple[FileIdentity | None, ...]:
    """Each flavor's file (symlinks followed, as a request would), None if no regular file there. Blocking.

    A flavor still at the (device, inode) of its ``known`` identity keeps it: one stat instead of a realpath (a
    stat per path component), which makes a full pass over 10,000 entries cheap. Only (device, inode) and the
    realpath are looked up in the index, and a path that now leads to another inode is identified afresh."""
    found: list[FileIdentity | None] = []
    for i, flavor in enumerate(entry.flavors):
        old = known[i] if i < len(known) and len(known) == len(entry.flavors) else None
        if old is not None:
            try:
                st = os.stat(os.path.join(store.root, flavor.path))
                if (st.st_dev, st.st_ino) == (old.device, old.inode) and stat.S_ISREG(st.st_mode):
                    found.append(old)
                    continue
            except (OSError, ValueError):
                pass
        try:
            found.append(store.identify(flavor.path))
        except PackagerError:
            found.append(None)
    return tuple(found)


# ---------------------------------------------------------------- files and writes


def open_catalog(settings, store=None) -> Catalog:
    """The catalog a gateway reads: ``settings.catalog`` when given, else ``.catalog`` in the store — on the origin,
    through ``store`` (its RemoteStore), when the media is there."""
    if settings.catalog is not None or not settings.origin:
        return Catalog(settings.store, settings.catalog, settings.catalog_ttl, identify=not settings.origin)
    return Catalog(settings.store, origin_files(store, settings), settings.catalog_ttl)


def catalog_dir(store: Path | str, override: Path | str | None = None) -> Path:
    return Path(override) if override is not None else Path(store) / CATALOG_DIR_NAME


Directory = Path | str | CatalogFiles  # a catalog directory, or the catalog's files on an origin


def _read(directory: Directory, rel: str, parse, what: str):
    try:
        got = as_files(directory).read(rel)
    except FileNotFoundError:
        got = None
    if got is None:
        raise CatalogNotFound(f"{what}: no {rel}") from None
    return parse(_decode(got[1], rel), rel)


def read_partner(directory: Directory, partner_id: int) -> Partner:
    """One partner file, strictly: CatalogNotFound if absent, CatalogError if invalid (no last good version here)."""
    return _read(directory, f"partners/{partner_id}.json", parse_partner, "read_partner")


def read_entry(directory: Directory, entry_id: str) -> Entry:
    if not ENTRY_ID.fullmatch(entry_id):
        raise CatalogError(f"entries/{entry_id}.json: id: must look like 0_abcd1234 (a digit, '_', 8 of [a-z0-9])")
    return _read(directory, f"entries/{entry_id}.json", parse_entry, "read_entry")


def write_partner(directory: Directory, partner: Partner) -> Path | str:
    """Validate (delivery_profiles.merge included), then replace the file atomically (inside ``write_lock`` on an
    origin: only the version read there). Returns where it went."""
    return _write(directory, f"partners/{partner.id}.json", partner.to_json(), parse_partner)


def write_entry(directory: Directory, entry: Entry) -> Path | str:
    return _write(directory, f"entries/{entry.id}.json", entry.to_json(), parse_entry)


def delete_partner(directory: Directory, partner_id: int) -> None:
    _delete(directory, f"partners/{partner_id}.json", "delete_partner")


def delete_entry(directory: Directory, entry_id: str) -> None:
    if not ENTRY_ID.fullmatch(entry_id):
        raise CatalogNotFound(f"delete_entry: no entries/{entry_id}.json")
    _delete(directory, f"entries/{entry_id}.json", "delete_entry")


def _delete(directory: Directory, rel: str, what: str) -> None:
    try:
        as_files(directory).delete(rel)
    except FileNotFoundError:
        raise CatalogNotFound(f"{what}: no {rel}") from None


def _write(directory: Directory, rel: str, doc: Any, parse: Callable[[Any, str], Any]) -> Path | str:
    parse(doc, rel)  # what we write must read back
    return as_files(directory).write(rel, doc)


def write_lock(directory: Directory):
    """Make a read-modify-write safe: an flock on ``<catalog>/.lock`` in a directory; on an origin, writes replace
    only the versions read inside it (CatalogConflict otherwise: the caller runs it again)."""
    return as_files(directory).lock()
