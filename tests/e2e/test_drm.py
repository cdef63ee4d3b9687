"""Content protection through a real `gateway serve` (issue 14): keys derived or from a real DRM info service,
checked by independent decryptors.

The gateway runs as a subprocess over a store whose catalog is written with the operator CLI; the DRM info service
is the test service of tests/gateway/drm_service.py, run in a thread. Decryptors: FFmpeg 8.1's mov demuxer (PyAV,
``decryption_key``) for Common Encryption, whose decrypted packets must equal the source MP4's samples byte for
byte; Debian's ffmpeg 5.1 CLI HLS demuxer for SAMPLE-AES MPEG-TS, whose decoded frames must equal the source's.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urljoin

import av
import m3u8
import pytest
from pymp4.parser import Box

from fixtures.generate import fixture_path
from packagers.drm.keys import PLAYREADY, WIDEVINE, ContentKey, MediaKeys, Pssh
from tests.gateway.drm_service import DrmService
from tests.needs import require_executable

from .conftest import start_gateway
from .test_delivery import gateway_cli

SOURCE = "title_180p.mp4"
TAIL_FRAMES = 2  # the last packet (a P frame) and the B frame presented before it
MPD_NS = {"d": "urn:mpeg:dash:schema:mpd:2011", "cenc": "urn:mpeg:cenc:2013"}
VIDEO_KEY = ContentKey(bytes.fromhex("11" * 16), bytes.fromhex("a1" * 16), pssh=(
    Pssh(WIDEVINE, b"\x12\x10" + bytes.fromhex("11" * 16)), Pssh(PLAYREADY, b"<WRMHEADER>video</WRMHEADER>")),
    track_type="video")
AUDIO_KEY = ContentKey(bytes.fromhex("22" * 16), bytes.fromhex("a2" * 16), pssh=(Pssh(WIDEVINE, b"audio"),),
                       track_type="audio")
ONE_KEY = ContentKey(bytes.fromhex("33" * 16), bytes.fromhex("a3" * 16))
# entry → (file, partner); every entry has its own copy of the source: a file belongs to one partner's rules
ENTRIES = {
    "0_derived1": ("derived.mp4", 301),
    "0_service1": ("service.mp4", 302),
    "0_saes0001": ("saes.mp4", 303),
    "0_failing1": ("failing.mp4", 304),
    "0_hanging1": ("hanging.mp4", 304),
    "0_badkid01": ("badkeyid.mp4", 304),
    "0_hevcsae1": ("hevc_saes.mp4", 303),  # SAMPLE-AES asked, HEVC: cbcs fMP4 given
}
SOURCES = {"hevc_saes.mp4": "hevc.mp4"}  # the others are copies of SOURCE


class ServiceThread:
    """The test DRM info service on its own event loop thread (the gateway is another process)."""

    def __init__(self, keys: dict[str, MediaKeys]):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.service: DrmService = self._run(self._start(keys))

    async def _start(self, keys):
        return await DrmService(keys).__aenter__()

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def close(self) -> None:
        self._run(self.service.close())
        self.loop.call_soon_threadsafe(self.loop.stop)


def fetch(url: str, data: bytes | None = None) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get(url: str) -> bytes:
    status, _, body = fetch(url)
    assert status == 200, (url, status, body[:300])
    return body


@pytest.fixture(scope="module")
def drm_service():
    thread = ServiceThread({"0_service1": MediaKeys((VIDEO_KEY, AUDIO_KEY)),
                            **{e: MediaKeys((ONE_KEY,)) for e in ("0_failing1", "0_hanging1", "0_badkid01")}})
    thread.service.modes.update({"0_failing1": "error", "0_hanging1": "hang", "0_badkid01": "short_kid"})
    yield thread.service
    thread.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory, drm_service) -> Path:
    root = tmp_path_factory.mktemp("drm-store")
    for name, _ in ENTRIES.values():
        shutil.copyfile(fixture_path(SOURCES.get(name, SOURCE)), root / name)
    cli = lambda *args: gateway_cli(root, *args)  # noqa: E731
    for partner in (301, 302, 303, 304):
        cli("partners", "add", str(partner), "--name", f"drm {partner}")
    cli("partners", "set-profile", "301", "dash", "encryption=cenc")
    cli("partners", "set-profile", "301", "hls", "encryption=cbcs")
    cli("partners", "set-drm", "302", f"service_url={drm_service.url}", "ttl_s=600")
    cli("partners", "set-profile", "302", "dash", "encryption=cbcs")
    cli("partners", "set-profile", "302", "hls", "encryption=cenc")
    cli("partners", "set-profile", "302", "mss", "encryption=cenc")
    cli("partners", "set-drm", "303", "clear_lead_segments=1")
    cli("partners", "set-profile", "303", "hls", "encryption=sample-aes")
    cli("partners", "set-profile", "303", "dash", "encryption=cenc")
    cli("partners", "set-drm", "304", f"service_url={drm_service.url}", "timeout_s=1", "ttl_s=600")
    cli("partners", "set-profile", "304", "dash", "encryption=cenc")
    cli("partners", "set-profile", "304", "hls", "encryption=cbcs")
    for entry, (name, partner) in ENTRIES.items():
        cli("entries", "add", entry, "--partner", str(partner), "--name", entry, "--flavor", name)
    return root


@pytest.fixture(scope="module")
def base(store):
    proc, url = start_gateway(store, store.parent / "drm.log", "--catalog-ttl", "0", "--segment-duration", "6")
    yield url
    proc.terminate()
    proc.wait(10)


def source_packets(kind: str, source: str = SOURCE) -> list[bytes]:
    with av.open(str(fixture_path(source))) as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        return [bytes(p) for p in c.demux(stream) if p.size]


def decrypted_packets(blob: bytes, key: bytes) -> list[bytes]:
    """FFmpeg 8.1's mov demuxer decrypting Common Encryption: the packets as the source had them."""
    with av.open(io.BytesIO(blob), options={"decryption_key": key.hex()}) as c:
        return [bytes(p) for p in c.demux(c.streams[0]) if p.size]


