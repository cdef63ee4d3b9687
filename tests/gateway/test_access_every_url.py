"""Delivery rules hold on every URL (issue 10, part 4), against a real server on loopback and a real catalog on disk.

A partner profile that disables a delivery type refuses its entries' files on that type's direct URLs too (not only
in playManifest), and a secured file is recognised by identity (device, inode), so a hardlink or any other name of
it needs the entry's token, including a name made after the server started and warmed its caches.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from delivery_profiles.tokens import sign_path
from fixtures.generate import fixture_path
from gateway.catalog.catalog import Catalog, Partner, catalog_dir, parse_entry, write_entry, write_partner

from .processes import gateway_command, get, wait_until

SECRET_A, SECRET_B, SECRET_S = "a1" * 32, "b2" * 32, "c3" * 32
OWNED, OTHERS, LOOSE = "title_240p.mp4", "title_180p.mp4", "title_360p.mp4"  # partner 101, partner 102, no entry
PROTOCOLS = ("hls", "dash", "mss", "hds", "http")
WAIT = 20.0  # generous bound on "within catalog_ttl" (the server re-reads the catalog every 0.2 s here)


def entry(entry_id: str, partner_id: int, paths: list[str], secured: bool = False):
    flavors = [{"id": f"0_fl{partner_id:03d}{i:03d}", "path": p} for i, p in enumerate(paths)]
    doc = {"id": entry_id, "partner_id": partner_id, "name": entry_id, "secured": secured, "flavors": flavors}
    return parse_entry(doc, f"entries/{entry_id}.json")


def set_profile(store: Path, partner: Partner, protocol: str, enabled: bool) -> Partner:
    """The partner file rewritten as `gateway partners set-profile` does (validated, atomic rename)."""
    profiles = {**partner.delivery.get("profiles", {}), protocol: {"enabled": enabled}}
    delivery = {**partner.delivery, "profiles": profiles}
    changed = Partner(partner.id, partner.name, partner.secret, delivery)
    write_partner(catalog_dir(store), changed)
    return changed


@pytest.fixture
def partners(store: Path) -> dict[int, Partner]:
    directory = catalog_dir(store)
    found = {}
    for pid, secret in ((101, SECRET_A), (102, SECRET_B), (103, SECRET_S)):
        found[pid] = Partner(pid, f"P{pid}", secret, {})
        write_partner(directory, found[pid])
    write_entry(directory, entry("0_owned001", 101, [OWNED]))
    write_entry(directory, entry("0_other001", 102, [OTHERS]))
    return found


async def urls_of(client, path: str, protocol: str) -> list[str]:
    """A manifest and a media URL of ``path`` in ``protocol`` (MSS needs the bitrate from its manifest)."""
    if protocol == "http":
        return [f"/mp4/{path}"]
    if protocol == "hls":
        return [f"/hls/{path}/master.m3u8", f"/hls/{path}/seg-1-v1-a1.ts"]
    if protocol == "dash":
        return [f"/dash/{path}/manifest.mpd", f"/dash/{path}/init-v1.mp4", f"/dash/{path}/fragment-1-v1.m4s"]
    if protocol == "hds":
        return [f"/hds/{path}/manifest.f4m", f"/hds/{path}/frag-v1-a1-Seg1-Frag1"]
    response = await client.get(f"/mss/{path}/manifest")
    assert response.status == 200, await response.text()
    bitrate = re.search(r'Bitrate="([0-9]+)"', await response.text()).group(1)
    return [f"/mss/{path}/manifest", f"/mss/{path}/QualityLevels({bitrate})/Fragments(video=0)"]


async def status_of(client, url: str) -> tuple[int, bytes]:
    response = await client.get(url)
    return response.status, await response.read()


async def until(client, urls: list[str], expected: int) -> None:
    """Every URL answers ``expected`` (the catalog change reached the server), polled under a generous bound."""
    deadline = time.monotonic() + WAIT
    while True:
        statuses = [(await status_of(client, u))[0] for u in urls]
        if all(s == expected for s in statuses):
            return
        assert time.monotonic() < deadline, list(zip(urls, statuses))
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_disabled_type_is_refused_on_direct_urls(make_client, store, partners, protocol):
    client = await make_client(catalog_ttl=0.2)
    owned, others, loose = [await urls_of(client, p, protocol) for p in (OWNED, OTHERS, LOOSE)]
    for url in owned + others + loose:
        assert (await status_of(client, url))[0] == 200, url
    set_profile(store, partners[101], protocol, enabled=False)
    await until(client, owned, 403)
    for url in owned:
        status, body = await status_of(client, url)
        assert status == 403 and body.startswith(b"ACCESS_DENIED: ") and b"disabled" in body, (url, body)
        assert b"0_owned001" in body and str(store).encode() not in body
    for url in others + loose:  # another partner's file, a file of no entry: the server's settings, unchanged
        assert (await status_of(client, url))[0] == 200, url
    other_protocol = "dash" if protocol != "dash" else "hls"
    for url in await urls_of(client, OWNED, other_protocol):  # only the disabled type is refused
        assert (await status_of(client, url))[0] == 200, url
    if protocol != "http":  # a url set with one refused file is refused as a whole
        mixed = f"/{protocol}/title_,240p,360p,.mp4.urlset/" + owned[0].rsplit("/", 1)[1]
        assert (await status_of(client, mixed))[0] == 403
    set_profile(store, partners[101], protocol, enabled=True)
    await until(client, owned, 200)


async def test_signed_urls_obey_the_disabled_type_too(make_client, store, partners):
    write_entry(catalog_dir(store), entry("0_secure01", 103, [OWNED], secured=True))
    client = await make_client(catalog_ttl=0.2)
    expires = int(time.time()) + 600
    prefix = f"/s/0_secure01/{sign_path(SECRET_S, OWNED, expires)}"
    urls = [prefix + u for u in await urls_of(client, OWNED, "hds")]
    await until(client, urls, 200)
    set_profile(store, partners[103], "hds", enabled=False)
    await until(client, urls, 403)
    assert b"hds delivery is disabled" in (await status_of(client, urls[0]))[1]


async def test_a_file_of_two_partners_obeys_the_stricter(make_client, store, partners):
    """Consistent with "secured if any owner is secured": one partner's entry cannot reopen what another closed."""
    write_entry(catalog_dir(store), entry("0_other002", 102, [OWNED]))
    set_profile(store, partners[101], "dash", enabled=False)
    client = await make_client(catalog_ttl=0.2)
    status, body = await status_of(client, f"/dash/{OWNED}/manifest.mpd")
    assert status == 403 and b"partner 101" in body
    assert (await status_of(client, f"/dash/{OTHERS}/manifest.mpd"))[0] == 200  # 102's own file: dash enabled


