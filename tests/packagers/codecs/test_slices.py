"""packagers.codecs.slices: where each slice header ends (the clear part of a 'cbcs' slice), checked against ffmpeg's
trace_headers bitstream filter, which prints every slice header syntax element with its bit position (in the RBSP:
the test maps it to the stored bytes itself). Files: the title and HEVC fixtures, H.264 with 4 slices per picture,
weighted prediction, list modifications and MMCOs, CAVLC interlaced (field_pic_flag, bottom POC), HEVC with 2 slices
per picture and wavefront entry points; and hand-built streams (bit by bit, then traced by ffmpeg the same way) for
what x264/x265 never write: emulation prevention inside the header, HEVC dependent slices, tiles, inter-predicted
RPS, long-term pictures, list modifications, header extensions; H.264 colour planes, POC type 1, every MMCO, SP/SI.
The vector path and the scalar parser must both give these answers; hostile input gives BAD_DATA/UNSUPPORTED only."""
from __future__ import annotations

import re
import subprocess
import tempfile

import numpy as np
import pytest

from fixtures.generate import fixture_path
from packagers.codecs import avc, hevc, slices

from ..nal_reference import escape
from packagers.errors import ErrorCode, PackagerError
from tests.packagers import pyav_tracks

FILES = ["title_180p.mp4", "hevc.mp4", "slices_h264.mp4", "slices_h264_cavlc.mp4", "slices_hevc.mp4"]
_ELEMENT = re.compile(r"(\d+)\s+(\S+)\s+([01]+) = ")


def trace_header_ends(args: list[str]) -> list[int]:
    """The bit (in the RBSP, from the NAL header) after the last slice header element of every slice, in order.
    H.264's cabac_alignment_one_bit belongs to the slice data; HEVC's byte_alignment() to the header."""
    log = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-v", "trace", *args, "-c", "copy", "-bsf:v",
                          "trace_headers", "-f", "null", "-"], capture_output=True, text=True, timeout=120).stderr
    ends, current = [], None
    for line in log.splitlines():
        if "[trace_headers @" not in line:
            continue
        body = line.split("] ", 1)[1]
        element = _ELEMENT.match(body)
        if element and current is not None:
            if element.group(2) != "cabac_alignment_one_bit":
                current = max(current, int(element.group(1)) + len(element.group(3)))
            continue
        if current is not None:
            ends.append(current)
        current = 0 if body in ("Slice Header", "Slice Segment Header") else None
    if current is not None:
        ends.append(current)
    return ends


def stored_size(nal: bytes, rbsp_bits: int) -> int:
    """Bytes of ``nal`` as stored up to the one holding RBSP bit ``rbsp_bits - 1``, walking the stored bytes as
    H.264 §7.3.1 / H.265 §7.3.1.1 do: a 03 after two zero RBSP bytes is an emulation prevention byte."""
    need, stored, rbsp, zeros = (rbsp_bits + 7) // 8, 0, 0, 0
    while rbsp < need:
        byte = nal[stored]
        stored += 1
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        rbsp += 1
        zeros = zeros + 1 if byte == 0 else 0
    return stored


def _load(name):
    source = pyav_tracks.load(fixture_path(name))
    track = source.tracks[0]
    syntax = hevc if track.codec.codec == "hevc" else avc
    config = syntax.parse_config(track.codec.extradata, track.codec.fourcc, name)
    data = np.frombuffer(source.data, dtype=np.uint8)
    offsets, lengths, _ = avc.nal_units(data, track.samples.offsets, track.samples.sizes, 4)
    return config, data, offsets, lengths, syntax.nal_unit_types(data[offsets + 4]), source.path


@pytest.fixture(scope="module", params=FILES)
def media(request):
    return _load(request.param)


@pytest.fixture
def scalar_calls(monkeypatch) -> list[bytes]:
    """The NAL units the vector path hands to the scalar parser (a spy around the real one)."""
    calls, real = [], slices.scalar_size

    def spy(parse, nal, nal_type, params):
        calls.append(nal)
        return real(parse, nal, nal_type, params)

    monkeypatch.setattr(slices, "scalar_size", spy)
    return calls


