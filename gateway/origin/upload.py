"""Finished recordings uploaded to a remote store (``--store http(s)://...`` or ``s3://...``).

``upload_file`` puts one local file at a store path through an ``OriginClient`` (pooled, retried on connection
errors/timeouts/5xx with backoff, signed by the store's signer) and checks it with a HEAD: same size and, on S3, the
ETag the PUT (or CompleteMultipartUpload) returned.
- S3: one PUT up to ``single_max`` bytes, else a multipart upload (CreateMultipartUpload, UploadPart of ``part_size``
  bytes read from the file one at a time, CompleteMultipartUpload; AbortMultipartUpload on any failure). Each body
  carries its Content-MD5, which S3 checks.
- an HTTP origin: ``PUT <origin>/<path>`` as a WebDAV-style server takes it (nginx's ``dav_methods PUT``), the file
  streamed in 1 MB chunks.
A 4xx is ``UploadRefused`` (a configuration matter: not retried); anything else that goes wrong is ``UploadFailed``
or the client's ``OriginError``.

``Uploader`` is the ingest's worker: a thread with its own event loop and client (so a long upload never holds up a
recording's finish, nor the serving loop), a queue of store paths, ``recover()`` for files left in
``<state>/recordings/`` (a failed upload, a crash), and counters for ``stats()``.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import queue
import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from .origin_client import OriginClient, OriginError
from .remote import RemoteStore, _one_store

log = logging.getLogger("gateway.upload")

SINGLE_MAX = 16 << 20  # S3: one PUT up to this size, else multipart
PART_SIZE = 8 << 20  # S3 multipart: bytes per part (S3's minimum is 5 MB, except the last part)
CHUNK = 1 << 20  # a streamed HTTP PUT reads the file this much at a time
UPLOAD_TIMEOUT = 600.0  # seconds for one request, body included (the reads' origin_timeout is for small ranges)
UPLOAD_BACKOFF = (1.0, 5.0, 15.0)  # seconds before the 2nd, 3rd, 4th attempt
UPLOAD_TRIES = 4
RECORDING_DIR = "recordings"  # rtmp/record_file.py's: finished recordings under the state directory


def sizes_from_env() -> tuple[int, int]:
    """(single_max, part_size): GATEWAY_UPLOAD_SINGLE_MAX and GATEWAY_UPLOAD_PART_SIZE (bytes) where set (tests use
    small ones), else the defaults."""
    return (int(os.environ.get("GATEWAY_UPLOAD_SINGLE_MAX") or SINGLE_MAX),
            int(os.environ.get("GATEWAY_UPLOAD_PART_SIZE") or PART_SIZE))


class UploadRefused(Exception):
    """The origin refused the write (4xx): one log line says what to configure; retried at the next start."""


class UploadFailed(Exception):
    """The upload went through but is not what was sent (verification), or S3 answered an error."""


def _xml_text(body: bytes, name: str) -> str:
    """The text of the first ``name`` element of an S3 answer (any namespace), "" when there is none."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return ""
    return (root.text or "") if root.tag.rpartition("}")[2] == name else root.findtext(f".//{{*}}{name}") or ""


def _s3_code(body: bytes) -> str:
    return _xml_text(body, "Code")  # <Error><Code>AccessDenied</Code>...


def _refused(client: OriginClient, what: str, path: str, status: int, body: bytes, s3: bool) -> UploadRefused:
    if s3:
        hint = {403: ": the credentials need s3:PutObject (and s3:AbortMultipartUpload) on the prefix (see "
                     "Troubleshooting in docs/stores.md)"}.get(status, "")
        code = _s3_code(body)
        return UploadRefused(f"upload: origin {client.name} refused {what} of {path} ({status} {code}".rstrip() +
                             f"){hint}")
    return UploadRefused(f"upload: origin {client.name} refused {what} of {path} ({status}): it must accept PUT "
                         f"under the store prefix (nginx: dav_methods PUT; create_full_put_path on; "
                         f"client_max_body_size 0;), else recordings stay in the state directory")


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # S3 checks Content-MD5: a body changed en route fails


