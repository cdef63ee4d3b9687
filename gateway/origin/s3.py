"""S3 and S3-compatible stores: ``s3://bucket/prefix`` locations, SigV4 signing with botocore, conditional PUT.

Reads go through ``gateway.origin.origin_client`` like any HTTP origin; this module only says *where* an object is
(``S3Location``: the URL of a store path) and *who asks* (``S3Signer``: the ``(method, url, headers) -> headers``
seam of that client). Signatures are botocore's ``S3SigV4Auth`` (no hand-written SigV4, issue 16), and credentials
and region are found the way every AWS tool finds them (``botocore.session.Session``): environment variables,
shared config/credentials files, ``AWS_PROFILE``, credential processes, SSO, instance roles.

``put_object``/``get_object`` are the blocking calls of the catalog CLI (urllib: the CLI has no event loop). A
catalog is replaced with ``If-Match: <etag of what was read>`` and created with ``If-None-Match: *``, so two
editors never silently overwrite each other (S3 honours both since 2024, and so does moto 5, the tests' server).
"""
from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import quote, urlencode, urlsplit

import botocore.session
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from packagers.errors import not_found

DEFAULT_REGION = "us-east-1"  # what AWS tools assume without one, and the region MinIO and moto answer as
# DNS-compatible bucket names (the 2018+ rules); anything else is refused rather than half-working
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# The headers that carry meaning for S3 and are signed; others (the client's User-Agent, Accept-Encoding, the origin
# loop guard) are sent unsigned so that a proxy adding or rewriting them cannot break the signature.
_SIGNED = {"host", "range", "content-type", "content-md5", "if-match", "if-none-match", "if-modified-since",
           "if-unmodified-since"}
# payload_signing_enabled is botocore's own switch between the body's SHA-256 and UNSIGNED-PAYLOAD
_UNSIGNED_PAYLOAD = Config(s3={"payload_signing_enabled": False})
_SIGNED_PAYLOAD = Config(s3={"payload_signing_enabled": True})


class S3ConfigError(ValueError):
    """An s3:// location, endpoint or credential setup that cannot work: said once at startup."""


class ObjectChanged(Exception):
    """A conditional PUT found the object changed (412, or 409 for a conflicting concurrent write)."""


class S3Error(Exception):
    """Any other refusal: ``status`` and S3's error ``code`` (``AccessDenied``, ``NoSuchBucket``...)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


def _session(profile: str | None) -> botocore.session.Session:
    try:
        return botocore.session.Session(profile=profile)
    except BotoCoreError as e:
        raise S3ConfigError(f"S3: {e}") from None


def resolve_region(region: str | None = None, profile: str | None = None) -> str:
    """The option, else AWS_REGION, else AWS_DEFAULT_REGION or the profile's ``region``, else us-east-1."""
    if region:
        return region
    if os.environ.get("AWS_REGION"):  # the newer SDKs' variable, which botocore itself does not read
        return os.environ["AWS_REGION"]
    try:
        return _session(profile).get_config_variable("region") or DEFAULT_REGION
    except BotoCoreError as e:
        raise S3ConfigError(f"resolve_region: {e}") from None


