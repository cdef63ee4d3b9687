"""``gateway check`` (and ``gateway serve --check``): is this store and catalog ready to serve, before players find out?

It loads the config file (when given) exactly as ``gateway serve`` does, then the catalog as a node loads it, and
reads every flavor file of every entry as a request would (its moov and sample tables): a file that is not an MP4,
is truncated, fragmented, or has no audio or video track is an error; a codec that common browsers cannot decode
(HEVC in Chrome and Firefox without hardware support, anything but H.264/AAC through MSE) is a warning, as are the
catalog's own problems that a node tolerates (a flavor file that does not exist yet). Exit 0 when nothing is an
error, 1 otherwise; ``--json`` prints the report as one JSON document.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

from packagers.errors import PackagerError

from ..catalog.catalog import CatalogView
from ..catalog.edits import current_view
from ..catalog.files import origin_catalog
from ..origin.store import Store, parse_presentation

BROWSER_CODECS = {"h264", "aac"}  # what every MSE browser decodes
CODEC_NOTES = {
    "hevc": "HEVC: Chrome and Firefox play it only with hardware decoding (Safari does); keep an H.264 flavor",
    "av1": "AV1: not decoded by Safari before the iPhone 15 / M3 Macs; keep an H.264 flavor",
}


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning
    where: str  # entries/0_abcd1234.json, movies/a.mp4, config
    message: str


def check_catalog(view: CatalogView, store) -> tuple[list[Finding], int]:
    """(findings, files probed): the catalog's problems, then every flavor file of every entry. Blocking."""
    findings = [Finding("error" if _is_error(p) else "warning", p.split(": ", 1)[0], p.split(": ", 1)[-1])
                for p in view.problems]
    probed: dict[str, list[Finding]] = {}
    read = 0
    for entry in view.entries():
        for flavor in entry.flavors:
            if flavor.is_caption or flavor.path in probed:
                continue
            found = probed[flavor.path] = []
            try:
                file = store.identify(flavor.path)
            except PackagerError:
                continue  # a missing file is among the catalog's problems already
            read += 1
            try:
                presentation = parse_presentation(store, file)
            except PackagerError as e:
                found.append(Finding("error", flavor.path, "cannot be served: " + e.message.split(": ", 1)[-1]))
                continue
            if not presentation.tracks:
                found.append(Finding("error", flavor.path, "cannot be served: it has no audio or video track"))
            for codec in sorted({t.codec.codec for t in presentation.tracks} - BROWSER_CODECS):
                note = CODEC_NOTES.get(codec, f"{codec}: browsers may not decode it through MSE; check the players "
                                              f"that must play it")
                found.append(Finding("warning", flavor.path, note))
    return findings + [f for found in probed.values() for f in found], read


def _is_error(problem: str) -> bool:
    """Catalog problems a node tolerates but that need fixing (invalid files, unknown partners) are errors; a
    flavor file that is not there (yet) is a warning."""
    return "is not a regular file inside the store" not in problem


def report(findings: list[Finding], partners: int, entries: int, probed: int, as_json: bool, out=sys.stdout) -> int:
    errors = sum(f.level == "error" for f in findings)
    summary = (f"{partners} partner(s), {entries} entr{'y' if entries == 1 else 'ies'}, {probed} file(s) read: "
               f"{errors} error(s), {len(findings) - errors} warning(s)")
    if as_json:
        print(json.dumps({"ok": not errors, "summary": summary, "findings": [asdict(f) for f in findings]},
                         indent=2, ensure_ascii=False), file=out)
    else:
        for f in sorted(findings, key=lambda f: (f.level != "error", f.where)):
            print(f"{f.level}: {f.where}: {f.message}", file=out)
        print(("ok: " if not errors else "not ready: ") + summary, file=out)
    return 1 if errors else 0


def cmd_check(args: argparse.Namespace, directory) -> int:
    remote = "://" in args.store
    view = current_view(None if remote else args.store, directory)()
    findings, probed = check_catalog(view, args.content_store)
    return report(findings, len(view.by_partner), len(view.by_entry), probed, args.json)


def check_settings(settings, as_json: bool = False) -> int:
    """``gateway serve --check``: the catalog and media of a loaded configuration, as ``gateway check``."""
    if settings.origin:
        with origin_catalog(settings) as (store, files):
            view = current_view(None, settings.catalog or files)()
            findings, probed = check_catalog(view, store)
    else:
        view = current_view(settings.store, settings.catalog)()
        findings, probed = check_catalog(view, Store(settings.store))
    return report(findings, len(view.by_partner), len(view.by_entry), probed, as_json)
