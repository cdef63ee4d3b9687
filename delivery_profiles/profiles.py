"""Delivery types, per-type delivery profiles and the partner configuration (system defaults ⊕ partner override).

Names follow Kaltura: the request format names of playManifest (``url``, ``applehttp``, ``mpegdash``,
``hdnetworkmanifest``, ``smooth``) and the four delivery keys of ``base.ini`` (``short_entries_max_duration``,
``short_entries_default_delivery_type``, ``secured_default_delivery_type``, ``default_delivery_type``).

A partner override is a *partial* JSON-like dict laid over ``SYSTEM_DEFAULTS`` by ``merge``. Every value is
validated where it is stored (the dataclasses' ``__post_init__``), so a config built directly or by ``merge`` is
equally checked, and every message is one line that starts with the path of the bad key
(``profiles.hls.segment_duration_ms: must be a positive integer, got 0``). Unknown keys are always errors.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


class ProfileError(ValueError):
    """A bad delivery configuration or delivery request; the message is one line naming the bad key path."""


class DeliveryType(enum.StrEnum):
    """Internal delivery types; the value is also the name used in configs and in ``to_dict``."""

    HTTP = "http"  # progressive download of the MP4 itself
    HLS = "hls"
    DASH = "dash"
    HDS = "hds"
    MSS = "mss"


# playManifest's ``format`` names (Kaltura PlaybackProtocol) → internal type.
FORMAT_NAMES: Mapping[str, DeliveryType] = MappingProxyType({
    "url": DeliveryType.HTTP,
    "applehttp": DeliveryType.HLS,
    "mpegdash": DeliveryType.DASH,
    "hdnetworkmanifest": DeliveryType.HDS,
    "smooth": DeliveryType.MSS,
})
KALTURA_FORMAT: Mapping[DeliveryType, str] = MappingProxyType({t: name for name, t in FORMAT_NAMES.items()})
_BY_NAME: dict[str, DeliveryType] = {**FORMAT_NAMES, **{t.value: t for t in DeliveryType}}

# What a partner may turn off beyond whole delivery types (issue 13): nginx-vod-module's request grammar beyond plain
# playback. I-frame playlists are the hls profile's ``iframes`` (they belong to one protocol).
FEATURES = ("clipping", "track_selection", "thumbnails", "captions")
HLS_CONTAINERS = ("auto", "ts", "fmp4")  # auto: the gateway decides per presentation (fMP4 for HEVC)
# aes-128: HLS whole-segment AES-128 (RFC 8216 §4.3.2.4); sample-aes: Apple's HLS sample encryption (MPEG-TS);
# cenc / cbcs: ISO/IEC 23001-7 Common Encryption schemes (fMP4). Which container carries them is the gateway's choice.
ENCRYPTIONS = ("none", "aes-128", "sample-aes", "cenc", "cbcs")
ENCRYPTIONS_BY_TYPE: Mapping[DeliveryType, tuple[str, ...]] = MappingProxyType({
    DeliveryType.HTTP: ("none",),
    DeliveryType.HLS: ENCRYPTIONS,
    DeliveryType.DASH: ("none", "cenc", "cbcs"),
    DeliveryType.HDS: ("none",),
    DeliveryType.MSS: ("none", "cenc"),  # PlayReady on Smooth Streaming is AES-CTR only
})
DRM_METHODS = ("GET", "POST")
HLS_KEY_FORMATS = ("identity", "fairplay")  # EXT-X-KEY KEYFORMAT: identity, or com.apple.streamingkeydelivery


def _lookup(name: object) -> DeliveryType | None:
    return _BY_NAME.get(name.strip().lower()) if isinstance(name, str) else None


def parse_format(name: str) -> DeliveryType:
    """Kaltura format name (``applehttp``) or internal name (``hls``), case-insensitive → ``DeliveryType``."""
    t = _lookup(name)
    if t is None:
        raise ProfileError(f"unknown delivery format {name!r} (known: {', '.join(_BY_NAME)})")
    return t


def _fail(path: str, message: str) -> ProfileError:
    return ProfileError(f"{path}: {message}" if path else message)


def _check_keys(obj: Mapping, allowed: tuple[str, ...], path: str) -> None:
    for key in obj:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
            raise _fail(path, f"unknown key {key!r}{hint}")


def _type_list(value: object, path: str, *, allow_empty: bool) -> tuple[DeliveryType, ...]:
    """A Kaltura-style ``"hls,dash"`` string or a list of names → tuple of types, in order."""
    if isinstance(value, str):
        items: list[object] = value.split(",") if value.strip() else []
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise _fail(path, f"must be a comma-separated string or a list of delivery types, got {value!r}")
    types = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise _fail(path, f"empty or non-string item {item!r} in {value!r}")
        t = _lookup(item)
        if t is None:
            raise _fail(path, f"unknown delivery type {item.strip()!r}")
        types.append(t)
    if not types and not allow_empty:
        raise _fail(path, "must name at least one delivery type")
    return tuple(types)


def _json_like(value: object, path: str) -> object:
    """Deep copy of a JSON value (str keys; str/int/float/bool/None/list/dict), or a ProfileError at its path."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(path, f"must be a finite number, got {value!r}")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_like(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _fail(path, f"keys must be strings, got {k!r}")
            out[k] = _json_like(v, f"{path}.{k}")
        return out
    raise _fail(path, f"not a JSON value: {value!r}")


