"""The catalog's documents: partners, entries and flavors, and their validation (schema in docs/catalog.md).

Every check fails with one line, ``<kind>/<file>.json: <key>: <problem>``, so an operator knows what to fix; a
partner's delivery override is validated by ``delivery_profiles.merge`` itself, so the catalog and the gateway can
never disagree about what a valid override is.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delivery_profiles import SYSTEM_DEFAULTS, ProfileError, merge
from packagers.errors import ErrorCode, PackagerError

from ..origin.paths import name_problem
from ..origin.store import Store


CATALOG_DIR_NAME = ".catalog"
ENTRY_ID = re.compile(r"[0-9]_[a-z0-9]{8}")  # Kaltura's <partition>_<8 chars>; flavor ids have the same shape
SECRET = re.compile(r"[0-9a-fA-F]{32,}")
RULES = (  # Kaltura's base.ini delivery keys, the top-level scalars of a delivery override
    "default_delivery_type", "short_entries_default_delivery_type", "secured_default_delivery_type",
    "short_entries_max_duration",
)


class CatalogError(ValueError):
    """An invalid catalog document or argument; the message is one line: ``<file>: <key>: <problem>``."""


class CatalogNotFound(PackagerError, LookupError):
    """No such partner or entry: a NOT_FOUND, so gateway.http.errors answers 404 without knowing about catalogs."""

    def __init__(self, message: str):
        super().__init__(ErrorCode.NOT_FOUND, message)


@dataclass(frozen=True)
class Partner:
    id: int
    name: str
    secret: str
    delivery: dict = field(default_factory=dict)  # partial override for delivery_profiles.merge; do not mutate

    def to_json(self, show_secret: bool = True) -> dict:
        secret = self.secret if show_secret else "*" * (len(self.secret) - 4) + self.secret[-4:]
        return {"id": self.id, "name": self.name, "secret": secret, "delivery": copy.deepcopy(self.delivery)}


CAPTION_TAG = "caption"  # a flavor that is a sidecar caption file (WebVTT, SRT); its language is a "lang:<code>" tag
LANGUAGE_TAG = "lang:"


@dataclass(frozen=True)
class Flavor:
    id: str
    path: str  # store-relative; bitrate, resolution and duration come from the media (the metadata cache)
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"id": self.id, "path": self.path, **({"tags": list(self.tags)} if self.tags else {})}

    @property
    def is_caption(self) -> bool:
        return CAPTION_TAG in self.tags

    @property
    def language(self) -> str | None:
        """The ISO 639-2 code of a ``lang:<code>`` tag (captions), None without one."""
        return next((t[len(LANGUAGE_TAG):] for t in self.tags if t.startswith(LANGUAGE_TAG)), None)


@dataclass(frozen=True)
class Entry:
    id: str
    partner_id: int
    name: str
    secured: bool
    flavors: tuple[Flavor, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file of the entry: its media, then its caption files (what a url set of the entry names)."""
        return tuple(f.path for f in self.flavors)

    @property
    def media_flavors(self) -> tuple[Flavor, ...]:
        return tuple(f for f in self.flavors if not f.is_caption)

    @property
    def caption_languages(self) -> dict[str, str]:
        """Store path → ISO 639-2 language of the entry's caption files that have one."""
        return {f.path: f.language for f in self.flavors if f.is_caption and f.language}

    def to_json(self) -> dict:
        return {"id": self.id, "partner_id": self.partner_id, "name": self.name, "secured": self.secured,
                "flavors": [f.to_json() for f in self.flavors]}


# ---------------------------------------------------------------- validation


def check_delivery(delivery: dict) -> None:
    """Raise ValueError unless a partner's override merges onto the system defaults.

    The one seam to ``delivery_profiles``: its ``merge`` alone judges what an override may say (its messages name
    the key path, ``profiles.hls.segment_duration_ms: must be a positive integer, got 0``).
    """
    try:
        merge(SYSTEM_DEFAULTS, delivery)
    except ProfileError as e:
        raise ValueError(str(e)) from None


def _fail(where: str, key: str, problem: str) -> None:
    raise CatalogError(f"{where}: {key}: {problem}")


