"""HLS key tags of protected media: EXT-X-KEY (RFC 8216 §4.3.2.4) and EXT-X-SESSION-KEY (§4.3.4.5).

SAMPLE-AES (MPEG-TS, with an explicit IV) and cbcs fMP4 are METHOD=SAMPLE-AES, cenc fMP4 is SAMPLE-AES-CTR. The
key comes by the identity key format (a ``key-<key id>.key`` URI the gateway answers) or FairPlay (``skd://``); for
fMP4, every DRM system of the key's pssh (Widevine, PlayReady) gets a line of its own with its init data.
"""
from __future__ import annotations

import base64

from ..drm.boxes import pssh
from ..drm.keys import PLAYREADY, WIDEVINE, ContentKey
from ..drm.signaling import Protection, sample_aes_iv
from .names import key_name

METHODS = {"sample-aes": "SAMPLE-AES", "cbcs": "SAMPLE-AES", "cenc": "SAMPLE-AES-CTR"}
_KEY_FORMATS = {WIDEVINE: f"urn:uuid:{WIDEVINE}", PLAYREADY: "com.microsoft.playready"}


def key_lines(protection: Protection, key: ContentKey, iv: bytes | None = None, session: bool = False) -> list[str]:
    """The EXT-X-KEY (or, for a master playlist, EXT-X-SESSION-KEY) lines of ``key``: the identity or FairPlay
    line, then one per DRM system of the key's pssh (Widevine, PlayReady) for fMP4. ``iv``: an explicit IV (MPEG-TS
    SAMPLE-AES; fMP4 carries its IVs in the segments)."""
    tag = "#EXT-X-SESSION-KEY:" if session else "#EXT-X-KEY:"
    method = METHODS[protection.scheme]
    iv_attr = f",IV=0x{iv.hex()}" if iv is not None else ""
    if protection.key_format == "fairplay":
        lines = [f'{tag}METHOD={method},URI="skd://{key.key_id.hex()}"{iv_attr},'
                 'KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"']
    else:
        uri = key_name(key.key_id)
        lines = [f'{tag}METHOD={method},URI="{uri}"{iv_attr},KEYFORMAT="identity",KEYFORMATVERSIONS="1"']
    if protection.scheme == "sample-aes":
        return lines  # DRM systems other than FairPlay do not take MPEG-TS
    for system in key.pssh:
        key_format = _KEY_FORMATS.get(system.system_id)
        if key_format is None:
            continue
        if system.system_id == PLAYREADY:
            uri = "data:text/plain;charset=UTF-16;base64," + base64.b64encode(system.data).decode()
        else:
            uri = "data:text/plain;base64," + base64.b64encode(pssh(system.system_id, system.data)).decode()
        lines.append(f'{tag}METHOD={method},URI="{uri}",KEYID=0x{key.key_id.hex()},KEYFORMAT="{key_format}",'
                     'KEYFORMATVERSIONS="1"')
    return lines


def session_key_lines(protection: Protection) -> list[str]:
    """EXT-X-SESSION-KEY lines for every key of the set (§4.3.4.5: players may load keys before a variant)."""
    lines: list[str] = []
    for key in protection.keys.keys:
        iv = sample_aes_iv(key) if protection.scheme == "sample-aes" else None
        lines += key_lines(protection, key, iv, session=True)
    return list(dict.fromkeys(lines))
