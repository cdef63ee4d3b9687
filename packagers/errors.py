"""The one error type of the packaging core.

Every failure the core can report is a ``PackagerError`` with a code from ``ErrorCode``; the gateway maps codes to
HTTP statuses in one place (``gateway.http.errors``). Messages are one line and start with the name of the function that
raised them, so a log line points straight at the code (nginx-vod-module does the same).
"""
from __future__ import annotations

import enum
import re


class ErrorCode(enum.Enum):
    BAD_REQUEST = "BAD_REQUEST"  # the request names something malformed (bad segment number, bad track spec)
    NOT_FOUND = "NOT_FOUND"  # the request is well formed but names something that does not exist
    BAD_DATA = "BAD_DATA"  # the media file is corrupt, truncated or inconsistent
    NO_STREAMS = "NO_STREAMS"  # the selection leaves no track to package
    UNSUPPORTED = "UNSUPPORTED"  # valid media we do not package (codec, feature)


class PackagerError(Exception):
    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"PackagerError({self.code.name}, {self.message!r})"


def bad_data(message: str) -> PackagerError:
    return PackagerError(ErrorCode.BAD_DATA, message)


def bad_request(message: str) -> PackagerError:
    return PackagerError(ErrorCode.BAD_REQUEST, message)


def not_found(message: str) -> PackagerError:
    return PackagerError(ErrorCode.NOT_FOUND, message)


_FUNCTION_PREFIX = re.compile(r"(?:[A-Z][A-Za-z0-9]*\.)?[a-z_][a-z0-9_]*: ")


def user_message(message: str) -> str:
    """``message`` without the name of the function that raised it ("Store.identify: no such file 'a.mp4'" → "no
    such file 'a.mp4'"): players and operators read what is wrong with their file, entry or request; the server log
    keeps the name (the convention of this package's messages, ``function_name: what``)."""
    found = _FUNCTION_PREFIX.match(message)
    return message[found.end():] if found else message
