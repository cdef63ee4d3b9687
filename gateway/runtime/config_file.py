"""One TOML file for everything `gateway serve` takes: ``gateway serve --config gateway.toml``.

The file is flat: every ``Settings`` field under its own name (``segment_duration_ms``, ``manifest_max_age``, ...),
the process options of ``ServeConfig`` (``workers``, ``shutdown_grace``, ``drain_delay``, ``rtmp_port``,
``log_level``) next to them, and the ``[rtmp]`` table that ``rtmp.config.RtmpConfig.from_dict`` reads. Using the
dataclass field names means there is one vocabulary, checked against the dataclasses themselves: an unknown key is a
startup error that names it, never a setting silently ignored. ``gateway.example.toml`` at the repository root lists
every key with its default (a test keeps it equal to ``Settings()``).

Precedence: defaults < config file < command-line flags actually given (``overrides``). Relative paths are relative
to the working directory, as they are for the flags. The same loader runs again on SIGHUP (``ConfigSource.load``),
with the same flags still on top.
"""
from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rtmp.config import ConfigError as RtmpConfigError
from rtmp.config import RtmpConfig

from ..settings import Settings

__all__ = ["ConfigError", "ConfigSource", "check_runnable", "LOG_LEVELS", "ServeConfig", "load_rtmp_table", "load_serve_config"]

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """A configuration that cannot start (or reload) the gateway; the message names the file and the key."""


@dataclass(frozen=True)
class ServeConfig:
    """Everything one `gateway serve` runs with: the per-app ``Settings`` plus what only the processes need."""

    settings: Settings
    workers: int = 1  # HTTP processes sharing the port (SO_REUSEPORT); worker 0 also runs the RTMP ingest
    shutdown_grace: float = 30.0  # seconds in-flight responses get after SIGTERM (or a reload) before being cut
    drain_delay: float = 0.0  # seconds between SIGTERM and closing the port, answering /ready 503 meanwhile
    rtmp_port: int = 0  # 0 = no RTMP ingest
    rtmp: RtmpConfig = field(default_factory=RtmpConfig)
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 256:
            raise ValueError(f"workers must be between 1 and 256, got {self.workers}")
        if self.shutdown_grace < 0 or self.drain_delay < 0:
            raise ValueError("shutdown_grace and drain_delay must be >= 0 seconds")
        if not 0 <= self.rtmp_port <= 65535:
            raise ValueError(f"rtmp_port {self.rtmp_port} out of range")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")

    def restart_only_changes(self, new: ServeConfig) -> list[str]:
        """The keys that differ in ``new`` but cannot change in a running server (the sockets are bound)."""
        pairs = {"host": (self.settings.host, new.settings.host), "port": (self.settings.port, new.settings.port),
                 "rtmp_port": (self.rtmp_port, new.rtmp_port), "rtmp": (self.rtmp, new.rtmp),
                 "admin_host": (self.settings.admin_host, new.settings.admin_host),
                 "admin_port": (self.settings.admin_port, new.settings.admin_port)}
        return [key for key, (old, now) in pairs.items() if old != now]

    def keeping_bound(self, new: ServeConfig) -> ServeConfig:
        """``new`` with this config's restart-only values: what a reload can actually apply."""
        settings = new.settings.replace(host=self.settings.host, port=self.settings.port,
                                        admin_host=self.settings.admin_host, admin_port=self.settings.admin_port)
        return dataclasses.replace(new, settings=settings, rtmp_port=self.rtmp_port, rtmp=self.rtmp)


_SETTINGS_TYPES: dict[str, Any] = typing.get_type_hints(Settings)
_SERVE_TYPES: dict[str, Any] = {name: kind for name, kind in typing.get_type_hints(ServeConfig).items()
                                if name not in ("settings", "rtmp")}
KNOWN_KEYS = tuple(_SETTINGS_TYPES) + tuple(_SERVE_TYPES) + ("rtmp", "state_dir")
DEFAULT_STATE_DIR = "gateway-state"  # local state (live, recordings, catalog) when the store is an origin URL


