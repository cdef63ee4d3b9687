"""Fixtures of tests/gateway reused here: a store of generated media."""
from tests.gateway.conftest import store  # noqa: F401
