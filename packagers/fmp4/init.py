"""The initialization segment of fragmented MP4 (ISO/IEC 14496-12 §8.8; DASH 23009-1 §6.3.3): ftyp + moov with one
trak per track and empty sample tables (the samples live in the fragments), then mvex/trex announcing fragments.

Sample entries are rebuilt from ``CodecConfig``: avc1/avc3 + avcC, hvc1/hev1 + hvcC (ISO/IEC 14496-15 §5.4, §8.4),
mp4a + esds carrying the AudioSpecificConfig (ISO/IEC 14496-14 §5.6). Track IDs are renumbered 1..n in the order
given, so tracks from different files of a url set can never collide.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..codecs.aac import esds_payload
from ..codecs.box import box, full_box
from ..errors import ErrorCode, PackagerError, bad_data
from ..model import CodecConfig, Track
from .boxes import I16, U16, U32, file_type

if TYPE_CHECKING:
    from ..drm.cenc import TrackProtection
    from ..drm.keys import MediaKeys

MOVIE_TIMESCALE = 1000
FTYP_BRANDS = (b"iso6", b"iso5", b"dash")  # iso5+: default-base-is-moof; iso6: trun v1 signed offsets; 23009-1 §6.3.3
_MATRIX = b"".join(U32(v) for v in (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000))
_CHANNEL_CONFIGURATION = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 8: 7}  # channels -> 14496-3 channelConfiguration


def sample_entry_type(codec: CodecConfig) -> str:
    """The sample entry we write. HEVC with its parameter sets in hvcC is always 'hvc1' (Apple's HLS authoring spec
    requires it; 14496-15 §8.4.1 'hvc1' = parameter sets out of band); avc1/avc3/hvc1 stay as they are."""
    if codec.fourcc == "hev1" and len(codec.parameter_sets) >= 3:
        return "hvc1"
    return codec.fourcc


def codec_string(codec: CodecConfig) -> str:
    """RFC 6381 codecs value of the track as written in fMP4 (its first element is the sample entry type)."""
    entry = sample_entry_type(codec)
    head, dot, rest = codec.codec_string.partition(".")
    return f"{entry}{dot}{rest}" if head in ("hev1", "hvc1") else codec.codec_string


def channel_configuration(codec: CodecConfig) -> int:
    """DASH AudioChannelConfiguration value (23003-3 / 14496-3 channelConfiguration) for the channel count."""
    return _CHANNEL_CONFIGURATION.get(codec.channels or 2, codec.channels or 2)


def language_code(language: str) -> int:
    """mdhd language §8.4.2.3: ISO 639-2/T, three letters each - 0x60 in 5 bits; anything else is 'und'."""
    valid = len(language) == 3 and language.isascii() and language.isalpha() and language.islower()
    code = language if valid else "und"
    return (ord(code[0]) - 0x60) << 10 | (ord(code[1]) - 0x60) << 5 | (ord(code[2]) - 0x60)


def esds(track: Track) -> bytes:
    """ESDescriptorBox (14496-14 §5.6): ES_Descriptor > DecoderConfigDescriptor (AAC, 0x40; audio stream) >
    DecoderSpecificInfo (the AudioSpecificConfig), SLConfigDescriptor (predefined 2, MP4)."""
    asc = track.codec.extradata
    if not asc:
        raise bad_data(f"esds: AAC track {track.track_id} of {track.source or 'media'} has no AudioSpecificConfig")
    sizes = track.samples.sizes
    largest = int(sizes.max()) if len(sizes) else 0
    if largest > 0xFFFFFF:
        raise bad_data(f"esds: AAC frame of {largest} bytes in track {track.track_id} of {track.source or 'media'} "
                       "does not fit bufferSizeDB (24 bits)")
    peak = 0
    if len(sizes):
        # maxBitrate (14496-1 §7.2.6.6, bits in any one-second window): bounded by two adjacent one-second bins.
        # Bins of the seconds that have samples only: a lying stts must not size an array by its time span.
        seconds, which = np.unique((track.samples.dts - track.samples.dts[0]) // track.timescale, return_inverse=True)
        bins = np.bincount(which, weights=sizes)
        pairs = bins[:-1] + np.where(np.diff(seconds) == 1, bins[1:], 0)
        peak = int(max(bins.max(), pairs.max(initial=0))) * 8
    return full_box(b"esds", 0, 0, esds_payload(asc, largest, peak, track.average_bitrate))


def visual_sample_entry(track: Track) -> bytes:
    """VisualSampleEntry §12.1.3 (78 bytes of fields) + the decoder configuration record box."""
    codec = track.codec
    entry = sample_entry_type(codec)
    config = {"avc1": b"avcC", "avc3": b"avcC", "hvc1": b"hvcC", "hev1": b"hvcC"}.get(entry)
    if config is None:
        raise PackagerError(ErrorCode.UNSUPPORTED, f"visual_sample_entry: no fMP4 sample entry for '{entry}'")
    if not codec.extradata:
        raise bad_data(f"visual_sample_entry: {entry} track {track.track_id} of {track.source or 'media'} has no "
                       f"{config.decode()}")
    fields = (
        bytes(6) + U16(1)  # reserved, data_reference_index
        + bytes(16)  # pre_defined, reserved, pre_defined[3]
        + U16(codec.width) + U16(codec.height)
        + U32(0x00480000) * 2  # 72 dpi
        + bytes(4) + U16(1)  # reserved, frame_count
        + bytes(32)  # compressorname
        + U16(0x0018) + I16(-1)  # depth, pre_defined
    )  # fmt: skip
    return box(entry.encode(), fields, box(config, codec.extradata))


def audio_sample_entry(track: Track) -> bytes:
    """AudioSampleEntry §12.2.3 (version 0: 16.16 sample rate, 0 when it does not fit) + esds."""
    codec = track.codec
    if codec.fourcc != "mp4a":
        raise PackagerError(ErrorCode.UNSUPPORTED, f"audio_sample_entry: no fMP4 sample entry for '{codec.fourcc}'")
    if not 0 <= codec.channels <= 0xFFFF:  # a QuickTime v2 sound description has 32 bits for it, we write 16
        raise bad_data(f"audio_sample_entry: {codec.channels} channels in track {track.track_id} of "
                       f"{track.source or 'media'}")
    rate = codec.sample_rate if codec.sample_rate < 0x10000 else 0
    fields = bytes(6) + U16(1) + bytes(8) + U16(codec.channels or 2) + U16(16) + bytes(4) + U32(rate << 16)
    return box(b"mp4a", fields, esds(track))


def trak(track: Track, track_id: int, protection: "TrackProtection | None" = None, clear_entry: bool = False) -> bytes:
    """TrackBox §8.3.1 with empty sample tables (§8.8.1: the fragments carry the samples). A protected track's
    sample entry is encv/enca with its sinf; ``clear_entry`` keeps the clear one second, for a clear lead."""
    video = track.kind == "video"
    tkhd = full_box(
        b"tkhd", 0, 0x3,  # track_enabled | track_in_movie
        bytes(8), U32(track_id), bytes(4), U32(0),  # creation, modification, track_ID, reserved, duration
        bytes(8), U16(0), U16(0), U16(0 if video else 0x0100), bytes(2), _MATRIX,
        U32(track.codec.width << 16 if video else 0), U32(track.codec.height << 16 if video else 0),
    )  # fmt: skip
    mdhd = full_box(b"mdhd", 0, 0, bytes(8), U32(track.timescale), U32(0), U16(language_code(track.language)), U16(0))
    handler, name = (b"vide", b"VideoHandler\0") if video else (b"soun", b"SoundHandler\0")
    hdlr = full_box(b"hdlr", 0, 0, U32(0), handler, bytes(12), name)
    media_header = full_box(b"vmhd", 0, 1, bytes(8)) if video else full_box(b"smhd", 0, 0, bytes(4))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, U32(1), full_box(b"url ", 0, 1)))
    entry = visual_sample_entry(track) if video else audio_sample_entry(track)
    entries = [entry]
    if protection is not None:
        from ..drm.boxes import protect_sample_entry

        entries = [protect_sample_entry(entry, protection.scheme.encode(), protection.tenc())]
        entries += [entry] if clear_entry else []
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, U32(len(entries)), *entries),
        full_box(b"stts", 0, 0, U32(0)),
        full_box(b"stsc", 0, 0, U32(0)),
        full_box(b"stsz", 0, 0, U32(0), U32(0)),
        full_box(b"stco", 0, 0, U32(0)),
    )
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl)))


def build_init_segment(tracks: Sequence[Track], protection: "Sequence[TrackProtection | None]" = (),
                       keys: "MediaKeys | None" = None, clear_entry: bool = False) -> bytes:
    """ftyp + moov(mvhd, [pssh...], trak per track, mvex(trex per track)). Durations are 0: the fragments (and the
    manifest) say how long the media is (§8.8.1). Track i of ``tracks`` gets track_ID i + 1, as in ``Fmp4Muxer``.
    With ``protection``: the W3C common pssh naming every key id (what ClearKey CDMs read) and the DRM systems'
    pssh boxes of ``keys``."""
    if not tracks:
        raise PackagerError(ErrorCode.NO_STREAMS, "build_init_segment: no tracks")
    mvhd = full_box(
        b"mvhd", 0, 0, bytes(8), U32(MOVIE_TIMESCALE), U32(0),  # creation, modification, timescale, duration
        U32(0x00010000), U16(0x0100), bytes(10), _MATRIX, bytes(24), U32(len(tracks) + 1),
    )  # fmt: skip
    protection = tuple(protection) or (None,) * len(tracks)
    traks = [trak(track, i + 1, p, clear_entry) for i, (track, p) in enumerate(zip(tracks, protection))]
    if any(protection):
        from ..drm.boxes import pssh
        from ..drm.keys import COMMON

        key_ids = tuple(dict.fromkeys(p.key.key_id for p in protection if p is not None))
        systems = keys.pssh() if keys is not None else ()
        traks = [pssh(COMMON, b"", key_ids), *(pssh(p.system_id, p.data) for p in systems if p.system_id != COMMON),
                 *traks]
    mvex = box(b"mvex", *(full_box(b"trex", 0, 0, U32(i + 1), U32(1), U32(0), U32(0), U32(0))
                          for i in range(len(tracks))))  # fmt: skip
    return file_type(b"ftyp", FTYP_BRANDS[0], 0, FTYP_BRANDS) + box(b"moov", mvhd, *traks, mvex)
