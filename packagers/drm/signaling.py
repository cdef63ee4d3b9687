"""What manifests say about encryption: DASH ContentProtection (DASH-IF IOP §7.5) and the Smooth Streaming
ProtectionHeader (MS-SSTR §2.2.2.2) here; HLS's EXT-X-KEY lines are the HLS writer's (``packagers.hls.keys``).

``Protection`` is the one description every writer (and the segment builders) take: the scheme, the keys, the clear
lead and how HLS players get the key (``identity``: a key URI the gateway answers with the key itself, under the
signed URL; ``fairplay``: an ``skd://`` URI for the player's FairPlay key server). The DRM systems the keys' ``pssh``
name are announced too.
"""
from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..errors import ErrorCode, PackagerError
from .boxes import pssh
from .keys import CLEARKEY, PLAYREADY, WIDEVINE, ContentKey, MediaKeys

CENC_NS = "urn:mpeg:cenc:2013"
MSPR_NS = "urn:microsoft:playready"
MP4_PROTECTION = "urn:mpeg:dash:mp4protection:2011"
KEY_FORMATS = ("identity", "fairplay")
_DASH_VALUES = {WIDEVINE: "Widevine", PLAYREADY: "MSPR 2.0", CLEARKEY: "ClearKey1.0"}

ET.register_namespace("cenc", CENC_NS)
ET.register_namespace("mspr", MSPR_NS)


@dataclass(frozen=True)
class Protection:
    """How a media set is encrypted, for its manifests and segments."""

    scheme: str  # cenc | cbcs (fMP4), sample-aes (MPEG-TS)
    keys: MediaKeys
    clear_lead: int = 0  # the first segments of every rendition stay clear
    key_format: str = "identity"  # how HLS players get the key: identity | fairplay
    clearkey: bool = False  # the gateway licenses the keys itself (W3C ClearKey): DASH announces the system

    def encrypted(self, index: int) -> bool:
        """Whether 0-based segment ``index`` is encrypted."""
        return index >= self.clear_lead

    def segment_key(self, kinds: set[str]) -> ContentKey:
        """The key of a segment with tracks of ``kinds``: its video's, else its audio's. MPEG-TS carries audio and
        video in one segment under one key: a set whose audio and video keys differ is refused there."""
        key = self.keys.for_kind("video" if "video" in kinds else "audio")
        if self.scheme == "sample-aes" and {"video", "audio"} <= kinds and self.keys.for_kind("audio") != key:
            raise PackagerError(ErrorCode.UNSUPPORTED, "Protection.segment_key: SAMPLE-AES MPEG-TS carries audio and "
                                "video under one key; the DRM service gave them different keys (use fMP4: cbcs)")
        return key

    def aux_bound(self, track) -> int:
        """``TrackProtection.aux_bound`` of ``track`` under this protection (0 for SAMPLE-AES: no fMP4 aux info)."""
        if self.scheme == "sample-aes":
            return 0
        from .cenc import TrackProtection

        return TrackProtection.of(track, self.scheme, self.keys.for_kind(track.kind)).aux_bound

    @property
    def cache_key(self) -> tuple:
        """What the bytes depend on: cached products of differently protected sets never mix. The keys themselves
        count (a digest: a DRM service may rotate a key and keep its id), not only their ids."""
        keys = hashlib.sha256(b"".join(k.key_id + k.key + (k.iv or b"") for k in self.keys.keys)).hexdigest()[:32]
        return (self.scheme, keys, self.clear_lead, self.key_format, self.clearkey)


def sample_aes_iv(key: ContentKey) -> bytes:
    """The IV of MPEG-TS SAMPLE-AES (stated by the playlist's IV attribute): the key's, or derived from its id."""
    return key.iv or hashlib.sha256(b"sample-aes-iv:" + key.key_id).digest()[:16]


def dash_content_protection(adaptation: ET.Element, protection: Protection, kind: str) -> None:
    """The ContentProtection descriptors of an AdaptationSet of ``kind``, first among its children as the schema
    orders them: mp4protection with the default KID, then one per DRM system with its pssh box."""
    key = protection.keys.for_kind(kind)
    elements = [ET.Element("ContentProtection", {"schemeIdUri": MP4_PROTECTION, "value": protection.scheme,
                                                 f"{{{CENC_NS}}}default_KID": key.kid_uuid})]
    systems = list(key.pssh)
    for system in systems:
        element = ET.Element("ContentProtection", {"schemeIdUri": f"urn:uuid:{system.system_id}",
                                                   "value": _DASH_VALUES.get(system.system_id, system.system_name)})
        box = pssh(system.system_id, system.data)
        ET.SubElement(element, f"{{{CENC_NS}}}pssh").text = base64.b64encode(box).decode()
        if system.system_id == PLAYREADY:
            ET.SubElement(element, f"{{{MSPR_NS}}}pro").text = base64.b64encode(system.data).decode()
        elements.append(element)
    if protection.clearkey and not any(s.system_id == CLEARKEY for s in systems):
        elements.append(ET.Element("ContentProtection", {"schemeIdUri": f"urn:uuid:{CLEARKEY}",
                                                         "value": _DASH_VALUES[CLEARKEY]}))
    for i, element in enumerate(elements):
        adaptation.insert(i, element)


def playready_header(protection: Protection, kind: str) -> str | None:
    """Smooth Streaming's ProtectionHeader content (the PlayReady Object, base64), when a key of ``kind`` has a
    PlayReady pssh; None otherwise (Smooth clients know no other system)."""
    system = protection.keys.for_kind(kind).system(PLAYREADY)
    return base64.b64encode(system.data).decode() if system is not None else None

