"""Changing the catalog: the operations the CLI (gateway/runtime/catalog_*.py) and the admin API
(gateway/http/admin_api.py) share, so both validate and write alike.

Each runs inside the catalog's write lock: read, change, validate as the gateway will (``parse_*``,
``delivery_profiles.merge``), write; on S3 a write that lost a race raises CatalogConflict, and ``retrying`` runs
the whole operation again (12 tries, with random pauses). Media flavor files being added are read as a request
would (``unservable``): one the gateway could not package is refused unless ``force``. The returned warnings say
what a node would log (a flavor file not there yet) and what a secured entry does to the entries it shares files
with.
"""
from __future__ import annotations

import random
import secrets
import string
import time
from typing import Callable, TypeVar

from packagers.errors import PackagerError

from .catalog import (Catalog, CatalogConflict, CatalogError, CatalogNotFound, CatalogView, Directory, Entry, Flavor,
                      Partner, delete_entry, delete_partner, missing_flavors, parse_entry, read_entry, read_partner,
                      resolve_flavors, write_entry, write_lock, write_partner)
from ..origin.store import parse_presentation

T = TypeVar("T")
TRIES = 12  # n writers racing on one file: each round one wins, so the last needs up to n tries


def retrying(operation: Callable[[], T]) -> T:
    """``operation()``, run again when an optimistic (S3) write lost a race to another writer, after a random pause
    that grows with the tries (writers that lost together do not collide again in step)."""
    for attempt in range(TRIES):
        try:
            return operation()
        except CatalogConflict:
            if attempt == TRIES - 1:
                raise
            time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
    raise AssertionError("unreachable")


def new_id(partition: str) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return partition + "_" + "".join(secrets.choice(alphabet) for _ in range(8))


def unservable(store, path: str) -> str | None:
    """Why the gateway could not package ``path`` (read as a request would: its moov and sample tables), or None
    (also when there is no such file yet: that is a warning of its own). Blocking."""
    try:
        file = store.identify(path)
    except PackagerError:
        return None
    try:
        presentation = parse_presentation(store, file)
    except PackagerError as e:
        return e.message.split(": ", 1)[-1]  # what is wrong with the file, not which function found it
    if not presentation.tracks:
        return "it has no audio or video track"
    return None


def servable(store, entry: Entry, added: tuple[Flavor, ...], force: bool) -> list[str]:
    """Warnings for added media flavors the gateway could not serve (with ``force``); CatalogError without."""
    warnings = []
    for flavor in added:
        problem = None if flavor.is_caption else unservable(store, flavor.path)
        if problem and not force:
            raise CatalogError(f"entries/{entry.id}.json: flavors[{entry.flavors.index(flavor)}].path: "
                               f"{flavor.path!r} cannot be served: {problem} (--force adds it anyway)")
        if problem:
            warnings.append(f"{flavor.path!r} cannot be served: {problem}")
    return warnings


def sharing_warnings(view: CatalogView, entry: Entry) -> list[str]:
    """What an entry changes for the entries it shares files with: secured wins (docs/catalog.md), so one secured
    entry makes every sharer's URLs need signing."""
    entry = view.by_entry.get(entry.id, entry)
    warnings = []
    for other in view.shares_with(entry):
        common = sorted(set(entry.paths) & set(other.paths)) or ["a file (another name of it)"]
        if entry.secured and not other.secured:
            warnings.append(f"entry {other.id} shares {common[0]} with this secured entry: its URLs must be signed "
                            f"from now on (`gateway urls` and playManifest sign them)")
        elif other.secured and not entry.secured:
            warnings.append(f"{common[0]} belongs to secured entry {other.id} too: this entry's URLs must be signed "
                            f"(`gateway urls` and playManifest sign them)")
    return warnings


def after_write(directory: Directory, store, entry: Entry, view: Callable[[], CatalogView]) -> list[str]:
    """Warnings once an entry is written: missing flavor files, and what sharing files with secured entries means."""
    where = f"entries/{entry.id}.json"
    return missing_flavors(entry, where, resolve_flavors(entry, store)) + sharing_warnings(view(), entry)


def create_partner(directory: Directory, partner: Partner) -> Partner:
    def run() -> Partner:
        with write_lock(directory):
            _refuse_existing(lambda: read_partner(directory, partner.id), f"partners/{partner.id}.json")
            write_partner(directory, partner)
        return partner
    return retrying(run)


def change_partner(directory: Directory, partner_id: int, change: Callable[[Partner], Partner]) -> Partner:
    """``change(current)`` written back (validated first: a bad value changes nothing)."""
    def run() -> Partner:
        with write_lock(directory):
            partner = change(read_partner(directory, partner_id))
            write_partner(directory, partner)
        return partner
    return retrying(run)


