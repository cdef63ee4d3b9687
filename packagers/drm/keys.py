"""The keys a media set is encrypted with, in nginx-vod-module's DRM info format.

A DRM info service answers a JSON array ``[{"key_id": b64, "key": b64, "iv": b64?, "pssh": [{"uuid": ..., "data":
b64}]}]`` (nginx-vod-module's ``vod_drm_upstream`` answer). One item protects every track; with several items, an
item may say which rendition type it protects with ``"track_type": "video" | "audio"`` (our extension for a key
per rendition type: studios often want audio and video under different keys), and an item without one protects
the tracks no other item claims.
"""
from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field

from ..errors import bad_data

# DRM system ids (DASH-IF identifiers registry)
WIDEVINE = uuid.UUID("edef8ba9-79d6-4ace-a3c8-27dcd51d21ed")
PLAYREADY = uuid.UUID("9a04f079-9840-4286-ab92-e65be0885f95")
FAIRPLAY = uuid.UUID("94ce86fb-07ff-4f43-adb8-93d2fa968ca2")
CLEARKEY = uuid.UUID("e2719d58-a985-b3c9-781a-b030af78d30e")  # DASH-IF ClearKey (MPD ContentProtection)
COMMON = uuid.UUID("1077efec-c0b2-4d02-ace3-3c1e52e2fb4b")  # W3C Common PSSH: key ids only, what ClearKey CDMs read
SYSTEM_NAMES = {WIDEVINE: "widevine", PLAYREADY: "playready", FAIRPLAY: "fairplay", CLEARKEY: "clearkey",
                COMMON: "common"}

TRACK_TYPES = ("video", "audio")
MAX_ANSWER_BYTES = 1024 * 1024  # a DRM info answer is a few KB; anything near this is not one
MAX_KEYS = 16
MAX_PSSH = 16  # DRM systems per key: a handful in practice; each lands in init segments and manifests


@dataclass(frozen=True)
class Pssh:
    """A DRM system's initialisation data: the payload of its ``pssh`` box (ISO 23001-7 §8.1)."""

    system_id: uuid.UUID
    data: bytes

    @property
    def system_name(self) -> str:
        return SYSTEM_NAMES.get(self.system_id, str(self.system_id))


@dataclass(frozen=True)
class ContentKey:
    """One AES-128 content key: its 16-byte key id (KID), the key, an optional 16-byte IV (the constant IV of
    'cbcs' and SAMPLE-AES; derived per segment when absent) and the DRM systems' init data."""

    key_id: bytes
    key: bytes = field(repr=False)
    iv: bytes | None = None
    pssh: tuple[Pssh, ...] = ()
    track_type: str | None = None  # None: every track no other key claims

    def __post_init__(self) -> None:
        if len(self.key_id) != 16 or len(self.key) != 16:
            raise bad_data(f"ContentKey: key_id and key must be 16 bytes, got {len(self.key_id)} and {len(self.key)}")
        if self.iv is not None and len(self.iv) != 16:
            raise bad_data(f"ContentKey: iv must be 16 bytes, got {len(self.iv)}")
        if self.track_type not in (None, *TRACK_TYPES):
            raise bad_data(f"ContentKey: track_type must be video or audio, got {self.track_type!r}")

    @property
    def kid_uuid(self) -> str:
        """The KID as DASH writes it (``cenc:default_KID``): a UUID string."""
        return str(uuid.UUID(bytes=self.key_id))

    def system(self, system_id: uuid.UUID) -> Pssh | None:
        return next((p for p in self.pssh if p.system_id == system_id), None)


