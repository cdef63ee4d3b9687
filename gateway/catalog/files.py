"""Where the catalog's JSON files are kept: a directory (local or NFS), or the media's origin (S3 or HTTP).

One small interface for ``Catalog`` (reads) and the catalog writers (the CLI, recordings): ``list(kind)`` gives each
file's signature (what changes when the file does), ``read(rel)`` its bytes and signature, ``write(rel, data)``
replaces it whole, and ``lock()`` makes a read-modify-write safe:
- ``DirectoryFiles``: signature (mtime_ns, size, inode); writes are a temporary file renamed over the old one (a reader
  sees the old or the new version); ``lock()`` is an flock on ``<catalog>/.lock``.
- ``OriginFiles``: read through the store's pooled origin client (gateway/origin/origin_client.py). S3 lists with
  ListObjectsV2 (signature: the ETag) and writes with a conditional PUT: inside ``lock()``, a file read before is
  replaced only if its ETag is still the one read (``If-Match``), a file found missing is only created
  (``If-None-Match: *``); a lost race is CatalogConflict and the writer runs its read-modify-write again. An HTTP
  origin is read only (a plain web server has no conditional PUT): it lists a folder as nginx's
  ``autoindex_format json`` does (signature: its mtime and size), and writes are refused with what to do instead.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import os
import secrets
import stat
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

from .schema import CATALOG_DIR_NAME, CatalogError
from ..origin.errors import OriginError

__all__ = ["CatalogConflict", "CatalogFiles", "DirectoryFiles", "OriginFiles", "as_files", "origin_catalog",
           "origin_files",
           "write_json_atomic"]

MISSING = "missing"  # the signature lock() records for a file that was read and not found


class CatalogConflict(CatalogError):
    """Another writer changed the file between this writer's read and its write: read again and retry."""


class CatalogFiles(Protocol):
    where: str  # for messages
    identifies: bool  # whether flavor files can be stat'ed by identity (a directory store: hardlinks matter)

    def present(self) -> bool: ...
    def list(self, kind: str) -> dict[str, Any]: ...
    def read(self, rel: str) -> tuple[Any, bytes] | None: ...
    def write(self, rel: str, doc: Any) -> Any: ...
    def delete(self, rel: str) -> None: ...
    def lock(self) -> Any: ...


def as_files(directory: "Path | str | CatalogFiles") -> CatalogFiles:
    return DirectoryFiles(Path(directory)) if isinstance(directory, (str, os.PathLike)) else directory


