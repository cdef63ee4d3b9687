"""Issue 14 settings: encryption schemes per delivery type and the partner's ``drm`` section (validation, merge,
to_dict round trip). The expected tables are written out here, not read from the module, so a change to the rules
has to change this file too."""
import dataclasses
import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery_profiles import (
    ENCRYPTIONS, ENCRYPTIONS_BY_TYPE, SYSTEM_DEFAULTS, DeliveryConfig, DeliveryProfile, DeliveryType, DrmConfig,
    ProfileError, loads_override, merge, to_dict,
)

ALLOWED = {  # the table: which scheme each protocol can carry
    "http": ("none",),
    "hls": ("none", "aes-128", "sample-aes", "cenc", "cbcs"),
    "dash": ("none", "cenc", "cbcs"),
    "hds": ("none",),
    "mss": ("none", "cenc"),
}
APPLIES_TO = {"aes-128": "hls only", "sample-aes": "hls only", "cenc": "hls, dash and mss only",
              "cbcs": "hls and dash only"}
PAIRS = list(itertools.product(ALLOWED, ("none", "aes-128", "sample-aes", "cenc", "cbcs")))


def error(override) -> str:
    with pytest.raises(ProfileError) as info:
        merge(SYSTEM_DEFAULTS, override)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_exported_tables():
    assert ENCRYPTIONS == ("none", "aes-128", "sample-aes", "cenc", "cbcs")
    assert {str(t): v for t, v in ENCRYPTIONS_BY_TYPE.items()} == ALLOWED
    assert list(ENCRYPTIONS_BY_TYPE) == list(DeliveryType) and ENCRYPTIONS_BY_TYPE["dash"] == ALLOWED["dash"]
    with pytest.raises(TypeError):
        ENCRYPTIONS_BY_TYPE[DeliveryType.HDS] = ENCRYPTIONS  # read-only: the gateway trusts it


@pytest.mark.parametrize("kind, encryption", [p for p in PAIRS if p[1] in ALLOWED[p[0]]])
def test_allowed_encryption(kind, encryption):
    config = merge(SYSTEM_DEFAULTS, {"profiles": {kind: {"encryption": encryption}}})
    assert config.profile(kind).encryption == encryption
    assert all(p.encryption == "none" for t, p in config.profiles.items() if t != kind)
    assert DeliveryProfile(kind, encryption=encryption).encryption == encryption


@pytest.mark.parametrize("kind, encryption", [p for p in PAIRS if p[1] not in ALLOWED[p[0]]])
def test_refused_encryption_names_the_path_and_what_is_allowed(kind, encryption):
    expected = (f"profiles.{kind}.encryption: {encryption!r} applies to {APPLIES_TO[encryption]} "
                f"({kind} allows {', '.join(ALLOWED[kind])})")
    assert error({"profiles": {kind: {"encryption": encryption}}}) == expected
    with pytest.raises(ProfileError) as info:  # built directly, the same check
        DeliveryProfile(kind, encryption=encryption)
    assert str(info.value) == expected


@pytest.mark.parametrize("value", ["AES-128", "cenc ", "clearkey", "fairplay", "", None, 1])
def test_unknown_encryption(value):
    assert error({"profiles": {"hls": {"encryption": value}}}) == (
        f"profiles.hls.encryption: must be one of none, aes-128, sample-aes, cenc, cbcs, got {value!r}")


def test_drm_defaults():
    drm = SYSTEM_DEFAULTS.drm
    assert drm == DrmConfig() == DrmConfig("", "GET", 5.0, 300, 0, "identity")
    assert (drm.service_url, drm.method, drm.timeout_s, drm.ttl_s, drm.clear_lead_segments, drm.hls_key_format) == \
        ("", "GET", 5.0, 300, 0, "identity")
    assert to_dict(SYSTEM_DEFAULTS)["drm"] == {"service_url": "", "method": "GET", "timeout_s": 5.0, "ttl_s": 300,
                                               "clear_lead_segments": 0, "hls_key_format": "identity"}


