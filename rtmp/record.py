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

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from packagers.codecs import amf0
from packagers.errors import PackagerError
from packagers.mp4.writer import Mp4Writer, TrackSpec

from .errors import RtmpError
from .flv import FlvDemuxer, FlvSample
from .messages import MSG_DATA_AMF0, Message
from .record_file import PART_DIR, RECORDING_DIR, RecordingFile

__all__ = ["Recorder", "RECORDING_DIR", "PART_DIR"]

log = logging.getLogger("rtmp.record")

AAC_FRAME = 1024
OnRecorded = Callable[[str, dict], None]


@dataclass
class _Stream:
    key: str
    demux: FlvDemuxer = field(default_factory=FlvDemuxer)
    generation: int = 0
    worker: RecordingFile | None = None
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
        self.user_on_recorded = on_recorded
        self.on_recorded = self._recorded     # what RecordingFile calls
        self.last_recorded: dict[str, str] = {}   # key → store-relative path of its last finished file
        self.max_queue_bytes = max_queue_bytes
        self.clock = clock
        self._streams: dict[str, _Stream] = {}
        self._workers: set[RecordingFile] = set()
        self._names: set[str] = set()      # "<app>/<file>" being written, see RecordingFile.run
        self._names_lock = threading.Lock()
        self.files_started = 0
        self.files_finished = 0
        self.bytes_written = 0
        self.dropped = 0            # samples not recorded: the worker was behind, or video until the next key frame
        self.errors = 0             # malformed messages, I/O failures, callback failures
        self.failed = 0             # recordings cut short or lost by a write error (full disk, quota, I/O)
        self.bytes_lost = 0         # bytes of those recordings that are not in a finished file
        self._lost_lock = threading.Lock()

    def _recorded(self, path: str, info: dict) -> None:
        self.last_recorded[info["key"]] = path
        if self.user_on_recorded is not None:
            self.user_on_recorded(path, info)

    # ------------------------------------------------------------------------------------------------ control
    def start(self, key: str, headers: Sequence[Message] = ()) -> bool:
        """Record the published stream ``key`` from its next key frame on, whatever its application's ``record``
        (the control API). ``headers``: its cached metadata and sequence headers (`Relay.headers`), which this
        recorder has not seen. False when it is recorded already."""
        st = self._streams.get(key)
        if st is not None and not st.failed:
            return False
        self._finish(key, "restart")
        self._streams[key] = _Stream(key)
        for message in headers:
            self.on_message(key, message, keyframe=False, sequence_header=True)
        return True

    def stop(self, key: str) -> RecordingFile | None:
        """Finish the recording of ``key`` now (until its next publish or start). The file's worker, to join for
        the finished path (``last_recorded``); None when nothing was being written."""
        st = self._streams.pop(key, None)
        worker = st.worker if st is not None else None
        if worker is not None:
            self._close_file(st, "stopped")
        return worker

    def current_file(self, key: str) -> tuple[bool, str | None]:
        """(whether ``key`` is being recorded, the store-relative path its file gets once finished: None until the
        worker has named it at the first key frame)."""
        st = self._streams.get(key)
        worker = st.worker if st is not None else None
        name = worker.reserved if worker is not None else ""
        return st is not None, f"{RECORDING_DIR}/{name}" if name else None

    def reserve_name(self, name: str) -> bool:
        with self._names_lock:
            if name in self._names:
                return False
            self._names.add(name)
            return True

    def release_name(self, name: str) -> None:
        with self._names_lock:
            self._names.discard(name)

    def count_lost(self, size: int) -> None:
        with self._lost_lock:
            self.failed += 1
            self.bytes_lost += size

    def report_error(self, message: str, exc_info: bool = False) -> None:
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
            self.report_error(f"{key}: {e}")
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
            st.worker = RecordingFile(self, st.key, self.clock(), writer)
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


def _declares_video(payload: bytes) -> bool:
    """Whether an onMetaData message names a video codec (``videocodecid``); malformed metadata says nothing."""
    try:
        values = amf0.decode_all(payload)
    except amf0.Amf0Error:
        return False
    return any(isinstance(v, dict) and v.get("videocodecid") not in (None, 0, "") for v in values)
