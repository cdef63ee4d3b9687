"""Recording published streams into progressive MP4 files in the store (a `RelayTap`).

Per stream of a recorded application: FLV tags → `FlvDemuxer` → `Mp4Writer` (in the relay's thread, a few integer
appends per sample) → bytes queued to a worker thread per file, which writes
``<store>/.recording/<app>/<stream>-<UTC>.mp4.part``. On unpublish (the server's close unpublishes every stream too)
the worker builds the moov, patches the mdat header, fsyncs and renames the file to
``<store>/recordings/<app>/<stream>-<UTC>.mp4``: the rename is atomic, so the VOD path (which serves every store file
and never a hidden name) sees the whole file or nothing. Then it calls ``on_recorded(store_relative_path, info)``.

A file starts at the first video key frame once the video (and audio) sequence headers are known, or at the first
audio frame of a stream without video (one whose onMetaData declares no videocodecid and that sent no video header). A new sequence header with a different configuration finishes the file and
starts the next at the following start point. Times: video in ms (FLV's own unit, exact), audio in samples at its
rate, snapped to whole 1024-sample AAC frames when the ms timestamps agree within 1 ms (gapless, as in the source).

The relay calls taps synchronously on the event loop: nothing here blocks. A worker that falls behind (slow NFS) is
not waited for: past ``max_queue_bytes`` samples are dropped and counted (video until the next key frame, so the file
stays decodable), and the recording goes on.

A write error (ENOSPC, EDQUOT, EIO: any OSError) ends that publish's recording: the worker writes nothing more, the
relay side stops feeding it, and the file is closed on what reached the disk: the moov describes only the samples
whose bytes were wholly written (``Mp4Writer.truncate``), giving back media at the end when the moov needs room. That
file is renamed and announced as usual; when nothing is playable, or the moov cannot be written, the part file is
removed. One log line, and ``failed`` / ``bytes_lost`` in ``stats()``. The next publish records again.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from packagers.codecs import amf0
from packagers.errors import ErrorCode, PackagerError
from packagers.mp4.writer import Mp4Writer, TrackSpec

from .errors import RtmpError
from .flv import FlvDemuxer, FlvSample
from .messages import MSG_DATA_AMF0, Message

__all__ = ["Recorder", "RECORDING_DIR", "PART_DIR"]

log = logging.getLogger("rtmp.record")

RECORDING_DIR = "recordings"   # finished files, served by the VOD path
PART_DIR = ".recording"        # files being written: a hidden name, never served
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
AAC_FRAME = 1024
OnRecorded = Callable[[str, dict], None]


def safe_name(name: str) -> str:
    """A file-name segment for an app or stream name: [A-Za-z0-9._-] only, never hidden, never empty."""
    cleaned = _UNSAFE.sub("_", name)[:120].lstrip(".")
    return cleaned or "_"


class _FileWorker(threading.Thread):
    """Writes one recording: appends queued bytes, then finishes it (moov, patch, fsync, rename, callback)."""

    _FINISH = object()

    def __init__(self, recorder: Recorder, key: str, started: float, writer: Mp4Writer) -> None:
        super().__init__(name=f"record {key}", daemon=True)
        self.recorder, self.key, self.started, self.writer = recorder, key, started, writer
        app, _, stream = key.partition("/")
        self.app, self.stream = safe_name(app), safe_name(stream)   # the directory and file names
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.queued_bytes = 0
        self.dropped = 0
        self.reason = ""
        self.reserved = ""
        self.on_disk = 0            # bytes that reached the file (written by this thread only)
        self.handed = 0             # bytes of the whole file, had every write succeeded (known at the finish)
        self.error: OSError | None = None   # the write error that ended this recording
        self.failed = False         # set by this thread on an error: the relay side then stops feeding it
        self.closed = False         # the part file's descriptor was closed (its number may be reused at once)

    def put(self, data: bytes) -> None:
        with self.lock:
            self.queued_bytes += len(data)
        self.queue.put(data)

    def room_for(self, size: int) -> bool:
        with self.lock:
            return self.queued_bytes + size <= self.recorder.max_queue_bytes

    def finish(self, reason: str) -> None:
        self.reason = reason
        self.queue.put(self._FINISH)

    def run(self) -> None:
        rec = self.recorder
        part_dir = rec.store / PART_DIR / self.app
        final_dir = rec.store / RECORDING_DIR / self.app
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.started))
        fd = part = None
        try:
            part_dir.mkdir(parents=True, exist_ok=True)
            final_dir.mkdir(parents=True, exist_ok=True)
            # Two files of one stream in one second (a codec change) get -1, -2...: a name stays reserved until
            # its file is renamed, so a later file never replaces an earlier one that is still being finished.
            for i in range(1000):
                name = f"{self.stream}-{stamp}{f'-{i}' if i else ''}.mp4"
                if not rec._reserve(f"{self.app}/{name}"):
                    continue
                if not (final_dir / name).exists():
                    try:
                        # unbuffered: every byte counted in on_disk is in the file, so a failure knows what is kept
                        fd = os.open(part_dir / f"{name}.part", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                        part, self.reserved = part_dir / f"{name}.part", f"{self.app}/{name}"
                        break
                    except FileExistsError:
                        pass
                rec._release(f"{self.app}/{name}")
            else:
                raise OSError(f"no free file name for {self.stream}-{stamp} in {final_dir}")
        except OSError as e:
            self.failed = True
            rec._error(f"cannot create a recording of {self.key}: {e}")
        self._drain(fd)
        if fd is None:
            rec._lost(self.writer.position)     # the relay side stopped feeding it at its next sample
            return
        try:
            self._finalize(fd, part, final_dir / part.name[:-len(".part")])
        except Exception as e:     # never leave the thread with a traceback only: count it, say where the bytes are
            if not self.closed:
                _close(fd)
            if isinstance(e, PackagerError) and e.code == ErrorCode.NO_STREAMS:
                part.unlink(missing_ok=True)    # every sample was dropped or none reached the disk: nothing to keep
                if self.error is None:
                    rec._error(f"recording of {self.key} is empty: {e}")
                else:
                    rec._lost(self.handed)
                    rec._error(f"recording of {self.key} lost ({self.error}): no whole sample on disk, or no room "
                               f"left for the moov")
            elif isinstance(e, OSError):
                part.unlink(missing_ok=True)    # no moov (or no rename): a part file nobody can play
                rec._lost(self.handed)
                after = f" after {self.error}" if self.error is not None and self.error is not e else ""
                rec._error(f"recording of {self.key} lost: closing {part.name} failed ({e}){after}")
            else:
                rec._error(f"finishing {part} failed (left in place): {e}", exc_info=True)
        finally:
            rec._release(self.reserved)

    def _drain(self, fd: int | None) -> None:
        """Write queued bytes until the finish marker; after a write error keep draining, writing nothing."""
        while True:
            batch = [self.queue.get()]
            while True:     # everything queued meanwhile in one write call
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            done = batch[-1] is self._FINISH
            data = batch[:-1] if done else batch
            size = sum(map(len, data))
            if fd is not None and self.error is None and data:
                try:
                    self._write(fd, data[0] if len(data) == 1 else b"".join(data))
                except OSError as e:
                    self.error, self.failed = e, True
            with self.lock:
                self.queued_bytes -= size
            if done:
                return

    def _write(self, fd: int, data: bytes) -> None:
        for n in _write_all(fd, data):
            self.on_disk += n
            self.recorder.bytes_written += n

    def _finalize(self, fd: int, part: Path, final: Path) -> None:
        self.handed = handed = self.writer.position
        if self.error is None:
            try:
                self._close_mp4(fd, self.writer.finish())
            except OSError as e:
                self.error = e
        if self.error is not None:
            self._salvage(fd)
        counts = {kind: self.writer.samples(kind) for kind in ("video", "audio")}
        size = os.fstat(fd).st_size
        self.closed = True
        os.close(fd)
        os.replace(part, final)
        try:
            _fsync_dir(final.parent)
        except OSError as e:        # the file is in place; only the rename's durability is in doubt
            self.recorder._error(f"fsync of {final.parent} failed: {e}")
        rec = self.recorder
        rec.files_finished += 1
        path = final.relative_to(rec.store).as_posix()
        lost = handed - self.writer.position
        if self.error is not None:
            rec._lost(lost)
            rec._error(f"{self.key}: writing {path} failed ({self.error}): kept {self.writer.position} bytes, "
                       f"{counts['video']} video and {counts['audio']} audio samples, lost {lost} bytes")
        tracks = {t.kind: t for t in self.writer.tracks()}
        app, _, stream = self.key.partition("/")
        info = {
            "key": self.key, "app": app, "stream": stream, "path": path, "bytes": size, "reason": self.reason,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "duration_ms": round(1000 * max(t.duration_seconds for t in tracks.values())),
            "samples": counts, "dropped": self.dropped,
            "codecs": {kind: t.codec.codec_string for kind, t in tracks.items()},
            "error": str(self.error) if self.error is not None else None,
        }
        log.info("rtmp record: %s finished (%s, %d bytes, %d ms)", path, self.reason, size, info["duration_ms"])
        if rec.on_recorded is not None:
            try:
                rec.on_recorded(path, info)
            except Exception:
                rec._error(f"on_recorded({path}) failed", exc_info=True)

    def _close_mp4(self, fd: int, finished: tuple[int, bytes, bytes]) -> None:
        """Append the moov at the writer's end, patch the mdat header, fsync. A failure leaves no moov bytes."""
        offset, patch, moov = finished
        end = self.writer.position
        try:
            os.lseek(fd, end, os.SEEK_SET)
            for _ in _write_all(fd, moov):
                pass
            os.pwrite(fd, patch, offset)
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, end)
            raise

    def _salvage(self, fd: int) -> None:
        """Close the file on the samples that reached the disk. The disk is likely still full, so when the moov does
        not fit, media at the end is given back to make room for it (a few tries, each giving back more)."""
        end = self.on_disk
        for attempt in range(4):
            os.ftruncate(fd, self.writer.truncate(end))
            finished = self.writer.finish()     # NO_STREAMS when no sample is kept
            try:
                self._close_mp4(fd, finished)
                return
            except OSError as e:
                if attempt == 3 or e.errno not in _NO_SPACE:
                    raise
            # give back the moov's size and some more (pages, a neighbour writing meanwhile), more at each try
            end = self.writer.position - (len(finished[2]) << attempt) - (16 << 10 << 2 * attempt)


