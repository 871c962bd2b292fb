"""`mcc doctor`: is this machine ready to run sweeps? One check per line, each with its fix.

The local essentials (Python, packages, a redis-server, a healthy ledger) decide the exit code; the AWS
checks (identity, region, vCPU quota, the roles' permissions boundary, emulator endpoint) report ✗ with
the fix but never fail the command, and never raise: no credentials, an unreachable endpoint or an
emulator without Service Quotas are answers, not crashes. The boundary checked is the default
``mcc-boundary`` (doctor reads no project's mcc.toml); `mcc run` checks the one its settings name.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from mcc.errors import INSTALL_PLOT

PACKAGES = ["materialsCloudCompute", "boto3", "redis", "peewee", "transitions", "h5py", "numpy", "click", "rich"]
OPTIONAL_PACKAGES = {"matplotlib": f"{INSTALL_PLOT} in the mcc checkout, or pip install matplotlib "
                                   "(needed only by `mcc analyze --plot`)"}
VCPU_QUOTA = {"ServiceCode": "ec2", "QuotaCode": "L-1216C47A"}  # Running On-Demand Standard (A, C, D, H, I, M, R, T, Z)
AWS_TIMEOUTS = {"connect_timeout": 3, "read_timeout": 10, "retries": {"max_attempts": 1, "mode": "standard"}}


@dataclass
class Check:
    """One line of the report. ``ok`` None = skipped (not applicable here)."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""
    essential: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_python() -> Check:
    version = platform.python_version()
    ok = sys.version_info >= (3, 10)
    return Check("python", ok, f"Python {version} ({sys.executable})",
                 "" if ok else "install Python 3.10 or newer", essential=True)


def check_packages() -> list[Check]:
    checks = []
    for name in PACKAGES:
        try:
            checks.append(Check(f"package {name}", True, metadata.version(name), essential=True))
        except metadata.PackageNotFoundError:
            checks.append(Check(f"package {name}", False, "not installed", f"pip install {name}", essential=True))
    for name, fix in OPTIONAL_PACKAGES.items():
        try:
            checks.append(Check(f"package {name}", True, metadata.version(name)))
        except metadata.PackageNotFoundError:
            checks.append(Check(f"package {name}", None, "not installed (optional)", fix))
    return checks


def check_redis() -> Check:
    from mcc.errors import ProviderError
    from mcc.providers.local.cache import find_redis_server

    try:
        path = find_redis_server()
    except ProviderError as exc:
        return Check("redis-server", False, "no redis-server >= 6.2 found", str(exc), essential=True)
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        out = f"version unknown ({exc})"
    version = next((w[2:] for w in out.split() if w.startswith("v=")), out)
    return Check("redis-server", True, f"{version} at {path}", essential=True)


def check_ledger(home: str | Path | None = None) -> Check:
    from mcc.errors import MccError
    from mcc.ledger import default_home, models, open_ledger
    from mcc.ledger_schema import LATEST, current_version

    home = Path(home).expanduser() if home is not None else default_home()
    path = home / "ledger.db"
    if not path.exists():
        return Check("ledger", True, f"{path} does not exist yet; the first `mcc run` creates it", essential=True)
    try:
        ledger = open_ledger(home)
        db = models.db
        integrity = [r[0] for r in db.execute_sql("PRAGMA integrity_check").fetchall()]
        version = current_version(db)
        counts = {name: model.select().count() for name, model in
                  (("runs", models.Run), ("resources", models.Resource), ("subproblems", models.Subproblem),
                   ("events", models.Event))}
        live = models.Resource.select().where(models.Resource.state.not_in(["deleted"])).count()
    except MccError as exc:
        return Check("ledger", False, f"{path}: {exc}", "see the message; the file was not changed", essential=True)
    except Exception as exc:  # a damaged file must be reported, not crash the doctor
        return Check("ledger", False, f"{path}: {type(exc).__name__}: {exc}",
                     f"move {path} aside and let mcc create a new one (resources it recorded may need "
                     "manual cleanup)", essential=True)
    ok = integrity == ["ok"]
    detail = (f"{ledger.path} (uuid {ledger.uuid}), schema {version}/{LATEST}, integrity "
              f"{'ok' if ok else '; '.join(integrity[:3])}, "
              + ", ".join(f"{k} {n}" for k, n in counts.items()) + f" ({live} resources not deleted)")
    fix = "" if ok else ("the SQLite file is damaged: `mcc ledger recover` restores its last backup and adopts, "
                         "by their tags, the resources created since")
    return Check("ledger", ok, detail, fix, essential=True)