@dataclass(frozen=True)
class DeliveryProfile:
    """How one delivery type is served to a partner. ``extra`` carries free-form JSON settings for later use."""

    type: DeliveryType
    enabled: bool = True
    segment_duration_ms: int = 6000
    hls_container: str = "auto"  # hls only: "ts", "fmp4" or "auto"
    encryption: str = "none"  # one of ENCRYPTIONS_BY_TYPE[type]; keys and DRM settings: DeliveryConfig.drm
    iframes: bool = True  # hls only: I-frame playlists (trick play) in TS master playlists
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        t = _lookup(self.type)
        if t is None:
            raise ProfileError(f"profiles: unknown delivery type {self.type!r}")
        object.__setattr__(self, "type", t)
        path = f"profiles.{t}"
        if not isinstance(self.enabled, bool):
            raise _fail(f"{path}.enabled", f"must be true or false, got {self.enabled!r}")
        ms = self.segment_duration_ms
        if not isinstance(ms, int) or isinstance(ms, bool) or ms <= 0:
            raise _fail(f"{path}.segment_duration_ms", f"must be a positive integer, got {ms!r}")
        if self.hls_container not in HLS_CONTAINERS:
            raise _fail(f"{path}.hls_container", f"must be one of {', '.join(HLS_CONTAINERS)}, got {self.hls_container!r}")
        if t is not DeliveryType.HLS and self.hls_container != "auto":
            raise _fail(f"{path}.hls_container", "applies to hls only (leave it 'auto')")
        if self.encryption not in ENCRYPTIONS:
            raise _fail(f"{path}.encryption", f"must be one of {', '.join(ENCRYPTIONS)}, got {self.encryption!r}")
        if self.encryption not in ENCRYPTIONS_BY_TYPE[t]:
            types = [u.value for u, allowed in ENCRYPTIONS_BY_TYPE.items() if self.encryption in allowed]
            raise _fail(f"{path}.encryption", f"{self.encryption!r} applies to {_and(types)} only "
                                              f"({t} allows {', '.join(ENCRYPTIONS_BY_TYPE[t])})")
        if not isinstance(self.iframes, bool):
            raise _fail(f"{path}.iframes", f"must be true or false, got {self.iframes!r}")
        if t is not DeliveryType.HLS and not self.iframes:
            raise _fail(f"{path}.iframes", "applies to hls only")
        if not isinstance(self.extra, Mapping):
            raise _fail(f"{path}.extra", f"must be an object, got {self.extra!r}")
        object.__setattr__(self, "extra", MappingProxyType(_json_like(self.extra, f"{path}.extra")))


def _and(items: list[str]) -> str:
    return " and ".join(items) if len(items) <= 2 else f"{', '.join(items[:-1])} and {items[-1]}"


def _number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or isinstance(value, float) and math.isfinite(value)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class DrmConfig:
    """Where a partner's content keys come from and how they are used (issue 14), for every protected type.

    Keys come from the DRM info service at ``service_url`` (nginx-vod-module's JSON answer), or, when it is empty,
    are derived from the partner secret and licensed by the gateway itself (ClearKey). Which types are encrypted, and
    how, is each profile's ``encryption``; this section says nothing about that.
    """

    service_url: str = ""  # "" = keys derived from the partner secret; else the DRM info service (http or https)
    method: str = "GET"  # how the service is asked: GET or POST (any case, stored upper case)
    timeout_s: float = 5.0  # per request to the service; past it the media request fails (503), never clear
    ttl_s: int = 300  # seconds an answer is cached per entry; 0 asks every time
    clear_lead_segments: int = 0  # the first N segments of every rendition are sent clear (faster start)
    hls_key_format: str = "identity"  # EXT-X-KEY KEYFORMAT of SAMPLE-AES / cbcs HLS: identity or fairplay

    def __post_init__(self) -> None:
        url = self.service_url
        if not isinstance(url, str) or url and not _service_url(url):
            raise _fail("drm.service_url", f"must be \"\" (derived keys) or an http:// or https:// URL, got {url!r}")
        method = self.method.upper() if isinstance(self.method, str) else self.method
        if method not in DRM_METHODS:
            raise _fail("drm.method", f"must be one of {', '.join(DRM_METHODS)}, got {self.method!r}")
        object.__setattr__(self, "method", method)
        t = self.timeout_s
        if not _number(t) or t <= 0:
            raise _fail("drm.timeout_s", f"must be a positive number of seconds, got {t!r}")
        if t > 60:  # a player waits on this request: a longer wait is an outage, not a slow service
            raise _fail("drm.timeout_s", f"must be at most 60 seconds, got {t!r}")
        object.__setattr__(self, "timeout_s", float(t))
        if not _count(self.ttl_s):
            raise _fail("drm.ttl_s", f"must be a non-negative integer number of seconds, got {self.ttl_s!r}")
        if not _count(self.clear_lead_segments):
            raise _fail("drm.clear_lead_segments", f"must be a non-negative integer, got {self.clear_lead_segments!r}")
        if self.hls_key_format not in HLS_KEY_FORMATS:
            raise _fail("drm.hls_key_format",
                        f"must be one of {', '.join(HLS_KEY_FORMATS)}, got {self.hls_key_format!r}")


