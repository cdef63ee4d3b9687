"""The supervisor of `gateway serve`: N worker processes on one port, restarted when they die, told to reload or stop.

Why processes: packaging is CPU work under the GIL, so one process uses one core. Each worker binds its own listening
socket with SO_REUSEPORT and the kernel spreads new connections across them; the supervisor holds one more socket on
the address, bound but never listening, which reserves the port (``--port 0`` is resolved once, here) and never
receives a connection. The supervisor itself runs no event loop and serves nothing: it forks workers, waits for
signals and child exits, and talks to each worker over a pipe.

Signals (to the supervisor):
  SIGTERM, SIGINT  forwarded as SIGTERM; each worker answers /ready 503 for ``drain_delay``, closes its port,
                   finishes in-flight responses (within ``shutdown_grace``) and exits; then the supervisor exits 0.
                   A second SIGTERM/SIGINT cuts the drain delay short. Workers still alive after the grace period
                   (plus a margin) are killed.
  SIGHUP           re-read the configuration (``reload``); if it is valid, send it to every worker, which switches in
                   place without closing its socket (gateway.runtime.serve), and start or stop workers to match ``workers``.
                   An invalid file is logged and changes nothing.
  a worker dies    (not asked to) → logged and restarted with the current configuration, after a backoff when it
                   keeps dying young.

Worker 0 is the one that runs the RTMP ingest (its relay is in memory: a publisher and its players must meet in one
process); it is never the one stopped when ``workers`` shrinks.
"""
from __future__ import annotations

import errno
import logging
import os
import selectors
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe
from typing import Callable

from .config_file import ConfigError, ServeConfig
from .sd_notify import monotonic_usec, notify

__all__ = ["Address", "Supervisor", "WorkerFn", "reserve_address"]

log = logging.getLogger("gateway.workers")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
YOUNG_DEATH_SECONDS = 5.0  # a worker dying sooner than this after its start is crash-looping: back off
MAX_BACKOFF_SECONDS = 10.0
STOP_MARGIN_SECONDS = 5.0  # beyond shutdown_grace + drain_delay before stragglers are killed


@dataclass(frozen=True)
class Address:
    """The HTTP listening address every worker binds (port 0 already resolved by the supervisor)."""

    family: int
    sockaddr: tuple

    @property
    def host(self) -> str:
        return self.sockaddr[0]

    @property
    def port(self) -> int:
        return self.sockaddr[1]


def reserve_address(host: str, port: int) -> tuple[socket.socket, Address]:
    """A bound, non-listening SO_REUSEPORT socket on (host, port): the port stays ours across worker restarts."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock, Address(family, sock.getsockname())


class PortHeld(OSError):
    """Another gateway's supervisor serves this port."""


def claim_port(port: int) -> socket.socket:
    """A listening socket in Linux's abstract Unix namespace named after ``port``: one gateway per port. SO_REUSEPORT
    lets any process of the same user join a port's group, so without this a second `gateway serve` on a held port
    would start and the kernel would split the traffic between two gateways. Its workers (and restarts of them, and
    ``--workers`` changes) join the group freely: they are the claimant's. Another gateway's claim fails with the
    holder's pid (SO_PEERCRED of a connection to it); the claim ends with the process, however it ends."""
    name = b"\0media-gateway:port:%d" % port
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
        sock.listen(16)
        sock.setblocking(False)
        return sock
    except OSError as e:
        sock.close()
        if e.errno != errno.EADDRINUSE:
            raise
    raise PortHeld(errno.EADDRINUSE, f"port {port} is held by gateway pid {_holder(name)}")


def _holder(name: bytes) -> str:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(name)
        pid, _, _ = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return str(pid)
    except OSError:
        return "(unknown)"
    finally:
        probe.close()


# (index, config, control connection, address) -> exit code; runs in the forked child
WorkerFn = Callable[[int, ServeConfig, Connection, Address], int]


@dataclass
class _Worker:
    index: int
    pid: int
    conn: Connection  # the supervisor's end of the control pipe
    started: float
    ready: bool = False
    stopping: bool = False  # asked to exit: do not restart
    info: dict = field(default_factory=dict)  # what the worker reported when ready (e.g. its RTMP port)


