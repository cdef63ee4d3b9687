"""Progressive download of store files (``/mp4/<path>``) with aiohttp's FileResponse (sendfile).

FileResponse already does HEAD, ETag/Last-Modified, If-None-Match/If-Modified-Since → 304 and single ranges. We wrap
it where it falls short: it would serve a sibling ``<file>.gz``/``.br`` when the client accepts that encoding; it
answers a multi-range request and ``bytes=-0`` differently from our packaged endpoints; and it ignores an ETag in
If-Range. So the range decision is ours (``gateway.responses``), and FileResponse sees a request whose Range header
is either gone or one canonical ``bytes=a-b``, and which has no Accept-Encoding or If-Range.
"""
from __future__ import annotations

from aiohttp import web
from aiohttp.web_fileresponse import FileResponse
from multidict import CIMultiDict

from .packaging import PACKAGING
from .responses import (
    ByteRange,
    RangeNotSatisfiable,
    cache_control,
    not_modified,
    range_decision,
    range_not_satisfiable,
)
from .urls import Mp4Download

MP4_TYPE = "video/mp4"


class StoreFileResponse(FileResponse):
    """FileResponse that serves exactly ``byte_range`` (or everything) of a path already checked by the Store."""

    def __init__(self, path: str, byte_range: ByteRange | None, headers: dict[str, str]):
        super().__init__(path, headers=headers)
        self._byte_range = byte_range

    async def prepare(self, request: web.BaseRequest):
        headers = CIMultiDict(request.headers)
        for name in ("Range", "If-Range", "Accept-Encoding"):
            headers.popall(name, None)
        if self._byte_range is not None:
            headers["Range"] = f"bytes={self._byte_range.start}-{self._byte_range.stop - 1}"
        return await super().prepare(request.clone(headers=headers))


def file_etag(size: int, mtime_ns: int) -> str:
    """FileResponse's own ETag format, so our If-Range check and its If-None-Match check agree."""
    return f'"{mtime_ns:x}-{size:x}"'


async def serve_mp4(request: web.Request, mp4: Mp4Download) -> web.StreamResponse:
    packaging = request.app[PACKAGING]
    (file,) = await packaging.identify_all((mp4.path,))
    etag, last_modified = file_etag(file.size, file.mtime_ns), file.mtime_ns / 1e9
    byte_range = None
    if not not_modified(request, etag, last_modified):  # a 304 (FileResponse's) beats any Range verdict
        try:
            byte_range = range_decision(request, file.size, etag, last_modified)
        except RangeNotSatisfiable:
            return range_not_satisfiable(file.size)
    headers = {"Content-Type": MP4_TYPE, "Cache-Control": cache_control(packaging.settings.manifest_max_age)}
    return StoreFileResponse(file.real_path, byte_range, headers)
