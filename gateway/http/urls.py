"""The URL grammar: raw request path → a typed request, or a BAD_REQUEST/NOT_FOUND ``PackagerError``.

The grammar is nginx-vod-module's, so players keep their URLs when switching:

    /hls/<path>/master.m3u8                       every rendition of <path>
    /hls/<path>/index<suffix>.m3u8                one media playlist (suffix = track selection, ``-v1-a1``)
    /hls/<path>/seg-<n><suffix>.ts                segment n, counted from 1 (MPEG-TS)
    /hls/<path>/init<suffix>.mp4, seg-<n><suffix>.m4s   HLS with fMP4 segments (EXT-X-MAP)
    /dash/<path>/manifest.mpd                     DASH: init<suffix>.mp4, fragment-<n><suffix>.m4s
    /mss/<path>/manifest                          Smooth: QualityLevels(<bitrate>)/Fragments(<stream>=<start>)
    /hds/<path>/manifest.f4m                      HDS: frag<suffix>-Seg1-Frag<n>
    /hls/<dir>/<prefix>,<a>,<b>,<suffix>.urlset/… a url set: <dir>/<prefix><a><suffix>, <dir>/<prefix><b><suffix>
    /mp4/<path>                                   the file itself (progressive download)
    /status                                       counters (JSON)
    /p/<partner>/playManifest/entryId/<entry>[/format/<f>][/flavorIds/<a>,<b>][/ks/<ks>]/a.<ext>
                                                  delivery decision: 302 to the packaged URL (Kaltura's API)
    /s/<entry>/<token>/<any of the above media URLs>   signed access to a secured entry's media: the token sits in
                                                  the path, so relative URIs in manifests inherit it

Paths are split and percent-decoded segment by segment in gateway/origin/paths.py (``split_path``), which refuses
any segment a filesystem would interpret.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from packagers.errors import bad_request, not_found
from packagers.naming import TrackSpec

from ..origin.paths import MediaTarget, check_name, split_path

URL_SET_EXTENSION = ".urlset"
_SEGMENT_FILE = re.compile(r"seg-([0-9]+)(.*)\.(ts|m4s)")
_INDEX_FILE = re.compile(r"index(.*)\.m3u8")
_INIT_FILE = re.compile(r"init(.*)\.mp4")
_DASH_FRAGMENT = re.compile(r"fragment-([0-9]+)(.*)\.m4s")
_HDS_FRAGMENT = re.compile(r"frag(.*)-Seg1-Frag([0-9]+)")
_MSS_QUALITY = re.compile(r"QualityLevels\(([0-9]{1,10})\)")
_MSS_FRAGMENT = re.compile(r"Fragments\(([A-Za-z0-9_]{1,32})=([0-9]{1,20})\)")
_MAX_SEGMENT_DIGITS = 10


@dataclass(frozen=True)
class HlsMaster:
    target: MediaTarget


@dataclass(frozen=True)
class HlsMediaPlaylist:
    target: MediaTarget
    spec: TrackSpec


@dataclass(frozen=True)
class HlsSegment:
    target: MediaTarget
    spec: TrackSpec
    index: int  # 0-based; the URL says index + 1
    container: str = "ts"  # ts (MPEG-TS) or fmp4 (.m4s)


@dataclass(frozen=True)
class HlsKey:
    """The AES-128 key of an encrypted entry's HLS segments (served only under a valid signed URL)."""

    target: MediaTarget


@dataclass(frozen=True)
class InitSegment:
    """An fMP4 initialization segment (HLS EXT-X-MAP or DASH SegmentTemplate@initialization)."""

    protocol: str  # hls | dash
    target: MediaTarget
    spec: TrackSpec


@dataclass(frozen=True)
class DashManifest:
    target: MediaTarget


@dataclass(frozen=True)
class DashFragment:
    target: MediaTarget
    spec: TrackSpec
    index: int


@dataclass(frozen=True)
class MssManifest:
    target: MediaTarget


@dataclass(frozen=True)
class MssFragment:
    """Smooth Streaming names fragments by stream, bitrate and start time, not by number: the packager maps them."""

    target: MediaTarget
    stream: str  # StreamIndex Name: video, audio, audio_fra...
    bitrate: int
    start: int  # in the stream's timescale


@dataclass(frozen=True)
class HdsManifest:
    target: MediaTarget


@dataclass(frozen=True)
class HdsFragment:
    target: MediaTarget
    spec: TrackSpec
    index: int


@dataclass(frozen=True)
class Mp4Download:
    path: str


@dataclass(frozen=True)
class StatusRequest:
    pass


