"""S3 stores against a real S3 API server (moto's, signatures enforced: tests/origin/s3_server.py).

What is proven here: requests signed by ``S3Signer`` (botocore's SigV4) are accepted and return the exact bytes of the
uploaded file; unsigned, badly signed, tampered and wrongly keyed requests are refused; keys are encoded as AWS's own
client encodes them; store paths cannot leave the prefix; credentials come from the environment, a shared
credentials file, a session token, or a credential process that is re-run when they near expiry; conditional PUT
creates only, replaces only what was read, and says "changed meanwhile" otherwise, also when writers race.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import aiohttp
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from yarl import URL

from fixtures.generate import fixture_path
from gateway.origin.origin_client import OriginChanged, OriginClient
from gateway.origin.remote import RemoteStore
from gateway.origin.s3 import (ObjectChanged, S3ConfigError, S3Error, S3Location, S3Signer, get_object, origin_for,
                               put_object, resolve_region)
from packagers.errors import ErrorCode, PackagerError
from tests.gateway.processes import gateways  # noqa: F401  (a fixture: real `gateway serve` processes)
from tests.origin.s3_server import isolated_aws_env, s3_env, s3_server  # noqa: F401  (fixtures)

MEDIA = "title_180p.mp4"
# keys moto can check signatures of (ASCII without +!$&'()*,:;=@%) and keys it cannot (see signatures_unchecked)
CHECKABLE_KEYS = ["plain.mp4", "with space/a b.mp4", "tilde~dash-under_score.dot.mp4", "deep/er/path/x.mp4"]
UNCHECKABLE_KEYS = ["plus+sign.mp4", "ünïcødé/日本語 ファイル.mp4", "sub!$&'()*,;=:@delims.mp4", "percent%20.mp4"]


def fetch(method: str, url: str, headers: dict[str, str], data: bytes | None = None) -> tuple[int, dict, bytes]:
    """One request through aiohttp (the client the gateway reads origins with)."""
    async def go():
        async with aiohttp.ClientSession() as session:
            # encoded=True: the request line carries our encoding of the key, which the signature covers (given a
            # str, yarl would decode %21 and other sub-delimiters: the object named would not be the one signed)
            async with session.request(method, URL(url, encoded=True), headers=headers, data=data) as r:
                return r.status, r.headers.copy(), await r.read()

    return asyncio.run(go())


def location(server, prefix: str = "") -> S3Location:
    return S3Location.parse(f"s3://{server.bucket}/{prefix}", endpoint=server.endpoint)


# --- locations ---------------------------------------------------------------------------------------------------
@pytest.fixture
def no_aws_env(monkeypatch, tmp_path) -> None:
    """Nothing of this machine's AWS setup (an AWS_ENDPOINT_URL or a profile's endpoint_url would move the URLs)."""
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in isolated_aws_env(tmp_path).items():
        monkeypatch.setenv(name, value)


def test_location_urls_path_style_with_an_endpoint_and_virtual_hosted_on_aws(no_aws_env) -> None:
    loc = S3Location.parse("s3://media/a b/c/", endpoint="http://127.0.0.1:9000/", region="eu-west-1")
    assert (loc.bucket, loc.prefix, loc.region) == ("media", "a b/c", "eu-west-1")
    assert loc.base_url == "http://127.0.0.1:9000/media/a%20b/c/"
    assert loc.url("x/y z.mp4") == "http://127.0.0.1:9000/media/a%20b/c/x/y%20z.mp4"
    assert loc.key("x/y z.mp4") == "a b/c/x/y z.mp4" and loc.describe("v.mp4") == "s3://media/a b/c/v.mp4"
    assert S3Location.parse("s3://media", region="eu-west-1").base_url == "https://media.s3.eu-west-1.amazonaws.com/"
    # bucket names with dots: path-style, the *.s3 certificate does not cover their virtual host
    assert S3Location.parse("s3://my.media/p", region="eu-west-1").url("f") == \
        "https://s3.eu-west-1.amazonaws.com/my.media/p/f"
    assert S3Location.parse("s3://media", endpoint="https://s3.example:443").base_url == "https://s3.example/media/"
    for bad in ("http://media/p", "s3:///p", "s3://Media", "s3://a", "s3://me_dia", "s3://media/p?x=1",
                "s3://media/a/../b", "s3://media/./b"):
        with pytest.raises(S3ConfigError):
            S3Location.parse(bad, region="us-east-1")
    with pytest.raises(S3ConfigError, match="endpoint"):
        S3Location.parse("s3://media", endpoint="127.0.0.1:9000")


@pytest.mark.parametrize("path", ["../secret.mp4", "a/../../b.mp4", "/etc/passwd", "a\x00.mp4", "", "a//b.mp4",
                                  "./a.mp4", "a/..", "a\\..\\b.mp4"])
def test_store_paths_cannot_leave_the_prefix(path: str) -> None:
    loc = S3Location.parse("s3://media/tenant", endpoint="http://127.0.0.1:9000")
    for name in (loc.key, loc.url):
        with pytest.raises(PackagerError) as caught:
            name(path)
        assert caught.value.code is ErrorCode.NOT_FOUND, caught.value  # as a missing file: a probe learns nothing
        assert "/tenant" not in caught.value.message


class NoBody:
    def stream(self, **kwargs):
        return iter([b""])


def botocore_url(key: str, endpoint: str | None, region: str) -> str:
    """The URL botocore's own S3 client sends for HeadObject (the URL of GetObject too) of ``key``, captured before
    sending: nothing is sent."""
    session = botocore.session.Session()
    client = session.create_client("s3", region_name=region, endpoint_url=endpoint, aws_access_key_id="AKIDEXAMPLE",
                                   aws_secret_access_key="secret",
                                   config=Config(s3={"addressing_style": "path" if endpoint else "virtual"}))
    sent = []

    def capture(request, **kwargs):
        sent.append(request.url)
        return AWSResponse(request.url, 200, {}, NoBody())

    client.meta.events.register("before-send.s3.HeadObject", capture)
    client.head_object(Bucket="media", Key=key)
    return sent[0]


@pytest.mark.parametrize("key", CHECKABLE_KEYS + UNCHECKABLE_KEYS)
def test_keys_are_encoded_as_the_aws_client_encodes_them(no_aws_env, key: str) -> None:
    """AWS verifies the signature over its own encoding of the key: ours must be the same text (and the client must
    send it as is: OriginClient passes ``URL(url, encoded=True)``, see test_the_origin_client_reads...)."""
    path_style = S3Location.parse("s3://media", endpoint="http://127.0.0.1:9000", region="eu-west-1")
    assert path_style.url(key) == botocore_url(key, "http://127.0.0.1:9000", "eu-west-1")
    virtual = S3Location.parse("s3://media", region="eu-west-1")
    assert virtual.url(key) == botocore_url(key, None, "eu-west-1")
    assert RemoteStore(path_style.base_url).url(key) == path_style.url(key)  # what the gateway's reads ask for


# --- signed reads against the server ------------------------------------------------------------------------------
def test_signed_head_and_range_gets_return_the_uploaded_bytes(s3_env) -> None:
    local = fixture_path(MEDIA).read_bytes()
    loc = location(s3_env, "signed reads")
    etag = s3_env.put(loc.key("title 180p.mp4"), local)
    signer = S3Signer()
    assert signer.method == "env" and signer.region == "us-east-1"
    url = loc.url("title 180p.mp4")

    status, headers, _ = fetch("HEAD", url, signer("HEAD", url, {}))
    assert status == 200 and int(headers["Content-Length"]) == len(local) and headers["ETag"] == etag
    size = len(local)
    for start, stop in [(0, 8), (0, 4096), (size // 3, size // 3 + 65536), (size - 1000, size)]:
        sent = signer("GET", url, {"Range": f"bytes={start}-{stop - 1}"})
        assert sent["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
        assert "range" in sent["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
        status, headers, body = fetch("GET", url, sent)
        assert status == 206, body[:300]
        assert body == local[start:stop] and headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}"


@pytest.mark.parametrize("key", [MEDIA, "sub!$&'()*,;=:@delims.mp4"])
def test_the_origin_client_reads_an_s3_object_through_the_signer(s3_env, key: str) -> None:
    """The seam the remote store uses: OriginClient signs each request (HEAD, then ranged GETs with If-Match). For
    the key with sub-delimiters (whose signature moto cannot check), it proves the client sends our encoding as is:
    re-quoted by yarl, moto names another object (404)."""
    local = fixture_path(MEDIA).read_bytes()
    base_url, signer = origin_for(f"s3://{s3_env.bucket}/client/", type("S", (), {"s3_endpoint": s3_env.endpoint}))
    url = base_url + S3Location.parse("s3://media").url(key).rsplit("/", 1)[1]

    async def go():
        client = OriginClient(base_url, signer=signer)
        try:
            info = await client.head(url)
            return info, await client.get_range(url, info, 100, 70_000)
        finally:
            await client.close()

    checked = key == MEDIA
    with contextlib.nullcontext() if checked else s3_env.signatures_unchecked():
        s3_env.put(location(s3_env, "client").key(key), local)
        info, data = asyncio.run(go())
    assert info.size == len(local) and info.etag
    assert data == local[100:70_000]


def test_an_object_replaced_between_head_and_read_is_detected(s3_env) -> None:
    """The ETag of the HEAD goes with every ranged GET as If-Match (signed): S3 answers 412 for a replaced object,
    which the client reports as changed, never with the new object's bytes."""
    base_url, signer = origin_for(f"s3://{s3_env.bucket}/replaced/", type("S", (), {"s3_endpoint": s3_env.endpoint}))
    key = location(s3_env, "replaced").key("v.mp4")
    s3_env.put(key, b"a" * 5000)

    async def go():
        client = OriginClient(base_url, signer=signer)
        try:
            info = await client.head(base_url + "v.mp4")
            assert await client.get_range(base_url + "v.mp4", info, 0, 10) == b"a" * 10
            s3_env.put(key, b"b" * 5000)  # same size: only the validator tells
            with pytest.raises(OriginChanged):
                await client.get_range(base_url + "v.mp4", info, 10, 20)
        finally:
            await client.close()

    asyncio.run(go())


