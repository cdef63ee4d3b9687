"""The catalog on real files: schema rules and their messages, loading, the reverse index, change pickup, atomicity."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from delivery_profiles import SYSTEM_DEFAULTS, merge
from gateway.catalog.catalog import (Catalog, CatalogError, CatalogNotFound, Entry, Flavor, Partner, catalog_dir,
                             parse_entry, parse_partner, read_entry, read_partner, write_entry, write_json_atomic,
                             write_lock, write_partner)
from packagers.errors import ErrorCode, PackagerError

SECRET = "0123456789abcdef" * 4


def partner_doc(**changes) -> dict:
    return {"id": 101, "name": "Acme", "secret": SECRET, "delivery": {}, **changes}


def entry_doc(**changes) -> dict:
    doc = {"id": "0_abcd1234", "partner_id": 101, "name": "Movie", "secured": False,
           "flavors": [{"id": "0_fl000001", "path": "a/hi.mp4"}, {"id": "0_fl000002", "path": "a/lo.mp4"}]}
    return {**doc, **changes}


def flavors(*changes: dict) -> list[dict]:
    base = entry_doc()["flavors"]
    return [{**f, **c} for f, c in zip(base, changes)] + base[len(changes):]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    (root / "a").mkdir(parents=True)
    for name in ("hi.mp4", "lo.mp4", "other.mp4"):
        (root / "a" / name).write_bytes(b"not parsed here")
    return root


def put(store: Path, rel: str, doc) -> Path:
    """Write a catalog file by hand (not through the atomic writer), as an operator's editor might."""
    path = store / ".catalog" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def remove_key(doc: dict, key: str) -> dict:
    return {k: v for k, v in doc.items() if k != key}


PARTNER_CASES = [
    ([], "(document): must be a JSON object"),
    (partner_doc(secure=True), "secure: unknown key (expected id, name, secret, delivery)"),
    (remove_key(partner_doc(), "id"), "id: is required"),
    (remove_key(partner_doc(), "name"), "name: is required"),
    (remove_key(partner_doc(), "secret"), "secret: is required"),
    (partner_doc(id=0), "id: must be an integer > 0"),
    (partner_doc(id=-101), "id: must be an integer > 0"),
    (partner_doc(id="101"), "id: must be an integer > 0"),
    (partner_doc(id=True), "id: must be an integer > 0"),
    (partner_doc(id=102), "id: 102 does not match the file name"),
    (partner_doc(name=""), "name: must be a non-empty string"),
    (partner_doc(name=7), "name: must be a non-empty string"),
    (partner_doc(secret=SECRET[:31]), "secret: must be a hex string of at least 32 characters"),
    (partner_doc(secret="g" * 32), "secret: must be a hex string of at least 32 characters"),
    (partner_doc(secret=12345), "secret: must be a hex string of at least 32 characters"),
    (partner_doc(delivery=[]), "delivery: must be a JSON object"),
    (partner_doc(delivery={"profiles": {"hls": {"segment_duration_ms": 0}}}),
     "delivery: profiles.hls.segment_duration_ms: must be a positive integer, got 0"),
    (partner_doc(delivery={"profiles": {"dash": {"encryption": "aes-128"}}}),
     "delivery: profiles.dash.encryption: 'aes-128' applies to hls only (dash allows none, cenc, cbcs)"),
    (partner_doc(delivery={"default_delivery_type": "hls,nope"}),
     "delivery: default_delivery_type: unknown delivery type 'nope'"),
]