def _service_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # a malformed port raises ValueError here
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in url)


def _default_profiles() -> dict[DeliveryType, DeliveryProfile]:
    # One segment duration for every type: segment k then carries the same samples in every protocol, so all
    # protocols share one SegmentPlan (and nginx-vod-module's vod_segment_duration is one value for all, too).
    return {t: DeliveryProfile(t) for t in DeliveryType}


@dataclass(frozen=True)
class DeliveryConfig:
    """A partner's delivery rules: Kaltura's four ``base.ini`` keys plus one ``DeliveryProfile`` per type.

    The ``*_delivery_type`` values are ordered preference lists (Kaltura reads them as ``"hls,dash"``); a string or
    any sequence of names is accepted and stored as a tuple of ``DeliveryType``. ``default_delivery_type`` must name
    at least one type; the secured and short-entry lists may be empty (no preference of their own).
    """

    short_entries_max_duration: float = 300  # seconds; an entry is short when duration <= this
    short_entries_default_delivery_type: tuple[DeliveryType, ...] = (DeliveryType.HTTP,)
    secured_default_delivery_type: tuple[DeliveryType, ...] = (DeliveryType.HTTP,)
    default_delivery_type: tuple[DeliveryType, ...] = (DeliveryType.HTTP,)
    profiles: Mapping[DeliveryType, DeliveryProfile] = field(default_factory=_default_profiles, hash=False)
    features: Mapping[str, bool] = field(default_factory=lambda: dict.fromkeys(FEATURES, True), hash=False)
    drm: DrmConfig = field(default_factory=DrmConfig)

    def __post_init__(self) -> None:
        d = self.short_entries_max_duration
        if not isinstance(d, (int, float)) or isinstance(d, bool) or not math.isfinite(d) or d < 0:
            raise _fail("short_entries_max_duration", f"must be a non-negative number of seconds, got {d!r}")
        object.__setattr__(self, "short_entries_max_duration", float(d))
        for key in LIST_KEYS:
            value = _type_list(getattr(self, key), key, allow_empty=key != "default_delivery_type")
            object.__setattr__(self, key, value)
        if not isinstance(self.profiles, Mapping):
            raise _fail("profiles", f"must be an object, got {self.profiles!r}")
        profiles: dict[DeliveryType, DeliveryProfile] = {}
        for key, profile in self.profiles.items():
            t = _lookup(key)
            if t is None:
                raise _fail("profiles", f"unknown delivery type {key!r}")
            if not isinstance(profile, DeliveryProfile) or profile.type is not t:
                raise _fail(f"profiles.{t}", f"must be a DeliveryProfile of type {t}, got {profile!r}")
            profiles[t] = profile
        missing = [t.value for t in DeliveryType if t not in profiles]
        if missing:
            raise _fail("profiles", f"missing profile for {', '.join(missing)}")
        object.__setattr__(self, "profiles", MappingProxyType({t: profiles[t] for t in DeliveryType}))
        if not isinstance(self.features, Mapping):
            raise _fail("features", f"must be an object, got {self.features!r}")
        _check_keys(self.features, FEATURES, "features")
        for key, on in self.features.items():
            if not isinstance(on, bool):
                raise _fail(f"features.{key}", f"must be true or false, got {on!r}")
        object.__setattr__(self, "features", MappingProxyType({f: self.features.get(f, True) for f in FEATURES}))
        if not isinstance(self.drm, DrmConfig):
            raise _fail("drm", f"must be a DrmConfig, got {self.drm!r}")

    def allows(self, feature: str) -> bool:
        return self.features[feature]

    def profile(self, t: DeliveryType | str) -> DeliveryProfile:
        return self.profiles[parse_format(t)]

    def is_enabled(self, t: DeliveryType | str) -> bool:
        return self.profile(t).enabled


