"""What the benches share: the report table, a progress bar, the machine's yardsticks (memcpy, file read), a free
port and a closed-loop HTTP load generator."""
from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

MB = 1024 * 1024


class Progress:
    """A one-line progress bar on stderr (no dependency)."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.done, self.start = max(1, total), label, 0, time.perf_counter()
        self.tty = sys.stderr.isatty()

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.tty or self.done == self.total:
            width = 30
            filled = int(width * self.done / self.total)
            bar = "#" * filled + "-" * (width - filled)
            end = "\n" if self.done >= self.total else "\r"
            sys.stderr.write(f"  {self.label:<28} [{bar}] {self.done}/{self.total} {time.perf_counter() - self.start:6.1f}s{end}")
            sys.stderr.flush()


@dataclass
class Report:
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    def add(self, key: str, value: float, unit: str, note: str = "") -> None:
        self.data[key] = value
        self.rows.append((key, f"{value:,.2f} {unit}", note))

    def render(self) -> str:
        w0 = max(len(r[0]) for r in self.rows)
        w1 = max(len(r[1]) for r in self.rows)
        return "\n".join(f"{k:<{w0}}  {v:>{w1}}  {n}" for k, v, n in self.rows)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_load(url: str, seconds: float, concurrency: int) -> tuple[int, int, float]:
    done = 0
    nbytes = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            nonlocal done, nbytes
            while time.perf_counter() < deadline:
                async with session.get(url) as r:
                    body = await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"bench: {url} answered {r.status}")
                    nbytes += len(body)
                    done += 1

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done, nbytes, time.perf_counter() - t


def measure_memcpy(size: int = 64 * MB, rounds: int = 8) -> float:
    """Best-of memcpy MB/s (numpy copyto is a plain memcpy for contiguous arrays)."""
    src = np.frombuffer(os.urandom(size), dtype=np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return size / MB / best


def measure_file_read(path: Path, chunk: int = 4 * MB) -> float:
    """Sequential pread MB/s of ``path`` (page cache warm after the first pass: the best this machine can read)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for off in range(0, size, chunk):
                os.pread(fd, chunk, off)
            best = min(best, time.perf_counter() - t)
    finally:
        os.close(fd)
    return size / MB / best
