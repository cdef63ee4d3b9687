"""Choosing the delivery type of one playback request, with Kaltura's rules.

Order of the rules (playManifest + ``kContextDataHelper::selectDeliveryTypeForAuto``):

1. an explicit ``format`` wins when the partner has it enabled, and is a ``SelectionError`` otherwise (also when the
   name is unknown): an explicit request is never silently served as something else;
2. an iOS user agent (iPhone, iPad, iPod, AppleCoreMedia: case-insensitive substrings) gets ``hls`` when enabled;
3. otherwise the preference list: ``secured_default_delivery_type`` (secured entries only), then
   ``short_entries_default_delivery_type`` (entries with ``duration <= short_entries_max_duration``), then
   ``default_delivery_type``; comma lists flattened in order, repeats dropped; the first enabled type wins;
4. when none of them is enabled, Kaltura falls back to the partner's first enabled type (``reset($enabledDeliveryTypes)``
   before the loop); here the order is http, hls, dash, hds, mss. Only a partner with no enabled type at all is an
   error.

Note: iPadOS 13+ Safari announces itself as "Macintosh" by default and is not recognised here (Kaltura neither);
its media requests (AppleCoreMedia) are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .profiles import KALTURA_FORMAT, DeliveryConfig, DeliveryType, ProfileError, enabled_types, parse_format

IOS_USER_AGENT_MARKERS = ("iphone", "ipad", "ipod", "applecoremedia")


class SelectionError(ProfileError):
    """No delivery type can serve this request; the gateway answers 400 with the message."""


@dataclass(frozen=True)
class Decision:
    type: DeliveryType
    reason: str  # one human sentence, for logs and debugging headers
    preference: tuple[DeliveryType, ...]  # types considered, in order


def is_ios(user_agent: str | None) -> bool:
    ua = (user_agent or "").lower()
    return any(marker in ua for marker in IOS_USER_AGENT_MARKERS)


def preference_keys(config: DeliveryConfig, *, duration_seconds: float, secured: bool) -> tuple[str, ...]:
    """The config keys consulted, in Kaltura's order."""
    keys = ["secured_default_delivery_type"] if secured else []
    if duration_seconds <= config.short_entries_max_duration:
        keys.append("short_entries_default_delivery_type")
    keys.append("default_delivery_type")
    return tuple(keys)


def preference_list(config: DeliveryConfig, *, duration_seconds: float, secured: bool) -> tuple[DeliveryType, ...]:
    """Flattened preference: the types of ``preference_keys`` in order, each kept at its first appearance."""
    keys = preference_keys(config, duration_seconds=duration_seconds, secured=secured)
    return tuple(dict.fromkeys(t for key in keys for t in getattr(config, key)))


def _names(types) -> str:
    return ", ".join(types) or "(none)"


def select_delivery(config: DeliveryConfig, *, duration_seconds: float, secured: bool,
                    requested_format: str | None, user_agent: str | None) -> Decision:
    """Decide how to deliver an entry of ``duration_seconds`` (``inf`` for live) to this client."""
    if not isinstance(duration_seconds, (int, float)) or math.isnan(duration_seconds) or duration_seconds < 0:
        raise SelectionError(f"duration_seconds must be a number >= 0, got {duration_seconds!r}")
    enabled = enabled_types(config)

    if requested_format is not None:
        try:
            t = parse_format(requested_format)
        except ProfileError as e:
            raise SelectionError(str(e)) from None
        if t not in enabled:
            raise SelectionError(f"delivery format {requested_format!r} ({t}) is not enabled for this partner; "
                                 f"enabled: {_names(enabled)}")
        return Decision(t, f"format {requested_format!r} was requested and {t} is enabled", (t,))

    considered: tuple[DeliveryType, ...] = ()
    note = ""
    if is_ios(user_agent):
        if DeliveryType.HLS in enabled:
            return Decision(DeliveryType.HLS, f"iOS user agent gets {KALTURA_FORMAT[DeliveryType.HLS]} (hls)",
                            (DeliveryType.HLS,))
        considered, note = (DeliveryType.HLS,), "; iOS user agent, but hls is disabled"

    keys = preference_keys(config, duration_seconds=duration_seconds, secured=secured)
    preference = preference_list(config, duration_seconds=duration_seconds, secured=secured)
    considered = tuple(dict.fromkeys(considered + preference))
    length = "short" if "short_entries_default_delivery_type" in keys else "long"
    cmp = "<=" if length == "short" else ">"
    context = (f"{'secured' if secured else 'unsecured'} {length} entry "
               f"({duration_seconds:g} s {cmp} {config.short_entries_max_duration:g} s){note}")
    for t in preference:
        if t in enabled:
            source = next(key for key in keys if t in getattr(config, key))
            return Decision(t, f"{t} is the first enabled type of {source}, {context}", considered)
    if not enabled:
        raise SelectionError(f"no enabled delivery type among {_names(considered)}: "
                             f"every delivery type is disabled for this partner")
    t = enabled[0]
    return Decision(t, f"none of {_names(preference)} is enabled, so the partner's first enabled type {t} "
                       f"is used (Kaltura's fallback), {context}", considered + (t,))
