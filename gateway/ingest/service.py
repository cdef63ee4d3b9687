"""Live ingest, composed: the RTMP server and relay from ``rtmp/`` with this deployment's policy and consumers.

``rtmp/`` never imports ``gateway``; everything that needs the store, the catalog or HTTP is plugged in here:
relay taps (live packager, recorder, push relays), ``authorize`` (stream keys, ``on_publish`` callbacks) and ``pull``.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from rtmp.config import RtmpConfig
from rtmp.live import LivePackager
from rtmp.live.ladder import LadderTap
from rtmp.pull import Puller
from rtmp.push import PushRelay
from rtmp.record import Recorder
from rtmp.relay import Relay
from rtmp.server import RtmpServer

from ..catalog.catalog import (CatalogError, CatalogNotFound, Directory, Entry, Flavor, open_catalog, read_entry,
                               read_partner, write_entry, write_lock)
from ..catalog.edits import retrying
from ..origin.upload import Uploader, remote_store, sizes_from_env
from .auth import IngestAuth
from .notify import Notifier
from ..settings import Settings

__all__ = ["Ingest", "register_recording", "start_ingest"]

log = logging.getLogger("gateway.ingest")


@dataclass
class Ingest:
    server: RtmpServer
    relay: Relay
    config: RtmpConfig
    closers: list = field(default_factory=list)   # async callables run on close, after the server stops
    parts: dict = field(default_factory=dict)     # name → consumer with stats(): live, recorder, push, pull

    @property
    def port(self) -> int:
        return self.server.port

    def stats(self) -> dict:
        """The server's connection and stream figures plus one section per consumer (live packaging latency,
        recordings, push targets, pulls)."""
        body = self.server.stats()
        for name, part in self.parts.items():
            body[name] = part.stats()
        return body

    async def close(self) -> None:
        await self.server.close()
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception:
                log.exception("ingest: closing %r failed", closer)


async def start_ingest(settings: Settings, config: RtmpConfig, host: str, port: int) -> Ingest:
    relay = Relay()
    remote = remote_store(settings)   # media on an origin: recordings go there, and the catalog unless --catalog
    catalog = open_catalog(settings, remote)
    auth = IngestAuth(config, catalog)
    puller = Puller(relay, config, idle_timeout=config.idle_timeout)   # plays unknown streams from `pull`
    # nginx-rtmp's callbacks; without any configured the server runs exactly as before (no held connects)
    notifier = Notifier(config, settings.store, puller=puller, locate=remote.url if remote is not None else None) \
        if Notifier.wanted(config) else None
    server = RtmpServer(relay, idle_timeout=config.idle_timeout, authorize=auth, fan_out_delay=config.fan_out_ms / 1000,
                        notify=notifier)
    ingest = Ingest(server, relay, config)
    ingest.closers.append(auth.close)
    if notifier is not None:
        notifier.start()
        ingest.parts["notify"] = notifier
        ingest.closers.append(notifier.close)
    directory = catalog.files

    def on_recorded(path: str, info: dict) -> None:   # in the recorder's (or uploader's) thread: blocking is fine
        partner_id = config.for_app(info["app"]).partner_id
        if partner_id is not None:
            register_recording(directory, partner_id, path, info)
        if notifier is not None:
            notifier.record_done(path, info)

    # a remote store: recordings are written to the state directory, then uploaded (gateway/origin/upload.py) in the
    # uploader's own thread, and registered and announced once they are on the origin; files left there by a failed
    # upload or a crash go first
    if remote is not None:
        single_max, part_size = sizes_from_env()
        uploader = Uploader(remote, settings.store, on_recorded, single_max=single_max, part_size=part_size)
        ingest.parts["upload"] = uploader
        ingest.closers.append(lambda: asyncio.to_thread(uploader.close))   # after the recorder's (reversed order)
        uploader.recover()
    finished = uploader.submit if remote is not None else on_recorded
    # always there: the control API may record any stream (record/start); it records by itself where record = true
    recorder = Recorder(settings.store, enabled=lambda app: config.for_app(app).record, on_recorded=finished)
    relay.add_tap(recorder)
    ingest.parts["recorder"] = recorder
    ingest.closers.append(lambda: asyncio.to_thread(recorder.close))
    if any(app.transcode for app in (config.default, *config.applications.values())):
        ladder = LadderTap(relay, config, asyncio.get_running_loop())   # <stream>_<height>p renditions
        relay.add_tap(ladder)
        ingest.parts["ladder"] = ladder
        ingest.closers.append(ladder.close)
    if any(app.live for app in (config.default, *config.applications.values())):
        live = LivePackager(Path(settings.store) / "live", config)   # live HLS + DASH of apps with live = true
        relay.add_tap(live)
        ingest.parts["live"] = live
        ingest.closers.append(lambda: asyncio.to_thread(live.close))
    push = PushRelay(relay, config)         # re-publishes the streams of applications with push targets
    relay.add_tap(push)
    server.push = push.push_to              # an on_publish callback's redirect to rtmp:// (nginx-rtmp's push)
    ingest.parts["push"] = push
    ingest.closers.append(push.close)
    server.pull = puller
    ingest.parts["pull"] = server.pull
    ingest.closers.append(server.pull.close)
    await server.start(host, port)
    return ingest


def register_recording(directory: Directory, partner_id: int, path: str, info: dict) -> Entry | None:
    """Add a catalog entry (one flavor: the file) for a finished recording, so playManifest knows it; the file is
    playable under /hls/<path>/... anyway. Entry ids must look like Kaltura's (0_abcd1234), so the id is derived from
    the path (the same recording is registered once) and the name is the file's "<stream>-<UTC>". None when the
    partner is not in the catalog, or the catalog cannot be written (logged). Blocking."""
    digest = int.from_bytes(hashlib.sha256(path.encode()).digest()[:12], "big")
    entry_id, flavor_id = (f"0_{_base36(digest >> shift, 8)}" for shift in (0, 48))
    entry = Entry(entry_id, partner_id, Path(path).stem, False, (Flavor(flavor_id, path),))
    def register() -> Entry | None:
        with write_lock(directory):
            kept = _registered(directory, partner_id, path, entry_id)
            if kept is not _WRITE:
                return kept
            write_entry(directory, entry)
        return entry

    try:
        registered = retrying(register)  # a catalog on S3 is written optimistically: a lost race reads again
    except (CatalogError, OSError) as e:
        log.error("ingest: recording %s not registered: %s", path, e)
        return None
    if registered is not entry:
        return registered
    log.info("ingest: recording %s registered as entry %s of partner %s", path, entry_id, partner_id)
    return entry


_WRITE = object()


def _registered(directory: Directory, partner_id: int, path: str, entry_id: str):
    """The entry already registered for ``path``, None when it must not be registered, _WRITE to write it."""
    try:
        read_partner(directory, partner_id)
    except CatalogNotFound:
        log.warning("ingest: recording %s not registered: no partner %s in the catalog", path, partner_id)
        return None
    try:
        existing = read_entry(directory, entry_id)
    except CatalogNotFound:
        return _WRITE
    except CatalogError:
        return _WRITE  # an invalid file under our id: replace it
    if existing.paths == (path,):
        return existing
    log.error("ingest: recording %s not registered: entry %s exists for %s", path, entry_id, existing.paths)
    return None


def _base36(value: int, digits: int) -> str:
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join(alphabet[(value // 36 ** i) % 36] for i in reversed(range(digits)))


INGEST = web.AppKey("ingest", Ingest)  # only set when this process runs the RTMP ingest: use app.get(INGEST)
