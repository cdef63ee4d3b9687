"""The admin API (/api/v1/) of a real `gateway serve`: its own loopback listener with a bearer token, catalog CRUD
with the CLI's validation (what it writes is what the public port then enforces), paging and filters, the delivery
decision, live streams from a real ffmpeg publish, the effective config with secrets redacted, and an OpenAPI
document that matches the routes and validates every answer (jsonschema)."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import jsonschema
import pytest

from fixtures.generate import fixture_path
from gateway.http.admin_api import make_admin_app
from gateway.http.admin_openapi import openapi_document
from tests.e2e.conftest import free_port

from .processes import get, wait_until

TOKEN = "admin-token-for-tests-0123456789"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


class Admin:
    def __init__(self, base: str, token: str | None = TOKEN):
        self.base, self.token = base, token

    def __call__(self, method: str, path: str, body=None, schema: str | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                status, doc = r.status, json.load(r)
        except urllib.error.HTTPError as e:
            status, doc = e.code, json.load(e)
        validate(method, path, status, doc)
        return status, doc


def validate(method: str, path: str, status: int, doc: dict) -> None:
    """The answer against the OpenAPI document's schema for this path, method and status."""
    spec = openapi_document()
    route = path.split("?")[0]
    for pattern, item in spec["paths"].items():
        parts, got = pattern.split("/"), route.split("/")
        if len(parts) == len(got) and all(p.startswith("{") or p == g for p, g in zip(parts, got)):
            answer = item[method.lower()]["responses"].get(str(status))
            assert answer is not None, f"{method} {pattern}: status {status} is not documented ({doc})"
            schema = answer.get("content", {}).get("application/json", {}).get("schema")
            if schema:
                jsonschema.validate(doc, {**schema, "components": spec["components"]})
            return
    raise AssertionError(f"{method} {route} is not in the OpenAPI document")


@pytest.fixture
def admin_gateway(gateways, store, tmp_path):
    shutil.copyfile(fixture_path("title_360p.mp4"), store / "long.mp4")
    port, rtmp = free_port(), free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(f'store = "{store}"\nadmin_token = "{TOKEN}"\nadmin_port = {port}\nrtmp_port = {rtmp}\n'
                      f'catalog_ttl = 0.1\n')
    gw = gateways("--config", str(config), "--workers", "2")
    gw.admin, gw.rtmp_port = Admin(f"http://127.0.0.1:{port}"), rtmp
    wait_until(lambda: _up(port), "the admin listener")
    return gw


def _up(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=2)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def test_the_token_guards_it_and_the_public_port_never_serves_it(admin_gateway):
    admin = admin_gateway.admin
    assert Admin(admin.base, None)("GET", "/api/v1/partners")[0] == 401
    assert Admin(admin.base, "x" * 32)("GET", "/api/v1/partners") == (403, {"error": "FORBIDDEN",
                                                                            "message": "wrong token"})
    assert get(admin_gateway.base, "/api/v1/partners", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 404
    status, config = admin("GET", "/api/v1/config")
    assert status == 200 and config["settings"]["admin_token"] == "<redacted>"
    assert TOKEN not in json.dumps(config)


def test_catalog_crud_with_the_clis_validation_enforced_on_the_public_port(admin_gateway, store):
    admin, public = admin_gateway.admin, admin_gateway.base
    status, partner = admin("POST", "/api/v1/partners", {"id": 101, "name": "Acme"})
    assert status == 201 and partner["secret"].startswith("*")
    assert admin("POST", "/api/v1/partners", {"id": 101, "name": "again"})[0] == 409
    status, error = admin("POST", "/api/v1/partners", {"id": 102, "name": "x", "secret": "short"})
    assert (status, error["field"]) == (422, "secret")
    for i in range(3):
        assert admin("POST", "/api/v1/partners", {"id": 200 + i, "name": f"P{i}"})[0] == 201
    status, page = admin("GET", "/api/v1/partners?offset=1&limit=2")
    assert [p["id"] for p in page["items"]] == [200, 201] and page["total"] == 4
    assert admin("PATCH", "/api/v1/partners/101", {"name": "Acme Media"})[1]["name"] == "Acme Media"
    assert admin("PATCH", "/api/v1/partners/101", {"colour": "red"})[1]["field"] == "colour"
    # entries: probed like `gateway entries add` (a text file is refused unless force)
    (store / "text.mp4").write_text("not a movie\n" * 40)
    status, error = admin("POST", "/api/v1/entries", {"id": "0_api00001", "partner_id": 101, "name": "bad",
                                                      "flavors": [{"path": "text.mp4"}]})
    assert (status, error["field"]) == (422, "flavors[0].path") and "cannot be served" in error["message"]
    status, written = admin("POST", "/api/v1/entries", {"id": "0_api00001", "partner_id": 101, "name": "Long",
                                                        "flavors": [{"path": "long.mp4"}]})
    assert status == 201 and written["warnings"] == [] and written["entry"]["flavors"][0]["id"].startswith("0_")
    assert get(public, "/hls/long.mp4/master.m3u8")[0] == 200
    status, written = admin("PATCH", "/api/v1/entries/0_api00001", {"secured": True})
    assert status == 200 and written["entry"]["secured"]
    wait_until(lambda: get(public, "/hls/long.mp4/master.m3u8")[0] == 403, "the public port to enforce it")
    status, entries = admin("GET", "/api/v1/entries?q=long&secured=true&partner_id=101")
    assert [e["id"] for e in entries["items"]] == ["0_api00001"]
    assert admin("GET", "/api/v1/entries?secured=false")[1]["items"] == []
    status, detail = admin("GET", "/api/v1/entries/0_api00001")
    assert detail["needs_signing"] and detail["shares_files_with"] == []
    status, decision = admin("GET", f"/api/v1/entries/0_api00001/delivery?user_agent={urllib.parse.quote(IPHONE)}")
    assert status == 200 and decision["delivery_type"] == "hls" and decision["signed"]
    status, error = admin("DELETE", "/api/v1/partners/101")
    assert status == 409 and "still has 1 entry (0_api00001)" in error["message"]
    assert admin("DELETE", "/api/v1/entries/0_api00001") == (200, {"removed": "0_api00001"})
    assert admin("GET", "/api/v1/entries/0_api00001")[0] == 404
    wait_until(lambda: get(public, "/hls/long.mp4/master.m3u8")[0] == 200, "the entry's removal")
    assert admin("DELETE", "/api/v1/partners/101")[1] == {"removed": 101, "entries_removed": []}
    assert admin("GET", "/api/v1/partners/101")[0] == 404
    assert admin("POST", "/api/v1/partners", b"[1]".decode())[0] == 400  # not an object


def test_live_streams_from_a_real_publish(admin_gateway, store):
    admin = admin_gateway.admin
    ffmpeg = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop",
                               "-1", "-i", str(fixture_path("title_180p.mp4")), "-c", "copy", "-f", "flv",
                               f"rtmp://127.0.0.1:{admin_gateway.rtmp_port}/live/cam"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "live/cam" in admin("GET", "/api/v1/live/streams")[1]["streams"], "the stream listed")
        status, stream = admin("GET", "/api/v1/live/streams/live/cam")
        assert status == 200 and stream["publisher"]
        assert admin("GET", "/api/v1/live/streams/live/nope")[0] == 404
        status, started = admin("POST", "/api/v1/live/streams/live/cam/record/start")
        assert status == 200 and started["recording"] and started["path"].startswith("recordings/live/cam-")
        time.sleep(1.5)
        status, stopped = admin("POST", "/api/v1/live/streams/live/cam/record/stop")
        assert status == 200 and stopped["path"] == started["path"]
        wait_until(lambda: (store / started["path"]).exists(), "the finished recording")
        assert admin("POST", "/api/v1/live/streams/live/cam/drop") == (200, {"dropped": 1})
        ffmpeg.wait(60)
    finally:
        ffmpeg.kill()
        ffmpeg.wait()
    assert admin("GET", "/api/v1/cache")[1]["responses"]


