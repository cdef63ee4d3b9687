"""Live ingest, composed: the RTMP server and relay from ``rtmp/`` with this deployment's policy and consumers.

``rtmp/`` never imports ``gateway``; everything that needs the store, the catalog or HTTP is plugged in here:
relay taps (live packager, recorder, push relays), ``authorize`` (stream keys, ``on_publish`` callbacks) and ``pull``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from rtmp.config import RtmpConfig
from rtmp.relay import Relay
from rtmp.server import RtmpServer

from .settings import Settings

__all__ = ["Ingest", "start_ingest"]

log = logging.getLogger("gateway.ingest")


@dataclass
class Ingest:
    server: RtmpServer
    relay: Relay
    config: RtmpConfig
    closers: list = field(default_factory=list)   # async callables run on close, after the server stops

    @property
    def port(self) -> int:
        return self.server.port

    def stats(self) -> dict:
        return self.server.stats()

    async def close(self) -> None:
        await self.server.close()
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception:
                log.exception("ingest: closing %r failed", closer)


async def start_ingest(settings: Settings, config: RtmpConfig, host: str, port: int) -> Ingest:
    relay = Relay()
    server = RtmpServer(relay, idle_timeout=config.idle_timeout)
    ingest = Ingest(server, relay, config)
    await server.start(host, port)
    return ingest