def test_header_ends_are_the_ones_ffmpeg_traces(media, scalar_calls):
    """Every slice of x264's and x265's output, decoded by the vector path alone."""
    config, data, offsets, lengths, types, path = media
    sizes = slices.slice_header_sizes(config, data, offsets, lengths, types)
    assert scalar_calls == []
    vcl = np.flatnonzero(sizes)
    ends = trace_header_ends(["-i", str(path), "-map", "0:v:0"])
    assert len(vcl) == len(ends) > 100
    expected = [stored_size(data[offsets[j] + 4:offsets[j] + 4 + lengths[j]].tobytes(), end)
                for j, end in zip(vcl.tolist(), ends)]
    assert sizes[vcl].tolist() == expected


def test_scalar_fallback_agrees_with_the_vector_path(media):
    config, data, offsets, lengths, types, path = media
    vector = slices.slice_header_sizes(config, data, offsets, lengths, types)
    assert (slices.slice_header_sizes(config, data, offsets, lengths, types, vector=False) == vector).all()
    # the encryptor passes the track's CodecConfig (model) rather than the parsed record: same answer
    track = pyav_tracks.load(path).tracks[0]
    assert (slices.slice_header_sizes(track.codec, data, offsets, lengths, types) == vector).all()


def _with_sets_in_band(data, offsets, lengths, pairs_before: bytes) -> tuple:
    """The samples' NAL units with length-prefixed parameter sets in front (as avc3/hev1 carry them)."""
    blob = np.frombuffer(pairs_before + data.tobytes(), dtype=np.uint8)
    shift = len(pairs_before)
    starts, sets = [], 0
    while sets < shift:
        starts.append(sets)
        sets += 4 + int.from_bytes(pairs_before[sets:sets + 4], "big")
    prefix = np.array(starts, dtype=np.int64)
    all_offsets = np.concatenate([prefix, offsets + shift])
    all_lengths = np.concatenate([[int.from_bytes(pairs_before[s:s + 4], "big") for s in starts], lengths])
    return blob, all_offsets, all_lengths


def _length_prefixed(nals) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def test_parameter_sets_in_band_replace_the_configuration():
    """CAVLC interlaced slices under the configuration of the (CABAC, progressive) title: only the in-band SPS/PPS
    (same ids) give the traced header ends; a second pair of in-band sets switches back for the NAL units after."""
    title, cavlc = _load("title_180p.mp4"), _load("slices_h264_cavlc.mp4")
    config_t, data_t, off_t, len_t, types_t, _ = title
    config_c, data_c, off_c, len_c, types_c, _ = cavlc
    expected_c = slices.slice_header_sizes(config_c, data_c, off_c, len_c, types_c)
    expected_t = slices.slice_header_sizes(config_t, data_t, off_t, len_t, types_t)
    blob_c, o_c, l_c = _with_sets_in_band(data_c, off_c, len_c, _length_prefixed(config_c.parameter_sets))
    blob_t, o_t, l_t = _with_sets_in_band(data_t, off_t, len_t, _length_prefixed(config_t.parameter_sets))
    data = np.concatenate([blob_c, blob_t])
    offsets = np.concatenate([o_c, o_t + len(blob_c)])
    lengths = np.concatenate([l_c, l_t])
    types = avc.nal_unit_types(data[offsets + 4])
    sizes = slices.slice_header_sizes(config_t, data, offsets, lengths, types)
    assert sizes.tolist() == [0, 0, *expected_c.tolist(), 0, 0, *expected_t.tolist()]
    try:    # the configuration alone parses them differently, or not at all
        assert slices.slice_header_sizes(config_t, data_c, off_c, len_c, types_c).tolist() != expected_c.tolist()
    except PackagerError as e:
        assert e.code is ErrorCode.BAD_DATA


# -- emulation prevention inside the header ---------------------------------------------------------------------


def _bits_to_bytes(bits: str) -> bytes:
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def _ue(n: int) -> str:
    code = bin(n + 1)[2:]
    return "0" * (len(code) - 1) + code


