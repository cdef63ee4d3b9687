"""Audience analytics through the app (issue 18): what the response hook records from real requests, what
``GET /api/v1/analytics``, ``/metrics`` and ``/status/audience`` answer, and that no CMCD a client sends can change a
response. Processes, workers, reloads and the pool: tests/gateway/test_analytics_pool.py; real players:
tests/e2e/test_cmcd_players.py."""
from __future__ import annotations

import json
import re
import time

import m3u8
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.http.admin_api import make_admin_app
from gateway.http.app import make_app
from gateway.settings import Settings

TOKEN = "t" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
          "Safari/537.36")
SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/18.1 Safari/605.1.15")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


@pytest.fixture
async def pair(store):
    """(public client, admin client) of one app; the catalog has partner 7 with entry 0_cat00001 over title_240p.mp4."""
    clients = []

    async def make(**overrides):
        # one-hour "minutes": a test never straddles two, so per-minute counts are the test's totals
        overrides.setdefault("analytics_bucket_seconds", 3600)
        app = make_app(Settings(store=store, admin_token=TOKEN, **overrides))
        public = TestClient(TestServer(app))
        admin = TestClient(TestServer(make_admin_app(lambda: app)))
        for c in (public, admin):
            await c.start_server()
            clients.append(c)
        return public, admin

    yield make
    for c in clients:
        await c.close()


async def analytics(admin: TestClient, **params) -> dict:
    r = await admin.get("/api/v1/analytics", params={k: str(v) for k, v in params.items()}, headers=AUTH)
    assert r.status == 200, await r.text()
    return await r.json()


def stream_of(body: dict, name: str) -> dict:
    found = [s for s in body["streams"] if s["stream"] == name]
    assert len(found) == 1, [s["stream"] for s in body["streams"]]
    return found[0]


async def fetch(client: TestClient, path: str, **kwargs) -> tuple[int, int]:
    r = await client.get(path, **kwargs)
    return r.status, len(await r.read())


async def test_sessions_renditions_players_and_bytes_are_what_was_requested(pair):
    public, admin = await pair()
    text = await (await public.get("/hls/title_360p.mp4/index-v1-a1.m3u8")).read()
    sent = len(text)
    playlist = m3u8.loads(text.decode())
    uris = [seg.uri for seg in playlist.segments][:3]
    assert len(uris) >= 2
    # player A: CMCD in the query, rendition 800; player B: headers, 400; player C: no CMCD (estimated from client)
    for uri in uris:
        status, n = await fetch(public, f"/hls/title_360p.mp4/{uri}",
                                params={"CMCD": 'br=800,bl=12000,mtp=25000,ot=av,sid="player-a"'},
                                headers={"User-Agent": CHROME})
        assert status == 200
        sent += n
    for uri in uris[:2]:
        status, n = await fetch(public, f"/hls/title_360p.mp4/{uri}", headers={
            "User-Agent": SAFARI, "CMCD-Session": 'sid="player-b"', "CMCD-Object": "br=400,ot=av",
            "CMCD-Status": "bs"})
        sent += n
    status, n = await fetch(public, f"/hls/title_360p.mp4/{uris[0]}", headers={"User-Agent": FIREFOX})
    sent += n

    body = await analytics(admin, stream="file:title_360p.mp4")
    s = stream_of(body, "file:title_360p.mp4")
    # the media playlist fetched above without CMCD counts too: it came from the test client (no UA: "other")
    assert s["totals"]["sessions"] == 4
    [minute] = s["minutes"]
    # player C's segment came without br: "unknown"; the playlist fetch requested no media, no rendition
    assert minute["by_rendition"] == {"800": 1, "400": 1, "unknown": 1}
    assert minute["by_player"] == {"Chrome": 1, "Safari": 1, "Firefox": 1, "other": 1}
    assert (s["totals"]["bytes"], minute["bytes"], s["totals"]["requests"]) == (sent, sent, 1 + len(uris) + 2 + 1)
    assert minute["rebuffer"]["events"] == 2 and minute["rebuffer"]["sessions"] == 1
    # without CMCD: the playlist and player C's segment
    assert (minute["estimated_requests"], minute["cmcd_requests"]) == (2, len(uris) + 2)


async def test_bytes_are_exact_and_the_fast_path_counts(pair):
    public, admin = await pair()
    total = 0
    for _ in range(3):  # the second and third answers come from the fast path (gateway/http/fast_path.py)
        status, n = await fetch(public, "/hls/title_240p.mp4/master.m3u8", params={"CMCD": 'ot=m,sid="s1"'})
        assert status == 200
        total += n
    status, n = await fetch(public, "/dash/title_240p.mp4/manifest.mpd", params={"CMCD": 'ot=m,sid="s1"'})
    total += n
    head = await public.head("/hls/title_240p.mp4/master.m3u8", params={"CMCD": 'ot=m,sid="s1"'})
    assert head.status == 200  # a HEAD sends no body: 0 bytes
    s = stream_of(await analytics(admin), "file:title_240p.mp4")
    assert (s["totals"]["sessions"], s["totals"]["requests"], s["totals"]["bytes"]) == (1, 5, total)