ENTRY_CASES = [
    ("nope", "(document): must be a JSON object"),
    (entry_doc(duration=12), "duration: unknown key (expected id, partner_id, name, secured, flavors)"),
    (remove_key(entry_doc(), "flavors"), "flavors: is required"),
    (remove_key(entry_doc(), "secured"), "secured: is required"),
    (entry_doc(id="0_ABCD1234"), "id: must look like 0_abcd1234 (a digit, '_', 8 of [a-z0-9])"),
    (entry_doc(id="abcd1234"), "id: must look like 0_abcd1234 (a digit, '_', 8 of [a-z0-9])"),
    (entry_doc(id="0_abcd123"), "id: must look like 0_abcd1234 (a digit, '_', 8 of [a-z0-9])"),
    (entry_doc(id="1_abcd1234"), "id: 1_abcd1234 does not match the file name"),
    (entry_doc(partner_id="101"), "partner_id: must be an integer > 0"),
    (entry_doc(partner_id=False), "partner_id: must be an integer > 0"),
    (entry_doc(name=" "), "name: must be a non-empty string"),
    (entry_doc(secured="yes"), "secured: must be true or false"),
    (entry_doc(secured=1), "secured: must be true or false"),
    (entry_doc(flavors=[]), "flavors: must be a non-empty list"),
    (entry_doc(flavors={"id": "0_fl000001"}), "flavors: must be a non-empty list"),
    (entry_doc(flavors=["a/hi.mp4"]), "flavors[0]: must be a JSON object"),
    (entry_doc(flavors=flavors({}, {"bitrate": 800000})), "flavors[1].bitrate: unknown key (expected id, path, tags)"),
    (entry_doc(flavors=flavors({}, {"id": None})), "flavors[1].id: must look like 0_abcd1234 (a digit, '_', 8 of [a-z0-9])"),
    (entry_doc(flavors=[{"id": "0_fl000001"}]), "flavors[0].path: is required"),
    (entry_doc(flavors=flavors({}, {"id": "0_fl000001"})), "flavors[1].id: duplicates flavors[0].id"),
    (entry_doc(flavors=flavors({}, {"path": "a/hi.mp4"})), "flavors[1].path: duplicates flavors[0].path"),
    (entry_doc(flavors=flavors({}, {"path": "/etc/passwd"})), "flavors[1].path: must be a relative path inside the store"),
    (entry_doc(flavors=flavors({}, {"path": "../x.mp4"})), "flavors[1].path: must be a relative path inside the store"),
    (entry_doc(flavors=flavors({}, {"path": "a/../../x.mp4"})), "flavors[1].path: must be a relative path inside the store"),
    (entry_doc(flavors=flavors({"path": ".catalog/partners/101.json"})),
     "flavors[0].path: path segments may not start with '.'"),
    (entry_doc(flavors=flavors({"path": "a/./hi.mp4"})),
     "flavors[0].path: path segments may not start with '.'"),
    (entry_doc(flavors=flavors({"path": "a//hi.mp4"})), "flavors[0].path: empty path segment ('//' or trailing '/')"),
    (entry_doc(flavors=flavors({"path": "a\\hi.mp4"})),
     "flavors[0].path: path segment contains a slash, backslash or control character"),
    (entry_doc(flavors=flavors({"path": "a/hi\n.mp4"})),
     "flavors[0].path: path segment contains a slash, backslash or control character"),
    (entry_doc(flavors=flavors({"path": ""})), "flavors[0].path: must be a non-empty string"),
    (entry_doc(flavors=flavors({"path": 3})), "flavors[0].path: must be a non-empty string"),
    (entry_doc(flavors=flavors({"path": "x" * 256})), "flavors[0].path: path segment longer than 255 bytes"),
    (entry_doc(flavors=flavors({"tags": "hd"})), "flavors[0].tags: must be a list of non-empty strings"),
    (entry_doc(flavors=flavors({"tags": ["hd", ""]})), "flavors[0].tags: must be a list of non-empty strings"),
]


@pytest.mark.parametrize("doc, message", PARTNER_CASES)
def test_partner_schema_rules(store, doc, message):
    with pytest.raises(CatalogError) as caught:
        parse_partner(doc, "partners/101.json")
    assert str(caught.value) == f"partners/101.json: {message}"
    put(store, "partners/101.json", doc)  # the same message from a real file
    with pytest.raises(CatalogError) as from_file:
        read_partner(catalog_dir(store), 101)
    assert str(from_file.value) == str(caught.value)


