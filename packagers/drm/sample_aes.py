"""HLS SAMPLE-AES of MPEG-TS: Apple's "MPEG-2 Stream Encryption Format for HTTP Live Streaming".

``encrypt_segment`` is a sample transform run before ``TsMuxer(tracks, sample_aes=True).build``; the muxer then
signals the encrypted streams in its PMT (``pmt_stream``: stream_type 0xdb/0xcf with their descriptors, spec §3).

* H.264 (§2.2): NAL units of type 1 and 5 longer than 48 bytes. The NAL header byte and the 31 bytes after it stay
  clear, then one encrypted 16-byte block before each run of up to 144 clear bytes (the 1:9 pattern), a block only
  where more than 16 bytes remain, so the tail is always clear; AES-128-CBC, the chain restarting at the IV in every
  NAL unit. The pattern runs over the NAL unit as stored (its emulation prevention bytes included), and then
  emulation prevention is applied to the encrypted unit ("each NAL unit is formed with start code emulation
  prevention applied"): sizes change. Decryptors undo exactly that: ffmpeg's hls demuxer and hls.js strip one
  level of emulation prevention, decrypt, and hand the result to the decoder as is (so encrypting the unit with
  its emulation prevention removed would feed decoders an unescaped unit); shaka-packager encrypts the same way.
* AAC (§2.3.2): in each frame, after the ADTS header (the muxer writes it, clear), 16 clear bytes, then every whole
  16-byte block encrypted (CBC from the IV in every frame); the last partial block stays clear. Sizes are kept.

The IV is the caller's (16 bytes): the media playlist states it, ``#EXT-X-KEY:METHOD=SAMPLE-AES,URI=...,IV=0x<32
hex digits>`` (``iv_attribute``); nothing here derives it from the media sequence number.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Sequence

import numpy as np

from ..codecs import avc
from ..codecs.aac import AOT_PS, AOT_SBR, parse_audio_specific_config
from ..errors import ErrorCode, PackagerError, bad_data
from ..media_data import MediaSegment, TrackSegment
from ..model import SampleTable, Track
from ..output import finished, new_bytes
from .cbc import encrypt_blocks

KEY_METHOD = "SAMPLE-AES"  # EXT-X-KEY METHOD
BLOCK = 16
CLEAR_LEADER = 32  # nal_unit_type_byte + unencrypted_leader (Listing 2-1)
PATTERN = 10 * BLOCK  # one encrypted block, then up to nine clear ones
MIN_ENCRYPTED_NAL = 48  # NAL units of this size or less stay clear
AUDIO_CLEAR_LEADER = 16  # after the ADTS header (Listing 2-2)
ENCRYPTED_NAL_TYPES = (1, 5)  # coded slice of a non-IDR / IDR picture
# PMT signalling (§3): stream_type, private_data_indicator; AAC adds its setup information (§2.3.4) in a
# registration_descriptor 'apad'
STREAM_TYPE_H264 = 0xDB
STREAM_TYPE_AAC = 0xCF
PRIVATE_DATA_INDICATOR_DESCRIPTOR = 0x0F  # ISO/IEC 13818-1 2.6.28
REGISTRATION_DESCRIPTOR = 0x05  # ISO/IEC 13818-1 2.6.8
AUDIO_SETUP_VERSION = 1
SCRATCH_KEEP = 8 << 20  # keep the per-thread work buffers up to this size


def iv_attribute(iv: bytes) -> str:
    """The EXT-X-KEY IV attribute value of ``iv``: ``0x`` and 32 hex digits."""
    return "0x" + _check(iv, "iv", "iv_attribute").hex()


def encrypt_segment(segment: MediaSegment, key: bytes, iv: bytes) -> MediaSegment:
    """``segment`` with its H.264 NAL units and AAC frames encrypted (new sample sizes for video). HEVC and other
    codecs are UNSUPPORTED: the format defines H.264, AAC and AC-3 only (AC-3 is not carried by our TS muxer)."""
    key, iv = _check(key, "key", "encrypt_segment"), _check(iv, "iv", "encrypt_segment")
    try:
        return dataclasses.replace(segment, tracks=tuple(_encrypt_track(ts, key, iv) for ts in segment.tracks))
    finally:
        _scratch.release_large()


class SampleAesMuxer:
    """MPEG-TS segments with SAMPLE-AES: ``build`` encrypts a segment's samples (``encrypt_segment``), then muxes them
    with a ``TsMuxer(tracks, sample_aes=True)``. No scatter path (``prepare`` is None): encryption changes sizes."""

    def __init__(self, tracks: Sequence[Track], key: bytes, iv: bytes):
        from ..ts import TsMuxer  # imported here: the TS muxer imports this module for its PMT

        self.key, self.iv = _check(key, "key", "SampleAesMuxer"), _check(iv, "iv", "SampleAesMuxer")
        self.muxer = TsMuxer(tracks, sample_aes=True)
        self.tracks = self.muxer.tracks

    def build(self, segment: MediaSegment) -> bytes:
        return self.muxer.build(encrypt_segment(segment, self.key, self.iv))

    def prepare(self, index: int, tables) -> None:
        return None


def _check(value: bytes, name: str, func: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != BLOCK:  # keys come from the DRM service: BAD_DATA
        raise bad_data(f"{func}: the {name} must be 16 bytes")
    return bytes(value)


def _encrypt_track(ts: TrackSegment, key: bytes, iv: bytes) -> TrackSegment:
    codec = ts.track.codec.codec
    if ts.track.kind == "video" and codec == "h264":
        return _encrypt_video(ts, key, iv) if len(ts.samples) else ts
    if ts.track.kind == "audio" and codec == "aac":
        return _encrypt_audio(ts, key, iv) if len(ts.samples) else ts
    raise PackagerError(ErrorCode.UNSUPPORTED, f"encrypt_segment: SAMPLE-AES does not cover {codec} "
                        f"(track {ts.track.track_id} of {ts.track.source or 'media'})")


def _sizes(ts: TrackSegment) -> np.ndarray:
    sizes = ts.samples.sizes.astype(np.int64)
    if ts.payload_size != int(sizes.sum()):
        raise bad_data(f"encrypt_segment: {ts.track.kind} payload has {ts.payload_size} bytes, its samples "
                       f"{int(sizes.sum())}")
    return sizes


def _encrypt_audio(ts: TrackSegment, key: bytes, iv: bytes) -> TrackSegment:
    sizes = _sizes(ts)
    body, out = new_bytes(ts.payload_size)
    out[:] = np.frombuffer(ts.payload, dtype=np.uint8)
    n_blocks = np.maximum(sizes - AUDIO_CLEAR_LEADER, 0) // BLOCK
    first = np.cumsum(n_blocks) - n_blocks
    k = np.arange(int(n_blocks.sum())) - np.repeat(first, n_blocks)
    block_at = np.repeat(np.cumsum(sizes) - sizes + AUDIO_CLEAR_LEADER, n_blocks) + k * BLOCK
    encrypt_blocks(out, block_at, n_blocks, key, iv)
    del out
    return TrackSegment(ts.track, ts.samples, finished(body))


def _encrypt_video(ts: TrackSegment, key: bytes, iv: bytes) -> TrackSegment:
    nls = ts.track.codec.nal_length_size
    sizes = _sizes(ts)
    data = np.frombuffer(ts.payload, dtype=np.uint8)
    offsets, lengths, owner = avc.nal_units(data, np.cumsum(sizes) - sizes, sizes, nls)
    body = offsets + nls
    types = avc.nal_unit_types(data[np.minimum(body, len(data) - 1)])
    chosen = (lengths > MIN_ENCRYPTED_NAL) & ((types == ENCRYPTED_NAL_TYPES[0]) | (types == ENCRYPTED_NAL_TYPES[1]))
    if not chosen.any():
        return ts
    starts, lengths, owner = body[chosen], lengths[chosen], owner[chosen]
    ends = starts + lengths
    # the 1:9 pattern over the NAL unit as it is (its emulation prevention bytes included): block k at 32 + 160 k,
    # while more than 16 bytes follow its start
    out = _scratch.bytes_for(len(data))
    out[:] = data
    n_blocks = (lengths - MIN_ENCRYPTED_NAL + PATTERN - 1) // PATTERN
    first = np.cumsum(n_blocks) - n_blocks
    k = np.arange(int(n_blocks.sum())) - np.repeat(first, n_blocks)
    encrypt_blocks(out, np.repeat(starts + CLEAR_LEADER, n_blocks) + k * PATTERN, n_blocks, key, iv)
    # then emulation prevention over each encrypted NAL unit: its new length goes into its length prefix (still
    # where it was: the escapes are inserted last, in the one copy that joins the pieces)
    inserted = avc.emulation_prevention_insertions(out, starts, ends, _scratch.zero_pairs(out))
    new_len = lengths + np.searchsorted(inserted, ends, "right") - np.searchsorted(inserted, starts)
    if int(new_len.max()) >> (8 * nls):
        raise bad_data(f"encrypt_segment: an encrypted NAL unit of {int(new_len.max())} bytes does not fit a "
                       f"{nls}-byte length prefix in track {ts.track.track_id}")
    shifts = 8 * (nls - 1 - np.arange(nls))
    out[(starts - nls)[:, None] + np.arange(nls)] = (new_len[:, None] >> shifts) & 0xFF
    growth = np.bincount(owner, weights=new_len - lengths, minlength=len(sizes)).astype(np.int64)
    return TrackSegment(ts.track, _resized(ts.samples, sizes + growth), avc.with_escapes(out, inserted))


def _resized(samples: SampleTable, sizes: np.ndarray) -> SampleTable:
    return SampleTable(offsets=samples.offsets, sizes=sizes, dts=samples.dts, cts=samples.cts,
                       durations=samples.durations, keyframe=samples.keyframe)


class _Scratch(threading.local):
    """Per-thread work buffers, reused from segment to segment: a fresh multi-megabyte array costs a page fault per
    4 KB, more than the passes over it (as for the TS muxer's payload buffer). Nothing returned points into them."""

    def __init__(self) -> None:
        self.data, self.zero, self.pair = (np.empty(0, dtype=t) for t in (np.uint8, bool, bool))

    def bytes_for(self, size: int) -> np.ndarray:
        if size > len(self.data):
            self.data = np.empty(size, dtype=np.uint8)
        return self.data[:size]

    def zero_pairs(self, data: np.ndarray) -> np.ndarray:
        """Every i with data[i] == data[i + 1] == 0, sorted."""
        if len(data) > len(self.zero):
            self.zero, self.pair = np.empty(len(data), dtype=bool), np.empty(len(data), dtype=bool)
        zero, pair = self.zero[: len(data)], self.pair[: max(len(data) - 1, 0)]
        np.equal(data, 0, out=zero)
        np.logical_and(zero[:-1], zero[1:], out=pair)
        return np.flatnonzero(pair)

    def release_large(self) -> None:
        if len(self.data) > SCRATCH_KEEP:
            self.__init__()


_scratch = _Scratch()


# -------------------------------------------------------------------------------------------- PMT signalling
def pmt_stream(track: Track) -> tuple[int, bytes]:
    """(stream_type, ES descriptors) of an encrypted H.264 or AAC elementary stream (§3)."""
    if track.kind == "video" and track.codec.codec == "h264":
        return STREAM_TYPE_H264, private_data_indicator(b"zavc")
    if track.kind == "audio" and track.codec.codec == "aac":
        return STREAM_TYPE_AAC, private_data_indicator(b"aacd") + _registration(b"apad", audio_setup_information(track))
    raise PackagerError(ErrorCode.UNSUPPORTED, f"pmt_stream: SAMPLE-AES does not cover {track.codec.codec} "
                        f"(track {track.track_id} of {track.source or 'media'})")


def private_data_indicator(fourcc: bytes) -> bytes:
    return bytes([PRIVATE_DATA_INDICATOR_DESCRIPTOR, 4]) + fourcc


def _registration(format_identifier: bytes, additional: bytes) -> bytes:
    return bytes([REGISTRATION_DESCRIPTOR, 4 + len(additional)]) + format_identifier + additional


def audio_setup_information(track: Track) -> bytes:
    """audio_setup_information (§2.3.4) of an AAC track: audio_type ('zaac' AAC-LC, 'zach' HE-AAC, 'zacp'
    HE-AACv2), priming 0 (our PTS already start before 0 by the encoder delay: the edit list is applied, as in
    clear TS), version 1, and the AudioSpecificConfig."""
    asc = bytes(track.codec.extradata)
    where = f"track {track.track_id} of {track.source or 'media'}"
    config = parse_audio_specific_config(asc, where)
    if len(asc) > 255 - 4 - 8:
        raise bad_data(f"audio_setup_information: AudioSpecificConfig of {len(asc)} bytes in {where}")
    sbr = config.object_type == AOT_SBR or config.sample_rate != config.core_sample_rate
    audio_type = b"zacp" if config.object_type == AOT_PS else b"zach" if sbr else b"zaac"
    return audio_type + (0).to_bytes(2, "big") + bytes([AUDIO_SETUP_VERSION, len(asc)]) + asc