def license_key(base: str, partner: int, entry: str, kid: bytes) -> bytes:
    """The key a ClearKey CDM gets: the license URL from playManifest's JSON, then a W3C license request."""
    decision = json.loads(get(f"{base}/p/{partner}/playManifest/entryId/{entry}/format/mpegdash/a.mpd"
                              "?responseFormat=json"))
    assert decision["drm"]["keySource"] == "derived"
    request = json.dumps({"kids": [base64.urlsafe_b64encode(kid).rstrip(b"=").decode()], "type": "temporary"})
    answer = json.loads(get_post(urljoin(base, decision["drm"]["licenseUrl"]), request.encode()))
    (found,) = answer["keys"]
    assert found["kty"] == "oct" and base64.urlsafe_b64decode(found["kid"] + "==") == kid
    return base64.urlsafe_b64decode(found["k"] + "==")


def get_post(url: str, body: bytes) -> bytes:
    status, _, answer = fetch(url, body)
    assert status == 200, (status, answer)
    return answer


def dash_representations(mpd: bytes) -> list[tuple[str, str, int, str]]:
    """(kind, representation id, fragment count, default KID) of every audio and video Representation."""
    root = ET.fromstring(mpd)
    out = []
    for adaptation in root.iter(f"{{{MPD_NS['d']}}}AdaptationSet"):
        kind = adaptation.get("contentType")
        protection = adaptation.find("d:ContentProtection[@schemeIdUri='urn:mpeg:dash:mp4protection:2011']", MPD_NS)
        kid = protection.get(f"{{{MPD_NS['cenc']}}}default_KID")
        for rep in adaptation.iter(f"{{{MPD_NS['d']}}}Representation"):
            count = sum(1 + int(s.get("r", 0)) for s in rep.iter(f"{{{MPD_NS['d']}}}S"))
            out.append((kind, rep.get("id"), count, kid))
    return out


def dash_stream(base: str, name: str, rep: str, count: int) -> tuple[bytes, list[bytes]]:
    init = get(f"{base}/dash/{name}/init-{rep}.mp4")
    return init, [get(f"{base}/dash/{name}/fragment-{n}-{rep}.m4s") for n in range(1, count + 1)]


