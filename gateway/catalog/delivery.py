"""From a delivery decision to the URL a player is sent to, and the secrets derived per entry.

An entry's flavors become one url set (``<dir>/<prefix>,<a>,<b>,<suffix>.urlset``), so one manifest lists every
rendition. A secured entry's URL is prefixed with ``/s/<entry>/<token>/``: the token signs the media target and an
expiry with the partner's secret, and sits in the *path* so the relative URIs inside manifests inherit it (a query
string would not be inherited). Nothing here keeps state: every node derives the same URLs, tokens and keys from the
shared catalog.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import posixpath
from urllib.parse import quote

from delivery_profiles.tokens import sign_path
from packagers.clipping import Clip
from packagers.dash import names as dash_names
from packagers.hds import names as hds_names
from packagers.hls import names as hls_names
from packagers.mss import names as mss_names

# what each delivery type's manifest is called under its protocol prefix (the protocols' own file-name grammars)
MANIFESTS = {
    "hls": ("hls", hls_names.MASTER_PLAYLIST_NAME),
    "dash": ("dash", dash_names.MANIFEST_NAME),
    "hds": ("hds", hds_names.MANIFEST_NAME),
    "mss": ("mss", mss_names.MANIFEST_NAME),
}


class DeliveryError(ValueError):
    """The catalog describes something no URL can express (flavors in different directories)."""


def url_set(paths: list[str]) -> str:
    """The media target naming ``paths``: the file itself for one flavor, else a url set of them all, in their
    deepest common directory (names in subdirectories of it, such as captions in ``subs/``, keep that part)."""
    if len(paths) == 1:
        return paths[0]
    directory = posixpath.commonpath([posixpath.dirname(p) for p in paths])
    names = [posixpath.relpath(p, directory) if directory else p for p in paths]
    prefix = os.path.commonprefix(names)
    suffix = os.path.commonprefix([n[len(prefix):][::-1] for n in names])[::-1]
    middles = [n[len(prefix): len(n) - len(suffix)] for n in names]
    if any("," in part for part in [prefix, suffix, *middles]):
        raise DeliveryError("url_set: flavor file names may not contain ','")
    name = ",".join([prefix, *middles, suffix]) + ".urlset"
    return f"{directory}/{name}" if directory else name


def _quoted(target: str) -> str:
    """A target in a URL path: a url set's names keep a '/' of theirs as %2F (one path segment)."""
    if not target.endswith(".urlset") or "," not in target:
        return quote(target, safe="/,")
    cut = target.rfind("/", 0, target.index(","))  # the set's directory has no ','; its names may have a '/'
    directory, last = target[:cut], target[cut + 1:]
    return (quote(directory, safe="/") + "/" if cut >= 0 else "") + quote(last, safe=",")


def media_url(delivery_type: str, flavor_paths: list[str], clip: Clip = Clip()) -> tuple[str, str]:
    """(target, URL path) for a delivery type: the MP4 itself for ``http``, else the packaged manifest; a clip's
    path parameters go after the target (a signed URL's token covers the target alone)."""
    params = clip_parameters(clip)
    if delivery_type == "http":
        target = flavor_paths[0]
        return target, "/mp4/" + _quoted(target) + params
    protocol, manifest = MANIFESTS[delivery_type]
    target = url_set(flavor_paths)
    return target, f"/{protocol}/{_quoted(target)}{params}/{manifest}"


def clip_parameters(clip: Clip) -> str:
    """``/clipFrom/<ms>/clipTo/<ms>`` (what is set of it), or nothing for the whole file."""
    parts = [f"/clipFrom/{clip.from_ms}"] if clip.from_ms else []
    return "".join(parts + ([f"/clipTo/{clip.to_ms}"] if clip.to_ms is not None else []))


def signed(url_path: str, entry_id: str, target: str, secret: str, expires: int) -> str:
    """``url_path`` under the signed prefix that the gateway checks for a secured entry."""
    return f"/s/{entry_id}/{sign_path(secret, target, expires)}{url_path}"


def license_prefix(entry_id: str) -> str:
    """What a ClearKey license URL's token signs: never a store path (those have no ':' prefix of this form)."""
    return f"clearkey:{entry_id}"


def license_url(entry_id: str, secret: str, expires: int) -> str:
    """``/s/<entry>/<token>/clearkey``: the W3C ClearKey license of an entry whose keys are derived."""
    return f"/s/{entry_id}/{sign_path(secret, license_prefix(entry_id), expires)}/clearkey"


def hls_key(secret: str, entry_id: str) -> bytes:
    """The entry's AES-128 key: derived, not stored, so every node serves the same key without shared state."""
    return hmac.new(secret.encode(), f"hls-aes-128:{entry_id}".encode(), hashlib.sha256).digest()[:16]


def encrypt_segment(key: bytes, media_sequence: int, data: bytes) -> bytes:
    """RFC 8216 §5.2 METHOD=AES-128: the whole segment, AES-128-CBC with PKCS#7 padding; with no IV attribute the
    IV is the segment's Media Sequence Number as a 16-byte big-endian integer."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(media_sequence.to_bytes(16, "big"))).encryptor()
    return encryptor.update(padded) + encryptor.finalize()
