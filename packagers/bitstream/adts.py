"""AAC raw access units (as stored in MP4) to ADTS frames (as carried in MPEG-TS, stream_type 0x0F).

MP4 keeps the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) out of band in esds; an ADTS stream repeats the
essentials in a 7-byte header before every frame (ISO/IEC 14496-3 1.A.2.2, ISO/IEC 13818-7 6.2). Headers for a whole
segment are built as one (n, 7) numpy array.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ErrorCode, PackagerError, bad_data

ADTS_HEADER_SIZE = 7
MAX_FRAME_LENGTH = (1 << 13) - 1  # aac_frame_length is 13 bits, header included

SAMPLING_FREQUENCIES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


class _Bits:
    def __init__(self, data: bytes):
        self.value, self.left = int.from_bytes(data, "big"), len(data) * 8

    def read(self, n: int) -> int:
        if n > self.left:
            raise bad_data("parse_audio_specific_config: AudioSpecificConfig is truncated")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)


@dataclass(frozen=True)
class AudioSpecificConfig:
    """The fields of an AudioSpecificConfig an ADTS header needs. ``object_type`` is the AAC core (2 = LC) when
    SBR/PS are signalled explicitly (object type 5/29), and ``sampling_frequency_index`` is the core's."""

    object_type: int
    sampling_frequency_index: int
    channel_configuration: int
    sampling_frequency: int


def _frequency(bits: _Bits) -> tuple[int, int]:
    index = bits.read(4)
    if index == 0xF:
        freq = bits.read(24)
        index = min(range(len(SAMPLING_FREQUENCIES)), key=lambda i: abs(SAMPLING_FREQUENCIES[i] - freq))
        return index, freq
    if index >= len(SAMPLING_FREQUENCIES):
        raise bad_data(f"parse_audio_specific_config: reserved samplingFrequencyIndex {index}")
    return index, SAMPLING_FREQUENCIES[index]


def _object_type(bits: _Bits) -> int:
    aot = bits.read(5)
    return 32 + bits.read(6) if aot == 31 else aot


def parse_audio_specific_config(asc: bytes) -> AudioSpecificConfig:
    """ISO/IEC 14496-3 1.6.2.1 AudioSpecificConfig, as far as ADTS needs it."""
    bits = _Bits(bytes(asc))
    aot = _object_type(bits)
    sf_index, freq = _frequency(bits)
    channels = bits.read(4)
    if aot in (5, 29):  # explicit SBR / PS: extension frequency, then the core object type
        _frequency(bits)
        aot = _object_type(bits)
    return AudioSpecificConfig(aot, sf_index, channels, freq)


def adts_constant(config: AudioSpecificConfig) -> int:
    """The 56-bit ADTS header without aac_frame_length: syncword, MPEG-4, no CRC, profile, frequency, channels,
    adts_buffer_fullness 0x7FF (variable rate), number_of_raw_data_blocks_in_frame 0 (ISO/IEC 14496-3 1.A.2.2)."""
    if not 1 <= config.object_type <= 4:
        raise PackagerError(
            ErrorCode.UNSUPPORTED, f"adts_constant: AAC object type {config.object_type} has no ADTS profile"
        )
    if config.channel_configuration > 7:  # 4 bits in an AudioSpecificConfig, 3 in an ADTS header
        raise PackagerError(ErrorCode.UNSUPPORTED, f"adts_constant: channelConfiguration "
                            f"{config.channel_configuration} does not fit an ADTS header")
    return (
        (0xFFF1 << 40)  # syncword, ID 0 (MPEG-4), layer 00, protection_absent 1
        | ((config.object_type - 1) << 38)  # profile_ObjectType
        | (config.sampling_frequency_index << 34)
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


def to_adts(payload: bytes, frame_sizes: np.ndarray, config: AudioSpecificConfig | bytes) -> bytes:
    """Raw AAC frames back to back → an ADTS stream (header + frame for each)."""
    if not isinstance(config, AudioSpecificConfig):
        config = parse_audio_specific_config(config)
    sizes = np.asarray(frame_sizes, dtype=np.int64)
    headers = memoryview(np.ascontiguousarray(adts_headers(config, sizes)).reshape(-1))
    ends = np.cumsum(sizes).tolist()
    starts = [0] + ends[:-1]
    mv = memoryview(payload)
    pieces: list = [None] * (2 * len(ends))
    pieces[0::2] = [headers[i : i + 7] for i in range(0, 7 * len(ends), 7)]
    pieces[1::2] = [mv[a:b] for a, b in zip(starts, ends)]
    return b"".join(pieces)
