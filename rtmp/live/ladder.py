"""The transcoded ladder: a `RelayTap` that, for every stream published to an application with ``transcode``
renditions (``["720p@2500k", "480p@1200k"]``), publishes ``<stream>_720p``, ``<stream>_480p``... as ordinary
streams of the same relay: RTMP players, the live packager (HLS, DASH) and recording see them like any publish.

Each source stream gets one process (``ladder_worker``): its video is decoded once there and encoded per rendition;
the audio is passed through as it is, straight from the event loop to every rendition. A sender and a reader thread
per process move messages over its pipe, so the event loop never blocks on it.

A rendition starts (and, after a configuration change, starts again) at its first key frame, which the process gives
back a while after the source sent it. The source's audio of that while is kept (``AUDIO_KEPT`` messages) and
given to the rendition right after that key frame: its first segment has its audio from the start, and its packager
snaps the same first audio frame onto the same timeline as the source's, so the variants' audio timestamps match
exactly (not only within FLV's millisecond).

When the source's video configuration changes within a publish, each rendition is published again (its players
stay attached), so that its packager starts a new period at the same key frame as the source's.

Failure stays local. A rendition whose encoder fails is unpublished with a log line; the others go on. When the
process falls behind (more than ``max_backlog_ms`` of video queued), its most expensive rendition still running is
dropped (log line, unpublished), then the next one if that was not enough. A crashed process unpublishes its
renditions. The source is never touched: it has been relayed before this tap sees a message.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
import queue
import threading
import time
from typing import Sequence

from packagers.transcode import Rendition, parse_rendition

from ..config import RtmpConfig
from ..messages import MSG_AUDIO, MSG_VIDEO, Message
from ..relay import Relay
from . import ladder_worker

__all__ = ["LadderTap", "rendition_key"]

log = logging.getLogger("rtmp.ladder")
MAX_BACKLOG_MS = 3000       # video queued for a process before its most expensive rendition is dropped
GIVE_UP = 4                 # ... and this many times as much (or no rendition left): the process is stopped
AUDIO_KEPT = 1024           # audio messages kept for a rendition's start: ~21 s of AAC at 48 kHz, > GIVE_UP's 12 s


def rendition_key(key: str, rendition: str) -> str:
    return f"{key}_{rendition}"


class _Job:
    """One source stream's transcoding process and the renditions it publishes."""

    def __init__(self, tap: LadderTap, key: str, renditions: Sequence[Rendition]) -> None:
        self.tap, self.key, self.renditions = tap, key, list(renditions)
        context = multiprocessing.get_context("spawn")     # no fork of an event loop's process
        self.conn, child = context.Pipe()
        self.process = context.Process(target=ladder_worker.run, args=(child, self.renditions),
                                       name=f"ladder-{key}", daemon=True)
        self.process.start()
        child.close()
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.first_in: int | None = None    # timestamps (ms) of the video sent and of the newest picture back
        self.last_in: int | None = None
        self.last_out: int | None = None
        self.shed_at: int | None = None     # last_in when a rendition was last dropped for overload
        self.published: set[str] = set()
        self.starting: set[str] = set()     # published, their first key frame not relayed yet: no audio for them
        self.recent_audio: collections.deque[Message] = collections.deque(maxlen=AUDIO_KEPT)
        self.failed: dict[str, str] = {}
        self.cpu: dict[str, float] = {}
        self.started = time.monotonic()
        self.audio_header: Message | None = None
        self.closed = False
        self.stopping = False
        threading.Thread(target=self._send_loop, name=f"ladder-send-{key}", daemon=True).start()
        threading.Thread(target=self._read_loop, name=f"ladder-read-{key}", daemon=True).start()

    # ------------------------------------------------------------------------------------------------ to the process
    @property
    def backlog_ms(self) -> int:
        """Media time sent to the process and not back yet."""
        if self.last_in is None:
            return 0
        done = self.last_out if self.last_out is not None else self.first_in
        return (self.last_in - done) & 0xFFFFFFFF if (self.last_in - done) & 0x80000000 == 0 else 0

    def video(self, message: Message) -> None:
        if self.stopping:
            return
        if self.first_in is None:
            self.first_in = message.timestamp
        self.last_in = message.timestamp
        self.outbox.put(("video", message.timestamp, message.payload))
        calm = self.shed_at is None or (self.last_in - self.shed_at) & 0xFFFFFFFF > self.tap.max_backlog_ms
        if self.backlog_ms > self.tap.max_backlog_ms and calm:
            self._shed()
        if len(self.failed) == len(self.renditions) or self.backlog_ms > GIVE_UP * self.tap.max_backlog_ms:
            # nothing left to make, or it cannot even decode in real time: end the process rather than queue the
            # stream's video without bound
            log.warning("rtmp ladder %s: stopping the transcoder (%s)", self.key,
                        "every rendition stopped" if len(self.failed) == len(self.renditions)
                        else f"{self.backlog_ms} ms behind")
            for r in self.renditions:
                self._fail(r.name, "the transcoder stopped")
            self.stop()

    def _shed(self) -> None:
        """Overload: drop the running rendition with the most pixels (the most CPU), then give the process as
        long again to catch up before judging it again."""
        running = [r for r in self.renditions if r.name not in self.failed]
        if not running:
            return
        worst = max(running, key=lambda r: (r.height, r.bit_rate))
        self.outbox.put(("drop", worst.name))
        self._fail(worst.name, f"dropped: the transcoder is {self.backlog_ms} ms behind")
        self.shed_at = self.last_in

    def audio(self, message: Message, sequence_header: bool) -> None:
        if sequence_header:
            self.audio_header = message
        else:
            self.recent_audio.append(message)
        for name in self.published - self.starting:
            self.tap.relay.media(rendition_key(self.key, name), message, keyframe=False,
                                 sequence_header=sequence_header)

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.outbox.put(("stop",))

    def _send_loop(self) -> None:
        while True:
            item = self.outbox.get()
            try:
                self.conn.send(item)
            except (OSError, ValueError):
                return
            if item[0] == "stop":
                return

    # ------------------------------------------------------------------------------------------------ from it
    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    item = self.conn.recv()
                except (EOFError, OSError):
                    break
                self.tap.loop.call_soon_threadsafe(self._result, item)
            self.process.join(5)
            self.tap.loop.call_soon_threadsafe(self._ended, self.process.exitcode)
        except RuntimeError:    # the event loop is closed: the gateway is gone
            return

    def _result(self, item: tuple) -> None:
        kind = item[0]
        if kind == "video":
            _, name, timestamp, payload, keyframe, sequence_header = item
            if name in self.failed:
                return
            key = rendition_key(self.key, name)
            if name not in self.published:
                self.tap.own.add(key)   # before publish: its on_publish must not start a ladder of the rendition
                if not self.tap.relay.publish(key, self):
                    self.tap.own.discard(key)
                    self._fail(name, f"{key} is already published by someone else")
                    return
                self.published.add(name)
                self.starting.add(name)
                if self.audio_header is not None:
                    self.tap.relay.media(key, self.audio_header, keyframe=False, sequence_header=True)
            elif sequence_header:
                # A later sequence header: the source's video configuration changed, so its packager started a new
                # period (an HLS discontinuity, a timeline from its next key frame). The rendition's new encoder
                # may well give the same avcC, which would start none: publishing it again starts one at the same
                # key frame, and the variants keep lining up (RFC 8216 §6.2.4). Its players stay attached.
                self.tap.relay.unpublish(key, self)
                if not self.tap.relay.publish(key, self):
                    self.published.discard(name)
                    self.tap.own.discard(key)
                    self._fail(name, f"{key} was taken by someone else")
                    return
                self.starting.add(name)
                if self.audio_header is not None:
                    self.tap.relay.media(key, self.audio_header, keyframe=False, sequence_header=True)
            if not sequence_header:
                self.last_out = timestamp
            self.tap.relay.media(key, Message(6, timestamp, MSG_VIDEO, 1, payload), keyframe=keyframe,
                                 sequence_header=sequence_header)
            if name in self.starting and keyframe and not sequence_header:
                self._start_audio(key, name, timestamp)
        elif kind == "failed":
            self._fail(item[1], item[2])
        elif kind == "stats":
            self.cpu = item[1]

    def _start_audio(self, key: str, name: str, timestamp: int) -> None:
        """The rendition's first key frame (publisher time ``timestamp``) is out: the source's audio from that time
        on, then the audio as it comes."""
        self.starting.discard(name)
        for message in self.recent_audio:
            if (message.timestamp - timestamp) & 0xFFFFFFFF < 0x80000000:    # at or after it (32-bit ms wrap)
                self.tap.relay.media(key, message, keyframe=False, sequence_header=False)

    def _fail(self, name: str, why: str) -> None:
        if name in self.failed:
            return
        self.failed[name] = why
        log.warning("rtmp ladder %s: rendition %s stopped: %s", self.key, name, why)
        self._unpublish(name)

    def _unpublish(self, name: str) -> None:
        if name in self.published:
            self.published.discard(name)
            self.starting.discard(name)
            key = rendition_key(self.key, name)
            self.tap.relay.unpublish(key, self)
            self.tap.own.discard(key)

    def _ended(self, exitcode: int | None) -> None:
        if exitcode not in (0, None) and not self.closed:
            log.error("rtmp ladder %s: the transcoding process ended with %s: its renditions stop", self.key, exitcode)
        for name in list(self.published):
            self._unpublish(name)
        self.closed = True
        if self.tap.jobs.get(self.key) is self:
            del self.tap.jobs[self.key]

    def stats(self) -> dict:
        elapsed = max(time.monotonic() - self.started, 1e-3)
        return {"renditions": sorted(self.published), "failed": dict(self.failed), "backlog_ms": self.backlog_ms,
                "cpu_seconds": {k: round(v, 3) for k, v in self.cpu.items()},
                "cpu_share": {k: round(v / elapsed, 3) for k, v in self.cpu.items()}}


