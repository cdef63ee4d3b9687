"""/health and /ready: answered by a real server, with a store probe that really blocks, and while draining.

The hung store: an NFS mount cannot be had here, so the probe's optional ``ready_file`` (a store file /ready reads
one byte of) is a named pipe with no writer. Opening it for reading blocks in the kernel exactly like a read on a
dead hard-mounted NFS server: the executor thread is stuck in a syscall that no timeout in Python can interrupt.
That is the honest part: the gateway's own probe code, its own thread pool, a real blocked syscall. The test then
checks what the kernel says: exactly one thread of the worker is blocked in the FIFO open (``wait_for_partner`` in
/proc/<pid>/task/*/wchan), however often /ready was polled; and a writer opening the FIFO with O_NONBLOCK succeeds
only because that reader is waiting — which also releases the probe, after which /ready recovers.
"""
from __future__ import annotations

import glob
import json
import os
import re
import signal
from pathlib import Path

from .processes import get, refused, wait_until


async def test_health_and_ready_answer_without_caching(client):
    response = await client.get("/health")
    assert response.status == 200 and await response.text() == "ok\n"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Gateway-Worker"] == str(os.getpid())
    response = await client.get("/ready")
    assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
    assert await response.json() == {"ready": True, "worker": 0, "pid": os.getpid()}
    head = await client.head("/ready")
    assert head.status == 200 and await head.read() == b""


async def test_ready_reports_a_store_that_fails(make_client, store):
    client = await make_client(ready_file="missing-marker")
    response = await client.get("/ready")
    body = await response.json()
    assert response.status == 503 and body["ready"] is False
    assert body["reason"] == "store: No such file or directory"
    assert str(store) not in json.dumps(body)  # never shows where the store is mounted


def stuck_for(body: bytes) -> float:
    """How long the probe in flight has been running, from the 503 reason (it grows: the same probe, reused)."""
    return float(re.search(r"running for ([0-9.]+) s", json.loads(body)["reason"])[1])


def threads_blocked_in_fifo_open(pid: int) -> int:
    count = 0
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            if Path(task, "wchan").read_text() == "wait_for_partner":
                count += 1
        except OSError:
            pass
    return count


def test_ready_is_503_while_the_store_hangs_and_recovers(gateways, store, tmp_path):
    os.mkfifo(store / "probe.fifo")
    handle = tmp_path / "fifo-handle"
    os.link(store / "probe.fifo", handle)  # the same FIFO, still reachable once probe.fifo is replaced
    config = tmp_path / "gateway.toml"
    config.write_text(f'store = "{store}"\nready_file = "probe.fifo"\nready_timeout = 0.5\n')
    gw = gateways("--config", str(config))

    status, headers, body = get(gw.base, "/ready")  # returns: the hung probe never hangs the request
    answer = json.loads(body)
    assert status == 503 and headers["Cache-Control"] == "no-store"
    assert answer["ready"] is False and answer["reason"].startswith("store: no answer within 0.5 s")
    worker = answer["pid"]
    assert worker in gw.workers()
    assert get(gw.base, "/health")[0] == 200  # the process itself is fine
    assert get(gw.base, "/hls/title_240p.mp4/master.m3u8")[0] == 200  # and still serves what it can

    # poll like a balancer, across several probe-cache periods: still one stuck thread, not one per poll
    polls = [get(gw.base, "/ready") for _ in range(12)]
    assert {status for status, _, _ in polls} == {503}
    wait_until(lambda: stuck_for(get(gw.base, "/ready")[2]) > 2.0, "the first probe to be stuck > 2 s")
    assert threads_blocked_in_fifo_open(worker) == 1

    # the store "comes back": the marker becomes a regular file, and the stuck open gets a writer, then EOF
    (store / "marker").write_bytes(b"x")
    os.replace(store / "marker", store / "probe.fifo")
    fd = os.open(handle, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO unless a reader is waiting on the old FIFO
    os.close(fd)
    wait_until(lambda: get(gw.base, "/ready")[0] == 200, "/ready to recover")
    assert threads_blocked_in_fifo_open(worker) == 0
    assert gw.stop() == 0


def test_ready_is_503_while_draining_then_the_port_closes(gateways, store):
    gw = gateways("--drain-delay", "120", store=store)
    assert get(gw.base, "/ready")[0] == 200
    gw.send(signal.SIGTERM)
    status, _, body = wait_until(lambda: (r := get(gw.base, "/ready"))[0] == 503 and r, "/ready to turn 503")
    assert json.loads(body)["reason"].startswith("draining")
    assert get(gw.base, "/health")[0] == 200  # alive, still accepting during the drain delay
    assert get(gw.base, "/hls/title_240p.mp4/master.m3u8")[0] == 200
    gw.send(signal.SIGTERM)  # a second one cuts the drain delay short
    wait_until(lambda: refused(gw.port), "the port to close")
    assert gw.proc.wait(60) == 0