@pytest.mark.parametrize("key", CHECKABLE_KEYS)
def test_keys_with_spaces_and_subfolders_are_read_with_checked_signatures(s3_env, key: str) -> None:
    loc = location(s3_env, "keys")
    body = f"object {key}".encode() * 50
    s3_env.put(loc.key(key), body)
    url = loc.url(key)
    status, _, got = fetch("GET", url, S3Signer()("GET", url, {"Range": "bytes=3-40"}))
    assert (status, got) == (206, body[3:41])


@pytest.mark.parametrize("key", UNCHECKABLE_KEYS)
def test_keys_with_plus_unicode_and_delimiters_name_the_right_object(s3_env, key: str) -> None:
    """moto cannot check these signatures (see signatures_unchecked); that the encoding is AWS's own is proven by
    test_keys_are_encoded_as_the_aws_client_encodes_them; here: the URL reaches exactly that object."""
    loc = location(s3_env, "keys")
    body = f"object {key}".encode() * 50
    with s3_env.signatures_unchecked():
        s3_env.put(loc.key(key), body)
        if "+" in key:  # S3 reads an unencoded '+' in a path as a space (moto does not; the encoding test does)
            s3_env.put(loc.key(key.replace("+", " ")), b"the decoy a '+' decoded as a space would name")
        url = loc.url(key)
        status, _, got = fetch("GET", url, S3Signer()("GET", url, {"Range": "bytes=3-40"}))
    assert (status, got) == (206, body[3:41])


