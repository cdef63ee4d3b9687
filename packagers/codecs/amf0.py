"""AMF0 codec (Adobe "Action Message Format -- AMF 0"), sans-I/O: bytes in, Python values out, and back.

Type mapping (decode → Python → encode):

| marker | AMF0 type        | Python                                   |
|--------|------------------|------------------------------------------|
| 0x00   | number           | float (int encodes as a number too)      |
| 0x01   | boolean          | bool                                     |
| 0x02   | string           | str                                      |
| 0x03   | object           | dict (str keys)                          |
| 0x05   | null             | None                                     |
| 0x06   | undefined        | UNDEFINED                                |
| 0x07   | reference        | the referenced dict/list/EcmaArray/TypedObject (decode only) |
| 0x08   | ECMA array       | EcmaArray (a dict subclass)              |
| 0x0A   | strict array     | list (list or tuple encode)              |
| 0x0B   | date             | Date(ms, tz)                             |
| 0x0C   | long string      | str (str > 65535 UTF-8 bytes encodes so) |
| 0x0D   | unsupported      | UNSUPPORTED                              |
| 0x0F   | XML document     | XmlDocument (a str subclass)             |
| 0x10   | typed object     | TypedObject(name, fields)                |
| 0x11   | AMF3 switch      | simple AMF3 values only (decode only)    |

Shared by RTMP (command and data messages, which may switch to AMF3 for simple values) and HDS (the ``onMetaData``
script data an F4M ``<metadata>`` carries and an FLV file starts with, FLV spec E.4.4.1): ``script_data``.

Decoding hostile input raises only Amf0Error (rtmp turns it into its RtmpError): every length is checked against
the remaining bytes before slicing, nesting is bounded by MAX_DEPTH, invalid UTF-8 and unknown markers are rejected.
The reference table is shared across the values of one decode_all() call (one message body) and fresh for each
decode() call.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_DEPTH", "UNDEFINED", "UNSUPPORTED", "Amf0Error", "EcmaArray", "XmlDocument", "Date", "TypedObject",
    "decode", "decode_all", "encode", "encode_all", "script_data",
]


class Amf0Error(ValueError):
    """A value that is not valid AMF0 (decode) or that AMF0 cannot carry (encode); one line starting with the
    function name. A ValueError so that a packager's caller treats it like other bad input."""


MAX_DEPTH = 32  # nested complex values (objects, arrays) allowed; real commands nest 2-3 levels

NUMBER, BOOLEAN, STRING, OBJECT, MOVIECLIP, NULL, UNDEFINED_MARKER, REFERENCE, ECMA_ARRAY, OBJECT_END, \
    STRICT_ARRAY, DATE, LONG_STRING, UNSUPPORTED_MARKER, RECORDSET, XML_DOCUMENT, TYPED_OBJECT, AVMPLUS = range(0x12)


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self) -> str:
        return self._name


UNDEFINED = _Sentinel("UNDEFINED")
UNSUPPORTED = _Sentinel("UNSUPPORTED")


class EcmaArray(dict):
    """An AMF0 ECMA array (associative array, e.g. onMetaData): a dict that encodes back as 0x08."""

    def __repr__(self) -> str:
        return f"EcmaArray({dict.__repr__(self)})"


class XmlDocument(str):
    """An AMF0 XML document: a str that encodes back as 0x0F."""


@dataclass
class Date:
    ms: float  # milliseconds since the Unix epoch (UTC)
    tz: int = 0  # reserved time-zone field (s16, minutes); the spec says send 0


@dataclass
class TypedObject:
    name: str
    fields: dict = field(default_factory=dict)


_F64 = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_S16 = struct.Struct(">h")


