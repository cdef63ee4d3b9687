"""Delivery types, system defaults, partner overrides (merge + validation) and the to_dict round trip."""
import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery_profiles import (
    FORMAT_NAMES, SYSTEM_DEFAULTS, DeliveryConfig, DeliveryProfile, DeliveryType, ProfileError, enabled_types,
    loads_override, merge, parse_format, to_dict,
)

HTTP, HLS, DASH, HDS, MSS = DeliveryType


@pytest.mark.parametrize("name, expected", [
    ("url", HTTP), ("applehttp", HLS), ("mpegdash", DASH), ("hdnetworkmanifest", HDS), ("smooth", MSS),
    ("http", HTTP), ("hls", HLS), ("dash", DASH), ("hds", HDS), ("mss", MSS), ("AppleHTTP", HLS), (" hls ", HLS),
])
def test_parse_format(name, expected):
    assert parse_format(name) is expected


@pytest.mark.parametrize("name", ["flash", "", "rtmp", "apple http", None, 3])
def test_parse_format_unknown(name):
    with pytest.raises(ProfileError, match=r"^unknown delivery format .*\(known: url, applehttp"):
        parse_format(name)


def test_format_names_cover_every_type_once():
    assert sorted(FORMAT_NAMES.values()) == sorted(DeliveryType)


def test_system_defaults_are_kalturas_base_ini():
    c = SYSTEM_DEFAULTS
    assert c.short_entries_max_duration == 300
    assert c.short_entries_default_delivery_type == c.secured_default_delivery_type == c.default_delivery_type == (HTTP,)
    assert list(c.profiles) == list(DeliveryType)
    for t, p in c.profiles.items():
        assert (p.type, p.enabled, p.segment_duration_ms, p.hls_container, p.encryption, dict(p.extra)) == \
            (t, True, 6000, "auto", "none", {})
    assert enabled_types(c) == tuple(DeliveryType)
    assert DeliveryConfig() == SYSTEM_DEFAULTS


def test_partial_override():
    c = merge(SYSTEM_DEFAULTS, {"default_delivery_type": "hls,dash", "profiles": {
        "hds": {"enabled": False}, "hls": {"segment_duration_ms": 4000, "encryption": "aes-128"}}})
    assert c.default_delivery_type == (HLS, DASH)
    assert c.short_entries_default_delivery_type == (HTTP,) and c.short_entries_max_duration == 300
    assert enabled_types(c) == (HTTP, HLS, DASH, MSS)
    hls = c.profiles[HLS]
    assert (hls.segment_duration_ms, hls.encryption, hls.hls_container, hls.enabled) == (4000, "aes-128", "auto", True)
    assert c.profiles[DASH] == SYSTEM_DEFAULTS.profiles[DASH]
    assert SYSTEM_DEFAULTS.profiles[HLS].segment_duration_ms == 6000  # defaults untouched


def test_overrides_stack_and_lists_accept_both_spellings():
    a = merge(SYSTEM_DEFAULTS, {"profiles": {"hls": {"hls_container": "fmp4", "extra": {"cdn": "a", "keep": 1}}}})
    b = merge(a, {"default_delivery_type": ["applehttp", " mpegdash "],
                  "profiles": {"applehttp": {"extra": {"cdn": "b"}}, "smooth": {"enabled": False}}})
    assert b.default_delivery_type == (HLS, DASH)
    assert b.profiles[HLS].hls_container == "fmp4"
    assert dict(b.profiles[HLS].extra) == {"cdn": "b", "keep": 1}
    assert not b.profiles[MSS].enabled
    assert merge(SYSTEM_DEFAULTS, {"default_delivery_type": "HLS, dash"}).default_delivery_type == (HLS, DASH)


def test_empty_override_is_identity():
    assert merge(SYSTEM_DEFAULTS, {}) == SYSTEM_DEFAULTS
    assert merge(SYSTEM_DEFAULTS, {"profiles": {}}) == SYSTEM_DEFAULTS


