"""What every catalog command shares (gateway.runtime.catalog_cli, catalog_edit, check): finding the store and
the catalog, running a command with its errors turned into one stderr line and an exit code, printing, and the
checks made when flavors are added."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from packagers.captions.files import caption_problem
from packagers.errors import user_message

from ..catalog.catalog import (ENTRY_ID, CatalogError, CatalogNotFound, CatalogView, Entry, Flavor,
                               catalog_dir, path_problem)
from ..catalog.edits import after_write, current_view, new_id
from ..catalog.files import origin_catalog
from ..catalog.schema import CAPTION_TAG, LANGUAGE_TAG
from ..origin.errors import OriginError
from ..origin.store import Store
from ..settings import Settings
from .config_file import ConfigError, ConfigSource

_LANGUAGE = re.compile(r"[a-z]{3}")  # ISO 639-2, as in an MP4's mdhd


def catalog_command(fn: Callable[[argparse.Namespace, Path], int]) -> Callable[[argparse.Namespace], int]:
    """Catalog errors become one stderr line and an exit code, named after the command."""

    def run(args: argparse.Namespace) -> int:
        name = f"gateway {args.command} {args.action}".rstrip()
        try:
            _resolve_store(args)
        except (ConfigError, ValueError) as e:
            print(f"{name}: {e}", file=sys.stderr)
            return 2
        remote = "://" in args.store
        if not remote and not Path(args.store).is_dir():  # never create a catalog where no store is mounted
            print(f"{name}: store {args.store} is not a directory", file=sys.stderr)
            return 2
        try:
            settings = Settings(origin=args.store, s3_endpoint=args.s3_endpoint, s3_region=args.s3_region,
                                s3_profile=args.s3_profile) if remote else None
            with origin_catalog(settings) if remote else nullcontext((Store(args.store), None)) as (store, files):
                args.content_store = store
                directory = args.catalog or files or catalog_dir(args.store)
                return fn(args, directory)  # gateway.catalog.edits runs a write that lost an S3 race again
        except CatalogNotFound as e:
            print(f"{name}: {user_message(e.message)}", file=sys.stderr)
            return 1
        except (CatalogError, OriginError, ValueError) as e:  # ValueError: S3ConfigError, a bad URL
            print(f"{name}: {user_message(str(getattr(e, 'reason', e)))}", file=sys.stderr)
            return 2

    run.__name__ = fn.__name__
    return run


def _resolve_store(args: argparse.Namespace) -> None:
    """--store, else $GATEWAY_STORE, else the --config file's store; its catalog and S3 settings fill what the
    command line left unset."""
    if args.config is not None:
        settings = ConfigSource(args.config).load().settings
        if args.store is None:
            args.store = settings.origin or str(settings.store)
        args.catalog = args.catalog or settings.catalog
        for key in ("s3_endpoint", "s3_region", "s3_profile"):
            if getattr(args, key) is None:
                setattr(args, key, getattr(settings, key))
    args.store = args.store or os.environ.get("GATEWAY_STORE") or None
    if args.store is None:
        raise ValueError("which store? give --store DIR|URL, set GATEWAY_STORE, or --config FILE.toml")


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False))


def print_table(headers: tuple[str, ...], rows: list[tuple]) -> None:
    cells = [headers] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def catalog_view(args: argparse.Namespace, directory: Path) -> CatalogView:
    """The catalog as a node would load it; its problems (invalid files, missing media) as warnings on stderr."""
    remote = "://" in args.store
    view = current_view(None if remote else args.store, directory)()
    for problem in view.problems:
        if problem.startswith(args.command + "/"):
            print(f"gateway {args.command} {args.action}: warning: {problem}", file=sys.stderr)
    return view


def new_flavors(entry_id: str, specs: list[str], captions: list[str], where: str, first: int = 0
                ) -> tuple[Flavor, ...]:
    """Flavors from ``--flavor [ID=]PATH`` and ``--caption LANG=PATH`` (ids generated unless given), numbered from
    ``first`` in messages."""
    partition = entry_id[:1] if entry_id[:1].isdigit() else "0"
    flavors = []
    for i, spec in enumerate(specs, first):
        flavor_id, sep, path = spec.partition("=")
        if not (sep and ENTRY_ID.fullmatch(flavor_id)):  # '=' may also be part of a file name
            flavor_id, path = new_id(partition), spec
        if problem := path_problem(path):
            raise CatalogError(f"{where}: flavors[{i}].path: {problem}")
        flavors.append(Flavor(flavor_id, path))
    for i, spec in enumerate(captions, first + len(flavors)):
        language, sep, path = spec.partition("=")
        if not sep or not _LANGUAGE.fullmatch(language):
            raise CatalogError(f"{where}: --caption: expected <ISO 639-2 code>=<path>, got {spec!r}")
        if problem := path_problem(path) or caption_problem(path):
            raise CatalogError(f"{where}: flavors[{i}].path: {problem}")
        flavors.append(Flavor(new_id(partition), path, (CAPTION_TAG, LANGUAGE_TAG + language)))
    return tuple(flavors)


def report_entry(args: argparse.Namespace, directory, entry: Entry, warnings: list[str]) -> None:
    """After a write: the operation's warnings, missing flavor files and what sharing files with secured entries
    means, then the entry."""
    view = lambda: catalog_view(args, directory)  # noqa: E731
    for warning in warnings + after_write(directory, args.content_store, entry, view):
        print(f"gateway entries {args.action}: warning: {warning}", file=sys.stderr)
    print_json(entry.to_json())
