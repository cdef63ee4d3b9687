"""CMCD (CTA-5004, Common Media Client Data) of one request, parsed into typed values for audience analytics.

Players (hls.js, dash.js, shaka-player, ExoPlayer, AVPlayer) send it on every manifest and segment request, either as
the query argument ``CMCD=`` or as the four headers ``CMCD-Object``, ``CMCD-Request``, ``CMCD-Session`` and
``CMCD-Status`` (CTA-5004 section 2, transmission modes). Each carries one *shard*: an RFC 8941 structured-field
dictionary without whitespace (section 3.2): comma-separated ``key=value`` members where a boolean true is the key
alone, strings are double-quoted with ``\\"`` and ``\\\\`` escapes, tokens are bare and numbers are decimal. The keys
and their types are in section 3.3; CMCD v2 (CTA-5004-A) turns some of them into inner lists (``br=(3200 1600)``),
of which we keep the first item, like common-media-library's down-conversion to v1 does.

Everything here runs on every request while collection is on, so a request without CMCD costs four header look-ups,
and the common shard is parsed with ``str.split`` / ``partition`` rather than a regex per key. The input is
client-chosen: anything malformed is dropped and counted in ``invalid``, well-formed keys we do not know (custom
``x-...`` keys, future ones) in ``unknown``; nothing raises.

Merge rule: the headers are read first, then the query; a key seen in an earlier shard is a duplicate (first one
wins, the later one counts as invalid). Players use one transmission mode at a time, so a key present in both means
something on the way added it; the headers come first because a URL is more easily replayed or rewritten.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

HEADER_NAMES = ("CMCD-Request", "CMCD-Object", "CMCD-Status", "CMCD-Session")
MAX_SHARD_CHARS = 4096
MAX_KEYS_PER_SHARD = 64
_MS_OR_KBPS_CAP = 10**9

# name → type: "int", "float" (decimal), "bool", "token", "str". v1 keys (CTA-5004 section 3.3) first, then the simple
# CMCD v2 keys that players send today (common-media-library's CMCD_KEY_TYPES, which shaka-player 5 vendors).
KNOWN_KEYS: dict[str, str] = {
    # v1: object (br, d, ot, tb), request (bl, dl, mtp, nor, nrr, su), session (cid, pr, sf, sid, st, v),
    # status (bs, rtp)
    "br": "int", "bl": "int", "d": "int", "dl": "int", "mtp": "int", "rtp": "int", "tb": "int", "v": "int",
    "pr": "float", "bs": "bool", "su": "bool", "ot": "token", "sf": "token", "st": "token",
    "cid": "str", "sid": "str", "nor": "str", "nrr": "str",
    # v2
    "ab": "int", "lb": "int", "tab": "int", "lab": "int", "tpb": "int", "tbl": "int", "pb": "int",
    "bsa": "int", "bsd": "int", "bsda": "int", "dfa": "int", "ltc": "int", "msd": "int", "pt": "int", "rc": "int",
    "sn": "int", "ts": "int", "ttfb": "int", "ttfbb": "int", "ttlb": "int",
    "bg": "bool", "nr": "bool", "e": "token", "sta": "token", "cdn": "str", "cen": "str", "cs": "str", "h": "str",
}
# integer caps: 10**9 for the kbps and ms keys (1 Tbit/s, 11 days), other bounds where that would be wrong
_INT_CAPS = {key: _MS_OR_KBPS_CAP for key, kind in KNOWN_KEYS.items() if kind == "int"}
_INT_CAPS.update(v=100, rc=999, ts=10**14)  # ts: milliseconds since the epoch, until year 5138
_NO_SHARDS = (None,) * 5
# keys whose v2 value is an inner list (common-media-library CMCD_INNER_LIST_KEYS) plus nor, a list of strings in v2
_LIST_KEYS = frozenset(("ab", "bl", "br", "bsa", "bsd", "bsda", "lab", "lb", "mtp", "pb", "tab", "tb", "tbl", "tpb",
                        "nor"))
_TOKENS = {  # CTA-5004 3.3 (ot, sf, st), CTA-5004-A (st=ll, sta, e), as common-media-library CMCD_TOKEN_VALUES
    "ot": frozenset(("m", "a", "v", "av", "i", "c", "tt", "k", "o")),
    "sf": frozenset(("d", "h", "s", "o")),
    "st": frozenset(("v", "l", "ll")),
    "sta": frozenset(("s", "p", "k", "r", "a", "w", "e", "f", "q", "d")),
    "e": frozenset(("bc", "ps", "pr", "e", "t", "c", "b", "m", "um", "pe", "pc", "rr", "as", "ae", "abs", "abe", "sk",
                    "ce")),
}
# string lengths, after unescaping: sid 64 and cid 128 (CTA-5004 3.3), the rest common-media-library's or ours
_STR_LIMITS = {"sid": 64, "cid": 128, "cdn": 128, "h": 128, "cen": 64, "nor": 256, "nrr": 64, "cs": 64}
_TRUE = frozenset(("?1", "true"))
_FALSE = frozenset(("?0", "false"))
_KEY_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz*")
_KEY_REST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.*")


@dataclass(slots=True)
class CmcdReport:
    values: dict[str, int | bool | str | float] = field(default_factory=dict)  # the valid keys, typed
    invalid: int = 0  # keys (or whole shards) dropped as malformed
    unknown: int = 0  # well-formed keys this parser does not know (ignored)
    present: bool = False  # the request carried any CMCD at all (query or any header)


def parse_cmcd(query_value: str | None, headers: Mapping[str, str]) -> CmcdReport:
    """The CMCD of one request: ``query_value`` is the URL-decoded ``CMCD`` query argument (or None); ``headers``
    any mapping with a case-insensitive ``get`` (aiohttp's CIMultiDictProxy); a plain dict may use any case."""
    get = headers.get
    shards = (get("CMCD-Request"), get("CMCD-Object"), get("CMCD-Status"), get("CMCD-Session"), query_value)
    if type(headers) is dict and None in shards:  # a plain dict (tests, tools): look the names up case-insensitively
        lowered = {str(k).lower(): v for k, v in headers.items() if str(k)[:5].lower() == "cmcd-"}
        shards = tuple(lowered.get(name.lower()) if shard is None else shard
                       for name, shard in zip(HEADER_NAMES, shards)) + (query_value,)
    report = CmcdReport()
    if shards == _NO_SHARDS:
        return report
    seen: set[str] = set()
    for shard in shards:
        if shard is None:
            continue
        report.present = True
        if not isinstance(shard, str) or len(shard) > MAX_SHARD_CHARS:
            report.invalid += 1
        elif shard:
            _parse_shard(shard, report, seen)
    return report


def _parse_shard(shard: str, report: CmcdReport, seen: set[str]) -> None:
    """One structured-field dictionary (CTA-5004 3.2) into ``report``; ``seen`` holds the keys of earlier members."""
    members = _members_of(shard)
    if len(members) > MAX_KEYS_PER_SHARD:
        report.invalid += len(members) - MAX_KEYS_PER_SHARD
        members = members[:MAX_KEYS_PER_SHARD]
    clean = shard.isascii() and shard.isprintable()
    spaced = " " in shard
    values, int_caps, add_seen = report.values, _INT_CAPS, seen.add  # locals: this loop runs per key, per request
    for member in members:
        if not clean and not (member.isascii() and member.isprintable()):
            report.invalid += 1
            continue
        key, equals, raw = (member.strip(" ") if spaced else member).partition("=")
        if key in seen:
            report.invalid += 1
            continue
        cap = int_caps.get(key)
        if cap is not None and raw.isdigit() and len(raw) < 16:  # the common case, inline (the member is ASCII)
            add_seen(key)
            number = int(raw)
            if number <= cap:
                values[key] = number
            else:
                report.invalid += 1
            continue
        kind = KNOWN_KEYS.get(key)
        if kind is None:
            if key and key[0] in _KEY_FIRST and _KEY_REST.issuperset(key):
                add_seen(key)
                report.unknown += 1
            else:
                report.invalid += 1
            continue
        add_seen(key)
        value = _value_of(key, kind, raw if equals else None)
        if value is None:
            report.invalid += 1
        else:
            values[key] = value


def _members_of(shard: str) -> list[str]:
    """The members of a shard: ``shard.split(",")`` unless a quoted string holds a comma (then a slower split)."""
    if '"' in shard and ("\\" in shard or "," in "".join(shard.split('"')[1::2])):
        return _split_outside_strings(shard)
    return shard.split(",")


def _value_of(key: str, kind: str, raw: str | None) -> int | bool | str | float | None:
    """The typed value of one member (``raw`` is None for a bare key, a boolean true), or None if malformed."""
    if raw is None:
        return True if kind == "bool" else None
    if raw[:1] == "(" and key in _LIST_KEYS:
        raw = _first_item(raw)
    if kind == "str":
        return _string_of(key, raw)
    if ";" in raw:  # structured-field parameters (v2 ``;ot=v``): the bare item is what we keep
        raw = raw.partition(";")[0]
    if kind == "int":
        if not raw.isdigit() or len(raw) > 15:  # the member is ASCII: isdigit() means 0-9 here
            return None
        number = int(raw)
        return number if number <= _INT_CAPS[key] else None
    if kind == "bool":
        return True if raw in _TRUE else False if raw in _FALSE else None
    if kind == "token":
        return raw if raw in _TOKENS[key] else None
    whole, dot, fraction = raw.partition(".")  # "float": a decimal such as pr=1.25 (RFC 8941 3.3.2, <= 3 decimals)
    if not whole.isdigit() or len(whole) > 4 or dot and (not fraction.isdigit() or len(fraction) > 3):
        return None
    return float(raw)


def _string_of(key: str, raw: str) -> str | None:
    """An RFC 8941 string (3.3.3): quoted, with only ``\\"`` and ``\\\\`` escapes, within the key's length limit;
    structured-field parameters after it (v2 ``nor="x";r="0-99"``) are ignored."""
    if raw[:1] != '"':
        return None
    escaped = "\\" in raw
    end = _closing_quote(raw) if escaped else raw.find('"', 1)
    if end < 0 or end + 1 < len(raw) and raw[end + 1] != ";":
        return None
    text = raw[1:end]
    if escaped:
        text = text.replace("\\\\", "\0").replace('\\"', '"').replace("\0", "\\")
    if len(text) > _STR_LIMITS.get(key, 256) or key == "nrr" and not _is_byte_range(text):
        return None
    return text


def _closing_quote(raw: str) -> int:
    """The index of the quote closing the string that opens ``raw`` (escapes honoured), or -1; a backslash before
    anything but a quote or a backslash is malformed (RFC 8941 4.2.5), which also gives -1."""
    index = 1
    while index < len(raw):
        char = raw[index]
        if char == '"':
            return index
        if char == "\\":
            if raw[index + 1:index + 2] not in ('"', "\\"):
                return -1
            index += 1
        index += 1
    return -1


def _is_byte_range(text: str) -> bool:
    """nrr (CTA-5004 3.3): ``<range-start>-<range-end>``, either side may be left out, not both."""
    start, dash, end = text.partition("-")
    if not dash or not (start or end) or start and not start.isdigit() or end and not end.isdigit():
        return False
    return not start or not end or len(start) < 16 and len(end) < 16 and int(start) <= int(end)


def _first_item(raw: str) -> str:
    """The first item of a v2 inner list ``(a b;p=1 c)`` (RFC 8941 3.1.1), or "" if malformed."""
    inner = raw[1:]
    if inner[:1] == '"':
        end = _closing_quote(inner)
        return inner[:end + 1] if end > 0 else ""
    item = inner.partition(" ")[0].partition(")")[0]
    return item


def _split_outside_strings(shard: str) -> list[str]:
    """``shard.split(",")`` that keeps commas inside quoted strings: split everywhere, then glue pieces back while a
    string is open. The parity of a piece's quotes decides, except in the rare piece with a backslash, scanned."""
    members: list[str] = []
    pending: list[str] = []
    inside = False
    for piece in shard.split(","):
        if "\\" not in piece:
            inside ^= bool(piece.count('"') & 1)
        else:
            escape = False
            for char in piece:  # a backslash escapes the next character, inside a string only
                if escape:
                    escape = False
                elif char == "\\" and inside:
                    escape = True
                elif char == '"':
                    inside = not inside
        pending.append(piece)
        if not inside:
            members.append(",".join(pending))
            pending = []
    if pending:  # an unterminated string: the rest of the shard is one malformed member
        members.append(",".join(pending))
    return members
