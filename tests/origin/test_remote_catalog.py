"""The catalog on the media's origin (issue 16, item 5): read through the store's client, written by the CLI.

On S3 the CLI writes with conditional PUTs (a lost race reads again, no update is lost); an HTTP origin is read
only (listed as nginx's JSON autoindex lists it) and the CLI refuses to write there, pointing at --catalog. Real
parts: nginx as the HTTP origin, moto's server as S3 (signatures checked), `gateway serve` and the `gateway` CLI
as processes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

from delivery_profiles.tokens import sign_path
from fixtures.generate import fixture_path
from gateway.catalog.catalog import (Catalog, CatalogConflict, Partner, catalog_dir, parse_entry, read_partner,
                                     write_entry, write_lock, write_partner)
from gateway.catalog.files import origin_catalog
from gateway.settings import Settings
from tests.gateway.processes import get, wait_until
from tests.origin.s3_server import s3_env, s3_server  # noqa: F401  (fixtures)

SECRET = "c3" * 32
MEDIA = "title_180p.mp4"


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    if check:
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def secured_entry(entry_id: str, partner_id: int, path: str, secured: bool = True):
    doc = {"id": entry_id, "partner_id": partner_id, "name": "r", "secured": secured,
           "flavors": [{"id": "1_" + entry_id[2:], "path": path}]}
    return parse_entry(doc, f"entries/{entry_id}.json")


def play_urls(store: str, partner_id: int, entry_id: str, base: str) -> dict:
    """`gateway urls`' table (format, url) as a dict: the CLI reads the entry and partner through the origin."""
    lines = cli("urls", "--store", store, str(partner_id), entry_id, "--base-url", base).stdout.splitlines()
    return dict(line.split() for line in lines[1:])


def played(base: str, url: str) -> tuple[int, bytes]:
    """The answer to a player's URL, redirects followed (a short entry's playManifest redirects to its MP4)."""
    for _ in range(3):
        status, headers, body = get(base, urllib.parse.urlsplit(url).path)
        if status != 302:
            return status, body
        url = headers["Location"]
    raise AssertionError(f"redirect loop at {url}")


def signed(base: str, entry_id: str, path: str) -> int:
    token = sign_path(SECRET, path, int(time.time()) + 600)
    return get(base, f"/s/{entry_id}/{token}/mp4/{path}")[0]


# --- an HTTP origin: read only --------------------------------------------------------------------------------
def test_a_catalog_on_an_http_origin_secures_its_entries_and_follows_changes(origin, gateways, tmp_path):
    directory = catalog_dir(origin.root)  # the origin's own disk: what an operator syncs there
    write_partner(directory, Partner(401, "P401", SECRET, {}))
    write_entry(directory, secured_entry("0_http0001", 401, MEDIA))
    gw = gateways("--state-dir", str(tmp_path / "state"), "--store", origin.url, "--catalog-ttl", "0.2")
    assert get(gw.base, f"/hls/{MEDIA}/master.m3u8")[0] == 403
    assert signed(gw.base, "0_http0001", MEDIA) == 200
    assert get(gw.base, "/hls/title_240p.mp4/master.m3u8")[0] == 200  # no entry's file: public
    # playManifest finds the entry and partner there too (the CLI reads the same catalog through the origin)
    urls = play_urls(origin.url, 401, "0_http0001", gw.base)
    # a ks and signed URLs, made from the partner's secret: a short entry plays as progressive MP4 (Kaltura's rule)
    assert played(gw.base, urls["playManifest"]) == (200, (origin.root / MEDIA).read_bytes())
    status, body = played(gw.base, urls["applehttp"])
    assert status == 200 and body.startswith(b"#EXTM3U"), (status, body[:200])
    # unchanged, the catalog costs a listing per folder and ttl (looked at when a request comes): no file is read
    mark = origin.mark()
    for _ in range(5):
        time.sleep(0.3)
        assert get(gw.base, f"/hls/{MEDIA}/index.m3u8")[0] == 403
    seen = [line for line in origin.since(mark) if "/.catalog/" in line.uri]
    assert [line.uri for line in seen if line.uri.endswith(".json")] == []
    assert sum(line.uri.endswith("/.catalog/entries/") for line in seen) >= 2
    # the entry made public on the origin: the gateways see it within the catalog ttl (a new listing signature),
    # reading that file only
    write_entry(directory, secured_entry("0_http0001", 401, MEDIA, secured=False))
    wait_until(lambda: get(gw.base, f"/hls/{MEDIA}/master.m3u8")[0] == 200, "the catalog change", timeout=30)
    read = {line.uri.rsplit("/", 2)[-2] + "/" + line.uri.rsplit("/", 1)[-1] for line in origin.since(mark)
            if line.uri.endswith(".json")}
    assert read == {"entries/0_http0001.json"}