async def upload_file(client: OriginClient, url: str, local: Path, path: str, *, s3: bool,
                      single_max: int = SINGLE_MAX, part_size: int = PART_SIZE) -> int:
    """Upload ``local`` to ``url`` (the store path ``path``, for messages) and verify it; the bytes uploaded."""
    size = local.stat().st_size
    if s3 and size > single_max:
        etag = await _s3_multipart(client, url, local, path, size, part_size)
    elif s3:
        data = local.read_bytes()
        status, got, body = await client.send_fresh("PUT", url, {"Content-Type": "video/mp4",
                                                                 "Content-MD5": _md5(data)}, lambda: data)
        if status != 200:
            raise _refused(client, "PUT", path, status, body, True) if 400 <= status < 500 else \
                UploadFailed(f"upload: origin {client.name} answered {status} to PUT of {path}")
        etag = got.get("ETag", "")
    else:
        status, _, body = await client.send_fresh("PUT", url, {"Content-Type": "video/mp4",
                                                               "Content-Length": str(size)},
                                                  lambda: _file_chunks(local, size))
        if status not in (200, 201, 204):
            raise _refused(client, "PUT", path, status, body, False) if 400 <= status < 500 else \
                UploadFailed(f"upload: origin {client.name} answered {status} to PUT of {path}")
        etag = ""
    status, got, _ = await client.send("HEAD", url)
    length = got.get("Content-Length", "")
    if status != 200 or length != str(size) or (etag and got.get("ETag") != etag):
        raise UploadFailed(f"upload: {path} on origin {client.name} does not match the local file after its upload "
                           f"(HEAD {status}, {length or '?'} of {size} bytes" +
                           (f", ETag {got.get('ETag')} instead of {etag})" if etag else ")"))
    return size


async def _file_chunks(local: Path, size: int):
    """The file's first ``size`` bytes in CHUNK reads (the loop is the uploader's own: a blocking read is fine)."""
    with open(local, "rb") as f:
        left = size
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                raise UploadFailed(f"upload: {local} shrank while it was read")
            left -= len(chunk)
            yield chunk


async def _s3_multipart(client: OriginClient, url: str, local: Path, path: str, size: int, part_size: int) -> str:
    """CreateMultipartUpload, the parts, CompleteMultipartUpload: the object's ETag. Aborted on any failure, so no
    half upload is left to pay for."""
    status, _, body = await client.send_fresh("POST", url + "?uploads", {"Content-Type": "video/mp4"}, lambda: b"")
    if status != 200:
        raise _refused(client, "CreateMultipartUpload", path, status, body, True) if 400 <= status < 500 else \
            UploadFailed(f"upload: origin {client.name} answered {status} to CreateMultipartUpload of {path}")
    upload_id = _xml_text(body, "UploadId")
    if not upload_id:
        raise UploadFailed(f"upload: origin {client.name} gave no UploadId for {path}")
    query = "uploadId=" + quote(upload_id, safe="-_.~")  # AWS's encoding: the signature covers exactly this text
    try:
        etags = []
        with open(local, "rb") as f:
            for number in range(1, (size + part_size - 1) // part_size + 1):
                part = f.read(min(part_size, size - (number - 1) * part_size))  # one part in memory at a time
                status, got, body = await client.send_fresh(
                    "PUT", f"{url}?partNumber={number}&{query}", {"Content-MD5": _md5(part)}, lambda: part)
                if status != 200 or not got.get("ETag"):
                    raise _refused(client, "UploadPart", path, status, body, True) if 400 <= status < 500 else \
                        UploadFailed(f"upload: origin {client.name} answered {status} to part {number} of {path}")
                etags.append(got["ETag"])
        done = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in enumerate(etags, 1))
        xml = f"<CompleteMultipartUpload>{done}</CompleteMultipartUpload>".encode()
        status, _, body = await client.send_fresh("POST", f"{url}?{query}", {"Content-Type": "application/xml"},
                                                  lambda: xml)
        # S3 may answer 200 and still fail the completion: the error is then in the body
        if status != 200 or _s3_code(body):
            raise _refused(client, "CompleteMultipartUpload", path, status, body, True) if 400 <= status < 500 \
                else UploadFailed(f"upload: CompleteMultipartUpload of {path} failed ({status} {_s3_code(body)})")
        return _xml_text(body, "ETag")
    except BaseException:
        try:
            await client.send("DELETE", f"{url}?{query}", tries=1)  # AbortMultipartUpload, best effort
        except OriginError as e:
            log.warning("upload: aborting the multipart upload of %s failed: %s", path, e.reason)
        raise


def remote_store(settings) -> RemoteStore | None:
    """The primary store where recordings go when it is an origin (a fallback store is never written), else None."""
    origin = getattr(settings, "origin", None)
    return _one_store(origin, settings) if origin else None