# ---------------------------------------------------------------------------------------------------- decoding
class _Decoder:
    __slots__ = ("data", "pos", "refs", "depth")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos
        self.refs: list[Any] = []
        self.depth = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise Amf0Error(f"decode: truncated {what} at offset {self.pos}: need {n} bytes, "
                            f"{len(self.data) - self.pos} left")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def u8(self, what: str) -> int:
        if self.pos >= len(self.data):
            raise Amf0Error(f"decode: truncated {what} at offset {self.pos}: need 1 byte, 0 left")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u16(self, what: str) -> int:
        return _U16.unpack(self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def f64(self, what: str) -> float:
        return _F64.unpack(self.take(8, what))[0]

    def utf8(self, n: int, what: str) -> str:
        start = self.pos
        raw = self.take(n, what)
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            raise Amf0Error(f"decode: invalid UTF-8 in {what} at offset {start}: {e.reason}") from None

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Amf0Error(f"decode: nesting deeper than {MAX_DEPTH} levels at offset {self.pos}")

    def value(self) -> Any:
        at = self.pos
        marker = self.u8("type marker")
        if marker == NUMBER:
            return self.f64("number")
        if marker == BOOLEAN:
            return self.u8("boolean") != 0
        if marker == STRING:
            return self.utf8(self.u16("string length"), "string")
        if marker == OBJECT:
            obj: dict = {}
            self.refs.append(obj)
            self.enter()
            self.properties(obj)
            self.depth -= 1
            return obj
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == REFERENCE:
            index = self.u16("reference index")
            if index >= len(self.refs):
                raise Amf0Error(f"decode: reference {index} at offset {at} out of range "
                                f"({len(self.refs)} complex objects so far)")
            return self.refs[index]
        if marker == ECMA_ARRAY:
            self.u32("ECMA array count")  # advisory only: encoders get it wrong, the end marker is authoritative
            arr = EcmaArray()
            self.refs.append(arr)
            self.enter()
            self.properties(arr)
            self.depth -= 1
            return arr
        if marker == STRICT_ARRAY:
            count = self.u32("strict array count")
            if count > len(self.data) - self.pos:  # every element takes at least its marker byte
                raise Amf0Error(f"decode: strict array at offset {at} claims {count} elements, "
                                f"only {len(self.data) - self.pos} bytes left")
            items: list = []
            self.refs.append(items)
            self.enter()
            for _ in range(count):
                items.append(self.value())
            self.depth -= 1
            return items
        if marker == DATE:
            ms = self.f64("date")
            tz = _S16.unpack(self.take(2, "date time zone"))[0]
            return Date(ms, tz)
        if marker == LONG_STRING:
            return self.utf8(self.u32("long string length"), "long string")
        if marker == UNSUPPORTED_MARKER:
            return UNSUPPORTED
        if marker == XML_DOCUMENT:
            return XmlDocument(self.utf8(self.u32("XML document length"), "XML document"))
        if marker == TYPED_OBJECT:
            name = self.utf8(self.u16("typed object class name length"), "typed object class name")
            typed = TypedObject(name, {})
            self.refs.append(typed)
            self.enter()
            self.properties(typed.fields)
            self.depth -= 1
            return typed
        if marker == AVMPLUS:
            return self.amf3_value(at)
        if marker == OBJECT_END:
            raise Amf0Error(f"decode: object end marker outside an object at offset {at}")
        raise Amf0Error(f"decode: unknown or unsupported type marker 0x{marker:02x} at offset {at}")

    def properties(self, target: dict) -> None:
        """Key/value pairs until an empty key followed by the object end marker."""
        while True:
            key = self.utf8(self.u16("property name length"), "property name")
            if key == "" and self.pos < len(self.data) and self.data[self.pos] == OBJECT_END:
                self.pos += 1
                return
            target[key] = self.value()

    # AMF3 (Adobe "AMF 3" spec) — only the simple types, which is what AMF0 peers wrap in the switch in practice.
    def u29(self) -> int:
        result = 0
        for i in range(4):
            b = self.u8("AMF3 U29")
            if i == 3:
                return (result << 8) | b
            result = (result << 7) | (b & 0x7F)
            if not b & 0x80:
                return result
        raise AssertionError("unreachable")

    def amf3_value(self, at: int) -> Any:
        marker = self.u8("AMF3 type marker")
        if marker == 0x00:
            return UNDEFINED
        if marker == 0x01:
            return None
        if marker == 0x02:
            return False
        if marker == 0x03:
            return True
        if marker == 0x04:
            n = self.u29()
            return n - (1 << 29) if n & (1 << 28) else n
        if marker == 0x05:
            return self.f64("AMF3 double")
        if marker == 0x06:
            header = self.u29()
            if not header & 1:
                raise Amf0Error(f"decode: AMF3 string reference at offset {at} is not supported")
            return self.utf8(header >> 1, "AMF3 string")
        raise Amf0Error(f"decode: AMF3 type 0x{marker:02x} at offset {at} is not supported (complex AMF3)")


def decode(data: bytes, pos: int = 0) -> tuple[Any, int]:
    """Decode one AMF0 value at data[pos:]; return (value, position after it)."""
    if not 0 <= pos <= len(data):
        raise Amf0Error(f"decode: position {pos} outside data of {len(data)} bytes")
    d = _Decoder(data, pos)
    return d.value(), d.pos


def decode_all(data: bytes) -> list:
    """Decode a sequence of AMF0 values that fills data exactly (a command or data message body)."""
    d = _Decoder(data, 0)
    values = []
    while d.pos < len(data):
        values.append(d.value())
    return values


# ---------------------------------------------------------------------------------------------------- encoding
def _string_body(s: str, what: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise Amf0Error(f"encode: {what} is not encodable as UTF-8: {e.reason}") from None


def _key(out: list, key: Any) -> None:
    if not isinstance(key, str):
        raise Amf0Error(f"encode: object keys must be str, got {type(key).__name__}")
    raw = _string_body(key, "object key")
    if len(raw) > 0xFFFF:
        raise Amf0Error(f"encode: object key of {len(raw)} bytes exceeds 65535")
    out.append(_U16.pack(len(raw)))
    out.append(raw)


def _properties(out: list, mapping: dict, depth: int) -> None:
    for k, v in mapping.items():
        _key(out, k)
        _encode(out, v, depth)
    out.append(b"\x00\x00\x09")


def _encode(out: list, value: Any, depth: int) -> None:
    if value is None:
        out.append(b"\x05")
    elif value is UNDEFINED:
        out.append(b"\x06")
    elif value is UNSUPPORTED:
        out.append(b"\x0d")
    elif isinstance(value, bool):
        out.append(b"\x01\x01" if value else b"\x01\x00")
    elif isinstance(value, (int, float)):
        try:
            out.append(b"\x00" + _F64.pack(float(value)))
        except OverflowError:
            raise Amf0Error(f"encode: integer {value} does not fit a float64 number") from None
    elif isinstance(value, XmlDocument):
        raw = _string_body(value, "XML document")
        out.append(b"\x0f" + _U32.pack(len(raw)))
        out.append(raw)
    elif isinstance(value, str):
        raw = _string_body(value, "string")
        if len(raw) <= 0xFFFF:
            out.append(b"\x02" + _U16.pack(len(raw)))
        elif len(raw) <= 0xFFFFFFFF:
            out.append(b"\x0c" + _U32.pack(len(raw)))
        else:
            raise Amf0Error(f"encode: string of {len(raw)} bytes exceeds 2**32 - 1")
        out.append(raw)
    elif isinstance(value, Date):
        if not -0x8000 <= value.tz <= 0x7FFF:
            raise Amf0Error(f"encode: date time zone {value.tz} outside s16")
        out.append(b"\x0b" + _F64.pack(float(value.ms)) + _S16.pack(value.tz))
    else:
        if depth >= MAX_DEPTH:
            raise Amf0Error(f"encode: nesting deeper than {MAX_DEPTH} levels (or a cycle)")
        if isinstance(value, EcmaArray):
            out.append(b"\x08" + _U32.pack(len(value) & 0xFFFFFFFF))
            _properties(out, value, depth + 1)
        elif isinstance(value, dict):
            out.append(b"\x03")
            _properties(out, value, depth + 1)
        elif isinstance(value, (list, tuple)):
            if len(value) > 0xFFFFFFFF:
                raise Amf0Error(f"encode: strict array of {len(value)} elements exceeds 2**32 - 1")
            out.append(b"\x0a" + _U32.pack(len(value)))
            for item in value:
                _encode(out, item, depth + 1)
        elif isinstance(value, TypedObject):
            out.append(b"\x10")
            _key(out, value.name)
            _properties(out, value.fields, depth + 1)
        else:
            raise Amf0Error(f"encode: no AMF0 type for {type(value).__name__}")


def encode(value: Any) -> bytes:
    """Encode one Python value as AMF0 (see the module table). Raises Amf0Error for values AMF0 cannot carry."""
    out: list[bytes] = []
    _encode(out, value, 0)
    return b"".join(out)


def encode_all(*values: Any) -> bytes:
    """Encode a sequence of values back to back, e.g. encode_all("_result", 1.0, props, info)."""
    out: list[bytes] = []
    for v in values:
        _encode(out, v, 0)
    return b"".join(out)



def script_data(name: str, value: Any) -> bytes:
    """The body of an FLV SCRIPTDATA tag (FLV spec E.4.4.1): the method name as an AMF0 string, then its value
    (``onMetaData`` is an `EcmaArray`)."""
    return encode_all(name, value)
