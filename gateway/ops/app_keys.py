"""The aiohttp application key of the Settings, which every layer above reads. It lives here rather than in
gateway/settings.py so that the command line's catalog commands, which read Settings, start without loading aiohttp."""
from __future__ import annotations

from aiohttp import web

from ..settings import Settings

SETTINGS = web.AppKey("settings", Settings)