OnUploaded = Callable[[str, dict], None]
_STOP = object()
_STAMPED = re.compile(r"^(?P<stream>.+)-\d{8}T\d{6}Z(-\d+)?\.mp4$")  # rtmp/record_file.py's file names


class Uploader:
    """Uploads finished recordings of the state directory ``root`` to ``store``, one at a time in its own thread,
    then deletes the local copy and calls ``on_uploaded(path, info)`` (catalog, notifications)."""

    def __init__(self, store: RemoteStore, root: Path | str, on_uploaded: OnUploaded | None = None, *,
                 single_max: int = SINGLE_MAX, part_size: int = PART_SIZE):
        from .s3 import S3Signer  # botocore: only here when needed

        options = replace(store.client.options, timeout=max(store.client.options.timeout, UPLOAD_TIMEOUT),
                          tries=UPLOAD_TRIES, backoff=UPLOAD_BACKOFF)
        # its own client: the session belongs to this worker's loop, and a failing upload does not open the
        # breaker of the reads
        self.client = OriginClient(store.base_url, options, store.client.signer)
        self.store, self.root, self.on_uploaded = store, Path(root), on_uploaded
        self.s3 = isinstance(store.client.signer, S3Signer)
        self.single_max, self.part_size = single_max, part_size
        self.uploads_done = self.uploads_failed = self.upload_bytes = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: set[str] = set()  # queued or uploading: recover() does not queue them again
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="recording upload", daemon=True)
        self._thread.start()

    def submit(self, path: str, info: dict) -> None:
        with self._lock:
            if path in self._pending:
                return
            self._pending.add(path)
        self._queue.put((path, info))

    def recover(self) -> int:
        """Queue the finished recordings left in the state directory (a failed upload, a crash); how many."""
        found = sorted(self.root.glob(f"{RECORDING_DIR}/*/*.mp4"))
        for local in found:
            path = local.relative_to(self.root).as_posix()
            app, name = local.parent.name, local.name
            m = _STAMPED.match(name)
            stream = m.group("stream") if m else local.stem
            self.submit(path, {"key": f"{app}/{stream}", "app": app, "stream": stream, "path": path,
                               "bytes": local.stat().st_size, "reason": "recovered"})
        if found:
            log.info("upload: %d recording(s) left in %s queued for upload", len(found), self.root / RECORDING_DIR)
        return len(found)

    def close(self, timeout: float = 30.0) -> None:
        """Upload what is queued (the recordings the recorder's close finished too), waiting ``timeout`` s at most:
        what is not uploaded by then stays local for the next start, and an upload cut short by the exit deletes
        nothing (blocking: run it in a thread from async code)."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def stats(self) -> dict:
        return {"uploads_done": self.uploads_done, "uploads_failed": self.uploads_failed,
                "upload_bytes": self.upload_bytes, "upload_queue": len(self._pending)}

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                path, info = item
                try:
                    loop.run_until_complete(self._one(path, info))
                finally:
                    with self._lock:
                        self._pending.discard(path)
        finally:
            loop.run_until_complete(self.client.close())
            loop.close()

    async def _one(self, path: str, info: dict) -> None:
        local = self.root / path
        try:
            url = self.store.url(path)
            size = await upload_file(self.client, url, local, path, s3=self.s3, single_max=self.single_max,
                                     part_size=self.part_size)
        except (UploadRefused, UploadFailed) as e:
            self.uploads_failed += 1
            log.error("%s (kept %s until the next start)", e, local)
            return
        except OriginError as e:
            self.uploads_failed += 1
            log.error("upload: %s not uploaded: %s (kept %s, retried at the next start)", path, e.reason, local)
            return
        except Exception:
            self.uploads_failed += 1
            log.exception("upload: %s not uploaded (kept %s)", path, local)
            return
        self.uploads_done += 1
        self.upload_bytes += size
        log.info("upload: %s uploaded to origin %s (%d bytes)", path, self.client.name, size)
        # registered and announced before the local copy goes: a crash in between uploads it again at the next start
        # (the same bytes, and registering is idempotent) rather than leaving it unregistered
        if self.on_uploaded is not None:
            try:
                self.on_uploaded(path, info)
            except Exception:
                log.exception("upload: after uploading %s", path)
        try:
            local.unlink()
        except OSError as e:
            log.warning("upload: %s is uploaded but its local copy stays: %s", path, e)
