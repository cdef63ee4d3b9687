"""What an origin request can end in, apart from the client (gateway/origin/origin_client.py) so that code which
only catches them (the catalog commands) does not load aiohttp."""
from __future__ import annotations


class OriginError(Exception):
    """The origin failed this request: ``status`` 502 (bad or no answer) or 504 (no answer in time)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class OriginNotFound(Exception):
    pass


class OriginChanged(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