def test_unsigned_badly_signed_and_tampered_requests_are_refused(s3_env) -> None:
    loc = location(s3_env, "refused")
    s3_env.put(loc.key("f.bin"), b"x" * 1000)
    url = loc.url("f.bin")
    good = S3Signer()("GET", url, {"Range": "bytes=0-9"})
    assert fetch("GET", url, good)[0] == 206  # the same request, rightly signed, passes

    assert fetch("GET", url, {"Range": "bytes=0-9"})[0] == 403  # no signature at all
    forged = dict(good, Authorization=good["Authorization"][:-6] + "000000")
    status, _, body = fetch("GET", url, forged)
    assert status == 403 and b"SignatureDoesNotMatch" in body
    status, _, body = fetch("GET", url, dict(good, Range="bytes=0-999"))  # the signed Range, changed afterwards
    assert status == 403 and b"SignatureDoesNotMatch" in body
    status, _, body = fetch("GET", loc.url("other.bin"), good)  # the signature of another key
    assert status == 403 and b"SignatureDoesNotMatch" in body


def test_a_wrong_secret_or_an_unknown_key_is_refused(s3_env, monkeypatch) -> None:
    loc = location(s3_env, "refused")
    s3_env.put(loc.key("g.bin"), b"y" * 100)
    url = loc.url("g.bin")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    status, _, body = fetch("GET", url, S3Signer()("GET", url, {}))
    assert status == 403 and b"SignatureDoesNotMatch" in body
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    status, _, body = fetch("GET", url, S3Signer()("GET", url, {}))
    assert status == 403 and b"InvalidAccessKeyId" in body