async def test_catalog_entries_are_streams_of_their_partner(pair, store):
    catalog = store / ".catalog"
    (catalog / "partners").mkdir(parents=True)
    (catalog / "entries").mkdir()
    (catalog / "partners" / "7.json").write_text(json.dumps({"id": 7, "name": "p7", "secret": "ab" * 32}))
    (catalog / "entries" / "0_cat00001.json").write_text(json.dumps(
        {"id": "0_cat00001", "partner_id": 7, "name": "cat", "secured": False,
         "flavors": [{"id": "0_fl000001", "path": "title_180p.mp4"}]}))
    public, admin = await pair()
    status, _ = await fetch(public, "/hls/title_180p.mp4/master.m3u8", params={"CMCD": 'sid="x"'})
    assert status == 200
    await fetch(public, "/hls/title_240p.mp4/master.m3u8", params={"CMCD": 'sid="x"'})
    body = await analytics(admin, partner=7)
    assert [s["stream"] for s in body["streams"]] == ["entry:0_cat00001"]
    assert body["streams"][0]["partner"] == 7
    every = await analytics(admin, top=10)
    assert {s["stream"] for s in every["streams"]} == {"entry:0_cat00001", "file:title_240p.mp4"}


async def test_no_raw_session_id_or_address_leaves_the_node(pair):
    public, admin = await pair()
    await fetch(public, "/hls/title_240p.mp4/master.m3u8", params={"CMCD": 'sid="secret-session-id-42"'})
    await fetch(public, "/hls/title_240p.mp4/master.m3u8", headers={"User-Agent": "agent-xyz",
                                                                   "X-Forwarded-For": "203.0.113.77"})
    r = await admin.get("/api/v1/analytics", params={"raw": "1"}, headers=AUTH)
    text = await r.text()
    assert r.status == 200 and json.loads(text)["format"] == 1
    for secret in ("secret-session-id-42", "203.0.113.77", "agent-xyz", "127.0.0.1"):
        assert secret not in text
    summary = await (await admin.get("/api/v1/analytics", headers=AUTH)).text()
    assert "secret-session-id-42" not in summary and "203.0.113.77" not in summary
    assert stream_of(json.loads(summary), "file:title_240p.mp4")["totals"]["sessions"] == 2


HOSTILE = [
    {"params": {"CMCD": "br=abc,bl=-5,mtp=99999999999999999999,ot=zz,sid=unquoted,su=maybe"}},
    {"params": {"CMCD": "x" * 10_000}},
    {"params": {"CMCD": '"' * 500 + ",,,=,=\\"}},
    {"params": {"CMCD": ",".join(f"k{i}={i}" for i in range(500))}},
    {"headers": {"CMCD-Request": "bl=" + "9" * 5000, "CMCD-Object": "br=1e9,ot=v,d=-1",
                 "CMCD-Status": "bs=banana", "CMCD-Session": 'sid="' + "s" * 2000 + '"'}},
    {"headers": {"CMCD-Session": "sid=\u00e9\u00ff", "CMCD-Object": "ot=v,ot=a,ot=m", "CMCD-Request": "nrr=9-1"}},
    {"headers": {"CMCD-Object": "a" * 10_000}},  # a 10 KB header
    {"headers": {"CMCD-Object": "br=800,xyz=1,com.example-key=\"v\",future-key"}},  # unknown keys
]


@pytest.mark.parametrize("request_kwargs", HOSTILE)
async def test_malformed_cmcd_never_changes_a_response(pair, request_kwargs):
    public, admin = await pair()
    for path in ("/hls/title_240p.mp4/master.m3u8", "/hls/title_240p.mp4/seg-1-v1-a1.ts",
                 "/hls/title_240p.mp4/seg-999-v1-a1.ts", "/dash/title_240p.mp4/manifest.mpd"):
        clean = await public.get(path)
        clean_body = await clean.read()
        dirty = await public.get(path, **request_kwargs)
        assert (dirty.status, await dirty.read()) == (clean.status, clean_body), path
        assert dirty.headers.get("Content-Type") == clean.headers.get("Content-Type")
    body = await analytics(admin, stream="file:title_240p.mp4")
    [minute] = body["streams"][0]["minutes"]
    assert (minute["requests"], minute["errors"]) == (8, 2)  # seg-999 is past the end: 404 both times


