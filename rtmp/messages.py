"""RTMP messages (spec 1.0 §5.4, §6.2, §7.1.7): the `Message` envelope, type ids and protocol control messages.

Sans-I/O: every control message is a small frozen dataclass with ``parse(payload)`` and ``__bytes__``; malformed
payloads raise `RtmpError`. `AckTracker` counts received bytes and says when an Acknowledgement is due.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from rtmp.errors import RtmpError

U32_MASK = 0xFFFFFFFF
MAX_CHUNK_SIZE = 0x7FFFFFFF

# Chunk stream and message stream used for protocol control messages (§5.4).
CONTROL_CHUNK_STREAM_ID = 2
CONTROL_MESSAGE_STREAM_ID = 0


class MessageType(IntEnum):
    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


MSG_SET_CHUNK_SIZE = MessageType.SET_CHUNK_SIZE
MSG_ABORT = MessageType.ABORT
MSG_ACKNOWLEDGEMENT = MessageType.ACKNOWLEDGEMENT
MSG_USER_CONTROL = MessageType.USER_CONTROL
MSG_WINDOW_ACK_SIZE = MessageType.WINDOW_ACK_SIZE
MSG_SET_PEER_BANDWIDTH = MessageType.SET_PEER_BANDWIDTH
MSG_AUDIO = MessageType.AUDIO
MSG_VIDEO = MessageType.VIDEO
MSG_DATA_AMF3 = MessageType.DATA_AMF3
MSG_SHARED_OBJECT_AMF3 = MessageType.SHARED_OBJECT_AMF3
MSG_COMMAND_AMF3 = MessageType.COMMAND_AMF3
MSG_DATA_AMF0 = MessageType.DATA_AMF0
MSG_SHARED_OBJECT_AMF0 = MessageType.SHARED_OBJECT_AMF0
MSG_COMMAND_AMF0 = MessageType.COMMAND_AMF0
MSG_AGGREGATE = MessageType.AGGREGATE


@dataclass(frozen=True, slots=True)
class Message:
    """One complete RTMP message as carried by the chunk stream; ``timestamp`` is absolute ms modulo 2**32."""
    chunk_stream_id: int
    timestamp: int
    message_type_id: int
    message_stream_id: int
    payload: bytes


def _u32(payload: bytes, what: str) -> int:
    if len(payload) != 4:
        raise RtmpError(f"{what}.parse: payload must be 4 bytes, got {len(payload)}")
    return int.from_bytes(payload, "big")


def _check_u32(value: int, what: str) -> None:
    if not 0 <= value <= U32_MASK:
        raise RtmpError(f"{what}: value {value} does not fit in 32 bits")


class _Control:
    """Mixin: wrap a protocol control message into a `Message` on chunk stream 2, message stream 0."""
    message_type_id: ClassVar[int]

    def to_message(self, timestamp: int = 0) -> Message:
        return Message(CONTROL_CHUNK_STREAM_ID, timestamp, int(self.message_type_id), CONTROL_MESSAGE_STREAM_ID,
                       bytes(self))


@dataclass(frozen=True, slots=True)
class SetChunkSize(_Control):
    chunk_size: int
    message_type_id: ClassVar[int] = MSG_SET_CHUNK_SIZE

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise RtmpError(f"SetChunkSize: chunk size {self.chunk_size} outside 1..0x7FFFFFFF")

    @classmethod
    def parse(cls, payload: bytes) -> SetChunkSize:
        value = _u32(payload, "SetChunkSize")
        if value & 0x80000000:
            raise RtmpError(f"SetChunkSize.parse: first bit must be 0, got 0x{value:08x}")
        if value == 0:
            raise RtmpError("SetChunkSize.parse: chunk size 0")
        return cls(value)

    def __bytes__(self) -> bytes:
        return self.chunk_size.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class Abort(_Control):
    chunk_stream_id: int
    message_type_id: ClassVar[int] = MSG_ABORT

    def __post_init__(self) -> None:
        _check_u32(self.chunk_stream_id, "Abort")

    @classmethod
    def parse(cls, payload: bytes) -> Abort:
        return cls(_u32(payload, "Abort"))

    def __bytes__(self) -> bytes:
        return self.chunk_stream_id.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class Acknowledgement(_Control):
    sequence_number: int
    message_type_id: ClassVar[int] = MSG_ACKNOWLEDGEMENT

    def __post_init__(self) -> None:
        _check_u32(self.sequence_number, "Acknowledgement")

    @classmethod
    def parse(cls, payload: bytes) -> Acknowledgement:
        return cls(_u32(payload, "Acknowledgement"))

    def __bytes__(self) -> bytes:
        return self.sequence_number.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class WindowAcknowledgementSize(_Control):
    size: int
    message_type_id: ClassVar[int] = MSG_WINDOW_ACK_SIZE

    def __post_init__(self) -> None:
        _check_u32(self.size, "WindowAcknowledgementSize")

    @classmethod
    def parse(cls, payload: bytes) -> WindowAcknowledgementSize:
        return cls(_u32(payload, "WindowAcknowledgementSize"))

    def __bytes__(self) -> bytes:
        return self.size.to_bytes(4, "big")


class LimitType(IntEnum):
    HARD = 0
    SOFT = 1
    DYNAMIC = 2


@dataclass(frozen=True, slots=True)
class SetPeerBandwidth(_Control):
    size: int
    limit_type: int
    message_type_id: ClassVar[int] = MSG_SET_PEER_BANDWIDTH

    def __post_init__(self) -> None:
        _check_u32(self.size, "SetPeerBandwidth")
        if self.limit_type not in (0, 1, 2):
            raise RtmpError(f"SetPeerBandwidth: limit type {self.limit_type} not in 0, 1, 2")

    @classmethod
    def parse(cls, payload: bytes) -> SetPeerBandwidth:
        if len(payload) != 5:
            raise RtmpError(f"SetPeerBandwidth.parse: payload must be 5 bytes, got {len(payload)}")
        return cls(int.from_bytes(payload[:4], "big"), payload[4])

    def __bytes__(self) -> bytes:
        return self.size.to_bytes(4, "big") + bytes([self.limit_type])


# ---- User Control messages (type 4, §6.2 / §7.1.7) ------------------------------------------------------------


class UserControlEvent(IntEnum):
    STREAM_BEGIN = 0
    STREAM_EOF = 1
    STREAM_DRY = 2
    SET_BUFFER_LENGTH = 3
    STREAM_IS_RECORDED = 4
    PING_REQUEST = 6
    PING_RESPONSE = 7


class UserControl(_Control):
    """Base of User Control events. ``UserControl.parse(payload)`` returns the concrete event object."""
    message_type_id: ClassVar[int] = MSG_USER_CONTROL
    event_type: ClassVar[int]

    @staticmethod
    def parse(payload: bytes) -> UserControl:
        if len(payload) < 2:
            raise RtmpError(f"UserControl.parse: payload of {len(payload)} bytes has no event type")
        event_type = int.from_bytes(payload[:2], "big")
        cls = _USER_CONTROL_EVENTS.get(event_type)
        if cls is None:
            return UnknownUserControl(event_type, bytes(payload[2:]))
        return cls._parse_data(bytes(payload[2:]))


def _event_u32(data: bytes, name: str) -> int:
    if len(data) != 4:
        raise RtmpError(f"UserControl.parse: {name} event data must be 4 bytes, got {len(data)}")
    return int.from_bytes(data, "big")


@dataclass(frozen=True, slots=True)
class _StreamEvent(UserControl):
    stream_id: int

    def __post_init__(self) -> None:
        _check_u32(self.stream_id, type(self).__name__)

    @classmethod
    def _parse_data(cls, data: bytes):
        return cls(_event_u32(data, cls.__name__))

    def __bytes__(self) -> bytes:
        return struct.pack(">HI", self.event_type, self.stream_id)


@dataclass(frozen=True, slots=True)
class StreamBegin(_StreamEvent):
    event_type: ClassVar[int] = UserControlEvent.STREAM_BEGIN


@dataclass(frozen=True, slots=True)
class StreamEOF(_StreamEvent):
    event_type: ClassVar[int] = UserControlEvent.STREAM_EOF


@dataclass(frozen=True, slots=True)
class StreamDry(_StreamEvent):
    event_type: ClassVar[int] = UserControlEvent.STREAM_DRY


@dataclass(frozen=True, slots=True)
class StreamIsRecorded(_StreamEvent):
    event_type: ClassVar[int] = UserControlEvent.STREAM_IS_RECORDED


@dataclass(frozen=True, slots=True)
class SetBufferLength(UserControl):
    stream_id: int
    buffer_ms: int
    event_type: ClassVar[int] = UserControlEvent.SET_BUFFER_LENGTH

    def __post_init__(self) -> None:
        _check_u32(self.stream_id, "SetBufferLength")
        _check_u32(self.buffer_ms, "SetBufferLength")

    @classmethod
    def _parse_data(cls, data: bytes) -> SetBufferLength:
        if len(data) != 8:
            raise RtmpError(f"UserControl.parse: SetBufferLength event data must be 8 bytes, got {len(data)}")
        return cls(*struct.unpack(">II", data))

    def __bytes__(self) -> bytes:
        return struct.pack(">HII", self.event_type, self.stream_id, self.buffer_ms)


@dataclass(frozen=True, slots=True)
class PingResponse(UserControl):
    timestamp: int
    event_type: ClassVar[int] = UserControlEvent.PING_RESPONSE

    def __post_init__(self) -> None:
        _check_u32(self.timestamp, "PingResponse")

    @classmethod
    def _parse_data(cls, data: bytes) -> PingResponse:
        return cls(_event_u32(data, "PingResponse"))

    def __bytes__(self) -> bytes:
        return struct.pack(">HI", self.event_type, self.timestamp)


@dataclass(frozen=True, slots=True)
class PingRequest(UserControl):
    timestamp: int
    event_type: ClassVar[int] = UserControlEvent.PING_REQUEST

    def __post_init__(self) -> None:
        _check_u32(self.timestamp, "PingRequest")

    @classmethod
    def _parse_data(cls, data: bytes) -> PingRequest:
        return cls(_event_u32(data, "PingRequest"))

    def __bytes__(self) -> bytes:
        return struct.pack(">HI", self.event_type, self.timestamp)

    def ping_response(self) -> PingResponse:
        """The reply the spec asks for: a PingResponse echoing the request's timestamp."""
        return PingResponse(self.timestamp)


