"""A real moto_server over HTTP for the AWS tests (imported by the test modules; no conftest of ours)."""
from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
import uuid
from typing import Iterator

import pytest

from mcc.providers.aws.clients import AwsContext
from mcc.providers.base import ResourceSpec, ownership_tags
from tests.aws.harness import direct_client, gaps
from tests.aws.harness.proxy import FaultProxy

REGION = "us-east-1"
SERVER_ENV = {
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
    "MOTO_ENABLE_AMI_VALIDATION": "true",
    "MOTO_ENABLE_KEYPAIR_VALIDATION": "true",
}
CLIENT_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """Start ``moto_server`` on a free loopback port; yield the URL of a proxy in front of it that closes
    moto's gaps; stop both (moto by its own pid) afterwards."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **SERVER_ENV, **CLIENT_ENV}
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start on {url}")
            time.sleep(0.1)
        # moto's gaps closed the one way (tests/aws/harness/gaps.py): a fault proxy in front, faults unused
        proxy = FaultProxy(url).start()
        gaps.attach_all(proxy, direct_client("ec2", url, CLIENT_ENV["AWS_SECRET_ACCESS_KEY"], REGION))
        try:
            yield proxy.url
        finally:
            proxy.stop()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 at the moto server for this test only."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    for name, value in CLIENT_ENV.items():
        monkeypatch.setenv(name, value)
    return moto_endpoint


def new_ctx(ledger_uuid: str | None = None) -> AwsContext:
    return AwsContext.create(ledger_uuid or str(uuid.uuid4()), region=REGION)


@pytest.fixture
def aws_ctx(aws_env: str) -> AwsContext:
    """A context for a fresh ledger (moto's state is shared by the module; ledgers keep tests apart)."""
    return new_ctx()


def make_spec(ctx: AwsContext, kind: str, name: str, params: dict, run_id: str | None = "run-1",
              key: str | None = None) -> ResourceSpec:
    """A spec as the engine would write it ahead of the call."""
    key = key or f"{run_id or 'ledger'}/{kind}/{name}/{uuid.uuid4().hex[:6]}"
    return ResourceSpec(kind, name, key, ownership_tags(ctx.ledger_uuid, run_id, key, name), params)