def test_emulation_prevention_inside_the_header(tmp_path, scalar_calls):
    """An HEVC IDR slice of the hevc.mp4 stream, rebuilt with 32-bit entry point offsets of 0: its header holds
    runs of zero bytes, so the stored header carries emulation prevention bytes. ffmpeg reads it (Annex B) and the
    header end it traces, mapped to stored bytes, is ours; the vector path hands these slices to the scalar one."""
    config, *_ = _load("hevc.mp4")
    body = bytes(range(0x40, 0x80))
    nals = []
    for offsets in ([0, 0], [0, 1], [5]):     # at most 2: one per CTU row after the first (wavefront)
        header = ("1" + "0" + _ue(0) + _ue(2) + "11" + "0001100" + "1"        # I slice of PPS 0, SAO, qp delta 6
                  + _ue(len(offsets)) + _ue(31) + "".join(f"{o:032b}" for o in offsets))
        header += "1" + "0" * (-(len(header) + 1) % 8)                         # byte_alignment()
        nals.append(b"\x26\x01" + escape(_bits_to_bytes(header) + body))   # IDR_W_RADL, layer 0, tid 1
    assert all(b"\x00\x00\x03" in n[:20] for n in nals[:2])
    stream = tmp_path / "s.hevc"
    stream.write_bytes(b"".join(b"\x00\x00\x00\x01" + n for n in (*config.parameter_sets, *nals)))
    ends = trace_header_ends(["-f", "hevc", "-i", str(stream)])
    data = np.frombuffer(_length_prefixed(nals), dtype=np.uint8)
    offsets, lengths, _ = avc.nal_units(data, [0], [len(data)], 4)
    types = hevc.nal_unit_types(data[offsets + 4])
    for vector in (True, False):
        sizes = slices.slice_header_sizes(config, data, offsets, lengths, types, vector=vector)
        assert sizes.tolist() == [stored_size(n, e) for n, e in zip(nals, ends)]
        if vector:      # exactly the slices with an EPB inside their header went to the scalar parser
            assert scalar_calls == [n for n, size in zip(nals, sizes) if b"\x00\x00\x03" in n[:size]] != []
    assert sizes.tolist()[0] > len(nals[0]) - len(body) - 2 > 0     # the EPBs were counted


# -- hostile input ----------------------------------------------------------------------------------------------


def _bad(call):
    with pytest.raises(PackagerError) as e:
        call()
    assert e.value.code in (ErrorCode.BAD_DATA, ErrorCode.UNSUPPORTED)
    assert e.value.message.startswith(("slice_header_sizes: ", "avc.slice_", "hevc.slice_"))
    return e.value


@pytest.mark.parametrize("name", ["title_180p.mp4", "slices_hevc.mp4"])
def test_truncated_slices_and_unknown_pps_are_bad_data(name):
    config, data, offsets, lengths, types, _ = _load(name)
    syntax = hevc if name.startswith("slices_hevc") else avc
    j = int(np.flatnonzero(types < (32 if syntax is hevc else 6))[0])
    nal = data[offsets[j] + 4:offsets[j] + 4 + lengths[j]].tobytes()
    size = int(slices.slice_header_sizes(config, data, offsets[j:j + 1], lengths[j:j + 1], types[j:j + 1])[0])
    for cut in range(1, size):      # every truncation inside the header
        one = np.frombuffer(_length_prefixed([nal[:cut]]), dtype=np.uint8)
        for vector in (True, False):
            e = _bad(lambda: slices.slice_header_sizes(config, one, np.array([0]), np.array([cut]),
                                                       types[j:j + 1], vector=vector))
            assert e.code is ErrorCode.BAD_DATA and "truncated" in e.message
    # the same slice naming PPS 9 (ue 0001010) instead of 0
    bits = "".join(f"{b:08b}" for b in nal)
    if syntax is hevc:     # first_slice_segment_in_pic_flag, no_output_of_prior_pics_flag (IRAP), then the PPS id
        at = 17 + (16 <= int(types[j]) <= 23)
    else:                  # first_mb_in_slice, slice_type, then the PPS id
        at = 8
        for _ in range(2):
            at += 2 * (bits.index("1", at) - at) + 1
    assert bits[at] == "1"  # PPS 0
    bits = bits[:at] + "0001010" + bits[at + 1:]
    bits += "0" * (-len(bits) % 8)
    renamed = _bits_to_bytes(bits)
    one = np.frombuffer(_length_prefixed([renamed]), dtype=np.uint8)
    for vector in (True, False):
        e = _bad(lambda: slices.slice_header_sizes(config, one, np.array([0]), np.array([len(renamed)]),
                                                   types[j:j + 1], vector=vector))
        assert e.message == "slice_header_sizes: slice names PPS 9, never seen"


