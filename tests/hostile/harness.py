"""Real `gateway serve` workers under an address-space limit, asked for every protocol of a file; per-file peak RSS.

``Node``: one `gateway serve --workers 1` (tests.gateway.processes.Gateway). After a warm-up on a pristine file its
worker gets ``RLIMIT_AS = VmSize(idle) + AS_HEADROOM_MB`` (``prlimit`` on the running worker, so the limit is taken from
the very process it applies to). Address space counts reservations (thread stacks, malloc arenas, numpy's mmaps),
not touched memory, so this limit is looser than the RSS bound; it exists to turn the issue's gigabyte allocations
(15.5 GB grid, 1.6 GB tables, 450 MB fragment) into a prompt failure instead of a swapping node.

``Fleet.probe(name)``: for one store file, every protocol's manifest (HLS TS and HLS fMP4 on a second node, DASH, MSS,
HDS), the media playlists, the first/middle/last segment of up to two renditions (with init segments), and ``/mp4/``
with a Range, by ``CLIENTS`` concurrent HTTP clients with per-request timeouts; then ``/health`` on each node. Peak RSS
is read as VmHWM after ``echo 5 > /proc/<pid>/clear_refs`` reset it before the file: VmHWM - RSS at reset must stay
under ``RSS_BOUND_MB`` + 2 x the largest response of that file on that node (packagers/limits.py's bound).
"""
from __future__ import annotations

import concurrent.futures as cf
import http.client
import multiprocessing
import posixpath
import re
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from packagers.limits import Limits
from tests.gateway.processes import HANG_GUARD, Gateway, wait_until

from . import sanity

# Working memory a request may need on top of twice the bytes it sends: the bound packagers/limits.py derives for the
# default frame limit (~144 MB). A file refused early (the repros) must stay far below: REFUSAL_RSS_MB.
RSS_BOUND_MB = Limits().request_memory_bytes / (1 << 20)
REFUSAL_RSS_MB = 64
AS_HEADROOM_MB = 512  # address space a worker may reserve beyond its warmed-up idle size (see module doc)
REQUEST_TIMEOUT = 30.0  # a hang, not slowness: an answer on this tree takes milliseconds
CLIENTS = 4
MB = 1 << 20
# caches small, so that they hold little of the address-space headroom (and every request re-parses its file)
SERVER_ARGS = ("--workers", "1", "--io-threads", "4", "--no-access-log", "--segment-cache-mb", "16",
               "--metadata-cache-mb", "16")


@dataclass
class Answer:
    node: str
    path: str
    status: int | None
    body: bytes = b""
    error: str = ""
    seconds: float = 0.0

    @property
    def head(self) -> str:
        return (self.body[:160].decode("latin-1").strip() if self.status != 200 else "") or self.error


def fetch(base: str, path: str, node: str, headers: dict | None = None) -> Answer:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT)
    started = time.monotonic()
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        return Answer(node, path, response.status, response.read(), seconds=time.monotonic() - started)
    except (OSError, http.client.HTTPException) as e:
        return Answer(node, path, None, error=f"{type(e).__name__}: {e}"[:120], seconds=time.monotonic() - started)
    finally:
        conn.close()