# --- credentials and region ---------------------------------------------------------------------------------------
def test_credentials_and_region_from_a_shared_credentials_file_and_profile(s3_env, monkeypatch, tmp_path) -> None:
    loc = location(s3_env, "profiles")
    s3_env.put(loc.key("p.bin"), b"profile" * 100)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)
    credentials, config = tmp_path / "credentials", tmp_path / "config"
    key, secret = s3_env.keys[1]
    credentials.write_text(f"[media]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
    config.write_text("[profile media]\nregion = us-east-1\n[default]\nregion = eu-north-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    with pytest.raises(S3ConfigError, match="no AWS credentials"):  # the default profile has none
        S3Signer()
    assert resolve_region() == "eu-north-1"
    monkeypatch.setenv("AWS_PROFILE", "media")
    signer = S3Signer()
    assert (signer.method, signer.region) == ("shared-credentials-file", "us-east-1")
    url = loc.url("p.bin")
    status, _, body = fetch("GET", url, signer("GET", url, {"Range": "bytes=0-6"}))
    assert (status, body) == (206, b"profile")
    assert f"Credential={key}/" in signer("GET", url, {})["Authorization"]
    monkeypatch.setenv("AWS_REGION", "ap-south-1")  # the newer SDKs' variable wins over the profile's region
    assert S3Signer().region == "ap-south-1" and S3Signer(region="us-west-2").region == "us-west-2"
    monkeypatch.setenv("AWS_PROFILE", "nosuchprofile")
    with pytest.raises(S3ConfigError, match="nosuchprofile"):
        S3Signer()


def test_session_tokens_of_an_assumed_role_are_sent(s3_env, monkeypatch) -> None:
    loc = location(s3_env, "roles")
    s3_env.put(loc.key("r.bin"), b"role" * 100)
    sts = s3_env.client("sts")
    temporary = sts.assume_role(RoleArn=s3_env.role_arn, RoleSessionName="gateway")["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", temporary["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", temporary["SecretAccessKey"])
    url = loc.url("r.bin")
    status, _, body = fetch("GET", url, S3Signer()("GET", url, {}))  # the token is missing: refused
    assert status == 403, body
    monkeypatch.setenv("AWS_SESSION_TOKEN", temporary["SessionToken"])
    sent = S3Signer()("GET", url, {"Range": "bytes=0-3"})
    assert sent["X-Amz-Security-Token"] == temporary["SessionToken"]
    status, _, body = fetch("GET", url, sent)
    assert (status, body) == (206, b"role"), body


def test_expiring_credentials_are_read_again(s3_env, monkeypatch, tmp_path) -> None:
    """A credential process (AWS's ``credential_process``) whose credentials are near expiry is run again by
    botocore: a key rotated in between is used by the next signature, without a new signer."""
    loc = location(s3_env, "rotation")
    s3_env.put(loc.key("k.bin"), b"rotate" * 100)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    current, runs = tmp_path / "current.json", tmp_path / "runs"
    process = tmp_path / "credentials.py"
    # expiring within botocore's advisory refresh window (15 min) but past its mandatory one (10 min)
    process.write_text(
        "import json, pathlib, sys\n"
        f"pathlib.Path({str(runs)!r}).open('a').write('x')\n"
        f"key, secret = json.loads(pathlib.Path({str(current)!r}).read_text())\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': key, 'SecretAccessKey': secret, 'Expiration': sys.argv[1]}))\n")
    expires = (datetime.now(timezone.utc) + timedelta(minutes=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = tmp_path / "config"
    config.write_text(f"[default]\ncredential_process = {sys.executable} {process} {expires}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    current.write_text(json.dumps(s3_env.keys[0]))
    signer = S3Signer()
    url = loc.url("k.bin")
    first = signer("GET", url, {})
    assert f"Credential={s3_env.keys[0][0]}/" in first["Authorization"]
    assert fetch("GET", url, first)[0] == 200
    current.write_text(json.dumps(s3_env.keys[1]))  # the process now hands out the other key
    second = signer("GET", url, {})
    assert f"Credential={s3_env.keys[1][0]}/" in second["Authorization"]
    assert fetch("GET", url, second)[0] == 200
    assert len(runs.read_text()) >= 2


def test_no_credentials_is_said_at_startup(s3_env, monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    with pytest.raises(S3ConfigError, match="no AWS credentials found"):
        S3Signer()


def test_signing_from_many_threads_at_once(s3_env) -> None:
    """The signer is called from the event loop and from executor threads: every signature made concurrently is
    valid for its own request."""
    from concurrent.futures import ThreadPoolExecutor

    loc = location(s3_env, "threads")
    s3_env.put(loc.key("t.bin"), bytes(range(256)) * 40)
    signer, url = S3Signer(), loc.url("t.bin")
    ranges = [(i * 37, i * 37 + 99) for i in range(64)]
    with ThreadPoolExecutor(8) as pool:
        signed = list(pool.map(lambda r: signer("GET", url, {"Range": f"bytes={r[0]}-{r[1]}"}), ranges))

    async def go():
        async with aiohttp.ClientSession() as session:
            async def one(headers):
                async with session.get(url, headers=headers) as r:
                    return r.status, await r.read()
            return await asyncio.gather(*(one(h) for h in signed))

    data = bytes(range(256)) * 40
    assert asyncio.run(go()) == [(206, data[a:b + 1]) for a, b in ranges]


# --- conditional PUT (the catalog) --------------------------------------------------------------------------------
def test_conditional_put_creates_only_and_replaces_only_what_was_read(s3_env) -> None:
    loc, signer = location(s3_env, "catalog"), S3Signer()
    name = f".catalog-{time.monotonic_ns()}"
    assert get_object(loc, name, signer) is None
    first = put_object(loc, name, b'{"v": 1}', signer, if_none_match=True)
    assert first and get_object(loc, name, signer) == (b'{"v": 1}', first)
    with pytest.raises(ObjectChanged, match="changed meanwhile"):  # another editor created it first
        put_object(loc, name, b'{"v": "other"}', signer, if_none_match=True)
    second = put_object(loc, name, b'{"v": 2}', signer, if_match=first)
    assert second != first and get_object(loc, name, signer) == (b'{"v": 2}', second)
    with pytest.raises(ObjectChanged, match=r"412 PreconditionFailed"):  # a write based on the old version
        put_object(loc, name, b'{"v": "stale"}', signer, if_match=first)
    assert get_object(loc, name, signer) == (b'{"v": 2}', second)  # nothing was written
    with pytest.raises(ObjectChanged):  # replacing what is no longer there
        put_object(loc, name + ".gone", b"{}", signer, if_match=second)
    assert put_object(loc, name, b'{"v": 3}', signer) != second  # unconditional


def test_concurrent_conditional_puts_of_one_version_have_one_winner(s3_env) -> None:
    """Eight writers replace the version they all read at once: one wins, the others are told it changed (S3's
    contract, which the catalog's writers rely on; moto alone let two win now and then: tests/origin/moto_serve.py)."""
    loc, signer = location(s3_env, "catalog"), S3Signer()
    name = f".catalog-race-{time.monotonic_ns()}"
    etag = put_object(loc, name, b"{}", signer)

    def replace(writer: int) -> str | None:
        try:
            return put_object(loc, name, json.dumps({"writer": writer}).encode(), signer, if_match=etag)
        except ObjectChanged:
            return None

    with ThreadPoolExecutor(8) as pool:
        for _ in range(30):
            etag = put_object(loc, name, b"{}", signer)
            won = [(w, tag) for w, tag in enumerate(pool.map(replace, range(8))) if tag is not None]
            assert len(won) == 1, won
            assert get_object(loc, name, signer) == (json.dumps({"writer": won[0][0]}).encode(), won[0][1])


def test_put_signs_its_body(s3_env) -> None:
    """The payload hash of a PUT is signed: headers claiming another body are refused and nothing is written. (That
    the body matches the claimed hash is then the server's check: S3 makes it, moto does not.)"""
    loc, signer = location(s3_env, "catalog"), S3Signer()
    body, forged, url = b'{"entries": []}', b'{"entries": ["forged"]}', loc.url("body.json")
    sent = signer("PUT", url, {"Content-Type": "application/json"}, body=body)
    assert sent["X-Amz-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    claimed = dict(sent, **{"X-Amz-Content-SHA256": hashlib.sha256(forged).hexdigest()})
    status, _, answer = fetch("PUT", url, claimed, forged)
    assert status == 403 and b"SignatureDoesNotMatch" in answer
    assert get_object(loc, "body.json", signer) is None
    assert fetch("PUT", url, sent, body)[0] == 200
    assert get_object(loc, "body.json", signer)[0] == body


def test_put_and_get_errors_name_the_object(s3_env) -> None:
    loc = S3Location.parse("s3://no-such-bucket/p", endpoint=s3_env.endpoint)
    with pytest.raises(S3Error) as caught:
        put_object(loc, "x.json", b"{}", S3Signer())
    assert caught.value.status == 404 and caught.value.code == "NoSuchBucket"
    assert "put_object: s3://no-such-bucket/p/x.json answered 404 NoSuchBucket" in str(caught.value)
    down = S3Location.parse("s3://media", endpoint="http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(S3Error, match="127.0.0.1:9"):
        get_object(down, "x.json", S3Signer(), timeout=5)


# --- the whole gateway on an S3 store -----------------------------------------------------------------------------
SAME_AS_LOCAL = ["hls/{name}/master.m3u8", "hls/{name}/index.m3u8", "hls/{name}/seg-1-v1-a1.ts",
                 "hls/{name}/seg-2-v1-a1.ts", "dash/{name}/manifest.mpd", "dash/{name}/init-v1.mp4",
                 "dash/{name}/fragment-1-v1.m4s", "dash/{name}/fragment-2-a1.m4s", "mss/{name}/manifest",
                 "hds/{name}/manifest.f4m", "hls/{name}/clipFrom/2000/clipTo/7000/seg-1-v1-a1.ts", "mp4/{name}"]


def test_gateway_serve_on_an_s3_store_answers_as_on_the_local_store(s3_env, gateways, tmp_path) -> None:
    """`gateway serve --store s3://bucket/prefix/` (endpoint from AWS_ENDPOINT_URL_S3, keys from the environment):
    every protocol's bytes equal those of the same file served from a directory; a missing key is 404."""
    name = "title 180p.mp4"
    local_store = tmp_path / "local"
    local_store.mkdir()
    (local_store / name).write_bytes(fixture_path(MEDIA).read_bytes())
    s3_env.put(f"e2e/{name}", fixture_path(MEDIA))
    local = gateways(store=local_store)
    remote = gateways("--state-dir", str(tmp_path / "state"), store=f"s3://{s3_env.bucket}/e2e/")

    def get(base: str, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"{base}/{path}", timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    for template in SAME_AS_LOCAL:
        path = template.format(name=quote(name))
        expected = get(local.base, path)
        assert expected[0] == 200, (path, expected)
        assert get(remote.base, path) == expected, path
    assert get(remote.base, "hls/missing.mp4/index.m3u8")[0] == 404