@dataclass(frozen=True)
class CrossDomainPolicy:
    """/crossdomain.xml: Flash-based HDS/MSS players fetch it before any cross-origin request."""


HlsRequest = HlsMaster | HlsMediaPlaylist | HlsSegment | InitSegment | HlsKey
PackagedRequest = HlsRequest | DashManifest | DashFragment | MssManifest | MssFragment | HdsManifest | HdsFragment
@dataclass(frozen=True)
class PlayManifest:
    """Kaltura's playManifest: the platform, not the player, picks the delivery type."""

    partner_id: int
    entry_id: str
    format: str | None = None
    flavor_ids: tuple[str, ...] = ()
    ks: str | None = None
    extension: str = ""


MediaRequest = PackagedRequest | Mp4Download


@dataclass(frozen=True)
class Signed:
    """A media request under ``/s/<entry>/<token>/``: the token signs the entry's media path and an expiry."""

    entry_id: str
    token: str
    request: MediaRequest


GatewayRequest = MediaRequest | StatusRequest | CrossDomainPolicy | PlayManifest | Signed
_PLAY_MANIFEST_KEYS = {"entryId", "format", "flavorIds", "ks", "protocol", "deliveryProfileId", "uiConfId"}
_ENTRY_ID = re.compile(r"[0-9]_[a-z0-9]{8}")


def media_target_name(request: MediaRequest) -> str:
    """The path a signed URL's token covers: the media target (file or url set), whatever the protocol."""
    return request.path if isinstance(request, Mp4Download) else request.target.name


def parse_path(raw_path: str, max_url_set_files: int = 32) -> GatewayRequest:
    """The typed request a raw path names. Raises PackagerError (BAD_REQUEST or NOT_FOUND) and nothing else."""
    segments = split_path(raw_path)
    head, rest = segments[0], segments[1:]
    if head == "s":
        if len(rest) < 3 or not _ENTRY_ID.fullmatch(rest[0]):
            raise bad_request("parse_path: a signed URL is /s/<entry id>/<token>/<media URL>")
        inner = parse_path("/" + "/".join(rest[2:]), max_url_set_files)
        if not isinstance(inner, (Mp4Download, *PackagedRequest.__args__)):
            raise bad_request("parse_path: only media URLs can be signed")
        return Signed(rest[0], rest[1], inner)
    if head == "p":
        return parse_play_manifest(rest)
    if head == "hls":
        return parse_hls(rest, max_url_set_files)
    if head == "dash":
        return parse_dash(rest, max_url_set_files)
    if head == "mss":
        return parse_mss(rest, max_url_set_files)
    if head == "hds":
        return parse_hds(rest, max_url_set_files)
    if head == "mp4":
        if not rest:
            raise bad_request("parse_path: /mp4/ needs a file path")
        return Mp4Download("/".join(rest))
    if head == "status" and not rest:
        return StatusRequest()
    if head == "crossdomain.xml" and not rest:
        return CrossDomainPolicy()
    raise not_found("parse_path: no such endpoint (try /hls/, /dash/, /mss/, /hds/, /mp4/ or /status)")


def parse_play_manifest(segments: list[str]) -> PlayManifest:
    """``<partner>/playManifest/<key>/<value>/.../a.<ext>`` (the trailing file name only carries an extension)."""
    if len(segments) < 4 or segments[1] != "playManifest" or not segments[0].isdigit():
        raise bad_request("parse_play_manifest: expected /p/<partner id>/playManifest/entryId/<entry id>/.../a.<ext>")
    pairs, last = segments[2:], ""
    if len(pairs) % 2 == 1:
        pairs, last = pairs[:-1], pairs[-1]
    values: dict[str, str] = {}
    for key, value in zip(pairs[0::2], pairs[1::2]):
        if key not in _PLAY_MANIFEST_KEYS:
            raise bad_request(f"parse_play_manifest: unknown parameter '{key}'")
        if key in values:
            raise bad_request(f"parse_play_manifest: parameter '{key}' given twice")
        values[key] = value
    if "entryId" not in values or not _ENTRY_ID.fullmatch(values["entryId"]):
        raise bad_request("parse_play_manifest: entryId missing or not an entry id like 0_abcd1234")
    flavors = tuple(f for f in values.get("flavorIds", "").split(",") if f)
    return PlayManifest(int(segments[0]), values["entryId"], values.get("format"), flavors, values.get("ks"),
                        last.rpartition(".")[2] if "." in last else "")