def test_the_openapi_document_matches_the_routes():
    app = make_admin_app(lambda: None)
    routed = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    routed = {(m, p.replace("{action:start|stop}", "{action}")) for m, p in routed}
    documented = {(method.upper(), path) for path, item in openapi_document()["paths"].items()
                  for method in item if method != "parameters"}
    assert routed == documented
    jsonschema.Draft202012Validator.check_schema(openapi_document()["components"]["schemas"]["Entry"])


def test_a_purge_reaches_every_worker(gateways, store, tmp_path):
    """Two workers each hold a segment in their response cache (the access log says hit, with their pids); a purge
    through the API (served by worker 0) makes both build it again (miss), and both log what they dropped."""
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(f'store = "{store}"\nadmin_token = "{TOKEN}"\nadmin_port = {port}\n'
                      'access_log_format = "json"\n')
    gw = gateways("--config", str(config), "--workers", "2")
    wait_until(lambda: _up(port), "the admin listener")
    admin = Admin(f"http://127.0.0.1:{port}")
    url = "/hls/title_240p.mp4/seg-1.ts"

    def results() -> dict[int, list[str]]:
        """Per worker pid, in its own order: "hit"/"miss" of each request for the segment, "purged" where it
        logged the purge (a process writes its lines in order; across processes they interleave)."""
        found: dict[int, list[str]] = {}
        for line in gw.log.read_text().splitlines():
            doc = json.loads(line) if line.startswith("{") else {}
            if doc.get("path") == url:
                found.setdefault(doc["pid"], []).append(doc["cache"])
            elif doc.get("message", "").startswith("cache purge: worker"):
                found.setdefault(doc["pid"], []).append("purged")
        return found

    def both_hit() -> bool:
        assert get(gw.base, url)[0] == 200  # a fresh connection: the kernel picks the worker
        found = results()
        return len(found) == 2 and all("hit" in r for r in found.values())

    wait_until(both_hit, "both workers to hold the segment")
    assert admin("POST", "/api/v1/cache/purge", {"paths": ["title_240p.mp4"]}) == \
        (202, {"purging": ["title_240p.mp4"]})

    def both_missed() -> bool:
        assert get(gw.base, url)[0] == 200
        after = {pid: r[r.index("purged") + 1:] for pid, r in results().items() if "purged" in r}
        return len(after) == 2 and all(a for a in after.values())

    wait_until(both_missed, "a request to each worker after its purge")
    assert all(r[r.index("purged") + 1] == "miss" for r in results().values())  # built again, not served stale
    assert "dropped 1 response(s), 1 parsed file(s), 1 plan(s) of title_240p.mp4" in gw.log.read_text()
    assert admin("POST", "/api/v1/cache/purge", {"nothing": 1})[0] == 422
