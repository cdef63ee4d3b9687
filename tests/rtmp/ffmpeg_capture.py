"""Record what a real ffmpeg RTMP publisher sends: a one-shot socket server that runs rtmp.handshake.ServerHandshake,
then keeps the first chunk-stream bytes (the `connect` command) without ever answering them.

Used live by tests/rtmp/test_handshake.py and, to (re)record the committed transcripts:

    cd /work/main && python -m tests.rtmp.ffmpeg_capture      # writes tests/rtmp/transcripts/ffmpeg_*.bin
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rtmp.handshake import HANDSHAKE_SIZE, ServerHandshake

TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"


def ffmpeg_command(port: int) -> list[str]:
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
            "-re", "-f", "lavfi", "-i", "testsrc=size=64x36:rate=10", "-t", "1", "-c:v", "libx264",
            "-f", "flv", f"rtmp://127.0.0.1:{port}/live/test"]


@dataclass
class Capture:
    c0c1: bytes  # what the client sent first: C0 + C1
    c2: bytes  # the client's C2
    chunks: bytes  # chunk-stream bytes after C2 (up to max_bytes)
    peer_version: tuple[int, int, int, int] | None
    ffmpeg_stderr: str


def capture_ffmpeg_connect(max_bytes: int = 4096, timeout: float = 20.0, idle: float = 1.0) -> Capture:
    """Run ffmpeg against a local ServerHandshake; return its handshake bytes and the first chunk-stream bytes.

    Stops when max_bytes chunk-stream bytes arrived, when nothing arrived for `idle` seconds after the handshake
    (ffmpeg then waits for our `_result`, which never comes), or at `timeout`. ffmpeg is always killed.
    """
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("capture_ffmpeg_connect: ffmpeg not on PATH")
    deadline = time.monotonic() + timeout
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        proc = subprocess.Popen(ffmpeg_command(port), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            server.settimeout(max(0.1, deadline - time.monotonic()))
            conn, _ = server.accept()
            with conn:
                hs = ServerHandshake()
                received = bytearray()
                while not hs.done:
                    conn.settimeout(max(0.1, deadline - time.monotonic()))
                    data = conn.recv(65536)
                    if not data:
                        raise RuntimeError("capture_ffmpeg_connect: ffmpeg closed during the handshake")
                    received += data
                    reply = hs.feed(data)
                    if reply:
                        conn.sendall(reply)
                chunks = bytearray(hs.leftover)
                while len(chunks) < max_bytes and time.monotonic() < deadline:
                    conn.settimeout(min(idle, max(0.1, deadline - time.monotonic())))
                    try:
                        data = conn.recv(65536)
                    except socket.timeout:
                        break
                    if not data:
                        break
                    chunks += data
        finally:
            proc.kill()
            _, err = proc.communicate(timeout=10)
    hs_len = 1 + HANDSHAKE_SIZE
    return Capture(bytes(received[:hs_len]), bytes(received[hs_len:hs_len + HANDSHAKE_SIZE]),
                   bytes(chunks[:max_bytes]), hs.peer_version, err.decode(errors="replace"))


def main() -> None:
    cap = capture_ffmpeg_connect()
    TRANSCRIPTS.mkdir(exist_ok=True)
    (TRANSCRIPTS / "ffmpeg_c0c1.bin").write_bytes(cap.c0c1)
    (TRANSCRIPTS / "ffmpeg_connect.bin").write_bytes(cap.chunks)
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"{version}\nC1 version bytes {cap.peer_version}; C0+C1 {len(cap.c0c1)} bytes; "
          f"chunk stream {len(cap.chunks)} bytes")


if __name__ == "__main__":
    main()