def proc_status(pid: int) -> dict[str, int]:
    """VmSize, VmRSS, VmHWM... of /proc/<pid>/status, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) * 1024
    return out


class Node:
    """One limited `gateway serve` worker (``name`` says which container its HLS uses)."""

    def __init__(self, name: str, log: Path, store: Path, *args: str):
        self.name = name
        self.gw = Gateway(log, *SERVER_ARGS, *args, store=store)
        self.base = self.gw.base
        self.worker = self._one_worker()
        self.as_limit = 0
        self.log_offset = 0

    def _one_worker(self) -> int:
        return wait_until(lambda: (lambda w: next(iter(w)) if len(w) == 1 else None)(self.gw.workers()),
                          f"the worker of {self.name}")

    def limit(self) -> None:
        """Cap the (warmed-up) worker's address space; called again for a worker the supervisor restarted."""
        if not self.as_limit:
            self.as_limit = proc_status(self.worker)["VmSize"] + AS_HEADROOM_MB * MB
        resource.prlimit(self.worker, resource.RLIMIT_AS, (self.as_limit, self.as_limit))

    def reset_peak(self) -> int:
        Path(f"/proc/{self.worker}/clear_refs").write_text("5")
        return proc_status(self.worker)["VmRSS"]

    def peak(self) -> int:
        try:
            return proc_status(self.worker)["VmHWM"]
        except (OSError, KeyError):
            return 0

    def still_alive(self) -> str | None:
        """None when the same worker answers /health; else what happened (and the new worker gets the limit)."""
        health = fetch(self.base, "/health", self.name)
        if health.status == 200 and self.gw.workers() == {self.worker}:
            return None
        what = f"/health {health.status or health.error}" if health.status != 200 else "worker restarted"
        if self.gw.proc.poll() is not None:
            raise AssertionError(f"gateway serve ({self.name}) exited: {self.gw.log.read_text()[-2000:]}")
        self.worker = self._one_worker()
        self.limit()
        wait_until(lambda: fetch(self.base, "/health", self.name).status == 200, f"{self.name} healthy again")
        return f"{what} (pid {self.worker} now)"

    def new_errors(self) -> list[str]:
        """Tracebacks logged since the last call (one entry each: request line ... exception line)."""
        text = self.gw.log.read_text(errors="replace")
        new, self.log_offset = text[self.log_offset:], len(text)
        return [b.strip() for b in re.split(r"\n(?=\d{4}-\d\d-\d\dT)", new) if "Traceback" in b]

    def close(self) -> None:
        self.gw.close()


class Decoder:
    """PyAV in a child process: a decoder crash on hostile bytes is a finding, not a dead pytest."""

    def __init__(self):
        self.pool = self._new()

    @staticmethod
    def _new() -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver"))

    def decode(self, fmt: str, data: bytes) -> str | None:
        try:
            return self.pool.submit(sanity.decode_first_frames, fmt, data).result(timeout=HANG_GUARD)
        except (cf.process.BrokenProcessPool, cf.TimeoutError) as e:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new()
            return f"decoder {type(e).__name__}"

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


@dataclass
class FileReport:
    name: str
    detail: str = ""
    payload_corrupt: bool = False
    answers: list[Answer] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, cause)
    decode_notes: list[tuple[str, str]] = field(default_factory=list)
    peaks_mb: dict[str, float] = field(default_factory=dict)
    tracebacks: list[str] = field(default_factory=list)


def segment_format(protocol: str, path: str) -> str | None:
    if protocol == "mss":
        return None
    if protocol == "hds":
        return "f4f"
    return "mpegts" if path.endswith(".ts") else "mp4"


