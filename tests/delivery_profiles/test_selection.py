"""Delivery-type selection: one table of requests × partner overrides, plus invariants over arbitrary configs."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery_profiles import SYSTEM_DEFAULTS, DeliveryType, ProfileError, SelectionError, merge, select_delivery
from delivery_profiles.selection import is_ios, preference_list

HTTP, HLS, DASH, HDS, MSS = DeliveryType

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.4 Mobile/15E148 Safari/604.1")
IPAD = ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 "
        "Mobile/15E148 Safari/604.1")
COREMEDIA = "AppleCoreMedia/1.0.0.20G165 (Macintosh; U; Intel Mac OS X 13_5; en_us)"
IPOD = "Mozilla/5.0 (iPod touch; CPU iPhone OS 12_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
ANDROID = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
           "Mobile Safari/537.36")
DESKTOP = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
           "Safari/537.36")
MAC_SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/17.4 Safari/605.1.15")

DEFAULTS = SYSTEM_DEFAULTS
# partner: adaptive by default (hls, then dash), progressive download for short clips
HLS_PARTNER = merge(DEFAULTS, {"default_delivery_type": "hls,dash", "short_entries_default_delivery_type": "http"})
# partner: progressive download disabled, Kaltura keys untouched (all "http")
NO_HTTP = merge(DEFAULTS, {"profiles": {"http": {"enabled": False}}})
# partner: "dash,hls" for everything but dash disabled
DASH_OFF = merge(DEFAULTS, {"default_delivery_type": "dash,hls", "short_entries_default_delivery_type": ["dash", "hls"],
                            "profiles": {"dash": {"enabled": False}}})
# partner: secured entries in smooth, others dash; short clips http
SECURED_MSS = merge(DEFAULTS, {"secured_default_delivery_type": "smooth", "default_delivery_type": "mpegdash"})
# partner: secured prefers mss, but mss is disabled: secured falls through to the next keys
SECURED_MSS_OFF = merge(SECURED_MSS, {"profiles": {"mss": {"enabled": False}}})
# partner: no hls (iOS falls back to the preference list)
NO_HLS = merge(DEFAULTS, {"default_delivery_type": "dash", "profiles": {"hls": {"enabled": False}}})
# partner: only hds enabled and nothing prefers it: Kaltura falls back to the first enabled type
ONLY_HDS = merge(DEFAULTS, {"profiles": {t: {"enabled": t == "hds"} for t in ("http", "hls", "dash", "hds", "mss")}})
# partner: nothing enabled at all
NOTHING = merge(DEFAULTS, {"profiles": {t: {"enabled": False} for t in ("http", "hls", "dash", "hds", "mss")}})

SHORT, EDGE, JUST_LONG, LONG = 42.0, 300.000, 300.04, 3600.0

# id, config, duration, secured, format, user agent → expected type or exception class
ROWS = [
    # system defaults: http everywhere
    ("defaults-short", DEFAULTS, SHORT, False, None, DESKTOP, HTTP),
    ("defaults-long-secured", DEFAULTS, LONG, True, None, ANDROID, HTTP),
    ("defaults-iphone", DEFAULTS, LONG, False, None, IPHONE, HLS),
    ("defaults-ipad", DEFAULTS, SHORT, True, None, IPAD, HLS),
    ("defaults-ipod", DEFAULTS, SHORT, False, None, IPOD, HLS),
    ("defaults-coremedia", DEFAULTS, LONG, False, None, COREMEDIA, HLS),
    ("defaults-mac-safari-is-not-ios", DEFAULTS, LONG, False, None, MAC_SAFARI, HTTP),
    ("defaults-no-ua", DEFAULTS, LONG, False, None, None, HTTP),
    ("defaults-explicit-dash", DEFAULTS, LONG, False, "mpegdash", DESKTOP, DASH),
    ("defaults-explicit-internal-name", DEFAULTS, LONG, False, "mss", DESKTOP, MSS),
    ("defaults-explicit-hds", DEFAULTS, SHORT, True, "hdnetworkmanifest", DESKTOP, HDS),
    ("defaults-explicit-url-beats-ios", DEFAULTS, LONG, False, "url", IPHONE, HTTP),
    ("defaults-explicit-uppercase", DEFAULTS, LONG, False, "AppleHttp", ANDROID, HLS),
    ("defaults-explicit-unknown", DEFAULTS, LONG, False, "flash", DESKTOP, SelectionError),
    ("defaults-explicit-empty", DEFAULTS, LONG, False, "", DESKTOP, SelectionError),
    # 300-second boundary: <= is short
    ("hls-partner-300.000-short", HLS_PARTNER, EDGE, False, None, DESKTOP, HTTP),
    ("hls-partner-300.04-long", HLS_PARTNER, JUST_LONG, False, None, DESKTOP, HLS),
    ("hls-partner-long-android", HLS_PARTNER, LONG, False, None, ANDROID, HLS),
    ("hls-partner-short-iphone", HLS_PARTNER, SHORT, False, None, IPHONE, HLS),
    ("hls-partner-secured-short", HLS_PARTNER, SHORT, True, None, DESKTOP, HTTP),  # secured list is "http"
    ("hls-partner-secured-long", HLS_PARTNER, LONG, True, None, DESKTOP, HTTP),
    ("hls-partner-explicit-smooth", HLS_PARTNER, LONG, False, "smooth", DESKTOP, MSS),
    # http disabled, keys all "http": Kaltura's fallback is the first enabled type
    ("no-http-short", NO_HTTP, SHORT, False, None, DESKTOP, HLS),
    ("no-http-long-secured", NO_HTTP, LONG, True, None, ANDROID, HLS),
    ("no-http-explicit-url", NO_HTTP, LONG, False, "url", DESKTOP, SelectionError),
    ("no-http-explicit-http", NO_HTTP, SHORT, False, "http", IPHONE, SelectionError),
    ("no-http-iphone", NO_HTTP, LONG, False, None, IPHONE, HLS),
    # "dash,hls" with dash disabled → hls
    ("dash-off-long", DASH_OFF, LONG, False, None, DESKTOP, HLS),
    ("dash-off-300.000", DASH_OFF, EDGE, False, None, ANDROID, HLS),
    ("dash-off-300.04", DASH_OFF, JUST_LONG, False, None, ANDROID, HLS),
    ("dash-off-secured-short", DASH_OFF, SHORT, True, None, DESKTOP, HTTP),  # secured list "http" comes first
    ("dash-off-explicit-dash", DASH_OFF, LONG, False, "mpegdash", DESKTOP, SelectionError),
    ("dash-off-explicit-hls", DASH_OFF, LONG, False, "applehttp", DESKTOP, HLS),
    # secured preference
    ("secured-mss-secured-long", SECURED_MSS, LONG, True, None, DESKTOP, MSS),
    ("secured-mss-secured-short", SECURED_MSS, SHORT, True, None, DESKTOP, MSS),
    ("secured-mss-unsecured-long", SECURED_MSS, LONG, False, None, DESKTOP, DASH),
    ("secured-mss-unsecured-300.000", SECURED_MSS, EDGE, False, None, DESKTOP, HTTP),
    ("secured-mss-unsecured-300.04", SECURED_MSS, JUST_LONG, False, None, DESKTOP, DASH),
    ("secured-mss-secured-ipad", SECURED_MSS, LONG, True, None, IPAD, HLS),
    ("secured-mss-off-secured-short", SECURED_MSS_OFF, SHORT, True, None, DESKTOP, HTTP),
    ("secured-mss-off-secured-long", SECURED_MSS_OFF, LONG, True, None, DESKTOP, DASH),
    ("secured-mss-off-explicit-smooth", SECURED_MSS_OFF, LONG, True, "smooth", DESKTOP, SelectionError),
    # hls disabled: iOS gets the preference list
    ("no-hls-iphone-long", NO_HLS, LONG, False, None, IPHONE, DASH),
    ("no-hls-coremedia-short", NO_HLS, SHORT, False, None, COREMEDIA, HTTP),
    ("no-hls-explicit-applehttp", NO_HLS, LONG, False, "applehttp", IPHONE, SelectionError),
    # fallback and the empty partner
    ("only-hds-long", ONLY_HDS, LONG, False, None, DESKTOP, HDS),
    ("only-hds-iphone", ONLY_HDS, SHORT, True, None, IPHONE, HDS),
    ("only-hds-explicit-hds", ONLY_HDS, LONG, False, "hdnetworkmanifest", DESKTOP, HDS),
    ("nothing-long", NOTHING, LONG, False, None, DESKTOP, SelectionError),
    ("nothing-iphone", NOTHING, SHORT, True, None, IPHONE, SelectionError),
    ("nothing-explicit", NOTHING, LONG, False, "url", DESKTOP, SelectionError),
]


@pytest.mark.parametrize("config, duration, secured, fmt, ua, expected", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_selection_table(config, duration, secured, fmt, ua, expected):
    call = lambda: select_delivery(config, duration_seconds=duration, secured=secured,  # noqa: E731
                                   requested_format=fmt, user_agent=ua)
    if isinstance(expected, type) and issubclass(expected, Exception):
        with pytest.raises(expected) as info:
            call()
        assert "\n" not in str(info.value) and str(info.value)
    else:
        decision = call()
        assert decision.type is expected
        assert decision.type in decision.preference
        assert decision.reason


def test_selection_error_is_a_profile_error_with_a_useful_message():
    assert issubclass(SelectionError, ProfileError)
    with pytest.raises(SelectionError, match=r"'mpegdash' \(dash\) is not enabled.*enabled: http, hls"):
        select_delivery(DASH_OFF, duration_seconds=LONG, secured=False, requested_format="mpegdash", user_agent=None)
    with pytest.raises(SelectionError, match="unknown delivery format 'flash'"):
        select_delivery(DEFAULTS, duration_seconds=LONG, secured=False, requested_format="flash", user_agent=None)
    with pytest.raises(SelectionError, match="no enabled delivery type among http"):
        select_delivery(NOTHING, duration_seconds=LONG, secured=False, requested_format=None, user_agent=None)


def test_decision_explains_itself():
    d = select_delivery(SECURED_MSS_OFF, duration_seconds=LONG, secured=True, requested_format=None, user_agent=DESKTOP)
    assert d.type is DASH
    assert d.preference == (MSS, DASH)
    assert "default_delivery_type" in d.reason and "secured long entry" in d.reason
    d = select_delivery(NO_HLS, duration_seconds=LONG, secured=False, requested_format=None, user_agent=IPHONE)
    assert d.preference == (HLS, DASH) and "hls is disabled" in d.reason
    d = select_delivery(NO_HTTP, duration_seconds=SHORT, secured=True, requested_format=None, user_agent=None)
    assert d.type is HLS and "fallback" in d.reason and d.preference == (HTTP, HLS)


def test_preference_order_and_dedup():
    c = merge(DEFAULTS, {"secured_default_delivery_type": "mss,hls", "short_entries_default_delivery_type": "hls,http",
                         "default_delivery_type": ["dash", "mss", "http"]})
    assert preference_list(c, duration_seconds=EDGE, secured=True) == (MSS, HLS, HTTP, DASH)
    assert preference_list(c, duration_seconds=JUST_LONG, secured=True) == (MSS, HLS, DASH, HTTP)
    assert preference_list(c, duration_seconds=EDGE, secured=False) == (HLS, HTTP, DASH, MSS)
    assert preference_list(c, duration_seconds=math.inf, secured=False) == (DASH, MSS, HTTP)


@pytest.mark.parametrize("ua, expected", [
    (IPHONE, True), (IPAD, True), (IPOD, True), (COREMEDIA, True), ("applecoremedia/1.0", True),
    (ANDROID, False), (DESKTOP, False), (MAC_SAFARI, False), ("", False), (None, False),
    ("Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1)", False),
])
def test_is_ios(ua, expected):
    assert is_ios(ua) is expected


@pytest.mark.parametrize("bad", [-1, math.nan, "300"])
def test_bad_duration_is_refused(bad):
    with pytest.raises(SelectionError, match="duration_seconds"):
        select_delivery(DEFAULTS, duration_seconds=bad, secured=False, requested_format=None, user_agent=None)


TYPES = [t.value for t in DeliveryType]
type_lists = st.lists(st.sampled_from(TYPES), max_size=4)
overrides = st.fixed_dictionaries({
    "short_entries_max_duration": st.sampled_from([0, 60, 300, 300.5]),
    "short_entries_default_delivery_type": type_lists,
    "secured_default_delivery_type": type_lists,
    "default_delivery_type": type_lists.filter(bool).map(",".join),
    "profiles": st.fixed_dictionaries({t: st.fixed_dictionaries({"enabled": st.booleans()}) for t in TYPES}),
})


@given(overrides, st.floats(0, 10_000), st.booleans(), st.sampled_from([None, IPHONE, DESKTOP]))
def test_selection_invariants(override, duration, secured, ua):
    config = merge(DEFAULTS, override)
    enabled = [DeliveryType(t) for t in TYPES if override["profiles"][t]["enabled"]]
    try:
        d = select_delivery(config, duration_seconds=duration, secured=secured, requested_format=None, user_agent=ua)
    except SelectionError:
        assert not enabled
        return
    assert d.type in enabled
    if ua == IPHONE and HLS in enabled:
        assert d.type is HLS
        return
    # Kaltura: the first enabled type of the flattened keys, else the partner's first enabled type
    keys = (["secured_default_delivery_type"] if secured else []) + \
        (["short_entries_default_delivery_type"] if duration <= override["short_entries_max_duration"] else []) + \
        ["default_delivery_type"]
    flat = [DeliveryType(t) for k in keys for t in (override[k].split(",") if isinstance(override[k], str)
                                                    else override[k])]
    preferred = [t for t in flat if t in enabled]
    assert d.type is (preferred[0] if preferred else enabled[0])