def _convert(key: str, value: Any, kind: Any, where: str) -> Any:
    """``value`` as a ``kind`` field wants it; TOML has no None, so an optional field is simply left out."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif typing.get_origin(kind) is tuple:  # tuple[str, ...]: a TOML array of strings
        ok = isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)
        value = tuple(value) if ok else value
        kind = "an array of strings"
    elif kind is Path:
        ok = isinstance(value, (str, Path)) and str(value) != ""
        value = Path(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        name = {bool: "true or false", int: "an integer", float: "a number", Path: "a path (string)",
                str: "a string"}.get(kind, getattr(kind, "__name__", str(kind))) if not isinstance(kind, str) else kind
        raise ConfigError(f"{where}: {key} must be {name}, got {value!r}")
    return value


def load_rtmp_table(path: Path) -> Mapping[str, Any]:
    """The ``[rtmp]`` table of a TOML file, or the whole file when it has no such table (``--rtmp-config``)."""
    data = _read_toml(path)
    return data.get("rtmp", data)


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from None


def load_serve_config(path: Path | None, overrides: Mapping[str, Any] | None = None,
                      rtmp_file: Path | None = None) -> ServeConfig:
    """The config file at ``path`` (optional) under ``overrides`` (same keys; the flags given on the command line).

    ``rtmp_file`` (``--rtmp-config``) replaces the file's ``[rtmp]`` table. The store must be named somewhere: serving
    ``./media`` because a key was forgotten would be a surprise.
    """
    where = str(path) if path is not None else "command line"
    values: dict[str, Any] = dict(_read_toml(path)) if path is not None else {}
    unknown = [key for key in values if key not in KNOWN_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} ({did_you_mean(unknown[0], KNOWN_KEYS)})")
    for key, value in (overrides or {}).items():
        if key not in KNOWN_KEYS:
            raise ConfigError(f"command line: unknown setting {key!r}")
        values[key] = value
    rtmp_table = load_rtmp_table(rtmp_file) if rtmp_file is not None else values.pop("rtmp", {})
    values.pop("rtmp", None)
    if not isinstance(rtmp_table, Mapping):
        raise ConfigError(f"{where}: rtmp must be a table ([rtmp])")
    if "store" not in values:
        raise ConfigError("no content store: give --store DIR or store = \"DIR\" in the config file")
    state_dir = values.pop("state_dir", None)
    if isinstance(values["store"], str) and "://" in values["store"]:  # an origin: the store keeps local state only
        values["origin"], values["store"] = values["store"], state_dir or DEFAULT_STATE_DIR
    try:
        settings = Settings(**{k: _convert(k, v, _SETTINGS_TYPES[k], where) for k, v in values.items()
                               if k in _SETTINGS_TYPES})
        serve = {k: _convert(k, v, _SERVE_TYPES[k], where) for k, v in values.items() if k in _SERVE_TYPES}
        rtmp = RtmpConfig.from_dict(rtmp_table)
        return ServeConfig(settings=settings, rtmp=rtmp, **serve)
    except ConfigError:
        raise
    except (RtmpConfigError, ValueError, TypeError) as e:
        source = str(rtmp_file) if rtmp_file is not None and isinstance(e, RtmpConfigError) else where
        raise ConfigError(f"{source}: {e}") from None


@dataclass(frozen=True)
class ConfigSource:
    """Where a running server's configuration comes from, so that SIGHUP can read it again the same way."""

    path: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    rtmp_file: Path | None = None

    def load(self) -> ServeConfig:
        return check_runnable(load_serve_config(self.path, self.overrides, self.rtmp_file))


def check_runnable(config: ServeConfig) -> ServeConfig:
    """What the dataclasses cannot know: that the store exists (a reload pointing elsewhere must not crash-loop)."""
    if config.settings.origin:
        from ..origin.remote import make_store

        try:  # the origin's URL (and an s3:// store's endpoint and credentials), said once, before any socket binds
            make_store(config.settings)
        except ValueError as e:
            raise ConfigError(f"store {config.settings.origin}: {e}") from None
    if config.settings.origin and not config.settings.store.exists():
        try:  # the local state directory of a remote store: ours to make
            config.settings.store.mkdir(parents=True)
        except OSError as e:
            raise ConfigError(f"state directory {config.settings.store}: {e.strerror or e}") from None
    if not config.settings.store.is_dir():
        raise ConfigError(f"store {config.settings.store} is not a directory")
    if config.settings.fallback_store:
        from ..origin.remote import make_store

        try:  # the fallback's directory or URL (an s3:// one's credentials), checked as the store's are
            make_store(config.settings)
        except ValueError as e:
            raise ConfigError(f"fallback store {config.settings.fallback_store}: {e}") from None
    return config


def did_you_mean(key: str, known) -> str:
    """"did you mean 'x'?" when a known key is close to ``key``, else the list of known keys."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
