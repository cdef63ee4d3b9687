"""Signed path tokens, ks session tokens and stream keys: round trips, every tamper, expiry edges, fuzz."""
import base64
import hashlib
import hmac
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery_profiles.tokens import (
    BAD_SIGNATURE, ENTRY_NOT_COVERED, EXPIRED, KS_MAX_LENGTH, MALFORMED, WRONG_PARTNER, KsPayload, TokenError,
    make_ks, new_secret, sign_path, stream_key, verify_ks, verify_path, verify_stream_key,
)

SECRET = "7f3a0c9e5b2d41f8a6e0c3b9d7f1a2e4c5b6a7d8e9f0a1b2c3d4e5f6a7b8c9d0"
EXPIRES = 1_700_000_000
PREFIX = "/hls/p/42/entry_0abc/"


def reason_of(call) -> str:
    with pytest.raises(TokenError) as info:
        call()
    assert "\n" not in str(info.value)
    return info.value.reason


def flip(s: str, i: int) -> str:
    """Change character i to another base64url character."""
    return s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1:]


# --- path tokens ---

def test_path_token_shape_matches_the_documented_scheme():
    token = sign_path(SECRET, PREFIX, EXPIRES)
    mac = hmac.new(SECRET.encode(), f"{EXPIRES}:{PREFIX}".encode(), hashlib.sha256).digest()
    assert token == f"{EXPIRES}-{base64.urlsafe_b64encode(mac).decode()[:43]}"


def test_path_token_round_trip_and_expiry_edges():
    token = sign_path(SECRET, PREFIX, EXPIRES)
    verify_path(SECRET, PREFIX, token, now=EXPIRES - 1)  # not yet expired
    verify_path(SECRET, PREFIX, token, now=EXPIRES)  # valid through the expiry second (nginx secure_link)
    verify_path(SECRET.encode(), PREFIX, token, now=0)  # str secret == its utf-8 bytes
    with pytest.raises(TokenError, match=f"expired at {EXPIRES}") as info:
        verify_path(SECRET, PREFIX, token, now=EXPIRES + 1)  # expired by 1 s
    assert info.value.reason == EXPIRED
    assert reason_of(lambda: verify_path(SECRET, PREFIX, token, now=EXPIRES + 0.5)) == EXPIRED
    assert reason_of(lambda: verify_path(SECRET, PREFIX, token, now=float("nan"))) == EXPIRED


def test_path_token_tampering():
    token = sign_path(SECRET, PREFIX, EXPIRES)
    expires, sig = token.split("-", 1)
    check = lambda tok, prefix=PREFIX, secret=SECRET: reason_of(lambda: verify_path(secret, prefix, tok, now=0))  # noqa
    assert check(f"{EXPIRES + 3600}-{sig}") == BAD_SIGNATURE  # extended expiry
    assert check(f"{EXPIRES - 1}-{sig}") == BAD_SIGNATURE
    assert check(token, prefix="/hls/p/42/entry_0abd/") == BAD_SIGNATURE  # other prefix
    assert check(token, prefix=PREFIX[:-1]) == BAD_SIGNATURE
    assert check(token, secret=new_secret()) == BAD_SIGNATURE  # wrong secret
    for i in range(len(sig)):  # every flipped base64 character, the last (padding bits) included
        assert check(f"{expires}-{flip(sig, i)}") == BAD_SIGNATURE
    assert check(f"0{token}") == MALFORMED  # non-canonical expiry
    assert check(token + "A") == MALFORMED
    assert check(token[:-1]) == MALFORMED
    assert check(token.replace("-", "+", 1)) == MALFORMED
    assert check(token + "\n") == MALFORMED
    assert check("") == MALFORMED and check(None) == MALFORMED


def test_path_signing_rejects_bad_arguments():
    for bad in (-1, 1.5, True, "1700000000", 10**20):
        with pytest.raises(ValueError):
            sign_path(SECRET, PREFIX, bad)
    for bad in ("", b"", None, 42):
        with pytest.raises(TypeError):
            sign_path(bad, PREFIX, EXPIRES)