@pytest.mark.parametrize("name", ["title_180p.mp4", "hevc.mp4"])
def test_random_bytes_are_bad_data_or_a_size_never_another_exception(name):
    """A fixed-seed fuzz: random NAL units, and real slices with random bytes flipped in their first 24 bytes.
    Every answer is a size within the NAL unit, or BAD_DATA/UNSUPPORTED; vector and scalar paths agree."""
    config, data, offsets, lengths, types, _ = _load(name)
    syntax = hevc if name == "hevc.mp4" else avc
    rng = np.random.default_rng(14)
    real = [data[o + 4:o + 4 + n].tobytes() for o, n, t in zip(offsets, lengths, types) if t < (32 if syntax is hevc
                                                                                                 else 6)]
    for trial in range(400):
        if trial % 2:
            nal = bytearray(rng.integers(0, 256, int(rng.integers(1, 80)), dtype=np.uint8).tobytes())
            nal[0] = (nal[0] & 0x81) | (int(rng.choice([0, 1, 19, 21])) << 1) if syntax is hevc \
                else (nal[0] & 0xE0) | int(rng.choice([1, 5]))
            if syntax is hevc and len(nal) > 1:
                nal[1] = 1
        else:
            nal = bytearray(real[int(rng.integers(len(real)))][:int(rng.integers(4, 200))])
            for _ in range(int(rng.integers(1, 4))):
                nal[int(rng.integers(1 if syntax is avc else 2, min(len(nal), 24)))] = int(rng.integers(256))
        one = np.frombuffer(_length_prefixed([bytes(nal)]), dtype=np.uint8)
        t = syntax.nal_unit_types(one[4:5])
        answers = []
        for vector in (True, False):
            try:
                answers.append(int(slices.slice_header_sizes(config, one, np.array([0]), np.array([len(nal)]), t,
                                                             vector=vector)[0]))
            except PackagerError as e:
                assert e.code in (ErrorCode.BAD_DATA, ErrorCode.UNSUPPORTED), e
                answers.append(e.message)
        assert answers[0] == answers[1], (trial, bytes(nal).hex())
        if isinstance(answers[0], int):
            assert 0 < answers[0] <= len(nal)


def test_non_vcl_units_are_zero_and_data_partitioning_is_refused():
    config, data, offsets, lengths, types, _ = _load("title_180p.mp4")
    sizes = slices.slice_header_sizes(config, data, offsets, lengths, types)
    assert (sizes[(types != 1) & (types != 5)] == 0).all() and (sizes[(types == 1) | (types == 5)] > 0).all()
    e = _bad(lambda: slices.slice_header_sizes(config, data, offsets[:1], lengths[:1], np.array([2])))
    assert e.code is ErrorCode.UNSUPPORTED
    e = _bad(lambda: slices.slice_header_sizes(config, data, offsets[:1], lengths[:1] + len(data), types[:1]))
    assert "past the end" in e.message


# -- syntax the encoders here never write, hand-built and traced by ffmpeg -------------------------------------------


class BitWriter:
    def __init__(self) -> None:
        self.bits = ""

    def u(self, n: int, value: int) -> "BitWriter":
        self.bits += f"{value:0{n}b}" if n else ""
        return self

    def flags(self, *values: int) -> "BitWriter":
        self.bits += "".join(map(str, values))
        return self

    def ue(self, *values: int) -> "BitWriter":
        self.bits += "".join(_ue(v) for v in values)
        return self

    def se(self, *values: int) -> "BitWriter":
        return self.ue(*(2 * v - 1 if v > 0 else -2 * v for v in values))

    def trailing(self) -> bytes:
        """rbsp_trailing_bits() / byte_alignment(): a one bit, then zeros to the byte boundary."""
        bits = self.bits + "1"
        return _bits_to_bytes(bits + "0" * (-len(bits) % 8))


