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
    /thumb/<path>/thumb-<ms>[-w<W>][-h<H>].jpg    the picture shown at <ms>, as a JPEG (packagers/thumbs/names.py)
    …/clipFrom/<ms>/clipTo/<ms>/…                 path parameters, anywhere between the protocol and the file name
                                                  (names case-insensitive, the first of a name counts): a clip;
                                                  …/lang/fra/… the language of a url set's caption files
    …/tracks/v1-a2/…  …/shift/v100-a0/…           only those tracks (v0/a0: all of a kind); ms added to a kind
    master-f1-v1-a2-leng.m3u8 (manifest-….mpd/f4m) a manifest listing fewer files, tracks, audio languages
    /status                                       counters (JSON)
    /p/<partner>/playManifest/entryId/<entry>[/format/<f>][/flavorIds/<a>,<b>][/ks/<ks>]/a.<ext>
                                                  delivery decision: 302 to the packaged URL (Kaltura's API)
    /s/<entry>/<token>/<any of the above media URLs>   signed access to a secured entry's media: the token sits in
                                                  the path, so relative URIs in manifests inherit it

The file names are each protocol's own (``packagers/<protocol>/names.py``, which the manifest writers use too); this
module finds the protocol and the media target and asks that grammar what the name says.

Paths are split and percent-decoded segment by segment in gateway/origin/paths.py (``split_path``), which refuses
any segment a filesystem would interpret.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import ClassVar

from packagers.clipping import Clip
from packagers.dash import names as dash_names
from packagers.errors import bad_request, not_found
from packagers.hds import names as hds_names
from packagers.hls import names as hls_names
from packagers.mss import names as mss_names
from packagers.mss.names import SmoothFile
from packagers.naming import MediaFile
from packagers.selection import Listing, Narrowing, Shift, TrackMask, language_code
from packagers.thumbs.names import ThumbFile, parse_thumb_name

from ..origin.paths import URL_SET_EXTENSION, MediaTarget, check_relative_path, split_path

PATH_PARAMETERS = frozenset({"clipfrom", "clipto", "tracks", "shift", "lang"})  # nginx-vod-module's, lower-cased
PARSED_PATHS = 2048  # paths are at most MAX_RAW_PATH (4 KB): 8 MB at the very most
# the metrics ``type`` label of each kind of file a protocol names (docs/metrics.md): playlists count as manifests
METRICS_TYPE = {"manifest": "manifest", "playlist": "manifest", "iframes": "manifest", "segment": "segment",
                "text": "segment", "init": "init", "key": "key"}


class TargetAccess:
    """What access control reads of a request naming a ``MediaTarget`` (gateway.catalog.access.MediaAccess)."""

    target: MediaTarget

    @property
    def store_paths(self) -> tuple[str, ...]:
        return self.target.paths

    @property
    def signed_name(self) -> str:
        """The path a signed URL's token covers: the media target (file or url set), whatever the protocol."""
        return self.target.name

    @property
    def features(self) -> frozenset[str]:
        return self.target.features


@dataclass(frozen=True)
class PackagedRequest(TargetAccess):
    """A file the gateway packages: which protocol, which store files, and what the protocol's file name says."""

    protocol: str  # hls | dash | mss | hds: also the delivery type a partner enables or disables
    target: MediaTarget
    file: MediaFile | SmoothFile
    is_download: ClassVar[bool] = False

    @property
    def delivery_type(self) -> str:
        return self.protocol

    @property
    def metrics_label(self) -> tuple[str, str]:
        return self.protocol, METRICS_TYPE[self.file.kind]


@dataclass(frozen=True)
class Mp4Download(TargetAccess):
    """The file itself (progressive download): answered from a fresh stat, with sendfile, never from the cache; or,
    with a clip or a track selection, an MP4 of that part of it (a new moov, the samples' bytes as they are)."""

    path: str
    clip: Clip = Clip()
    narrowing: Narrowing = Narrowing()  # /tracks/ (an MP4 of those tracks only), /shift/
    is_download: ClassVar[bool] = True
    delivery_type: ClassVar[str] = "http"
    metrics_label: ClassVar[tuple[str, str]] = ("mp4", "mp4")

    @property
    def target(self) -> MediaTarget:  # type: ignore[override]
        return MediaTarget((self.path,), False, self.path, self.clip, self.narrowing)


@dataclass(frozen=True)
class ThumbRequest(TargetAccess):
    """A video frame of a file as a JPEG (nginx-vod-module's ``thumb`` module). Not a delivery type: a partner turns
    thumbnails off with its ``features`` (delivery_profiles), not by disabling a protocol."""

    target: MediaTarget
    file: ThumbFile
    is_download: ClassVar[bool] = False
    delivery_type: ClassVar[None] = None
    metrics_label: ClassVar[tuple[str, str]] = ("thumb", "thumb")

    @property
    def features(self) -> frozenset[str]:
        return self.target.features | {"thumbnails"}


@dataclass(frozen=True)
class StatusRequest:
    metrics_label: ClassVar[tuple[str, str]] = ("other", "other")


@dataclass(frozen=True)
class CrossDomainPolicy:
    """/crossdomain.xml: Flash-based HDS/MSS players fetch it before any cross-origin request."""

    metrics_label: ClassVar[tuple[str, str]] = ("other", "other")


@dataclass(frozen=True)
class PlayManifest:
    """Kaltura's playManifest: the platform, not the player, picks the delivery type."""

    partner_id: int
    entry_id: str
    format: str | None = None
    flavor_ids: tuple[str, ...] = ()
    ks: str | None = None
    extension: str = ""
    clip: Clip = Clip()  # clipFrom/clipTo: the URL it redirects to names that clip
    metrics_label: ClassVar[tuple[str, str]] = ("playmanifest", "other")


MediaRequest = PackagedRequest | Mp4Download | ThumbRequest


@dataclass(frozen=True)
class Signed:
    """A media request under ``/s/<entry>/<token>/``: the token signs the entry's media path and an expiry."""

    entry_id: str
    token: str
    request: MediaRequest

    @property
    def metrics_label(self) -> tuple[str, str]:
        return self.request.metrics_label


@dataclass(frozen=True)
class ClearKeyLicense:
    """``/s/<entry>/<token>/clearkey``: the W3C ClearKey license of an entry (its token signs ``clearkey:<entry>``)."""

    entry_id: str
    token: str

    @property
    def metrics_label(self) -> tuple[str, str]:
        return ("other", "key")


GatewayRequest = MediaRequest | StatusRequest | CrossDomainPolicy | PlayManifest | Signed | ClearKeyLicense
_PLAY_MANIFEST_KEYS = {"entryId", "format", "flavorIds", "ks", "protocol", "deliveryProfileId", "uiConfId", "clipFrom",
                       "clipTo"}
_ENTRY_ID = re.compile(r"[0-9]_[a-z0-9]{8}")


@functools.lru_cache(maxsize=PARSED_PATHS)
def parse_path(raw_path: str, max_url_set_files: int = 32) -> GatewayRequest:
    """The typed request a raw path names. Raises PackagerError (BAD_REQUEST or NOT_FOUND) and nothing else.

    Remembered for the PARSED_PATHS most recent paths (the requests are frozen values): players ask for the same
    playlists and segments again and again, and parsing is a tenth of a cached playlist's cost. Refused paths are
    not remembered (an exception is never cached), so a scan of random URLs costs what it always did."""
    segments = split_path(raw_path)
    head, rest = segments[0], segments[1:]
    if head == "s":
        if len(rest) < 3 or not _ENTRY_ID.fullmatch(rest[0]):
            raise bad_request("parse_path: a signed URL is /s/<entry id>/<token>/<media URL>")
        if rest[2:] == ["clearkey"]:
            return ClearKeyLicense(rest[0], rest[1])
        inner = parse_path("/" + "/".join(rest[2:]), max_url_set_files)
        if not isinstance(inner, (Mp4Download, PackagedRequest, ThumbRequest)):
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
    if head == "thumb":
        return parse_thumb(rest, max_url_set_files)
    if head == "mp4":
        rest, params = path_parameters(rest)
        if not rest:
            raise bad_request("parse_path: /mp4/ needs a file path")
        return Mp4Download("/".join(rest), _clip(params), _narrowing(params))
    if head == "status" and not rest:
        return StatusRequest()
    if head == "crossdomain.xml" and not rest:
        return CrossDomainPolicy()
    raise not_found("parse_path: no such endpoint (try /hls/, /dash/, /mss/, /hds/, /mp4/, /thumb/ or /status)")


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
    clip = _clip({k.lower(): v for k, v in values.items() if k in ("clipFrom", "clipTo")})
    return PlayManifest(int(segments[0]), values["entryId"], values.get("format"), flavors, values.get("ks"),
                        last.rpartition(".")[2] if "." in last else "", clip)


def parse_hls(segments: list[str], max_url_set_files: int = 32) -> PackagedRequest:
    """``segments`` are the decoded segments after ``/hls``: media path segments, then the HLS file name."""
    segments, params = _file_parameters(segments)
    if len(segments) < 2:
        raise bad_request("parse_hls: expected /hls/<media path>/<file name>")
    file = hls_names.parse_name(segments[-1])
    target = _media_target(segments[:-1], max_url_set_files, params, file.listing)  # a manifest name's selectors
    return PackagedRequest("hls", target, file)


def parse_dash(segments: list[str], max_url_set_files: int = 32) -> PackagedRequest:
    segments, params = _file_parameters(segments)
    if len(segments) < 2:
        raise bad_request("parse_dash: expected /dash/<media path>/<file name>")
    file = dash_names.parse_name(segments[-1])
    target = _media_target(segments[:-1], max_url_set_files, params, file.listing)  # a manifest name's selectors
    return PackagedRequest("dash", target, file)


def parse_mss(segments: list[str], max_url_set_files: int = 32) -> PackagedRequest:
    segments, params = _file_parameters(segments)
    file = mss_names.parse_name(segments)
    target = _media_target(segments[:-file.path_segments], max_url_set_files, params, file.listing)
    return PackagedRequest("mss", target, file)


def parse_hds(segments: list[str], max_url_set_files: int = 32) -> PackagedRequest:
    segments, params = _file_parameters(segments)
    if len(segments) < 2:
        raise bad_request("parse_hds: expected /hds/<media path>/<file name>")
    file = hds_names.parse_name(segments[-1])
    target = _media_target(segments[:-1], max_url_set_files, params, file.listing)  # a manifest name's selectors
    return PackagedRequest("hds", target, file)


def path_parameters(segments: list[str]) -> tuple[list[str], dict[str, str]]:
    """nginx-vod-module's URL path parameters (``…/clipFrom/10000/…``) taken out of ``segments``: the segments left
    (the media path) and each parameter's value, by lower-case name. A name with no segment after it is a path."""
    rest: list[str] = []
    params: dict[str, str] = {}
    i = 0
    while i < len(segments):
        name = segments[i].lower()
        if name in PATH_PARAMETERS and i + 1 < len(segments):
            params.setdefault(name, segments[i + 1])  # the first of a name counts, as in nginx-vod-module
            i += 2
        else:
            rest.append(segments[i])
            i += 1
    return rest, params


def _file_parameters(segments: list[str]) -> tuple[list[str], dict[str, str]]:
    """Path parameters of a packaged URL: anywhere before its last segment (the file name)."""
    if len(segments) < 2:
        return segments, {}
    rest, params = path_parameters(segments[:-1])
    return rest + segments[-1:], params


def _milliseconds(params: dict[str, str], name: str) -> int | None:
    value = params.get(name.lower())
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 13:
        raise bad_request(f"parse_path: {name} must be milliseconds (digits), got '{value[:20]}'")
    return int(value)


def _clip(params: dict[str, str]) -> Clip:
    start, end = _milliseconds(params, "clipFrom"), _milliseconds(params, "clipTo")
    return Clip(start or 0, end) if start or end is not None else Clip()


def parse_thumb(segments: list[str], max_url_set_files: int = 32) -> ThumbRequest:
    segments, params = _file_parameters(segments)
    if len(segments) < 2:
        raise bad_request("parse_thumb: expected /thumb/<media path>/thumb-<ms>.jpg")
    file = parse_thumb_name(segments[-1])
    if file.offset_ms is None:
        raise bad_request("parse_thumb: thumb-now.jpg is for live streams (/live/<app>/<stream>/thumb-now.jpg)")
    return ThumbRequest(_media_target(segments[:-1], max_url_set_files, params), file)


def _narrowing(params: dict[str, str], listing: Listing = Listing()) -> Narrowing:
    """``/tracks/v1-a2/`` and ``/shift/v100-a0/`` (packagers.selection), with a manifest name's selectors."""
    tracks, shift = params.get("tracks"), params.get("shift")
    return Narrowing(TrackMask() if tracks is None else TrackMask.parse(tracks),
                     Shift() if shift is None else Shift.parse(shift), listing)


def _language(value: str | None) -> str | None:
    """``/lang/<code>/``: the language of the url set's caption files (nginx-vod-module labels a sequence with it),
    an ISO 639-2 or 639-3 code."""
    if value is None:
        return None
    if not (len(value) == 3 and value.isascii() and value.isalpha()):
        raise bad_request(f"parse_path: lang must be a three-letter ISO 639 code, got '{value[:20]}'")
    return language_code(value)


def _media_target(segments: list[str], max_url_set_files: int, params: dict[str, str] | None = None,
                  listing: Listing = Listing()) -> MediaTarget:
    clip = _clip(params or {})
    narrowing = _narrowing(params or {}, listing)
    language = _language((params or {}).get("lang"))
    last = segments[-1]
    if not last.endswith(URL_SET_EXTENSION):
        return MediaTarget(("/".join(segments),), False, "/".join(segments), clip, narrowing, language)
    parts = last[: -len(URL_SET_EXTENSION)].split(",")
    if len(parts) < 3:
        raise bad_request("parse_path: a url set is <prefix>,<name>[,<name>...],<suffix>.urlset")
    prefix, middles, suffix = parts[0], parts[1:-1], parts[-1]
    if len(middles) > max_url_set_files:
        raise bad_request(f"parse_path: url set of {len(middles)} files (at most {max_url_set_files})")
    directory = "/".join(segments[:-1])
    paths = []
    for middle in middles:
        name = prefix + middle + suffix  # may reach into a subdirectory (%2F): every component is checked
        check_relative_path(name)
        paths.append(f"{directory}/{name}" if directory else name)
    return MediaTarget(tuple(paths), True, "/".join(segments), clip, narrowing, language)
