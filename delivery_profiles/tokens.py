"""Signed tokens: URL prefixes for secured delivery, Kaltura-style ks session tokens, RTMP stream keys.

All three are HMAC-SHA256 under a partner secret and are verified sans-I/O: the caller passes ``now`` (Unix
seconds). Verification always checks the signature before anything the signature covers, so "expired" or "wrong
partner" is only ever said of a genuine token; a forged one is a "bad signature". Signatures are compared in their
canonical base64url form with ``hmac.compare_digest`` (constant time, and no second spelling of one signature).

* Path token: ``"<expires>-<43 base64url chars>"`` = HMAC over ``f"{expires}:{prefix}"`` (expires has no ``:``, so
  the pair is unambiguous). Valid while ``now <= expires`` (nginx secure_link's rule). Characters: digits, letters,
  ``-`` and ``_``: safe in a path segment or a query value without escaping.
* ks: ``base64url(payload JSON) + "." + base64url(HMAC over those payload bytes)``; the payload holds partner_id,
  expires, entry_id (``null`` = every entry of the partner) and privileges (Kaltura's ``"sview:..,actionslimit:.."``
  string, carried but not interpreted here). No padding; at most ``KS_MAX_LENGTH`` characters.
* Stream key (RTMP publishing): a path token over the prefix ``"rtmp:" + app_stream``. Playback prefixes start with
  ``/``, so a playback token is never a valid stream key and vice versa (a separate secret is still advisable).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass

MALFORMED = "malformed"
EXPIRED = "expired"
BAD_SIGNATURE = "bad signature"
WRONG_PARTNER = "wrong partner"
ENTRY_NOT_COVERED = "entry not covered"

KS_MAX_LENGTH = 4096
_PATH_TOKEN = re.compile(r"(0|[1-9][0-9]{0,19})-([A-Za-z0-9_-]{43})", re.ASCII)
_B64URL = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_KS_FIELDS = ("partner_id", "expires", "entry_id", "privileges")


class TokenError(Exception):
    """A token that must be refused (the gateway answers 403). ``reason`` is one of the module's reason constants."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def new_secret() -> str:
    """A fresh partner secret: 32 random bytes as 64 hex characters."""
    return secrets.token_hex(32)


def _key(secret: bytes | str) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not isinstance(key, bytes) or not key:
        raise TypeError("secret must be a non-empty str or bytes")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes | str, message: bytes) -> str:
    return _b64(hmac.new(_key(secret), message, hashlib.sha256).digest())


def _check_expires(expires: int) -> None:
    if not isinstance(expires, int) or isinstance(expires, bool) or not 0 <= expires < 10**20:
        raise ValueError(f"expires must be a Unix time in whole seconds, got {expires!r}")


def _path_message(expires: int, prefix: str) -> bytes:
    return f"{expires}:{prefix}".encode("utf-8", "surrogatepass")


# --- path tokens -------------------------------------------------------------------------------------------------

def sign_path(secret: bytes | str, prefix: str, expires: int) -> str:
    """Token granting every URL under ``prefix`` until ``expires`` (inclusive)."""
    _check_expires(expires)
    return f"{expires}-{_mac(secret, _path_message(expires, prefix))}"


def verify_path(secret: bytes | str, prefix: str, token: str, now: float) -> None:
    """Return if ``token`` grants ``prefix`` at ``now``; raise ``TokenError`` otherwise."""
    m = _PATH_TOKEN.fullmatch(token) if isinstance(token, str) else None
    if m is None:
        raise TokenError(MALFORMED, "token is not '<expires>-<signature>'")
    expires = int(m.group(1))
    if not hmac.compare_digest(m.group(2), _mac(secret, _path_message(expires, prefix))):
        raise TokenError(BAD_SIGNATURE, "token does not match this path prefix and secret")
    if not now <= expires:  # also refuses a NaN clock
        raise TokenError(EXPIRED, f"token expired at {expires} (now {now:.0f})")


