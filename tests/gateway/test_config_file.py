"""The one config file: the shipped example equals the defaults, flags win only when given, unknown keys are named."""
from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
from pathlib import Path

import pytest

from gateway.runtime.cli import _parser, flag_overrides
from gateway.runtime.config_file import ConfigError, ConfigSource, ServeConfig, load_serve_config
from gateway.settings import Settings
from rtmp.config import ApplicationConfig, RtmpConfig

from .processes import HANG_GUARD, gateway_command, get, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "gateway.example.toml"


def test_the_example_file_is_every_key_at_its_default():
    config = load_serve_config(EXAMPLE)
    assert config == ServeConfig(settings=Settings())  # store = "media" is Settings' default too
    assert config.rtmp == RtmpConfig()
    text = EXAMPLE.read_text()
    present = set(re.findall(r"^#? ?([a-z0-9_]+) *=", text, re.MULTILINE))  # set, or commented out (default none)
    keys = {f.name for f in dataclasses.fields(Settings)} | {f.name for f in dataclasses.fields(ServeConfig)}
    keys -= {"settings", "rtmp"}
    rtmp_keys = {f.name for f in dataclasses.fields(RtmpConfig)} - {"applications", "default"}
    app_keys = {f.name for f in dataclasses.fields(ApplicationConfig)}
    missing = (keys | rtmp_keys | app_keys) - present
    assert not missing, f"add these keys to gateway.example.toml: {sorted(missing)}"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_flags_override_the_file_only_when_given(tmp_path, store):
    path = write(tmp_path, f'store = "{store}"\nmanifest_max_age = 100\nsegment_duration_ms = 4000\nworkers = 3\n'
                           'access_log = false\n')
    args = _parser().parse_args(["serve", "--config", str(path)])
    assert flag_overrides(args) == {}  # nothing given: defaults of the parser never mask the file
    config = ConfigSource(path, flag_overrides(args)).load()
    assert (config.settings.manifest_max_age, config.settings.segment_duration_ms, config.workers) == (100, 4000, 3)
    assert config.settings.access_log is False and config.settings.segment_max_age == Settings().segment_max_age

    args = _parser().parse_args(["serve", "--config", str(path), "--manifest-max-age", "7", "--segment-duration",
                                 "2.5", "--workers", "1", "--no-access-log"])
    config = ConfigSource(path, flag_overrides(args)).load()
    assert (config.settings.manifest_max_age, config.settings.segment_duration_ms, config.workers) == (7, 2500, 1)


@pytest.mark.parametrize("text, message", [
    ('store = "media"\nmanifest_max_agee = 1\n', "unknown key 'manifest_max_agee' (did you mean 'manifest_max_age'?)"),
    ('store = "media"\nzzz = 1\n', "unknown key 'zzz' (known keys: store, "),
    ('store = "media"\nworkers = "2"\n', "workers must be an integer, got '2'"),
    ('store = "media"\naccess_log = 1\n', "access_log must be true or false"),
    ('store = "media"\nworkers = 0\n', "workers must be between 1 and 256"),
    ('store = "media"\nhls_container = "webm"\n', "HLS container 'webm'"),
    ('store = "media"\n[rtmp]\nidle_timeout = 5\nlive_windw = 3\n',
     "rtmp: unknown setting(s) live_windw (did you mean 'live_window'?)"),
    ('store = "media"\n[rtmp.default]\nrecrd = true\n',
     "rtmp.default: unknown setting(s) recrd (did you mean 'record'?)"),
    ('manifest_max_age = 1\n', "no content store"),
    ('store = "media"\nport = [1\n', "not valid TOML"),
])
def test_bad_files_are_clear_errors(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_serve_config(path)
    assert message in str(error.value)
    assert str(path) in str(error.value) or message == "no content store"


def test_rtmp_table_and_rtmp_config_flag(tmp_path):
    path = write(tmp_path, 'store = "media"\nrtmp_port = 1935\n[rtmp]\nlive_window = 4\n'
                           '[rtmp.applications.cam]\nrecord = true\n')
    config = load_serve_config(path)
    assert config.rtmp_port == 1935 and config.rtmp.live_window == 4
    assert config.rtmp.for_app("cam").record is True and config.rtmp.for_app("other") == ApplicationConfig()
    separate = tmp_path / "rtmp.toml"
    separate.write_text("[rtmp]\nlive_window = 9\n")
    assert load_serve_config(path, rtmp_file=separate).rtmp.live_window == 9  # --rtmp-config replaces the table


def test_rtmp_fan_out_batching_is_configured_and_checked(tmp_path):
    head = 'store = "media"\n[rtmp]\n'
    assert load_serve_config(write(tmp_path, head + "fan_out_ms = 0\n")).rtmp.fan_out_ms == 0
    assert load_serve_config(write(tmp_path, head)).rtmp.fan_out_ms == 20
    for bad in ("-1", "500", '"fast"'):
        with pytest.raises(ConfigError, match="fan_out_ms"):
            load_serve_config(write(tmp_path, head + f"fan_out_ms = {bad}\n"))


def test_serve_reads_the_file_and_flags_win(gateways, store, tmp_path):
    path = write(tmp_path, f'store = "{store}"\nmanifest_max_age = 123\nsegment_max_age = 77\n')
    gw = gateways("--config", str(path), "--segment-max-age", "55")
    assert get(gw.base, "/hls/title_240p.mp4/master.m3u8")[1]["Cache-Control"] == "public, max-age=123"
    assert get(gw.base, "/hls/title_240p.mp4/seg-1.ts")[1]["Cache-Control"] == "public, max-age=55"
    assert gw.stop() == 0


def test_serve_refuses_an_unknown_key_at_startup(tmp_path, store):
    path = write(tmp_path, f'store = "{store}"\nsegment_cache = 64\n')
    result = subprocess.run(gateway_command() + ["serve", "--config", str(path), "--port", "0"],
                            capture_output=True, text=True, timeout=HANG_GUARD)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"gateway serve: {path}: unknown key 'segment_cache'")


def test_a_reload_applies_what_it_can_and_names_what_needs_a_restart(gateways, store, tmp_path):
    path = write(tmp_path, f'store = "{store}"\nmanifest_max_age = 10\n[rtmp]\nlive_window = 4\n')
    gw = gateways("--config", str(path))
    master = "/hls/title_240p.mp4/master.m3u8"
    path.write_text(f'store = "{store}"\nmanifest_max_age = 20\n[rtmp]\nlive_window = 5\n')
    gw.send(signal.SIGHUP)
    wait_until(lambda: get(gw.base, master)[1]["Cache-Control"] == "public, max-age=20", "the reload")
    assert "SIGHUP: rtmp changed: these need a restart" in gw.log.read_text()
    assert gw.stop() == 0