LIST_KEYS = ("short_entries_default_delivery_type", "secured_default_delivery_type", "default_delivery_type")
TOP_KEYS = ("short_entries_max_duration", *LIST_KEYS, "profiles", "features", "drm")
PROFILE_KEYS = ("enabled", "segment_duration_ms", "hls_container", "encryption", "iframes", "extra")
DRM_KEYS = tuple(f.name for f in dataclasses.fields(DrmConfig))

# Kaltura base.ini: short_entries_max_duration = 300, the three *_delivery_type = http; every type enabled.
SYSTEM_DEFAULTS = DeliveryConfig()


def merge(defaults: DeliveryConfig, override: Mapping[str, Any]) -> DeliveryConfig:
    """``defaults`` ⊕ a partial partner override. Scalars and lists replace; ``profiles.<type>`` merges key by key,
    and ``profiles.<type>.extra`` merges one level deep; ``drm`` merges key by key. Raises ``ProfileError`` naming the
    bad key path."""
    if not isinstance(override, Mapping):
        raise ProfileError(f"override: must be an object, got {type(override).__name__}")
    _check_keys(override, TOP_KEYS, "")
    changes: dict[str, Any] = {k: v for k, v in override.items() if k not in ("profiles", "features", "drm")}
    if "drm" in override:
        drm = override["drm"]
        if not isinstance(drm, Mapping):
            raise _fail("drm", f"must be an object, got {drm!r}")
        _check_keys(drm, DRM_KEYS, "drm")
        changes["drm"] = dataclasses.replace(defaults.drm, **drm)
    if "features" in override:
        features = override["features"]
        if not isinstance(features, Mapping):
            raise _fail("features", f"must be an object, got {features!r}")
        changes["features"] = {**defaults.features, **features}
    if "profiles" in override:
        ps = override["profiles"]
        if not isinstance(ps, Mapping):
            raise _fail("profiles", f"must be an object, got {ps!r}")
        profiles = dict(defaults.profiles)
        seen: dict[DeliveryType, str] = {}
        for key, p in ps.items():
            t = _lookup(key)
            if t is None:
                raise _fail("profiles", f"unknown delivery type {key!r}")
            if t in seen:
                raise _fail(f"profiles.{key}", f"same delivery type as {seen[t]!r}")
            seen[t] = key
            if not isinstance(p, Mapping):
                raise _fail(f"profiles.{t}", f"must be an object, got {p!r}")
            _check_keys(p, PROFILE_KEYS, f"profiles.{t}")
            fields = dict(p)
            if "extra" in fields:
                if not isinstance(fields["extra"], Mapping):
                    raise _fail(f"profiles.{t}.extra", f"must be an object, got {fields['extra']!r}")
                fields["extra"] = {**profiles[t].extra, **fields["extra"]}
            profiles[t] = dataclasses.replace(profiles[t], **fields)
        changes["profiles"] = profiles
    return dataclasses.replace(defaults, **changes)


def loads_override(text: str | bytes) -> dict[str, Any]:
    """Parse a partner override file (JSON). Duplicate keys and NaN/Infinity are errors, never silently taken."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ProfileError(f"override: duplicate key {k!r}")
            out[k] = v
        return out

    def constant(name: str) -> None:
        raise ProfileError(f"override: {name} is not a number")

    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProfileError(f"override: invalid JSON: {e}") from None
    except RecursionError:
        raise ProfileError("override: invalid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise ProfileError(f"override: must be an object, got {type(value).__name__}")
    return value


def to_dict(config: DeliveryConfig) -> dict[str, Any]:
    """JSON-serialisable full form of ``config``; ``merge(SYSTEM_DEFAULTS, to_dict(c)) == c``."""
    return {
        "short_entries_max_duration": config.short_entries_max_duration,
        **{key: [t.value for t in getattr(config, key)] for key in LIST_KEYS},
        "profiles": {
            t.value: {
                "enabled": p.enabled,
                "segment_duration_ms": p.segment_duration_ms,
                "hls_container": p.hls_container,
                "encryption": p.encryption,
                "iframes": p.iframes,
                "extra": json.loads(json.dumps(dict(p.extra))),
            }
            for t, p in config.profiles.items()
        },
        "features": dict(config.features),
        "drm": dataclasses.asdict(config.drm),
    }


def enabled_types(config: DeliveryConfig) -> tuple[DeliveryType, ...]:
    """The partner's enabled delivery types, in the fixed order http, hls, dash, hds, mss."""
    return tuple(t for t, p in config.profiles.items() if p.enabled)