class Fleet:
    """The nodes a probe uses: ``ts`` (every protocol, HLS in MPEG-TS) and ``fmp4`` (HLS with fMP4 segments)."""

    def __init__(self, tmp: Path, store: Path, warm_up: str):
        self.nodes = {"ts": Node("ts", tmp / "gateway-ts.log", store, "--hls-container", "ts"),
                      "fmp4": Node("fmp4", tmp / "gateway-fmp4.log", store, "--hls-container", "fmp4")}
        self.pool = cf.ThreadPoolExecutor(CLIENTS)
        self.decoder = Decoder()
        warm = self.probe(warm_up, limit_after_warm_up=True)
        assert not warm.problems and not warm.decode_notes, (warm.problems, warm.decode_notes)
        self.idle_vmsize_mb = {n: node.as_limit / MB - AS_HEADROOM_MB for n, node in self.nodes.items()}

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(cancel_futures=True)
        self.decoder.close()
        for node in self.nodes.values():
            node.close()

    def _get_all(self, jobs: list[tuple[str, str, dict | None]]) -> list[Answer]:
        return list(self.pool.map(lambda j: fetch(self.nodes[j[0]].base, j[1], j[0], j[2]), jobs))

    def probe(self, name: str, detail: str = "", payload_corrupt: bool = False,
              limit_after_warm_up: bool = False) -> FileReport:
        report = FileReport(name, detail, payload_corrupt)
        q = quote(name)
        baselines = {n: node.reset_peak() for n, node in self.nodes.items()}
        manifests = [("ts", "hls", f"/hls/{q}/master.m3u8"), ("fmp4", "hls", f"/hls/{q}/master.m3u8"),
                     ("ts", "dash", f"/dash/{q}/manifest.mpd"), ("ts", "mss", f"/mss/{q}/manifest"),
                     ("ts", "hds", f"/hds/{q}/manifest.f4m")]
        segments: list[tuple[str, str, str, str | None]] = []  # (node, protocol, segment path, init path)
        while manifests:
            answers = self._get_all([(n, p, None) for n, _, p in manifests])
            children = []
            for (node, protocol, path), answer in zip(manifests, answers):
                report.answers.append(answer)
                if self._status(report, answer) or answer.status != 200:
                    continue
                m = sanity.CHECKERS[protocol](answer.body.decode("utf-8", "replace"))
                report.problems += [(f"{node} {path}", p) for p in m.problems]
                here = posixpath.dirname(path)
                children += [(node, protocol, posixpath.normpath(posixpath.join(here, c))) for c in m.children]
                segments += [(node, protocol, posixpath.normpath(posixpath.join(here, s)),
                              posixpath.normpath(posixpath.join(here, i)) if i else None) for s, i in m.segments]
            manifests = children
        inits = sorted({(n, i) for n, _, _, i in segments if i})
        jobs = [(n, s, None) for n, _, s, _ in segments] + [(n, i, None) for n, i in inits]
        jobs.append(("ts", f"/mp4/{q}", {"Range": "bytes=0-65535"}))
        answers = self._get_all(jobs)
        by_path = {(a.node, a.path): a for a in answers}
        for answer in answers:
            report.answers.append(answer)
            self._status(report, answer)
        for node, protocol, path, init in segments:
            answer = by_path[(node, path)]
            init_answer = by_path.get((node, init)) if init else None
            if answer.status != 200 or (init_answer is not None and init_answer.status != 200):
                continue
            if not answer.body:
                report.problems.append((f"{node} {path}", "200 with an empty body"))
                continue
            fmt = segment_format(protocol, path)
            if fmt is None:
                if answer.body[4:8] != b"moof":
                    report.problems.append((f"{node} {path}", "MSS fragment does not start with moof"))
                continue
            error = self.decoder.decode(fmt, (init_answer.body if init_answer else b"") + answer.body)
            if error:
                where = (f"{node} {path}", error)
                (report.problems if error.startswith("decoder ") else report.decode_notes).append(where)
        for n, node in self.nodes.items():
            largest = max((len(a.body) for a in report.answers if a.node == n), default=0)
            peak = node.peak() - baselines[n]
            report.peaks_mb[n] = round(peak / MB, 1)
            if peak > RSS_BOUND_MB * MB + 2 * largest:
                report.problems.append(
                    (n, f"peak RSS +{peak / MB:.0f} MB > {RSS_BOUND_MB} MB + 2 x {largest / MB:.1f} MB"))
            if limit_after_warm_up:
                node.limit()
            dead = node.still_alive()
            if dead:
                report.problems.append((n, dead))
            report.tracebacks += node.new_errors()
        return report

    @staticmethod
    def _status(report: FileReport, answer: Answer) -> str | None:
        problem = sanity.status_problem(answer.status, answer.body, answer.error)
        if problem:
            report.problems.append((f"{answer.node} {answer.path}", problem))
        return problem


# --- reporting ------------------------------------------------------------------------------------------------------