def _hevc_rare_sets() -> list[bytes]:
    """SPS 1: two short-term RPS (the second predicted from the first), two long-term pictures; PPS 1 (on SPS 1):
    dependent slices, pic_output_flag, 2 extra header bits, cabac_init_flag, 2 default L0 refs, chroma QP offsets,
    weighted P and B prediction, 2x2 tiles, deblocking override, list modifications, header extensions."""
    sps = BitWriter().u(4, 0).u(3, 0).u(1, 1)                       # VPS 0, one sub-layer
    sps.u(2, 0).u(1, 0).u(5, 1).u(32, 0x60000000).flags(1, 0, 0, 1).u(43, 0).u(1, 0).u(8, 60)
    sps.ue(1, 1, 320, 184).flags(0).ue(0, 0, 4).flags(1).ue(4, 2, 0)  # id, 4:2:0, size, depths, poc lsb 8 bits
    sps.ue(0, 3, 0, 3, 0, 0).flags(0, 0, 1, 0)                      # 64x64 CTBs, no scaling/amp, SAO, no PCM
    sps.ue(2).ue(2, 0).ue(0).flags(1).ue(1).flags(1)                # RPS 0: -1, -3 (used)
    sps.flags(1).flags(1).ue(0).flags(1, 0, 1, 1)                   # RPS 1: from 0, deltaRps -1: -1, -2, -4 (unused)
    sps.flags(1).ue(2).u(8, 12).flags(1).u(8, 99).flags(0)          # long-term pictures in the SPS
    sps.flags(1, 1, 0, 0)                                           # TMVP, strong intra smoothing, no VUI/extension
    sets = [b"\x42\x01" + escape(sps.trailing())]
    for pps_id, lists_modification in ((1, 1), (2, 0)):   # PPS 2: the same without list modifications
        pps = BitWriter().ue(pps_id, 1).flags(1, 1).u(3, 2).flags(0, 1).ue(1, 0).se(0).flags(0, 0, 0).se(0, 0)
        pps.flags(1, 1, 1, 0, 1, 0).ue(1, 1).flags(1, 1)             # chroma QP offsets, WP, WBP, tiles 2x2
        pps.flags(1, 1, 1, 0).se(0, 0).flags(0, lists_modification).ue(0).flags(1, 0)   # deblocking override...
        sets.append(b"\x44\x01" + escape(pps.trailing()))
    return sets


def _hevc_rare_slices() -> list[bytes]:
    body = bytes(range(0x40, 0x60))
    idr = BitWriter().flags(1, 0).ue(1).u(2, 0).ue(2).flags(1).flags(1, 1).se(-3).se(1, -1)
    idr.flags(1, 0).se(1, -1).flags(1).ue(3, 7).u(24, 0x123456).ue(2).u(16, 0xABCD)
    dependent = BitWriter().flags(0, 0).ue(1).flags(1).u(4, 5).ue(1, 3).u(4, 9).ue(0)
    p = BitWriter().flags(1).ue(1).u(2, 3).ue(1).flags(1).u(8, 5).flags(0)
    p.flags(1).ue(0).flags(0).ue(1).flags(1, 0, 0, 1, 0, 1)          # from RPS 1, deltaRps +2: +1, -2, (+2)
    p.ue(1, 1).u(1, 0).flags(1).ue(1).u(8, 77).flags(1, 0)          # long-term: one from the SPS, one coded
    p.flags(1).flags(0, 1).flags(1).ue(2).flags(1).u(6, 0b110010)   # TMVP, SAO, 3 refs, list_entry_l0 3 0 2
    p.flags(1).ue(1).ue(6).se(-1).flags(1, 0, 1, 0, 1, 1).se(2, -3).se(1, -1, 0, 2).se(0, 5).se(1, 1, -2, 0)
    p.ue(2).se(4).se(0, 0).flags(0).flags(0).ue(0).ue(1).u(8, 0x5A)
    b = BitWriter().flags(1).ue(1).u(2, 0).ue(0).flags(0).u(8, 6).flags(1).u(1, 1).ue(0, 0).flags(1)
    b.flags(1, 0).flags(1).ue(1, 1).flags(0).flags(1).u(2, 0b10).flags(1, 0).flags(0).ue(1)
    b.ue(3).se(1).flags(0, 1, 1, 0).se(-1, 2).se(3, 0, -1, 1).flags(1, 1, 0, 0).se(1, 1).se(-1, -1)
    b.ue(0).se(-1).se(2, -2).flags(1).flags(1).flags(1).ue(2, 15).u(32, 0x00010002).ue(0)
    # PPS 2: RPS coded in the header (2 before, 1 after), long-term pictures, weights in both lists, no list
    # modification: what the vector path reads itself
    p2s = []
    for lt_idx, msb_cycle, lsb in ((1, 2, 0xA5), (0, 0, 0x0F), (1, 9, 0x33)):  # a misread rarely ends on one byte
        p2 = BitWriter().flags(1).ue(2).u(2, 1).ue(1).flags(1).u(8, 9).flags(0)
        p2.flags(0).ue(2, 1).ue(0).flags(1).ue(2).flags(0).ue(0).flags(1)       # RPS: -1, -4 (unused), +1
        p2.ue(1, 1).u(1, lt_idx).flags(1).ue(msb_cycle).u(8, lsb).flags(1, 0)   # long-term pictures
        p2.flags(1).flags(1, 1).flags(0).flags(0).ue(0)                          # TMVP, SAO, 2 refs, cabac_init
        p2.ue(4).se(0).flags(1, 1, 1, 0).se(1, 1).se(1, 1, 1, 1).se(-1, -1)      # weights
        p2.ue(0).se(0).se(0, 0).flags(1, 0).se(2, -2).flags(1).ue(1, 0).u(1, 1).ue(0)
        p2s.append(p2)
    b2 = BitWriter().flags(1).ue(2).u(2, 2).ue(0).flags(1).u(8, 10).flags(1).u(1, 0).ue(0, 0).flags(0)
    b2.flags(0, 0).flags(1).ue(0, 2).flags(0, 1)                                 # no SAO, 1 + 3 refs
    b2.ue(1).se(0).flags(1, 0).flags(0, 0, 1, 1, 0, 0).se(5, 5).se(1, 2, 3, 4).se(0, 0)
    b2.ue(4).se(3).se(-1, 1).flags(0).flags(1).ue(0).ue(3).u(24, 0xFFFFFF)
    idr2, dependent2 = BitWriter(), BitWriter()        # the IDR and dependent slices again, on PPS 2
    idr2.bits = "10" + _ue(2) + idr.bits[2 + len(_ue(1)):]
    dependent2.bits = "00" + _ue(2) + dependent.bits[2 + len(_ue(1)):]
    # headers longer than the vector path's emulation prevention window: a 100-byte extension of 0x55, and one of
    # zeros (emulation prevention bytes after the window's end)
    long_headers = []
    for zeros in (0, 40):
        w = BitWriter().flags(1, 0).ue(2).u(2, 0).ue(2).flags(0).flags(0, 0).se(0, 0, 0).flags(0).flags(1).ue(0)
        long_headers.append(w.ue(100).u(800, int.from_bytes(b"\x55" * (100 - zeros) + bytes(zeros), "big")))
    return [b"\x26\x01" + escape(w.trailing() + body) for w in (idr, dependent)] \
        + [b"\x02\x01" + escape(w.trailing() + body) for w in (p, b)] \
        + [b"\x26\x01" + escape(w.trailing() + body) for w in (idr2, dependent2)] \
        + [b"\x02\x01" + escape(w.trailing() + body) for w in (*p2s, b2)] \
        + [b"\x26\x01" + escape(w.trailing() + body) for w in long_headers]