def _object(doc: Any, where: str, key: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(doc, dict):
        _fail(where, key, "must be a JSON object")
    prefix = "" if key == "(document)" else key + "."
    for name in doc:
        if name not in required + optional:
            _fail(where, prefix + name, f"unknown key (expected {', '.join(required + optional)})")
    for name in required:
        if name not in doc:
            _fail(where, prefix + name, "is required")
    return doc


def _positive_int(value: Any, where: str, key: str) -> int:
    if type(value) is not int or value <= 0:  # type(): True is an int to isinstance
        _fail(where, key, "must be an integer > 0")
    return value


def _name(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(where, key, "must be a non-empty string")
    return value


def _kaltura_id(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not ENTRY_ID.fullmatch(value):
        _fail(where, key, "must look like 0_abcd1234 (a digit, '_', 8 of [a-z0-9])")
    return value


def path_problem(path: Any) -> str | None:
    """Why ``path`` cannot name a store file (None if it can): each segment obeys the URL rule (``name_problem``)."""
    if not isinstance(path, str) or not path:
        return "must be a non-empty string"
    segments = path.split("/")
    if path.startswith("/") or ".." in segments:
        return "must be a relative path inside the store"
    return next(filter(None, map(name_problem, segments)), None)


def parse_partner(doc: Any, where: str) -> Partner:
    """A validated Partner from a JSON document; ``where`` (``partners/101.json``) prefixes every message."""
    _object(doc, where, "(document)", ("id", "name", "secret"), ("delivery",))
    partner_id = _positive_int(doc["id"], where, "id")
    if Path(where).name != f"{partner_id}.json":
        _fail(where, "id", f"{partner_id} does not match the file name")
    if not isinstance(doc["secret"], str) or not SECRET.fullmatch(doc["secret"]):
        _fail(where, "secret", "must be a hex string of at least 32 characters")
    delivery = doc.get("delivery", {})
    if not isinstance(delivery, dict):
        _fail(where, "delivery", "must be a JSON object")
    try:
        check_delivery(delivery)
    except ValueError as e:
        _fail(where, "delivery", str(e))
    return Partner(partner_id, _name(doc["name"], where, "name"), doc["secret"], copy.deepcopy(delivery))


def parse_entry(doc: Any, where: str) -> Entry:
    """A validated Entry; flavor files are not looked at here (see ``missing_flavors``)."""
    _object(doc, where, "(document)", ("id", "partner_id", "name", "secured", "flavors"))
    entry_id = _kaltura_id(doc["id"], where, "id")
    if Path(where).name != f"{entry_id}.json":
        _fail(where, "id", f"{entry_id} does not match the file name")
    if not isinstance(doc["secured"], bool):
        _fail(where, "secured", "must be true or false")
    if not isinstance(doc["flavors"], list) or not doc["flavors"]:
        _fail(where, "flavors", "must be a non-empty list")
    flavors: list[Flavor] = []
    for i, item in enumerate(doc["flavors"]):
        key = f"flavors[{i}]"
        _object(item, where, key, ("id", "path"), ("tags",))
        flavor_id = _kaltura_id(item["id"], where, key + ".id")
        if problem := path_problem(item["path"]):
            _fail(where, key + ".path", problem)
        tags = item.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            _fail(where, key + ".tags", "must be a list of non-empty strings")
        for j, other in enumerate(flavors):
            if other.id == flavor_id:
                _fail(where, key + ".id", f"duplicates flavors[{j}].id")
            if other.path == item["path"]:
                _fail(where, key + ".path", f"duplicates flavors[{j}].path")
        flavors.append(Flavor(flavor_id, item["path"], tuple(tags)))
    return Entry(entry_id, _positive_int(doc["partner_id"], where, "partner_id"), _name(doc["name"], where, "name"),
                 doc["secured"], tuple(flavors))


def resolve_flavors(entry: Entry, store: Store) -> tuple[str | None, ...]:
    """Each flavor's realpath relative to the store (``FileIdentity.store_path``), None if no file there. Blocking."""
    resolved = []
    for flavor in entry.flavors:
        try:
            resolved.append(store.identify(flavor.path).store_path)
        except PackagerError:
            resolved.append(None)
    return tuple(resolved)


def missing_flavors(entry: Entry, where: str, resolved: tuple[str | None, ...]) -> list[str]:
    """Warnings, not errors: media may reach the store after its entry."""
    return [f"{where}: flavors[{i}].path: {f.path!r} is not a regular file inside the store (yet)"
            for i, (f, real) in enumerate(zip(entry.flavors, resolved)) if real is None]


def _decode(raw: bytes, where: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        doc = {}
        for key, value in pairs:
            if key in doc:
                _fail(where, key, "duplicate key")
            doc[key] = value
        return doc

    def no_constants(name: str) -> None:
        _fail(where, "(document)", f"{name} is not JSON")

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except UnicodeDecodeError:
        _fail(where, "(document)", "not UTF-8")
    except json.JSONDecodeError as e:
        _fail(where, "(document)", f"invalid JSON: {e}")
