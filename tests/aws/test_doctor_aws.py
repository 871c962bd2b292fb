"""`mcc doctor` against the emulated cloud: the roles' permissions boundary is a line of its own, with its fix."""
from __future__ import annotations

import json
from pathlib import Path

from mcc.providers.aws.policy import boundary_arn
from tests.aws.harness.authz import ACCOUNT
from tests.conftest import mcc


def boundary_line(home: Path) -> dict:
    doc = json.loads(mcc("doctor", "--json", home=home, timeout=120, check=True).stdout)
    return {c["name"]: c for c in doc["checks"]}["iam permissions boundary"]


def test_doctor_reports_the_boundary_and_how_to_create_it(cloud, mcc_home: Path) -> None:
    arn = boundary_arn(ACCOUNT)
    line = boundary_line(mcc_home)
    assert line["ok"] is True and arn in line["detail"], line
    cloud.client("iam").delete_policy(PolicyArn=arn)
    line = boundary_line(mcc_home)
    assert line["ok"] is False and f"{arn} does not exist" in line["detail"], line
    assert "aws iam create-policy --path /mcc/ --policy-name mcc-boundary" in line["fix"], line
