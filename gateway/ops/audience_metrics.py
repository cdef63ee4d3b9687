"""The current minute's audience on ``/metrics``: a few gauges per stream, in the Prometheus text format.

The values are the node's (every worker's minutes merged, gateway/ops/audience_node.py), so that Prometheus can sum
them across the pool. Label values are bounded whatever clients send: the ``streams`` busiest streams by name and
the rest summed as ``stream="other"``, at most ``RENDITIONS`` renditions per stream (the rest as ``"other"``), and
players from a fixed list. ``other`` sums sessions, so a session that watched two of those streams counts twice
there (each named stream counts it once). The minute is the current one, still open: values grow until it closes.
"""
from __future__ import annotations

from collections import Counter

RENDITIONS = 8
_GAUGES = (
    ("sessions", "sessions", "Sessions (CMCD sid, else client) that requested the stream in the current minute"),
    ("bytes", "bytes", "Body bytes sent for the stream in the current minute"),
    ("requests", "requests", "Manifest and segment requests of the stream in the current minute"),
    ("errors", "errors", "Responses >= 400 for the stream in the current minute"),
    ("rebuffer_events", "rebuffer_events", "Segment requests whose CMCD said the buffer ran dry (bs) in the current "
                                           "minute"),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fold(counts: Counter, keep: int) -> Counter:
    if len(counts) <= keep:
        return counts
    kept = Counter(dict(counts.most_common(keep)))
    kept["other"] += sum(counts.values()) - sum(kept.values())
    return kept


def exposition(summary: dict, streams: int) -> str:
    """Text-format lines for the current minute's ``summary`` (gateway/ops/audience.py ``summarize`` of that minute
    only, every stream): the ``streams`` busiest by sessions by name, the others as ``other``."""
    rows = []
    for s in summary.get("streams", ()):
        minute = s["minutes"][-1] if s.get("minutes") else None
        if minute is None:
            continue
        rows.append((s["stream"], minute))
    rows.sort(key=lambda r: (-r[1]["sessions"], -r[1]["bytes"], r[0]))
    named, rest = rows[:streams], rows[streams:]
    values: list[tuple[str, dict]] = [(name, _values(m)) for name, m in named]
    if rest:
        total: dict = {}
        for _, m in rest:
            for key, value in _values(m).items():
                total[key] = total[key] + value if key in total else value
        values.append(("other", total))
    out = []
    for key, name, text in _GAUGES:
        out += [f"# HELP gateway_audience_{name} {text}", f"# TYPE gateway_audience_{name} gauge"]
        out += [f'gateway_audience_{name}{{stream="{_escape(s)}"}} {v[key]}' for s, v in values]
    out += ["# HELP gateway_audience_rendition_sessions Sessions per rendition (CMCD br, kbps) in the current minute",
            "# TYPE gateway_audience_rendition_sessions gauge"]
    out += [f'gateway_audience_rendition_sessions{{stream="{_escape(s)}",rendition="{_escape(r)}"}} {n}'
            for s, v in values for r, n in sorted(_fold(v["renditions"], RENDITIONS).items())]
    out += ["# HELP gateway_audience_player_sessions Sessions per player or browser in the current minute",
            "# TYPE gateway_audience_player_sessions gauge"]
    out += [f'gateway_audience_player_sessions{{stream="{_escape(s)}",player="{_escape(p)}"}} {n}'
            for s, v in values for p, n in sorted(v["players"].items())]
    return "\n".join(out) + "\n"


def _values(minute: dict) -> dict:
    return {"sessions": minute["sessions"], "bytes": minute["bytes"], "requests": minute["requests"],
            "errors": minute["errors"], "rebuffer_events": minute["rebuffer"]["events"],
            "renditions": Counter(minute["by_rendition"]), "players": Counter(minute["by_player"])}