def test_the_cli_reads_an_http_origin_catalog_and_refuses_to_write_it(origin, tmp_path):
    directory = catalog_dir(origin.root)
    write_partner(directory, Partner(402, "P402", SECRET, {}))
    listed = cli("partners", "list", "--store", origin.url).stdout
    assert "P402" in listed
    refused = cli("partners", "add", "403", "--name", "x", "--store", origin.url, check=False)
    assert refused.returncode == 2 and "--catalog" in refused.stderr and "conditional PUT" in refused.stderr
    assert not (directory / "partners" / "403.json").exists()
    # with --catalog, the catalog is a local directory and the media are still checked on the origin
    local = tmp_path / "catalog"
    cli("partners", "add", "403", "--name", "x", "--store", origin.url, "--catalog", str(local))
    done = cli("entries", "add", "0_http0002", "--partner", "403", "--name", "n", "--flavor", MEDIA,
               "--flavor", "missing.mp4", "--store", origin.url, "--catalog", str(local))
    assert "'missing.mp4' is not a regular file" in done.stderr and MEDIA + "'" not in done.stderr


def test_an_origin_that_cannot_list_keeps_the_catalog_loaded(origin, tmp_path):
    """A listing that fails (here: a folder served without JSON autoindex) is logged and the last view stays."""
    with origin_catalog(Settings(origin=origin.url.replace("/media", "/nowhere"))) as (_, files):
        catalog = Catalog(None, files, ttl=0, identify=False)
        assert catalog.view().partners() == ()  # 403 from the origin: nothing to load, no crash


# --- S3: written with conditional PUTs ----------------------------------------------------------------------------
def test_the_cli_writes_an_s3_catalog_that_gateway_serve_reads(s3_env, gateways, tmp_path):
    store = f"s3://{s3_env.bucket}/cat1/"
    s3_env.put(f"cat1/{MEDIA}", fixture_path(MEDIA))
    cli("partners", "add", "501", "--name", "P501", "--secret", SECRET, "--store", store)
    cli("entries", "add", "0_s3000001", "--partner", "501", "--name", "n", "--secured", "--flavor", MEDIA,
        "--store", store)
    body = s3_env.client().get_object(Bucket=s3_env.bucket, Key="cat1/.catalog/entries/0_s3000001.json")["Body"]
    assert json.loads(body.read())["secured"] is True
    assert cli("partners", "add", "501", "--name", "again", "--store", store, check=False).returncode == 2
    gw = gateways("--state-dir", str(tmp_path / "state"), "--store", store, "--catalog-ttl", "0.2")
    assert get(gw.base, f"/hls/{MEDIA}/master.m3u8")[0] == 403
    assert signed(gw.base, "0_s3000001", MEDIA) == 200
    urls = play_urls(store, 501, "0_s3000001", gw.base)
    assert played(gw.base, urls["playManifest"]) == (200, fixture_path(MEDIA).read_bytes())
    status, data = played(gw.base, urls["applehttp"])
    assert status == 200 and data.startswith(b"#EXTM3U"), (status, data[:200])
    cli("partners", "set-rule", "501", "secured_default_delivery_type", "dash", "--store", store)
    assert read_partner_s3(s3_env, "cat1", 501).delivery["secured_default_delivery_type"] == ["dash"]
    cli("entries", "remove", "0_s3000001", "--store", store)
    with s3_env.signatures_unchecked():  # moto checks no signature of a query with '/' (botocore encodes it)
        listed = s3_env.client().list_objects_v2(Bucket=s3_env.bucket, Prefix="cat1/.catalog/")["Contents"]
    assert [o["Key"] for o in listed] == ["cat1/.catalog/partners/501.json"]
    wait_until(lambda: get(gw.base, f"/hls/{MEDIA}/master.m3u8")[0] == 200, "the removal", timeout=30)