def _aws_config() -> Any:
    from botocore.config import Config

    return Config(**AWS_TIMEOUTS)


def check_aws(session: Any | None = None) -> list[Check]:
    """Identity, region, the EC2 standard vCPU quota, the permissions boundary and the emulator endpoint; never
    raises."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ProfileNotFound

    checks: list[Check] = []
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    try:
        session = session or boto3.Session()
    except ProfileNotFound as exc:
        return [Check("aws identity", False, str(exc), "fix AWS_PROFILE or add the profile with `aws configure`")]
    region = session.region_name or os.environ.get("AWS_REGION")
    checks.append(Check("aws region", bool(region), region or "no region configured",
                        "" if region else "set AWS_REGION, `region` in the [aws] table of mcc.toml, or your profile's region"))
    identity_ok = False
    try:
        sts = session.client("sts", region_name=region or "us-east-1", config=_aws_config())
        who = sts.get_caller_identity()
        identity_ok = True
        checks.append(Check("aws identity", True, f"account {who.get('Account')} as {who.get('Arn')}"))
    except NoCredentialsError:
        checks.append(Check("aws identity", False, "no AWS credentials found",
                            "run `aws configure` (or `aws sso login --profile P` and set AWS_PROFILE=P); the local "
                            "backend needs none"))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        checks.append(Check("aws identity", False, f"credentials rejected ({code})",
                            "refresh or replace your credentials (`aws sso login`, `aws configure`)"))
    except BotoCoreError as exc:
        checks.append(Check("aws identity", False, f"cannot reach AWS: {exc}",
                            "check your network" + (f" and AWS_ENDPOINT_URL={endpoint}" if endpoint else "")))
    if endpoint:
        checks.append(Check("aws endpoint", identity_ok, f"AWS_ENDPOINT_URL={endpoint} "
                            + ("answers" if identity_ok else "does not answer"),
                            "" if identity_ok else "start the emulator, or unset AWS_ENDPOINT_URL to use AWS"))
    if not identity_ok or not region:
        checks.append(Check("ec2 vCPU quota", None, "skipped: needs a working identity and region"))
        return checks
    checks.append(check_boundary(session, region, who["Account"]))
    try:
        quotas = session.client("service-quotas", region_name=region, config=_aws_config())
        value = quotas.get_service_quota(**VCPU_QUOTA)["Quota"]["Value"]
        checks.append(Check("ec2 vCPU quota", value > 0, f"{value:g} vCPUs for On-Demand standard instances in {region}",
                            "" if value > 0 else "request a quota increase in the Service Quotas console (L-1216C47A)"))
    except (ClientError, BotoCoreError) as exc:
        checks.append(Check("ec2 vCPU quota", None, f"skipped: Service Quotas unavailable here ({type(exc).__name__})",
                            "the emulator has no Service Quotas" if endpoint else
                            "grant servicequotas:GetServiceQuota to see it"))
    return checks


def check_boundary(session: Any, region: str, account: str) -> Check:
    """The managed policy every role mcc creates carries (the default ``mcc-boundary``) exists."""
    from botocore.exceptions import BotoCoreError, ClientError

    from mcc.providers.aws.policy import boundary_arn, boundary_setup

    arn = boundary_arn(account)
    try:
        session.client("iam", region_name=region, config=_aws_config()).get_policy(PolicyArn=arn)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchEntity":
            return Check("iam permissions boundary", False, f"{arn} does not exist: `mcc run` on AWS refuses to start",
                         boundary_setup())
        return Check("iam permissions boundary", None, f"skipped: cannot read {arn} ({code})",
                     "grant iam:GetPolicy on arn:aws:iam::*:policy/mcc/* (README's user policy does)")
    except BotoCoreError as exc:
        return Check("iam permissions boundary", None, f"skipped: {exc}")
    return Check("iam permissions boundary", True, f"{arn} exists (every role mcc creates carries it)")


def run_checks(home: str | Path | None = None, *, aws: bool = True) -> dict[str, Any]:
    """Every check; ``ok`` is True when every essential (local) check passed."""
    checks = [check_python(), *check_packages(), check_redis(), check_ledger(home)]
    if aws:
        checks += check_aws()
    ok = all(c.ok for c in checks if c.essential)
    return {"ok": ok, "checks": [c.to_dict() for c in checks]}
