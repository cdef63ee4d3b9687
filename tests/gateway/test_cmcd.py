"""gateway/ops/cmcd.py and gateway/ops/user_agents.py: CMCD (CTA-5004) as players send it parses into typed values,
every bound drops and counts instead of raising, and User-Agents of real players land in the right family."""
from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given, strategies as st

from gateway.ops.cmcd import KNOWN_KEYS, CmcdReport, parse_cmcd
from gateway.ops.user_agents import BROWSERS, player_of

SID = "6e2fb550-c457-11e9-bb97-0800200c9a66"
# CTA-5004 section 5 examples, in the form common-media-library (hls.js 1.7, dash.js 5, shaka 5) serialises v1:
# keys sorted, no whitespace, true booleans bare, strings quoted, nor URL-encoded inside its quotes.
SPEC_QUERY = f'br=3200,bs,d=4004,mtp=25400,ot=v,rtp=15000,sf=h,sid="{SID}",su,tb=6000'
DASHJS_QUERY = ('bl=21300,br=3200,bs,cid="faec5fc2-ac30-11eas",d=4004,dl=18500,mtp=48100,'
                'nor="..%2F300kbps%2Ftrack.m4v",nrr="12323-48763",ot=v,pr=1.08,rtp=12000,sf=d,'
                f'sid="{SID}",st=v,su,tb=6000')
SPEC_HEADERS = {"CMCD-Object": "br=3200,d=4004,ot=v,tb=6000", "CMCD-Request": "bl=21300,dl=18500,mtp=48100,su",
                "CMCD-Session": f'cid="faec5fc2-ac30-11eas",pr=1.08,sf=d,sid="{SID}",st=v',
                "CMCD-Status": "bs,rtp=12000"}


def test_nothing_costs_nothing_and_says_absent():
    report = parse_cmcd(None, {})
    assert report == CmcdReport({}, 0, 0, False)
    assert parse_cmcd(None, {"User-Agent": "x"}).present is False
    assert parse_cmcd("", {}) == CmcdReport({}, 0, 0, True)


def test_the_spec_example_as_hls_js_sends_it():
    # as it arrives: the player URL-encodes the whole value, aiohttp hands us the decoded query argument
    query = urllib.parse.parse_qs("CMCD=" + urllib.parse.quote(SPEC_QUERY, safe=""))["CMCD"][0]
    report = parse_cmcd(query, {})
    assert report == CmcdReport({"br": 3200, "bs": True, "d": 4004, "mtp": 25400, "ot": "v", "rtp": 15000, "sf": "h",
                                 "sid": SID, "su": True, "tb": 6000}, 0, 0, True)


def test_every_v1_key_of_the_dash_js_example():
    values = parse_cmcd(DASHJS_QUERY, {}).values
    assert values == {"bl": 21300, "br": 3200, "bs": True, "cid": "faec5fc2-ac30-11eas", "d": 4004, "dl": 18500,
                      "mtp": 48100, "nor": "..%2F300kbps%2Ftrack.m4v", "nrr": "12323-48763", "ot": "v", "pr": 1.08,
                      "rtp": 12000, "sf": "d", "sid": SID, "st": "v", "su": True, "tb": 6000}
    assert list(values) == [member.partition("=")[0] for member in DASHJS_QUERY.split(",")]  # no comma in strings


def test_headers_give_the_same_values_as_the_query_whatever_their_case():
    expected = parse_cmcd(DASHJS_QUERY, {}).values
    expected.pop("nor"), expected.pop("nrr")
    assert parse_cmcd(None, SPEC_HEADERS) == CmcdReport(expected, 0, 0, True)
    lowered = {name.lower(): value for name, value in SPEC_HEADERS.items()}
    assert parse_cmcd(None, lowered) == CmcdReport(expected, 0, 0, True)
    assert parse_cmcd(None, {"cmcd-STATUS": "bs"}).values == {"bs": True}


def test_headers_and_query_together_headers_win():
    report = parse_cmcd("br=999,d=1", {"CMCD-Object": "br=3200"})
    assert report.values == {"br": 3200, "d": 1} and report.invalid == 1


def test_case_insensitive_multidict_as_aiohttp_passes_it():
    multidict = pytest.importorskip("multidict")
    headers = multidict.CIMultiDictProxy(multidict.CIMultiDict({"cmcd-session": f'sid="{SID}"'}))
    assert parse_cmcd(None, headers).values == {"sid": SID}


