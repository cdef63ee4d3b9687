"""``gateway partners update|remove`` and ``gateway entries update|remove``: changing and removing catalog objects.

Like every catalog command (gateway.runtime.catalog_cli): inside the catalog's write lock, read, change, validate as
the gateway will, write; on S3 a lost race runs the command again. A partner that still has entries is not removed
unless ``--force``, which removes its entries too (an entry without its partner would be a catalog problem on every
node, and its files would stay secured by nobody's secret).
"""
from __future__ import annotations

import argparse
import dataclasses

from delivery_profiles.tokens import new_secret

from .catalog_common import catalog_command, new_flavors, print_json, report_entry
from ..catalog.catalog import CatalogError, Entry, Partner
from ..catalog.edits import change_entry, change_partner, current_view, edit_flavors, remove_entry, remove_partner


def add_edit_commands(partners: argparse._SubParsersAction, entries: argparse._SubParsersAction,
                      common: argparse.ArgumentParser) -> None:
    p = partners.add_parser("update", parents=[common], help="rename a partner or change its secret")
    p.add_argument("partner_id", type=int)
    p.add_argument("--name")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--secret", help="hex, at least 32 characters")
    secret.add_argument("--new-secret", action="store_true", help="generate a new secret (signed URLs, ks and "
                        "stream keys made with the old one stop working)")
    p.set_defaults(func=catalog_command(cmd_partners_update))
    p = partners.add_parser("remove", parents=[common], help="remove a partner (refused while it has entries)")
    p.add_argument("partner_id", type=int)
    p.add_argument("--force", action="store_true", help="remove its entries too")
    p.set_defaults(func=catalog_command(cmd_partners_remove))

    p = entries.add_parser("update", parents=[common], help="change an entry: name, secured, flavors, captions")
    p.add_argument("entry_id")
    p.add_argument("--name")
    secured = p.add_mutually_exclusive_group()
    secured.add_argument("--secured", dest="secured", action="store_const", const=True, default=None,
                         help="playback needs a signed URL")
    secured.add_argument("--public", dest="secured", action="store_const", const=False)
    p.add_argument("--add-flavor", action="append", default=[], metavar="[ID=]PATH")
    p.add_argument("--add-caption", action="append", default=[], metavar="LANG=PATH")
    p.add_argument("--remove-flavor", action="append", default=[], metavar="ID|PATH",
                   help="a flavor (or caption) by its id or its path, repeatable")
    p.add_argument("--force", action="store_true", help="add flavor files even when they cannot be served")
    p.set_defaults(func=catalog_command(cmd_entries_update))
    p = entries.add_parser("remove", parents=[common], help="remove an entry (its files stay in the store)")
    p.add_argument("entry_id")
    p.set_defaults(func=catalog_command(cmd_entries_remove))


def cmd_partners_update(args: argparse.Namespace, directory) -> int:
    if args.name is None and args.secret is None and not args.new_secret:
        raise CatalogError(f"partners/{args.partner_id}.json: nothing to change (--name, --secret, --new-secret)")

    def change(partner: Partner) -> Partner:
        secret = new_secret() if args.new_secret else args.secret if args.secret is not None else partner.secret
        return dataclasses.replace(partner, name=args.name if args.name is not None else partner.name, secret=secret)

    partner = change_partner(directory, args.partner_id, change)  # validated first: a bad secret changes nothing
    print_json(partner.to_json(show_secret=False))
    return 0


def cmd_partners_remove(args: argparse.Namespace, directory) -> int:
    remote = "://" in args.store
    entries = current_view(None if remote else args.store, directory, identify=False)
    owned = remove_partner(directory, args.partner_id, lambda: entries().entries(), args.force)
    print(f"removed partner {args.partner_id}" + (f" and its {len(owned)} entries" if owned else ""))
    return 0


def cmd_entries_update(args: argparse.Namespace, directory) -> int:
    where = f"entries/{args.entry_id}.json"

    def change(entry: Entry) -> Entry:
        added = new_flavors(entry.id, args.add_flavor, args.add_caption, where, len(entry.flavors))
        return Entry(entry.id, entry.partner_id, args.name if args.name is not None else entry.name,
                     entry.secured if args.secured is None else args.secured,
                     edit_flavors(entry, args.remove_flavor, added))

    changed, warnings = change_entry(directory, args.content_store, args.entry_id, change, args.force)
    report_entry(args, directory, changed, warnings)
    return 0


def cmd_entries_remove(args: argparse.Namespace, directory) -> int:
    entry = remove_entry(directory, args.entry_id)
    print(f"removed entry {entry.id} (partner {entry.partner_id}); its files stay in the store")
    return 0
