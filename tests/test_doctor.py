"""`mcc doctor`: the local essentials pass here; AWS problems are ✗ lines with a fix, never a traceback."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from mcc.report import doctor
from mcc.ledger import open_ledger
from tests.conftest import mcc

AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
            "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def fake_aws(no_aws: None, monkeypatch: pytest.MonkeyPatch) -> str:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return endpoint


def by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_local_essentials(mcc_home: Path, no_aws: None) -> None:
    report = doctor.run_checks(mcc_home, aws=False)
    checks = by_name(report)
    assert report["ok"]
    assert checks["python"]["ok"] and checks["package numpy"]["ok"] and checks["redis-server"]["ok"]
    assert "6." in checks["redis-server"]["detail"] or "7." in checks["redis-server"]["detail"]
    assert "does not exist yet" in checks["ledger"]["detail"] and not (mcc_home / "ledger.db").exists()
    open_ledger(mcc_home)
    ledger = by_name(doctor.run_checks(mcc_home, aws=False))["ledger"]
    assert ledger["ok"] and "integrity ok" in ledger["detail"] and "schema" in ledger["detail"]
    assert "runs 0" in ledger["detail"]


def test_no_credentials_is_a_line_with_its_fix(mcc_home: Path, no_aws: None) -> None:
    checks = by_name({"checks": [c.to_dict() for c in doctor.check_aws()]})
    assert checks["aws identity"]["ok"] is False
    assert checks["aws identity"]["detail"] == "no AWS credentials found"
    assert "aws configure" in checks["aws identity"]["fix"]
    assert checks["aws region"]["ok"] is False and "AWS_REGION" in checks["aws region"]["fix"]
    assert checks["ec2 vCPU quota"]["ok"] is None


def test_unreachable_endpoint_cli(mcc_home: Path, fake_aws: str) -> None:
    proc = mcc("doctor", home=mcc_home, timeout=120)
    assert proc.returncode == 0, proc.stderr  # the local essentials pass; AWS is reported, not fatal
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("✓ python") for line in lines)
    assert any(line.startswith("✓ redis-server") for line in lines)
    assert any(line.startswith("✓ aws region: us-east-1") for line in lines)
    assert any(line.startswith("✗ aws identity: cannot reach AWS") for line in lines)
    assert any(line.startswith("✗ aws endpoint") and fake_aws in line for line in lines)
    assert any(line.startswith("– ec2 vCPU quota: skipped") for line in lines)
    assert any("fix:" in line and "emulator" in line for line in lines)

    doc = json.loads(mcc("doctor", "--json", home=mcc_home, timeout=120, check=True).stdout)
    checks = by_name(doc)
    assert doc["ok"] is True and checks["aws identity"]["ok"] is False and checks["aws endpoint"]["ok"] is False