def test_commas_and_escapes_inside_strings():
    report = parse_cmcd(r'cid="a,b=c,\"d\",e\\",br=5,sid="x,y"', {})
    assert report.values == {"cid": 'a,b=c,"d",e\\', "br": 5, "sid": "x,y"} and report.invalid == 0
    report = parse_cmcd(r'cid="a\\",br=5', {})  # the escaped backslash does not escape the closing quote
    assert report.values == {"cid": "a\\", "br": 5}
    report = parse_cmcd('br=5,cid="never closed,d=4', {})  # the rest of the shard is one malformed member
    assert report.values == {"br": 5} and report.invalid == 1
    report = parse_cmcd(r'x-a=\"q",d=1', {})  # a backslash outside a string escapes nothing
    assert report.values == {"d": 1} and (report.unknown, report.invalid) == (1, 0)
    for malformed in (r'cid="bad\escape"', 'cid="x"y', 'cid=x', 'cid="in"side"', 'cid="'):
        report = parse_cmcd(malformed, {})
        assert report.values == {} and report.invalid == 1, malformed


def test_booleans_bare_sf_and_tolerant():
    values = parse_cmcd("bs,su=?0,bg=true,nr=false", {}).values
    assert values == {"bs": True, "su": False, "bg": True, "nr": False}
    report = parse_cmcd("bs=1,su=yes,br", {})
    assert report.values == {} and report.invalid == 3


@pytest.mark.parametrize("member", [
    "br=-1", "br=1000000001", "br=3.5", "br=", "br=abc", "br=0x10", "br= 5", "d=1e3", "v=101", "mtp=+5",
    "pr=-1", "pr=1.2345", "pr=nan", "pr=inf", "pr=1.", "pr=.5", "pr=99999",
    "ot=x", "ot=V", "sf=dash", "st=", 'ot="v"', "sid=" + '"' + "s" * 65 + '"', 'cid="' + "c" * 129 + '"',
    'nor="' + "n" * 257 + '"', 'nrr="12-"x', 'nrr="abc"', 'nrr="-"', 'nrr="9-1"', 'nrr="1-2-3"',
    "=5", "", "B=1", "br=é", "br=1\x00", "br=1\t", "9x=1",
])
def test_every_bound_is_dropped_and_counted(member):
    report = parse_cmcd(f"d=4004,{member},tb=6000", {})
    assert report.values == {"d": 4004, "tb": 6000}
    assert (report.invalid, report.unknown) == (1, 0)


def test_values_at_their_bounds_are_kept():
    values = parse_cmcd(f'br=1000000000,v=1,pr=0,sid="{"s" * 64}",cid="{"c" * 128}",nrr="-500",rtp=0', {}).values
    assert values == {"br": 10**9, "v": 1, "pr": 0.0, "sid": "s" * 64, "cid": "c" * 128, "nrr": "-500", "rtp": 0}
    assert parse_cmcd('nrr="100-"', {}).values == {"nrr": "100-"}


def test_duplicates_keep_the_first():
    report = parse_cmcd("br=100,br=200,bs,bs,x-a=1,x-a=2", {})
    assert report.values == {"br": 100, "bs": True} and report.invalid == 3 and report.unknown == 1
    report = parse_cmcd("br=x,br=200", {})  # even when the first was malformed
    assert report.values == {} and report.invalid == 2


def test_unknown_well_formed_keys_are_counted_apart():
    report = parse_cmcd('br=1,x-custom="v",com.example-k=5,zz,later*key=?1', {})
    assert report.values == {"br": 1} and (report.unknown, report.invalid) == (4, 0)


def test_cmcd_v2_simple_keys_and_inner_lists():
    shard = ('br=(3200 1600),bl=(21300;ot=v 5000;ot=a),mtp=(48100),nor=("..%2Fseg2.m4v";r="0-99" "next"),'
             'sta=p,ts=1733540000000,e=ps,bg,ltc=2000,msd=1200,pb=(6000;ot=v),v=2,st=ll')
    report = parse_cmcd(shard, {})
    assert report.values == {"br": 3200, "bl": 21300, "mtp": 48100, "nor": "..%2Fseg2.m4v", "sta": "p",
                             "ts": 1733540000000, "e": "ps", "bg": True, "ltc": 2000, "msd": 1200, "pb": 6000, "v": 2,
                             "st": "ll"}
    assert (report.invalid, report.unknown) == (0, 0)
    assert parse_cmcd("br=(),d=(1)", {}).invalid == 2


def test_oversized_shards_and_too_many_keys():
    report = parse_cmcd("br=1," + "x" * 4096, {"CMCD-Object": "d=1"})
    assert report.values == {"d": 1} and report.invalid == 1  # dropped whole, counted once
    many = ",".join(f"x-k{index}=1" for index in range(70))
    report = parse_cmcd(many + ",br=5", {})
    assert report.values == {} and (report.unknown, report.invalid) == (64, 7)
    report = parse_cmcd("br=5," + ",".join(f"x-k{index}" for index in range(63)) + ",d=9", {})
    assert report.values == {"br": 5} and report.invalid == 1


