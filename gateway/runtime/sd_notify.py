"""systemd's readiness protocol (sd_notify(3)), for ``Type=notify-reload`` units (deploy/gateway.service).

The supervisor says READY=1 once every worker listens, RELOADING=1 (with MONOTONIC_USEC, which systemd 253+ wants)
when a SIGHUP reload starts and READY=1 when it is applied or refused, and STOPPING=1 when it begins to stop. A
datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace); without that variable (not
started by systemd) nothing is sent. Never raises: a readiness message is not worth failing a server for.
"""
from __future__ import annotations

import os
import socket
import time

__all__ = ["notify"]


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one message; False when there is nowhere to send it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), address)
        return True
    except OSError:
        return False


def monotonic_usec() -> str:
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