def test_dash_cenc_with_derived_keys_decrypts_to_the_source_samples(base):
    mpd = get(f"{base}/dash/derived.mp4/manifest.mpd")
    assert b"urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e" in mpd  # the ClearKey system: keys licensed here
    reps = dash_representations(mpd)
    assert {kind for kind, *_ in reps} == {"video", "audio"}
    for kind, rep, count, kid in reps:
        key = license_key(base, 301, "0_derived1", uuid.UUID(kid).bytes)
        init, fragments = dash_stream(base, "derived.mp4", rep, count)
        assert decrypted_packets(init + b"".join(fragments), key) == source_packets(kind)
        # @bandwidth bounds the encrypted fragments too (their senc, saiz and saio included)
        element = ET.fromstring(mpd).find(f".//d:Representation[@id='{rep}']", MPD_NS)
        timescale = int(element.find("d:SegmentTemplate", MPD_NS).get("timescale"))
        spans = [int(s.get("d")) for s in element.iter(f"{{{MPD_NS['d']}}}S") for _ in range(1 + int(s.get("r", 0)))]
        peak = max(len(f) * 8 * timescale / d for f, d in zip(fragments, spans))
        assert peak <= int(element.get("bandwidth"))
        assert b"senc" in fragments[0] and source_packets(kind)[5] not in fragments[0]  # ciphertext, not samples


def test_hls_cbcs_with_an_identity_key_decrypts_to_the_source_samples(base):
    master = m3u8.loads(get(f"{base}/hls/derived.mp4/master.m3u8").decode())
    assert [k.method for k in master.session_keys] == ["SAMPLE-AES"]
    playlists = [p.uri for p in master.playlists] + [m.uri for m in master.media if m.uri]
    for uri, kind in zip(playlists, ("video", "audio")):
        playlist = m3u8.loads(get(f"{base}/hls/derived.mp4/{uri}").decode())
        (key,) = playlist.keys
        assert (key.method, key.keyformat, key.iv) == ("SAMPLE-AES", "identity", None)
        raw_key = get(f"{base}/hls/derived.mp4/{key.uri}")
        init = get(f"{base}/hls/derived.mp4/{playlist.segment_map[0].uri}")
        segments = [get(f"{base}/hls/derived.mp4/{s.uri}") for s in playlist.segments]
        assert decrypted_packets(init + b"".join(segments), raw_key) == source_packets(kind)


def test_service_keys_per_rendition_type_with_their_drm_systems(base, drm_service):
    asked = drm_service.requests
    mpd = get(f"{base}/dash/service.mp4/manifest.mpd")
    root = ET.fromstring(mpd)
    reps = dash_representations(mpd)
    kids = {kind: uuid.UUID(kid).bytes for kind, _, _, kid in reps}
    assert kids == {"video": VIDEO_KEY.key_id, "audio": AUDIO_KEY.key_id}
    assert b"e2719d58" not in mpd  # keys of a DRM service: no ClearKey system announced
    video_set = next(a for a in root.iter(f"{{{MPD_NS['d']}}}AdaptationSet") if a.get("contentType") == "video")
    systems = {c.get("schemeIdUri"): c for c in video_set.findall("d:ContentProtection", MPD_NS)}
    for system in VIDEO_KEY.pssh:
        box = Box.parse(base64.b64decode(systems[f"urn:uuid:{system.system_id}"].find("cenc:pssh", MPD_NS).text))
        assert (box.system_ID, box.init_data) == (system.system_id, system.data)
    for kind, rep, count, _ in reps:
        key = VIDEO_KEY if kind == "video" else AUDIO_KEY
        init, fragments = dash_stream(base, "service.mp4", rep, count)
        in_init = {Box.parse(init[m.start() - 4:]).system_ID for m in re.finditer(b"pssh", init)}
        assert {p.system_id for p in key.pssh} <= in_init
        assert decrypted_packets(init + b"".join(fragments), key.key) == source_packets(kind)
        with av.logging.Capture():  # the other rendition type's key does not open it
            try:
                wrong = decrypted_packets(init + b"".join(fragments), (AUDIO_KEY if kind == "video" else VIDEO_KEY).key)
            except av.FFmpegError:
                wrong = []
        assert wrong != source_packets(kind)
    # HLS-fMP4 'cenc': SAMPLE-AES-CTR with a Widevine key line per playlist, session keys for both keys
    master = get(f"{base}/hls/service.mp4/master.m3u8").decode()
    assert master.count("#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES-CTR") >= 2
    video_playlist = get(f"{base}/hls/service.mp4/index-v1.m3u8").decode()
    assert f"KEYID=0x{VIDEO_KEY.key_id.hex()},KEYFORMAT=\"urn:uuid:{WIDEVINE}\"" in video_playlist
    # Smooth Streaming: PlayReady's header in the manifest, PIFF sample encryption in the fragments
    manifest = get(f"{base}/mss/service.mp4/manifest").decode()
    header = ET.fromstring(manifest).find("Protection/ProtectionHeader")
    assert header.get("SystemID") == str(PLAYREADY)
    assert base64.b64decode(header.text) == VIDEO_KEY.system(PLAYREADY).data
    # every request above was answered from one service call (cached per entry for ttl_s)
    assert drm_service.requests - asked <= 1
    call = drm_service.calls[-1]
    assert (call.method, call.query.get("entry_id"), call.query.get("partner_id")) == ("GET", "0_service1", "302")