@dataclass(frozen=True)
class MediaKeys:
    """The keys of one media set: which key encrypts a track of a kind."""

    keys: tuple[ContentKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise bad_data("MediaKeys: no key")
        claimed = [k.track_type for k in self.keys if k.track_type]
        if len(set(claimed)) != len(claimed):
            raise bad_data("MediaKeys: two keys claim the same track type")
        if len(self.keys) > 1 and sum(k.track_type is None for k in self.keys) > 1:
            raise bad_data("MediaKeys: several keys and more than one without a track_type")

    def for_kind(self, kind: str) -> ContentKey:
        """The key of a track of ``kind`` ("video", "audio"; text tracks are not encrypted)."""
        claimed = next((k for k in self.keys if k.track_type == kind), None)
        return claimed or next((k for k in self.keys if k.track_type is None), self.keys[0])

    @property
    def key_ids(self) -> tuple[bytes, ...]:
        return tuple(k.key_id for k in self.keys)

    def pssh(self) -> tuple[Pssh, ...]:
        """Every DRM system's init data once (in the order the keys list them)."""
        return tuple(dict.fromkeys(p for k in self.keys for p in k.pssh))

    def by_key_id(self, key_id: bytes) -> ContentKey | None:
        return next((k for k in self.keys if k.key_id == key_id), None)


def _b64(value: object, where: str, sizes: tuple[int, ...] | None = None) -> bytes:
    if not isinstance(value, str):
        raise bad_data(f"parse_drm_info: {where} must be a base64 string, got {type(value).__name__}")
    try:
        data = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_" if "-" in value or "_" in value
                                else None, validate=True)
    except (binascii.Error, ValueError):
        raise bad_data(f"parse_drm_info: {where} is not base64") from None
    if sizes is not None and len(data) not in sizes:
        raise bad_data(f"parse_drm_info: {where} must be {' or '.join(map(str, sizes))} bytes, got {len(data)}")
    return data


def _pssh(item: object, where: str) -> Pssh:
    if not isinstance(item, dict):
        raise bad_data(f"parse_drm_info: {where} must be an object")
    try:
        system_id = uuid.UUID(str(item.get("uuid")))
    except ValueError:
        raise bad_data(f"parse_drm_info: {where}.uuid is not a UUID: {item.get('uuid')!r}") from None
    return Pssh(system_id, _b64(item.get("data"), f"{where}.data"))


def parse_drm_info(answer: bytes | str) -> MediaKeys:
    """A DRM info service's answer → MediaKeys; BAD_DATA with a one-line reason for anything else."""
    if len(answer) > MAX_ANSWER_BYTES:
        raise bad_data(f"parse_drm_info: answer of {len(answer)} bytes is too large")
    try:
        items = json.loads(answer)
    except (ValueError, RecursionError) as e:
        raise bad_data(f"parse_drm_info: not JSON: {str(e)[:80]}") from None
    if isinstance(items, dict):  # a single object is accepted as a one-item array
        items = [items]
    if not isinstance(items, list) or not items or len(items) > MAX_KEYS:
        raise bad_data(f"parse_drm_info: expected an array of 1 to {MAX_KEYS} keys")
    keys = []
    for i, item in enumerate(items):
        where = f"[{i}]"
        if not isinstance(item, dict):
            raise bad_data(f"parse_drm_info: {where} must be an object")
        iv = item.get("iv")
        pssh = item.get("pssh", [])
        if not isinstance(pssh, list) or len(pssh) > MAX_PSSH:
            raise bad_data(f"parse_drm_info: {where}.pssh must be an array of at most {MAX_PSSH}")
        key_id, key = _b64(item.get("key_id"), f"{where}.key_id", (16,)), _b64(item.get("key"), f"{where}.key", (16,))
        keys.append(ContentKey(key_id, key, None if iv in (None, "") else _b64(iv, f"{where}.iv", (16,)),
                               tuple(_pssh(p, f"{where}.pssh[{j}]") for j, p in enumerate(pssh)),
                               item.get("track_type")))
    return MediaKeys(tuple(keys))


def drm_info_json(keys: MediaKeys) -> list[dict]:
    """MediaKeys in the DRM info format (what a test service answers; ``parse_drm_info`` reads it back)."""
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return [{"key_id": b64(k.key_id), "key": b64(k.key), **({"iv": b64(k.iv)} if k.iv else {}),
             "pssh": [{"uuid": str(p.system_id), "data": b64(p.data)} for p in k.pssh],
             **({"track_type": k.track_type} if k.track_type else {})} for k in keys.keys]
