"""Fixtures for the emulated cloud: ``moto`` (session) and ``cloud`` (per test). See tests/aws/harness."""
from __future__ import annotations

import json
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.aws.harness import Cloud, HarnessErrors
from tests.aws.harness.elasticache import ElastiCacheStandIn
from tests.aws.harness import gaps
from tests.aws.harness.authz import LAPTOP_KEY, PolicyEvaluator, ensure_boundary
from tests.aws.harness.enforce import Enforcement, Identities, admin_front
from tests.aws.harness.moto_server import MotoServer, ensure_al2023_parameter
from tests.aws.harness.proxy import FaultProxy
from tests.aws.harness.runner import InstanceRunner
from tests.aws.harness.tagging import HARNESS_KEY
from tests.aws.harness.tls import TlsFiles, make_tls

REGION = "us-east-1"


def aws_toml(run: dict[str, Any] | None = None, **aws: Any) -> str:
    """An mcc.toml for the emulated cloud: backend aws, small types, fast ticks. ``run`` overrides top-level
    keys, keyword arguments the [aws] table (None leaves a key out)."""
    top = {"chunk_size": 5, "workers": 2, "lease_seconds": 4, "backend": "aws", **(run or {})}
    table = {"region": REGION, "worker_type": "t3.micro", "manager_type": "t3.micro", "tick_seconds": 0.5, **aws}

    def lines(values: dict[str, Any]) -> str:  # JSON strings, lists, numbers and booleans are TOML too
        return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items() if v is not None)

    return lines(top) + "\n[aws]\n" + lines(table)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and a 127.0.0.1/localhost server certificate, made once per session."""
    if not shutil.which("openssl"):
        pytest.skip("the emulated cloud needs the openssl command")
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto_server for the session (``.url``, ``.reset()``), killed at the end."""
    if not shutil.which("moto_server"):
        pytest.skip("the emulated cloud needs moto_server (pip install 'moto[server]')")
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture
def cloud(moto: MotoServer, tls_files: TlsFiles, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    """A fresh emulated cloud: moto reset, fault proxy, ElastiCache stand-in, instance runner, env set."""
    moto.reset()
    with emulated_cloud(moto.url, tls_files, tmp_path / "cloud", monkeypatch) as c:
        yield c


@contextmanager
def emulated_cloud(moto_url: str, tls_files: TlsFiles, root: Path, monkeypatch: pytest.MonkeyPatch,
                   ids: Identities | None = None) -> Iterator[Cloud]:
    """The ``cloud`` fixture on the moto at ``moto_url``. With ``ids`` (a moto enforcing IAM, bootstrapped by
    harness/enforce.py) the laptop signs as the laptop user, instances with STS sessions of their roles, and
    the harness's direct clients reach moto through an admin front; ``Cloud.enforcement`` records moto's
    refusals."""
    errors = HarnessErrors()
    secret = ids.laptop.secret_key if ids else "mcc-test-secret-" + secrets.token_hex(12)
    front = admin_front(moto_url, ids.admin, errors) if ids else None
    direct_url = front.url if front else moto_url
    proxy = FaultProxy(moto_url, errors=errors).start()
    elasticache = ElastiCacheStandIn(tls_files, root / "elasticache", errors=errors).attach(proxy)
    runner = InstanceRunner(direct_url, proxy.url, root / "instances", secret_key=secret,
                            ca_bundle=tls_files.bundle, region=REGION, errors=errors)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_SERVICE_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ids.laptop.access_key if ids else LAPTOP_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(root / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(root / "no-aws-credentials"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.bundle))
    c = Cloud(url=proxy.url, moto_url=direct_url, proxy=proxy, runner=runner, elasticache=elasticache,
              secret_key=secret, region=REGION, ca_file=str(tls_files.ca_cert), errors=errors)
    c.bucket_policies = gaps.attach_all(proxy, c.client("ec2")).policies
    c.authz = PolicyEvaluator(c.client, runner, c.bucket_policies, REGION,
                              laptop_keys=(ids.laptop.access_key,) if ids else ()).attach(proxy)
    if ids:
        c.enforcement = Enforcement(ids, lambda: c.client("iam"), lambda: c.client("sts"), c.authz.who,
                                    harness_keys=(HARNESS_KEY,)).attach(proxy)
        runner.sessions = c.enforcement.session
    try:
        ensure_al2023_parameter(c.client("ssm"), c.client("ec2"), proxy)
        ensure_boundary(c.client("iam"))  # as the account's administrator, once (README: AWS setup, step 4)
        runner.start()
        yield c
    finally:
        runner.stop()
        elasticache.stop()
        proxy.stop()
        if front:
            front.stop()
    assert not errors, "emulated cloud reported errors:\n" + "\n".join(errors)
    assert not c.authz.failures, "AWS would refuse these calls (tests/aws/harness/authz.py):\n" + "\n".join(c.authz.failures)
