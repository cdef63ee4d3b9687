"""``gateway partners ...`` / ``gateway entries ...``: end to end as subprocesses, and through main([...])."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.generate import fixture_path
from delivery_profiles import SYSTEM_DEFAULTS, DeliveryType, DrmConfig, merge
from gateway.catalog.catalog import Catalog, CatalogNotFound, catalog_dir, read_partner
from gateway.runtime.cli import main
from delivery_profiles.tokens import TokenError, verify_path
from gateway.runtime.catalog_cli import entry_urls, parse_value, rule_value

SECRET = "0123456789abcdef" * 4


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    (root / "a").mkdir(parents=True)
    for name, source in (("hi.mp4", "title_240p.mp4"), ("lo.mp4", "title_180p.mp4")):
        shutil.copyfile(fixture_path(source), root / "a" / name)  # entries add probes its flavors: real MP4s
    return root


def gateway(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_operator_session_as_subprocesses(store):
    s = ("--store", str(store))
    r = gateway("partners", "add", "101", "--name", "Acme", *s)
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    assert added["id"] == 101 and added["delivery"] == {} and added["secret"].startswith("*" * 60)
    r = gateway("partners", "set-profile", "101", "hls", "segment_duration_ms=4000", "encryption=aes-128",
                "enabled=false", *s)
    assert r.returncode == 0, r.stderr
    r = gateway("partners", "set-rule", "101", "default_delivery_type", "hls,dash", *s)
    assert r.returncode == 0, r.stderr
    r = gateway("partners", "set-rule", "101", "short_entries_max_duration", "30", *s)
    assert r.returncode == 0, r.stderr
    r = gateway("entries", "add", "0_abcd1234", "--partner", "101", "--name", "Movie", "--secured",
                "--flavor", "a/hi.mp4", "--flavor", "0_fl000002=a/lo.mp4", "--flavor", "soon/x.mp4", *s)
    assert r.returncode == 0, r.stderr
    assert "flavors[2].path: 'soon/x.mp4' is not a regular file inside the store (yet)" in r.stderr

    r = gateway("partners", "list", *s)
    assert r.returncode == 0 and r.stdout.split("\n")[0].split() == ["ID", "NAME", "OVERRIDES"]
    assert r.stdout.split("\n")[1].split() == ["101", "Acme", "profiles,", "default_delivery_type,",
                                               "short_entries_max_duration"]
    r = gateway("partners", "show", "101", *s)
    shown = json.loads(r.stdout)
    assert shown["delivery"] == {"profiles": {"hls": {"segment_duration_ms": 4000, "encryption": "aes-128",
                                                      "enabled": False}},
                                 "default_delivery_type": ["hls", "dash"], "short_entries_max_duration": 30}
    secret = read_partner(catalog_dir(store), 101).secret
    assert len(secret) == 64 and secret not in r.stdout and shown["secret"].endswith(secret[-4:])
    assert json.loads(gateway("partners", "show", "101", "--show-secret", *s).stdout)["secret"] == secret
    r = gateway("entries", "list", *s)
    assert r.stdout.split("\n")[1].split() == ["0_abcd1234", "101", "yes", "3", "Movie"]
    r = gateway("entries", "show", "0_abcd1234", *s)
    entry = json.loads(r.stdout)
    assert [f["path"] for f in entry["flavors"]] == ["a/hi.mp4", "a/lo.mp4", "soon/x.mp4"]
    assert entry["flavors"][1]["id"] == "0_fl000002" and entry["secured"] is True

    # What a running gateway makes of it.
    catalog = Catalog(store, ttl=0)
    config = merge(SYSTEM_DEFAULTS, catalog.partner(101).delivery)
    hls = config.profile("hls")
    assert (hls.segment_duration_ms, hls.encryption, hls.enabled) == (4000, "aes-128", False)
    assert config.default_delivery_type == (DeliveryType.HLS, DeliveryType.DASH)
    assert config.short_entries_max_duration == 30
    assert [e.id for e in catalog.entries_for_path("a/lo.mp4")] == ["0_abcd1234"]


def test_catalog_commands_start_without_the_server(store):
    """A catalog command (operators and their scripts run many) loads neither aiohttp nor the server: importing
    them was about 40 % of each command's time (`gateway partners list`: 1.18 s before, 0.67 s after, median of 7)."""
    commands = [["partners", "add", "7", "--name", "P"], ["partners", "list"], ["check"],
                ["entries", "add", "0_load0001", "--partner", "7", "--name", "M", "--flavor", "a/hi.mp4"]]
    loaded = "sorted(m for m in sys.modules if m.startswith(('aiohttp', 'gateway.runtime.serve')))"
    code = ("import json, sys; from gateway.runtime.cli import main; "
            f"codes = [main(c + ['--store', {str(store)!r}]) for c in {commands!r}]; "
            f"print(json.dumps([codes, {loaded}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
    assert json.loads(r.stdout.splitlines()[-1]) == [[0, 0, 0, 0], []], (r.stdout, r.stderr)


def test_partners_add(store, capsys):
    s = ("--store", str(store))
    assert run(capsys, "partners", "add", "101", "--name", "Acme", "--secret", SECRET, *s)[0] == 0
    assert read_partner(catalog_dir(store), 101).secret == SECRET
    assert run(capsys, "partners", "add", "101", "--name", "Again", *s) == (
        2, "", "gateway partners add: partners/101.json: id: already exists\n")
    code, _, err = run(capsys, "partners", "add", "102", "--name", "Beta", "--secret", "abc", *s)
    assert code == 2 and err == "gateway partners add: partners/102.json: secret: must be a hex string of at least 32 characters\n"
    code, _, err = run(capsys, "partners", "add", "0", "--name", "Zero", *s)
    assert code == 2 and err == "gateway partners add: partners/0.json: id: must be an integer > 0\n"
    assert sorted(p.name for p in (catalog_dir(store) / "partners").iterdir()) == ["101.json"]


def test_a_missing_store_is_refused_not_created(tmp_path, capsys):
    code, _, err = run(capsys, "partners", "add", "101", "--name", "Acme", "--store", str(tmp_path / "unmounted"))
    assert code == 2 and err == f"gateway partners add: store {tmp_path / 'unmounted'} is not a directory\n"
    assert not (tmp_path / "unmounted").exists()


def test_show_of_a_missing_partner_or_entry_exits_1(store, capsys):
    assert run(capsys, "partners", "show", "7", "--store", str(store)) == (
        1, "", "gateway partners show: no partners/7.json\n")
    assert run(capsys, "entries", "show", "0_abcd1234", "--store", str(store))[0] == 1


@pytest.mark.parametrize("settings, message", [
    (["segment_duration_ms=0"], "delivery: profiles.hls.segment_duration_ms: must be a positive integer, got 0"),
    (["segment_duration_ms=fast"], "delivery: profiles.hls.segment_duration_ms: must be a positive integer, got 'fast'"),
    (["encryption=rot13"],
     "delivery: profiles.hls.encryption: must be one of none, aes-128, sample-aes, cenc, cbcs, got 'rot13'"),
    (["enabled=maybe"], "delivery: profiles.hls.enabled: must be true or false, got 'maybe'"),
    (["segment_duration_msx=4000"],
     "delivery: profiles.hls: unknown key 'segment_duration_msx' (did you mean 'segment_duration_ms'?)"),
    (["segment_duration_ms=4000", "novalue"], "delivery.profiles.hls: expected key=value, got 'novalue'"),
])
def test_invalid_set_profile_is_rejected_and_the_file_unchanged(store, capsys, settings, message):
    s = ("--store", str(store))
    assert run(capsys, "partners", "add", "101", "--name", "Acme", *s)[0] == 0
    assert run(capsys, "partners", "set-profile", "101", "hls", "segment_duration_ms=2000", *s)[0] == 0
    path = catalog_dir(store) / "partners" / "101.json"
    before, st = path.read_bytes(), path.stat()
    code, out, err = run(capsys, "partners", "set-profile", "101", "hls", *settings, *s)
    assert (code, out, err) == (2, "", f"gateway partners set-profile: partners/101.json: {message}\n")
    assert path.read_bytes() == before and path.stat().st_ino == st.st_ino  # not even rewritten
    assert sorted(p.name for p in path.parent.iterdir()) == ["101.json"]


def test_set_profile_on_other_types_and_kaltura_names(store, capsys):
    s = ("--store", str(store))
    run(capsys, "partners", "add", "101", "--name", "Acme", *s)
    code, _, err = run(capsys, "partners", "set-profile", "101", "dash", "encryption=aes-128", *s)
    assert code == 2 and "profiles.dash.encryption: 'aes-128' applies to hls only" in err
    assert run(capsys, "partners", "set-profile", "101", "applehttp", "hls_container=fmp4", *s)[0] == 0
    assert run(capsys, "partners", "set-profile", "101", "HLS", "segment_duration_ms=4000", *s)[0] == 0
    assert run(capsys, "partners", "set-profile", "101", "mpegdash", "enabled=false", *s)[0] == 0
    assert read_partner(catalog_dir(store), 101).delivery == {
        "profiles": {"hls": {"hls_container": "fmp4", "segment_duration_ms": 4000}, "dash": {"enabled": False}}}
    code, _, err = run(capsys, "partners", "set-profile", "101", "rtsp", "enabled=false", *s)
    assert code == 2 and err.startswith("gateway partners set-profile: partners/101.json: delivery.profiles: "
                                        "unknown delivery format 'rtsp'")
    assert run(capsys, "partners", "set-profile", "999", "hls", "enabled=false", *s)[0] == 1


def test_set_rule(store, capsys):
    s = ("--store", str(store))
    run(capsys, "partners", "add", "101", "--name", "Acme", *s)
    for rule, value in [("default_delivery_type", "hls,dash"), ("short_entries_default_delivery_type", "http"),
                        ("secured_default_delivery_type", "hls"), ("short_entries_max_duration", "120")]:
        assert run(capsys, "partners", "set-rule", "101", rule, value, *s)[0] == 0
    config = merge(SYSTEM_DEFAULTS, read_partner(catalog_dir(store), 101).delivery)
    assert config.default_delivery_type == (DeliveryType.HLS, DeliveryType.DASH)
    assert config.secured_default_delivery_type == (DeliveryType.HLS,)
    assert config.short_entries_max_duration == 120
    path = catalog_dir(store) / "partners" / "101.json"
    before = path.read_bytes()
    code, _, err = run(capsys, "partners", "set-rule", "101", "default_delivery_type", "hls,rtsp", *s)
    assert (code, err) == (2, "gateway partners set-rule: partners/101.json: delivery: default_delivery_type: "
                              "unknown delivery type 'rtsp'\n")
    code, _, err = run(capsys, "partners", "set-rule", "101", "short_entries_max_duration", "-5", *s)
    assert code == 2 and "short_entries_max_duration: must be a non-negative number of seconds, got -5" in err
    assert run(capsys, "partners", "set-rule", "101", "no_such_rule", "x", *s)[0] == 2  # argparse choices
    assert path.read_bytes() == before


def test_entries_add_list_show(store, capsys):
    s = ("--store", str(store))
    run(capsys, "partners", "add", "101", "--name", "Acme", *s)
    run(capsys, "partners", "add", "202", "--name", "Beta", *s)
    code, out, err = run(capsys, "entries", "add", "0_abcd1234", "--partner", "101", "--name", "Movie",
                         "--flavor", "a/hi.mp4", "--flavor", "0_fl000002=a/lo.mp4", *s)
    assert code == 0 and err == ""
    flavors = json.loads(out)["flavors"]
    assert flavors[1] == {"id": "0_fl000002", "path": "a/lo.mp4"}
    assert flavors[0]["path"] == "a/hi.mp4" and flavors[0]["id"][:2] == "0_" and len(flavors[0]["id"]) == 10
    assert run(capsys, "entries", "add", "1_efgh5678", "--partner", "202", "--name", "Clip", "--secured",
               "--flavor", "a/x=y.mp4", *s)[0] == 0  # '=' after something that is not a flavor id: part of the path
    code, out, _ = run(capsys, "entries", "list", *s)
    assert [line.split()[:4] for line in out.splitlines()] == [
        ["ID", "PARTNER", "SECURED", "FLAVORS"], ["0_abcd1234", "101", "no", "2"], ["1_efgh5678", "202", "yes", "1"]]
    code, out, _ = run(capsys, "entries", "list", "--partner", "202", *s)
    assert [line.split()[0] for line in out.splitlines()] == ["ID", "1_efgh5678"]
    code, out, err = run(capsys, "entries", "show", "1_efgh5678", *s)
    assert json.loads(out)["flavors"][0]["path"] == "a/x=y.mp4" and json.loads(out)["flavors"][0]["id"][:2] == "1_"
    assert "flavors[0].path: 'a/x=y.mp4' is not a regular file inside the store (yet)" in err


@pytest.mark.parametrize("args, message", [
    (["0_abcd1234", "--partner", "999"], "entries/0_abcd1234.json: partner_id: no partner 999 (gateway partners add)"),
    (["0_ABCD1234", "--partner", "101"], "entries/0_ABCD1234.json: id: must look like 0_abcd1234 (a digit, '_', 8 of [a-z0-9])"),
    (["0_abcd1234", "--partner", "101", "--flavor", "../etc/passwd"],
     "entries/0_abcd1234.json: flavors[1].path: must be a relative path inside the store"),
    (["0_abcd1234", "--partner", "101", "--flavor", ".catalog/partners/101.json"],
     "entries/0_abcd1234.json: flavors[1].path: path segments may not start with '.'"),
    (["0_abcd1234", "--partner", "101", "--flavor", "a/hi.mp4"],
     "entries/0_abcd1234.json: flavors[1].path: duplicates flavors[0].path"),
])
def test_entries_add_rejects(store, capsys, args, message):
    s = ("--store", str(store))
    run(capsys, "partners", "add", "101", "--name", "Acme", *s)
    code, out, err = run(capsys, "entries", "add", *args[:3], "--name", "Movie", "--flavor", "a/hi.mp4", *args[3:], *s)
    assert (code, out, err) == (2, "", f"gateway entries add: {message}\n")
    assert not (catalog_dir(store) / "entries").exists() or not any((catalog_dir(store) / "entries").iterdir())


def test_entries_add_refuses_an_existing_entry(store, capsys):
    s = ("--store", str(store))
    run(capsys, "partners", "add", "101", "--name", "Acme", *s)
    args = ("entries", "add", "0_abcd1234", "--partner", "101", "--name", "Movie", "--flavor", "a/hi.mp4", *s)
    assert run(capsys, *args)[0] == 0
    assert run(capsys, *args) == (2, "", "gateway entries add: entries/0_abcd1234.json: id: already exists\n")


def test_catalog_option_puts_the_catalog_elsewhere(store, tmp_path, capsys):
    elsewhere = tmp_path / "shared-catalog"
    s = ("--store", str(store), "--catalog", str(elsewhere))
    assert run(capsys, "partners", "add", "101", "--name", "Acme", *s)[0] == 0
    assert (elsewhere / "partners" / "101.json").is_file() and not (store / ".catalog").exists()
    assert run(capsys, "partners", "list", *s)[1].splitlines()[1].split()[:2] == ["101", "Acme"]
    assert run(capsys, "partners", "list", "--store", str(store))[1].splitlines() == ["ID  NAME  OVERRIDES"]


def test_list_reports_invalid_files_but_lists_the_rest(store, capsys):
    s = ("--store", str(store))
    run(capsys, "partners", "add", "101", "--name", "Acme", *s)
    (catalog_dir(store) / "partners" / "102.json").write_text("{")
    code, out, err = run(capsys, "partners", "list", *s)
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["ID", "101"]
    assert "partners/102.json: (document): invalid JSON" in err
    assert run(capsys, "partners", "show", "102", *s)[0] == 2


@pytest.mark.parametrize("text, value", [
    ("4000", 4000), ("-1", -1), ("1.5", 1.5), ("true", True), ("False", False), ("aes-128", "aes-128"),
    ("", ""), ("1e3", "1e3"), ("0x10", "0x10"),
])
def test_parse_value(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_rule_values():
    assert rule_value("default_delivery_type", "hls, dash") == ["hls", "dash"]
    assert rule_value("short_entries_max_duration", "300") == 300


def test_entry_urls_for_every_enabled_format(store, capsys):
    s = ("--store", str(store))
    run(capsys, "partners", "add", "101", "--name", "Acme", "--secret", "ab" * 32, *s)
    run(capsys, "partners", "add", "202", "--name", "Beta", *s)
    run(capsys, "partners", "set-profile", "101", "hds", "enabled=false", *s)
    run(capsys, "entries", "add", "0_abcd1234", "--partner", "101", "--name", "Movie", "--flavor", "a/hi.mp4",
        "--flavor", "a/lo.mp4", *s)
    run(capsys, "entries", "add", "0_secure01", "--partner", "101", "--name", "Secret", "--secured",
        "--flavor", "a/x.mp4", *s)
    view = Catalog(store, ttl=0).view()
    with pytest.raises(CatalogNotFound):
        entry_urls(view, 202, "0_abcd1234", "http://localhost:8080")
    urls = entry_urls(view, 101, "0_abcd1234", "http://gw:8080/")
    assert urls == {
        "url": "http://gw:8080/mp4/a/hi.mp4",
        "applehttp": "http://gw:8080/hls/a/,hi,lo,.mp4.urlset/master.m3u8",
        "mpegdash": "http://gw:8080/dash/a/,hi,lo,.mp4.urlset/manifest.mpd",
        "smooth": "http://gw:8080/mss/a/,hi,lo,.mp4.urlset/manifest",
        "playManifest": "http://gw:8080/p/101/playManifest/entryId/0_abcd1234/a.m3u8",
    }
    secured = entry_urls(view, 101, "0_secure01", "http://gw:8080", ttl=60, now=1_000_000)
    hls = secured["applehttp"]
    token = hls.split("/s/0_secure01/")[1].split("/hls/")[0]
    verify_path("ab" * 32, "a/x.mp4", token, now=1_000_030)  # the token covers the media target
    with pytest.raises(TokenError):
        verify_path("ab" * 32, "a/x.mp4", token, now=1_000_061)
    assert "/ks/" in secured["playManifest"]
    code, out, _ = run(capsys, "urls", "101", "0_secure01", "--base-url", "http://gw:8080", *s)
    assert code == 0 and "/s/0_secure01/" in out and "applehttp" in out


def test_set_profile_turns_iframe_playlists_off(store, capsys):
    s = ("--store", str(store))
    run(capsys, "partners", "add", "101", "--name", "Acme", *s)
    assert run(capsys, "partners", "set-profile", "101", "hls", "iframes=false", *s)[0] == 0
    assert merge(SYSTEM_DEFAULTS, read_partner(catalog_dir(store), 101).delivery).profile("hls").iframes is False
    code, _, err = run(capsys, "partners", "set-profile", "101", "dash", "iframes=false", *s)
    assert code == 2 and "profiles.dash.iframes: applies to hls only" in err


# Issue 14: encryption schemes per type and the partner's drm section, through the real CLI.

def test_set_drm_and_encryption_as_subprocesses(store):
    s = ("--store", str(store))
    assert gateway("partners", "add", "101", "--name", "Acme", *s).returncode == 0
    r = gateway("partners", "set-drm", "101", "service_url=https://drm.example/udrm/info", "method=POST",
                "timeout_s=2.5", "ttl_s=0", "clear_lead_segments=2", "hls_key_format=fairplay", *s)
    assert r.returncode == 0, r.stderr
    drm = {"service_url": "https://drm.example/udrm/info", "method": "POST", "timeout_s": 2.5, "ttl_s": 0,
           "clear_lead_segments": 2, "hls_key_format": "fairplay"}
    assert json.loads(r.stdout) == {"drm": drm}
    for kind, encryption in [("hls", "cbcs"), ("mpegdash", "cenc"), ("smooth", "cenc")]:
        r = gateway("partners", "set-profile", "101", kind, f"encryption={encryption}", *s)
        assert r.returncode == 0, r.stderr
    r = gateway("partners", "show", "101", *s)
    assert r.returncode == 0 and json.loads(r.stdout)["delivery"] == {
        "drm": drm, "profiles": {"hls": {"encryption": "cbcs"}, "dash": {"encryption": "cenc"},
                                 "mss": {"encryption": "cenc"}}}
    assert gateway("partners", "list", *s).stdout.splitlines()[1].split() == ["101", "Acme", "drm,", "profiles"]

    path = catalog_dir(store) / "partners" / "101.json"
    before = path.read_bytes()
    r = gateway("partners", "set-profile", "101", "dash", "encryption=sample-aes", *s)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", (
        "gateway partners set-profile: partners/101.json: delivery: profiles.dash.encryption: 'sample-aes' applies "
        "to hls only (dash allows none, cenc, cbcs)\n"))
    r = gateway("partners", "set-drm", "101", "timeout_s=0", *s)
    assert (r.returncode, r.stdout, r.stderr) == (
        2, "", "gateway partners set-drm: partners/101.json: delivery: drm.timeout_s: must be a positive number of "
               "seconds, got 0\n")
    assert path.read_bytes() == before

    # What a running gateway makes of it.
    config = merge(SYSTEM_DEFAULTS, Catalog(store, ttl=0).partner(101).delivery)
    assert config.drm == DrmConfig("https://drm.example/udrm/info", "POST", 2.5, 0, 2, "fairplay")
    assert [config.profile(t).encryption for t in DeliveryType] == ["none", "cbcs", "cenc", "none", "cenc"]