def test_smooth_streaming_cenc_fragments_decrypt_with_piff_sample_encryption(base):
    """Smooth clients make the init segment from the manifest (its ProtectionHeader gives the key id): here our
    own init writer stands in for that client, and FFmpeg decrypts the fragments by their PIFF boxes."""
    from packagers.drm.cenc import TrackProtection
    from packagers.fmp4 import build_init_segment
    from packagers.mp4 import open_presentation

    manifest = ET.fromstring(get(f"{base}/mss/service.mp4/manifest"))
    video = next(s for s in manifest.findall("StreamIndex") if s.get("Type") == "video")
    bitrate, t, fragments = video.find("QualityLevel").get("Bitrate"), int(video.find("c").get("t")), []
    for chunk in video.findall("c"):
        url = video.get("Url").replace("{bitrate}", bitrate).replace("{start time}", str(t))
        fragments.append(get(f"{base}/mss/service.mp4/{url}"))
        t += int(chunk.get("d"))
    assert all(bytes.fromhex("a2394f525a9b4f14a2446c427c648df4") in f and b"senc" not in f for f in fragments)
    track = open_presentation(fixture_path(SOURCE)).video_tracks[0]
    init = build_init_segment([track], [TrackProtection.of(track, "cenc", VIDEO_KEY)])
    assert decrypted_packets(init + b"".join(fragments), VIDEO_KEY.key) == source_packets("video")


