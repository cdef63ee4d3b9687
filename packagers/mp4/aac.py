"""AAC configuration: the esds box (ISO/IEC 14496-14 §5.6, descriptors of 14496-1 §7.2.6) and the
AudioSpecificConfig it carries (ISO/IEC 14496-3 §1.6.2.1).

The codec string is ``mp4a.40.<audioObjectType>`` (RFC 6381 §3.3), with the first object type of the ASC: 2 for
AAC-LC (including backward-compatible SBR signalling), 5 or 29 when HE-AAC v1/v2 is signalled explicitly. The
reported sample rate is the output rate: the SBR extension rate when SBR is present, else the core rate.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import PackagerError, bad_data

SAMPLING_FREQUENCIES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
# channelConfiguration -> channels (14496-3 Table 1.19, plus 23003-3 for 11-14); 0 = defined by a PCE
_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}
MPEG4_AUDIO = 0x40
MPEG2_AAC = (0x66, 0x67, 0x68)  # Main, LC, SSR (13818-7), also carrying an ASC
AOT_SBR, AOT_PS = 5, 29
_GA_SPECIFIC_NOT_ER = {1, 2, 3, 4, 6, 7}  # GASpecificConfig, no epConfig before the sync extension
_SYNC_SBR, _SYNC_PS = 0x2B7, 0x548


@dataclass(frozen=True)
class AudioConfig:
    object_type: int  # the first audioObjectType of the ASC (the codec string's)
    sample_rate: int  # 0 if the ASC does not say (reserved index): the caller falls back to the sample entry
    channels: int  # 0 if defined by a program config element

    @property
    def codec_string(self) -> str:
        return f"mp4a.40.{self.object_type}"


class _Bits:
    """MSB-first bit reader; reading past the end is BAD_DATA."""

    def __init__(self, data: bytes, where: str):
        data = data[:64]  # every field we read lies in the first bytes; bounds the big-int work
        self.value, self.left, self.where = int.from_bytes(data, "big"), 8 * len(data), where

    def read(self, n: int) -> int:
        if n > self.left:
            raise bad_data(f"parse_audio_specific_config: AudioSpecificConfig truncated in {self.where}")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)


def _object_type(b: _Bits) -> int:
    aot = b.read(5)
    return 32 + b.read(6) if aot == 31 else aot


def _frequency(b: _Bits) -> int:
    index = b.read(4)
    if index == 15:
        return b.read(24)
    return SAMPLING_FREQUENCIES[index] if index < len(SAMPLING_FREQUENCIES) else 0


def parse_audio_specific_config(asc: bytes, where: str) -> AudioConfig:
    """ISO/IEC 14496-3 §1.6.2.1, as far as rates and channels go (GASpecificConfig only to reach the backward-
    compatible SBR/PS sync extension, §1.6.5)."""
    b = _Bits(asc, where)
    aot = first_aot = _object_type(b)
    rate = _frequency(b)
    channel_config = b.read(4)
    channels = _CHANNELS.get(channel_config, 0)
    sbr = ps = False
    if aot in (AOT_SBR, AOT_PS):  # explicit hierarchical signalling
        sbr, ps = True, aot == AOT_PS
        rate = _frequency(b) or rate
        aot = _object_type(b)
    if aot in _GA_SPECIFIC_NOT_ER and channel_config != 0 and not sbr:
        try:  # backward-compatible extension: optional, so a short or odd one is ignored, not an error
            _skip_ga_specific_config(b, aot)
            if b.left >= 16 and b.read(11) == _SYNC_SBR and b.read(5) == AOT_SBR and b.read(1):  # sbrPresentFlag
                sbr = True
                rate = _frequency(b) or rate
                if b.left >= 12 and b.read(11) == _SYNC_PS:
                    ps = bool(b.read(1))
        except PackagerError:
            pass
    if ps and channels == 1:
        channels = 2  # parametric stereo decodes mono to stereo
    return AudioConfig(first_aot, rate, channels)


def _skip_ga_specific_config(b: _Bits, aot: int) -> None:
    """GASpecificConfig (14496-3 §4.4.1) of a non-ER object type with a channelConfiguration (no PCE)."""
    b.read(1)  # frameLengthFlag
    if b.read(1):  # dependsOnCoreCoder
        b.read(14)  # coreCoderDelay
    extension = b.read(1)
    if aot == 6:
        b.read(3)  # layerNr
    if extension:
        b.read(1)  # extensionFlag3


def _descriptor(esds: bytes, pos: int, end: int, where: str) -> tuple[int, int, int]:
    """(tag, payload start, payload end) of the descriptor at ``pos`` (14496-1 §8.3.3: size in 1-4 bytes of 7 bits)."""
    if pos >= end:
        raise bad_data(f"parse_esds: descriptor missing in {where}")
    tag, size, pos = esds[pos], 0, pos + 1
    for _ in range(4):
        if pos >= end:
            raise bad_data(f"parse_esds: descriptor size truncated in {where}")
        byte = esds[pos]
        pos += 1
        size = (size << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    if pos + size > end:
        raise bad_data(f"parse_esds: descriptor (tag {tag}) overruns esds in {where}")
    return tag, pos, pos + size


def parse_esds(esds: bytes, where: str) -> tuple[int, bytes]:
    """esds payload after version/flags -> (objectTypeIndication, DecoderSpecificInfo bytes)."""
    tag, pos, end = _descriptor(esds, 0, len(esds), where)
    if tag != 0x03:
        raise bad_data(f"parse_esds: expected ES_Descriptor, found tag {tag} in {where}")
    if pos + 3 > end:
        raise bad_data(f"parse_esds: ES_Descriptor truncated in {where}")
    flags = esds[pos + 2]
    pos += 3  # ES_ID, flags
    if flags & 0x80:  # streamDependenceFlag
        pos += 2
    if flags & 0x40:  # URL_Flag
        if pos >= end:
            raise bad_data(f"parse_esds: ES_Descriptor URL truncated in {where}")
        pos += 1 + esds[pos]
    if flags & 0x20:  # OCRstreamFlag
        pos += 2
    tag, pos, end = _descriptor(esds, pos, end, where)
    if tag != 0x04:
        raise bad_data(f"parse_esds: expected DecoderConfigDescriptor, found tag {tag} in {where}")
    if pos + 13 > end:
        raise bad_data(f"parse_esds: DecoderConfigDescriptor truncated in {where}")
    object_type_indication = esds[pos]
    pos += 13  # objectTypeIndication, streamType, bufferSizeDB, maxBitrate, avgBitrate
    if pos == end:
        return object_type_indication, b""
    tag, pos, dsi_end = _descriptor(esds, pos, end, where)
    return object_type_indication, bytes(esds[pos:dsi_end]) if tag == 0x05 else b""
