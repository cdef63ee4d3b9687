"""Protocol control and user control messages (RTMP 1.0 §5.4, §6.2, §7.1.7) and the acknowledgement window."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmp.chunk import ChunkReader, ChunkWriter, Message
from rtmp.errors import RtmpError
from rtmp.messages import (Abort, AckTracker, Acknowledgement, MessageType, PingRequest, PingResponse,
                           SetBufferLength, SetChunkSize, SetPeerBandwidth, StreamBegin, StreamDry, StreamEOF,
                           StreamIsRecorded, UnknownUserControl, UserControl, WindowAcknowledgementSize,
                           parse_control)

H = bytes.fromhex


def test_type_ids():
    assert [int(t) for t in MessageType] == [1, 2, 3, 4, 5, 6, 8, 9, 15, 16, 17, 18, 19, 20, 22]
    assert (MessageType.AUDIO, MessageType.VIDEO, MessageType.DATA_AMF0, MessageType.DATA_AMF3) == (8, 9, 18, 15)
    assert (MessageType.SHARED_OBJECT_AMF0, MessageType.SHARED_OBJECT_AMF3) == (19, 16)
    assert (MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3, MessageType.AGGREGATE) == (20, 17, 22)


@pytest.mark.parametrize("obj, type_id, payload", [
    (SetChunkSize(4096), 1, "00001000"),
    (Abort(3), 2, "00000003"),
    (Acknowledgement(0x01020304), 3, "01020304"),
    (WindowAcknowledgementSize(2500000), 5, "002625a0"),
    (SetPeerBandwidth(2500000, 2), 6, "002625a002"),
    (StreamBegin(1), 4, "0000" "00000001"),
    (StreamEOF(1), 4, "0001" "00000001"),
    (StreamDry(1), 4, "0002" "00000001"),
    (SetBufferLength(1, 3000), 4, "0003" "00000001" "00000bb8"),
    (StreamIsRecorded(1), 4, "0004" "00000001"),
    (PingRequest(0xDEADBEEF), 4, "0006" "deadbeef"),
    (PingResponse(0xDEADBEEF), 4, "0007" "deadbeef"),
    (UnknownUserControl(31, H("00000001")), 4, "001f" "00000001"),
])
def test_vectors(obj, type_id, payload):
    assert obj.message_type_id == type_id
    assert bytes(obj) == H(payload)
    assert type(obj).parse(H(payload)) == obj if type_id != 4 else UserControl.parse(H(payload)) == obj
    assert parse_control(type_id, H(payload)) == obj
    assert obj.to_message(7) == Message(2, 7, type_id, 0, H(payload))


def test_ping_response():
    req = UserControl.parse(H("0006" "00012345"))
    assert isinstance(req, PingRequest)
    assert bytes(req.ping_response()) == H("0007" "00012345")


@pytest.mark.parametrize("type_id, payload", [
    (1, ""), (1, "001000"), (1, "0000100000"), (1, "80000000"), (1, "00000000"),
    (2, "000003"), (3, "0102030405"), (5, ""), (6, "002625a0"), (6, "002625a003"), (6, "002625a00200"),
    (4, ""), (4, "00"), (4, "0000"), (4, "0000000001"), (4, "000000000001ff"), (4, "0003" "00000001"),
    (4, "0006" "000000"), (4, "0007" "0000000000"),
])
def test_malformed_payloads(type_id, payload):
    with pytest.raises(RtmpError):
        parse_control(type_id, H(payload))


def test_not_a_control_message():
    with pytest.raises(RtmpError):
        parse_control(9, b"")


def test_constructor_checks():
    for make in (lambda: SetChunkSize(0), lambda: SetChunkSize(2 ** 31), lambda: SetPeerBandwidth(1, 3),
                 lambda: Acknowledgement(-1), lambda: StreamBegin(2 ** 32), lambda: PingRequest(-1)):
        with pytest.raises(RtmpError):
            make()


u32 = st.integers(0, 2 ** 32 - 1)
CONTROLS = st.one_of(
    st.builds(SetChunkSize, st.integers(1, 0x7FFFFFFF)), st.builds(Abort, u32), st.builds(Acknowledgement, u32),
    st.builds(WindowAcknowledgementSize, u32), st.builds(SetPeerBandwidth, u32, st.sampled_from([0, 1, 2])),
    st.builds(StreamBegin, u32), st.builds(StreamEOF, u32), st.builds(StreamDry, u32),
    st.builds(StreamIsRecorded, u32), st.builds(SetBufferLength, u32, u32), st.builds(PingRequest, u32),
    st.builds(PingResponse, u32),
    st.builds(UnknownUserControl, st.integers(8, 0xFFFF), st.binary(max_size=20)))


@given(CONTROLS, u32)
def test_round_trip_through_chunk_stream(obj, ts):
    m = obj.to_message(ts)
    out = ChunkReader().feed(ChunkWriter().write(m))
    assert out == [m]
    assert parse_control(out[0].message_type_id, out[0].payload) == obj


@given(st.integers(1, 12), st.binary(max_size=12))
def test_parse_never_raises_other_errors(type_id, payload):
    try:
        obj = parse_control(type_id, payload)
    except RtmpError:
        return
    assert bytes(obj) == payload


def test_ack_tracker_window():
    t = AckTracker(1000)
    assert t.received(999) is None
    assert t.received(1) == Acknowledgement(1000)
    assert t.received(500) is None
    assert t.received(2000) == Acknowledgement(3500)  # the total, once per call
    assert t.received(999) is None
    assert t.received(1) == Acknowledgement(4500)


def test_ack_tracker_sequence_wraps_and_window_changes():
    t = AckTracker(2 ** 31)
    assert t.received(2 ** 31) == Acknowledgement(2 ** 31)
    assert t.received(2 ** 31 + 5) == Acknowledgement(5)
    t.set_window(10)
    assert t.received(10) == Acknowledgement(15)
    assert AckTracker(0).received(10 ** 9) is None  # no window announced: never acknowledge
    with pytest.raises(RtmpError):
        t.received(-1)