@pytest.fixture
def secured(store: Path, partners) -> str:
    """A secured entry of partner 103 whose flavor is OWNED (also in partner 101's public entry: still secured)."""
    write_entry(catalog_dir(store), entry("0_secure01", 103, [OWNED, OTHERS], secured=True))
    return "0_secure01"


def signed_prefix(target: str) -> str:
    return f"/s/0_secure01/{sign_path(SECRET_S, target, int(time.time()) + 600)}"


async def assert_refused(client, path: str) -> None:
    for url in (f"/mp4/{path}", f"/hls/{path}/master.m3u8", f"/hls/{path}/seg-1-v1-a1.ts",
                f"/dash/{path}/manifest.mpd"):
        status, body = await status_of(client, url)
        assert status == 403 and body.startswith(b"ACCESS_DENIED: ") and b"secured entry" in body, (url, body[:200])


async def test_a_hardlink_of_a_secured_file_needs_the_token(make_client, store, secured):
    os.link(store / OWNED, store / "second_name.mp4")
    client = await make_client()
    await assert_refused(client, "second_name.mp4")
    status, body = await status_of(client, signed_prefix(OWNED) + f"/mp4/{OWNED}")
    assert status == 200 and body == (store / OWNED).read_bytes()  # the original still plays, signed
    status, body = await status_of(client, signed_prefix("second_name.mp4") + "/mp4/second_name.mp4")
    assert status == 200 and body == (store / OWNED).read_bytes()  # the same file: the entry's token opens it