@dataclass(frozen=True, slots=True)
class UnknownUserControl(UserControl):
    """An event this module does not model (e.g. FMS buffer empty/ready, 31/32): kept verbatim, never an error."""
    unknown_event_type: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.unknown_event_type <= 0xFFFF:
            raise RtmpError(f"UnknownUserControl: event type {self.unknown_event_type} does not fit in 16 bits")

    def __bytes__(self) -> bytes:
        return self.unknown_event_type.to_bytes(2, "big") + self.data


_USER_CONTROL_EVENTS: dict[int, type] = {
    c.event_type: c for c in (StreamBegin, StreamEOF, StreamDry, SetBufferLength, StreamIsRecorded,
                              PingRequest, PingResponse)
}

_CONTROL_PARSERS = {
    MSG_SET_CHUNK_SIZE: SetChunkSize.parse,
    MSG_ABORT: Abort.parse,
    MSG_ACKNOWLEDGEMENT: Acknowledgement.parse,
    MSG_USER_CONTROL: UserControl.parse,
    MSG_WINDOW_ACK_SIZE: WindowAcknowledgementSize.parse,
    MSG_SET_PEER_BANDWIDTH: SetPeerBandwidth.parse,
}


def is_control(message_type_id: int) -> bool:
    return message_type_id in _CONTROL_PARSERS