def stream_key(secret: bytes | str, app_stream: str, expires: int) -> str:
    """Publishing key for RTMP ``app/stream`` (``app_stream``), valid until ``expires``."""
    return sign_path(secret, "rtmp:" + app_stream, expires)


def verify_stream_key(secret: bytes | str, app_stream: str, key: str, now: float) -> None:
    verify_path(secret, "rtmp:" + app_stream, key, now)


# --- ks ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KsPayload:
    partner_id: int
    expires: int
    entry_id: str | None = None  # None: the ks covers all of the partner's entries
    privileges: str = ""


def make_ks(secret: bytes | str, partner_id: int, expires: int, entry_id: str | None = None,
            privileges: str = "") -> str:
    """A ks for ``partner_id`` (optionally limited to ``entry_id``) valid until ``expires`` (inclusive)."""
    if not isinstance(partner_id, int) or isinstance(partner_id, bool):
        raise TypeError(f"partner_id must be an int, got {partner_id!r}")
    _check_expires(expires)
    if entry_id is not None and not isinstance(entry_id, str):
        raise TypeError(f"entry_id must be a str or None, got {entry_id!r}")
    if not isinstance(privileges, str):
        raise TypeError(f"privileges must be a str, got {privileges!r}")
    payload = json.dumps({"partner_id": partner_id, "expires": expires, "entry_id": entry_id,
                          "privileges": privileges}, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    ks = f"{_b64(payload)}.{_mac(secret, payload)}"
    if len(ks) > KS_MAX_LENGTH:
        raise ValueError(f"ks would be {len(ks)} characters, more than {KS_MAX_LENGTH}")
    return ks


def verify_ks(secret: bytes | str, ks: str, partner_id: int, now: float, entry_id: str | None = None) -> KsPayload:
    """Check ``ks`` for ``partner_id`` at ``now`` and, when ``entry_id`` is given, that it covers that entry."""
    if not isinstance(ks, str) or len(ks) > KS_MAX_LENGTH or ks.count(".") != 1:
        raise TokenError(MALFORMED, "ks is not '<payload>.<signature>'")
    body, signature = ks.split(".")
    if not (_B64URL.fullmatch(body) and _B64URL.fullmatch(signature)):
        raise TokenError(MALFORMED, "ks is not base64url")
    try:
        payload = _unb64(body)
    except (binascii.Error, ValueError):
        raise TokenError(MALFORMED, "ks payload is not base64url") from None
    if _b64(payload) != body:
        raise TokenError(MALFORMED, "ks payload is not canonical base64url")
    if not hmac.compare_digest(signature, _mac(secret, payload)):
        raise TokenError(BAD_SIGNATURE, "ks signature does not match the secret")
    p = _parse_payload(payload)
    if not now <= p.expires:
        raise TokenError(EXPIRED, f"ks expired at {p.expires} (now {now:.0f})")
    if p.partner_id != partner_id:
        raise TokenError(WRONG_PARTNER, f"ks is for partner {p.partner_id}, not {partner_id}")
    if entry_id is not None and p.entry_id is not None and p.entry_id != entry_id:
        raise TokenError(ENTRY_NOT_COVERED, f"ks covers entry {p.entry_id!r}, not {entry_id!r}")
    return p


def _parse_payload(payload: bytes) -> KsPayload:
    """Decode a payload whose signature is already verified (a failure here means another ks writer)."""
    try:
        d = json.loads(payload)
    except (ValueError, RecursionError):
        d = None
    if not isinstance(d, dict) or sorted(d) != sorted(_KS_FIELDS):
        raise TokenError(MALFORMED, f"ks payload must be an object with keys {', '.join(_KS_FIELDS)}")
    pid, expires, entry, privileges = (d[k] for k in _KS_FIELDS)
    if (not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(expires, int)
            or isinstance(expires, bool) or not (entry is None or isinstance(entry, str))
            or not isinstance(privileges, str)):
        raise TokenError(MALFORMED, "ks payload has a field of the wrong type")
    return KsPayload(pid, expires, entry, privileges)