async def test_a_hardlink_made_after_warming_every_cache_is_refused(make_client, store, secured):
    client = await make_client(catalog_ttl=1.0)
    for url in (signed_prefix(OWNED) + f"/hls/{OWNED}/seg-1-v1-a1.ts", signed_prefix(OWNED) + f"/mp4/{OWNED}",
                f"/hls/{LOOSE}/seg-1-v1-a1.ts", f"/mp4/{LOOSE}"):
        assert (await status_of(client, url))[0] == 200, url  # catalog view, identities, metadata and segments warm
    os.link(store / OWNED, store / "late_link.mp4")
    await assert_refused(client, "late_link.mp4")


async def test_a_replaced_flavor_file_is_known_by_its_new_inode(make_client, store, secured):
    """The index saw the old inode; the flavor path now names a new one with a second name: its ctime says so."""
    client = await make_client(catalog_ttl=1.0)
    assert (await status_of(client, signed_prefix(OTHERS) + f"/mp4/{OTHERS}"))[0] == 200
    assert (await status_of(client, f"/mp4/{LOOSE}"))[0] == 200
    upload = store / "uploads"
    upload.mkdir()
    shutil.copyfile(fixture_path(OTHERS), upload / "new.mp4")
    os.link(upload / "new.mp4", upload / "kept_name.mp4")
    os.replace(upload / "new.mp4", store / OTHERS)  # new inode under the flavor's path
    await assert_refused(client, "uploads/kept_name.mp4")
    assert (await status_of(client, f"/mp4/{LOOSE}"))[0] == 200  # files older than the index: no wait, served


async def test_a_copy_is_another_file(make_client, store, secured):
    """A copy is a different inode that no entry names: the operator's business (docs/catalog.md)."""
    shutil.copyfile(store / OWNED, store / "copy.mp4")
    client = await make_client()
    status, body = await status_of(client, "/mp4/copy.mp4")
    assert status == 200 and body == (store / OWNED).read_bytes()
    assert (await status_of(client, f"/mp4/{OWNED}"))[0] == 403


def test_identity_index(store, partners, secured):
    """By (device, inode) whatever the name; re-stat'ed on demand, vouching for the ctimes seen before the pass."""
    catalog = Catalog(store, ttl=0)
    st = os.stat(store / OWNED)
    view = catalog.view()
    assert [e.id for e in view.entries_for_identity(st.st_dev, st.st_ino)] == ["0_owned001", "0_secure01"]
    assert view.entries_for_identity(st.st_dev, os.stat(store / LOOSE).st_ino) == ()
    shutil.copyfile(fixture_path(OWNED), store / "replacement.mp4")
    os.replace(store / "replacement.mp4", store / OWNED)
    new = os.stat(store / OWNED)
    assert catalog.view().entries_for_identity(new.st_dev, new.st_ino) == ()  # the ttl refresh does not re-stat
    view = catalog.rescan_identities(new.st_ctime_ns)
    assert [e.id for e in view.entries_for_identity(new.st_dev, new.st_ino)] == ["0_owned001", "0_secure01"]
    assert view.entries_for_identity(st.st_dev, st.st_ino) == ()
    assert view.identity_ctime_ns == new.st_ctime_ns and catalog.view() is view


