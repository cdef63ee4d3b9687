"""TTML in fragmented MP4 (ISO/IEC 14496-30 §4.4 and 14496-12 §12.6: a 'subt' track whose samples are TTML
documents), the DASH ``stpp`` representation and the Smooth Streaming text stream.

The init segment has one track (track_ID 1): hdlr 'subt', an empty sthd media header (§12.6.2), and an
XMLSubtitleSampleEntry 'stpp' (§12.6.3.2) with namespace "http://www.w3.org/ns/ttml" and empty schema_location and
auxiliary_mime_types. A fragment is styp + moof (mfhd, traf: tfhd, tfdt, [tfxd], trun) + mdat with exactly one
sample, the TTML document covering the fragment's time span (14496-30 §4.4: one document per sample). Box writing
is ``packagers.codecs.box``; the layout follows ``packagers.fmp4`` (default-base-is-moof, tfdt version 1).
"""
from __future__ import annotations

from ..codecs.box import box, full_box
from ..errors import bad_request
from ..fmp4.boxes import U16, U32, U64, file_type
from ..fmp4.fragment import (STYP_BRANDS, SYNC_SAMPLE_FLAGS, TFHD_DEFAULT_BASE_IS_MOOF, TFHD_DEFAULT_SAMPLE_FLAGS,
                             TFXD_UUID, TRUN_DATA_OFFSET, TRUN_SAMPLE_DURATION, TRUN_SAMPLE_SIZE)
from ..fmp4.init import FTYP_BRANDS, MOVIE_TIMESCALE, language_code

TTML_NAMESPACE = "http://www.w3.org/ns/ttml"
TRACK_ID = 1
_MATRIX = b"".join(U32(v) for v in (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000))


def stpp_sample_entry() -> bytes:
    """XMLSubtitleSampleEntry §12.6.3.2: SampleEntry fields, then three null-terminated UTF-8 strings."""
    return box(b"stpp", bytes(6), U16(1), TTML_NAMESPACE.encode() + b"\0", b"\0", b"\0")


def build_stpp_init(language: str, timescale: int = 1000) -> bytes:
    """ftyp + moov(mvhd, trak 'subt', mvex/trex). ``language`` is ISO 639-2/T (mdhd §8.4.2.3; else 'und')."""
    if not 0 < timescale <= 0xFFFFFFFF:
        raise bad_request(f"build_stpp_init: timescale {timescale}")
    mvhd = full_box(
        b"mvhd", 0, 0, bytes(8), U32(MOVIE_TIMESCALE), U32(0),  # creation, modification, timescale, duration
        U32(0x00010000), U16(0x0100), bytes(10), _MATRIX, bytes(24), U32(TRACK_ID + 1),
    )  # fmt: skip
    tkhd = full_box(
        b"tkhd", 0, 0x3,  # track_enabled | track_in_movie
        bytes(8), U32(TRACK_ID), bytes(4), U32(0),  # creation, modification, track_ID, reserved, duration
        bytes(8), U16(0), U16(0), U16(0), bytes(2), _MATRIX, U32(0), U32(0),  # layer, group, volume, size 0x0
    )  # fmt: skip
    mdhd = full_box(b"mdhd", 0, 0, bytes(8), U32(timescale), U32(0), U16(language_code(language)), U16(0))
    hdlr = full_box(b"hdlr", 0, 0, U32(0), b"subt", bytes(12), b"SubtitleHandler\0")
    dinf = box(b"dinf", full_box(b"dref", 0, 0, U32(1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, U32(1), stpp_sample_entry()),
        full_box(b"stts", 0, 0, U32(0)),
        full_box(b"stsc", 0, 0, U32(0)),
        full_box(b"stsz", 0, 0, U32(0), U32(0)),
        full_box(b"stco", 0, 0, U32(0)),
    )
    minf = box(b"minf", full_box(b"sthd", 0, 0), dinf, stbl)
    trak = box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))
    mvex = box(b"mvex", full_box(b"trex", 0, 0, U32(TRACK_ID), U32(1), U32(0), U32(0), U32(0)))
    return file_type(b"ftyp", FTYP_BRANDS[0], 0, FTYP_BRANDS) + box(b"moov", mvhd, trak, mvex)


def build_stpp_fragment(sequence_number: int, start_ms: int, duration_ms: int, ttml: bytes, timescale: int = 1000,
                        tfxd: bool = False, styp: bool = True) -> bytes:
    """styp + moof + mdat carrying ``ttml`` as the one sample, decode time ``start_ms``, lasting ``duration_ms``
    (converted to ``timescale``, the init segment's). ``tfxd`` adds the Smooth Streaming TfxdBox (MS-SSTR
    §2.2.4.4) with the same time and duration; Smooth fragments have no ``styp``."""
    if sequence_number < 0 or start_ms < 0 or duration_ms < 0:
        raise bad_request(f"build_stpp_fragment: sequence {sequence_number}, start {start_ms}, duration {duration_ms}")
    decode_time = start_ms * timescale // 1000
    # The end is rounded, not the duration, so that consecutive fragments tile the timeline without drift.
    duration = (start_ms + duration_ms) * timescale // 1000 - decode_time
    if duration > 0xFFFFFFFF or len(ttml) > 0xFFFFFFFF - 64:
        raise bad_request(f"build_stpp_fragment: duration {duration_ms} ms or {len(ttml)} bytes do not fit a trun")
    tfhd = full_box(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF | TFHD_DEFAULT_SAMPLE_FLAGS, U32(TRACK_ID),
                    U32(SYNC_SAMPLE_FLAGS))
    tfdt = full_box(b"tfdt", 1, 0, U64(decode_time))
    extra = box(b"uuid", TFXD_UUID, U32(1 << 24), U64(decode_time), U64(duration)) if tfxd else b""
    trun_size = 8 + 4 + 4 + 4 + 8  # header, version/flags, sample_count, data_offset, one (duration, size) row
    traf_size = 8 + len(tfhd) + len(tfdt) + len(extra) + trun_size
    moof_size = 8 + 16 + traf_size  # moof header + mfhd
    data_offset = moof_size + 8  # from the moof's first byte to the mdat payload (default-base-is-moof)
    trun = full_box(b"trun", 0, TRUN_DATA_OFFSET | TRUN_SAMPLE_DURATION | TRUN_SAMPLE_SIZE, U32(1), U32(data_offset),
                    U32(duration), U32(len(ttml)))
    moof = box(b"moof", full_box(b"mfhd", 0, 0, U32(sequence_number)), box(b"traf", tfhd, tfdt, extra, trun))
    assert len(moof) == moof_size
    head = file_type(b"styp", STYP_BRANDS[0], 0, STYP_BRANDS) if styp else b""
    return head + moof + box(b"mdat", ttml)
