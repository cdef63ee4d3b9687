"""`gateway bench live`: the clock source's bar code survives H.264 and rescaling exactly, and the bench run as a user
runs it (a real `gateway serve`, a real-time PyAV publisher, RTMP readers, hls.js in Chromium, a transcoded ladder)
reports coherent figures. Figures are never asserted against targets (machines differ), only their plausibility."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from gateway.tools.bench_live import latency_figures
from gateway.tools.clock_source import BLACK, CELLS, WHITE, Texture, burn, plane_array, read_code
from tests.e2e.browser_player import missing_tools

T0 = 1_765_000_000_000   # ms since the epoch, December 2025


def encoded_pictures(times: list[int], width: int, height: int, bit_rate: int) -> list:
    """The Texture pictures with ``times`` burnt in, through libx264 (zerolatency, 1-s GOP) and back (PyAV)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = width, height, "yuv420p", bit_rate
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "keyint=30:scenecut=0"}
        texture = Texture(width, height)
        for i, ms in enumerate(times):
            yuv = texture.frame(i)
            burn(yuv[:height], ms)
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buf.seek(0)
    with av.open(buf) as src:
        return list(src.decode(video=0))


def test_every_picture_reads_back_its_time_through_h264_and_the_ladders_sizes():
    """Times as a 30-fps camera stamps them, plus jumps that change every byte of the code; 720p at 1.5 Mbit/s,
    each decoded picture also scaled to 480p, 360p and 240p (the ladder's sizes): every read is exact."""
    times = [T0 + i * 33 + (i // 10) * 987_654_321 for i in range(60)]
    pictures = encoded_pictures(times, 1280, 720, 1_500_000)
    assert len(pictures) == len(times)
    for frame, ms in zip(pictures, times):
        assert read_code(plane_array(frame)) == ms
        for w, h in ((854, 480), (640, 360), (426, 240)):
            assert read_code(plane_array(frame.reformat(width=w, height=h))) == ms, (w, h)


def test_a_damaged_code_is_unreadable_never_a_wrong_time():
    luma = np.full((360, 640), 128, np.uint8)
    assert read_code(luma) is None                      # no code at all
    burn(luma, T0 + 12345)
    assert read_code(luma) == T0 + 12345
    cell = 640 / CELLS
    for index in (2, 20, 60, 70):                       # a guard cell, a time bit, a CRC bit, the end guard
        damaged = luma.copy()
        inside = damaged[:30, int(index * cell) + 1:int((index + 1) * cell) - 1]
        inside[:] = BLACK if inside[10, 2] == WHITE else WHITE     # that one cell flipped
        assert read_code(damaged) is None, index


def test_latency_figures_leave_the_warmup_out_and_measure_the_media_rate():
    # 30 fps for 20 s; latency 3 s during the first 5 s (joining), then 1 s; media advancing at real time
    shown = np.arange(600) * 1000 / 30 + T0
    latency = np.where(shown < T0 + 5000, 3000, 1000)
    f = latency_figures(np.column_stack([shown, shown - latency]).tolist(), warmup_s=5)
    assert f["pictures"] == 450 and f["p50_s"] == f["p95_s"] == f["max_s"] == 1.0
    assert f["media_rate"] == pytest.approx(1.0)
    slow = latency_figures([[T0 + i * 100, T0 + i * 50] for i in range(200)], warmup_s=0)   # falling behind
    assert slow["media_rate"] == pytest.approx(0.5) and slow["max_s"] > slow["p50_s"]


@pytest.fixture(scope="module")
def figures() -> dict:
    """15 s measured: 480p30 clock source, one rendition (240p), RTMP readers and hls.js in low-latency mode."""
    out = subprocess.run([sys.executable, "-m", "gateway", "bench", "live", "--seconds", "15", "--source", "480p30",
                          "--transcode", "240p@400k", "--players", "ll_hls", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def plausible(row: dict) -> None:
    """Glass to glass on one machine: positive, ordered, well under 30 s, the whole run read, media at real time."""
    assert row["pictures"] >= 200, row                   # >= 10 s of 30 fps after the warm-up
    assert 0 < row["min_s"] <= row["p50_s"] <= row["p95_s"] <= row["max_s"] < 30, row
    assert 0.8 < row["media_rate"] < 1.2, row
    assert row.get("unreadable", 0) <= row["pictures"] // 20, row


@pytest.mark.slow
def test_the_bench_reports_rtmp_the_rendition_and_ll_hls(figures):
    players = figures["players"]
    assert set(players) == {"rtmp", "rtmp_240p", "ll_hls"}
    plausible(players["rtmp"])
    plausible(players["rtmp_240p"])
    assert players["rtmp"]["height"] == 480 and players["rtmp_240p"]["height"] == 240
    assert players["rtmp"]["p50_s"] < 1.5                # RTMP on loopback: encoding and relay only
    if missing_tools():
        assert players["ll_hls"] == {"skipped": players["ll_hls"]["skipped"]}
        return
    ll = players["ll_hls"]
    plausible(ll)
    assert ll["heights"] == [480]
    assert ll["p50_s"] > players["rtmp"]["p50_s"]        # parts and playlists come after the RTMP messages
    # what hls.js says (live edge - position) and what the pictures say agree: the times read are the right ones
    assert abs(ll["p50_s"] - ll["player_latency_p50_s"]) < 2.0, ll


@pytest.mark.slow
def test_the_ladder_figures_come_from_the_gateway(figures):
    ladder = figures["ladder"]
    assert set(ladder["renditions"]) == {"decode", "240p"}
    row = ladder["renditions"]["240p"]
    assert 0 < row["cpu_share"] < 2 and row["cpu_rtf"] == pytest.approx(1 / row["cpu_share"], rel=0.05)
    assert row["kept_up"] is True and ladder["all_kept_up"] is True and not ladder["failed"] and ladder["ladder_at_end"]
    assert row["media_rate"] == figures["players"]["rtmp_240p"]["media_rate"]
    assert figures["publisher"]["frames"] > 30 * 25      # the publisher ran through the whole run