@pytest.mark.parametrize("key, value, stored", [
    ("service_url", "https://drm.example.com/udrm/info", "https://drm.example.com/udrm/info"),
    ("service_url", "http://10.0.0.5:8081/drm?partner=101", "http://10.0.0.5:8081/drm?partner=101"),
    ("service_url", "http://[::1]:9000/", "http://[::1]:9000/"),
    ("service_url", "", ""),
    ("method", "POST", "POST"), ("method", "post", "POST"), ("method", "Get", "GET"),
    ("timeout_s", 0.25, 0.25), ("timeout_s", 60, 60.0), ("timeout_s", 5, 5.0),
    ("ttl_s", 0, 0), ("ttl_s", 86400, 86400),
    ("clear_lead_segments", 0, 0), ("clear_lead_segments", 3, 3),
    ("hls_key_format", "fairplay", "fairplay"), ("hls_key_format", "identity", "identity"),
])
def test_drm_good_values(key, value, stored):
    drm = merge(SYSTEM_DEFAULTS, {"drm": {key: value}}).drm
    assert getattr(drm, key) == stored and type(getattr(drm, key)) is type(stored)
    assert dataclasses.replace(drm, **{key: getattr(DrmConfig(), key)}) == DrmConfig()  # nothing else changed


URL = 'drm.service_url: must be "" (derived keys) or an http:// or https:// URL, got '


@pytest.mark.parametrize("key, value, message", [
    ("service_url", "ftp://drm.example/info", URL + "'ftp://drm.example/info'"),
    ("service_url", "drm.example/info", URL + "'drm.example/info'"),
    ("service_url", "https://", URL + "'https://'"),
    ("service_url", "http://:80/x", URL + "'http://:80/x'"),
    ("service_url", "http://drm.example:port/", URL + "'http://drm.example:port/'"),
    ("service_url", "http://drm example/", URL + "'http://drm example/'"),
    ("service_url", " https://drm.example/", URL + "' https://drm.example/'"),
    ("service_url", None, URL + "None"),
    ("service_url", 8080, URL + "8080"),
    ("method", "PUT", "drm.method: must be one of GET, POST, got 'PUT'"),
    ("method", "", "drm.method: must be one of GET, POST, got ''"),
    ("method", 1, "drm.method: must be one of GET, POST, got 1"),
    ("timeout_s", 0, "drm.timeout_s: must be a positive number of seconds, got 0"),
    ("timeout_s", -1.5, "drm.timeout_s: must be a positive number of seconds, got -1.5"),
    ("timeout_s", float("nan"), "drm.timeout_s: must be a positive number of seconds, got nan"),
    ("timeout_s", float("inf"), "drm.timeout_s: must be a positive number of seconds, got inf"),
    ("timeout_s", "5", "drm.timeout_s: must be a positive number of seconds, got '5'"),
    ("timeout_s", True, "drm.timeout_s: must be a positive number of seconds, got True"),
    ("timeout_s", 60.5, "drm.timeout_s: must be at most 60 seconds, got 60.5"),
    ("timeout_s", 10**400, "drm.timeout_s: must be at most 60 seconds, got 1000000"),
    ("ttl_s", -1, "drm.ttl_s: must be a non-negative integer number of seconds, got -1"),
    ("ttl_s", 1.5, "drm.ttl_s: must be a non-negative integer number of seconds, got 1.5"),
    ("ttl_s", "300", "drm.ttl_s: must be a non-negative integer number of seconds, got '300'"),
    ("ttl_s", False, "drm.ttl_s: must be a non-negative integer number of seconds, got False"),
    ("clear_lead_segments", -1, "drm.clear_lead_segments: must be a non-negative integer, got -1"),
    ("clear_lead_segments", 2.0, "drm.clear_lead_segments: must be a non-negative integer, got 2.0"),
    ("clear_lead_segments", None, "drm.clear_lead_segments: must be a non-negative integer, got None"),
    ("hls_key_format", "com.apple.streamingkeydelivery",
     "drm.hls_key_format: must be one of identity, fairplay, got 'com.apple.streamingkeydelivery'"),
    ("hls_key_format", "FairPlay", "drm.hls_key_format: must be one of identity, fairplay, got 'FairPlay'"),
])
def test_drm_bad_values(key, value, message):
    assert error({"drm": {key: value}}).startswith(message)
    with pytest.raises(ProfileError) as info:  # built directly, the same check
        DrmConfig(**{key: value})
    assert str(info.value) == error({"drm": {key: value}})