def read_partner_s3(s3_env, prefix: str, partner_id: int) -> Partner:
    from gateway.catalog.schema import parse_partner

    raw = s3_env.client().get_object(Bucket=s3_env.bucket, Key=f"{prefix}/.catalog/partners/{partner_id}.json")
    return parse_partner(json.loads(raw["Body"].read()), f"partners/{partner_id}.json")


def test_concurrent_cli_writers_lose_no_update_on_s3(s3_env):
    """Eight CLI processes at once on one partner, each changing its own setting: without the conditional PUT a
    writer replaces what another wrote between its read and its write; with it, every change is there."""
    store = f"s3://{s3_env.bucket}/cat2/"
    cli("partners", "add", "502", "--name", "P502", "--store", store)
    types, features = ("hls", "dash", "hds", "mss"), ("clipping", "thumbnails", "captions", "track_selection")
    commands = [("set-profile", "502", t, f"segment_duration_ms={2000 + 1000 * i}") for i, t in enumerate(types)]
    commands += [("set-feature", "502", f, "off") for f in features]
    with ThreadPoolExecutor(len(commands)) as pool:
        done = list(pool.map(lambda c: cli("partners", *c, "--store", store, check=False), commands))
    assert all(d.returncode == 0 for d in done), [d.stderr for d in done]
    profiles = read_partner_s3(s3_env, "cat2", 502).delivery["profiles"]
    assert {t: profiles[t]["segment_duration_ms"] for t in types} == {"hls": 2000, "dash": 3000, "hds": 4000,
                                                                      "mss": 5000}
    shown = json.loads(cli("partners", "show", "502", "--store", store).stdout)
    assert all(f in json.dumps(shown) for f in features), shown


def test_a_write_after_another_writers_change_is_a_conflict(s3_env):
    """Inside write_lock, a file read is replaced only in the version read (If-Match); a file found missing is only
    created (If-None-Match: *)."""
    with origin_catalog(Settings(origin=f"s3://{s3_env.bucket}/cat3/")) as (_, files):
        write_partner(files, Partner(503, "first", SECRET, {}))
        with write_lock(files):
            assert read_partner(files, 503).name == "first"
            s3_env.put("cat3/.catalog/partners/503.json", json.dumps(Partner(503, "other writer", SECRET, {})
                                                                     .to_json(show_secret=True)).encode())
            with pytest.raises(CatalogConflict):
                write_partner(files, Partner(503, "mine", SECRET, {}))
        assert read_partner(files, 503).name == "other writer"
        with write_lock(files):
            with pytest.raises(Exception):
                read_partner(files, 504)  # missing: recorded as such
            s3_env.put("cat3/.catalog/partners/504.json", json.dumps(Partner(504, "raced", SECRET, {})
                                                                     .to_json(show_secret=True)).encode())
            with pytest.raises(CatalogConflict):
                write_partner(files, Partner(504, "mine", SECRET, {}))
        assert read_partner(files, 504).name == "raced"


def test_an_s3_catalog_listed_over_several_pages(s3_env):
    """ListObjectsV2 answers 1000 keys a page: the catalog follows the continuation tokens (here 2 keys a page)."""
    with origin_catalog(Settings(origin=f"s3://{s3_env.bucket}/cat4/")) as (_, files):
        files.page = 2
        for i in range(5):
            write_partner(files, Partner(600 + i, f"P{i}", SECRET, {}))
        s3_env.put("cat4/.catalog/partners/.hidden.json", b"{}")  # not a catalog file
        s3_env.put("cat4/.catalog/partners/sub/601.json", b"{}")  # nor is a deeper key
        view = Catalog(None, files, ttl=0).view()
        assert [p.name for p in view.partners()] == [f"P{i}" for i in range(5)] and view.problems == ()