def cause_of(problem: str) -> str:
    """A problem without its numbers, so that files failing the same way group together."""
    return re.sub(r"\d+(\.\d+)?", "N", problem)


def traceback_signature(tb: str) -> str:
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', tb)
    ours = [f for f in frames if "/work/main/" in f[0] or "site-packages" not in f[0]]
    last = ours[-1] if ours else (frames[-1] if frames else ("?", "?", "?"))
    exc = tb.strip().splitlines()[-1][:160]
    return f"{exc}  at {Path(last[0]).name}:{last[1]} {last[2]}"


def summary(reports: list[FileReport], seconds: float) -> str:
    statuses = Counter(str(a.status or a.error.split(":")[0]) for r in reports for a in r.answers)
    peak = max(((p, r.name) for r in reports for p in r.peaks_mb.values()), default=(0, ""))
    failing = [r for r in reports if r.problems]
    lines = [f"files {len(reports)}, requests {sum(len(r.answers) for r in reports)}, "
             f"files with problems {len(failing)}, wall time {seconds:.0f} s",
             "statuses: " + ", ".join(f"{k} x{v}" for k, v in sorted(statuses.items())),
             f"max per-file peak RSS: +{peak[0]} MB ({peak[1]})",
             "slowest answer: {:.3f} s {}".format(*max(((a.seconds, a.path) for r in reports for a in r.answers),
                                                       default=(0.0, ""))),
             f"decode notes (200 segments PyAV could not decode): {sum(len(r.decode_notes) for r in reports)}"]
    causes = Counter(cause_of(p) for r in reports for _, p in r.problems)
    lines += [f"  {v:5d}  {k}" for k, v in causes.most_common(25)]
    return "\n".join(lines)


def findings(reports: list[FileReport]) -> str:
    """Markdown: problems grouped by cause (server traceback signature when there is one), with examples."""
    groups: dict[str, list[tuple[FileReport, str, str]]] = {}
    for r in reports:
        sigs = [traceback_signature(tb) for tb in r.tracebacks]
        for where, problem in r.problems:
            key = cause_of(problem)
            if problem.startswith("500 INTERNAL_ERROR") and sigs:
                key = f"500 INTERNAL_ERROR: {sigs[0]}"
            groups.setdefault(key, []).append((r, where, problem))
    out = []
    for key, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        files = sorted({r.name for r, _, _ in items})
        out.append(f"### {key}\n\n{len(items)} answers, {len(files)} files. Examples:\n")
        for r, where, problem in items[:6]:
            body = next((a.head for a in r.answers if f"{a.node} {a.path}" == where), "")
            said = f" — body `{body[:120]}`" if body else ""
            out.append(f"- `{r.name}` ({r.detail}): `{where}` → {problem}{said}")
        if len(files) > 1:
            out.append(f"\nFiles: {', '.join(files[:60])}{' ...' if len(files) > 60 else ''}")
        tbs = {tb for r, _, p in items[:3] if p.startswith("500 INTERNAL") for tb in r.tracebacks[:1]}
        for tb in list(tbs)[:1]:
            out.append("\n```\n" + "\n".join(tb.splitlines()[-14:]) + "\n```")
        out.append("")
    notes = Counter((r.name.rsplit("_", 1)[-1].removesuffix(".mp4") if r.name.startswith("m") else r.name,
                     re.sub(r"\d+", "N", e)[:90]) for r in reports for _, e in r.decode_notes)
    if notes:
        out.append("### Decode notes (not failures): 200 segments PyAV could not decode, by mutation kind\n")
        out += [f"- {n} x `{kind}`: {error}" for (kind, error), n in notes.most_common(30)]
        examples = [(r.name, r.detail, w, e) for r in reports if not r.payload_corrupt for w, e in r.decode_notes[:1]]
        out += ["", "Examples outside the payload-corruption kind:", ""]
        out += [f"- `{name}` ({detail}): `{w}` → {e}" for name, detail, w, e in examples[:12]]
    return "\n".join(out)