def test_sample_aes_ts_with_a_clear_lead_plays_in_ffmpeg(base, tmp_path):
    """FFmpeg's HLS demuxer (5.1 and 8.1 alike) crashes when a playlist's first segment is clear and a later one
    SAMPLE-AES (it sets up decryption from the first segment only): the clear lead is decoded on its own and the
    encrypted rest through a playlist of its own, and together they must give every frame of the source."""
    ffmpeg = require_executable("ffmpeg")
    url = f"{base}/hls/saes.mp4/index-v1-a1.m3u8"
    lines = get(url).decode().splitlines()
    key_at = next(i for i, line in enumerate(lines) if line.startswith("#EXT-X-KEY"))
    first = lines.index(next(line for line in lines if line.startswith("seg-1")))
    assert first < key_at  # segment 1 is clear: the key applies from segment 2
    assert re.match(r'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="key-[0-9a-f]{32}\.key",IV=0x[0-9a-f]{32},'
                    r'KEYFORMAT="identity"', lines[key_at])
    segment_1, segment_2 = get(urljoin(url, "seg-1-v1-a1.ts")), get(urljoin(url, "seg-2-v1-a1.ts"))
    assert stream_types(segment_1) == {0x1B, 0x0F} and stream_types(segment_2) == {0xDB, 0xCF}
    rest = tmp_path / "encrypted.m3u8"  # the playlist from the key on, with absolute URIs
    absolute = [re.sub(r'URI="([^"]+)"', lambda m: f'URI="{urljoin(url, m.group(1))}"', line)
                if line.startswith("#EXT-X-KEY") else urljoin(url, line) if line and not line.startswith("#") else line
                for line in lines[key_at:]]
    rest.write_text("\n".join(["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:7", *absolute]) + "\n")

    def frames(source: str, *options: str) -> list[str]:
        out = subprocess.run([ffmpeg, "-v", "error", *options, "-i", source, "-map", "0:v", "-f", "framemd5", "-"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-500:]
        return [line.split(",")[-1] for line in out.stdout.splitlines() if not line.startswith("#")]

    reference = frames(str(fixture_path(SOURCE)))
    lead = frames(urljoin(url, "seg-1-v1-a1.ts"))
    encrypted = frames(str(rest), "-protocol_whitelist", "file,http,tcp", "-allowed_extensions", "ALL")
    assert lead and encrypted and len(lead + encrypted) == len(reference)
    # ffmpeg never decrypts a stream's last video packet (its parser flushes it after the segment's decryption
    # context is gone): the frames presented from it on differ; tests/packagers/test_sample_aes.py checks its bytes
    assert (lead + encrypted)[:-TAIL_FRAMES] == reference[:-TAIL_FRAMES]


def stream_types(ts: bytes) -> set[int]:
    """The elementary stream types of a TS segment's PMT (read here, independent of the muxer)."""
    for at in range(0, len(ts), 188):
        packet = ts[at : at + 188]
        pid = (packet[1] & 0x1F) << 8 | packet[2]
        if pid not in (0, 0x1FFF) and packet[1] & 0x40 and packet[5] == 0x02:  # a PMT section starts here
            section = packet[5:]
            length = (section[1] & 0x0F) << 8 | section[2]
            pos, end, types = 12 + ((section[10] & 0x0F) << 8 | section[11]), 3 + length - 4, set()
            while pos < end:
                types.add(section[pos])
                pos += 5 + ((section[pos + 3] & 0x0F) << 8 | section[pos + 4])
            return types
    raise AssertionError("no PMT")


def test_sample_aes_for_hevc_is_cbcs_in_fmp4(base):
    """SAMPLE-AES MPEG-TS is defined for H.264 only; Apple's SAMPLE-AES for HEVC is cbcs fMP4 (same playlist method)."""
    playlist = m3u8.loads(get(f"{base}/hls/hevc_saes.mp4/index-v1.m3u8").decode())
    (key,) = [k for k in playlist.keys if k]  # (None: the clear lead's segment)
    assert (key.method, key.keyformat, key.iv) == ("SAMPLE-AES", "identity", None) and playlist.segment_map
    init = get(f"{base}/hls/hevc_saes.mp4/{playlist.segment_map[0].uri}")
    assert b"encv" in init and b"cbcs" in init and b"hvc1" in init
    segments = [get(f"{base}/hls/hevc_saes.mp4/{s.uri}") for s in playlist.segments]
    raw_key = get(f"{base}/hls/hevc_saes.mp4/{key.uri}")
    assert decrypted_packets(init + b"".join(segments), raw_key) == source_packets("video", "hevc.mp4")


def test_dash_clear_lead_fragments_use_the_clear_sample_entry(base):
    mpd = get(f"{base}/dash/saes.mp4/manifest.mpd")
    kind, rep, count, kid = next(r for r in dash_representations(mpd) if r[0] == "video")
    init, fragments = dash_stream(base, "saes.mp4", rep, count)
    assert init.count(b"avc1") >= 2 and b"encv" in init  # the encrypted entry, then the clear one
    assert b"senc" not in fragments[0] and all(b"senc" in f for f in fragments[1:])
    key = license_key(base, 303, "0_saes0001", uuid.UUID(kid).bytes)
    assert decrypted_packets(init + b"".join(fragments), key) == source_packets(kind)


@pytest.mark.parametrize("path", ["dash/{}/manifest.mpd", "dash/{}/init-v1.mp4", "dash/{}/fragment-1-v1.m4s",
                                  "hls/{}/master.m3u8", "hls/{}/index-v1.m3u8", "hls/{}/seg-1-v1.m4s"])
def test_a_failing_or_hanging_service_is_a_503_never_clear_media(base, path):
    for name in ("failing.mp4", "hanging.mp4"):
        started = time.monotonic()
        status, headers, body = fetch(f"{base}/{path.format(name)}")
        assert (status, headers.get("Cache-Control")) == (503, "no-store"), body
        assert b"DRM_UNAVAILABLE" in body and len(body) < 1000
        assert time.monotonic() - started < 30  # the 1-s service timeout, not the player's


def test_a_wrong_key_id_from_the_service_is_a_500_with_a_clear_log_line(base, store):
    status, _, body = fetch(f"{base}/dash/badkeyid.mp4/manifest.mpd")
    assert status == 500 and b"DRM_ERROR" in body
    log = (store.parent / "drm.log").read_text()
    # the answer's log line ("<request> → 500: <reason>"), not the start-up banner's URL of the entry, whose port
    # may contain "500" (CI: :50087)
    line = next(line for line in log.splitlines() if "badkeyid" in line and "→ 500" in line)
    assert "partner 304" in line and "0_badkid01" in line and "key_id" in line


def test_failures_are_not_cached(base, drm_service):
    assert fetch(f"{base}/dash/failing.mp4/manifest.mpd")[0] == 503
    drm_service.modes["0_failing1"] = "ok"
    try:
        assert fetch(f"{base}/dash/failing.mp4/manifest.mpd")[0] == 200
    finally:
        drm_service.modes["0_failing1"] = "error"


def test_encrypted_and_clear_bytes_never_share_a_cache_entry(base, store):
    url = f"{base}/dash/derived.mp4/fragment-1-v1.m4s"
    assert b"senc" in get(url)
    gateway_cli(store, "partners", "set-profile", "301", "dash", "encryption=none")
    try:
        clear = get(url)
        assert b"senc" not in clear and source_packets("video")[1] in clear
    finally:
        gateway_cli(store, "partners", "set-profile", "301", "dash", "encryption=cenc")
    assert b"senc" in get(url)


def test_a_clip_of_protected_media_decrypts_to_the_clear_clip(base, store):
    """clipFrom/clipTo and encryption together: the encrypted clip's samples are the clear clip's."""
    def hls_fmp4(url: str, key: bytes | None) -> list[bytes]:
        playlist = m3u8.loads(get(url + "index-v1.m3u8").decode())
        blob = get(url + playlist.segment_map[0].uri) + b"".join(get(url + s.uri) for s in playlist.segments)
        if key is None:
            with av.open(io.BytesIO(blob)) as c:
                return [bytes(p) for p in c.demux(c.streams[0]) if p.size]
        return decrypted_packets(blob, key)

    url = f"{base}/hls/derived.mp4/clipFrom/2500/clipTo/9000/"
    playlist = m3u8.loads(get(url + "index-v1.m3u8").decode())
    (key,) = [k for k in playlist.keys if k]
    encrypted = hls_fmp4(url, get(url + key.uri))
    gateway_cli(store, "partners", "set-profile", "301", "hls", "encryption=none", "hls_container=fmp4")
    try:
        clear = hls_fmp4(url, None)
    finally:
        gateway_cli(store, "partners", "set-profile", "301", "hls", "encryption=cbcs", "hls_container=auto")
    assert encrypted == clear and 100 < len(clear) < len(source_packets("video"))


def test_fairplay_key_format_names_an_skd_uri_and_serves_no_key(base, store):
    gateway_cli(store, "partners", "set-drm", "301", "hls_key_format=fairplay")
    try:
        playlist = get(f"{base}/hls/derived.mp4/index-v1.m3u8").decode()
        (line,) = [line for line in playlist.splitlines() if line.startswith("#EXT-X-KEY")]
        kid = re.search(r'URI="skd://([0-9a-f]{32})"', line).group(1)
        assert 'KEYFORMAT="com.apple.streamingkeydelivery"' in line
        assert fetch(f"{base}/hls/derived.mp4/key-{kid}.key")[0] == 404
    finally:
        gateway_cli(store, "partners", "set-drm", "301", "hls_key_format=identity")


def test_the_clearkey_license_endpoint_checks_its_token(base):
    decision = json.loads(get(f"{base}/p/301/playManifest/entryId/0_derived1/format/mpegdash/a.mpd"
                              "?responseFormat=json"))
    url = urljoin(base, decision["drm"]["licenseUrl"])
    assert fetch(url)[0] == 200  # GET: every key of the entry
    token = url.split("/")[-2]
    assert fetch(url.replace(token, token[:-1] + ("A" if token[-1] != "A" else "B")))[0] == 403
    assert fetch(url.replace("0_derived1", "0_saes0001"))[0] == 403  # another entry's license needs its own token
    assert fetch(url, b"not json")[0] == 400
    assert fetch(url, json.dumps({"kids": ["AAAAAAAAAAAAAAAAAAAAAA"]}).encode())[0] == 404
    service = json.loads(get(f"{base}/p/302/playManifest/entryId/0_service1/format/mpegdash/a.mpd"
                             "?responseFormat=json"))
    assert service["drm"] == {"scheme": "cbcs", "keySource": "service"}  # its players ask its license servers
    request = urllib.request.Request(url, method="OPTIONS", headers={"Origin": "http://player.example",
                                                                     "Access-Control-Request-Method": "POST"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert fetch(f"{base}/dash/derived.mp4/manifest.mpd", b"{}")[0] == 405  # POST is for licenses only