def test_non_ascii_and_control_characters_drop_only_their_member():
    report = parse_cmcd('br=5,cid="café",d=1,sid="a\x7fb",tb=2', {})
    assert report.values == {"br": 5, "d": 1, "tb": 2} and report.invalid == 2


def test_known_keys_name_their_types():
    assert set(KNOWN_KEYS.values()) == {"int", "float", "bool", "token", "str"}
    v1 = "bl br bs cid d dl mtp nor nrr ot pr rtp sf sid st su tb v".split()  # common-media-library CMCD_V1_KEYS
    assert set(v1) <= set(KNOWN_KEYS)


HEADER_TEXT = st.one_of(st.none(), st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
                        st.lists(st.sampled_from(sorted(KNOWN_KEYS) + ["=", ",", '"', "\\", "(", ")", ";", "1",
                                                                       "?0", "v", "x-a", " "]),
                                 max_size=80).map("".join))


@given(HEADER_TEXT, st.fixed_dictionaries({name: HEADER_TEXT for name in
                                           ("CMCD-Request", "CMCD-Object", "CMCD-Status", "CMCD-Session")}))
def test_any_text_never_raises(query, headers):
    headers = {name: value for name, value in headers.items() if value is not None}
    report = parse_cmcd(query, headers)
    assert isinstance(report, CmcdReport)
    assert len(report.values) <= 64 * 5 and set(report.values) <= set(KNOWN_KEYS)
    assert report.present == (query is not None or bool(headers))
    assert all(type(value) in (int, bool, str, float) for value in report.values.values())


@given(st.dictionaries(st.sampled_from(sorted(key for key, kind in KNOWN_KEYS.items() if kind == "int")),
                       st.integers(0, 10**9), max_size=20),
       st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=64))
def test_serialised_values_round_trip(integers, text):
    """What a serialiser following RFC 8941 writes (escaping \\ and ") parses back to what it was given."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    shard = ",".join([f"{key}={value}" for key, value in integers.items()] + [f'sid="{escaped}"', "bs"])
    ceiling = {"v": 100, "rc": 999}
    expected = {key: value for key, value in integers.items() if value <= ceiling.get(key, 10**9)}
    assert parse_cmcd(shard, {}).values == {**expected, "sid": text, "bs": True}


# User-Agents as the players send them (late 2024 releases)
USER_AGENTS = {
    "Chrome": [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
        "Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.6778.33 "
        "Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile "
        "Safari/537.36"],
    "Safari": [
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
        "Safari/605.1.15",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Mobile/15E148 Safari/604.1"],
    "Firefox": [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "FxiOS/133.0 Mobile/15E148 Safari/605.1.15"],
    "Edge": [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
        "Safari/537.36 Edg/131.0.0.0",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile "
        "Safari/537.36 EdgA/131.0.0.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.0 EdgiOS/131.2903.68 Mobile/15E148 Safari/605.1.15"],
    "ExoPlayer": [
        "MyApp/1.0 (Linux;Android 14) ExoPlayerLib/2.19.1",
        "MyApp/3.2 (Linux;Android 15) AndroidXMedia3/1.4.1"],
    "AVPlayer": [
        "AppleCoreMedia/1.0.0.22B83 (iPhone; U; CPU OS 18_1 like Mac OS X; en_us)",
        "AppleCoreMedia/1.0.0.22J580 (Apple TV; U; CPU OS 18_1 like Mac OS X; en_us)",
        "AppleCoreMedia/1.0.0.24B83 (Macintosh; U; Intel Mac OS X 15_1; en_us)"],
    "other": [
        "curl/8.11.0", "Lavf/61.7.100", "VLC/3.0.21 LibVLC/3.0.21", "", None, "\x00\xff garbage",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
        "Safari/537.36 OPR/115.0.0.0",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/605.1.15 (KHTML, like Gecko) Safari/605.1.15",  # no Version/
        "x" * 10_000 + " Chrome/131.0.0.0"],  # past the 512 characters looked at
}


@pytest.mark.parametrize("family,user_agent", [(family, agent) for family, agents in USER_AGENTS.items()
                                               for agent in agents])
def test_player_of_real_user_agents(family, user_agent):
    assert player_of(user_agent) == family


@given(st.one_of(st.none(), st.text(max_size=2000)))
def test_player_of_any_text_is_a_family(user_agent):
    assert player_of(user_agent) in BROWSERS
