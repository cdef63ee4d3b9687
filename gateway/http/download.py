"""Progressive download of store files (``/mp4/<path>``) with aiohttp's FileResponse (sendfile).

FileResponse already does HEAD, ETag/Last-Modified, If-None-Match/If-Modified-Since → 304 and single ranges. We wrap
it where it falls short: it would serve a sibling ``<file>.gz``/``.br`` when the client accepts that encoding; it
answers a multi-range request and ``bytes=-0`` differently from our packaged endpoints; and it ignores an ETag in
If-Range. So the range decision is ours (``gateway.http.responses``), and FileResponse sees a request whose Range header
is either gone or one canonical ``bytes=a-b``, and which has no Accept-Encoding or If-Range.

A body that cannot be completed must end its connection: once the status line and Content-Length are out, the only
honest signal left is to close. FileResponse would stop silently at a shrunk file's new end and keep the connection
alive, so the client hangs and a pipelined next response lands inside this body. We replace its ``_sendfile`` (the
one step after the headers): the body goes out in pieces from the descriptor FileResponse opened (so a file replaced
by rename is still read whole from its old inode), and a piece that comes back short, a read error, or a change of
that descriptor's size or mtime between pieces aborts the response: one warning, ``gateway_responses_aborted_total``
and the transport closed (never reused).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os

from aiohttp import web
from aiohttp.web_fileresponse import NOSENDFILE, FileResponse
from multidict import CIMultiDict

from ..ops.metrics import PROMETHEUS
from ..origin.packaging import PACKAGING
from .responses import (
    ByteRange,
    RangeNotSatisfiable,
    cache_control,
    http_date,
    not_modified,
    range_decision,
    range_not_satisfiable,
)
from ..origin.store import FileIdentity
from .errors import one_line

MP4_TYPE = "video/mp4"
PIECE = 8 << 20  # bytes per sendfile call, the descriptor re-checked between pieces (48 MB downloads: same MB/s)

log = logging.getLogger("gateway")


class ResponseAborted(ConnectionResetError):
    """The body could not be completed; a ConnectionError, so aiohttp drops the connection instead of reusing it."""


class StoreFileResponse(FileResponse):
    """FileResponse that serves exactly ``byte_range`` (or everything) of a path already checked by the Store."""

    def __init__(self, file: FileIdentity, byte_range: ByteRange | None, headers: dict[str, str]):
        super().__init__(file.real_path, headers=headers)
        self._file = file
        self._byte_range = byte_range

    async def prepare(self, request: web.BaseRequest):
        headers = CIMultiDict(request.headers)
        for name in ("Range", "If-Range", "Accept-Encoding"):
            headers.popall(name, None)
        if self._byte_range is not None:
            headers["Range"] = f"bytes={self._byte_range.start}-{self._byte_range.stop - 1}"
        self._original = request  # the clone shares its transport; metrics classify the original path
        return await super().prepare(request.clone(headers=headers))

    async def _prepare_open_file(self, request: web.BaseRequest, fobj, st: os.stat_result, file_encoding):
        """Send only the inode that was authorized: if the name now leads elsewhere (replaced in the instant
        between our stat and FileResponse's open), answer 503 FILE_CHANGED before any header is out."""
        if (st.st_dev, st.st_ino) != (self._file.device, self._file.inode):
            return await self._file_changed(request)
        return await super()._prepare_open_file(request, fobj, st, file_encoding)

    async def _file_changed(self, request: web.BaseRequest):
        original = getattr(self, "_original", request)
        log.warning("%s %s: the file was replaced between its check and its open; 503", original.method,
                    original.rel_url.raw_path[:200])
        metrics = original.app.get(PROMETHEUS)
        if metrics is not None:
            metrics.record_abort(original, "replaced")
        body = f"FILE_CHANGED: '{self._file.path}' changed while being opened, retry\n".encode()
        self.set_status(503)
        for name in ("ETag", "Last-Modified", "Accept-Ranges", "Content-Range"):
            self.headers.popall(name, None)
        self.headers.update({"Retry-After": "1", "Cache-Control": "no-store"})
        self.content_type, self.content_length = "text/plain", len(body)
        writer = await web.StreamResponse.prepare(self, request)
        if request.method != "HEAD":
            await writer.write(body)
        await web.StreamResponse.write_eof(self)
        return writer

    async def _sendfile(self, request: web.BaseRequest, fobj, offset: int, count: int):
        """FileResponse._sendfile, in pieces, each checked (see the module docstring)."""
        fd = fobj.fileno()
        st = os.fstat(fd)  # FileResponse stat'ed this descriptor just before: the headers describe this
        opened = (st.st_size, st.st_mtime_ns)
        writer = await web.StreamResponse.prepare(self, request)
        transport, sent = request.transport, 0
        while sent < count:
            if transport is None or transport.is_closing():
                raise ConnectionResetError("Connection lost")
            want = min(PIECE, count - sent)
            try:
                got = await self._send_piece(request, writer, fobj, offset + sent, want)
                # on the loop, like sendfile's own reads; a stat of an open descriptor (NFS: attribute cache)
                st = os.fstat(fd) if got == want and sent + got < count else None
            except ConnectionError:
                raise  # the client went away: nothing to report
            except OSError as exc:
                self._abort(request, "read_error", sent, count, f"read failed: {exc}")
            sent += got
            if got < want:
                self._abort(request, "truncated", sent, count, "a read came back short: the file shrank")
            if st is not None:
                if st.st_size < opened[0]:
                    self._abort(request, "truncated", sent, count, f"the file shrank to {st.st_size} bytes")
                if (st.st_size, st.st_mtime_ns) != opened:
                    self._abort(request, "changed", sent, count, "the file changed in place")
        await web.StreamResponse.write_eof(self)
        return writer

    async def _send_piece(self, request: web.BaseRequest, writer, fobj, offset: int, count: int) -> int:
        """Bytes sent: sendfile, or (no sendfile on this transport) reads in the executor and writes."""
        loop = asyncio.get_running_loop()
        if not NOSENDFILE and not self.compression:
            try:
                return await loop.sendfile(request.transport, fobj, offset, count)
            except NotImplementedError:
                pass
        sent = 0
        while sent < count:
            chunk = await loop.run_in_executor(None, os.pread, fobj.fileno(), min(self._chunk_size, count - sent),
                                               offset + sent)
            if not chunk:
                break
            await writer.write(chunk)
            sent += len(chunk)
        await writer.drain()
        return sent

    def _abort(self, request: web.BaseRequest, reason: str, sent: int, count: int, why: str):
        original = getattr(self, "_original", request)
        log.warning("%s %s aborted after %d of %d body bytes: %s; connection closed", original.method,
                    original.rel_url.raw_path[:200], sent, count, why)
        metrics = original.app.get(PROMETHEUS)
        if metrics is not None:
            metrics.record_abort(original, reason)
        if request.transport is not None:
            request.transport.abort()  # now, whatever is still buffered: the body is wrong anyway
        raise ResponseAborted(why)


def file_etag(size: int, mtime_ns: int) -> str:
    """FileResponse's own ETag format, so our If-Range check and its If-None-Match check agree."""
    return f'"{mtime_ns:x}-{size:x}"'


async def serve_mp4(request: web.Request, file: FileIdentity) -> web.StreamResponse:
    """``file`` as identified (fresh) and authorized by the dispatcher."""
    packaging = request.app[PACKAGING]
    if getattr(file, "info", None) is not None:  # an origin object (RemoteIdentity), maybe a fallback store's
        return await serve_remote_mp4(request, file, packaging.store)
    etag, last_modified = file_etag(file.size, file.mtime_ns), file.mtime_ns / 1e9
    byte_range = None
    if not not_modified(request, etag, last_modified):  # a 304 (FileResponse's) beats any Range verdict
        try:
            byte_range = range_decision(request, file.size, etag, last_modified)
        except RangeNotSatisfiable:
            return range_not_satisfiable(file.size)
    headers = {"Content-Type": MP4_TYPE, "Cache-Control": cache_control(packaging.settings.manifest_max_age)}
    return StoreFileResponse(file, byte_range, headers)


REMOTE_PIECE = 1 << 20  # bytes per ranged GET of a remote download; the next one is fetched while this one is sent


def remote_etag(file: FileIdentity) -> str:
    """The origin's validator folded into our format (size + a digest of its ETag, else of its Last-Modified)."""
    info = file.info
    digest = hashlib.sha256((info.etag or info.last_modified).encode()).hexdigest()[:16]
    return f'"{digest}-{file.size:x}"'


async def serve_remote_mp4(request: web.Request, file: FileIdentity, store) -> web.StreamResponse:
    """A remote store's file streamed from its origin in ranged GETs (each If-Match'ed to the identified object).
    The first piece is fetched here, before any header goes out, so an origin that fails at once is a clean
    502/503/504; the rest is sent by ``RemoteFileResponse.prepare``, where a failure ends the connection, as a local
    file that shrinks does."""
    packaging = request.app[PACKAGING]
    etag, last_modified = remote_etag(file), file.mtime_ns / 1e9
    headers = {"Content-Type": MP4_TYPE, "Cache-Control": cache_control(packaging.settings.manifest_max_age),
               "ETag": etag, "Accept-Ranges": "bytes"}
    if file.mtime_ns:
        headers["Last-Modified"] = http_date(last_modified)
    if not_modified(request, etag, last_modified):
        return web.Response(status=304, headers=headers)
    try:
        byte_range = range_decision(request, file.size, etag, last_modified)
    except RangeNotSatisfiable:
        return range_not_satisfiable(file.size)
    start, stop = (byte_range.start, byte_range.stop) if byte_range is not None else (0, file.size)
    if byte_range is not None:
        headers["Content-Range"] = byte_range.content_range(file.size)
    first = b""
    if request.method != "HEAD" and stop > start:
        piece = asyncio.ensure_future(store.read_ranges(file, [(start, min(start + REMOTE_PIECE, stop))]))
        try:
            first = (await asyncio.shield(piece))[0]  # errors here are ordinary error responses
        except BaseException:
            piece.cancel()
            raise
    return RemoteFileResponse(200 if byte_range is None else 206, headers, store, file, start, stop, first)


class RemoteFileResponse(web.StreamResponse):
    """[start, stop) of a remote file, its first piece already fetched. The body is written in ``prepare``, which
    aiohttp calls after the handler (as StoreFileResponse's is), not in the handler: a failure after the headers is
    then a ConnectionError where aiohttp expects one (the connection ends, the access log keeps the status that
    went out), never an exception through the error mapping (a logged "500" for a response that was a cut 200),
    and headers set on the response after the handler (a signed URL's Cache-Control) still go out."""

    def __init__(self, status: int, headers: dict[str, str], store, file: FileIdentity, start: int, stop: int,
                 first: bytes):
        super().__init__(status=status, headers=headers)
        self.content_length = stop - start
        # not _start/_stop: StreamResponse has methods of those names
        self._store, self._file, self._span, self._first = store, file, (start, stop), first

    async def prepare(self, request: web.BaseRequest):
        if self.prepared:
            return await super().prepare(request)
        writer = await super().prepare(request)
        start, stop = self._span
        if request.method == "HEAD" or stop <= start:
            return writer

        def fetch(at: int) -> asyncio.Future:
            return asyncio.ensure_future(self._store.read_ranges(self._file, [(at, min(at + REMOTE_PIECE, stop))]))

        data, self._first = self._first, b""  # not kept alive for the whole download
        at, piece = start, None
        try:
            while True:
                if not data:  # cannot happen with a well-behaved read (it raises), but never loop on nothing
                    raise OSError("the origin read returned no bytes")
                at += len(data)
                piece = fetch(at) if at < stop else None  # the next GET overlaps this write
                await self.write(data)
                if piece is None:
                    break
                data = (await piece)[0]
        except ConnectionError:
            raise  # the client went away
        except Exception as exc:
            _abort_remote(request, at - start, stop - start, f"origin read failed: {one_line(str(exc))}")
        finally:
            if piece is not None and not piece.done():
                piece.cancel()
            elif piece is not None and not piece.cancelled():
                piece.exception()  # retrieved (the client left first): no "never retrieved" warning
        return writer


def _abort_remote(request: web.BaseRequest, sent: int, count: int, why: str):
    log.warning("%s %s aborted after %d of %d body bytes: %s; connection closed", request.method,
                request.rel_url.raw_path[:200], sent, count, why)
    metrics = request.app.get(PROMETHEUS)
    if metrics is not None:
        metrics.record_abort(request, "read_error")
    if request.transport is not None:
        request.transport.abort()
    raise ResponseAborted(why)
