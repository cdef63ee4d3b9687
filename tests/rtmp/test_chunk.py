"""Chunk stream (RTMP 1.0 §5.3): hand-built vectors from the spec, writer → reader round trips, limits, fuzz."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmp.chunk import ChunkReader, ChunkWriter, Message
from rtmp.errors import RtmpError
from rtmp.messages import SetChunkSize

H = bytes.fromhex
MASK = 0xFFFFFFFF


def feed_all(reader, data, step=None):
    out = []
    if step is None:
        out += reader.feed(data)
    else:
        for i in range(0, len(data), step):
            out += reader.feed(data[i:i + step])
    return out


# ---- hand-built vectors (bytes written from the spec, not from the writer) -------------------------------------

def test_fmt0_fmt1_fmt2_fmt3_vectors():
    data = (
        # fmt 0, csid 3: timestamp 100, length 5, type 20, message stream id 1 (little endian)
        H("03" "000064" "000005" "14" "01000000") + b"hello"
        # fmt 1, csid 3: delta 40, length 3, type 9
        + H("43" "000028" "000003" "09") + b"abc"
        # fmt 2, csid 3: delta 10
        + H("83" "00000a") + b"xyz"
        # fmt 3, csid 3, starting a new message: the previous delta (10) again, §5.3.1.2.4
        + H("c3") + b"def"
    )
    for step in (None, 1, 2, 7):
        assert feed_all(ChunkReader(), data, step) == [
            Message(3, 100, 20, 1, b"hello"),
            Message(3, 140, 9, 1, b"abc"),
            Message(3, 150, 9, 1, b"xyz"),
            Message(3, 160, 9, 1, b"def"),
        ]


def test_fmt3_after_fmt0_adds_the_fmt0_timestamp_as_delta():
    # §5.3.1.2.4: a type 3 chunk after a type 0 chunk has a delta equal to the type 0 timestamp
    data = H("04" "0003e8" "000002" "08" "00000000") + b"aa" + H("c4") + b"bb" + H("c4") + b"cc"
    assert ChunkReader().feed(data) == [Message(4, 1000, 8, 0, b"aa"), Message(4, 2000, 8, 0, b"bb"),
                                        Message(4, 3000, 8, 0, b"cc")]


def test_continuation_chunks_at_default_chunk_size():
    payload = bytes(range(200))
    data = H("03" "000000" "0000c8" "09" "01000000") + payload[:128] + H("c3") + payload[128:]
    assert ChunkReader().feed(data) == [Message(3, 0, 9, 1, payload)]


@pytest.mark.parametrize("basic, csid", [
    ("02", 2), ("3f", 63),               # one byte
    ("0000", 64), ("00ff", 319),         # two bytes: 64 + second byte
    ("010001", 320), ("01ffff", 65599),  # three bytes: 64 + second + third * 256
    ("010000", 64),                      # the three-byte form may also carry small ids
])
def test_basic_header_forms(basic, csid):
    data = H(basic) + H("000007" "000001" "12" "00000000") + b"!"
    assert ChunkReader().feed(data) == [Message(csid, 7, 18, 0, b"!")]
    # and the fmt bits are read from the first byte of every form
    fmt1 = bytes([H(basic)[0] | 0x40]) + H(basic)[1:] + H("000003" "000001" "12") + b"?"
    assert ChunkReader().feed(data + fmt1)[1] == Message(csid, 10, 18, 0, b"?")


@pytest.mark.parametrize("csid, basic", [(2, "02"), (63, "3f"), (64, "0000"), (319, "00ff"), (320, "010001"),
                                         (65599, "01ffff")])
def test_writer_basic_header_bytes(csid, basic):
    assert ChunkWriter().write(Message(csid, 0, 1, 0, b"")) == H(basic) + H("000000" "000000" "01" "00000000")


def test_extended_timestamp_fmt0_and_repeated_in_continuation():
    payload = bytes(range(130))
    data = (H("05" "ffffff" "000082" "09" "01000000" "01000000") + payload[:128]
            + H("c5" "01000000") + payload[128:])
    expected = [Message(5, 0x01000000, 9, 1, payload)]
    assert ChunkReader().feed(data) == expected
    assert feed_all(ChunkReader(), data, 1) == expected
    assert ChunkReader(extended_in_type3="auto").feed(data) == expected
    # the writer produces exactly these bytes (ffmpeg/librtmp repeat the extended field in continuations)
    assert ChunkWriter().write(expected[0]) == data


def test_extended_timestamp_not_repeated_accepted_in_auto_mode_only():
    payload = bytes(range(130))
    data = H("05" "ffffff" "000082" "09" "01000000" "01000000") + payload[:128] + H("c5") + payload[128:]
    nxt = H("05" "000000" "000001" "09" "01000000") + b"n"  # something following, as on a live connection
    expected = [Message(5, 0x01000000, 9, 1, payload), Message(5, 0, 9, 1, b"n")]
    assert ChunkReader(extended_in_type3="auto").feed(data + nxt) == expected
    assert feed_all(ChunkReader(extended_in_type3="auto"), data + nxt, 1) == expected
    # the default (ffmpeg/OBS) mode treats the next 4 bytes as the repeated field: the result differs
    assert ChunkReader().feed(data + nxt) != expected


def test_24_bit_to_extended_transition():
    data = (H("06" "fffffe" "000001" "08" "00000000") + b"a"        # 0xFFFFFE still fits the 24-bit field
            + H("07" "ffffff" "000001" "08" "00000000" "00ffffff") + b"b"  # 0xFFFFFF needs the extended field
            + H("86" "000002") + b"c"                                # delta beyond 24 bits of absolute time
            + H("87" "ffffff" "01000000") + b"d")                    # extended delta 0x1000000
    assert ChunkReader().feed(data) == [
        Message(6, 0xFFFFFE, 8, 0, b"a"), Message(7, 0xFFFFFF, 8, 0, b"b"),
        Message(6, 0x1000000, 8, 0, b"c"), Message(7, 0x1FFFFFF, 8, 0, b"d")]
    w = ChunkWriter()
    assert w.write(Message(6, 0xFFFFFE, 8, 0, b"a")) == data[:13]
    assert w.write(Message(7, 0xFFFFFF, 8, 0, b"b")) == data[13:30]


def test_extended_fmt3_new_message_carries_the_extended_delta():
    data = (H("08" "000000" "000001" "08" "00000000") + b"a"
            + H("88" "ffffff" "01000000") + b"b"
            + H("c8" "01000000") + b"c")
    assert ChunkReader().feed(data) == [Message(8, 0, 8, 0, b"a"), Message(8, 0x1000000, 8, 0, b"b"),
                                        Message(8, 0x2000000, 8, 0, b"c")]
    w = ChunkWriter()
    assert b"".join(w.write(m) for m in ChunkReader().feed(data)) == data


def test_timestamp_wraps_at_2_pow_32():
    data = (H("09" "ffffff" "000001" "08" "00000000" "fffffff0") + b"a"
            + H("89" "000020") + b"b"
            + H("c9") + b"c")
    assert ChunkReader().feed(data) == [Message(9, 0xFFFFFFF0, 8, 0, b"a"), Message(9, 0x10, 8, 0, b"b"),
                                        Message(9, 0x30, 8, 0, b"c")]
    w = ChunkWriter()
    assert b"".join(w.write(m) for m in ChunkReader().feed(data)) == data


def test_interleaved_chunk_streams():
    p3 = bytes(200)
    data = (H("03" "000000" "0000c8" "09" "01000000") + p3[:128]
            + H("04" "000005" "000002" "08" "01000000") + b"au"
            + H("c3") + p3[128:])
    assert ChunkReader().feed(data) == [Message(4, 5, 8, 1, b"au"), Message(3, 0, 9, 1, p3)]


def _obs_connect_payload():
    def s(x):
        return len(x).to_bytes(2, "big") + x
    tc = b"rtmp://ingest.example.com/live/" + b"x" * 120
    return (b"\x02" + s(b"connect") + b"\x00" + H("3ff0000000000000") + b"\x03"
            + s(b"app") + b"\x02" + s(b"live") + s(b"type") + b"\x02" + s(b"nonprivate")
            + s(b"flashVer") + b"\x02" + s(b"FMLE/3.0 (compatible; FMSc/1.0)")
            + s(b"tcUrl") + b"\x02" + s(tc) + H("000009"))


def test_obs_sets_chunk_size_before_connect():
    connect = _obs_connect_payload()
    assert 128 < len(connect) < 4096
    data = (H("02" "000000" "000004" "01" "00000000" "00001000")                     # Set Chunk Size 4096
            + H("03" "000000") + len(connect).to_bytes(3, "big") + H("14" "00000000") + connect)  # ONE chunk
    expected = [Message(2, 0, 1, 0, H("00001000")), Message(3, 0, 20, 0, connect)]
    for step in (None, 1, 13):
        r = ChunkReader()
        assert feed_all(r, data, step) == expected
        assert r.chunk_size == 4096
        assert r.buffered == 0


def test_abort_drops_partial_message():
    data = (H("03" "000000" "0000c8" "09" "01000000") + bytes(128)
            + H("02" "000000" "000004" "02" "00000000" "00000003")
            + H("03" "000000" "000002" "09" "01000000") + b"ok")
    assert ChunkReader().feed(data) == [Message(2, 0, 2, 0, H("00000003")), Message(3, 0, 9, 1, b"ok")]


def test_set_chunk_size_applies_to_the_next_chunk_of_an_open_message():
    payload = bytes(range(100))
    r = ChunkReader(chunk_size=10)
    data = (H("03" "000000" "000064" "09" "01000000") + payload[:10]
            + H("02" "000000" "000004" "01" "00000000" "00000100")
            + H("c3") + payload[10:])
    assert r.feed(data) == [Message(2, 0, 1, 0, H("00000100")), Message(3, 0, 9, 1, payload)]


def test_zero_length_message():
    assert ChunkReader().feed(H("03" "000001" "000000" "14" "00000000") + H("c3")) == [
        Message(3, 1, 20, 0, b""), Message(3, 2, 20, 0, b"")]


# ---- errors and limits -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["80000000", "ffffffff", "00000000"])
def test_bad_set_chunk_size(value):
    with pytest.raises(RtmpError):
        ChunkReader().feed(H("02" "000000" "000004" "01" "00000000") + H(value))


def test_largest_set_chunk_size_accepted():
    r = ChunkReader()
    r.feed(H("02" "000000" "000004" "01" "00000000" "7fffffff"))
    assert r.chunk_size == 0x7FFFFFFF


def test_set_chunk_size_with_bad_length():
    with pytest.raises(RtmpError):
        ChunkReader().feed(H("02" "000000" "000003" "01" "00000000" "001000"))


def test_fmt1_without_previous_header():
    with pytest.raises(RtmpError):
        ChunkReader().feed(H("43" "000028" "000003" "09") + b"abc")


def test_fmt3_without_previous_header():
    with pytest.raises(RtmpError):
        ChunkReader().feed(H("c3"))


def test_new_header_while_message_in_progress():
    with pytest.raises(RtmpError):
        ChunkReader().feed(H("03" "000000" "0000c8" "09" "01000000") + bytes(128) + H("83" "000001"))


def test_max_message_size_checked_on_header():
    r = ChunkReader(max_message_size=1000)
    r.feed(H("03" "000000" "0003e8" "09" "01000000"))  # exactly 1000 is fine (waits for payload)
    with pytest.raises(RtmpError):
        ChunkReader(max_message_size=1000).feed(H("03" "000000" "0003e9" "09" "01000000"))
    assert ChunkReader().max_message_size == 16 * 1024 * 1024  # a 24-bit length never exceeds the default
    with pytest.raises(RtmpError):
        ChunkReader(max_message_size=0xFFFFFE).feed(H("03" "000000" "ffffff" "09" "01000000"))
    r = ChunkReader(max_message_size=1000)  # also checked for fmt 1 headers
    r.feed(H("03" "000000" "000001" "09" "01000000") + b"x")
    with pytest.raises(RtmpError):
        r.feed(H("43" "000000" "0003e9" "09"))


def test_max_chunk_streams():
    r = ChunkReader(max_chunk_streams=64)
    data = b""
    for i in range(64):
        csid = 64 + i  # two-byte basic header: fmt 0, then csid - 64
        data += H("00") + bytes([csid - 64]) + H("000000" "000001" "09" "01000000") + b"x"
    assert len(r.feed(data)) == 64
    with pytest.raises(RtmpError):
        r.feed(H("00") + bytes([200]) + H("000000" "000001" "09" "01000000") + b"x")


def test_max_pending_bytes():
    r = ChunkReader(max_pending_bytes=300)
    r.feed(H("03" "000000" "0000c8" "09" "01000000") + bytes(128))  # 200 reserved
    with pytest.raises(RtmpError):
        r.feed(H("04" "000000" "0000c8" "09" "01000000"))


def test_writer_rejects_bad_messages():
    w = ChunkWriter()
    for m in (Message(1, 0, 9, 0, b""), Message(65600, 0, 9, 0, b""), Message(3, 2 ** 32, 9, 0, b""),
              Message(3, 0, 256, 0, b""), Message(3, 0, 9, 2 ** 32, b""), Message(3, 0, 9, 0, bytes(2 ** 24))):
        with pytest.raises(RtmpError):
            w.write(m)
    for n in (0, 2 ** 31):
        with pytest.raises(RtmpError):
            w.set_chunk_size(n)


# ---- writer header choice --------------------------------------------------------------------------------------

def test_writer_picks_the_most_compact_header():
    w = ChunkWriter()
    fmts = []
    for m in [Message(3, 0, 9, 1, b"aaaa"),       # first time: 0
              Message(3, 40, 9, 1, b"bbbbbb"),    # length changes: 1
              Message(3, 80, 9, 1, b"cccccc"),    # same length/type, new delta 40 == previous 40: 3
              Message(3, 90, 9, 1, b"dddddd"),    # delta changes: 2
              Message(3, 100, 9, 1, b"eeeeee"),   # delta repeats: 3
              Message(3, 100, 8, 1, b"eeeeee"),   # type changes: 1
              Message(3, 100, 8, 2, b"eeeeee"),   # message stream changes: 0
              Message(3, 50, 8, 2, b"eeeeee")]:   # timestamp goes backwards: 0
        fmts.append(w.write(m)[0] >> 6)
    assert fmts == [0, 1, 3, 2, 3, 1, 0, 0]


def test_serialize_is_fmt0_and_reusable():
    m1, m2 = Message(6, 1000, 9, 1, bytes(300)), Message(6, 1040, 9, 1, bytes(300))
    shared = ChunkWriter.serialize(m1, 128)
    assert shared[0] == 0x06 and shared.count(b"\xc6") == 2
    for chunk_size in (128, 4096):
        data = ChunkWriter.serialize(m1, chunk_size)
        r1, r2 = ChunkReader(chunk_size), ChunkReader(chunk_size)
        w = ChunkWriter(chunk_size)
        w.write(Message(6, 0, 9, 1, b"earlier"))  # this connection's state differs; fmt 0 bytes stay valid
        r2.feed(ChunkWriter(chunk_size).write(Message(6, 0, 9, 1, b"earlier")))
        assert r1.feed(data) == [m1] and r2.feed(data) == [m1]
        w.sent_serialized(m1)
        nxt = w.write(m2)
        assert nxt[0] >> 6 == 2  # after a type 0 header the remembered delta is its timestamp (1000)
        assert r2.feed(nxt) == [m2]


# ---- property tests: writer → reader ---------------------------------------------------------------------------

CSIDS = st.sampled_from([2, 3, 4, 63, 64, 65, 319, 320, 321, 65599]) | st.integers(2, 65599)
DELTAS = st.sampled_from([0, 1, 33, 40, 0xFFFFFE, 0xFFFFFF, 0x1000000, 0x7FFFFFFF, 2 ** 32 - 1]) | st.integers(0, MASK)


@st.composite
def message_runs(draw):
    csids = draw(st.lists(CSIDS, min_size=1, max_size=4, unique=True))
    lengths = draw(st.lists(st.integers(0, 600), min_size=1, max_size=3))
    times = {c: draw(st.integers(0, MASK)) for c in csids}
    msgs = []
    for _ in range(draw(st.integers(1, 12))):
        c = draw(st.sampled_from(csids))
        times[c] = (times[c] + draw(DELTAS)) & MASK
        n = draw(st.sampled_from(lengths))
        msgs.append(Message(c, times[c], draw(st.sampled_from([8, 9, 18, 20])), draw(st.sampled_from([0, 1, 7])),
                            draw(st.binary(min_size=n, max_size=n))))
    return msgs


def interleave(chunks_per_message, draw):
    """Interleave chunk lists of messages on distinct chunk streams, keeping each message's chunks in order."""
    queues = [list(c) for c in chunks_per_message]
    out = []
    while any(queues):
        q = draw(st.sampled_from([q for q in queues if q]))
        out.append(q.pop(0))
    return b"".join(out)