async def test_metrics_show_the_current_minute_with_bounded_labels(pair):
    public, admin = await pair(analytics_metrics_streams=2)
    files = ("title_360p.mp4", "title_240p.mp4", "title_180p.mp4", "two_audio.mp4")
    for i, name in enumerate(files):
        for sid in range(len(files) - i):  # 4, 3, 2, 1 sessions
            await fetch(public, f"/hls/{name}/master.m3u8", params={"CMCD": f'sid="s{i}-{sid}",br={100 + sid}'})
    text = await (await public.get("/metrics")).text()
    sessions = dict(re.findall(r'^gateway_audience_sessions\{stream="([^"]+)"\} (\d+)$', text, re.MULTILINE))
    assert sessions == {"file:title_360p.mp4": "4", "file:title_240p.mp4": "3", "other": "3"}
    streams = set(re.findall(r'^gateway_audience_\w+\{stream="([^"]+)"', text, re.MULTILINE))
    assert streams == {"file:title_360p.mp4", "file:title_240p.mp4", "other"}


async def test_status_page_data(pair):
    public, _ = await pair()
    await fetch(public, "/hls/title_240p.mp4/master.m3u8", params={"CMCD": 'sid="a"'})
    r = await public.get("/status/audience")
    body = await r.json()
    assert r.status == 200 and body["enabled"] is True
    assert stream_of(body, "file:title_240p.mp4")["totals"]["sessions"] == 1


async def test_collection_off(pair):
    public, admin = await pair(analytics=False)
    await fetch(public, "/hls/title_240p.mp4/master.m3u8", params={"CMCD": 'sid="a"'})
    r = await admin.get("/api/v1/analytics", headers=AUTH)
    assert r.status == 404 and "analytics are off" in (await r.json())["message"]
    assert "gateway_audience" not in await (await public.get("/metrics")).text()
    assert (await (await public.get("/status/audience")).json())["enabled"] is False


@pytest.mark.parametrize("params, field", [
    ({"top": "0"}, "top"), ({"top": "x"}, "top"), ({"partner": "-1"}, "partner"), ({"from": "yesterday"}, "from"),
    ({"from": "2026-12-07T03:00:00"}, "from"), ({"from": "200", "to": "100"}, "to"), ({"scope": "world"}, "scope"),
    ({"stream": "x" * 301}, "stream"), ({"bogus": "1"}, "bogus"), ({"from": "nan"}, "from"), ({"to": "inf"}, "to"),
    ({"from": "1e308"}, "from"), ({"from": "-inf"}, "from"),
])
async def test_bad_queries_are_400_naming_the_parameter(pair, params, field):
    _, admin = await pair()
    r = await admin.get("/api/v1/analytics", params=params, headers=AUTH)
    body = await r.json()
    assert (r.status, body["error"], body.get("field")) == (400, "INVALID", field)


async def test_from_and_to_select_minutes(pair):
    public, admin = await pair(analytics_bucket_seconds=3600)
    await fetch(public, "/hls/title_240p.mp4/master.m3u8", params={"CMCD": 'sid="a"'})
    now = await analytics(admin)
    t = stream_of(now, "file:title_240p.mp4")["minutes"][0]["t"]
    assert (await analytics(admin, **{"from": t, "to": t + 3599}))["streams"]
    assert not (await analytics(admin, **{"from": t + 3600}))["streams"]
    assert not (await analytics(admin, to=t - 1))["streams"]
    iso = await analytics(admin, **{"from": "1970-01-01T00:00:00Z"})
    assert stream_of(iso, "file:title_240p.mp4")["totals"]["sessions"] == 1


async def test_requires_the_admin_token(pair):
    _, admin = await pair()
    assert (await admin.get("/api/v1/analytics")).status == 401
    assert (await admin.get("/api/v1/analytics", headers={"Authorization": "Bearer " + "w" * 24})).status == 403



@pytest.mark.parametrize("query_string, value", [
    ("CMCD=br%3D800%2Csid%3D%22a%22", 'br=800,sid="a"'), ("x=1&CMCD=ot%3Dm&y=2", "ot=m"), ("xCMCD=1", None),
    ("xCMCD=1&CMCD=bs", "bs"), ("CMCD=", ""), ("a=b", None), ("CMCD=br=1,bs", "br=1,bs"),
])
def test_the_cmcd_argument_is_cut_from_the_raw_query(query_string, value):
    from urllib.parse import parse_qs

    from gateway.ops.audience_node import cmcd_query

    assert cmcd_query(query_string) == value
    if value:  # what a full query parser finds
        assert parse_qs(query_string, keep_blank_values=True)["CMCD"] == [value]


