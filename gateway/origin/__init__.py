"""Where packaged bytes come from: the store, the caches, and packaging (identities → MediaSet → bytes)."""