@given(st.text(), st.integers(0, 2**63))
def test_path_tokens_are_url_safe(prefix, expires):
    token = sign_path(SECRET, prefix, expires)
    assert re.fullmatch(r"[0-9]+-[A-Za-z0-9_-]{43}", token)
    assert not set(token) & set("/?#%&=+ .")
    verify_path(SECRET, prefix, token, now=expires)


@given(st.text(), st.text())
def test_distinct_prefixes_never_share_a_token(a, b):
    if a != b:
        assert sign_path(SECRET, a, EXPIRES) != sign_path(SECRET, b, EXPIRES)


@given(st.one_of(st.text(), st.from_regex(r"[0-9]{1,22}-[A-Za-z0-9_-]{40,46}", fullmatch=True)), st.text())
def test_arbitrary_path_tokens_raise_only_token_error(token, prefix):
    try:
        verify_path(SECRET, prefix, token, now=0)
    except TokenError as e:
        assert e.reason in (MALFORMED, BAD_SIGNATURE)
    else:
        pytest.fail("an arbitrary token verified")


# --- stream keys ---

def test_stream_key_round_trip_and_separation_from_path_tokens():
    key = stream_key(SECRET, "live/cam1", EXPIRES)
    verify_stream_key(SECRET, "live/cam1", key, now=EXPIRES)
    assert reason_of(lambda: verify_stream_key(SECRET, "live/cam2", key, now=0)) == BAD_SIGNATURE
    assert reason_of(lambda: verify_stream_key(SECRET, "live/cam1", key, now=EXPIRES + 1)) == EXPIRED
    assert reason_of(lambda: verify_path(SECRET, "live/cam1", key, now=0)) == BAD_SIGNATURE
    path_token = sign_path(SECRET, "live/cam1", EXPIRES)
    assert reason_of(lambda: verify_stream_key(SECRET, "live/cam1", path_token, now=0)) == BAD_SIGNATURE


# --- ks ---

def test_ks_round_trip():
    ks = make_ks(SECRET, 42, EXPIRES, entry_id="0_abc", privileges="sview:0_abc")
    assert verify_ks(SECRET, ks, 42, now=EXPIRES, entry_id="0_abc") == KsPayload(42, EXPIRES, "0_abc", "sview:0_abc")
    assert verify_ks(SECRET, ks, 42, now=0) == KsPayload(42, EXPIRES, "0_abc", "sview:0_abc")  # no entry asked
    body, sig = ks.split(".")
    assert json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == {
        "partner_id": 42, "expires": EXPIRES, "entry_id": "0_abc", "privileges": "sview:0_abc"}
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}", ks)


def test_ks_without_entry_covers_every_entry_of_its_partner():
    ks = make_ks(SECRET.encode(), -2, EXPIRES)
    assert verify_ks(SECRET, ks, -2, now=EXPIRES, entry_id="0_any") == KsPayload(-2, EXPIRES, None, "")


def test_ks_refusals():
    ks = make_ks(SECRET, 42, EXPIRES, entry_id="0_abc")
    assert reason_of(lambda: verify_ks(SECRET, ks, 42, now=EXPIRES + 1)) == EXPIRED
    with pytest.raises(TokenError, match="partner 42, not 43"):
        verify_ks(SECRET, ks, 43, now=0)
    assert reason_of(lambda: verify_ks(SECRET, ks, 43, now=0)) == WRONG_PARTNER
    assert reason_of(lambda: verify_ks(SECRET, ks, 42, now=0, entry_id="0_abd")) == ENTRY_NOT_COVERED
    assert reason_of(lambda: verify_ks(new_secret(), ks, 42, now=0)) == BAD_SIGNATURE