@settings(max_examples=300)
@given(msgs=message_runs(), chunk_size=st.integers(1, 70000), data=st.data())
def test_round_trip_random_splits(msgs, chunk_size, data):
    w = ChunkWriter(chunk_size)
    wire = b"".join(w.write(m) for m in msgs)
    r = ChunkReader(chunk_size)
    out = []
    pos = 0
    while pos < len(wire):
        step = data.draw(st.integers(1, 64) | st.just(len(wire)))
        out += r.feed(wire[pos:pos + step])
        pos += step
    assert out == msgs
    assert r.buffered == 0


@settings(max_examples=50)
@given(msgs=message_runs(), chunk_size=st.integers(1, 300))
def test_round_trip_byte_at_a_time(msgs, chunk_size):
    w = ChunkWriter(chunk_size)
    wire = b"".join(w.write(m) for m in msgs)
    r = ChunkReader(chunk_size)
    out = []
    for i in range(len(wire)):
        out += r.feed(wire[i:i + 1])
    assert out == msgs


@settings(max_examples=150)
@given(msgs=message_runs(), chunk_size=st.integers(1, 200), data=st.data())
def test_round_trip_interleaved(msgs, chunk_size, data):
    # one message per chunk stream in flight at a time; chunks of different streams interleave freely
    by_csid = {}
    for m in msgs:
        by_csid.setdefault(m.chunk_stream_id, []).append(m)
    w = ChunkWriter(chunk_size)
    streams = []
    for csid, ms in by_csid.items():
        chunks = []
        for m in ms:
            raw = w.write(m)
            chunks += _split_chunks(raw, m, chunk_size)
        streams.append(chunks)
    wire = interleave(streams, data.draw)
    out = ChunkReader(chunk_size).feed(wire)
    for csid, ms in by_csid.items():
        assert [m for m in out if m.chunk_stream_id == csid] == ms
    assert len(out) == len(msgs)


