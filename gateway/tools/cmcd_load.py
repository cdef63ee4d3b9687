"""`gateway analytics-load`: simulated players sending CMCD to a gateway (or its nginx), and the ground truth of
what they sent, to check the audience analytics (issue 18, /api/v1/analytics) against.

Each session is a player: a User-Agent of a known player family, a CMCD ``sid``, one transmission mode (the ``CMCD``
query argument or the four ``CMCD-*`` headers, CTA-5004 section 2), a staggered start and length. In its first
minute on a stream it fetches the master playlist, a media playlist and a segment (``su`` on those three), later
minutes a segment or two, now and then another rendition (its media playlist, then segments with the new ``br``) or
another stream; segments carry ``br`` (the rendition's AVERAGE-BANDWIDTH, else BANDWIDTH, in kbps), ``bl``,
``mtp`` (steady per session: few histogram buckets), ``ot`` and sometimes ``bs``. The plan is a pure function of the
arguments and ``--seed``; which minute a request lands in is not (see below), the truth follows what happened.

Minutes are the server's: minute = floor(unix time / bucket seconds), taken when the response is prepared, which is
between the moment the request is sent and the moment its headers arrive here (same machine, same clock). Requests
are only sent in the middle of a bucket (``WINDOW``): a request that would start near an edge waits for the next
bucket, so the minute of each request is known exactly; the rare one whose headers still arrive in the next bucket
is listed in ``uncertain`` rather than guessed. The truth (JSON on standard output) counts, per stream label and
minute start ``t``: distinct sessions, sessions per rendition and per player family (the family written next to
each User-Agent here, not computed by the code under test), requests, bytes received and rebuffer events (``bs``).

Bounded: ``--concurrency`` requests in flight, ``--max-requests`` in the whole plan, ``--timeout`` per request.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

# (User-Agent, the family gateway/ops/user_agents.py must name it), by hand: the truth is not the code under test
PLAYERS = (
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
     "Safari/537.36", "Chrome"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
     "Safari/605.1.15", "Safari"),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", "Firefox"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
     "Safari/537.36 Edg/124.0.2478.51", "Edge"),
    ("ExoPlayerDemo/2.19.1 (Linux; Android 13) ExoPlayerLib/2.19.1", "ExoPlayer"),
    ("MyPlayer/3.2 (Linux; Android 14) AndroidXMedia3/1.3.1", "ExoPlayer"),
    ("AppleCoreMedia/1.0.0.21E236 (iPhone; U; CPU OS 17_4 like Mac OS X; en_us)", "AVPlayer"),
    ("Lavf/60.16.100", "other"),
)
TOOL_AGENT = ("gateway-analytics-load/1", "other")  # discovery: the playlists fetched before the sessions start
DISCOVERY_SID = "analytics-load-discovery"
WINDOW = (0.05, 0.75)  # the part of each bucket in which requests start (fractions of the bucket)
MAX_LENGTH_MINUTES = 3
# CTA-5004 3.3: the header each key travels in (headers mode)
HEADER_OF = {"br": "CMCD-Object", "ot": "CMCD-Object", "d": "CMCD-Object", "bl": "CMCD-Request",
             "mtp": "CMCD-Request", "su": "CMCD-Request", "sid": "CMCD-Session", "sf": "CMCD-Session",
             "st": "CMCD-Session", "bs": "CMCD-Status"}
_TOKENS = frozenset(("ot", "sf", "st"))


@dataclass
class Rendition:
    br: int  # kbps, what the player reports as CMCD br
    playlist: str  # absolute URL
    segments: list[str]


@dataclass
class Stream:
    label: str  # the truth's key: the gateway's stream key (``file:<name>``, ``entry:<id>``)
    master: str
    renditions: list[Rendition] = field(default_factory=list)


@dataclass
class Fetch:
    url: str
    kind: str  # "manifest" | "segment"
    stream: str  # label
    cmcd: dict


@dataclass
class Session:
    sid: str
    agent: tuple[str, str]
    mode: str  # "query" | "headers"
    minutes: dict[int, list[Fetch]] = field(default_factory=dict)  # simulated minute → its requests, in order


def encode_cmcd(values: dict) -> str:
    """A CMCD shard (CTA-5004 3.2): keys in alphabetical order, true booleans as the bare key, strings quoted."""
    members = []
    for key in sorted(values):
        value = values[key]
        if value is True:
            members.append(key)
        elif isinstance(value, str) and key not in _TOKENS:
            members.append(f'{key}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            members.append(f"{key}={value}")
    return ",".join(members)


def cmcd_headers(values: dict) -> dict[str, str]:
    shards: dict[str, dict] = {}
    for key, value in values.items():
        shards.setdefault(HEADER_OF[key], {})[key] = value
    return {name: encode_cmcd(shard) for name, shard in shards.items()}


def plan(streams: list[Stream], sessions: int, minutes: int, seed: int, max_requests: int) -> list[Session]:
    """The sessions and their requests per simulated minute: deterministic in its arguments."""
    rng = random.Random(seed)
    planned, total = [], 0
    for n in range(sessions):
        session = Session(sid=f"{rng.getrandbits(64):016x}-{n}", agent=rng.choice(PLAYERS),
                          mode=rng.choice(("query", "headers")))
        start = rng.randrange(minutes)
        length = rng.randint(1, min(MAX_LENGTH_MINUTES, minutes - start))
        stream = rng.choice(streams)
        rendition = rng.choice(stream.renditions)
        fresh, position = True, rng.randrange(1 << 16)
        throughput = rng.choice((2000, 5000, 10000, 20000))  # kbps: a player's network, steady within 10 %
        for minute in range(start, start + length):
            fetches: list[Fetch] = []
            if not fresh and len(streams) > 1 and rng.random() < 0.15:  # on to another stream
                stream = rng.choice([s for s in streams if s is not stream])
                rendition, fresh = rng.choice(stream.renditions), True
            if fresh:
                fetches.append(Fetch(stream.master, "manifest", stream.label, {"ot": "m", "su": True}))
            switch = not fresh and len(stream.renditions) > 1 and rng.random() < 0.25
            if switch:
                rendition = rng.choice([r for r in stream.renditions if r is not rendition])
            if fresh or switch:
                fetches.append(Fetch(rendition.playlist, "manifest", stream.label,
                                     {"ot": "m", **({"su": True} if fresh else {})}))
            for i in range(1 + (rng.random() < 0.3)):
                cmcd = {"ot": "av", "br": rendition.br, "bl": rng.randrange(20000, 30000, 100),
                        "mtp": int(throughput * rng.uniform(0.9, 1.1)) // 100 * 100}
                if fresh and i == 0:
                    cmcd["su"] = True
                elif rng.random() < 0.08:
                    cmcd["bs"] = True
                position += 1
                fetches.append(Fetch(rendition.segments[position % len(rendition.segments)], "segment",
                                     stream.label, cmcd))
            fresh = False
            fetches = fetches[:max(0, max_requests - total)]
            total += len(fetches)
            if fetches:
                session.minutes[minute] = fetches
        planned.append(session)
    return planned


class Truth:
    """What was received, per stream label and server minute: the ground truth of the analytics."""

    def __init__(self, bucket_seconds: int):
        self.bucket = bucket_seconds
        self.cells: dict[tuple[str, int], dict] = {}
        self.uncertain: list[dict] = []
        self.failures: list[str] = []
        self.failed = self.requests = 0

    def add(self, fetch: Fetch, sid: str, family: str, sent: float, answered: float, nbytes: int) -> None:
        b0, b1 = int(sent // self.bucket), int(answered // self.bucket)
        if b0 != b1:
            self.uncertain.append({"stream": fetch.stream, "t": [b0 * self.bucket, b1 * self.bucket]})
        t = b0 * self.bucket
        cell = self.cells.get((fetch.stream, t))
        if cell is None:
            cell = self.cells[fetch.stream, t] = {"sessions": set(), "by_rendition": {}, "by_player": {}, "bytes": 0,
                                                  "requests": 0, "rebuffer_events": 0}
        self.requests += 1
        cell["sessions"].add(sid)
        cell["by_player"].setdefault(family, set()).add(sid)
        if fetch.kind == "segment":
            cell["by_rendition"].setdefault(str(fetch.cmcd["br"]), set()).add(sid)
            cell["rebuffer_events"] += fetch.cmcd.get("bs", False) is True
        cell["bytes"] += nbytes
        cell["requests"] += 1

    def fail(self, fetch: Fetch, reason: str) -> None:
        self.failed += 1
        if len(self.failures) < 20:
            self.failures.append(f"{fetch.url}: {reason}")

    def as_json(self) -> dict:
        """Per stream: its minutes, its totals, and ``totals_since`` (the totals of the minutes from each one on: what
        an API query with ``from`` = that minute must show once older minutes were evicted)."""
        streams: dict[str, dict] = {}
        for (label, t), cell in sorted(self.cells.items()):
            streams.setdefault(label, {"minutes": {}})["minutes"][str(t)] = {
                "sessions": len(cell["sessions"]), "bytes": cell["bytes"], "requests": cell["requests"],
                "rebuffer_events": cell["rebuffer_events"],
                "by_rendition": {k: len(v) for k, v in sorted(cell["by_rendition"].items())},
                "by_player": {k: len(v) for k, v in sorted(cell["by_player"].items())}}
        for label, row in streams.items():
            since, seen = {}, set()
            totals = {"sessions": 0, "bytes": 0, "requests": 0, "rebuffer_events": 0}
            for t in sorted((int(t) for t in row["minutes"]), reverse=True):
                cell = self.cells[label, t]
                seen |= cell["sessions"]
                totals = {name: len(seen) if name == "sessions" else totals[name] + cell[name] for name in totals}
                since[str(t)] = totals
            row["totals"], row["totals_since"] = totals, dict(sorted(since.items(), key=lambda kv: int(kv[0])))
        return {"bucket_seconds": self.bucket, "requests": self.requests, "failed": self.failed,
                "failures": self.failures, "uncertain": self.uncertain, "streams": streams}


class Load:
    """Runs a plan with ``http`` (an aiohttp session: its timeout bounds each request), at most ``concurrency``
    requests in flight, every one started inside a bucket's sending window."""

    def __init__(self, http, bucket_seconds: int, concurrency: int, truth: Truth):
        self.http, self.bucket, self.truth = http, bucket_seconds, truth
        self.slots = asyncio.Semaphore(concurrency)

    async def window(self) -> None:
        """Return inside the sending window of a bucket (now, or the next one's)."""
        while True:
            into = time.time() % self.bucket
            low, high = WINDOW[0] * self.bucket, WINDOW[1] * self.bucket
            if low <= into <= high:
                return
            await asyncio.sleep((low - into) if into < low else (self.bucket - into + low))

    async def get(self, fetch: Fetch, sid: str, agent: tuple[str, str], mode: str) -> bytes | None:
        values = {"sid": sid, "sf": "h", "st": "v", **fetch.cmcd}
        headers = {"User-Agent": agent[0], "Accept-Encoding": "identity"}
        params = None
        if mode == "query":
            params = {"CMCD": encode_cmcd(values)}
        else:
            headers.update(cmcd_headers(values))
        async with self.slots:
            await self.window()
            sent = time.time()
            try:
                async with self.http.get(fetch.url, params=params, headers=headers) as response:
                    answered = time.time()
                    body = await response.read()
                    if response.status != 200:
                        self.truth.fail(fetch, f"HTTP {response.status}")
                        return None
            except Exception as e:  # noqa: BLE001 - any failure is reported, none stops the run
                self.truth.fail(fetch, repr(e)[:200])
                return None
        self.truth.add(fetch, sid, agent[1], sent, answered, len(body))
        return body

    async def discover(self, label: str, master_url: str) -> Stream:
        """A stream's renditions (AVERAGE-BANDWIDTH or BANDWIDTH → br) and their segments, read over HTTP with a
        CMCD sid of its own (these requests count, like any other, in the truth)."""
        stream = Stream(label, master_url)

        async def get(url: str) -> bytes | None:
            fetch = Fetch(url, "manifest", label, {"ot": "m"})
            return await self.get(fetch, DISCOVERY_SID, TOOL_AGENT, "query")

        master = await get(master_url)
        if master is None:
            raise RuntimeError(f"cannot read {master_url}: {self.truth.failures[-1:]}")
        for bandwidth, uri in variants(master.decode()):
            playlist_url = urljoin(master_url, uri)
            playlist = await get(playlist_url)
            if playlist is None:
                raise RuntimeError(f"cannot read {playlist_url}")
            segments = [urljoin(playlist_url, line) for line in playlist.decode().splitlines()
                        if line and not line.startswith("#")]
            if segments:
                stream.renditions.append(Rendition(round(bandwidth / 1000), playlist_url, segments))
        if not stream.renditions:
            raise RuntimeError(f"{master_url} lists no playable rendition")
        return stream

    async def run(self, sessions: list[Session]) -> None:
        first = (int(time.time() // self.bucket) + 1) * self.bucket  # simulated minute 0: the next bucket

        async def play(session: Session) -> None:
            for minute, fetches in sorted(session.minutes.items()):
                delay = first + minute * self.bucket - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                for fetch in fetches:
                    await self.get(fetch, session.sid, session.agent, session.mode)

        await asyncio.gather(*(play(s) for s in sessions))


def variants(master: str) -> list[tuple[int, str]]:
    """(BANDWIDTH, URI) of each #EXT-X-STREAM-INF of an HLS master playlist (RFC 8216 4.3.4.2)."""
    found, bandwidth = [], None
    for line in master.splitlines():
        if line.startswith("#EXT-X-STREAM-INF:"):
            attributes = dict(a.split("=", 1) for a in _attribute_list(line.split(":", 1)[1]) if "=" in a)
            bandwidth = int(attributes.get("AVERAGE-BANDWIDTH") or attributes.get("BANDWIDTH") or 0)
        elif line and not line.startswith("#") and bandwidth is not None:
            found.append((bandwidth, line.strip()))
            bandwidth = None
    return found


def _attribute_list(text: str) -> list[str]:
    """An attribute list split on the commas outside quoted strings."""
    items, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append(current)
            current = ""
        else:
            current += char
    return items + [current]


def label_of(spec: str) -> tuple[str, str]:
    """``LABEL=PATH`` or ``PATH``: the label defaults to the gateway's key of a file outside the catalog
    (``file:<name>``, the name between the protocol and the last path segment)."""
    if "=" in spec and not spec.startswith(("/", "http://", "https://")):
        label, _, path = spec.partition("=")
        return label, path
    parts = urlsplit(spec).path.strip("/").split("/")
    return ("file:" + "/".join(parts[1:-1]) if len(parts) > 2 else spec), spec


async def run_load(base: str, specs: list[str], sessions: int, minutes: int, bucket_seconds: int, seed: int,
                   concurrency: int, max_requests: int, timeout: float) -> dict:
    import aiohttp

    truth = Truth(bucket_seconds)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout),
                                     auto_decompress=False) as http:
        load = Load(http, bucket_seconds, concurrency, truth)
        streams = [await load.discover(label, urljoin(base.rstrip("/") + "/", path.lstrip("/")))
                   for label, path in map(label_of, specs)]
        planned = plan(streams, sessions, minutes, seed, max(0, max_requests - truth.requests))
        started = time.monotonic()
        await load.run(planned)
    result = truth.as_json()
    result.update(seed=seed, sessions=sessions, minutes=minutes, seconds=round(time.monotonic() - started, 3))
    return result