async def test_public_audience_answers_are_shared_and_bounded(pair):
    """/status/audience and /metrics are public: however often they are asked, the node gathers and summarises
    at most once a second per kind of answer, and a hostile ``minutes`` is the default, never an error."""
    import asyncio

    from gateway.ops.audience_node import AUDIENCE

    public, _ = await pair()
    await fetch(public, "/hls/title_240p.mp4/master.m3u8", params={"CMCD": 'sid="a"'})
    node = public.server.app[AUDIENCE]
    calls = []
    gather = node.node_export

    async def counted(query):
        calls.append(query)
        return await gather(query)

    node.node_export = counted
    answers = await asyncio.gather(*(public.get("/status/audience") for _ in range(20)))
    assert {r.status for r in answers} == {200} and len(calls) == 1
    for minutes in ("9" * 5000, "-1", "abc", "0"):
        r = await public.get("/status/audience", params={"minutes": minutes})
        assert r.status == 200 and len(calls) == 1  # the default (60), as already computed
    for _ in range(5):
        assert "gateway_audience_sessions" in await (await public.get("/metrics")).text()
    assert len(calls) == 2
    await asyncio.sleep(1.1)
    assert (await public.get("/status/audience")).status == 200 and len(calls) == 3


async def test_requests_are_counted_in_batches_within_a_second_and_keep_their_times(pair):
    """The hook batches requests (identical ones counted once with their number): a batch reaches the worker's
    minutes within BATCH_SECONDS with no read to force it, and a startup is timed from each request's own time."""
    import asyncio

    from gateway.ops.audience_node import AUDIENCE, BATCH_SECONDS

    public, admin = await pair()
    node = public.server.app[AUDIENCE]
    cmcd = {"CMCD": 'ot=m,sid="batched"'}
    text = await (await public.get("/hls/title_240p.mp4/index.m3u8", params=cmcd)).text()
    for _ in range(4):
        assert (await fetch(public, "/hls/title_240p.mp4/index.m3u8", params=cmcd))[0] == 200
    assert node.audience.counters["records"] == 0  # held in the batch: nothing read the audience yet
    await asyncio.sleep(0.3)
    segment = next(line for line in text.splitlines() if line and not line.startswith("#"))
    assert (await fetch(public, f"/hls/title_240p.mp4/{segment}", params={"CMCD": 'ot=av,sid="batched"'}))[0] == 200
    await asyncio.sleep(BATCH_SECONDS + 0.3)
    assert node.audience.counters["records"] == 6  # counted by the batch's timer
    s = stream_of(await analytics(admin), "file:title_240p.mp4")
    assert (s["totals"]["sessions"], s["totals"]["requests"]) == (1, 6)
    startup = s["minutes"][-1]["startup_seconds"]
    assert startup["count"] == 1 and 0.3 <= startup["mean"] < 1.0, startup  # first playlist → first segment


async def test_a_repeated_request_after_a_minute_ends_is_counted_in_the_new_minute(pair):
    """Identical requests share a batch entry only within one minute: the same playlist asked for again once the
    minute has ended is counted in the new one, not filed with its twin of the minute before (the batch's timer
    only counts it up to a second later)."""
    import asyncio

    public, admin = await pair(analytics_bucket_seconds=1)
    cmcd = {"CMCD": 'ot=m,sid="straddle"'}
    for turn in range(3):
        await asyncio.sleep(1.0 - time.time() % 1.0 + 0.05)  # just after a "minute" (here a second) begins
        for _ in range(2):
            assert (await fetch(public, "/hls/title_240p.mp4/index.m3u8", params=cmcd))[0] == 200
    s = stream_of(await analytics(admin), "file:title_240p.mp4")
    assert [m["requests"] for m in s["minutes"]] == [2, 2, 2], s["minutes"]


async def test_oversized_cmcd_is_counted_but_never_remembered(pair):
    """Kilobytes of CMCD (a hostile client) are parsed for each request and batched under the report's identity:
    neither the parse memo nor a batch key holds the strings, and the requests still count as they came."""
    from gateway.ops.audience_node import AUDIENCE, MEMO_KEY_CHARS

    public, admin = await pair()
    node = public.server.app[AUDIENCE]
    for i in range(5):
        headers = {"CMCD-Request": f"bl={i}" + ",x" * MEMO_KEY_CHARS, "CMCD-Session": 'sid="big"'}
        assert (await fetch(public, "/hls/title_240p.mp4/master.m3u8", headers=headers))[0] == 200
    assert await fetch(public, "/hls/title_240p.mp4/master.m3u8", params={"CMCD": 'sid="small"'})
    assert len(node._reports) == 1  # the small one only
    assert max(len(str(group)) for group in node._batch) < MEMO_KEY_CHARS
    s = stream_of(await analytics(admin), "file:title_240p.mp4")
    assert (s["totals"]["sessions"], s["totals"]["requests"]) == (2, 6)