def _split_chunks(raw, m, chunk_size):
    """Cut one message's bytes into its chunks (header + piece): the header sizes follow from the layout."""
    n = len(m.payload)
    pieces = max(1, -(-n // chunk_size))
    basic = 1 if m.chunk_stream_id <= 63 else 2 if m.chunk_stream_id <= 319 else 3
    hsize = (11, 7, 3, 0)[raw[0] >> 6]
    extra = len(raw) - n - pieces * basic - hsize
    assert extra in (0, 4 * pieces)
    ext = extra // pieces
    out, pos = [], 0
    for i in range(pieces):
        h = basic + hsize + ext if i == 0 else basic + ext
        size = min(chunk_size, n - i * chunk_size)
        out.append(raw[pos:pos + h + size])
        pos += h + size
    assert pos == len(raw)
    return out


@settings(max_examples=100)
@given(msgs=message_runs(), sizes=st.lists(st.integers(1, 70000), min_size=1, max_size=4))
def test_round_trip_with_chunk_size_changes(msgs, sizes):
    w, r = ChunkWriter(), ChunkReader()
    wire = b""
    expected = []
    for i, m in enumerate(msgs):
        if i < len(sizes):
            scs = SetChunkSize(sizes[i]).to_message()
            wire += w.write(scs)
            w.set_chunk_size(sizes[i])
            expected.append(scs)
        wire += w.write(m)
        expected.append(m)
    assert r.feed(wire) == expected


@pytest.mark.parametrize("chunk_size", [1, 127, 128, 4096, 65536, 69999, 70000])
def test_large_message_round_trip(chunk_size):
    payload = bytes(i * 7 & 0xFF for i in range(70001)) if chunk_size > 1 else bytes(range(256)) * 8
    m = Message(6, 0x12345678, 9, 1, payload)
    wire = ChunkWriter(chunk_size).write(m)
    assert ChunkReader(chunk_size).feed(wire) == [m]


# ---- fuzz ------------------------------------------------------------------------------------------------------

@settings(max_examples=500)
@given(prefix=st.sampled_from([b"", H("03" "000000" "000010" "09" "01000000"),
                               H("02" "000000" "000004" "01" "00000000" "00000002")]),
       blob=st.binary(max_size=3000), auto=st.booleans(), step=st.integers(1, 500))
def test_fuzz_only_rtmp_errors(prefix, blob, auto, step):
    r = ChunkReader(max_message_size=4096, max_chunk_streams=8, max_pending_bytes=8192,
                    extended_in_type3="auto" if auto else "always")
    data = prefix + blob
    try:
        for i in range(0, len(data), step):
            for m in r.feed(data[i:i + step]):
                assert isinstance(m, Message) and len(m.payload) <= 4096
            assert r.buffered <= 4096 + 18 + step
    except RtmpError:
        pass
