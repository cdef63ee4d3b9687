"""The one place where failures become HTTP responses.

Clients get a status and one text/plain line ``<CODE>: <message>``, the message without the name of the function
that raised it (the log keeps it); the traceback, if any, goes to the server log.
Messages from the core already name store-relative paths only; as a last guard any absolute store path and every
line break are scrubbed, and the line is capped.
"""
from __future__ import annotations

import logging

from aiohttp import web

from packagers.errors import ErrorCode, PackagerError, user_message

from delivery_profiles import ProfileError
from delivery_profiles.tokens import TokenError

from ..catalog.access import AccessDenied
from ..catalog.delivery import DeliveryError
from ..catalog.drm import DrmAnswerError, DrmUnavailable
from ..origin.origin_client import OriginError
from ..origin.store import FileChanged
from ..origin.paths import UrlTooLong

log = logging.getLogger("gateway")

STATUS_BY_CODE = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.BAD_DATA: 500,
    ErrorCode.UNSUPPORTED: 415,
    ErrorCode.NO_STREAMS: 415,
}
# Codes for failures that do not come from the packaging core, by HTTP status.
CODE_BY_STATUS = {
    400: "BAD_REQUEST", 403: "ACCESS_DENIED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "TOO_LARGE", 414: "URI_TOO_LONG",
    416: "RANGE_NOT_SATISFIABLE", 500: "INTERNAL_ERROR", 503: "UNAVAILABLE",
}
MAX_MESSAGE = 300


def one_line(message: str, hide: tuple[str, ...] = ()) -> str:
    for path in hide:
        if path:
            message = message.replace(path + "/", "").replace(path, "<store>")
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def error_response(status: int, code: str, message: str, *, hide: tuple[str, ...] = (), **headers: str) -> web.Response:
    """A complete error response; CORS and Cache-Control are added by the response-prepare hook."""
    response = web.Response(status=status, text=f"{code}: {one_line(user_message(message), hide)}\n",
                            content_type="text/plain")
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = value
    return response


def response_for_exception(exc: BaseException, request: web.Request, hide: tuple[str, ...] = ()) -> web.Response:
    """Map any exception a handler raised to a response, logging what the client does not see."""
    where = f"{request.method} {request.rel_url.raw_path[:200]}"
    if isinstance(exc, UrlTooLong):
        return error_response(414, "URI_TOO_LONG", exc.message)
    if isinstance(exc, PackagerError):
        status = STATUS_BY_CODE.get(exc.code, 500)
        (log.warning if status >= 500 else log.info)("%s → %d %s: %s", where, status, exc.code.name, exc.message)
        return error_response(status, exc.code.name, exc.message, hide=hide)
    if isinstance(exc, (AccessDenied, TokenError)):
        log.info("%s → 403: %s", where, exc)
        return error_response(403, "ACCESS_DENIED", str(exc), Cache_Control="no-store")
    if isinstance(exc, ProfileError):  # SelectionError included: a format the partner does not enable
        log.info("%s → 400: %s", where, exc)
        return error_response(400, "DELIVERY_NOT_ALLOWED", str(exc))
    if isinstance(exc, DeliveryError):
        log.warning("%s → 500: %s", where, exc)
        return error_response(500, "CATALOG_ERROR", str(exc))
    if isinstance(exc, DrmUnavailable):  # no keys, so no media: never the clear bytes
        log.warning("%s → 503: %s", where, exc)
        return error_response(503, "DRM_UNAVAILABLE", "the DRM key service did not answer; try again",
                              Retry_After="2", Cache_Control="no-store")
    if isinstance(exc, DrmAnswerError):
        log.error("%s → 500: %s", where, exc)
        return error_response(500, "DRM_ERROR", "the DRM key service answered unusable keys (logged)",
                              Cache_Control="no-store")
    if isinstance(exc, OriginError):  # a remote store failed: 502 (bad or no answer) or 504 (no answer in time)
        log.warning("%s → %d: %s", where, exc.status, exc.reason)
        return error_response(exc.status, "ORIGIN_TIMEOUT" if exc.status == 504 else "ORIGIN_ERROR", exc.reason,
                              Cache_Control="no-store")
    if isinstance(exc, FileChanged):
        log.warning("%s → 503: %s", where, exc)
        return error_response(503, "FILE_CHANGED", str(exc), hide=hide, Retry_After="1")
    if isinstance(exc, web.HTTPException):
        status = exc.status
        code = CODE_BY_STATUS.get(status, "HTTP_%d" % status)
        response = error_response(status, code, exc.reason)
        for name in ("Allow", "Content-Range", "Retry-After"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    log.exception("%s → 500: unexpected %s", where, type(exc).__name__)
    return error_response(500, "INTERNAL_ERROR", "unexpected server error (logged)")
