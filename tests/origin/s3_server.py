"""A real S3 API server for the tests: moto's standalone server on a loopback port (run by ``moto_serve.py``, which
makes its conditional writes atomic, as S3's are).

Signatures are enforced: after setup the fixture sets moto's "initial no-auth action count" to 0 (its
``/moto-api/reset-auth``, the server form of ``INITIAL_NO_AUTH_ACTION_COUNT``), so every later request must carry a
SigV4 signature that moto recomputes with the secret of a real IAM access key of its own, and an IAM policy must allow
the action. The keys are made by the fixture (an IAM user with ``s3:*``), never taken from the machine.

Use: ``from tests.origin.s3_server import s3_server, s3_env`` (pytest finds imported fixtures). ``s3_server`` is one
server for the session (moto needs a few seconds to start); tests put objects under their own keys. ``s3_env`` scopes
the AWS environment (credentials, region, no shared files of the machine, no instance-metadata look-ups) to one test.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import botocore.session
import pytest
from botocore.config import Config

from gateway.tools.load import terminate

REGION = "us-east-1"
BUCKET = "media"
START_TIMEOUT = 60.0  # moto imports every service backend on a busy 2-core machine
S3_ALL = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
S3_AND_ROLE = ('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*", "sts:AssumeRole"], '
               '"Resource": "*"}]}')
TRUST_ANYONE = ('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", '
                '"Principal": {"AWS": "*"}}]}')


def isolated_aws_env(home: Path) -> dict[str, str]:
    """AWS variables that make botocore see nothing of this machine: no credentials, no ~/.aws, no instance role."""
    return {
        "AWS_CONFIG_FILE": str(home / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",  # never a look-up at 169.254.169.254 (not loopback)
    }


def without_aws(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("AWS_")}


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    keys: list[tuple[str, str]]  # two valid (access key id, secret) of one IAM user allowed s3:* and AssumeRole
    role_arn: str  # a role allowed s3:*, to assume for temporary credentials (with a session token)
    home: Path  # a scratch directory for config files
    process: subprocess.Popen = field(repr=False)
    bucket: str = BUCKET
    region: str = REGION
    _clients: dict = field(default_factory=dict, repr=False)

    @property
    def access_key(self) -> str:
        return self.keys[0][0]

    @property
    def secret_key(self) -> str:
        return self.keys[0][1]

    def env(self, key: int = 0) -> dict[str, str]:
        """The AWS environment of a process that uses this server: ``gateway serve --store s3://media/...`` needs
        nothing else (AWS_ENDPOINT_URL_S3 is the endpoint, as for the AWS CLI)."""
        return {**isolated_aws_env(self.home), "AWS_ACCESS_KEY_ID": self.keys[key][0],
                "AWS_SECRET_ACCESS_KEY": self.keys[key][1], "AWS_DEFAULT_REGION": self.region,
                "AWS_ENDPOINT_URL_S3": self.endpoint}

    def client(self, service: str = "s3", key: int = 0):
        """A botocore client with explicit keys (reads no AWS file or variable of this machine), made once."""
        if (service, key) not in self._clients:
            self._clients[service, key] = client(service, self.endpoint, *self.keys[key])
        return self._clients[service, key]

    def put(self, key: str, data: bytes | Path) -> str:
        """Upload an object (a file's bytes or ``data``) and return its ETag."""
        body = data.read_bytes() if isinstance(data, Path) else data
        return self.client().put_object(Bucket=self.bucket, Key=key, Body=body)["ETag"]

    def upload(self, files: dict[str, Path]) -> None:
        for key, path in files.items():
            self.put(key, path)

    @contextmanager
    def signatures_unchecked(self):
        """moto checks no signature inside (it cannot check those of keys with non-ASCII or ``+!$&'()*,:;=@%``:
        it rebuilds the canonical URI from werkzeug's ``request.url``, which leaves them unencoded)."""
        set_auth(self.endpoint, "inf")
        try:
            yield
        finally:
            set_auth(self.endpoint, "0")


def client(service: str, endpoint: str, access_key: str, secret_key: str):
    session = botocore.session.Session()
    session.set_config_variable("config_file", os.devnull)  # not ~/.aws/config of whoever runs the tests
    session.set_config_variable("credentials_file", os.devnull)
    return session.create_client(service, region_name=REGION, endpoint_url=endpoint, aws_access_key_id=access_key,
                                 aws_secret_access_key=secret_key,
                                 config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    """moto's server (``moto_serve.py``) on port 0 of 127.0.0.1; the URL comes from its banner in the log file (a
    file, not a pipe: moto logs every request and must never block on a full pipe)."""
    import moto  # a test dependency (moto[server]); imported here to fail with its name rather than a dead process

    env = {**without_aws(dict(os.environ)), **isolated_aws_env(log.parent)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("moto_serve.py")), "127.0.0.1", "0"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise AssertionError(f"moto {moto.__version__} server did not start: {log.read_text(errors='replace')[-3000:]}")


def set_auth(endpoint: str, unchecked: str) -> None:
    """From now on the first ``unchecked`` requests pass unauthenticated ("0": none, "inf": all)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=unchecked.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})  # not a form: moto reads the raw body
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200, r.read()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    home = tmp_path_factory.mktemp("s3")
    proc, endpoint = start_moto(home / "moto.log")
    try:
        iam = client("iam", endpoint, "setup", "setup")  # before enforcement any key passes
        iam.create_user(UserName="gateway")
        iam.put_user_policy(UserName="gateway", PolicyName="s3-all", PolicyDocument=S3_AND_ROLE)
        role_arn = iam.create_role(RoleName="reader", AssumeRolePolicyDocument=TRUST_ANYONE)["Role"]["Arn"]
        iam.put_role_policy(RoleName="reader", PolicyName="s3-all", PolicyDocument=S3_ALL)
        keys = []
        for _ in range(2):
            made = iam.create_access_key(UserName="gateway")["AccessKey"]
            keys.append((made["AccessKeyId"], made["SecretAccessKey"]))
        set_auth(endpoint, "0")
        server = S3Server(endpoint, keys, role_arn, home, proc)
        server.client().create_bucket(Bucket=BUCKET)  # signed and checked already
        yield server
    finally:
        terminate(proc, 10)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """This test's os.environ: the server's first key and region, nothing of the machine's AWS setup."""
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server