def remove_partner(directory: Directory, partner_id: int, entries: Callable[[], tuple[Entry, ...]],
                   force: bool = False) -> list[str]:
    """Remove a partner; refused while it owns entries (``entries()``: the current catalog's) unless ``force``,
    which removes them too. Returns the removed entry ids."""
    def run() -> list[str]:
        with write_lock(directory):
            read_partner(directory, partner_id)  # CatalogNotFound
            owned = [e.id for e in entries() if e.partner_id == partner_id]
            if owned and not force:
                shown = ", ".join(owned[:5]) + (f" and {len(owned) - 5} more" if len(owned) > 5 else "")
                raise CatalogError(f"partners/{partner_id}.json: partner {partner_id} still has {len(owned)} "
                                   f"entr{'y' if len(owned) == 1 else 'ies'} ({shown}): remove them first, or --force "
                                   f"to remove them with it")
            for entry_id in owned:
                delete_entry(directory, entry_id)
            delete_partner(directory, partner_id)
        return owned
    return retrying(run)


def create_entry(directory: Directory, store, entry: Entry, force: bool = False) -> list[str]:
    """Write a new entry of an existing partner; returns warnings (unservable files added with ``force``)."""
    where = f"entries/{entry.id}.json"
    parse_entry(entry.to_json(), where)  # a malformed id or name is reported as such, before anything is read
    warnings = servable(store, entry, entry.flavors, force)

    def run() -> None:
        with write_lock(directory):
            try:
                read_partner(directory, entry.partner_id)
            except CatalogNotFound:
                raise CatalogError(f"{where}: partner_id: no partner {entry.partner_id} (gateway partners add)") \
                    from None
            _refuse_existing(lambda: read_entry(directory, entry.id), where)
            write_entry(directory, entry)
    retrying(run)
    return warnings


def change_entry(directory: Directory, store, entry_id: str, change: Callable[[Entry], Entry],
                 force: bool = False) -> tuple[Entry, list[str]]:
    """``change(current)`` validated, its added media flavors probed, written back."""
    where = f"entries/{entry_id}.json"
    warnings: list[str] = []

    def run() -> Entry:
        with write_lock(directory):
            entry = read_entry(directory, entry_id)
            changed = change(entry)
            if changed == entry:
                raise CatalogError(f"{where}: nothing to change")
            if changed.partner_id != entry.partner_id:
                read_partner(directory, changed.partner_id)
            parse_entry(changed.to_json(), where)
            known = {f.path for f in entry.flavors}
            warnings[:] = servable(store, changed, tuple(f for f in changed.flavors if f.path not in known), force)
            write_entry(directory, changed)
        return changed
    return retrying(run), warnings


def remove_entry(directory: Directory, entry_id: str) -> Entry:
    def run() -> Entry:
        with write_lock(directory):
            entry = read_entry(directory, entry_id)
            delete_entry(directory, entry.id)
        return entry
    return retrying(run)


def edit_flavors(entry: Entry, remove: list[str], add: tuple[Flavor, ...]) -> tuple[Flavor, ...]:
    """The entry's flavors without those named in ``remove`` (by id or path), then ``add`` (not already there)."""
    where = f"entries/{entry.id}.json"
    flavors = list(entry.flavors)
    for key in remove:
        kept = [f for f in flavors if key not in (f.id, f.path)]
        if len(kept) == len(flavors):
            raise CatalogError(f"{where}: flavors: no flavor with id or path {key!r}")
        flavors = kept
    taken = {f.path for f in flavors}
    for flavor in add:
        if flavor.path in taken:
            raise CatalogError(f"{where}: flavors: {flavor.path!r} is a flavor of this entry already")
    return (*flavors, *add)


def _refuse_existing(read: Callable[[], object], where: str) -> None:
    try:
        read()
    except CatalogNotFound:
        return
    except CatalogError:
        pass  # exists, even if invalid
    raise CatalogError(f"{where}: id: already exists")


def current_view(store_root, directory: Directory | None, identify: bool = True) -> Callable[[], CatalogView]:
    """A function giving the catalog as a node would load it now (``store_root`` None: the media are on an origin,
    known by name only; ``directory`` None: ``<store_root>/.catalog``)."""
    return lambda: Catalog(store_root, directory, ttl=0, quiet=True, identify=identify and store_root is not None
                           ).view()


__all__ = ["retrying", "new_id", "unservable", "servable", "sharing_warnings", "after_write", "create_partner",
           "change_partner", "remove_partner", "create_entry", "change_entry", "remove_entry", "edit_flavors",
           "current_view"]
