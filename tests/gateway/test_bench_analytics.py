"""`gateway bench analytics` as a user runs it: a real subprocess, two real servers, real load, JSON checked for
coherence. Figures are never asserted (machines differ): only that both modes of both targets were loaded, that each
printed ratio is made of the printed figures, and that the on server collected while the off one did not."""
from __future__ import annotations

import json
import subprocess
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.ops.cmcd import parse_cmcd
from gateway.tools.bench_analytics import SESSIONS, TARGET_DROP, TARGETS, cmcd_paths, render, session_ids

from .test_bench_http import bench_file_cached, gateway_command

ROUNDS = 2

# ~15 s once the 720p file is cached; its first encode takes ~2 min
pytestmark = [] if bench_file_cached() else [pytest.mark.slow]


@pytest.fixture(scope="module")
def figures() -> dict:
    out = subprocess.run(gateway_command() + ["bench", "analytics", "--seconds", "0.5", "--rounds", str(ROUNDS),
                                              "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_both_modes_of_both_targets_were_loaded_in_alternating_rounds(figures):
    assert set(figures["targets"]) == set(TARGETS)
    for target, f in figures["targets"].items():
        for mode in ("on", "off"):
            m = f[mode]
            assert len(m["rate_passes"]) == len(m["cpu_passes"]) == ROUNDS, (target, mode)
            assert m["requests"] > 0 and m["server_core_busy"] > 0, (target, mode, m)
            assert m["req_per_s"] == max(m["rate_passes"]) > 0, (target, mode)  # best pass
            assert m["cpu_us_per_request"] == min(m["cpu_passes"]) > 0, (target, mode)  # least CPU
        assert f["order"] == ["on", "off", "off", "on"], target  # the order flips every round
    assert figures["setup"]["rounds"] == ROUNDS and figures["setup"]["sessions"] == SESSIONS


def test_each_ratio_is_made_of_the_printed_figures(figures):
    for target, f in figures["targets"].items():
        on, off = f["on"], f["off"]
        assert f["rate_ratio"] == pytest.approx(on["req_per_s"] / off["req_per_s"]), target
        assert f["cpu_ratio"] == pytest.approx(off["cpu_us_per_request"] / on["cpu_us_per_request"]), target
        assert f["cpu_overhead_us_per_request"] == pytest.approx(on["cpu_us_per_request"] - off["cpu_us_per_request"])
        paired = sorted(a / b for a, b in zip(on["rate_passes"], off["rate_passes"]))
        assert f["rate_ratio_paired_median"] == pytest.approx(sum(paired) / 2), target  # median of two
        assert f["drop"] == pytest.approx({"rate": 1 - f["rate_ratio"], "cpu": 1 - f["cpu_ratio"]}), target
        assert f["target_met"] == {k: v < TARGET_DROP for k, v in f["drop"].items()}, target
        # the hook's own time, measured inside the on server: a few to tens of µs, never more than a request costs
        assert 0 < f["record_us_per_request"] < on["cpu_us_per_request"], target
        assert f["record_share"] == pytest.approx(f["record_us_per_request"] / off["cpu_us_per_request"]), target


def test_the_on_server_collected_every_cmcd_session_and_the_off_server_nothing(figures):
    on, off = figures["collected"]["on"], figures["collected"]["off"]
    assert on["enabled"] and on["streams"] == 1 and on["sessions"] == SESSIONS, on  # sids, no client estimate
    loaded = sum(figures["targets"][t]["on"]["requests"] for t in TARGETS)
    assert on["requests"] >= loaded, (on, loaded)  # the server may answer a few the client stopped counting
    # every request went through the CMCD parser and the User-Agent rules: hls.js in Chrome, every key valid
    assert on["cmcd_requests"] == on["requests"] and on["estimated_requests"] == on["cmcd_invalid"] == 0, on
    assert on["players"] == ["Chrome"], on
    assert off == {"enabled": False, "streams": 0, "sessions": 0, "requests": 0, "cmcd_requests": 0,
                   "estimated_requests": 0, "cmcd_invalid": 0, "players": []}
    for target in TARGETS:
        assert "?CMCD=" in figures["setup"]["urls"][target], target


def test_the_text_report_shows_every_figure(figures):
    text = render(figures)
    for target, f in figures["targets"].items():
        block = text.split(f"{target}:\n", 1)[1]
        for mode in ("on", "off"):
            assert f"analytics {mode}" in block and f"{f[mode]['req_per_s']:,.0f} req/s" in block, (target, mode)
            assert f"{f[mode]['cpu_us_per_request']:,.1f} us CPU/req" in block, (target, mode)
        assert f"rate {f['rate_ratio']:.3f}" in block and f"CPU {f['cpu_ratio']:.3f}" in block, target
        assert f"({f['cpu_overhead_us_per_request']:+,.1f} us/req)" in block, target
        assert f"{f['record_us_per_request']:.1f} us per request = {f['record_share']:.1%}" in block, target


@pytest.mark.parametrize("target", TARGETS)
def test_the_load_urls_carry_hls_js_cmcd_that_the_gateway_parses(target):
    """The bench's query, decoded by the standard library and parsed by the gateway's CMCD parser, gives one session
    per URL, every key valid."""
    sids = session_ids()
    assert len(set(sids)) == SESSIONS and session_ids() == sids  # distinct, and the same every run
    for sid, url in zip(sids, cmcd_paths("/hls/x.mp4/seg-2-v1-a1.ts", target, sids)):
        (query,) = parse_qs(urlsplit(url).query)["CMCD"]
        report = parse_cmcd(query, {})
        assert report.present and report.invalid == 0 and report.unknown == 0, (url, report)
        assert report.values["sid"] == sid
        assert report.values["ot"] == ("v" if target == "cached_ts_segment" else "m")
        assert report.values["mtp"] == 25400
        if target == "cached_ts_segment":
            assert (report.values["br"], report.values["bl"]) == (800, 21300)
