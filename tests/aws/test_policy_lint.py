"""A linter on every policy mcc writes or documents: parliament (duo-labs), plus a resource-aware check of
privilege escalation that parliament's action-only auditor cannot make.

parliament's community auditor flags PRIVILEGE_ESCALATION for iam:PassRole + ec2:RunInstances whatever
their resources; an escalation needs the identity to be able to *write* the permissions of a role it can
pass. ``escalations`` checks exactly that, on resources and the ``iam:PermissionsBoundary`` condition.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from mcc.providers.aws import policy
from tests.aws.harness.authz import readme_policy
from tests.aws.harness.authz_policy import glob_match

parliament = pytest.importorskip("parliament")  # the [test] extra installs it

READ_ONLY = ("Describe", "Get", "List")
ROLE_WRITES = {"iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:UpdateAssumeRolePolicy",
               "iam:DeleteRolePermissionsBoundary", "iam:PutRolePermissionsBoundary", "iam:*", "*"}
# parliament notes that a statement lists a resource type one of its actions does not take (harmless: the
# pair never matches); not a finding about what the policy allows
NOTES = {"RESOURCE_MISMATCH"}


def policies() -> dict[str, dict[str, Any]]:
    account, region = "123456789012", "us-east-1"
    return {
        "README user policy": readme_policy(),
        "permissions boundary": policy.boundary_policy(),
        "manager role": policy.manager_policy("mcc-abc-us-east-1", "runs/r1/", "L1", region, account,
                                              f"arn:aws:iam::{account}:role/mcc/mcc-r1-worker", "/mcc/L1/r1/",
                                              f"arn:aws:kms:{region}:{account}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                                              queue_ca_parameter="/mcc/L1/r1/queue-ca"),
        "worker role": policy.worker_policy("mcc-abc-us-east-1", "runs/r1/", region, account, "/mcc/L1/r1/"),
        "builder role": policy.builder_policy("mcc-abc-us-east-1", "images/", "L1", region, account, "mcc:ready"),
    }


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def findings(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    analysed = parliament.analyze_policy_string(json.dumps(doc), include_community_auditors=True)
    return [(f.issue, f.detail) for f in analysed.findings if f.issue not in NOTES]


def escalations(doc: dict[str, Any]) -> list[str]:
    """Roles this policy can both pass to EC2 and rewrite (no permissions boundary required): an escalation."""
    allows = [st for st in doc["Statement"] if st["Effect"] == "Allow"]
    passable = [r for st in allows if any(glob_match(a, "iam:PassRole", case=False) for a in _list(st["Action"]))
                for r in _list(st["Resource"])]
    launches = any(glob_match(a, "ec2:RunInstances", case=False) for st in allows for a in _list(st["Action"]))
    writable = [r for st in allows if set(_list(st["Action"])) & ROLE_WRITES
                and "iam:PermissionsBoundary" not in json.dumps(st.get("Condition", {}))
                for r in _list(st["Resource"])]
    if not launches:
        return []
    return sorted({f"can rewrite and pass {p}" for p in passable for w in writable
                   if glob_match(w, p) or glob_match(p, w)})


@pytest.mark.parametrize("name", list(policies()))
def test_no_mutating_action_on_resource_star(name: str) -> None:
    star = [a for issue, detail in findings(policies()[name]) if issue == "RESOURCE_STAR" for a in _list(detail)]
    assert not [a for a in star if not a.split(":", 1)[1].startswith(READ_ONLY)], star


@pytest.mark.parametrize("name", ["worker role", "builder role"])
def test_instance_roles_have_no_finding_at_all(name: str) -> None:
    assert findings(policies()[name]) == []


def test_the_manager_cannot_escalate() -> None:
    """parliament's action-only auditor sees PassRole + RunInstances; the manager can pass only the worker role,
    which holds nothing in EC2 or IAM, and can write no role at all."""
    doc = policies()["manager role"]
    issues = {issue for issue, _ in findings(doc)}
    assert issues <= {"PRIVILEGE_ESCALATION", "PERMISSIONS_MANAGEMENT_ACTIONS"}, issues
    assert escalations(doc) == []
    assert [st["Resource"] for st in doc["Statement"] if st["Action"] == "iam:PassRole"] == [
        "arn:aws:iam::123456789012:role/mcc/mcc-r1-worker"]


def test_the_readme_policy_cannot_escalate() -> None:
    """With the permissions boundary (README, AWS setup step 4) a holder can create and write mcc-* roles only
    inside the boundary: ``escalations`` is empty. parliament's action-only auditors still name the pair."""
    doc = policies()["README user policy"]
    assert escalations(doc) == []
    issues = {issue for issue, _ in findings(doc)}
    assert issues <= {"PRIVILEGE_ESCALATION", "PERMISSIONS_MANAGEMENT_ACTIONS", "RESOURCE_STAR"}, issues


def test_the_boundary_writes_no_iam_and_passes_only_mcc_roles() -> None:
    doc = policies()["permissions boundary"]
    assert escalations(doc) == []
    iam = [a for st in doc["Statement"] for a in _list(st["Action"]) if a.startswith("iam:")]
    assert iam == ["iam:PassRole"]


def test_escalation_check_can_fail_and_pass() -> None:
    bad = {"Statement": [{"Effect": "Allow", "Action": ["iam:PutRolePolicy", "iam:PassRole", "ec2:RunInstances"],
                          "Resource": "*"}]}
    assert escalations(bad) == ["can rewrite and pass *"]
    bounded = {"Statement": [
        {"Effect": "Allow", "Action": "iam:PutRolePolicy", "Resource": "arn:aws:iam::*:role/mcc/*",
         "Condition": {"StringEquals": {"iam:PermissionsBoundary": "arn:aws:iam::1:policy/mcc-boundary"}}},
        {"Effect": "Allow", "Action": ["iam:PassRole", "ec2:RunInstances"], "Resource": "*"}]}
    assert escalations(bounded) == []