@pytest.mark.parametrize("doc, message", ENTRY_CASES)
def test_entry_schema_rules(store, doc, message):
    with pytest.raises(CatalogError) as caught:
        parse_entry(doc, "entries/0_abcd1234.json")
    assert str(caught.value) == f"entries/0_abcd1234.json: {message}"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text, message", [
    ("{", "(document): invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ('{"id": 101, "id": 101}', "id: duplicate key"),
    ('{"id": NaN}', "(document): NaN is not JSON"),
    (b"\xff\xfe", "(document): not UTF-8"),
])
def test_file_level_errors(store, text, message):
    path = store / ".catalog" / "partners" / "101.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CatalogError) as caught:
        read_partner(catalog_dir(store), 101)
    assert str(caught.value) == f"partners/101.json: {message}"


def test_valid_documents_round_trip(store):
    partner = parse_partner(partner_doc(delivery={"profiles": {"hls": {"segment_duration_ms": 4000}}}),
                            "partners/101.json")
    assert partner == Partner(101, "Acme", SECRET, {"profiles": {"hls": {"segment_duration_ms": 4000}}})
    assert parse_partner(partner.to_json(), "partners/101.json") == partner
    assert partner.to_json(show_secret=False)["secret"] == "*" * 60 + SECRET[-4:]
    doc = entry_doc(secured=True, flavors=flavors({"tags": ["source", "web"]}))
    entry = parse_entry(doc, "entries/0_abcd1234.json")
    assert entry.flavors[0] == Flavor("0_fl000001", "a/hi.mp4", ("source", "web"))
    assert entry.paths == ("a/hi.mp4", "a/lo.mp4") and entry.secured
    assert entry.to_json() == doc


def test_catalog_loads_partners_and_entries(store):
    put(store, "partners/101.json", partner_doc())
    put(store, "partners/102.json", partner_doc(id=102, name="Beta"))
    put(store, "entries/0_abcd1234.json", entry_doc())
    put(store, "entries/0_abcd1234.json.tmp.123.abcd", "{half")  # a writer's temporary file
    put(store, "entries/.0_zzzz9999.json", "{")  # hidden
    put(store, "entries/README", "not json")
    catalog = Catalog(store, ttl=0)
    assert [p.name for p in catalog.view().partners()] == ["Acme", "Beta"]
    assert catalog.partner(101).secret == SECRET
    entry = catalog.entry("0_abcd1234")
    assert entry.partner_id == 101 and [f.path for f in entry.flavors] == ["a/hi.mp4", "a/lo.mp4"]
    assert catalog.entry("0_abcd1234", partner_id=101) is entry
    assert catalog.view().problems == ()
    assert catalog.view().entries(102) == () and catalog.view().entries(101) == (entry,)


def test_unknown_ids_are_not_found(store):
    put(store, "partners/101.json", partner_doc())
    put(store, "entries/0_abcd1234.json", entry_doc())
    catalog = Catalog(store, ttl=0)
    with pytest.raises(CatalogNotFound) as caught:
        catalog.partner(999)
    assert isinstance(caught.value, PackagerError) and caught.value.code is ErrorCode.NOT_FOUND  # → 404
    with pytest.raises(CatalogNotFound):
        catalog.entry("0_zzzz9999")
    with pytest.raises(CatalogNotFound, match="of partner 102"):
        catalog.entry("0_abcd1234", partner_id=102)  # one partner never reaches another's entry


def test_no_catalog_directory_is_an_empty_catalog(store):
    catalog = Catalog(store, ttl=0)
    assert catalog.view().partners() == () and catalog.view().entries() == ()
    with pytest.raises(CatalogNotFound):
        catalog.entry("0_abcd1234")


