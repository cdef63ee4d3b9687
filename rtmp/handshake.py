"""RTMP handshake (Adobe RTMP spec 1.0 §5.2), sans-I/O: feed received bytes, send the bytes returned.

    C0/S0: 1 byte, the RTMP version (3).
    C1/S1: 1536 bytes: time (u32 BE), 4 bytes "zero" (0 in the simple handshake; a Flash/server version such as
           9.0.124.2 in the digest variant that Flash Player and ffmpeg send), 1528 random bytes.
    C2/S2: 1536 bytes: an echo of the peer's C1/S1.

The server replies S0 + S1 (our time, version 0, random) + S2 (an exact echo of C1) once C1 has arrived, for simple
and digest-style C1 alike — what nginx-rtmp does in simple mode. Digest-aware clients (ffmpeg, OBS/librtmp) only
validate the server digest when S1's version bytes say the server speaks it (ffmpeg: version byte >= 3, and only
when playing), so version 0 makes them fall back to the plain echo. C2 is not validated: many clients send garbage.

Both sides accept arbitrary fragmentation. Bytes that arrive after the last handshake packet belong to the chunk
stream and are kept in `.leftover`; data fed after completion is appended there too.
"""
from __future__ import annotations

import os
import struct
from typing import Callable

from rtmp.errors import RtmpError

__all__ = ["RTMP_VERSION", "HANDSHAKE_SIZE", "ServerHandshake", "ClientHandshake"]

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536


def _packet(time_ms: int, random: Callable[[int], bytes]) -> bytes:
    """A simple-handshake C1/S1: time, four zero bytes, 1528 random bytes."""
    body = random(HANDSHAKE_SIZE - 8)
    if len(body) != HANDSHAKE_SIZE - 8:
        raise ValueError(f"_packet: random source returned {len(body)} bytes, wanted {HANDSHAKE_SIZE - 8}")
    return struct.pack(">II", time_ms & 0xFFFFFFFF, 0) + body


def _version_of(packet: bytes) -> tuple[int, int, int, int]:
    return tuple(packet[4:8])  # type: ignore[return-value]


class ServerHandshake:
    """Server side. States: waiting for C0 → C1 (then send S0+S1+S2) → C2 → done."""

    def __init__(self, time_ms: int = 0, random: Callable[[int], bytes] = os.urandom) -> None:
        self._time_ms = time_ms
        self._random = random
        self._buf = bytearray()
        self._state = "c0"
        self.done = False
        self.leftover = b""
        self.c1: bytes | None = None
        self.peer_time: int | None = None  # C1 time field
        self.peer_version: tuple[int, int, int, int] | None = None  # C1 bytes 4..7: (0,0,0,0) simple, else Flash ver

    def feed(self, data: bytes) -> bytes:
        """Consume received bytes; return the bytes to send (possibly empty)."""
        if self.done:
            self.leftover += bytes(data)
            return b""
        self._buf += data
        out = b""
        if self._state == "c0" and self._buf:
            version = self._buf[0]
            if version != RTMP_VERSION:
                raise RtmpError(f"ServerHandshake.feed: unsupported RTMP version {version} in C0 (want 3)")
            del self._buf[:1]
            self._state = "c1"
        if self._state == "c1" and len(self._buf) >= HANDSHAKE_SIZE:
            c1 = bytes(self._buf[:HANDSHAKE_SIZE])
            del self._buf[:HANDSHAKE_SIZE]
            self.c1 = c1
            self.peer_time = struct.unpack_from(">I", c1)[0]
            self.peer_version = _version_of(c1)
            out = bytes([RTMP_VERSION]) + _packet(self._time_ms, self._random) + c1
            self._state = "c2"
        if self._state == "c2" and len(self._buf) >= HANDSHAKE_SIZE:
            self.leftover = bytes(self._buf[HANDSHAKE_SIZE:])
            self._buf = bytearray()
            self._state = "done"
            self.done = True
        return out


class ClientHandshake:
    """Client side (push/pull relays). start() gives C0+C1; feed() returns C2 once S1 is in; done after S2."""

    def __init__(self, time_ms: int = 0, random: Callable[[int], bytes] = os.urandom) -> None:
        self._time_ms = time_ms
        self._random = random
        self._buf = bytearray()
        self._state = "new"
        self.done = False
        self.leftover = b""
        self.c1: bytes | None = None
        self.s1: bytes | None = None
        self.peer_time: int | None = None  # S1 time field
        self.peer_version: tuple[int, int, int, int] | None = None  # S1 bytes 4..7

    def start(self) -> bytes:
        if self._state != "new":
            raise RtmpError("ClientHandshake.start: called twice")
        self.c1 = _packet(self._time_ms, self._random)
        self._state = "s0"
        return bytes([RTMP_VERSION]) + self.c1

    def feed(self, data: bytes) -> bytes:
        """Consume received bytes; return the bytes to send (C2, once S1 is complete)."""
        if self._state == "new":
            raise RtmpError("ClientHandshake.feed: start() was not called")
        if self.done:
            self.leftover += bytes(data)
            return b""
        self._buf += data
        out = b""
        if self._state == "s0" and self._buf:
            version = self._buf[0]
            if version != RTMP_VERSION:
                raise RtmpError(f"ClientHandshake.feed: unsupported RTMP version {version} in S0 (want 3)")
            del self._buf[:1]
            self._state = "s1"
        if self._state == "s1" and len(self._buf) >= HANDSHAKE_SIZE:
            s1 = bytes(self._buf[:HANDSHAKE_SIZE])
            del self._buf[:HANDSHAKE_SIZE]
            self.s1 = s1
            self.peer_time = struct.unpack_from(">I", s1)[0]
            self.peer_version = _version_of(s1)
            out = s1  # C2: echo of S1
            self._state = "s2"
        if self._state == "s2" and len(self._buf) >= HANDSHAKE_SIZE:
            self.leftover = bytes(self._buf[HANDSHAKE_SIZE:])  # S2 is not validated (digest servers differ)
            self._buf = bytearray()
            self._state = "done"
            self.done = True
        return out
