"""`gateway check` and `gateway serve --check`: the catalog and every flavor file read as a request would, before
players find the problems. Ground truth: files made broken on purpose (truncated, not an MP4, fragmented by ffmpeg)
next to good fixtures, and a hand-broken catalog file."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from fixtures.generate import fixture_path
from gateway.catalog.catalog import Entry, Flavor, Partner, catalog_dir, write_entry, write_partner

SECRET = "ab" * 32


def gateway(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def checked_store(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copyfile(fixture_path("title_180p.mp4"), store / "good.mp4")
    shutil.copyfile(fixture_path("hevc.mp4"), store / "hevc.mp4")
    whole = (store / "good.mp4").read_bytes()
    (store / "cut.mp4").write_bytes(whole[: len(whole) // 3])
    (store / "text.mp4").write_text("this is not a movie\n" * 50)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(store / "good.mp4"), "-c", "copy", "-movflags",
                    "frag_keyframe+empty_moov", str(store / "frag.mp4")], check=True, timeout=60)
    directory = catalog_dir(store)
    write_partner(directory, Partner(101, "Acme", SECRET, {}))
    for i, names in enumerate((["good.mp4", "hevc.mp4"], ["cut.mp4"], ["text.mp4"], ["frag.mp4"], ["later.mp4"])):
        flavors = tuple(Flavor(f"1_flav00{i}{j}", name) for j, name in enumerate(names))
        write_entry(directory, Entry(f"0_check00{i}", 101, f"e{i}", False, flavors))
    (directory / "partners" / "102.json").write_text('{"id": 102, "name": "broken"')  # truncated by hand
    return store


def test_check_reports_every_broken_file_and_catalog_problem(checked_store):
    r = gateway("check", "--store", str(checked_store))
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    errors = {line.split(": ")[1] for line in lines if line.startswith("error: ")}
    assert errors == {"cut.mp4", "text.mp4", "frag.mp4", "partners/102.json"}, lines
    assert any(line.startswith("error: frag.mp4: cannot be served: fragmented MP4") for line in lines), lines
    warnings = {line.split(": ")[1] for line in lines if line.startswith("warning: ")}
    assert warnings == {"hevc.mp4", "entries/0_check004.json"}, lines  # HEVC in browsers; later.mp4 not there yet
    assert lines[-1] == "not ready: 1 partner(s), 5 entries, 5 file(s) read: 4 error(s), 2 warning(s)"
    doc = json.loads(gateway("check", "--store", str(checked_store), "--json").stdout)
    assert doc["ok"] is False and len(doc["findings"]) == len(errors) + len(warnings)
    # serve --check: the same report for the store a configuration names, without serving
    config = checked_store.parent / "gateway.toml"
    config.write_text(f'store = "{checked_store}"\nport = 1\n')
    served = gateway("serve", "--check", "--config", str(config))
    assert served.returncode == 1 and served.stdout == r.stdout
    config.write_text(f'store = "{checked_store}"\nsegment_durations = 4\n')  # a misspelt key
    assert gateway("serve", "--check", "--config", str(config)).returncode == 2


def test_a_clean_catalog_passes(checked_store):
    directory = catalog_dir(checked_store)
    for name in ("0_check001", "0_check002", "0_check003", "0_check004"):
        (directory / "entries" / f"{name}.json").unlink()
    (directory / "partners" / "102.json").unlink()
    r = gateway("check", "--store", str(checked_store))
    assert r.returncode == 0, r.stdout
    assert r.stdout.splitlines()[-1] == "ok: 1 partner(s), 1 entry, 2 file(s) read: 0 error(s), 1 warning(s)"
