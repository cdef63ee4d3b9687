"""The live packager: a `RelayTap` that turns every published stream of a live application into HLS + DASH files.

The relay calls the tap on the event loop, so the tap only queues: each stream has a worker thread that demuxes,
segments (``segmenter``), muxes and writes (``writer``). A slow store (an NFS stall) delays that stream's files,
never the event loop, the publisher or the other streams. A worker's queue is bounded in bytes: past the bound,
audio/video messages are dropped (sequence headers never are) and the segmenter is told, so the stream resumes at
the next key frame in a new period instead of publishing a segment with a hole.

A worker lives from the publish until its queue is empty after the unpublish; the writer (numbers, periods, the
DASH clock) outlives it, so a republish continues the same playlists with a discontinuity / new Period.
"""
from __future__ import annotations

import functools
import logging
import queue
import re
import threading
import time
from pathlib import Path
from typing import Callable

from ..config import RtmpConfig
from ..errors import RtmpError
from ..messages import MSG_AUDIO, MSG_VIDEO, Message
from .segmenter import LiveSegmenter, Part
from .writer import MEDIA_PLAYLIST, LiveStreamWriter, latency_summary

__all__ = ["LivePackager", "STREAM_NAME"]

log = logging.getLogger("rtmp.live")

STREAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")   # an app or stream name we make a directory of
_FORGET_ENDED_AFTER = 3600.0    # seconds an ended stream's writer (its numbering) is remembered for a republish


class _Worker(threading.Thread):
    def __init__(self, packager: LivePackager, key: str, writer: LiveStreamWriter) -> None:
        super().__init__(name=f"live-{key}", daemon=True)
        self.packager, self.key, self.writer = packager, key, writer
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.bytes_in = 0           # written by the event loop only
        self.bytes_out = 0          # written by this thread only: backlog = in - out, no lock needed
        self.overflowing = False
        self.dropped_messages = 0
        self.bad_messages = 0
        self.segmenter: LiveSegmenter | None = None

    def put(self, item: tuple, size: int = 0) -> None:
        self.bytes_in += size
        self.queue.put(item)

    @property
    def backlog(self) -> int:
        return self.bytes_in - self.bytes_out

    def run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                self._handle(item)
            except Exception:   # a bug with one stream must not kill the worker silently
                log.exception("live %s: %s failed", self.key, item[0])
            if item[0] == "unpublish" and self.packager._retire(self):
                return
            if item[0] == "stop":
                return

    def _handle(self, item: tuple) -> None:
        what = item[0]
        if what == "media":
            _, message, received, wall = item
            self.bytes_out += len(message.payload)
            if self.segmenter is None:
                return
            try:
                cuts = self.segmenter.feed(message, received, wall)
            except RtmpError as e:
                self.bad_messages += 1
                log.warning("live %s: message dropped: %s", self.key, e)
                return
            self._write(cuts)
        elif what == "publish":
            self.segmenter = LiveSegmenter(self.packager.target_ms, source=self.key, part_ms=self.writer.part_ms)
        elif what == "gap":
            if self.segmenter is not None:
                self._write(self.segmenter.interrupt(item[1]))
        elif what in ("unpublish", "stop"):
            if self.segmenter is not None:
                self._write(self.segmenter.finish(time.monotonic()))
                self.writer.end()
                self.segmenter = None

    def _write(self, cuts: list) -> None:
        for cut in cuts:
            if isinstance(cut, Part):
                self.writer.add_part(cut)
            else:
                self.writer.add(cut)

    def stats(self) -> dict:
        s = self.segmenter
        return {"backlog_bytes": self.backlog, "dropped_messages": self.dropped_messages,
                "bad_messages": self.bad_messages,
                "dropped_samples": dict(s.dropped) if s else {}, "ignored": dict(s.demuxer.ignored) if s else {}}


