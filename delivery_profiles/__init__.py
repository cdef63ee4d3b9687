"""Delivery rules and per-partner overrides: plain data and resolution, stdlib only, no I/O.

* ``profiles``: delivery types, Kaltura format names, ``DeliveryConfig`` (system defaults ⊕ partner override).
* ``selection``: which delivery type serves a request (Kaltura's rules).
* ``tokens``: signed URL prefixes, ks session tokens and RTMP stream keys.
"""
from .profiles import (
    ENCRYPTIONS,
    ENCRYPTIONS_BY_TYPE,
    FEATURES,
    FORMAT_NAMES,
    KALTURA_FORMAT,
    SYSTEM_DEFAULTS,
    DeliveryConfig,
    DeliveryProfile,
    DeliveryType,
    DrmConfig,
    ProfileError,
    enabled_types,
    loads_override,
    merge,
    parse_format,
    to_dict,
)
from .selection import Decision, SelectionError, is_ios, preference_list, select_delivery
from .tokens import (
    KsPayload,
    TokenError,
    make_ks,
    new_secret,
    sign_path,
    stream_key,
    verify_ks,
    verify_path,
    verify_stream_key,
)

__all__ = [
    "FEATURES", "FORMAT_NAMES", "KALTURA_FORMAT", "SYSTEM_DEFAULTS", "DeliveryConfig", "DeliveryProfile",
    "DeliveryType", "DrmConfig", "ENCRYPTIONS", "ENCRYPTIONS_BY_TYPE",
    "ProfileError", "enabled_types", "loads_override", "merge", "parse_format", "to_dict",
    "Decision", "SelectionError", "is_ios", "preference_list", "select_delivery",
    "KsPayload", "TokenError", "make_ks", "new_secret", "sign_path", "stream_key", "verify_ks", "verify_path",
    "verify_stream_key",
]
