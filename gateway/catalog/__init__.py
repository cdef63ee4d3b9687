"""Entries, partners and their rules: the catalog on the shared store, access checks, delivery keys."""