async def test_new_files_share_one_identity_pass_and_are_then_known(make_client, store, secured):
    """Concurrent requests for files newer than the index wait for one pass (not one each), and the pass vouches
    for the ctimes they saw: the next request for those files is answered without another pass."""
    from gateway.catalog.access import CATALOG

    client = await make_client(catalog_ttl=1.0)
    assert (await status_of(client, f"/mp4/{LOOSE}"))[0] == 200
    catalog = client.server.app[CATALOG]
    passes: list[int] = []
    rescan = catalog.rescan_identities
    catalog.rescan_identities = lambda covered: passes.append(covered) or rescan(covered)  # a spy: the real pass runs
    for i in range(5):
        shutil.copyfile(fixture_path(LOOSE), store / f"new{i}.mp4")
    newest = max(os.stat(store / f"new{i}.mp4").st_ctime_ns for i in range(5))
    statuses = await asyncio.gather(*(status_of(client, f"/mp4/new{i % 5}.mp4") for i in range(20)))
    assert [s for s, _ in statuses] == [200] * 20
    assert 1 <= len(passes) < 5 and max(passes) == newest
    done = len(passes)
    assert (await status_of(client, "/hls/new3.mp4/master.m3u8"))[0] == 200
    assert len(passes) == done and catalog.view().identity_ctime_ns >= newest


async def test_no_identity_pass_when_no_rule_could_be_got_around(make_client, store, partners):
    """Without a secured entry or a disabled type, another name of an entry's file gets around nothing: new files
    are answered at once, with no identity pass (and so no wait for one); a rule added later turns the watch on."""
    from gateway.catalog.access import CATALOG

    client = await make_client(catalog_ttl=0.2)
    catalog = client.server.app[CATALOG]
    passes: list[int] = []
    rescan = catalog.rescan_identities
    catalog.rescan_identities = lambda covered: passes.append(covered) or rescan(covered)
    assert not catalog.view().restricts_access
    shutil.copyfile(fixture_path(LOOSE), store / "fresh.mp4")
    assert (await status_of(client, "/mp4/fresh.mp4"))[0] == 200
    assert passes == []
    set_profile(store, partners[101], "hds", False)
    await until(client, [f"/hds/{OWNED}/manifest.f4m"], 403)
    assert catalog.view().restricts_access
    os.link(store / OWNED, store / "second_name.mp4")
    assert (await status_of(client, "/hds/second_name.mp4/manifest.f4m"))[0] == 403
    assert len(passes) >= 1


def test_gateway_serve_workers_with_the_operator_cli(gateways, store):
    """The real thing: `gateway serve --workers 2`, a catalog written by the operator commands, a hardlink made
    after both workers answered, and a type disabled while they run (new connections: either worker answers)."""
    def cli(*args: str) -> None:
        done = subprocess.run(gateway_command() + [*args, "--store", str(store)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr

    cli("partners", "add", "103", "--name", "Secure", "--secret", SECRET_S)
    cli("partners", "add", "101", "--name", "Public")
    cli("entries", "add", "0_secure01", "--partner", "103", "--name", "s", "--secured", "--flavor", OWNED)
    cli("entries", "add", "0_owned001", "--partner", "101", "--name", "p", "--flavor", OTHERS)
    gw = gateways("--workers", "2", "--catalog-ttl", "0.2", store=store)
    signed = signed_prefix(OWNED) + f"/mp4/{OWNED}"
    for _ in range(6):
        assert get(gw.base, signed)[0] == 200 and get(gw.base, f"/mp4/{LOOSE}")[0] == 200
    os.link(store / OWNED, store / "late.mp4")
    for _ in range(6):
        status, _, body = get(gw.base, "/mp4/late.mp4")
        assert status == 403 and body.startswith(b"ACCESS_DENIED: "), body[:200]
    assert get(gw.base, f"/hds/{OTHERS}/manifest.f4m")[0] == 200
    cli("partners", "set-profile", "101", "hds", "enabled=false")
    wait_until(lambda: all(get(gw.base, f"/hds/{OTHERS}/manifest.f4m")[0] == 403 for _ in range(6)),
               "hds disabled on both workers", timeout=WAIT)
    assert get(gw.base, f"/hds/{LOOSE}/manifest.f4m")[0] == 200 and get(gw.base, f"/mp4/{OTHERS}")[0] == 200