def test_a_vanished_catalog_directory_keeps_the_last_view(store, caplog):
    """An unmounted share must not make every secured entry disappear (and its files look public)."""
    put(store, "partners/101.json", partner_doc())
    put(store, "entries/0_abcd1234.json", entry_doc(secured=True))
    catalog = Catalog(store, ttl=0)
    assert catalog.entries_for_path("a/hi.mp4")
    (store / ".catalog").rename(store / ".catalog-away")
    with caplog.at_level(logging.WARNING, "gateway.catalog"):
        assert [e.id for e in catalog.entries_for_path("a/hi.mp4")] == ["0_abcd1234"]
        catalog.view()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"catalog: {store / '.catalog'} is missing; keeping the catalog loaded before"]
    (store / ".catalog-away").rename(store / ".catalog")
    os.unlink(store / ".catalog" / "entries" / "0_abcd1234.json")  # deleting files is deleting
    assert catalog.entries_for_path("a/hi.mp4") == ()


def test_catalog_dir_override(store, tmp_path):
    elsewhere = tmp_path / "catalog"
    put(store, "partners/101.json", partner_doc(name="in the store"))
    (elsewhere / "partners").mkdir(parents=True)
    (elsewhere / "partners" / "101.json").write_text(json.dumps(partner_doc(name="elsewhere")))
    assert Catalog(store, elsewhere, ttl=0).partner(101).name == "elsewhere"
    assert Catalog(store, ttl=0).partner(101).name == "in the store"


def test_missing_media_is_a_warning_not_an_error(store, caplog):
    put(store, "partners/101.json", partner_doc())
    put(store, "entries/0_abcd1234.json", entry_doc(flavors=flavors({}, {"path": "later/lo.mp4"})))
    put(store, "entries/0_efgh5678.json", entry_doc(id="0_efgh5678", partner_id=555))
    catalog = Catalog(store, ttl=0)
    with caplog.at_level(logging.WARNING, "gateway.catalog"):
        assert catalog.entry("0_abcd1234").paths == ("a/hi.mp4", "later/lo.mp4")
    expected = ["entries/0_abcd1234.json: flavors[1].path: 'later/lo.mp4' is not a regular file inside the store (yet)",
                "entries/0_efgh5678.json: partner_id: no partner 555 in the catalog"]
    assert sorted(catalog.view().problems) == expected
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == ["catalog: " + m for m in expected]
    caplog.clear()
    catalog.view()  # unchanged: nothing logged twice
    assert caplog.records == []
    (store / "later").mkdir()
    (store / "later" / "lo.mp4").write_bytes(b"arrived")
    assert catalog.view().problems == (expected[1],)  # the media arrived: picked up without touching the entry


def test_reverse_index(store):
    put(store, "partners/101.json", partner_doc())
    put(store, "entries/0_abcd1234.json", entry_doc(secured=True))
    put(store, "entries/0_efgh5678.json", entry_doc(id="0_efgh5678", flavors=[{"id": "0_fl000003", "path": "a/hi.mp4"}]))
    catalog = Catalog(store, ttl=0)
    assert [e.id for e in catalog.entries_for_path("a/hi.mp4")] == ["0_abcd1234", "0_efgh5678"]
    assert [e.id for e in catalog.entries_for_path("a/lo.mp4")] == ["0_abcd1234"]
    assert catalog.entries_for_path("a/other.mp4") == ()
    assert catalog.entries_for_path("a/lo") == () and catalog.entries_for_path("") == ()


def test_reverse_index_knows_the_realpath_of_flavors(store):
    """A secured file must be recognised by FileIdentity.store_path however the request spelled its path."""
    (store / "alias").symlink_to("a")
    (store / "late").mkdir()
    (store / "late-alias").symlink_to("late")
    put(store, "partners/101.json", partner_doc())
    put(store, "entries/0_abcd1234.json", entry_doc(secured=True, flavors=[
        {"id": "0_fl000001", "path": "alias/hi.mp4"}, {"id": "0_fl000002", "path": "late-alias/x.mp4"}]))
    catalog = Catalog(store, ttl=0)
    assert [e.id for e in catalog.entries_for_path("alias/hi.mp4")] == ["0_abcd1234"]
    assert [e.id for e in catalog.entries_for_path("a/hi.mp4")] == ["0_abcd1234"]
    assert catalog.entries_for_path("late/x.mp4") == ()
    (store / "late" / "x.mp4").write_bytes(b"arrived")  # media after its entry, under a symlinked directory
    assert [e.id for e in catalog.entries_for_path("late/x.mp4")] == ["0_abcd1234"]