def _forge(payload: dict, secret=SECRET) -> str:
    raw = json.dumps(payload).encode()
    mac = hmac.new(secret.encode(), raw, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def test_ks_tampering():
    ks = make_ks(SECRET, 42, EXPIRES, entry_id="0_abc")
    body, sig = ks.split(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    for field, value in [("expires", EXPIRES + 86400), ("partner_id", 43), ("entry_id", None), ("privileges", "*")]:
        forged = json.loads(raw) | {field: value}
        swapped = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=") + "." + sig
        assert reason_of(lambda: verify_ks(SECRET, swapped, 42, now=0)) == BAD_SIGNATURE
    for i in range(len(sig)):
        assert reason_of(lambda: verify_ks(SECRET, f"{body}.{flip(sig, i)}", 42, now=0)) == BAD_SIGNATURE
    for i in range(len(body) - 1):  # the last character may carry only padding bits: that is "malformed"
        assert reason_of(lambda: verify_ks(SECRET, f"{flip(body, i)}.{sig}", 42, now=0)) in (BAD_SIGNATURE, MALFORMED)
    assert reason_of(lambda: verify_ks(SECRET, f"{flip(body, len(body) - 1)}.{sig}", 42, now=0)) in (
        BAD_SIGNATURE, MALFORMED)
    for bad in (body, f"{body}.", f".{sig}", f"{body}.{sig}.x", f"{body}={sig}", f"{body}.{sig}=", "", None,
                f"{body}.{sig}\n", "x" * (KS_MAX_LENGTH + 1)):
        assert reason_of(lambda: verify_ks(SECRET, bad, 42, now=0)) == MALFORMED


def test_ks_payload_must_be_canonical_base64():
    """A second spelling of the same payload bytes (unused low bits of the last character set) is refused."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for entry in ("0_a", "0_ab", "0_abc"):  # payload lengths with 0, 2 and 4 unused bits in the last character
        ks = make_ks(SECRET, 42, EXPIRES, entry_id=entry)
        body, sig = ks.split(".")
        if len(body) % 4 == 0:
            continue
        last = alphabet.index(body[-1])
        assert last & 1 == 0
        twin = body[:-1] + alphabet[last | 1]
        assert base64.urlsafe_b64decode(twin + "=" * (-len(twin) % 4)) == \
            base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        assert reason_of(lambda: verify_ks(SECRET, f"{twin}.{sig}", 42, now=0)) == MALFORMED


@pytest.mark.parametrize("payload", [
    {"partner_id": 42, "expires": EXPIRES, "entry_id": None},  # missing privileges
    {"partner_id": 42, "expires": EXPIRES, "entry_id": None, "privileges": "", "admin": True},
    {"partner_id": "42", "expires": EXPIRES, "entry_id": None, "privileges": ""},
    {"partner_id": 42, "expires": float(EXPIRES), "entry_id": None, "privileges": ""},
    {"partner_id": 42, "expires": EXPIRES, "entry_id": 7, "privileges": ""},
    {"partner_id": True, "expires": EXPIRES, "entry_id": None, "privileges": ""},
    [42, EXPIRES],
])
def test_signed_but_malformed_payloads_are_refused(payload):
    assert reason_of(lambda: verify_ks(SECRET, _forge(payload), 42, now=0)) == MALFORMED


def test_make_ks_rejects_bad_arguments():
    for kwargs in ({"partner_id": "42"}, {"entry_id": 5}, {"privileges": None}):
        with pytest.raises(TypeError):
            make_ks(SECRET, **({"partner_id": 42, "expires": EXPIRES} | kwargs))
    with pytest.raises(ValueError):
        make_ks(SECRET, 42, -5)
    with pytest.raises(ValueError, match="more than"):
        make_ks(SECRET, 42, EXPIRES, privileges="x" * KS_MAX_LENGTH)


@given(st.integers(-(2**40), 2**40), st.integers(0, 2**40), st.one_of(st.none(), st.text(max_size=30)),
       st.text(max_size=30))
def test_ks_round_trip_property(partner_id, expires, entry_id, privileges):
    ks = make_ks(SECRET, partner_id, expires, entry_id, privileges)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}", ks)
    assert verify_ks(SECRET, ks, partner_id, now=expires, entry_id=entry_id) == \
        KsPayload(partner_id, expires, entry_id, privileges)


@given(st.one_of(st.text(), st.from_regex(r"[A-Za-z0-9_-]{0,80}\.[A-Za-z0-9_-]{0,50}", fullmatch=True)))
def test_arbitrary_ks_raise_only_token_error(ks):
    try:
        verify_ks(SECRET, ks, 42, now=0, entry_id="0_abc")
    except TokenError as e:
        assert e.reason in (MALFORMED, BAD_SIGNATURE)
    else:
        pytest.fail("an arbitrary ks verified")


def test_new_secret():
    a, b = new_secret(), new_secret()
    assert re.fullmatch(r"[0-9a-f]{64}", a) and a != b
