"""The first entry of stsd (ISO/IEC 14496-12 §8.5.2) to a ``CodecConfig``: avc1/avc3 + avcC, hvc1/hev1 + hvcC
(ISO/IEC 14496-15 §5.4, §8.4), av01 + av1C (AV1 ISOBMFF binding §2.3; thumbnails decode it, the protocols' muxers
say it is not supported), mp4a + esds (ISO/IEC 14496-14 §5.6). Any other entry returns None: the caller skips
that track rather than failing the file.
"""
from __future__ import annotations

import struct

from ..codecs.aac import MPEG2_AAC, MPEG4_AUDIO, parse_audio_specific_config, parse_esds
from ..errors import bad_data
from ..model import CodecConfig, TrackKind
from .boxes import Box, Fields, children, parse_header
from ..codecs.avc import parse_avcc
from ..codecs.av1 import parse_av1c
from ..codecs.hevc import parse_hvcc

VIDEO_ENTRIES = {"avc1": ("avcC", parse_avcc), "avc3": ("avcC", parse_avcc),
                 "hvc1": ("hvcC", parse_hvcc), "hev1": ("hvcC", parse_hvcc), "av01": ("av1C", parse_av1c)}
_VISUAL_FIELDS = 78  # SampleEntry (8) + VisualSampleEntry fields (70), §12.1.3
_AUDIO_FIELDS = {0: 28, 1: 28 + 16, 2: 28 + 36}  # ISO / QuickTime sound description v1, v2 (extra fields)


def parse_stsd(buf: bytes, stsd: Box, kind: TrackKind, tkhd_size: tuple[int, int], where: str) -> CodecConfig | None:
    f = Fields(buf, stsd, "parse_stsd", where)
    f.full_box()
    if f.u32() == 0 or f.remaining < 8:
        raise bad_data(f"parse_stsd: no sample entry in {where}")
    entry = parse_header(buf[f.pos : f.pos + 16], f.pos, stsd.end, where)
    if kind == "video" and entry.type in VIDEO_ENTRIES:
        return parse_visual_sample_entry(buf, entry, tkhd_size, where)
    if kind == "audio" and entry.type == "mp4a":
        return parse_audio_sample_entry(buf, entry, where)
    return None


def parse_visual_sample_entry(buf: bytes, entry: Box, tkhd_size: tuple[int, int], where: str) -> CodecConfig:
    """VisualSampleEntry §12.1.3: width/height (the tkhd's when zero), then the configuration box."""
    f = Fields(buf, entry, "parse_visual_sample_entry", where)
    f.skip(24)
    width, height = f.u16(), f.u16()
    f.skip(_VISUAL_FIELDS - 28)
    config_type, parse_config = VIDEO_ENTRIES[entry.type]
    box = children(buf, entry, where, skip=_VISUAL_FIELDS).get(config_type)
    if box is None:
        raise bad_data(f"parse_visual_sample_entry: {entry.type} without {config_type} in {where}")
    extradata = bytes(buf[box.payload_start : box.end])
    video = parse_config(extradata, entry.type, where)
    return CodecConfig(
        fourcc=entry.type,
        codec_string=video.codec_string,
        extradata=extradata,
        parameter_sets=video.parameter_sets,
        nal_length_size=video.nal_length_size,
        width=width or tkhd_size[0],
        height=height or tkhd_size[1],
    )


def parse_audio_sample_entry(buf: bytes, entry: Box, where: str) -> CodecConfig | None:
    """AudioSampleEntry §12.2.3 (and QuickTime v1/v2 sound descriptions), esds directly inside or in a 'wave' box.
    None for MPEG audio other than AAC (e.g. MP3 in mp4a)."""
    f = Fields(buf, entry, "parse_audio_sample_entry", where)
    f.skip(8)  # reserved, data_reference_index
    version = f.u16()
    f.skip(6)  # revision, vendor
    channels = f.u16()
    f.skip(6)  # samplesize, pre_defined, reserved
    sample_rate = f.u32() >> 16  # 16.16
    if version not in _AUDIO_FIELDS:
        raise bad_data(f"parse_audio_sample_entry: unknown sound description version {version} in {where}")
    if version == 2:
        f.skip(4)  # sizeOfStructOnly
        (rate,) = struct.unpack(">d", f.bytes(8))
        sample_rate = int(rate) if 0 < rate < 1e7 else 0
        channels = f.u32()
    found = children(buf, entry, where, skip=_AUDIO_FIELDS[version])
    esds = found.get("esds")
    if esds is None and "wave" in found:
        esds = children(buf, found["wave"], where).get("esds")
    if esds is None:
        raise bad_data(f"parse_audio_sample_entry: mp4a without esds in {where}")
    if esds.size - esds.header_size < 4:
        raise bad_data(f"parse_audio_sample_entry: esds truncated in {where}")
    object_type_indication, asc = parse_esds(bytes(buf[esds.payload_start + 4 : esds.end]), where)
    if object_type_indication not in (MPEG4_AUDIO, *MPEG2_AAC):
        return None
    if not asc:
        raise bad_data(f"parse_audio_sample_entry: AAC without AudioSpecificConfig in {where}")
    audio = parse_audio_specific_config(asc, where)
    return CodecConfig(
        fourcc="mp4a",
        codec_string=audio.codec_string,
        extradata=asc,
        sample_rate=audio.sample_rate or sample_rate,
        channels=audio.channels or channels,
    )