def parse_control(message_type_id: int, payload: bytes):
    """Decode a protocol control / user control payload by its message type id; RtmpError for other types."""
    parser = _CONTROL_PARSERS.get(message_type_id)
    if parser is None:
        raise RtmpError(f"parse_control: message type {message_type_id} is not a protocol control message")
    return parser(payload)


class AckTracker:
    """Counts bytes received and says when an Acknowledgement is due (§5.4.3, §5.4.4).

    ``received(n)`` returns an `Acknowledgement` carrying the total byte count (mod 2**32) once at least ``window``
    bytes arrived since the last one, else None. A window of 0 disables acknowledgements.
    """

    def __init__(self, window: int = 0) -> None:
        self.set_window(window)
        self.total = 0
        self._last_ack = 0

    def set_window(self, window: int) -> None:
        if not 0 <= window <= U32_MASK:
            raise RtmpError(f"AckTracker.set_window: window {window} does not fit in 32 bits")
        self.window = window

    def received(self, n: int) -> Acknowledgement | None:
        if n < 0:
            raise RtmpError(f"AckTracker.received: negative byte count {n}")
        self.total += n
        if self.window and self.total - self._last_ack >= self.window:
            self._last_ack = self.total
            return Acknowledgement(self.total & U32_MASK)
        return None