def test_set_drm_merges_and_an_empty_service_url_clears_it(store, capsys):
    s = ("--store", str(store))
    run(capsys, "partners", "add", "101", "--name", "Acme", *s)
    assert run(capsys, "partners", "set-drm", "101", "service_url=http://10.0.0.5:8081/drm", "ttl_s=60", *s)[0] == 0
    code, out, err = run(capsys, "partners", "set-drm", "101", "method=post", *s)  # the other keys stay
    assert (code, err) == (0, "")
    assert json.loads(out)["drm"] == {"service_url": "http://10.0.0.5:8081/drm", "ttl_s": 60, "method": "post"}
    code, out, _ = run(capsys, "partners", "set-drm", "101", "service_url=", *s)
    assert code == 0 and json.loads(out)["drm"]["service_url"] == ""
    config = merge(SYSTEM_DEFAULTS, read_partner(catalog_dir(store), 101).delivery)
    assert config.drm == DrmConfig(service_url="", method="POST", ttl_s=60)  # derived keys again
    assert run(capsys, "partners", "set-drm", "999", "ttl_s=1", *s) == (
        1, "", "gateway partners set-drm: no partners/999.json\n")


@pytest.mark.parametrize("settings, message", [
    (["timeout_s=61"], "delivery: drm.timeout_s: must be at most 60 seconds, got 61"),
    (["timeout_s=soon"], "delivery: drm.timeout_s: must be a positive number of seconds, got 'soon'"),
    (["ttl_s=-1"], "delivery: drm.ttl_s: must be a non-negative integer number of seconds, got -1"),
    (["ttl_s=1.5"], "delivery: drm.ttl_s: must be a non-negative integer number of seconds, got 1.5"),
    (["clear_lead_segments=true"], "delivery: drm.clear_lead_segments: must be a non-negative integer, got True"),
    (["method=PUT"], "delivery: drm.method: must be one of GET, POST, got 'PUT'"),
    (["hls_key_format=widevine"], "delivery: drm.hls_key_format: must be one of identity, fairplay, got 'widevine'"),
    (["service_url=drm.example/info"],
     "delivery: drm.service_url: must be \"\" (derived keys) or an http:// or https:// URL, got 'drm.example/info'"),
    (["timeout=5"], "delivery: drm: unknown key 'timeout' (did you mean 'timeout_s'?)"),
    (["ttl_s=5", "novalue"], "delivery.drm: expected key=value, got 'novalue'"),
    (["=5"], "delivery.drm: expected key=value, got '=5'"),
])
def test_invalid_set_drm_is_rejected_and_the_file_unchanged(store, capsys, settings, message):
    s = ("--store", str(store))
    run(capsys, "partners", "add", "101", "--name", "Acme", *s)
    assert run(capsys, "partners", "set-drm", "101", "ttl_s=30", *s)[0] == 0
    path = catalog_dir(store) / "partners" / "101.json"
    before, st = path.read_bytes(), path.stat()
    assert run(capsys, "partners", "set-drm", "101", *settings, *s) == (
        2, "", f"gateway partners set-drm: partners/101.json: {message}\n")
    assert path.read_bytes() == before and path.stat().st_ino == st.st_ino  # not even rewritten


