"""AAC headers: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), the esds descriptors that carry it in MP4
(ISO/IEC 14496-14 §5.6, 14496-1 §7.2.6), and the ADTS header that repeats it before every frame in MPEG-TS
(ISO/IEC 14496-3 §1.A.2.2, ISO/IEC 13818-7 §6.2).

One parser serves every reader (MP4 esds, the FLV AAC sequence header, the TS muxer): it reports both what a
player is told (the codec string ``mp4a.40.<first audioObjectType>`` of RFC 6381 §3.3, the output rate — the SBR
extension rate when SBR is present — and the decoded channel count) and what an ADTS header needs (the core object
type and the core's samplingFrequencyIndex and channelConfiguration). The ADTS headers of a whole segment are built
as one (n, 7) numpy array.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ErrorCode, PackagerError, bad_data
from .bits import BitReader

SAMPLING_FREQUENCIES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
EXPLICIT_FREQUENCY = 15  # samplingFrequencyIndex escape: a 24-bit frequency follows
# channelConfiguration -> channels (14496-3 Table 1.19, plus 23003-3 for 11-14); 0 = defined by a PCE
_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}
MPEG4_AUDIO = 0x40  # esds objectTypeIndication
MPEG2_AAC = (0x66, 0x67, 0x68)  # Main, LC, SSR (13818-7), also carrying an ASC
AOT_SBR, AOT_PS = 5, 29
_GA_SPECIFIC_NOT_ER = {1, 2, 3, 4, 6, 7}  # GASpecificConfig, no epConfig before the sync extension
_SYNC_SBR, _SYNC_PS = 0x2B7, 0x548

ADTS_HEADER_SIZE = 7
MAX_FRAME_LENGTH = (1 << 13) - 1  # aac_frame_length is 13 bits, header included


@dataclass(frozen=True)
class AudioSpecificConfig:
    object_type: int  # the first audioObjectType (the codec string's): 5/29 when SBR/PS are signalled explicitly
    core_object_type: int  # the AAC core under explicit SBR/PS (2 = LC), else object_type: the ADTS profile
    sampling_frequency_index: int  # the core's, as coded (EXPLICIT_FREQUENCY when a frequency follows)
    core_sample_rate: int  # the core's rate; 0 for a reserved index
    sample_rate: int  # the output rate (SBR's when present); 0 if the ASC does not say: callers fall back
    channel_configuration: int  # as coded (4 bits; 0 = defined by a program config element)
    channels: int  # decoded channels; 0 if defined by a PCE
    extension_frequency_index: int = -1  # explicit SBR/PS: the extension's samplingFrequencyIndex as coded

    @property
    def codec_string(self) -> str:
        return f"mp4a.40.{self.object_type}"


def _object_type(b: BitReader) -> int:
    aot = b.u(5)
    return 32 + b.u(6) if aot == 31 else aot


def _frequency(b: BitReader) -> tuple[int, int]:
    """(samplingFrequencyIndex as coded, frequency; 0 for a reserved index)."""
    index = b.u(4)
    if index == EXPLICIT_FREQUENCY:
        return index, b.u(24)
    return index, SAMPLING_FREQUENCIES[index] if index < len(SAMPLING_FREQUENCIES) else 0


def parse_audio_specific_config(asc: bytes, where: str) -> AudioSpecificConfig:
    """ISO/IEC 14496-3 §1.6.2.1, as far as rates and channels go (GASpecificConfig only to reach the backward-
    compatible SBR/PS sync extension, §1.6.5)."""
    b = BitReader(bytes(asc)[:64], f"parse_audio_specific_config: AudioSpecificConfig truncated in {where}")  # 64: every field we read
    aot = first_aot = _object_type(b)
    index, core_rate = _frequency(b)
    rate = core_rate
    channel_config = b.u(4)
    channels = _CHANNELS.get(channel_config, 0)
    sbr = ps = False
    extension_index = -1
    if aot in (AOT_SBR, AOT_PS):  # explicit hierarchical signalling: extension frequency, then the core type
        sbr, ps = True, aot == AOT_PS
        extension_index, extension_rate = _frequency(b)
        rate = extension_rate or rate
        aot = _object_type(b)
    if aot in _GA_SPECIFIC_NOT_ER and channel_config != 0 and not sbr:
        try:  # backward-compatible extension: optional, so a short or odd one is ignored, not an error
            _skip_ga_specific_config(b, aot)
            if b.left >= 16 and b.u(11) == _SYNC_SBR and b.u(5) == AOT_SBR and b.u(1):  # sbrPresentFlag
                sbr = True
                rate = _frequency(b)[1] or rate
                if b.left >= 12 and b.u(11) == _SYNC_PS:
                    ps = bool(b.u(1))
        except PackagerError:
            pass
    if ps and channels == 1:
        channels = 2  # parametric stereo decodes mono to stereo
    return AudioSpecificConfig(first_aot, aot, index, core_rate, rate, channel_config, channels, extension_index)


def _skip_ga_specific_config(b: BitReader, aot: int) -> None:
    """GASpecificConfig (14496-3 §4.4.1) of a non-ER object type with a channelConfiguration (no PCE)."""
    b.u(1)  # frameLengthFlag
    if b.u(1):  # dependsOnCoreCoder
        b.u(14)  # coreCoderDelay
    extension = b.u(1)
    if aot == 6:
        b.u(3)  # layerNr
    if extension:
        b.u(1)  # extensionFlag3


# ------------------------------------------------------------------------------------------ esds (14496-1 §7.2.6)
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


def descriptor(tag: int, payload: bytes) -> bytes:
    """An MPEG-4 descriptor (14496-1 §8.3.3): tag, size in 7-bit groups (high bit = more follow), payload."""
    size, groups = len(payload), []
    while True:
        groups.append(size & 0x7F)
        size >>= 7
        if not size:
            break
    groups.reverse()
    encoded = bytes(g | 0x80 for g in groups[:-1]) + bytes(groups[-1:])
    return bytes([tag]) + encoded + payload


def esds_payload(asc: bytes, buffer_size: int, max_bitrate: int, avg_bitrate: int) -> bytes:
    """The esds payload after version/flags: ES_Descriptor (ES_ID 0, no flags) > DecoderConfigDescriptor (MPEG-4
    audio, streamType 5) > DecoderSpecificInfo (the AudioSpecificConfig), then SLConfigDescriptor (predefined 2,
    MP4). ``buffer_size`` (bufferSizeDB) must fit 24 bits; bitrates are clamped to 32."""
    decoder_config = (
        bytes([MPEG4_AUDIO, 0x05 << 2 | 1])  # objectTypeIndication; streamType 5 (audio), upStream 0, reserved 1
        + buffer_size.to_bytes(3, "big")
        + min(max_bitrate, 0xFFFFFFFF).to_bytes(4, "big") + min(avg_bitrate, 0xFFFFFFFF).to_bytes(4, "big")
        + descriptor(0x05, asc)
    )  # fmt: skip
    es = bytes(3) + descriptor(0x04, decoder_config) + descriptor(0x06, b"\x02")  # ES_ID 0, flags 0
    return descriptor(0x03, es)


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


# ------------------------------------------------------------------------------- ADTS (14496-3 §1.A.2.2)
def _adts_frequency_index(index: int, frequency: int) -> int:
    """An ADTS header has no frequency escape: an explicit frequency takes the nearest table index."""
    if index == EXPLICIT_FREQUENCY:
        return min(range(len(SAMPLING_FREQUENCIES)), key=lambda i: abs(SAMPLING_FREQUENCIES[i] - frequency))
    if index >= len(SAMPLING_FREQUENCIES):
        raise bad_data(f"adts_constant: reserved samplingFrequencyIndex {index}")
    return index


def adts_constant(config: AudioSpecificConfig) -> int:
    """The 56-bit ADTS header without aac_frame_length: syncword, MPEG-4, no CRC, profile, frequency, channels,
    adts_buffer_fullness 0x7FF (variable rate), number_of_raw_data_blocks_in_frame 0 (ISO/IEC 14496-3 1.A.2.2).
    The profile and frequency are the AAC core's: a player finds explicit SBR/PS again from the frames."""
    frequency_index = _adts_frequency_index(config.sampling_frequency_index, config.core_sample_rate)
    if config.extension_frequency_index >= 0:  # not written, but a reserved one means the ASC is corrupt
        _adts_frequency_index(config.extension_frequency_index, 0)
    if not 1 <= config.core_object_type <= 4:
        raise PackagerError(
            ErrorCode.UNSUPPORTED, f"adts_constant: AAC object type {config.core_object_type} has no ADTS profile"
        )
    if config.channel_configuration > 7:  # 4 bits in an AudioSpecificConfig, 3 in an ADTS header
        raise PackagerError(ErrorCode.UNSUPPORTED, f"adts_constant: channelConfiguration "
                            f"{config.channel_configuration} does not fit an ADTS header")
    return (
        (0xFFF1 << 40)  # syncword, ID 0 (MPEG-4), layer 00, protection_absent 1
        | ((config.core_object_type - 1) << 38)  # profile_ObjectType
        | (frequency_index << 34)
        | (config.channel_configuration << 30)  # private_bit, original_copy, home, copyright bits: 0
        | (0x7FF << 2)
    )