@pytest.mark.parametrize("override, message", [
    ({"profils": {}}, "unknown key 'profils' (did you mean 'profiles'?)"),
    ({"colour": "red"}, "unknown key 'colour' (allowed: short_entries_max_duration"),
    ({"profiles": {"hls": {"segment_duration": 4000}}}, "profiles.hls: unknown key 'segment_duration' (did you mean"),
    ({"profiles": {"hls": {"type": "dash"}}}, "profiles.hls: unknown key 'type'"),
    ({"profiles": {"flash": {}}}, "profiles: unknown delivery type 'flash'"),
    ({"profiles": {"hls": {}, "applehttp": {}}}, "profiles.applehttp: same delivery type as 'hls'"),
    ({"profiles": []}, "profiles: must be an object"),
    ({"profiles": {"hls": True}}, "profiles.hls: must be an object"),
    ({"profiles": {"hls": {"segment_duration_ms": 0}}}, "profiles.hls.segment_duration_ms: must be a positive integer"),
    ({"profiles": {"dash": {"segment_duration_ms": -6000}}}, "profiles.dash.segment_duration_ms: must be a positive"),
    ({"profiles": {"dash": {"segment_duration_ms": 6000.0}}}, "profiles.dash.segment_duration_ms: must be a positive"),
    ({"profiles": {"dash": {"segment_duration_ms": "6000"}}}, "profiles.dash.segment_duration_ms: must be a positive"),
    ({"profiles": {"dash": {"segment_duration_ms": True}}}, "profiles.dash.segment_duration_ms: must be a positive"),
    ({"profiles": {"hds": {"enabled": "no"}}}, "profiles.hds.enabled: must be true or false, got 'no'"),
    ({"profiles": {"hds": {"enabled": 0}}}, "profiles.hds.enabled: must be true or false"),
    ({"profiles": {"hls": {"hls_container": "mp4"}}}, "profiles.hls.hls_container: must be one of auto, ts, fmp4"),
    ({"profiles": {"dash": {"hls_container": "ts"}}}, "profiles.dash.hls_container: applies to hls only"),
    ({"profiles": {"hls": {"encryption": "aes-256"}}}, "profiles.hls.encryption: must be one of none, aes-128"),
    ({"profiles": {"mss": {"encryption": "aes-128"}}}, "profiles.mss.encryption: 'aes-128' applies to hls only"),
    ({"profiles": {"hls": {"iframes": "off"}}}, "profiles.hls.iframes: must be true or false, got 'off'"),
    ({"profiles": {"dash": {"iframes": False}}}, "profiles.dash.iframes: applies to hls only"),
    ({"profiles": {"hls": {"extra": []}}}, "profiles.hls.extra: must be an object"),
    ({"profiles": {"hls": {"extra": {"a": {"b": float("nan")}}}}}, "profiles.hls.extra.a.b: must be a finite number"),
    ({"profiles": {"hls": {"extra": {"a": [1, object()]}}}}, "profiles.hls.extra.a[1]: not a JSON value"),
    ({"default_delivery_type": "flash"}, "default_delivery_type: unknown delivery type 'flash'"),
    ({"default_delivery_type": "hls,flash"}, "default_delivery_type: unknown delivery type 'flash'"),
    ({"default_delivery_type": "hls,,dash"}, "default_delivery_type: empty or non-string item '' in 'hls,,dash'"),
    ({"default_delivery_type": ""}, "default_delivery_type: must name at least one delivery type"),
    ({"default_delivery_type": []}, "default_delivery_type: must name at least one delivery type"),
    ({"secured_default_delivery_type": ["hls", 3]}, "secured_default_delivery_type: empty or non-string item 3"),
    ({"short_entries_default_delivery_type": 5}, "short_entries_default_delivery_type: must be a comma-separated"),
    ({"short_entries_max_duration": -1}, "short_entries_max_duration: must be a non-negative number of seconds"),
    ({"short_entries_max_duration": "300"}, "short_entries_max_duration: must be a non-negative number"),
    ({"short_entries_max_duration": float("inf")}, "short_entries_max_duration: must be a non-negative number"),
    ({"short_entries_max_duration": None}, "short_entries_max_duration: must be a non-negative number"),
])
def test_validation_messages_name_the_key_path(override, message):
    with pytest.raises(ProfileError) as info:
        merge(SYSTEM_DEFAULTS, override)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("override", [None, [], "hls", 3])
def test_override_must_be_an_object(override):
    with pytest.raises(ProfileError, match="^override: must be an object"):
        merge(SYSTEM_DEFAULTS, override)


def test_empty_secured_and_short_lists_are_allowed():
    c = merge(SYSTEM_DEFAULTS, {"secured_default_delivery_type": "", "short_entries_default_delivery_type": []})
    assert c.secured_default_delivery_type == () and c.short_entries_default_delivery_type == ()