@dataclass
class _Stream:
    key: str
    demux: FlvDemuxer = field(default_factory=FlvDemuxer)
    generation: int = 0
    worker: _FileWorker | None = None
    base_ms: int = 0            # FLV time of the file's first sample = its time 0
    audio_ticks: int | None = None  # last audio dts written, in samples
    last_dts: dict = field(default_factory=dict)
    waiting_for_key: bool = False
    expects_video: bool = False     # onMetaData declared a video codec: never start audio-only
    failed: bool = False            # a write error ended this publish's recording


class Recorder:
    """The recording tap. ``enabled(app)`` says which applications record; ``on_recorded(path, info)`` is called in
    the file's worker thread once a recording is in place (``path`` relative to ``store``)."""

    def __init__(self, store: Path | str, *, enabled: Callable[[str], bool] = lambda app: True,
                 on_recorded: OnRecorded | None = None, max_queue_bytes: int = 32 << 20,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = Path(store)
        self.enabled = enabled
        self.on_recorded = on_recorded
        self.max_queue_bytes = max_queue_bytes
        self.clock = clock
        self._streams: dict[str, _Stream] = {}
        self._workers: set[_FileWorker] = set()
        self._names: set[str] = set()      # "<app>/<file>" being written, see _FileWorker.run
        self._names_lock = threading.Lock()
        self.files_started = 0
        self.files_finished = 0
        self.bytes_written = 0
        self.dropped = 0            # samples not recorded: the worker was behind, or video until the next key frame
        self.errors = 0             # malformed messages, I/O failures, callback failures
        self.failed = 0             # recordings cut short or lost by a write error (full disk, quota, I/O)
        self.bytes_lost = 0         # bytes of those recordings that are not in a finished file
        self._lost_lock = threading.Lock()

    def _reserve(self, name: str) -> bool:
        with self._names_lock:
            if name in self._names:
                return False
            self._names.add(name)
            return True

    def _release(self, name: str) -> None:
        with self._names_lock:
            self._names.discard(name)

    def _lost(self, size: int) -> None:
        with self._lost_lock:
            self.failed += 1
            self.bytes_lost += size

    def _error(self, message: str, exc_info: bool = False) -> None:
        self.errors += 1
        log.error("rtmp record: %s", message, exc_info=exc_info)

    # ------------------------------------------------------------------------------------------------ RelayTap
    def on_publish(self, key: str) -> None:
        if self.enabled(key.partition("/")[0]):
            self._finish(key, "republish")
            self._streams[key] = _Stream(key)

    def on_message(self, key: str, message: Message, *, keyframe: bool, sequence_header: bool) -> None:
        st = self._streams.get(key)
        if st is None:
            return
        if message.message_type_id == MSG_DATA_AMF0:
            st.expects_video |= _declares_video(message.payload)
            return
        try:
            samples = st.demux.feed(message)
            if st.demux.config_generation != st.generation:
                st.generation = st.demux.config_generation
                if st.worker is not None:
                    self._close_file(st, "codec change")
            for sample in samples:
                self._sample(st, sample)
        except (RtmpError, PackagerError) as e:    # one bad message: skip it, resume at the next key frame
            self._error(f"{key}: {e}")
            st.waiting_for_key = True

    def on_unpublish(self, key: str) -> None:
        self._finish(key, "unpublish")

    # ------------------------------------------------------------------------------------------------ files
    def _sample(self, st: _Stream, s: FlvSample) -> None:
        demux = st.demux
        if st.worker is None:
            if demux.video is not None:
                starts = s.kind == "video" and s.keyframe
            else:
                starts = s.kind == "audio" and not st.expects_video
            if not starts or st.failed:
                return
            tracks = [TrackSpec("video", demux.video, 1000)] if demux.video is not None else []
            if demux.audio is not None:
                tracks.append(TrackSpec("audio", demux.audio, demux.audio.sample_rate or 1000))
            writer = Mp4Writer(tracks)
            st.worker = _FileWorker(self, st.key, self.clock(), writer)
            st.base_ms, st.audio_ticks, st.last_dts, st.waiting_for_key = s.dts, None, {}, False
            st.worker.put(writer.header())
            self._workers.add(st.worker)
            self.files_started += 1
            st.worker.start()
        worker = st.worker
        if worker.failed:       # its disk is full (or failing): this publish is not recorded any further
            self._close_file(st, "write error")
            st.failed = True
            return
        if s.kind not in worker.writer.specs:
            return
        if s.kind == "video" and st.waiting_for_key:
            if not s.keyframe:      # undecodable without the frames lost before it
                worker.dropped += 1
                self.dropped += 1
                return
            st.waiting_for_key = False
        if not worker.room_for(len(s.data)):
            worker.dropped += 1
            self.dropped += 1
            st.waiting_for_key = st.waiting_for_key or s.kind == "video"
            return
        dts = self._dts(st, s)
        worker.put(worker.writer.add(s.kind, dts, s.cts, s.keyframe, s.data))

    def _dts(self, st: _Stream, s: FlvSample) -> int:
        """The sample's decode time in its track's timescale, never before the previous one of its track."""
        ms = s.dts - st.base_ms
        if s.kind == "audio":
            rate = st.worker.writer.specs["audio"].timescale
            ticks = (2 * ms * rate + 1000) // 2000
            if st.audio_ticks is not None and abs(ticks - st.audio_ticks - AAC_FRAME) * 1000 <= rate:
                ticks = st.audio_ticks + AAC_FRAME
            st.audio_ticks = ticks = max(ticks, st.audio_ticks if st.audio_ticks is not None else ticks)
            return ticks
        dts = max(ms, st.last_dts.get(s.kind, ms))
        st.last_dts[s.kind] = dts
        return dts

    def _close_file(self, st: _Stream, reason: str) -> None:
        st.worker.finish(reason)
        st.worker = None

    def _finish(self, key: str, reason: str) -> None:
        st = self._streams.pop(key, None)
        if st is not None and st.worker is not None:
            self._close_file(st, reason)

    # ------------------------------------------------------------------------------------------------ lifecycle
    def close(self, timeout: float | None = 60.0) -> None:
        """Finish every open recording and wait for the workers (blocking: run it in a thread from async code)."""
        for key in list(self._streams):
            self._finish(key, "close")
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in list(self._workers):
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if not worker.is_alive():
                self._workers.discard(worker)

    def stats(self) -> dict:
        self._workers = {w for w in self._workers if w.is_alive()}
        return {"recording": sum(st.worker is not None for st in self._streams.values()),
                "writers": len(self._workers), "files_started": self.files_started,
                "files_finished": self.files_finished, "bytes_written": self.bytes_written,
                "dropped": self.dropped, "errors": self.errors, "failed": self.failed,
                "bytes_lost": self.bytes_lost}


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _write_all(fd: int, data: bytes):
    """Write all of ``data`` at the file position, yielding each count written (a short count means the disk filled
    up: the next call raises, and the caller has counted what did reach the file)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        yield n
        view = view[n:]


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _declares_video(payload: bytes) -> bool:
    """Whether an onMetaData message names a video codec (``videocodecid``); malformed metadata says nothing."""
    try:
        values = amf0.decode_all(payload)
    except amf0.Amf0Error:
        return False
    return any(isinstance(v, dict) and v.get("videocodecid") not in (None, 0, "") for v in values)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
