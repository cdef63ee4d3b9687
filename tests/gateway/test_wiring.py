"""Wiring through constructors: a worker's caches, metrics and connection tracker are given to the app factory, and
nothing is patched into a built Packaging, cache or app afterwards.

The reload test runs a real `gateway serve` and reads its own /status and /metrics (prometheus-client's parser); the
ground truth is the requests the test made. The static check walks the source of gateway/.
"""
from __future__ import annotations

import ast
import json
import signal
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .processes import get, wait_until
from .test_workers import write_config

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
# Attributes that are wiring: set by the constructor of their owner (Packaging, Caches, SingleFlightLRU), never later.
WIRING_ATTRIBUTES = frozenset(("observe_stage", "on_lookup", "_on_lookup", "responses", "metadata", "stats"))


def timings_and_lookups(base: str) -> dict[str, float]:
    """From /metrics: the count of every stage histogram (by stage name) and the response cache's counters."""
    status, _, body = get(base, "/metrics")
    assert status == 200
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "gateway_stage_duration_seconds_count":
                found[sample.labels["stage"]] = sample.value
            elif sample.name.startswith("gateway_response_cache_") and sample.name.endswith("_total"):
                found[sample.name.removeprefix("gateway_response_cache_").removesuffix("_total")] = sample.value
    return found


def wiring_assignments(source: str, filename: str) -> list[str]:
    """``obj.<wiring attribute> = ...`` (also augmented, annotated and tuple targets) and ``setattr(obj, "<wiring
    attribute>", ...)`` where ``obj`` is anything but ``self``: one object writing into another's wiring."""
    found = []

    def targets(node: ast.AST):
        if isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                yield from targets(element)
        elif isinstance(node, ast.Starred):
            yield from targets(node.value)
        else:
            yield node

    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Assign):
            assigned = [t for target in node.targets for t in targets(target)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            assigned = list(targets(node.target))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr"
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and node.args[1].value in WIRING_ATTRIBUTES
              and not (isinstance(node.args[0], ast.Name) and node.args[0].id == "self")):
            found.append(f"{filename}:{node.lineno}: setattr(..., {node.args[1].value!r}, ...)")
            continue
        else:
            continue
        for target in assigned:
            if (isinstance(target, ast.Attribute) and target.attr in WIRING_ATTRIBUTES
                    and not (isinstance(target.value, ast.Name) and target.value.id == "self")):
                found.append(f"{filename}:{target.lineno}: {ast.unparse(target)} = ...")
    return found


def test_the_static_check_sees_what_it_forbids():
    """The check itself: each form of patching is reported, a constructor setting its own attributes is not."""
    patched = ("packaging.observe_stage = metrics.observe_stage\n"
               "app_packaging.responses.on_lookup = print\n"
               "after.responses, after.metadata, after.stats = a, b, c\n"
               "setattr(cache, 'on_lookup', print)\n")
    assert len(wiring_assignments(patched, "patched.py")) == 6
    own = ("class Packaging:\n    def __init__(self, caches):\n        self.responses = caches.responses\n"
           "        self.observe_stage: object = None\n")
    assert wiring_assignments(own, "own.py") == []


def test_no_module_patches_wiring_after_construction():
    found = [line for path in sorted(GATEWAY.rglob("*.py"))
             for line in wiring_assignments(path.read_text(), str(path.relative_to(GATEWAY.parent)))]
    assert found == []


def test_a_reload_with_new_cache_bounds_starts_empty_and_still_reports_timings(gateways, store, tmp_path):
    """A changed segment_cache_mb gives the next generation new caches (nothing of the old contents), and those new
    caches and their packaging report their timings into the worker's metrics: the stage histograms grow."""
    config = tmp_path / "gateway.toml"
    write_config(config, store, segment_cache_mb=64)
    gw = gateways("--config", str(config))
    segment = "/hls/title_240p.mp4/seg-1.ts"
    status, _, first = get(gw.base, segment)
    assert status == 200 and get(gw.base, segment)[2] == first  # built, then a hit: the cache holds it
    cache = json.loads(get(gw.base, "/status")[2])["segment_cache"]
    assert (cache["entries"], cache["hits"], cache["capacity"]) == (1, 1, 64 << 20)

    write_config(config, store, segment_cache_mb=32)
    gw.send(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in gw.log.read_text(errors="replace"), "the reload")
    cache = json.loads(get(gw.base, "/status")[2])["segment_cache"]
    assert {k: cache[k] for k in ("capacity", "entries", "bytes", "hits", "misses", "builds")} == \
        {"capacity": 32 << 20, "entries": 0, "bytes": 0, "hits": 0, "misses": 0, "builds": 0}

    before = timings_and_lookups(gw.base)
    assert get(gw.base, segment)[2] == first  # built again: the new cache did not have it
    assert get(gw.base, segment)[2] == first  # and now a hit in the new cache
    after = timings_and_lookups(gw.base)
    cache = json.loads(get(gw.base, "/status")[2])["segment_cache"]
    assert (cache["builds"], cache["hits"], cache["entries"]) == (1, 1, 1)
    grown = {name: after.get(name, 0) - before.get(name, 0) for name in
             ("misses", "hits", "cache_lookup", "parse", "read", "mux")}
    # new metadata cache too: the file is parsed again
    assert grown == {"misses": 1, "hits": 1, "cache_lookup": 2, "parse": 1, "read": 1, "mux": 1}
    assert gw.stop() == 0
