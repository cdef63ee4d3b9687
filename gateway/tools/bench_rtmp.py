"""`gateway bench rtmp`: RTMP fan-out cost — one ~3 Mbit/s publisher, N players, on loopback.

The RTMP server (rtmp.server + rtmp.relay, exactly what `gateway serve --rtmp-port` runs) is the only thing running in
this process, so its CPU time (``resource.getrusage``) is the server's. The publisher and the players run in a child
process (``python -m gateway.tools.bench_rtmp load ...``): raw-socket RTMP clients built from rtmp.handshake/chunk and
packagers.codecs.amf0.
The publisher sends synthetic FLV messages with realistic sizes (30 fps H.264-like video with a 2 s GOP, 43 fps AAC)
whose timestamps are their send times (ms since the load process's start, on CLOCK_MONOTONIC, shared by every
process of the machine). Most players only count bytes; a few, spread over the join order, parse the chunk stream
and measure lag = receive time − send time of each media message. Figures per N: server CPU seconds per player per
second, the players per core that implies, lag p50/p95/p99, relay drops, and the load process's own CPU (when it
nears one core, lag includes the clients' own slowness). Nothing here asserts; targets are printed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time

import numpy as np

from gateway.ops.allocator import tune_allocator, tune_collector
from packagers.codecs import amf0
from rtmp.chunk import ChunkReader, ChunkWriter
from rtmp.config import RtmpConfig
from rtmp.handshake import ClientHandshake
from rtmp.messages import MSG_AUDIO, MSG_COMMAND_AMF0, MSG_DATA_AMF0, MSG_VIDEO, Message, SetChunkSize

KEY = "bench/test"
FPS, AUDIO_FPS, GOP_FRAMES = 30, 44100 / 1024, 60
AVC_SEQ = bytes([0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4, 0x67, 0x64, 0, 0x1F, 1, 0, 2, 0x68, 0xEE])
AAC_SEQ = bytes([0xAF, 0, 0x12, 0x10])


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------------------------------------------ load process

class _Client(asyncio.Protocol):
    """A raw RTMP client: handshake (C2 echoes S1), then ``script`` (chunk bytes), then reading."""

    def __init__(self, script: bytes, parse: bool, clock_zero: float) -> None:
        self.hs = ClientHandshake()
        self.script, self.parse, self.t0 = script, parse, clock_zero
        self.reader = ChunkReader() if parse else None
        self.bytes = 0
        self.lags: list[float] = []
        self.statuses: list[str] = []
        self.counting = True
        self.transport: asyncio.Transport | None = None
        self.connected_at = self.first_video_at = None  # join time: connection to first video message

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.connected_at = time.monotonic()
        transport.write(self.hs.start())

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.hs.done:
            c2 = self.hs.feed(data)
            if c2:
                self.transport.write(c2 + self.script)
            if not self.hs.done:
                return
            data, self.hs.leftover = self.hs.leftover, b""
        self.bytes += len(data)
        if self.reader is None:
            return
        for m in self.reader.feed(data):
            if m.message_type_id in (MSG_AUDIO, MSG_VIDEO):
                if m.message_type_id == MSG_VIDEO and self.first_video_at is None:
                    self.first_video_at = now
                    if not self.counting:  # a late joiner: its join is measured, it leaves
                        self.transport.close()
                        return
                if self.counting:
                    self.lags.append(now - self.t0 - m.timestamp / 1000)
            elif m.message_type_id == MSG_COMMAND_AMF0:
                values = amf0.decode_all(m.payload)
                if values[0] == "onStatus":
                    self.statuses.append(values[3].get("code", ""))


def _commands(*calls) -> bytes:
    w = ChunkWriter()
    out = [w.write(SetChunkSize(4096).to_message())]
    w.set_chunk_size(4096)
    for i, (name, stream_id, obj, args) in enumerate(calls, 1):
        out.append(w.write(Message(3, 0, MSG_COMMAND_AMF0, stream_id, amf0.encode_all(name, float(i), obj, *args))))
    return b"".join(out)


def _connect(app: str) -> tuple:
    return ("connect", 0, {"app": app, "type": "nonprivate", "tcUrl": f"rtmp://127.0.0.1/{app}"}, ())


class _Publisher:
    """Synthetic ~``kbps`` stream: key frames 5x the size of inter frames, sizes jittered, AAC at 128 kbit/s."""

    def __init__(self, kbps: int, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.pool = os.urandom(1 << 20)
        audio_bytes = 128_000 / 8 / AUDIO_FPS
        video_bytes_per_s = max(kbps * 1000 / 8 - 128_000 / 8, 10_000)
        self.inter = video_bytes_per_s * GOP_FRAMES / FPS / (GOP_FRAMES - 1 + 5)
        self.audio = int(audio_bytes)
        self.writer = ChunkWriter(4096)

    def _body(self, n: int) -> bytes:
        at = self.rng.randrange(0, len(self.pool) - n)
        return self.pool[at:at + n]

    def video(self, i: int, ts: int) -> bytes:
        key = i % GOP_FRAMES == 0
        size = int(self.inter * (5 if key else self.rng.uniform(0.7, 1.3)))
        payload = bytes([0x17 if key else 0x27, 1, 0, 0, 0]) + (size - 9).to_bytes(4, "big") + self._body(size - 9)
        return self.writer.write(Message(6, ts, MSG_VIDEO, 1, payload))

    def audio_frame(self, ts: int) -> bytes:
        return self.writer.write(Message(4, ts, MSG_AUDIO, 1, bytes([0xAF, 1]) + self._body(self.audio)))

    def headers(self) -> bytes:
        w = self.writer
        meta = amf0.encode_all("@setDataFrame", "onMetaData", amf0.EcmaArray(
            width=1280.0, height=720.0, framerate=float(FPS), videocodecid=7.0, audiocodecid=10.0))
        return b"".join([w.write(SetChunkSize(4096).to_message()), w.write(Message(5, 0, MSG_DATA_AMF0, 1, meta)),
                         w.write(Message(6, 0, MSG_VIDEO, 1, AVC_SEQ)), w.write(Message(4, 0, MSG_AUDIO, 1, AAC_SEQ))])


async def _publish(port: int, kbps: int, t0: float, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    script = _commands(_connect("bench"), ("createStream", 0, None, ()), ("publish", 1, None, ("test", "live")))
    _, client = await loop.create_connection(lambda: _Client(script, True, t0), "127.0.0.1", port)
    while "NetStream.Publish.Start" not in client.statuses:
        if any("Publish" in s for s in client.statuses):
            raise RuntimeError(f"publish refused: {client.statuses}")
        await asyncio.sleep(0.01)
    pub = _Publisher(kbps)
    # the stream header uses the session writer's state; media goes on csid 4/6 of the same writer
    client.transport.write(pub.headers())
    start = time.monotonic()
    v = a = 0
    while not stop.is_set():
        next_v, next_a = start + v / FPS, start + a / AUDIO_FPS
        wait = min(next_v, next_a) - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        ts = int((time.monotonic() - t0) * 1000)
        if next_v <= next_a:
            client.transport.write(pub.video(v, ts))
            v += 1
        else:
            client.transport.write(pub.audio_frame(ts))
            a += 1
    client.transport.close()


async def _load(port: int, players: int, kbps: int, samplers: int) -> None:
    """The child process: publish, join ``players``, report "ready", measure between "mark" and "stop" (stdin)."""
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    stop = asyncio.Event()
    publishing = asyncio.create_task(_publish(port, kbps, t0, stop))
    await asyncio.sleep(0.5)
    script = _commands(_connect("bench"), ("createStream", 0, None, ()), ("play", 1, None, ("test", -2000.0)))
    sampled = set(np.linspace(0, players - 1, min(samplers, players)).round().astype(int).tolist())
    clients: list[_Client] = []
    gate = asyncio.Semaphore(64)

    async def join(i: int) -> None:
        async with gate:
            _, c = await loop.create_connection(lambda: _Client(script, i in sampled, t0), "127.0.0.1", port)
            clients.append(c)

    await asyncio.gather(*(join(i) for i in range(players)))
    deadline = time.monotonic() + 30
    while min(c.bytes for c in clients) < 20_000:       # media flowing to everyone
        if time.monotonic() > deadline or publishing.done():
            raise RuntimeError("players did not start receiving within 30 s")
        await asyncio.sleep(0.05)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"event": "ready"}), flush=True)
    mark = (await reader.readline()).split()
    assert mark[0] == b"mark"
    measured = float(mark[1])
    for c in clients:
        c.lags.clear()
        c.bytes = 0
    cpu0, t_mark = cpu_seconds(), time.monotonic()
    joiners: list[_Client] = []

    async def late_joiners() -> None:
        """Players joining while the others play (every 0.5 s, over the first half of the measured time, so that
        all have left when the server counts its subscribers): the join time under this load."""
        every = min(0.5, measured / 4)
        while time.monotonic() + every < t_mark + measured / 2:
            await asyncio.sleep(every)
            _, c = await loop.create_connection(lambda: _Client(script, True, t0), "127.0.0.1", port)
            c.counting = False
            joiners.append(c)

    joining = asyncio.create_task(late_joiners())
    assert (await reader.readline()).strip() == b"stop"
    joining.cancel()
    elapsed, cpu = time.monotonic() - t_mark, cpu_seconds() - cpu0
    per_player = [c.bytes * 8 / elapsed / 1e6 for c in clients]
    lags = np.array([x for c in clients for x in c.lags]) * 1000
    joins = [c.first_video_at - c.connected_at for c in joiners if c.first_video_at is not None]
    stop.set()
    await publishing
    print(json.dumps({"event": "result", "lag_ms": {p: float(np.percentile(lags, p)) for p in (50, 95, 99)}
                      | {"max": float(lags.max()), "samples": int(lags.size)},
                      "player_mbps_min": min(per_player), "player_mbps_avg": sum(per_player) / len(per_player),
                      "load_cpu_per_s": cpu / elapsed, "join_s_max": max(joins) if joins else None,
                      "joins": len(joins), "joiners": len(joiners)}), flush=True)
    for c in clients + joiners:
        c.transport.close()


# ------------------------------------------------------------------------------------------------------ server side

async def measure(players: int, seconds: float, kbps: int = 3000, samplers: int = 8, warmup: float = 1.0,
                  fan_out_ms: float = 0.0) -> dict:
    """One run: a fresh server in this process, the load in a child process."""
    from rtmp.relay import Relay
    from rtmp.server import RtmpServer

    server = RtmpServer(Relay(), fan_out_delay=fan_out_ms / 1000)
    await server.start("127.0.0.1", 0)
    tune_collector()  # as a serve worker once ready
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.tools.bench_rtmp", "load", str(server.port), str(players), str(kbps), str(samplers),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 120)
        if json.loads(line or b"{}").get("event") != "ready":
            raise RuntimeError(f"load process failed to start (exit {await child.wait()})")
        await asyncio.sleep(warmup)
        child.stdin.write(f"mark {seconds}\n".encode())
        cpu0, t0 = cpu_seconds(), time.monotonic()
        stats0 = server.relay.stats()[KEY]
        await asyncio.sleep(seconds)
        cpu, elapsed = cpu_seconds() - cpu0, time.monotonic() - t0
        stats = server.relay.stats()[KEY]
        child.stdin.write(b"stop\n")
        result = json.loads(await asyncio.wait_for(child.stdout.readline(), 60))
        await asyncio.wait_for(child.wait(), 30)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await server.close()
    per = cpu / elapsed / players
    return {"players": players, "seconds": round(elapsed, 2), "server_cpu_per_s": cpu / elapsed,
            "cpu_s_per_player_s": per, "players_per_core": 1 / per if per else float("inf"),
            "publisher_mbps": (stats["bytes_in"] - stats0["bytes_in"]) * 8 / elapsed / 1e6,
            "subscribers": stats["subscribers"], "drops": stats["drops"] - stats0["drops"], **result}


def render(rows: list[dict]) -> str:
    head = (f"{'players':>7}  {'server CPU':>10}  {'CPU s/player/s':>14}  {'players/core':>12}  {'lag p50':>8}  "
            f"{'p95':>7}  {'p99':>7}  {'max':>7}  {'drops':>5}  {'min player':>10}  {'load CPU':>8}  {'join max':>8}")
    lines = [head]
    for r in rows:
        lag = r["lag_ms"]
        lines.append(f"{r['players']:>7}  {r['server_cpu_per_s']:>9.0%}  {r['cpu_s_per_player_s']:>14.2e}  "
                     f"{r['players_per_core']:>12.0f}  {lag['50']:>6.1f}ms  {lag['95']:>5.1f}ms  {lag['99']:>5.1f}ms  "
                     f"{lag['max']:>5.0f}ms  {r['drops']:>5}  {r['player_mbps_min']:>6.2f}Mb/s  "
                     f"{r['load_cpu_per_s']:>7.0%}  "
                     + (f"{r['join_s_max'] * 1000:>6.0f}ms" if r.get("join_s_max") is not None else f"{'-':>8}"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["load"]:
        port, players, kbps, samplers = map(int, argv[1:5])
        asyncio.run(_load(port, players, kbps, samplers))
        return 0
    p = argparse.ArgumentParser(prog="gateway bench rtmp", description=__doc__.splitlines()[0])
    p.add_argument("--players", default="100,250,500", help="comma list of player counts (default 100,250,500)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per player count (default 10)")
    p.add_argument("--kbps", type=int, default=3000, help="publisher bitrate (default 3000)")
    p.add_argument("--samplers", type=int, default=8, help="players that parse messages to measure lag (default 8)")
    p.add_argument("--fan-out-ms", type=float, default=None,
                   help=f"relay batching delay (default {RtmpConfig().fan_out_ms:g}, the server's)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    fan_out_ms = RtmpConfig().fan_out_ms if args.fan_out_ms is None else args.fan_out_ms
    tune_allocator()  # the server runs in this process: as in a serve worker
    rows = []
    for n in (int(x) for x in args.players.split(",")):
        print(f"  rtmp fan-out: {n} players x {args.seconds:g} s ...", file=sys.stderr, flush=True)
        rows.append(asyncio.run(measure(n, args.seconds, args.kbps, args.samplers, fan_out_ms=fan_out_ms)))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"RTMP fan-out, 1 publisher at ~{args.kbps} kbit/s (30 fps video + AAC), players on loopback in a "
              f"separate process; {os.cpu_count()} CPUs")
        print(render(rows))
        print(f"fan-out batches of {fan_out_ms:g} ms; join: a late joiner every 0.5 s, connect to first video "
              "message; players/core = 1 / (server CPU s per player per s)")
        print("target (issue 12): >= 3,000 players per core with lag p95 < 50 ms and join < 0.2 s "
              "(nginx-rtmp: ~3,500, 500 players at 14 % of a core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