def test_rare_hevc_syntax_hand_built(scalar_calls):
    """Dependent slice segments, pic_output_flag, extra slice header bits, an inter-predicted RPS in the slice
    header, long-term pictures (from the SPS and coded), list modifications, weighted P and B prediction with
    chroma, tiles' entry points, deblocking override, chroma QP offsets and header extensions: ffmpeg traces every
    header and its end is ours (the parameter sets in band, after the configuration's, as in hev1)."""
    config, *_ = _load("hevc.mp4")
    sets, nals = _hevc_rare_sets(), _hevc_rare_slices()
    ends = _traced_annexb(config.parameter_sets, sets + nals)
    assert len(ends) == len(nals)
    data = np.frombuffer(_length_prefixed(sets + nals), dtype=np.uint8)
    offsets, lengths, _ = avc.nal_units(data, [0], [len(data)], 4)
    types = hevc.nal_unit_types(data[offsets + 4])
    for vector in (True, False):
        sizes = slices.slice_header_sizes(config, data, offsets, lengths, types, vector=vector)
        assert sizes.tolist() == [0, 0, 0] + [stored_size(n, e) for n, e in zip(nals, ends)]
        if vector:      # list modifications (PPS 1) are the scalar parser's; PPS 2's slices the vector path's
            assert scalar_calls == nals[:4] + nals[-1:]
            assert sizes[-2] > 100 and b"\x00\x00\x03" not in nals[-1][:64] + nals[-2]
            assert b"\x00\x00\x03" in nals[-1][64:sizes[-1]]