def test_changes_are_picked_up_without_restart(store):
    directory = catalog_dir(store)
    write_partner(directory, Partner(101, "Acme", SECRET, {}))
    catalog = Catalog(store, ttl=0)
    assert catalog.partner(101).delivery == {}
    with pytest.raises(CatalogNotFound):
        catalog.entry("0_abcd1234")
    override = {"profiles": {"hls": {"segment_duration_ms": 4000, "enabled": False}}}
    write_partner(directory, Partner(101, "Acme", SECRET, override))
    write_entry(directory, parse_entry(entry_doc(), "entries/0_abcd1234.json"))
    assert catalog.partner(101).delivery == override
    config = merge(SYSTEM_DEFAULTS, catalog.partner(101).delivery)
    assert config.profile("hls").segment_duration_ms == 4000 and not config.is_enabled("hls")
    assert catalog.entry("0_abcd1234").name == "Movie"
    assert [e.id for e in catalog.entries_for_path("a/hi.mp4")] == ["0_abcd1234"]
    os.unlink(directory / "entries" / "0_abcd1234.json")
    with pytest.raises(CatalogNotFound):
        catalog.entry("0_abcd1234")
    assert catalog.entries_for_path("a/hi.mp4") == ()


def test_same_size_and_mtime_is_still_a_change(store):
    """Size and mtime can repeat (coarse clocks, rsync -t); the inode of the renamed-in file cannot."""
    directory = catalog_dir(store)
    path = write_partner(directory, Partner(101, "Acme", SECRET, {}))
    catalog = Catalog(store, ttl=0)
    assert catalog.partner(101).name == "Acme"
    st = path.stat()
    write_partner(directory, Partner(101, "Acne", SECRET, {}))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    assert catalog.partner(101).name == "Acne"


def test_ttl_bounds_how_often_the_disk_is_checked(store):
    directory = catalog_dir(store)
    write_partner(directory, Partner(101, "Acme", SECRET, {}))
    catalog = Catalog(store, ttl=0.3)
    assert catalog.partner(101).name == "Acme" and not catalog.due()
    write_partner(directory, Partner(101, "Renamed", SECRET, {}))
    assert catalog.partner(101).name == "Acme"  # within the ttl: memory only
    time.sleep(0.35)
    assert catalog.due() and catalog.partner(101).name == "Renamed"
    write_partner(directory, Partner(101, "Forced", SECRET, {}))
    assert catalog.refresh().partner(101).name == "Forced"  # refresh() ignores the ttl
    with pytest.raises(ValueError):
        Catalog(store, ttl=-1)


def test_invalid_edit_keeps_the_last_good_version(store, caplog):
    directory = catalog_dir(store)
    write_partner(directory, Partner(101, "Acme", SECRET, {"default_delivery_type": ["hls"]}))
    catalog = Catalog(store, ttl=0)
    good = catalog.partner(101)
    with caplog.at_level(logging.WARNING, "gateway.catalog"):
        write_json_atomic(directory / "partners" / "101.json", "{not json")  # a JSON string: wrong shape
        assert catalog.partner(101) == good
        (directory / "partners" / "101.json").write_text('{"id": 101, "name": "Acme", "secret": "')  # truncated
        assert catalog.partner(101) == good
        put(store, "partners/101.json", partner_doc(delivery={"profiles": {"hls": {"segment_duration_ms": -1}}}))
        assert catalog.partner(101) == good
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert messages == [
        "catalog: partners/101.json: (document): must be a JSON object (keeping the last good version)",
        "catalog: partners/101.json: (document): invalid JSON: Unterminated string starting at: "
        "line 1 column 39 (char 38) (keeping the last good version)",
        "catalog: partners/101.json: delivery: profiles.hls.segment_duration_ms: must be a positive integer, got -1 "
        "(keeping the last good version)",
    ]
    assert catalog.view().problems == (messages[-1].removeprefix("catalog: "),)
    put(store, "partners/101.json", partner_doc(name="Fixed"))
    assert catalog.partner(101).name == "Fixed" and catalog.view().problems == ()
    put(store, "partners/102.json", "[]")  # invalid from the start: not loaded at all
    with pytest.raises(CatalogNotFound):
        catalog.partner(102)
    assert catalog.view().problems == ("partners/102.json: (document): must be a JSON object (not loaded)",)