DEFAULT_STREAM = "/hls/title_,360p,240p,180p,.mp4.urlset/master.m3u8"  # the demo's ladder (gateway demo)


def add_analytics_load_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analytics-load", help="simulated players sending CMCD; prints the truth the analytics "
                       "should show", description=__doc__.split("\n\n")[0])
    p.add_argument("base", metavar="BASE_URL", help="the gateway or its load balancer, e.g. http://127.0.0.1:8080")
    p.add_argument("--stream", action="append", default=[], metavar="[LABEL=]PATH",
                   help=f"an HLS master playlist (repeat; default {DEFAULT_STREAM}); LABEL is the stream key the "
                        "truth uses (default file:<name>; entry:<id> for catalog entries)")
    p.add_argument("--sessions", type=int, default=100, metavar="N")
    p.add_argument("--minutes", type=int, default=10, metavar="M")
    p.add_argument("--minute-seconds", type=int, default=60, metavar="S",
                   help="the server's analytics_bucket_seconds (default 60)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=32, metavar="N", help="requests in flight at most")
    p.add_argument("--max-requests", type=int, default=100_000, metavar="N", help="requests in all at most")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="one request, body included")
    p.add_argument("-o", "--output", type=Path, default=None, help="write the truth here instead of standard output")
    p.set_defaults(func=cmd_analytics_load)


def cmd_analytics_load(args: argparse.Namespace) -> int:
    if min(args.sessions, args.minutes, args.minute_seconds, args.concurrency, args.max_requests) < 1 \
            or args.timeout <= 0:
        print("gateway analytics-load: sessions, minutes, minute-seconds, concurrency and max-requests must be >= 1, "
              "timeout > 0", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run_load(args.base, args.stream or [DEFAULT_STREAM], args.sessions, args.minutes,
                                      args.minute_seconds, args.seed, args.concurrency, args.max_requests,
                                      args.timeout))
    except RuntimeError as e:
        print(f"gateway analytics-load: {e}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=1, sort_keys=True) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0