class LadderTap:
    """RelayTap; ``loop`` is the relay's event loop (results are delivered on it)."""

    def __init__(self, relay: Relay, config: RtmpConfig, loop: asyncio.AbstractEventLoop | None = None, *,
                 max_backlog_ms: int = MAX_BACKLOG_MS) -> None:
        self.relay, self.config = relay, config
        self.loop = loop or asyncio.get_event_loop()
        self.max_backlog_ms = max_backlog_ms
        self.jobs: dict[str, _Job] = {}
        self.own: set[str] = set()      # rendition keys this tap publishes (never transcoded again)

    def on_publish(self, key: str) -> None:
        if key in self.own or key in self.jobs:
            return
        app = key.partition("/")[0]
        renditions = [parse_rendition(r) for r in self.config.for_app(app).transcode]
        if renditions:
            self.jobs[key] = _Job(self, key, renditions)

    def on_message(self, key: str, message: Message, *, keyframe: bool, sequence_header: bool) -> None:
        job = self.jobs.get(key)
        if job is None or job.closed:
            return
        if message.message_type_id == MSG_VIDEO:
            job.video(message)
        elif message.message_type_id == MSG_AUDIO:
            job.audio(message, sequence_header)

    def on_unpublish(self, key: str) -> None:
        job = self.jobs.get(key)
        if job is not None:
            job.stop()

    def stats(self) -> dict:
        return {key: job.stats() for key, job in self.jobs.items()}

    async def close(self, timeout: float = 10.0) -> None:
        for job in list(self.jobs.values()):
            job.stop()
        deadline = time.monotonic() + timeout
        for job in list(self.jobs.values()):
            await asyncio.to_thread(job.process.join, max(0.0, deadline - time.monotonic()))
            if job.process.is_alive():
                job.process.kill()
