"""The DRM info answer (nginx-vod-module's JSON) read by ``parse_drm_info``: what it accepts, what it refuses."""
from __future__ import annotations

import base64
import json

import pytest

from packagers.drm.keys import MAX_PSSH, WIDEVINE, ContentKey, MediaKeys, Pssh, drm_info_json, parse_drm_info
from packagers.errors import ErrorCode, PackagerError

VIDEO = ContentKey(bytes(range(16)), bytes(range(16, 32)), bytes(range(32, 48)), (Pssh(WIDEVINE, b"wv"),), "video")
AUDIO = ContentKey(bytes(16), bytes([1] * 16), track_type="audio")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_nginx_vod_module_answers_parse():
    text = json.dumps([{"key_id": b64(VIDEO.key_id), "key": b64(VIDEO.key), "iv": b64(VIDEO.iv),
                        "pssh": [{"uuid": "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed", "data": b64(b"wv")}],
                        "track_type": "video"},
                       {"key_id": b64(AUDIO.key_id), "key": b64(AUDIO.key), "track_type": "audio"}])
    keys = parse_drm_info(text)
    assert keys == MediaKeys((VIDEO, AUDIO)) and parse_drm_info(json.dumps(drm_info_json(keys))) == keys
    assert keys.for_kind("video") == VIDEO and keys.for_kind("audio") == AUDIO
    one = parse_drm_info(json.dumps({"key_id": b64(VIDEO.key_id), "key": b64(VIDEO.key)}))  # one object: one key
    assert one.for_kind("audio") == one.for_kind("video") and one.keys[0].iv is None


@pytest.mark.parametrize("answer", [
    "not json", "[]", "{}", json.dumps([{"key_id": b64(bytes(15)), "key": b64(bytes(16))}]),
    json.dumps([{"key_id": b64(bytes(16)), "key": "***"}]),
    json.dumps([{"key_id": b64(bytes(16)), "key": b64(bytes(16)), "track_type": "subtitles"}]),
    json.dumps([{"key_id": b64(bytes(16)), "key": b64(bytes(16)), "pssh": [{"uuid": "x", "data": ""}]}]),
    json.dumps([{"key_id": b64(bytes(16)), "key": b64(bytes(16)),
                 "pssh": [{"uuid": str(WIDEVINE), "data": ""}] * (MAX_PSSH + 1)}]),
    json.dumps([{"key_id": b64(bytes(16)), "key": b64(bytes(16))}] * 2),  # two keys, neither says its tracks
    "[" * 100_000 + "]" * 100_000,
])  # fmt: skip
def test_unusable_answers_are_bad_data(answer):
    with pytest.raises(PackagerError) as e:
        parse_drm_info(answer)
    assert e.value.code is ErrorCode.BAD_DATA and e.value.message.startswith(("parse_drm_info", "MediaKeys",
                                                                               "ContentKey"))