class Supervisor:
    def __init__(self, config: ServeConfig, worker_fn: WorkerFn, on_ready: Callable[[Address, dict], None],
                 reload: Callable[[], ServeConfig] | None = None):
        self.config = config
        self.worker_fn = worker_fn
        self.on_ready = on_ready  # once, when the first set of workers listens: prints the URL
        self.reload = reload
        self.workers: dict[int, _Worker] = {}  # by pid
        self.restart_at: dict[int, float] = {}  # index -> monotonic time of its next start
        self.young_deaths: dict[int, int] = {}
        self.started = False
        self.stopping = False
        self.stop_deadline = float("inf")  # stragglers are killed after it
        self.failure: str | None = None

    # -- main loop -------------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean stop, 1 when the first workers cannot start."""
        host, port = self.config.settings.host, self.config.settings.port
        claim = reservation = None
        try:
            claim = claim_port(port) if port else None  # first: a held port is named as such
            reservation, self.address = reserve_address(host, port)
            claim = claim or claim_port(self.address.port)  # --port 0: the port the kernel gave
        except OSError as e:
            for sock in (claim, reservation):
                if sock is not None:
                    sock.close()
            print(f"gateway serve: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr, flush=True)
            return 1
        metrics_dir = _multiprocess_metrics_dir()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._selector.register(claim, selectors.EVENT_READ)  # another gateway asking who holds the port
        self._reservation, self._claim = reservation, claim
        previous = self._install_signals()
        try:
            for index in range(self.config.workers):
                self._spawn(index)
            while not (self.stopping and not self.workers):
                self._wait(self._next_timeout())
                self._reap()
                if self.failure is not None and not self.started:
                    print(f"gateway serve: {self.failure}", file=sys.stderr, flush=True)
                    self._stop_all()
                    self._wait_for_exit()
                    return 1
                if not self.stopping:
                    self._restart_due()
            return 0
        finally:
            self._restore_signals(previous)
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()
            reservation.close()
            claim.close()
            if metrics_dir is not None:
                os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
                shutil.rmtree(metrics_dir, ignore_errors=True)

    def _wait(self, timeout: float | None) -> None:
        for key, _ in self._selector.select(timeout):
            if key.fileobj is self._wake_r:
                self._on_signals()
            elif key.fileobj is self._claim:
                try:
                    self._claim.accept()[0].close()  # it read our pid at connect time (SO_PEERCRED)
                except OSError:
                    pass
            else:
                self._on_message(key.data)

    def _next_timeout(self) -> float | None:
        if self.stopping:
            return 0.5
        if self.restart_at:
            return max(0.0, min(self.restart_at.values()) - time.monotonic())
        return None

    # -- signals ---------------------------------------------------------------------------------------------------
    def _install_signals(self) -> dict:
        """Python handlers that do nothing: the C handler writes the signal number to the wake-up socket, which is
        what the loop reads. SIGCHLD needs a handler too, or it would not wake the loop."""
        previous = {sig: signal.signal(sig, _ignore) for sig in HANDLED_SIGNALS}
        previous["wakeup"] = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        return previous

    @staticmethod
    def _restore_signals(previous: dict) -> None:
        signal.set_wakeup_fd(previous.pop("wakeup"))
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _on_signals(self) -> None:
        try:
            received = self._wake_r.recv(512)
        except BlockingIOError:
            return
        for signum in received:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self._begin_stop(signal.Signals(signum).name)
            elif signum == signal.SIGHUP and not self.stopping:
                self._reload()
            # SIGCHLD: _reap runs after every wake-up

    def _begin_stop(self, why: str) -> None:
        """The first SIGTERM/SIGINT stops the workers; another one also cuts their drain delay short (workers get
        that over the pipe, since a terminal's Ctrl-C or systemd also signal them directly, once)."""
        if self.stopping:
            for worker in self.workers.values():
                self._send(worker, ("hurry", None))
        else:
            log.info("gateway: %s: stopping %d worker(s) (grace %g s)", why, len(self.workers),
                     self.config.shutdown_grace)
            notify("STOPPING=1", f"STATUS=stopping ({why})")
        self._stop_all()

    @staticmethod
    def _send(worker: _Worker, message) -> None:
        try:
            worker.conn.send(message)
        except OSError:
            pass  # it died; _reap handles it

    def _stop_all(self) -> None:
        """SIGTERM every worker (again, if asked twice: harmless) and stop restarting them."""
        self.stopping = True
        self.restart_at.clear()
        grace = self.config.drain_delay + self.config.shutdown_grace + STOP_MARGIN_SECONDS
        self.stop_deadline = min(self.stop_deadline, time.monotonic() + grace)
        for worker in self.workers.values():
            worker.stopping = True
            _kill(worker.pid, signal.SIGTERM)

    def _wait_for_exit(self) -> None:
        while self.workers:
            self._wait(0.5)
            self._reap()

    # -- reload ----------------------------------------------------------------------------------------------------
    def _reload(self) -> None:
        notify("RELOADING=1", monotonic_usec())
        try:
            self._reload_config()
        finally:
            notify("READY=1", self._status())  # applied or refused: the running configuration serves

    def _status(self) -> str:
        return f"STATUS=serving on port {self.address.port} with {self.config.workers} worker(s)"

    def _reload_config(self) -> None:
        if self.reload is None:
            log.warning("gateway: SIGHUP: no configuration source to reload")
            return
        try:
            new = self.reload()
        except (ConfigError, OSError, ValueError) as e:
            log.error("gateway: SIGHUP: configuration not reloaded, keeping the running one: %s", e)
            return
        fixed = self.config.restart_only_changes(new)
        if fixed:
            log.warning("gateway: SIGHUP: %s changed: these need a restart; keeping the running values",
                        ", ".join(fixed))
            new = self.config.keeping_bound(new)
        self.config = new
        logging.getLogger().setLevel(new.log_level.upper())
        for worker in self.workers.values():
            if not worker.stopping:
                self._send(worker, ("reload", new))  # if it died, _reap restarts it with the new configuration
        running = sorted(w.index for w in self.workers.values() if not w.stopping)
        for worker in self.workers.values():
            if worker.index >= new.workers and not worker.stopping:
                worker.stopping = True
                _kill(worker.pid, signal.SIGTERM)
        for index in range(new.workers):
            if index not in running and index not in self.restart_at:
                self._spawn(index)
        log.info("gateway: SIGHUP: configuration reloaded (%d worker(s))", new.workers)

    # -- children --------------------------------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        parent_end, child_end = Pipe(duplex=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # Signals stay blocked across the fork until the child has dropped our handlers: otherwise a SIGTERM sent
        # to a newborn worker would be written to the wake-up socket we share and read as one sent to us.
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's stack
            code = 1
            try:
                parent_end.close()
                self._become_worker()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
                code = self.worker_fn(index, self.config, child_end, self.address)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        child_end.close()
        worker = _Worker(index, pid, parent_end, time.monotonic())
        self.workers[pid] = worker
        self._selector.register(parent_end, selectors.EVENT_READ, worker)
        log.debug("gateway: worker %d started (pid %d)", index, pid)

    def _become_worker(self) -> None:
        """Drop what belongs to the supervisor: its signal handling, its sockets, the other workers' pipes."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads arrive over the pipe; a terminal hangup is not one
        self._selector.close()
        for sock in (self._wake_r, self._wake_w, self._reservation, self._claim):
            sock.close()
        for other in self.workers.values():
            other.conn.close()

    def _on_message(self, worker: _Worker) -> bool:
        """Handle one message; False at end of file (the worker is gone: SIGCHLD brings it to _reap)."""
        try:
            kind, payload = worker.conn.recv()
        except (EOFError, OSError):
            self._forget_conn(worker)
            return False
        if kind == "ready":
            worker.ready, worker.info = True, payload
            if not self.started and not self.stopping and self._all_ready():
                self.started = True
                infos = {w.index: w.info for w in self.workers.values()}
                self.on_ready(self.address, infos)
                notify("READY=1", self._status())
        elif kind == "failed" and not self.started:
            self.failure = f"worker {worker.index} could not start: {payload}"
        elif kind == "purge":  # the admin API (worker 0) purges every worker's caches
            for each in self.workers.values():
                if not each.stopping:
                    self._send(each, ("purge", payload))
        return True

    def _forget_conn(self, worker: _Worker) -> None:
        try:
            self._selector.unregister(worker.conn)
        except (KeyError, ValueError):
            pass

    def _all_ready(self) -> bool:
        indexes = {w.index for w in self.workers.values() if w.ready}
        return indexes >= set(range(self.config.workers))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            try:
                while worker.conn.poll() and self._on_message(worker):
                    pass  # what it said before dying (e.g. why it could not start)
            except OSError:
                pass
            self._forget_conn(worker)
            worker.conn.close()
            _mark_metrics_dead(pid)
            code = os.waitstatus_to_exitcode(status)
            if worker.stopping:
                log.debug("gateway: worker %d (pid %d) exited (%s)", worker.index, pid, code)
                continue
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            if not self.started:
                self.failure = self.failure or f"worker {worker.index} exited during startup ({how})"
                continue
            lived = time.monotonic() - worker.started
            self.young_deaths[worker.index] = self.young_deaths.get(worker.index, 0) + 1 if lived < YOUNG_DEATH_SECONDS else 0
            deaths = self.young_deaths[worker.index]
            delay = 0.0 if deaths == 0 else min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (deaths - 1))
            log.warning("gateway: worker %d (pid %d) died (%s) after %.1f s; restarting in %.1f s",
                        worker.index, pid, how, lived, delay)
            self.restart_at[worker.index] = time.monotonic() + delay
        if self.stopping and self.workers and time.monotonic() > self.stop_deadline:
            for worker in self.workers.values():
                log.warning("gateway: worker %d (pid %d) still running after the grace period: killed",
                            worker.index, worker.pid)
                _kill(worker.pid, signal.SIGKILL)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.restart_at.items()):
            if when <= now:
                del self.restart_at[index]
                if index < self.config.workers:
                    self._spawn(index)


def _ignore(signum, frame) -> None:
    pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _multiprocess_metrics_dir() -> str | None:
    """prometheus-client's multiprocess mode wants one directory shared by every worker, fresh for each run: create
    it here (before any worker imports prometheus_client) unless the environment already names one."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    path = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _mark_metrics_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (prometheus-client multiprocess mode), when that library is in use."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    try:
        multiprocess.mark_process_dead(pid)
    except OSError:
        pass
