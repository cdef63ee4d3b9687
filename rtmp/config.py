"""What each RTMP application (the ``app`` of ``rtmp://host/app/stream``) does with its streams: plain data.

The gateway loads it from TOML (``gateway serve --rtmp-config``); ``from_dict`` validates it once so that a typo is a
startup error, not a surprise at the first publish. Applications not listed get ``default``.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any, Mapping
from urllib.parse import urlsplit

__all__ = ["ApplicationConfig", "RtmpConfig", "ConfigError", "AUTH_MODES", "NOTIFY_CALLBACKS"]

AUTH_MODES = ("none", "key", "callback")
# nginx-rtmp's notify directives (docs/rtmp.md, "Callbacks"): HTTP POSTs with its form fields
NOTIFY_CALLBACKS = ("on_connect", "on_publish", "on_play", "on_publish_done", "on_play_done", "on_done",
                    "on_record_done", "on_update")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ApplicationConfig:
    live: bool = True                 # package live HLS + DASH under <store>/live/<app>/<stream>/
    low_latency: bool = True          # live HLS as LL-HLS (fMP4 parts, blocking reload); false: MPEG-TS segments
    dvr_window_s: float = 0.0         # > 0: live playlists/MPDs list this many seconds (a DVR window), not live_window
    transcode: tuple[str, ...] = ()   # renditions of every publish, e.g. ("480p@1200k", "360p@700k"): <stream>_480p
    record: bool = False              # record every publish to an MP4 under <store>/recordings/<app>/
    push: tuple[str, ...] = ()        # relay every stream to these rtmp://host[:port]/app[/stream] targets
    pull: str | None = None           # rtmp://host[:port]/app to pull a stream from when nobody publishes it here
    publish_auth: str = "none"        # none | key (stream key signed with the partner's secret) | callback
    play_auth: str = "none"
    # nginx-rtmp's callbacks. With publish_auth = "callback", on_publish is that auth call as before (its short
    # form, no redirects); otherwise it is nginx-rtmp's on_publish, asked after publish_auth (same for play)
    on_publish: str | None = None
    on_play: str | None = None
    on_connect: str | None = None
    on_publish_done: str | None = None
    on_play_done: str | None = None
    on_done: str | None = None
    on_record_done: str | None = None
    on_update: str | None = None
    notify_update_timeout: float = 30.0  # seconds between on_update calls of a publisher or player
    notify_method: str = "post"       # get: the callbacks' fields go in the URL's query (nginx-rtmp's notify_method)
    notify_update_strict: bool = False  # true: an on_update answer other than 2xx (3xx, timeout, error) drops too
    notify_relay_redirect: bool = False  # true: an rtmp:// redirect's local stream is named md5(Location) in hex
    partner_id: int | None = None     # whose secret signs this application's stream keys

    def __post_init__(self) -> None:
        from packagers.transcode import parse_rendition
        from packagers.transcode.ladder import MAX_RENDITIONS

        if not isinstance(self.transcode, tuple) or len(self.transcode) > MAX_RENDITIONS:
            raise ConfigError(f"transcode must be a list of at most {MAX_RENDITIONS} renditions")
        try:
            names = [parse_rendition(r).name for r in self.transcode]
        except ValueError as e:
            raise ConfigError(f"transcode: {e}") from None
        if len(set(names)) != len(names):
            raise ConfigError("transcode: two renditions of the same height")
        if isinstance(self.dvr_window_s, bool) or not isinstance(self.dvr_window_s, (int, float)) or not (
                0 <= self.dvr_window_s <= 86400):
            raise ConfigError(f"dvr_window_s must be seconds from 0 (off) to 86400, got {self.dvr_window_s!r}")
        for url in self.push + ((self.pull,) if self.pull else ()):
            parts = urlsplit(url)
            if parts.scheme != "rtmp" or not parts.hostname or not parts.path.strip("/"):
                raise ConfigError(f"{url!r} is not rtmp://host[:port]/app[/stream]")
        for name in NOTIFY_CALLBACKS:
            url = getattr(self, name)
            if url is not None and (not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https")):
                raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")
        if isinstance(self.notify_update_timeout, bool) or not isinstance(self.notify_update_timeout, (int, float)) \
                or self.notify_update_timeout <= 0:
            raise ConfigError("notify_update_timeout must be a number of seconds > 0")
        if self.notify_method not in ("get", "post"):
            raise ConfigError(f"notify_method must be \"get\" or \"post\", got {self.notify_method!r}")
        for mode, callback, what in ((self.publish_auth, self.on_publish, "publish"),
                                     (self.play_auth, self.on_play, "play")):
            if mode not in AUTH_MODES:
                raise ConfigError(f"{what}_auth must be one of {AUTH_MODES}, got {mode!r}")
            if mode == "callback" and not (callback and urlsplit(callback).scheme in ("http", "https")):
                raise ConfigError(f"{what}_auth = \"callback\" needs an http(s) on_{what} URL")
            if mode == "key" and self.partner_id is None:
                raise ConfigError(f"{what}_auth = \"key\" needs partner_id (whose secret signs the keys)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "application") -> ApplicationConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}{_suggest(unknown, known)}; "
                              f"known: {', '.join(sorted(known))}")
        values = dict(data)
        if "push" in values:
            push = values["push"]
            if isinstance(push, str):
                push = [push]
            if not isinstance(push, (list, tuple)) or not all(isinstance(u, str) for u in push):
                raise ConfigError(f"{where}: push must be a list of rtmp:// URLs")
            values["push"] = tuple(push)
        if "transcode" in values:
            if not isinstance(values["transcode"], (list, tuple)):
                raise ConfigError(f"{where}: transcode must be a list like [\"480p@1200k\", \"360p@700k\"]")
            values["transcode"] = tuple(values["transcode"])
        if isinstance(values.get("notify_method"), str):
            values["notify_method"] = values["notify_method"].lower()     # nginx-rtmp takes GET as well as get
        for name in ("live", "low_latency", "record", "notify_update_strict", "notify_relay_redirect"):
            if name in values and not isinstance(values[name], bool):
                raise ConfigError(f"{where}: {name} must be true or false")
        if "partner_id" in values and (not isinstance(values["partner_id"], int) or isinstance(values["partner_id"], bool)):
            raise ConfigError(f"{where}: partner_id must be an integer")
        try:
            return cls(**values)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None


@dataclass(frozen=True)
class RtmpConfig:
    applications: Mapping[str, ApplicationConfig] = field(default_factory=dict)
    default: ApplicationConfig = ApplicationConfig()
    idle_timeout: float = 30.0                  # seconds a publisher (or an idle connection) may stay silent
    live_segment_duration_ms: int = 2000        # live segments end on the first key frame at or after this
    live_window: int = 6                        # segments listed in a live playlist / MPD
    live_part_duration_ms: int = 500            # LL-HLS parts: PART-TARGET, no part is longer
    # players get each stream's messages in batches of this many milliseconds (rtmp.relay.Relay): one write per
    # player per batch, not per message; it adds up to this much to their lag. 0: every message as it comes
    fan_out_ms: float = 20.0

    def for_app(self, app: str) -> ApplicationConfig:
        return self.applications.get(app, self.default)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RtmpConfig:
        """From the ``[rtmp]`` table of the config file: scalar settings, ``[rtmp.default]`` and
        ``[rtmp.applications.<name>]``."""
        data = dict(data)
        apps = data.pop("applications", {}) or {}
        if not isinstance(apps, Mapping):
            raise ConfigError("rtmp.applications must be a table of applications")
        default = ApplicationConfig.from_dict(data.pop("default", {}) or {}, "rtmp.default")
        applications = {name: ApplicationConfig.from_dict(v, f"rtmp.applications.{name}") for name, v in apps.items()}
        known = {"idle_timeout", "live_segment_duration_ms", "live_window", "live_part_duration_ms", "fan_out_ms"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"rtmp: unknown setting(s) {', '.join(unknown)}{_suggest(unknown, known)}")
        config = cls(applications, default, **data)
        if config.idle_timeout <= 0 or config.live_segment_duration_ms <= 0 or config.live_window < 2:
            raise ConfigError("rtmp: idle_timeout and live_segment_duration_ms must be > 0, live_window >= 2")
        if not isinstance(config.live_part_duration_ms, int) or not (
                100 <= config.live_part_duration_ms <= config.live_segment_duration_ms):
            raise ConfigError("rtmp: live_part_duration_ms must be whole milliseconds from 100 to "
                              "live_segment_duration_ms")
        if not isinstance(config.fan_out_ms, (int, float)) or not 0 <= config.fan_out_ms <= 200:
            raise ConfigError("rtmp: fan_out_ms must be a number of milliseconds from 0 to 200")
        return config


def _suggest(unknown: list[str], known) -> str:
    """ (did you mean 'x'?) for the first unknown key close to a known one."""
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        if close:
            return f" (did you mean {close[0]!r}?)"
    return ""