def test_configs_are_frozen_and_hashable():
    c = merge(SYSTEM_DEFAULTS, {"profiles": {"hls": {"extra": {"k": [1]}}}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.default_delivery_type = (HLS,)
    with pytest.raises(TypeError):
        c.profiles[HLS] = c.profiles[DASH]
    with pytest.raises(TypeError):
        c.profiles[HLS].extra["k"] = 2
    assert hash(c) == hash(merge(SYSTEM_DEFAULTS, {"profiles": {"hls": {"extra": {"k": [1]}}}}))
    assert {c: 1}[c] == 1


def test_direct_construction_is_validated_and_normalised():
    c = DeliveryConfig(default_delivery_type="applehttp,dash", profiles={
        **{t: DeliveryProfile(t) for t in DeliveryType}, "hls": DeliveryProfile("hls", segment_duration_ms=2000)})
    assert c.default_delivery_type == (HLS, DASH) and c.profiles[HLS].segment_duration_ms == 2000
    assert list(c.profiles) == list(DeliveryType)
    with pytest.raises(ProfileError, match="^profiles: missing profile for mss"):
        DeliveryConfig(profiles={t: DeliveryProfile(t) for t in (HTTP, HLS, DASH, HDS)})
    with pytest.raises(ProfileError, match="^profiles.hls: must be a DeliveryProfile of type hls"):
        DeliveryConfig(profiles={**SYSTEM_DEFAULTS.profiles, HLS: DeliveryProfile(DASH)})
    with pytest.raises(ProfileError, match="^profiles: unknown delivery type 'flash'"):
        DeliveryProfile("flash")


def test_to_dict_is_json_and_round_trips():
    c = merge(SYSTEM_DEFAULTS, {"short_entries_max_duration": 120, "default_delivery_type": "hls,dash",
                                "secured_default_delivery_type": [], "profiles": {
                                    "hds": {"enabled": False}, "hls": {"encryption": "aes-128", "hls_container": "ts",
                                                                       "iframes": False,
                                                                       "extra": {"cdn": {"host": "x", "w": [1, 2.5]}}}},
                                "features": {"thumbnails": False}})
    d = to_dict(c)
    assert json.loads(json.dumps(d)) == d
    assert d["default_delivery_type"] == ["hls", "dash"] and d["secured_default_delivery_type"] == []
    assert d["profiles"]["hls"] == {"enabled": True, "segment_duration_ms": 6000, "hls_container": "ts",
                                    "encryption": "aes-128", "iframes": False,
                                    "extra": {"cdn": {"host": "x", "w": [1, 2.5]}}}
    assert d["features"] == {"clipping": True, "track_selection": True, "thumbnails": False, "captions": True}
    assert merge(SYSTEM_DEFAULTS, d) == c
    assert merge(SYSTEM_DEFAULTS, json.loads(json.dumps(d))) == c
    assert merge(SYSTEM_DEFAULTS, to_dict(SYSTEM_DEFAULTS)) == SYSTEM_DEFAULTS


def test_features_are_switched_per_partner_and_checked():
    c = merge(SYSTEM_DEFAULTS, {"features": {"clipping": False}})
    assert not c.allows("clipping") and c.allows("thumbnails") and SYSTEM_DEFAULTS.allows("clipping")
    assert merge(c, {"features": {"thumbnails": False}}).features == {"clipping": False, "track_selection": True,
                                                                      "thumbnails": False, "captions": True}
    with pytest.raises(ProfileError, match="^features: unknown key 'thumbs' \\(did you mean 'thumbnails'"):
        merge(SYSTEM_DEFAULTS, {"features": {"thumbs": False}})
    with pytest.raises(ProfileError, match="^features.clipping: must be true or false, got 0"):
        merge(SYSTEM_DEFAULTS, {"features": {"clipping": 0}})
    with pytest.raises(ProfileError, match="^features: must be an object"):
        merge(SYSTEM_DEFAULTS, {"features": ["clipping"]})


TYPES = [t.value for t in DeliveryType]
profile_overrides = st.fixed_dictionaries({}, optional={
    "enabled": st.booleans(), "segment_duration_ms": st.integers(1, 60_000), "encryption": st.just("none"),
    "extra": st.dictionaries(st.text(max_size=5), st.one_of(st.none(), st.integers(), st.text(max_size=5)), max_size=3),
})
hls_overrides = st.fixed_dictionaries({}, optional={
    "hls_container": st.sampled_from(["auto", "ts", "fmp4"]), "encryption": st.sampled_from(["none", "aes-128"])})
any_override = st.fixed_dictionaries({}, optional={
    "short_entries_max_duration": st.one_of(st.integers(0, 10_000), st.floats(0, 1e6)),
    "short_entries_default_delivery_type": st.lists(st.sampled_from(TYPES + ["url", "smooth"]), max_size=3),
    "secured_default_delivery_type": st.lists(st.sampled_from(TYPES), max_size=3).map(",".join),
    "default_delivery_type": st.lists(st.sampled_from(TYPES), min_size=1, max_size=3),
    "profiles": st.fixed_dictionaries({}, optional={t: profile_overrides for t in TYPES if t != "hls"}
                                      | {"hls": st.tuples(profile_overrides, hls_overrides).map(lambda a: a[0] | a[1])}),
})


@given(any_override)
def test_round_trip_property(override):
    c = merge(SYSTEM_DEFAULTS, override)
    assert merge(SYSTEM_DEFAULTS, json.loads(json.dumps(to_dict(c)))) == c
    assert merge(c, {}) == c


def test_loads_override():
    assert loads_override('{"profiles": {"hds": {"enabled": false}}}') == {"profiles": {"hds": {"enabled": False}}}
    assert loads_override(b'{}') == {}
    with pytest.raises(ProfileError, match="^override: duplicate key 'hls'"):
        loads_override('{"profiles": {"hls": {}, "hls": {"enabled": false}}}')
    with pytest.raises(ProfileError, match="^override: NaN is not a number"):
        loads_override('{"short_entries_max_duration": NaN}')
    with pytest.raises(ProfileError, match="^override: invalid JSON: "):
        loads_override('{"profiles": ')
    with pytest.raises(ProfileError, match="^override: invalid JSON: "):
        loads_override(b'\xff\xfe{')
    with pytest.raises(ProfileError, match="^override: must be an object, got list"):
        loads_override('[]')


@given(st.one_of(st.text(max_size=50), st.binary(max_size=50)))
def test_loads_override_fuzz_raises_only_profile_error(text):
    try:
        loads_override(text)
    except ProfileError:
        pass