def test_concurrent_reader_never_sees_a_partial_file(store):
    directory = catalog_dir(store)
    versions = [Partner(101, "Acme" * (1 + i % 7), SECRET,
                        {"profiles": {"hls": {"segment_duration_ms": 1000 * (1 + i), "extra": {"pad": "x" * 5000 * (i % 3)}}}})
                for i in range(200)]
    write_partner(directory, versions[0])
    catalog = Catalog(store, ttl=0)
    path = directory / "partners" / "101.json"
    stop, seen, failures = threading.Event(), set(), []

    def read_loop() -> None:
        while not stop.is_set():
            try:
                raw = json.loads(path.read_bytes())  # the file itself, never half written
                parse_partner(raw, "partners/101.json")
                view = catalog.view()  # and the loader: never an invalid version
                assert view.problems == (), view.problems
                seen.add(view.partner(101).delivery["profiles"]["hls"]["segment_duration_ms"])
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(repr(e))
                return

    readers = [threading.Thread(target=read_loop) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for partner in versions:
            write_partner(directory, partner)
    finally:
        stop.set()
        for t in readers:
            t.join(10)
    assert failures == []
    assert len(seen) > 1  # the readers really overlapped the writes
    assert catalog.partner(101) == versions[-1]
    assert sorted(os.listdir(directory / "partners")) == ["101.json"]  # no temporary file left behind


def test_failed_write_leaves_nothing_behind(store):
    directory = catalog_dir(store)
    write_partner(directory, Partner(101, "Acme", SECRET, {}))
    before = (directory / "partners" / "101.json").read_bytes()
    with pytest.raises(CatalogError, match="^partners/101.json: delivery: "):
        write_partner(directory, Partner(101, "Acme", SECRET, {"profiles": {"hls": {"encryption": "rot13"}}}))
    with pytest.raises(TypeError):
        write_json_atomic(directory / "partners" / "101.json", {"not json": object()})
    assert (directory / "partners" / "101.json").read_bytes() == before
    assert os.listdir(directory / "partners") == ["101.json"]
    entry = Entry("0_abcd1234", 101, "Movie", False, (Flavor("0_fl000001", "../x.mp4"),))
    with pytest.raises(CatalogError, match="flavors\\[0\\].path: must be a relative path inside the store"):
        write_entry(directory, entry)
    assert not (directory / "entries").exists()


def test_write_lock_serialises_read_modify_write(store):
    directory = catalog_dir(store)
    write_partner(directory, Partner(101, "Acme", SECRET, {"profiles": {"hls": {"extra": {"n": 0}}}}))

    def bump(times: int) -> None:
        for _ in range(times):
            with write_lock(directory):
                partner = read_partner(directory, 101)
                n = partner.delivery["profiles"]["hls"]["extra"]["n"]
                write_partner(directory, Partner(101, "Acme", SECRET, {"profiles": {"hls": {"extra": {"n": n + 1}}}}))

    threads = [threading.Thread(target=bump, args=(25,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert read_partner(directory, 101).delivery["profiles"]["hls"]["extra"]["n"] == 100


def test_read_entry_checks_the_id_before_touching_the_disk(store):
    with pytest.raises(CatalogError, match="^entries/../x.json: id: must look like"):
        read_entry(catalog_dir(store), "../x")
    with pytest.raises(CatalogNotFound):
        read_entry(catalog_dir(store), "0_abcd1234")
