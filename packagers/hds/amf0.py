"""A minimal AMF0 *encoder* (Adobe Action Message Format AMF0 specification, 2.2-2.11) for FLV script data.

HDS needs AMF0 in one place: the ``onMetaData`` script data object that the F4M ``<metadata>`` element carries
base64-encoded (F4M 1.0, "metadata") and that an FLV file would carry as its first SCRIPTDATA tag (FLV spec E.4.4.1).
Only the types that object uses are written: number (2.2), boolean (2.3), string (2.4) and long string (2.14),
null (2.7), anonymous object (2.5) and ECMA array (2.10), each ended by the object-end marker (2.11).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Mapping, Union

NUMBER_MARKER = 0x00
BOOLEAN_MARKER = 0x01
STRING_MARKER = 0x02
OBJECT_MARKER = 0x03
NULL_MARKER = 0x05
ECMA_ARRAY_MARKER = 0x08
OBJECT_END_MARKER = 0x09
LONG_STRING_MARKER = 0x0C

_OBJECT_END = b"\x00\x00\x09"  # empty UTF-8 key + object-end marker


@dataclass(frozen=True)
class AmfObject:
    """An anonymous AMF0 object (2.5); a plain ``dict`` encodes as an ECMA array (2.10), as onMetaData is."""

    properties: Mapping[str, "Value"]


Value = Union[None, bool, int, float, str, AmfObject, Mapping[str, "Value"]]


def _utf8(text: str) -> bytes:
    """UTF-8-empty / UTF-8 (1.3): a 16-bit length then the bytes; keys and short strings."""
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError(f"amf0._utf8: key of {len(raw)} bytes does not fit a 16-bit length")
    return struct.pack(">H", len(raw)) + raw


def _properties(items: Mapping[str, Value]) -> bytes:
    return b"".join(_utf8(str(k)) + encode(v) for k, v in items.items()) + _OBJECT_END


def encode(value: Value) -> bytes:
    """One AMF0 value. ``bool`` is tested before ``int`` (a Python bool is an int)."""
    if value is None:
        return bytes([NULL_MARKER])
    if isinstance(value, bool):
        return bytes([BOOLEAN_MARKER, 1 if value else 0])
    if isinstance(value, (int, float)):
        return struct.pack(">Bd", NUMBER_MARKER, float(value))  # IEEE-754 double, network byte order
    if isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) <= 0xFFFF:
            return struct.pack(">BH", STRING_MARKER, len(raw)) + raw
        return struct.pack(">BI", LONG_STRING_MARKER, len(raw)) + raw
    if isinstance(value, AmfObject):
        return bytes([OBJECT_MARKER]) + _properties(value.properties)
    if isinstance(value, Mapping):
        # ECMA array: associative-count (a hint, the end marker terminates it) then the properties
        return struct.pack(">BI", ECMA_ARRAY_MARKER, len(value)) + _properties(value)
    raise TypeError(f"amf0.encode: no AMF0 encoding for {type(value).__name__}")


def script_data(name: str, value: Value) -> bytes:
    """The body of an FLV SCRIPTDATA tag (FLV spec E.4.4.1): the method name as an AMF0 string, then its value."""
    return encode(name) + encode(value)