def parse_hls(segments: list[str], max_url_set_files: int = 32) -> HlsRequest:
    """``segments`` are the decoded segments after ``/hls``: media path segments, then the HLS file name."""
    if len(segments) < 2:
        raise bad_request("parse_hls: expected /hls/<media path>/<file name>")
    target = _media_target(segments[:-1], max_url_set_files)
    name = segments[-1]
    if name == "master.m3u8":
        return HlsMaster(target)
    if name == "encryption.key":
        return HlsKey(target)
    if m := _INDEX_FILE.fullmatch(name):
        return HlsMediaPlaylist(target, TrackSpec.parse(m.group(1)))
    if m := _SEGMENT_FILE.fullmatch(name):
        container = "ts" if m.group(3) == "ts" else "fmp4"
        return HlsSegment(target, TrackSpec.parse(m.group(2)), _segment_index(m.group(1)), container)
    if m := _INIT_FILE.fullmatch(name):
        return InitSegment("hls", target, TrackSpec.parse(m.group(1)))
    raise bad_request(
        "parse_hls: unknown HLS file name (master.m3u8, index<tracks>.m3u8, seg-<n><tracks>.ts|.m4s, init<tracks>.mp4)"
    )


def parse_dash(segments: list[str], max_url_set_files: int = 32) -> PackagedRequest:
    if len(segments) < 2:
        raise bad_request("parse_dash: expected /dash/<media path>/<file name>")
    target = _media_target(segments[:-1], max_url_set_files)
    name = segments[-1]
    if name == "manifest.mpd":
        return DashManifest(target)
    if m := _INIT_FILE.fullmatch(name):
        return InitSegment("dash", target, TrackSpec.parse(m.group(1)))
    if m := _DASH_FRAGMENT.fullmatch(name):
        return DashFragment(target, TrackSpec.parse(m.group(2)), _segment_index(m.group(1)))
    raise bad_request("parse_dash: unknown DASH file name (manifest.mpd, init<tracks>.mp4, fragment-<n><tracks>.m4s)")


def parse_mss(segments: list[str], max_url_set_files: int = 32) -> PackagedRequest:
    if len(segments) >= 2 and segments[-1] in ("manifest", "Manifest"):
        return MssManifest(_media_target(segments[:-1], max_url_set_files))
    if len(segments) >= 3:
        quality, fragment = _MSS_QUALITY.fullmatch(segments[-2]), _MSS_FRAGMENT.fullmatch(segments[-1])
        if quality and fragment:
            target = _media_target(segments[:-2], max_url_set_files)
            return MssFragment(target, fragment.group(1), int(quality.group(1)), int(fragment.group(2)))
    raise bad_request("parse_mss: expected /mss/<media path>/manifest or .../QualityLevels(<bitrate>)/Fragments(<stream>=<t>)")


def parse_hds(segments: list[str], max_url_set_files: int = 32) -> PackagedRequest:
    if len(segments) < 2:
        raise bad_request("parse_hds: expected /hds/<media path>/<file name>")
    target = _media_target(segments[:-1], max_url_set_files)
    name = segments[-1]
    if name == "manifest.f4m":
        return HdsManifest(target)
    if m := _HDS_FRAGMENT.fullmatch(name):
        return HdsFragment(target, TrackSpec.parse(m.group(1)), _segment_index(m.group(2)))
    raise bad_request("parse_hds: unknown HDS file name (manifest.f4m or frag<tracks>-Seg1-Frag<n>)")


def _segment_index(digits: str) -> int:
    """0-based index from the URL's 1-based number, in canonical form only (no zero, no leading zeros)."""
    if digits.startswith("0"):
        raise bad_request("parse_path: segment numbers start at 1 and have no leading zeros")
    if len(digits) > _MAX_SEGMENT_DIGITS:
        raise bad_request(f"parse_path: segment number longer than {_MAX_SEGMENT_DIGITS} digits")
    return int(digits) - 1


def _media_target(segments: list[str], max_url_set_files: int) -> MediaTarget:
    last = segments[-1]
    if not last.endswith(URL_SET_EXTENSION):
        return MediaTarget(("/".join(segments),), False, "/".join(segments))
    parts = last[: -len(URL_SET_EXTENSION)].split(",")
    if len(parts) < 3:
        raise bad_request("parse_path: a url set is <prefix>,<name>[,<name>...],<suffix>.urlset")
    prefix, middles, suffix = parts[0], parts[1:-1], parts[-1]
    if len(middles) > max_url_set_files:
        raise bad_request(f"parse_path: url set of {len(middles)} files (at most {max_url_set_files})")
    directory = "/".join(segments[:-1])
    paths = []
    for middle in middles:
        name = prefix + middle + suffix
        check_name(name)
        paths.append(f"{directory}/{name}" if directory else name)
    return MediaTarget(tuple(paths), True, "/".join(segments))