class LivePackager:
    """RelayTap. ``root`` is ``<store>/live``; streams go to ``root/<app>/<stream>/``. Apps for which
    ``config.for_app(app).live`` is false are left alone."""

    def __init__(self, root: Path, config: RtmpConfig, *, max_queue_bytes: int = 64 << 20,
                 wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self.config = config
        self.target_ms = config.live_segment_duration_ms
        self.max_queue_bytes = max_queue_bytes
        self._wall, self._monotonic = wall, monotonic
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._writers: dict[str, LiveStreamWriter] = {}
        self._ended_at: dict[str, float] = {}
        self.skipped_names = 0

    # ------------------------------------------------------------------------------------------------ RelayTap
    def on_publish(self, key: str) -> None:
        app, _, stream = key.partition("/")
        if not self.config.for_app(app).live:
            return
        if not (STREAM_NAME.fullmatch(app) and STREAM_NAME.fullmatch(stream)):
            self.skipped_names += 1
            log.warning("live: %r is not a name we package (letters, digits, _ . -)", key)
            return
        with self._lock:
            self._forget_old()
            self._ended_at.pop(key, None)
            writer = self._writers.get(key)
            if writer is None:
                app_config = self.config.for_app(app)
                writer = self._writers[key] = LiveStreamWriter(
                    self.root / app / stream, target_ms=self.target_ms, window=self.config.live_window,
                    wall=self._wall, monotonic=self._monotonic, dvr_s=app_config.dvr_window_s,
                    part_ms=self.config.live_part_duration_ms if app_config.low_latency else 0,
                    siblings=functools.partial(self._renditions, key),
                    reports=functools.partial(self._reports, key),
                    dash_siblings=functools.partial(self._dash_renditions, key))
            worker = self._workers.get(key)
            if worker is None:
                worker = self._workers[key] = _Worker(self, key, writer)
                worker.start()
            worker.put(("publish",))

    def on_message(self, key: str, message: Message, *, keyframe: bool, sequence_header: bool) -> None:
        if message.message_type_id not in (MSG_AUDIO, MSG_VIDEO):
            return
        worker = self._workers.get(key)
        if worker is None:
            return
        size = len(message.payload)
        if not sequence_header:
            if worker.overflowing and worker.backlog < self.max_queue_bytes // 2:
                worker.overflowing = False
                log.warning("live %s: packager caught up, resuming", key)
            if worker.overflowing or worker.backlog + size > self.max_queue_bytes:
                if not worker.overflowing:
                    worker.overflowing = True
                    worker.put(("gap", self._monotonic()))
                    log.warning("live %s: packager %d bytes behind, dropping until it catches up", key,
                                worker.backlog)
                worker.dropped_messages += 1
                return
        worker.put(("media", message, self._monotonic(), self._wall()), size)

    def on_unpublish(self, key: str) -> None:
        worker = self._workers.get(key)
        if worker is not None:
            self._ended_at[key] = self._monotonic()
            worker.put(("unpublish",))

    def _renditions(self, key: str) -> list:
        """(base_ms, variant) of the renditions a ladder makes of ``key`` (``<key>_<height>p``) that are being
        packaged, with URIs from ``key``'s directory: its master playlist lists them (from a worker thread: a
        snapshot)."""
        app, _, stream = key.partition("/")
        out = []
        for text in self.config.for_app(app).transcode:
            name = f"{stream}_{text.partition('@')[0]}"
            writer = self._writers.get(f"{app}/{name}")
            if writer is not None and not writer.ended:
                variant = writer.variant(f"../{name}/{MEDIA_PLAYLIST}")
                if variant is not None:
                    out.append((writer.base_ms, variant))
        return out

    def _dash_renditions(self, key: str) -> list:
        """The video of the renditions of ``key``'s ladder being packaged, as Representations of ``key``'s MPD."""
        app, _, stream = key.partition("/")
        out = []
        for text in self.config.for_app(app).transcode:
            height = text.partition("@")[0]
            writer = self._writers.get(f"{app}/{stream}_{height}")
            rep = writer.dash_representation(f"../{stream}_{height}/", f"v{height}") if writer is not None else None
            if rep is not None:
                out.append(rep)
        return out

    def _reports(self, key: str) -> list[tuple[str, int, int | None]]:
        """EXT-X-RENDITION-REPORT data for ``key``'s playlist: the source and every rendition of its ladder being
        packaged, but ``key`` itself, with URIs from ``key``'s directory."""
        app, _, stream = key.partition("/")
        suffixes = ["_" + text.partition("@")[0] for text in self.config.for_app(app).transcode]
        source = next((stream[: -len(x)] for x in suffixes if stream.endswith(x)), stream)
        out = []
        for name in [source] + [source + x for x in suffixes]:
            writer = self._writers.get(f"{app}/{name}")
            position = writer.position() if writer is not None and not writer.ended and name != stream else None
            if position is not None:
                out.append((f"../{name}/{MEDIA_PLAYLIST}", *position))
        return out

    # ------------------------------------------------------------------------------------------------ lifecycle
    def _retire(self, worker: _Worker) -> bool:
        """Called by a worker after an unpublish: it leaves only if nothing was queued meanwhile (a republish
        queues under the same lock, so it either sees this worker or creates a new one)."""
        with self._lock:
            if not worker.queue.empty():
                return False
            if self._workers.get(worker.key) is worker:
                del self._workers[worker.key]
            return True

    def _forget_old(self) -> None:
        now = self._monotonic()
        for key, ended in list(self._ended_at.items()):
            if now - ended > _FORGET_ENDED_AFTER and key not in self._workers:
                self._writers.pop(key, None)
                del self._ended_at[key]

    def close(self, timeout: float = 10.0) -> None:
        """Finish every stream (last segment, ENDLIST) and stop the workers; blocking."""
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.put(("stop",))
        deadline = time.monotonic() + timeout
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------------------------------------ stats
    def stats(self) -> dict:
        """Per stream: writer counters and segment latency (closing key frame received → playlists renamed, ms);
        ``segment_latency_ms``: p50/p95/max over the last segments of every stream; ``part_latency_ms`` the same
        for low-latency HLS parts (closing frame received → playlist listing the part renamed)."""
        with self._lock:
            writers, workers = dict(self._writers), dict(self._workers)
        streams = {}
        every, parts = [], []
        for key, writer in writers.items():
            every.extend(tuple(writer.latencies_ms))
            parts.extend(tuple(writer.part_latencies_ms))
            streams[key] = {**writer.stats(), **(workers[key].stats() if key in workers else {}),
                            "publishing": key in workers}
        return {"streams": streams, "segment_latency_ms": latency_summary(every),
                "part_latency_ms": latency_summary(parts)}
