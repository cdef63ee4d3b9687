"""MPEG-2 transport stream building blocks (ISO/IEC 13818-1): PSI sections, PES header fields, PCR.

Timestamp fields are encoded for whole columns at once (numpy, one row per PES); PSI is built once per muxer.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

TS_PACKET_SIZE = 188
TS_PAYLOAD_SIZE = 184  # after the 4-byte packet header (2.4.3.2)
SYNC_BYTE = 0x47

PID_PAT = 0x0000
PID_PMT = 0x1000
PID_VIDEO = 0x0100
PID_AUDIO_FIRST = 0x0101
PROGRAM_NUMBER = 1
TRANSPORT_STREAM_ID = 1

# stream_type (Table 2-34; 0x24 from the HEVC amendment)
STREAM_TYPE_H264 = 0x1B
STREAM_TYPE_HEVC = 0x24
STREAM_TYPE_AAC_ADTS = 0x0F
# stream_id (Table 2-22)
STREAM_ID_VIDEO = 0xE0
STREAM_ID_AUDIO_FIRST = 0xC0

TIMESTAMP_MASK = (1 << 33) - 1  # PTS, DTS and PCR base are 33-bit counters of a 90 kHz clock
PTS_ONLY, PTS_WITH_DTS, DTS_AFTER_PTS = 0x2, 0x3, 0x1  # the 4-bit prefixes of the PTS/DTS fields (2.4.3.7)

# adaptation field flags (2.4.3.4)
RANDOM_ACCESS_INDICATOR = 0x40
PCR_FLAG = 0x10


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """CRC_32 of PSI sections (Annex A: polynomial 0x04C11DB7, initial 0xFFFFFFFF, no reflection, no final xor)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ b) & 0xFF]
    return crc


def _section(table_id: int, table_id_extension: int, body: bytes) -> bytes:
    """A long-form PSI section (2.4.4.3): header, version 0, current, single section, CRC_32."""
    section_length = 5 + len(body) + 4
    head = bytes(
        [
            table_id,
            0xB0 | (section_length >> 8),  # section_syntax_indicator 1, '0', reserved '11'
            section_length & 0xFF,
            table_id_extension >> 8,
            table_id_extension & 0xFF,
            0xC1,  # reserved '11', version_number 0, current_next_indicator 1
            0x00,  # section_number
            0x00,  # last_section_number
        ]
    )
    section = head + body
    return section + crc32_mpeg2(section).to_bytes(4, "big")


def pat_section(pmt_pid: int = PID_PMT, program_number: int = PROGRAM_NUMBER) -> bytes:
    """program_association_section (2.4.4.3) with one program."""
    body = program_number.to_bytes(2, "big") + (0xE000 | pmt_pid).to_bytes(2, "big")
    return _section(0x00, TRANSPORT_STREAM_ID, body)


def language_descriptor(language: str) -> bytes:
    """ISO_639_language_descriptor (2.6.18), audio_type 0 (undefined)."""
    code = (language or "und").encode("ascii", "replace")[:3].ljust(3, b" ")
    return bytes([0x0A, 4]) + code + b"\x00"


def pmt_section(pcr_pid: int, streams: Sequence[tuple[int, int, bytes]], program_number: int = PROGRAM_NUMBER) -> bytes:
    """TS_program_map_section (2.4.4.8). ``streams`` are (stream_type, elementary_PID, descriptors)."""
    body = bytearray((0xE000 | pcr_pid).to_bytes(2, "big") + b"\xf0\x00")  # program_info_length 0
    for stream_type, pid, descriptors in streams:
        body += bytes([stream_type]) + (0xE000 | pid).to_bytes(2, "big")
        body += (0xF000 | len(descriptors)).to_bytes(2, "big") + descriptors
    return _section(0x02, program_number, bytes(body))


def psi_packet(pid: int, section: bytes, continuity_counter: int = 0) -> bytes:
    """One TS packet carrying a whole section: PUSI, pointer_field 0, 0xFF stuffing after the section (2.4.4.2)."""
    payload = b"\x00" + section
    if len(payload) > TS_PAYLOAD_SIZE:
        raise ValueError(f"psi_packet: section of {len(section)} bytes does not fit one packet")
    header = bytes([SYNC_BYTE, 0x40 | (pid >> 8), pid & 0xFF, 0x10 | (continuity_counter & 0x0F)])
    return header + payload + b"\xff" * (TS_PAYLOAD_SIZE - len(payload))


def timestamp_fields(prefix: int, t: np.ndarray) -> np.ndarray:
    """The 5-byte PTS or DTS field (2.4.3.7) for each 33-bit value of ``t``: (n, 5) uint8."""
    t = np.asarray(t, dtype=np.int64) & TIMESTAMP_MASK
    out = np.empty((len(t), 5), dtype=np.uint8)
    out[:, 0] = (prefix << 4) | ((t >> 29) & 0x0E) | 1
    out[:, 1] = (t >> 22) & 0xFF
    out[:, 2] = ((t >> 14) & 0xFE) | 1
    out[:, 3] = (t >> 7) & 0xFF
    out[:, 4] = ((t << 1) & 0xFE) | 1
    return out


def pcr_fields(base: np.ndarray) -> np.ndarray:
    """The 6-byte program_clock_reference (2.4.3.5): 33-bit base, 6 reserved bits, 9-bit extension 0."""
    base = np.asarray(base, dtype=np.int64) & TIMESTAMP_MASK
    out = np.empty((len(base), 6), dtype=np.uint8)
    out[:, 0] = base >> 25
    out[:, 1] = (base >> 17) & 0xFF
    out[:, 2] = (base >> 9) & 0xFF
    out[:, 3] = (base >> 1) & 0xFF
    out[:, 4] = ((base & 1) << 7) | 0x7E
    out[:, 5] = 0
    return out