def encode(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


class DirectoryFiles:
    identifies = True

    def __init__(self, directory: Path):
        self.dir = directory
        self.where = str(directory)

    def present(self) -> bool:
        return os.path.isdir(self.dir)

    def list(self, kind: str) -> dict[str, tuple[int, int, int]]:
        """{name: signature} of ``<kind>/*.json``; {} when the folder is missing, OSError when it cannot be listed."""
        try:
            names = [n for n in os.listdir(self.dir / kind) if n.endswith(".json") and not n.startswith(".")]
        except FileNotFoundError:
            return {}
        found = {}
        for name in names:
            try:
                st = os.stat(self.dir / kind / name)
            except FileNotFoundError:  # renamed away since the listing
                continue
            except OSError:  # an NFS hiccup: read() fails too, and the file's last version is kept
                found[name] = None
                continue
            found[name] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return found

    def read(self, rel: str) -> tuple[tuple[int, int, int], bytes] | None:
        """(signature, bytes) of the version read; FileNotFoundError if absent, None if not a regular file."""
        with open(self.dir / rel, "rb") as f:  # the signature of what we read, not of what was listed
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return None
            return (st.st_mtime_ns, st.st_size, st.st_ino), f.read()

    def write(self, rel: str, doc: Any) -> Path:
        write_json_atomic(self.dir / rel, doc)
        return self.dir / rel

    def delete(self, rel: str) -> None:
        """FileNotFoundError when there is no such file."""
        (self.dir / rel).unlink()
        _fsync_dir(self.dir / rel)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise read-modify-write commands (two operators on one partner) with flock on ``<catalog>/.lock``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write ``<name>.tmp.<pid>.<random>`` beside ``path``, fsync, rename over ``path``, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encode(doc))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path``'s directory durable."""
    dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class OriginFiles:
    """The catalog under ``<store>/.catalog/`` of a RemoteStore, through its client. Blocking methods: call them
    from threads other than the store's event loop (the gateway's executor, the CLI's main thread)."""

    identifies = False  # an object store has no hardlinks or symlinks: a flavor is known by its declared path
    page = 1000  # keys per S3 listing request (S3's most)

    def __init__(self, store, s3_location=None):
        self.store = store
        self.s3 = s3_location  # gateway.origin.s3.S3Location when the origin is an S3 bucket
        self.where = str(s3_location) + "/" + CATALOG_DIR_NAME if s3_location else store.base_url + CATALOG_DIR_NAME
        self._reads = threading.local()  # inside lock(): {rel: signature read}

    def present(self) -> bool:
        return True  # a listing that fails raises: the last view is kept (see Catalog._scan)

    def list(self, kind: str) -> dict[str, Any]:
        """{name: signature}; CatalogError when the origin cannot list the folder (the caller keeps what it has)."""
        try:
            return self.store._call(self._list(f"{CATALOG_DIR_NAME}/{kind}/"))
        except OriginError as e:
            raise CatalogError(f"{self.where}/{kind}: cannot list it: {e.reason}") from None

    async def _list(self, folder: str) -> dict[str, Any]:
        client = self.store.client
        if self.s3 is not None:
            from ..origin.s3 import list_url, parse_listing

            found, token, prefix = {}, None, self.s3.key(folder.rstrip("/")) + "/"
            while True:
                status, _, body = await client.send("GET", list_url(self.s3, folder, token, self.page), tries=1)
                if status != 200:
                    raise CatalogError(f"{self.where}: listing {folder} answered {status}")
                keys, token = parse_listing(body)
                found.update((k[len(prefix):], etag) for k, etag in keys.items()
                             if k.startswith(prefix) and _catalog_name(k[len(prefix):]))
                if token is None:
                    return found
        # one try: a listing that fails keeps the last view until the next ttl (no retries holding a refresh)
        status, _, body = await client.send("GET", self.store.url(folder.rstrip("/")) + "/", tries=1)
        if status == 404:
            return {}
        try:
            items = json.loads(body) if status == 200 else None
            return {i["name"]: (i["mtime"], i["size"]) for i in items
                    if i.get("type") == "file" and _catalog_name(i["name"])}
        except (ValueError, TypeError, KeyError):
            raise CatalogError(f"{self.where}: {folder} is not listed as JSON (status {status}); the origin must "
                               f"list the catalog's folders as nginx's `autoindex on; autoindex_format json;` does"
                               ) from None

    def read(self, rel: str) -> tuple[Any, bytes] | None:
        try:
            status, headers, body = self.store._call(self.store.client.send("GET", self.store.url(
                f"{CATALOG_DIR_NAME}/{rel}")))
        except OriginError as e:
            raise OSError(f"{self.where}/{rel}: {e.reason}") from None
        reads = getattr(self._reads, "seen", None)
        if status in (404, 410):
            if reads is not None:
                reads[rel] = MISSING
            raise FileNotFoundError(rel)
        if status != 200:
            raise OSError(f"{self.where}/{rel}: the origin answered {status}")
        signature = headers.get("ETag", "") if self.s3 is not None else (headers.get("Last-Modified", ""), len(body))
        if reads is not None:
            reads[rel] = signature
        return signature, body

    def _writable(self) -> None:
        if self.s3 is None:
            raise CatalogError(f"{self.where} cannot be written: an HTTP origin has no conditional PUT to make "
                               f"concurrent writers safe. Keep the catalog on a local or NFS directory: give it "
                               f"with --catalog DIR to these commands and to every gateway")

    def delete(self, rel: str) -> None:
        """FileNotFoundError when there is no such file. Not conditional (S3's DELETE ignores If-Match): a change
        written meanwhile by another operator is removed with the file."""
        self._writable()
        url = self.store.url(f"{CATALOG_DIR_NAME}/{rel}")
        if self.read(rel) is None:
            raise FileNotFoundError(rel)
        status, _, _ = self.store._call(self.store.client.send("DELETE", url))
        if status not in (200, 204):
            raise CatalogError(f"{self.where}/{rel}: the origin refused the delete ({status})")

    def write(self, rel: str, doc: Any) -> str:
        self._writable()
        headers = {"Content-Type": "application/json"}
        expected = getattr(self._reads, "seen", {}).get(rel)
        if expected == MISSING:
            headers["If-None-Match"] = "*"
        elif expected is not None:
            headers["If-Match"] = expected
        url = self.store.url(f"{CATALOG_DIR_NAME}/{rel}")
        status, _, body = self.store._call(self.store.client.send("PUT", url, headers, encode(doc)))
        if status in (409, 412) or (status == 404 and "If-Match" in headers):
            raise CatalogConflict(f"{rel}: changed by another writer meanwhile")
        if status != 200:
            raise CatalogError(f"{self.where}/{rel}: the origin refused the write ({status})")
        return f"{self.where}/{rel}"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Optimistic: remember the signature of each file read, so that write() replaces only that version."""
        outer = getattr(self._reads, "seen", None)
        self._reads.seen = {}
        try:
            yield
        finally:
            self._reads.seen = outer


def _catalog_name(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".") and "/" not in name


def origin_files(store, settings) -> OriginFiles:
    """The catalog files of a remote store (a RemoteStore, or a FallbackStore's primary) opened for ``settings``.
    On the store's event loop when one runs here, so that executor threads can read through it."""
    store = getattr(store, "primary", store)
    origin = settings.origin or ""
    location = None
    if origin.startswith("s3://"):
        from ..origin.s3 import location_for

        location = location_for(origin, settings)
    try:
        asyncio.get_running_loop()
        store._bind_loop()
    except RuntimeError:  # no loop in this thread: the caller binds one (the CLI's, gateway.runtime.catalog_cli)
        pass
    return OriginFiles(store, location)


@contextmanager
def origin_catalog(settings) -> Iterator[tuple[Any, OriginFiles]]:
    """(the RemoteStore of ``settings.origin``, its catalog files) for a process without an event loop of its own
    (the CLI, tests): the store runs on a loop in a thread, and its blocking calls are made from the caller's thread,
    as the gateway's executor threads make them."""
    from ..origin.remote import make_store

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="catalog-origin", daemon=True)
    thread.start()
    try:
        async def opened():
            store = make_store(settings)
            return store, origin_files(store, settings)

        store, files = asyncio.run_coroutine_threadsafe(opened(), loop).result()
        try:
            yield store, files
        finally:
            asyncio.run_coroutine_threadsafe(store.aclose(), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