def _traced_annexb(config_sets, nals: list[bytes], fmt: str = "hevc") -> list[int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/s.{fmt}"
        with open(path, "wb") as f:
            f.write(b"".join(b"\x00\x00\x00\x01" + n for n in (*config_sets, *nals)))
        return trace_header_ends(["-f", fmt, "-i", path])


def _h264_rare() -> tuple[list[bytes], list[bytes]]:
    """SPS 2: High 4:4:4 with separate colour planes, 5-bit frame_num, POC type 1, fields; PPS 3 (on SPS 2): CAVLC,
    bottom field POC, 3 + 2 default references, explicit weighted P and B prediction, deblocking control, redundant
    pictures. Slices: a field IDR (long-term reference), a P frame with every list modification and every MMCO, a
    B field with an L1 modification and weights, an SP and an SI slice."""
    sps = BitWriter().u(8, 244).u(8, 0).u(8, 30).ue(2, 3).flags(1).ue(0, 0).flags(0, 0)
    sps.ue(1, 1).flags(0).se(-1, 1).ue(2).se(2, 2).ue(4).flags(0).ue(19, 5).flags(0, 0, 1, 0, 0)
    pps = BitWriter().ue(3, 2).flags(0, 1).ue(0, 2, 1).flags(1).u(2, 1).se(0, 0, 0).flags(1, 0, 1)
    # SPS 3 / PPS 4: 16-bit frame_num and POC LSB, so that 32 bits are skipped before the next flag
    sps3 = BitWriter().u(8, 66).u(8, 0).u(8, 30).ue(3, 12, 0, 12, 1).flags(0).ue(19, 11).flags(1, 1, 0, 0)
    pps4 = BitWriter().ue(4, 3).flags(1, 0).ue(0, 0, 0).flags(0).u(2, 0).se(0, 0, 0).flags(1, 0, 0)
    sets = [b"\x67" + escape(sps.trailing()), b"\x68" + escape(pps.trailing()),
            b"\x67" + escape(sps3.trailing()), b"\x68" + escape(pps4.trailing())]
    body = bytes(range(0x40, 0x60))
    wide = BitWriter().ue(200, 5, 4).u(16, 0xFFFF).u(16, 0xAAAA).flags(1).ue(0).flags(1).ue(0, 0, 3)
    wide.flags(0).ue(2).se(1).ue(0).se(2, -2)
    idr = BitWriter().ue(0, 7, 3).u(2, 1).u(5, 0).flags(1, 1).ue(65535).se(3).ue(0).flags(1, 1).se(-2).ue(1)
    p = BitWriter().ue(10, 5, 3).u(2, 2).u(5, 1).flags(0).se(-1, 2).ue(1).flags(1).ue(3)
    p.flags(1).ue(0, 2, 2, 0, 1, 0, 3)                              # list modification: idc 0, 2, 1, end
    p.ue(5).flags(1).se(3, -2).flags(0).flags(1).se(0, 1).flags(0)  # weights of 4 references
    p.flags(1).ue(1, 0, 2, 1, 3, 1, 0, 6, 1, 4, 2, 5, 0)             # MMCO 1, 2, 3, 6, 4, 5, end
    p.se(1).ue(0).se(1, -1)
    b = BitWriter().ue(0, 6, 3).u(2, 0).u(5, 2).flags(1, 0).se(0).ue(0).flags(1).flags(0)
    b.flags(0).flags(1).ue(0, 0, 3)                                 # list modification of L1 only
    b.ue(2).flags(0, 1).se(4, -4).flags(0).flags(1).se(1, 1).flags(1).se(-1, 0)
    b.se(0).ue(2).se(0, 0)
    sp = BitWriter().ue(0, 3, 3).u(2, 0).u(5, 3).flags(0).se(1, 0).ue(0).flags(0).flags(0)
    sp.ue(0).flags(0, 0, 0).flags(0).se(0).flags(1).se(-1).ue(1)
    si = BitWriter().ue(5, 4, 3).u(2, 1).u(5, 4).flags(0).se(0, 0).ue(0).flags(0).se(0).se(2).ue(1)
    nals = [b"\x65" + escape(idr.trailing() + body), b"\x41" + escape(p.trailing() + body),
            b"\x01" + escape(b.trailing() + body), b"\x41" + escape(sp.trailing() + body),
            b"\x41" + escape(si.trailing() + body), b"\x41" + escape(wide.trailing() + body)]
    return sets, nals


def test_rare_h264_syntax_hand_built(scalar_calls):
    """colour_plane_id, field and bottom field flags, a long idr_pic_id, POC type 1 deltas, redundant_pic_cnt,
    reference count override, list modifications (short- and long-term), explicit weights in P and B, every
    memory management operation, SP (sp_for_switch_flag, slice_qs_delta) and SI slices, deblocking idc 0/1/2, and
    a CABAC P slice with 16-bit frame_num and POC LSB (32 bits skipped at once before a flag):
    ffmpeg traces every header and its end is ours (the sets in band, after the title's configuration)."""
    config, data, offsets, lengths, _, _ = _load("title_180p.mp4")
    sets, nals = _h264_rare()
    # ffmpeg's decoder refuses separate colour planes; a real IDR picture first gives it the stream's size
    idr = data[offsets[1] + 4:offsets[1] + 4 + lengths[1]].tobytes()
    assert idr[0] & 0x1F == 5
    ends = _traced_annexb(config.parameter_sets, [idr] + sets + nals, "h264")[1:]
    assert len(ends) == len(nals)
    data = np.frombuffer(_length_prefixed(sets + nals), dtype=np.uint8)
    offsets, lengths, _ = avc.nal_units(data, [0], [len(data)], 4)
    types = avc.nal_unit_types(data[offsets + 4])
    for vector in (True, False):
        sizes = slices.slice_header_sizes(config, data, offsets, lengths, types, vector=vector)
        assert sizes.tolist() == [0, 0, 0, 0] + [stored_size(n, e) for n, e in zip(nals, ends)]
        assert scalar_calls == ([] if vector else nals)


def test_other_nal_length_sizes():
    """offsets point at length prefixes of ``codec.nal_length_size`` bytes (avcC lengthSizeMinusOne + 1)."""
    import dataclasses

    config, data, offsets, lengths, types, _ = _load("title_180p.mp4")
    expected = slices.slice_header_sizes(config, data, offsets, lengths, types)
    nals = [data[o + 4:o + 4 + n].tobytes() for o, n in zip(offsets.tolist(), lengths.tolist())]
    short = np.frombuffer(b"".join(len(n).to_bytes(2, "big") + n for n in nals), dtype=np.uint8)
    o2, l2, _ = avc.nal_units(short, [0], [len(short)], 2)
    config2 = dataclasses.replace(config, nal_length_size=2)
    assert (slices.slice_header_sizes(config2, short, o2, l2, types) == expected).all()


def test_vector_reader_follows_a_bit_string():
    """The vector path's reader (its 64-bit register refilled as reads and skips use it up) against a plain string
    of bits: random reads of u(n), ue(v) and skips of up to 90 bits, each slice reading only where its mask says."""
    rng = np.random.default_rng(23)
    data = rng.integers(0, 256, 8192, dtype=np.uint8)
    data[rng.integers(0, 8192, 800)] = 0    # longer runs of zeros: long exp-Golomb codes
    bits = "".join(f"{b:08b}" for b in data.tobytes())
    starts = rng.integers(0, 1024, 64)
    v = slices._Vec(data, starts, np.full(64, 6000), 0)
    pos = (starts * 8).tolist()
    for _ in range(400):
        mask = rng.random(64) < 0.7
        op = int(rng.integers(3))
        if op == 0:
            n = int(rng.integers(1, 33))
            got = v.u(n, mask).tolist()
            expected = [int(bits[p:p + n], 2) if m else 0 for p, m in zip(pos, mask)]
            pos = [p + n * m for p, m in zip(pos, mask)]
        elif op == 1:
            got = v.ue(mask).tolist()
            expected = []
            for i, (p, m) in enumerate(zip(pos, mask)):
                zeros = len(bits[p:]) - len(bits[p:].lstrip("0")) if m else 0
                expected.append(int(bits[p + zeros:p + 2 * zeros + 1], 2) - 1 if m and zeros <= 28 else 0)
                pos[i] = p + (2 * zeros + 1) * m
        else:
            n = rng.integers(0, 91, 64) * mask
            v.skip(n, 90)
            got, expected = [0] * 64, [0] * 64
            pos = [p + int(k) for p, k in zip(pos, n)]
        ok = ~v.bad     # a code over 57 bits sends its slice to the scalar parser: nothing more to compare
        assert np.array(got)[ok].tolist() == np.array(expected)[ok].tolist()
        assert v.pos[ok].tolist() == np.array(pos)[ok].tolist()
    assert ok.sum() > 32
