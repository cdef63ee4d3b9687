"""The server log's line format: ISO 8601 UTC times everywhere, and one JSON object per line in JSON mode.

The access log (gateway/ops/access_log.py) writes its own lines with the same ``utc_now()``; this module formats the
rest (``gateway.*``, ``rtmp.*``, aiohttp's): ``2026-12-06T23:40:05.054Z gateway.catalog WARNING message`` as text, or
``{"time": ..., "level": ..., "logger": ..., "message": ..., "pid": ...}`` (plus ``"exception"`` with its traceback)
when the access log is JSON (``access_log_format = "json"``), so that a collector reads one kind of line.
"""
from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "utc_time"]


def utc_time(seconds: float) -> str:
    """``2026-12-06T23:40:05.054Z``: UTC, milliseconds."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{utc_time(record.created)} {record.name} {record.levelname} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": utc_time(record.created), "level": record.levelname, "logger": record.name,
               "message": record.getMessage(), "pid": os.getpid()}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def configure_logging(level: str, fmt: str = "text") -> None:
    """The root logger's level, and its handlers' format (text or json); installs a stderr handler if none."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(level.upper())