@pytest.mark.parametrize("override, message", [
    ({"drm": {"timeout": 1}}, "drm: unknown key 'timeout' (did you mean 'timeout_s'?)"),
    ({"drm": {"serviceUrl": "http://x"}}, "drm: unknown key 'serviceUrl' (did you mean 'service_url'?)"),
    ({"drm": {"pssh": []}}, "drm: unknown key 'pssh' (allowed: service_url, method, timeout_s, ttl_s, "
                            "clear_lead_segments, hls_key_format)"),
    ({"drm": []}, "drm: must be an object, got []"),
    ({"drm": "https://drm.example/"}, "drm: must be an object, got 'https://drm.example/'"),
    ({"dmr": {}}, "unknown key 'dmr' (did you mean 'drm'?)"),
])
def test_drm_section_shape(override, message):
    assert error(override) == message


def test_direct_construction_needs_a_drm_config():
    with pytest.raises(ProfileError, match=r"^drm: must be a DrmConfig, got \{\}$"):
        DeliveryConfig(drm={})
    assert DeliveryConfig(drm=DrmConfig(ttl_s=0)).drm.ttl_s == 0


def test_drm_merges_key_by_key_and_stacks():
    a = merge(SYSTEM_DEFAULTS, {"drm": {"service_url": "https://drm.example/info", "ttl_s": 60}})
    b = merge(a, {"drm": {"method": "POST"}, "profiles": {"dash": {"encryption": "cenc"}}})
    assert b.drm == DrmConfig(service_url="https://drm.example/info", method="POST", ttl_s=60)
    assert b.profile("dash").encryption == "cenc" and a.profile("dash").encryption == "none"
    assert merge(b, {"drm": {"service_url": ""}}).drm == DrmConfig(method="POST", ttl_s=60)  # back to derived keys
    assert merge(b, {"drm": {}}) == b and merge(SYSTEM_DEFAULTS, {"drm": {}}) == SYSTEM_DEFAULTS
    assert SYSTEM_DEFAULTS.drm == DrmConfig()  # defaults untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.drm.ttl_s = 1
    assert hash(b) != hash(a) and b != merge(b, {"drm": {"clear_lead_segments": 1}})


def test_to_dict_round_trip_with_drm():
    c = merge(SYSTEM_DEFAULTS, {
        "drm": {"service_url": "https://drm.example/info", "method": "post", "timeout_s": 2, "ttl_s": 0,
                "clear_lead_segments": 2, "hls_key_format": "fairplay"},
        "profiles": {"hls": {"encryption": "sample-aes"}, "dash": {"encryption": "cbcs"},
                     "mss": {"encryption": "cenc"}}})
    d = to_dict(c)
    assert d["drm"] == {"service_url": "https://drm.example/info", "method": "POST", "timeout_s": 2.0, "ttl_s": 0,
                        "clear_lead_segments": 2, "hls_key_format": "fairplay"}
    assert [d["profiles"][t]["encryption"] for t in ("http", "hls", "dash", "hds", "mss")] == \
        ["none", "sample-aes", "cbcs", "none", "cenc"]
    assert merge(SYSTEM_DEFAULTS, d) == c
    assert merge(SYSTEM_DEFAULTS, loads_override(json.dumps(d))) == c


def test_loads_override_accepts_drm():
    text = '{"drm": {"service_url": "https://drm.example/info", "clear_lead_segments": 1}}'
    assert merge(SYSTEM_DEFAULTS, loads_override(text)).drm == DrmConfig("https://drm.example/info",
                                                                         clear_lead_segments=1)
    with pytest.raises(ProfileError, match="^override: duplicate key 'ttl_s'$"):
        loads_override('{"drm": {"ttl_s": 1, "ttl_s": 2}}')


drm_overrides = st.fixed_dictionaries({}, optional={
    "service_url": st.sampled_from(["", "https://drm.example/info", "http://127.0.0.1:9/k?x=1"]),
    "method": st.sampled_from(["GET", "POST", "post"]),
    "timeout_s": st.one_of(st.integers(1, 60), st.floats(0.001, 60)),
    "ttl_s": st.integers(0, 10**6),
    "clear_lead_segments": st.integers(0, 100),
    "hls_key_format": st.sampled_from(["identity", "fairplay"]),
})
encryption_overrides = st.fixed_dictionaries({}, optional={
    t: st.sampled_from(allowed).map(lambda e: {"encryption": e}) for t, allowed in ALLOWED.items()})


@given(drm_overrides, encryption_overrides)
def test_round_trip_property(drm, profiles):
    c = merge(SYSTEM_DEFAULTS, {"drm": drm, "profiles": profiles})
    assert merge(SYSTEM_DEFAULTS, json.loads(json.dumps(to_dict(c)))) == c
    assert merge(c, {}) == c