def adts_headers(config: AudioSpecificConfig | int, frame_sizes: np.ndarray) -> np.ndarray:
    """One 7-byte ADTS header per raw frame, as an (n, 7) uint8 array (a view; ISO/IEC 14496-3 Table 1.A.5-1.A.7).

    ``config`` may be the ``adts_constant`` already computed. aac_frame_length (13 bits, header included) sits 13
    bits above the end of the 56-bit header, so each header is one OR on a 64-bit word.
    """
    constant = config if isinstance(config, int) else adts_constant(config)
    length = np.asarray(frame_sizes, dtype=np.int64) + ADTS_HEADER_SIZE
    if len(length) and int(length.max()) > MAX_FRAME_LENGTH:
        raise bad_data(f"adts_headers: AAC frame of {int(length.max()) - 7} bytes does not fit aac_frame_length")
    return ((length << 13) | constant).astype(">i8").view(np.uint8).reshape(-1, 8)[:, 1:]


def to_adts(payload: bytes, frame_sizes: np.ndarray, config: AudioSpecificConfig) -> bytes:
    """Raw AAC frames back to back → an ADTS stream (header + frame for each)."""
    sizes = np.asarray(frame_sizes, dtype=np.int64)
    headers = memoryview(np.ascontiguousarray(adts_headers(config, sizes)).reshape(-1))
    ends = np.cumsum(sizes).tolist()
    starts = [0] + ends[:-1]
    mv = memoryview(payload)
    pieces: list = [None] * (2 * len(ends))
    pieces[0::2] = [headers[i : i + 7] for i in range(0, 7 * len(ends), 7)]
    pieces[1::2] = [mv[a:b] for a, b in zip(starts, ends)]
    return b"".join(pieces)
