"""One recording being written (rtmp/record.py's ``Recorder`` starts one per file): a worker thread that appends the
queued bytes to ``<store>/.recording/<app>/<stream>-<UTC>.mp4.part``, then finishes the file (moov, mdat header
patch, fsync, atomic rename into ``recordings/``, callback), or salvages what reached the disk after a write error.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from packagers.errors import ErrorCode, PackagerError
from packagers.mp4.writer import Mp4Writer

if TYPE_CHECKING:
    from .record import Recorder

log = logging.getLogger("rtmp.record")
RECORDING_DIR = "recordings"   # finished files, served by the VOD path
PART_DIR = ".recording"        # files being written: a hidden name, never served
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(name: str) -> str:
    """A file-name segment for an app or stream name: [A-Za-z0-9._-] only, never hidden, never empty."""
    cleaned = _UNSAFE.sub("_", name)[:120].lstrip(".")
    return cleaned or "_"


class RecordingFile(threading.Thread):
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
                if not rec.reserve_name(f"{self.app}/{name}"):
                    continue
                if not (final_dir / name).exists():
                    try:
                        # unbuffered: every byte counted in on_disk is in the file, so a failure knows what is kept
                        fd = os.open(part_dir / f"{name}.part", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                        part, self.reserved = part_dir / f"{name}.part", f"{self.app}/{name}"
                        break
                    except FileExistsError:
                        pass
                rec.release_name(f"{self.app}/{name}")
            else:
                raise OSError(f"no free file name for {self.stream}-{stamp} in {final_dir}")
        except OSError as e:
            self.failed = True
            rec.report_error(f"cannot create a recording of {self.key}: {e}")
        self._drain(fd)
        if fd is None:
            rec.count_lost(self.writer.position)     # the relay side stopped feeding it at its next sample
            return
        try:
            self._finalize(fd, part, final_dir / part.name[:-len(".part")])
        except Exception as e:     # never leave the thread with a traceback only: count it, say where the bytes are
            if not self.closed:
                _close(fd)
            if isinstance(e, PackagerError) and e.code == ErrorCode.NO_STREAMS:
                part.unlink(missing_ok=True)    # every sample was dropped or none reached the disk: nothing to keep
                if self.error is None:
                    rec.report_error(f"recording of {self.key} is empty: {e}")
                else:
                    rec.count_lost(self.handed)
                    rec.report_error(f"recording of {self.key} lost ({self.error}): no whole sample on disk, or no room "
                               f"left for the moov")
            elif isinstance(e, OSError):
                part.unlink(missing_ok=True)    # no moov (or no rename): a part file nobody can play
                rec.count_lost(self.handed)
                after = f" after {self.error}" if self.error is not None and self.error is not e else ""
                rec.report_error(f"recording of {self.key} lost: closing {part.name} failed ({e}){after}")
            else:
                rec.report_error(f"finishing {part} failed (left in place): {e}", exc_info=True)
        finally:
            rec.release_name(self.reserved)

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
            self.recorder.report_error(f"fsync of {final.parent} failed: {e}")
        rec = self.recorder
        rec.files_finished += 1
        path = final.relative_to(rec.store).as_posix()
        lost = handed - self.writer.position
        if self.error is not None:
            rec.count_lost(lost)
            rec.report_error(f"{self.key}: writing {path} failed ({self.error}): kept {self.writer.position} bytes, "
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
                rec.report_error(f"on_recorded({path}) failed", exc_info=True)

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
