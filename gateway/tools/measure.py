"""What the benches share: the report table, a progress bar, a free port and a closed-loop HTTP load generator."""
from __future__ import annotations

import asyncio
import socket
import sys
import time
from dataclasses import dataclass, field

import aiohttp

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