@pytest.mark.parametrize("kind, encryption, allowed", [
    ("http", "cenc", "http allows none"), ("hds", "aes-128", "hds allows none"),
    ("mss", "cbcs", "mss allows none, cenc"), ("dash", "aes-128", "dash allows none, cenc, cbcs"),
])
def test_set_profile_refuses_a_scheme_the_type_cannot_carry(store, capsys, kind, encryption, allowed):
    s = ("--store", str(store))
    run(capsys, "partners", "add", "101", "--name", "Acme", *s)
    code, out, err = run(capsys, "partners", "set-profile", "101", kind, f"encryption={encryption}", *s)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith(f"gateway partners set-profile: partners/101.json: delivery: profiles.{kind}.encryption: "
                          f"{encryption!r} applies to ") and err.endswith(f" only ({allowed})\n")
    assert read_partner(catalog_dir(store), 101).delivery == {}


def test_entries_add_probes_flavors_and_refuses_what_cannot_be_served(store, capsys):
    """A flavor that is not an MP4 or is truncated would answer 500 to every player: refused with the reason
    (exit 2, nothing written) unless --force, which adds it with a warning. Caption files are not probed."""
    s = ("--store", str(store))
    assert run(capsys, "partners", "add", "101", "--name", "Acme", *s)[0] == 0
    (store / "a" / "text.mp4").write_bytes(b"not a movie at all\n" * 20)
    whole = (store / "a" / "hi.mp4").read_bytes()
    (store / "a" / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    for name, reason in (("text.mp4", "past the end of the file"), ("cut.mp4", "past the end of the file")):
        code, out, err = run(capsys, "entries", "add", "0_bad00001", "--partner", "101", "--name", "x", "--flavor",
                             "a/hi.mp4", "--flavor", f"a/{name}", *s)
        assert (code, out) == (2, ""), err
        assert f"flavors[1].path: 'a/{name}' cannot be served:" in err and reason in err and "--force" in err
        assert "build_sample_table" not in err and "parse_header" not in err  # the file's problem, not our code's
        assert not (catalog_dir(store) / "entries" / "0_bad00001.json").exists()
    code, _, err = run(capsys, "entries", "add", "0_bad00001", "--partner", "101", "--name", "x", "--flavor",
                       "a/cut.mp4", "--force", *s)
    assert code == 0 and "warning: 'a/cut.mp4' cannot be served" in err
    assert (catalog_dir(store) / "entries" / "0_bad00001.json").exists()


def test_entries_sharing_a_file_with_a_secured_entry_are_warned_about_and_signed(store, capsys, gateways):
    """Secured wins for a shared file: adding a secured entry names the entries whose URLs now need signing,
    adding an entry beside a secured one says so, and `gateway urls` / playManifest sign that entry's URLs, which
    a real gateway then serves (an unsigned URL is 403)."""
    s = ("--store", str(store))
    assert run(capsys, "partners", "add", "101", "--name", "Acme", "--secret", SECRET, *s)[0] == 0
    assert run(capsys, "entries", "add", "0_open0001", "--partner", "101", "--name", "open", "--flavor",
               "a/hi.mp4", *s)[0] == 0
    code, _, err = run(capsys, "entries", "add", "0_lock0001", "--partner", "101", "--name", "locked", "--secured",
                       "--flavor", "a/hi.mp4", "--flavor", "a/lo.mp4", *s)
    assert code == 0 and "warning: entry 0_open0001 shares a/hi.mp4 with this secured entry" in err, err
    code, _, err = run(capsys, "entries", "add", "0_open0002", "--partner", "101", "--name", "late", "--flavor",
                       "a/lo.mp4", *s)
    assert code == 0 and "a/lo.mp4 belongs to secured entry 0_lock0001 too" in err, err
    view = Catalog(store, ttl=0).view()
    gw = gateways(store=store)
    urls = entry_urls(view, 101, "0_open0001", gw.base)
    assert all("/s/0_open0001/" in u for k, u in urls.items() if k != "playManifest")
    status, body = _get(urls["url"])
    assert status == 200 and body == (store / "a" / "hi.mp4").read_bytes()
    assert _get(f"{gw.base}/mp4/a/hi.mp4")[0] == 403
    status, body = _get(f"{gw.base}/p/101/playManifest/entryId/0_open0002/format/applehttp/a.m3u8")
    assert status == 200 and body.startswith(b"#EXTM3U")  # redirected to a signed URL, followed by urllib


def _get(url: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_update_and_remove_partners_and_entries(store, capsys, monkeypatch, tmp_path):
    """The catalog's objects change and go away through the CLI, with the same validation as add: a partner with
    entries is removed only with --force (and its entries with it); the store comes from --store, $GATEWAY_STORE or
    the gateway's config file; lists have --json."""
    monkeypatch.setenv("GATEWAY_STORE", str(store))
    assert run(capsys, "partners", "add", "101", "--name", "Acme", "--secret", SECRET)[0] == 0
    code, out, _ = run(capsys, "partners", "update", "101", "--name", "Acme Media", "--new-secret")
    assert code == 0 and json.loads(out)["name"] == "Acme Media"
    assert read_partner(catalog_dir(store), 101).secret != SECRET
    assert run(capsys, "partners", "update", "101", "--secret", "short")[0] == 2
    assert run(capsys, "partners", "update", "102", "--name", "x")[0] == 1
    assert run(capsys, "entries", "add", "0_upd00001", "--partner", "101", "--name", "one",
               "--flavor", "a/hi.mp4")[0] == 0
    code, out, err = run(capsys, "entries", "update", "0_upd00001", "--name", "renamed", "--secured", "--add-flavor",
                         "a/lo.mp4", "--add-caption", "eng=a/hi_eng.vtt")
    assert code == 0, err
    entry = json.loads(out)
    assert (entry["name"], entry["secured"], [f["path"] for f in entry["flavors"]]) == \
        ("renamed", True, ["a/hi.mp4", "a/lo.mp4", "a/hi_eng.vtt"])
    hi = entry["flavors"][0]["id"]
    code, out, _ = run(capsys, "entries", "update", "0_upd00001", "--remove-flavor", hi, "--remove-flavor",
                       "a/hi_eng.vtt", "--public")
    assert code == 0 and [f["path"] for f in json.loads(out)["flavors"]] == ["a/lo.mp4"]
    assert not json.loads(out)["secured"]
    (store / "a" / "bad.mp4").write_bytes(b"\0" * 100)
    code, _, err = run(capsys, "entries", "update", "0_upd00001", "--add-flavor", "a/bad.mp4")
    assert code == 2 and "'a/bad.mp4' cannot be served" in err
    assert run(capsys, "entries", "update", "0_upd00001", "--remove-flavor", "a/lo.mp4")[0] == 2  # no media left
    assert run(capsys, "entries", "update", "0_upd00001", "--remove-flavor", "nope")[0] == 2
    assert run(capsys, "entries", "update", "0_upd00001")[0] == 2  # nothing to change
    assert run(capsys, "entries", "add", "0_upd00002", "--partner", "101", "--name", "two",
               "--flavor", "a/hi.mp4")[0] == 0
    code, out, _ = run(capsys, "entries", "list", "--json")
    assert [e["id"] for e in json.loads(out)] == ["0_upd00001", "0_upd00002"]
    code, _, err = run(capsys, "partners", "remove", "101")
    assert code == 2 and "still has 2 entries (0_upd00001, 0_upd00002)" in err and "--force" in err
    assert run(capsys, "entries", "remove", "0_upd00002")[0] == 0
    assert run(capsys, "entries", "remove", "0_upd00002")[0] == 1
    # the store named by a config file instead of the environment
    monkeypatch.delenv("GATEWAY_STORE")
    config = tmp_path / "gateway.toml"
    config.write_text(f'store = "{store}"\n')
    assert run(capsys, "partners", "list")[0] == 2  # no store anywhere: said
    code, out, _ = run(capsys, "partners", "list", "--json", "--config", str(config))
    assert code == 0 and [p["id"] for p in json.loads(out)] == [101] and "*" in json.loads(out)[0]["secret"]
    code, out, _ = run(capsys, "partners", "remove", "101", "--force", "--config", str(config))
    assert code == 0 and "and its 1 entries" in out
    assert Catalog(store, ttl=0).view().entries() == () and Catalog(store, ttl=0).view().partners() == ()