def encode_key(key: str) -> str:
    """A key as it appears in a request path: UTF-8, everything but ``A-Za-z0-9-._~`` and ``/`` percent-encoded
    (AWS "UriEncode"; the canonical request signs exactly this text, so the wire must carry it unchanged)."""
    return quote(key, safe="/")


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix`` resolved to the URL of each store path.

    Path-style (``endpoint/bucket/key``) when an endpoint is given, as MinIO, moto and most compatible servers want;
    virtual-hosted (``https://bucket.s3.<region>.amazonaws.com/key``) on AWS, except for bucket names with dots,
    whose hosts the ``*.s3`` certificate does not cover."""

    bucket: str
    prefix: str  # "" or "a/b" (no leading or trailing slash)
    region: str
    endpoint: str | None = None

    @classmethod
    def parse(cls, url: str, endpoint: str | None = None, region: str | None = None,
              profile: str | None = None) -> "S3Location":
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise S3ConfigError(f"S3Location.parse: {url!r} is not s3://bucket[/prefix]")
        if not _BUCKET.match(parts.netloc) or ".." in parts.netloc:
            raise S3ConfigError(f"S3Location.parse: {parts.netloc!r} is not a valid bucket name")
        prefix = "/".join(_segments(parts.path, url))
        if endpoint is not None:
            ep = urlsplit(endpoint)
            if ep.scheme not in ("http", "https") or not ep.netloc or ep.query or ep.fragment:
                raise S3ConfigError(f"S3Location.parse: endpoint {endpoint!r} is not http(s)://host[:port][/path]")
            default = {"http": 80, "https": 443}[ep.scheme]
            if ep.port == default:  # botocore signs the host without it: the wire must not carry it either
                endpoint = endpoint.replace(f":{default}", "", 1)
            endpoint = endpoint.rstrip("/")
        return cls(parts.netloc, prefix, resolve_region(region, profile), endpoint)

    @property
    def base_url(self) -> str:
        """The URL under which ``url(path)`` is ``base_url + encode_key(path)`` (ends with "/")."""
        prefix = encode_key(self.prefix + "/") if self.prefix else ""
        if self.endpoint is not None:
            return f"{self.endpoint}/{self.bucket}/{prefix}"
        if "." in self.bucket:
            return f"https://s3.{self.region}.amazonaws.com/{self.bucket}/{prefix}"
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/{prefix}"

    def key(self, path: str) -> str:
        """The object key of a store-relative path; ``..``, absolute paths and NUL are NOT_FOUND, as on a local
        store (a probe learns nothing)."""
        return "/".join(([self.prefix] if self.prefix else []) + _segments(path, path, store_path=True))

    def url(self, path: str) -> str:
        return self.base_url + encode_key("/".join(_segments(path, path, store_path=True)))

    def describe(self, path: str) -> str:
        """``s3://bucket/key`` of a store path, for messages."""
        return f"s3://{self.bucket}/{self.key(path)}"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def _segments(path: str, shown: str, store_path: bool = False) -> list[str]:
    """The '/'-separated segments of a store path (what ``RemoteStore.url`` accepts: no empty, ``.`` or ``..``
    segment, no backslash or NUL) or of a prefix (empty segments, as in a trailing slash, drop out)."""
    segments = path.split("/")
    if store_path:
        if not path or "\x00" in path or "\\" in path or any(s in ("", ".", "..") for s in segments):
            raise not_found(f"S3Location.key: no such file '{shown}'")
        return segments
    segments = [s for s in segments if s]
    if "\x00" in path or any(s in (".", "..") for s in segments):
        raise S3ConfigError(f"S3Location.parse: {shown!r} has a '.', '..' or NUL segment in its prefix")
    return segments


class S3Signer:
    """``(method, url, headers[, body]) -> headers`` with a SigV4 ``Authorization`` for S3 (botocore's S3SigV4Auth).

    Credentials are resolved once (the AWS chain of ``botocore.session.Session``); refreshable ones (assumed roles,
    SSO, credential processes, instance roles) are refreshed by botocore, under its own lock, when they near expiry:
    ``get_frozen_credentials`` is read on every call so that key, secret and token always belong together. Each call
    builds its own request and auth object, so calls from several threads share no mutable state. GET and HEAD are
    signed with ``UNSIGNED-PAYLOAD`` (no body), PUT and POST with the SHA-256 of the body."""

    def __init__(self, region: str | None = None, profile: str | None = None):
        try:
            self._credentials = _session(profile).get_credentials()
        except BotoCoreError as e:
            raise S3ConfigError(f"S3Signer: {e}") from None
        if self._credentials is None:
            raise S3ConfigError("S3Signer: no AWS credentials found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                                "AWS_PROFILE with ~/.aws/credentials or ~/.aws/config, or an instance role)")
        self.region = resolve_region(region, profile)
        self.method = getattr(self._credentials, "method", "")  # where they came from: "env", "shared-credentials-file"

    def __call__(self, method: str, url: str, headers: Mapping[str, str], body: bytes = b"") -> dict[str, str]:
        try:
            credentials = self._credentials.get_frozen_credentials()
        except BotoCoreError as e:  # a refresh that failed (expired SSO session, unreachable STS...)
            raise S3ConfigError(f"S3Signer: cannot refresh the AWS credentials: {e}") from None
        stale = {"authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"}
        signed = {k: v for k, v in headers.items()
                  if k.lower() not in stale and (k.lower() in _SIGNED or k.lower().startswith("x-amz-"))}
        request = AWSRequest(method=method, url=str(url), headers=signed, data=body or None)
        request.context["client_config"] = _SIGNED_PAYLOAD if method in ("PUT", "POST") else _UNSIGNED_PAYLOAD
        S3SigV4Auth(credentials, "s3", self.region).add_auth(request)
        out = {k: v for k, v in headers.items() if k.lower() not in stale and k not in signed}
        out.update(request.headers.items())
        return out


def origin_for(origin: str, settings) -> tuple[str, S3Signer]:
    """(base URL, signer) of an ``s3://`` origin, for ``gateway.origin.remote.make_store``. The endpoint is
    ``settings.s3_endpoint``, else AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (the AWS tools' variables); region and
    profile are ``settings.s3_region``/``s3_profile`` when set, else the AWS environment and files."""
    location = location_for(origin, settings)
    return location.base_url, S3Signer(location.region, getattr(settings, "s3_profile", None))


def location_for(origin: str, settings) -> S3Location:
    """The S3Location of an ``s3://`` store URL with ``settings``' endpoint, region and profile (see origin_for)."""
    endpoint = getattr(settings, "s3_endpoint", None) or os.environ.get("AWS_ENDPOINT_URL_S3") \
        or os.environ.get("AWS_ENDPOINT_URL") or None
    return S3Location.parse(origin, endpoint, getattr(settings, "s3_region", None),
                            getattr(settings, "s3_profile", None))


def list_url(location: S3Location, folder: str, token: str | None = None, page: int = 1000) -> str:
    """A ListObjectsV2 request for the keys under a store folder (``folder`` ends with "/"), ``page`` at most."""
    bucket = location.base_url.removesuffix(encode_key(location.prefix + "/") if location.prefix else "")
    query = {"list-type": "2", "max-keys": str(page), "prefix": location.key(folder.rstrip("/")) + "/"}
    if token:
        query["continuation-token"] = token
    # "/" stays as is: legal in a query, and what S3-compatible servers that re-encode the query expect
    return bucket + "?" + urlencode(sorted(query.items()), quote_via=quote, safe="/")


def parse_listing(body: bytes) -> tuple[dict[str, str], str | None]:
    """({key: ETag}, the next page's continuation token or None) of a ListObjectsV2 answer."""
    root = ET.fromstring(body)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    keys = {c.findtext(f"{ns}Key") or "": c.findtext(f"{ns}ETag") or "" for c in root.iter(f"{ns}Contents")}
    more = (root.findtext(f"{ns}IsTruncated") or "").lower() == "true"
    return keys, (root.findtext(f"{ns}NextContinuationToken") if more else None)


def get_object(location: S3Location, path: str, signer: S3Signer, timeout: float = 30.0) -> tuple[bytes, str] | None:
    """The bytes and ETag of a store path, or None when there is no such object. Blocking (the catalog CLI)."""
    url = location.url(path)
    status, headers, body = _urlopen("GET", url, signer("GET", url, {}), None, timeout)
    if status == 404:
        return None
    if status != 200:
        raise _error("get_object", location, path, status, body)
    return body, headers.get("ETag", "")


def put_object(location: S3Location, path: str, data: bytes, signer: S3Signer, *, if_match: str | None = None,
               if_none_match: bool = False, content_type: str = "application/octet-stream",
               timeout: float = 30.0) -> str:
    """Store ``data`` at a store path and return its new ETag. Blocking (the catalog CLI).

    ``if_none_match``: create only (``If-None-Match: *``); ``if_match``: replace only the object with that ETag.
    When the condition fails (412; 409 when another conditional write raced this one; 404 when the object to
    replace is gone) it raises ObjectChanged and nothing is written."""
    url = location.url(path)
    headers = {"Content-Type": content_type}
    if if_match is not None:
        headers["If-Match"] = if_match
    if if_none_match:
        headers["If-None-Match"] = "*"
    status, got, body = _urlopen("PUT", url, signer("PUT", url, headers, body=data), data, timeout)
    if status == 200:
        return got.get("ETag", "")
    if status in (409, 412) or (status == 404 and if_match is not None and _code(body) == "NoSuchKey"):
        raise ObjectChanged(f"put_object: {location.describe(path)} changed meanwhile ({status} {_code(body)}): "
                            f"read it again and retry")
    raise _error("put_object", location, path, status, body)


# No proxies from the environment (the pooled aiohttp client of the reads ignores them too) and no redirects: a
# redirect from S3 means a wrong region or endpoint, which the error says.
class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs) -> None:  # the 3xx itself is the answer (and keeps the signature home)
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def _urlopen(method: str, url: str, headers: Mapping[str, str], data: bytes | None,
             timeout: float) -> tuple[int, Mapping[str, str], bytes]:
    request = urllib.request.Request(url, data=data, headers=dict(headers), method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise S3Error(0, "Unreachable", f"S3 {method} {urlsplit(url).netloc}: {getattr(e, 'reason', e)}") from None


def _code(body: bytes) -> str:
    """S3's error code (``<Error><Code>``), "" when the body is not an S3 error."""
    try:
        return ET.fromstring(body).findtext("Code") or ""
    except ET.ParseError:
        return ""


def _error(function: str, location: S3Location, path: str, status: int, body: bytes) -> S3Error:
    code = _code(body)
    return S3Error(status, code, f"{function}: {location.describe(path)} answered {status} {code}".rstrip())
