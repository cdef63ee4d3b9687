"""Runtime settings of one gateway process: plain data, validated once, shared read-only through an AppKey."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path


HLS_CONTAINERS = ("auto", "ts", "fmp4", "mpegts")  # auto: fMP4 for HEVC (Apple requires it), MPEG-TS otherwise
ACCESS_LOG_FORMATS = ("text", "json")
THUMBNAIL_MODES = ("accurate", "keyframe")  # nginx-vod-module's vod_thumb_accurate_positioning on | off
DASH_SUBTITLE_FORMATS = ("webvtt", "smpte-tt")  # nginx-vod-module's vod_dash_subtitle_format


@dataclass(frozen=True)
class Settings:
    store: Path = Path("media")  # content store root; nothing outside it is ever readable (with an origin: local state)
    # media behind an HTTP(S)/S3 origin read by byte range (docs/stores.md); ``store`` then only keeps local state:
    # live output, recordings, the default catalog place
    origin: str | None = None
    origin_connect_timeout: float = 3.0  # seconds to connect to the origin
    origin_timeout: float = 10.0  # seconds for one origin request, body included (then 504)
    origin_connections: int = 64  # pooled keep-alive connections to the origin, per worker
    origin_tries: int = 3  # attempts on connection errors, timeouts and 5xx (then 502/504)
    origin_identity_ttl: float = 2.0  # reuse an object's HEAD (size, ETag) this long
    s3_endpoint: str | None = None  # s3:// origins on an S3-compatible server (else AWS_ENDPOINT_URL[_S3], else AWS)
    s3_region: str | None = None  # else AWS_REGION / AWS_DEFAULT_REGION / the profile's (gateway/origin/s3.py)
    s3_profile: str | None = None  # AWS config/credentials profile
    # tried for a path the store does not have (nginx-vod's fallback): a directory or an http(s)/s3 URL
    fallback_store: str | None = None
    host: str = "127.0.0.1"  # loopback by default: exposing the gateway is an explicit choice (--host 0.0.0.0)
    port: int = 8080
    segment_duration_ms: int = 6000  # target; real segments end on the first key frame at or after the grid point
    segment_cache_mb: float = 256  # response cache (segments and playlists) bounded in bytes; 0 disables it
    metadata_cache_entries: int = 1024  # parsed moov boxes (Presentation objects)
    media_set_cache_entries: int = 256  # MediaSet objects (plans); a url set is one entry
    metadata_cache_mb: float = 256  # parsed presentations and plans weighed by their arrays' real size
    max_frame_count: int = 1 << 20  # frames (samples, all tracks) one file may describe: nginx-vod's vod_max_frame_count
    segment_max_frame_count: int = 1 << 16  # frames one segment may carry: nginx-vod's vod_segment_max_frame_count
    header_timeout: float = 10.0  # seconds a client has to send a request's line and headers (slowloris)
    keepalive_timeout: float = 75.0  # seconds an idle kept-alive connection stays open
    max_connections: int = 0  # per worker; when full the oldest idle connection is closed. 0 = auto from RLIMIT_NOFILE
    max_connections_per_address: int = 0  # per client address and worker; 0 = no cap (behind nginx all share one)
    hls_container: str = "auto"
    segment_max_age: int = 86400  # Cache-Control max-age of segments: immutable for a given file identity
    manifest_max_age: int = 3600  # playlists: shorter, so a replaced file reaches players within the hour
    not_found_max_age: int = 0  # 0 = 404s are no-store (an upload becomes visible at once); >0 shields the store
    stat_cache_seconds: float = 1.0  # reuse a file's stat this long: cache hits skip a thread hop; 0 = stat always
    io_threads: int = 16  # executor for stat/pread/parse/mux: an NFS stall blocks a thread, never the event loop
    max_url_set_files: int = 32
    thumbnail_mode: str = "accurate"  # accurate: the frame at that time (decoded from its key frame); keyframe: faster
    thumbnail_decodes: int = 0  # thumbnails decoded at once (the rest queue); 0 = one per CPU core
    dash_subtitle_format: str = "webvtt"  # caption files in DASH: one WebVTT file, or smpte-tt (TTML in fMP4 segments)
    access_log: bool = True  # one INFO line per request on the "gateway.access" logger (gateway/ops/access_log.py)
    access_log_format: str = "text"  # text | json (one JSON object per line)
    catalog: Path | None = None  # partners and entries; default <store>/.catalog (never served: hidden name)
    catalog_ttl: float = 1.0  # re-check catalog files at most this often: edits reach every node within it
    signed_url_ttl: int = 6 * 3600  # lifetime of the signed URLs playManifest issues for secured entries
    ready_timeout: float = 2.0  # /ready answers 503 when the store check takes longer (a hung NFS mount)
    ready_file: str | None = None  # store-relative file /ready also reads: proves data reads, not cached metadata
    rtmp_control_token: str | None = None  # bearer token of the RTMP control API (/rtmp/..., /control/...); none: off
    # the admin API (/api/v1/, docs/admin_api.md): its own listener, served by worker 0; off without a token
    admin_token: str | None = None
    admin_host: str = "127.0.0.1"
    admin_port: int = 0  # 0: no admin listener
    # audience analytics from the players' CMCD reports (docs/analytics.md, gateway/ops/audience.py)
    analytics: bool = True  # off: nothing is collected, /api/v1/analytics answers 404
    analytics_window_minutes: int = 1440  # minutes of series kept in memory (24 h)
    analytics_bucket_seconds: int = 60  # one point of a series ("a minute"); shorter only for tests and demos
    analytics_memory_mb: float = 64  # per worker: past it the oldest minutes go first
    analytics_streams: int = 2000  # streams one minute tracks; more are counted as the stream "other"
    analytics_metrics_streams: int = 20  # /metrics labels: the busiest streams of the minute, the rest as "other"
    # the key of the session-id hashes: the same on every node of a pool (else a player moving between nodes counts
    # twice); none: derived from admin_token, else a fixed key (then hashed client addresses could be brute-forced)
    analytics_salt: str | None = None
    # the pool: every gateway node as "host:port" (what `gateway nginx-config` balances over), each optionally with
    # " admin=host:port" where its admin API listens (default: the node's host and this node's admin_port)
    nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.segment_duration_ms <= 0:
            raise ValueError(f"segment duration must be > 0 ms, got {self.segment_duration_ms}")
        if self.segment_cache_mb < 0:
            raise ValueError(f"segment cache size must be >= 0 MB, got {self.segment_cache_mb}")
        if self.metadata_cache_entries < 1 or self.media_set_cache_entries < 1:
            raise ValueError("metadata caches need at least one entry")
        if self.metadata_cache_mb <= 0:
            raise ValueError(f"metadata cache size must be > 0 MB, got {self.metadata_cache_mb}")
        if self.max_frame_count < 1 or self.segment_max_frame_count < 1:
            raise ValueError("max_frame_count and segment_max_frame_count must be >= 1")
        if self.header_timeout <= 0 or self.keepalive_timeout <= 0:
            raise ValueError("header_timeout and keepalive_timeout must be > 0 seconds")
        if self.max_connections < 0 or self.max_connections_per_address < 0:
            raise ValueError("max_connections and max_connections_per_address must be >= 0")
        if self.hls_container not in HLS_CONTAINERS:
            raise ValueError(f"HLS container {self.hls_container!r} is not one of {HLS_CONTAINERS}")
        if self.stat_cache_seconds < 0:
            raise ValueError("stat_cache_seconds must be >= 0")
        if self.catalog_ttl < 0 or self.signed_url_ttl < 1:
            raise ValueError("catalog_ttl must be >= 0 and signed_url_ttl >= 1")
        if self.io_threads < 1:
            raise ValueError("io_threads must be >= 1")
        if self.thumbnail_mode not in THUMBNAIL_MODES:
            raise ValueError(f"thumbnail mode {self.thumbnail_mode!r} is not one of {THUMBNAIL_MODES}")
        if self.dash_subtitle_format not in DASH_SUBTITLE_FORMATS:
            raise ValueError(f"dash subtitle format {self.dash_subtitle_format!r} is not one of "
                             f"{DASH_SUBTITLE_FORMATS}")
        if self.thumbnail_decodes < 0:
            raise ValueError("thumbnail_decodes must be >= 0 (0 = one per core)")
        if self.access_log_format not in ACCESS_LOG_FORMATS:
            raise ValueError(f"access log format {self.access_log_format!r} is not one of {ACCESS_LOG_FORMATS}")
        if self.ready_timeout <= 0:
            raise ValueError("ready_timeout must be > 0 seconds")
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ValueError("admin_token must be at least 16 characters (or left out: no admin API)")
        if not 0 <= self.admin_port <= 65535:
            raise ValueError(f"admin_port must be 0 (off) to 65535, got {self.admin_port}")
        if self.rtmp_control_token is not None and len(self.rtmp_control_token) < 16:
            raise ValueError("rtmp_control_token must be at least 16 characters (or left out: no control API)")
        if self.origin is not None and not self.origin.startswith(("http://", "https://", "s3://")):
            raise ValueError(f"origin {self.origin!r} is not an http://, https:// or s3:// URL")
        if self.fallback_store is not None and "://" in self.fallback_store \
                and not self.fallback_store.startswith(("http://", "https://", "s3://")):
            raise ValueError(f"fallback_store {self.fallback_store!r} is not a directory or an http://, https:// or "
                             "s3:// URL")
        if min(self.origin_connect_timeout, self.origin_timeout) <= 0 or self.origin_connections < 1 \
                or self.origin_tries < 1 or self.origin_identity_ttl < 0:
            raise ValueError("origin timeouts must be > 0, origin_connections and origin_tries >= 1, "
                             "origin_identity_ttl >= 0")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")
        if not 1 <= self.analytics_window_minutes <= 7 * 1440 or not 1 <= self.analytics_bucket_seconds <= 3600:
            raise ValueError("analytics_window_minutes must be 1 to 10080 and analytics_bucket_seconds 1 to 3600")
        if self.analytics_memory_mb <= 0 or self.analytics_streams < 1 or self.analytics_metrics_streams < 1:
            raise ValueError("analytics_memory_mb must be > 0, analytics_streams and analytics_metrics_streams >= 1")
        for node in self.nodes:
            parse_node(node)

    @property
    def segment_cache_bytes(self) -> int:
        return int(self.segment_cache_mb * 1024 * 1024)

    @property
    def metadata_cache_bytes(self) -> int:
        return int(self.metadata_cache_mb * 1024 * 1024)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)


def parse_node(text: str) -> tuple[str, int, str | None, int | None]:
    """``"host:port"`` or ``"host:port admin=host:port"`` (an item of ``nodes``): (host, port, admin host, admin port),
    the admin part None when not given. ValueError names the item."""
    address, *options = text.split()
    admin_host = admin_port = None

    def split(hostport: str) -> tuple[str, int]:
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"nodes: {text!r} is not host:port [admin=host:port]")
        return host.strip("[]"), int(port)

    host, port = split(address)
    for option in options:
        name, _, value = option.partition("=")
        if name != "admin":
            raise ValueError(f"nodes: {text!r}: unknown option {name!r} (only admin=host:port)")
        admin_host, admin_port = split(value)
    return host, port, admin_host, admin_port

