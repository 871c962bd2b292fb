"""The policy evaluator (tests/aws/harness/authz*.py) and the policies mcc writes and documents, judged the
way AWS judges them: each call's resource ARNs and condition keys (Service Authorization Reference).

Pure: no emulator. The emulated runs apply the same evaluator to every call (the ``cloud`` fixture)."""
from __future__ import annotations

import json
import re
from typing import Any

import pytest

from mcc.providers.aws import policy
from mcc.providers.aws.clients import tag_specifications
from mcc.providers.aws.instance import launched_types
from tests.aws.harness.authz import readme_boundary, readme_policy
from tests.aws.harness.authz_policy import Check, condition_holds, decide
from tests.aws.harness.authz_requests import Requests, UnknownCall
from tests.aws.harness.proxy import Call

ACCOUNT, REGION, LEDGER = "123456789012", "us-east-1", "L-1"
BUCKET, PREFIX, PARAMS = "mcc-abc-us-east-1", "runs/r1/", f"/mcc/{LEDGER}/r1/"
WORKER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/mcc/mcc-r1-worker"
OURS = {"mcc:ledger": LEDGER, "mcc:run": "r1", "mcc:entity": "r1/workers", "Name": "r1-worker"}
# moto-like ids the fake lookup knows, and their tags
BOUNDARY = policy.boundary_arn(ACCOUNT)
BOUNDED = {"mcc-r1": BOUNDARY, "mcc-other": f"arn:aws:iam::{ACCOUNT}:policy/mcc/wider"}  # roles' boundaries
TAGS = {"lt-1": OURS, "sg-1": OURS, "ami-1": {}, "subnet-1": {}, "i-ours": OURS, "i-foreign": {"team": "x"},
        "snap-1": OURS, "sg-foreign": {}}


class FakeLookup:
    """What authz.Lookup reads from moto, from dicts: the launch template holds image, SG and worker profile."""

    def ec2_tags(self, rtype: str, rid: str) -> dict[str, str]:
        return TAGS.get(rid, {})

    def template_data(self, template_id: str) -> dict[str, Any]:
        return {"ImageId": "ami-1", "SecurityGroupIds": ["sg-1"],
                "IamInstanceProfile": {"Arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/mcc/mcc-r1-worker"},
                "TagSpecifications": tag_specifications(["instance", "volume", "network-interface"], OURS),
                "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"Encrypted": True}}]}

    def default_subnet(self) -> str:
        return "subnet-1"

    def default_vpc(self) -> str:
        return "vpc-1"

    def profile_roles(self, name: str) -> list[str]:
        return [f"arn:aws:iam::{ACCOUNT}:role/mcc/{name}"]

    def role(self, name: str) -> dict[str, Any]:
        return {"arn": f"arn:aws:iam::{ACCOUNT}:role/mcc/{name}", "tags": {}, "boundary": BOUNDED.get(name)}

    def profile_arn(self, name: str) -> str:
        return f"arn:aws:iam::{ACCOUNT}:instance-profile/mcc/{name}"


def flatten(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    """boto3's EC2 query serialisation, enough for these calls (TagSpecification.1.Tag.1.Key …)."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value, 1):
            flatten(f"{prefix}.{i}", v, out)
    else:
        out[prefix] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def ec2_call(action: str, **kwargs: Any) -> Call:
    renames = {"TagSpecifications": "TagSpecification", "SecurityGroupIds": "SecurityGroupId",
               "InstanceIds": "InstanceId", "Resources": "ResourceId", "Tags": "Tag"}
    params = {renames.get(k, k): v for k, v in kwargs.items()}
    for spec in params.get("TagSpecification", []):
        spec["Tag"] = spec.pop("Tags")
    return Call("ec2", action, flatten("", params, {}), "ASIA", "POST", "/")


def worker_launch(spot: bool) -> Call:
    """What remote/ec2_fleet.py sends: the ledger's template, the worker profile, every created type tagged."""
    call = ec2_call("RunInstances", MinCount=2, MaxCount=2, ClientToken="t",
                    LaunchTemplate={"LaunchTemplateId": "lt-1", "Version": "$Latest"},
                    TagSpecifications=tag_specifications(launched_types(spot), OURS),
                    IamInstanceProfile={"Arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/mcc/mcc-r1-worker"},
                    InstanceType="t3.micro")
    if spot:
        call.params["InstanceMarketOptions.MarketType"] = "spot"
    return call


def verdicts(policies: list[dict[str, Any]], call: Call) -> dict[str, str]:
    checks = Requests(FakeLookup(), REGION, ACCOUNT).checks(call)
    return {c.describe(): decide(policies, c) for c in checks}


def denied(policies: list[dict[str, Any]], call: Call) -> list[str]:
    return [k for k, v in verdicts(policies, call).items() if v != "allow"]


def manager() -> dict[str, Any]:
    return policy.manager_policy(BUCKET, PREFIX, LEDGER, REGION, ACCOUNT, WORKER_ROLE, PARAMS)


def old_instance_role_policy() -> dict[str, Any]:
    """The instance role's launch statement before issue 15: network interfaces authorised on a request tag
    the launch never sent (it tagged instance and volume only)."""
    ec2 = f"arn:aws:ec2:{REGION}:{ACCOUNT}"
    return {"Statement": [
        {"Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": [f"{ec2}:instance/*", f"{ec2}:volume/*", f"{ec2}:network-interface/*"],
         "Condition": {"StringEquals": {"aws:RequestTag/mcc:ledger": LEDGER}}},
        {"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": [
            f"arn:aws:ec2:{REGION}::image/*", f"{ec2}:subnet/*", f"{ec2}:security-group/*",
            f"{ec2}:launch-template/*", f"{ec2}:key-pair/*"]},
        {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": [f"{ec2}:instance/*", f"{ec2}:volume/*"],
         "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}},
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}]}


def test_the_old_launch_is_refused_on_the_network_interface() -> None:
    """The blocker of issue 15 §1, reproduced: tags on instance + volume only → implicit deny on the ENI."""
    call = worker_launch(spot=False)
    for k in [k for k in call.params if call.params.get(k) == "network-interface"]:
        call.params[k] = "volume"  # the old request: no network-interface TagSpecification
    refused = denied([old_instance_role_policy()], call)
    assert any("ec2:RunInstances on arn:aws:ec2:us-east-1:123456789012:network-interface/*" in d for d in refused)


@pytest.mark.parametrize("spot", [False, True])
def test_the_managers_worker_launch_is_allowed_spot_and_on_demand(spot: bool) -> None:
    call = worker_launch(spot)
    result = verdicts([manager()], call)
    assert not [k for k, v in result.items() if v != "allow"], result
    checks = Requests(FakeLookup(), REGION, ACCOUNT).checks(call)
    kinds = {(c.action, c.rtype) for c in checks}
    assert {("ec2:RunInstances", t) for t in ("instance", "volume", "network-interface", "image", "subnet",
                                              "security-group", "launch-template")} <= kinds
    assert ("iam:PassRole", "role") in kinds and ("ec2:CreateTags", "network-interface") in kinds
    assert (("ec2:RunInstances", "spot-instances-request") in kinds) == spot


def test_the_manager_cannot_launch_untagged_or_without_the_ledgers_template_or_pass_itself() -> None:
    untagged = worker_launch(spot=True)
    for k in [k for k in untagged.params if ".Tag." in k and k.endswith(".Value") and untagged.params[k] == LEDGER]:
        untagged.params[k] = "another-ledger"
    assert any("spot-instances-request/*" in d for d in denied([manager()], untagged))
    no_template = ec2_call("RunInstances", MinCount=1, MaxCount=1, ImageId="ami-1", SecurityGroupIds=["sg-1"],
                           TagSpecifications=tag_specifications(launched_types(False), OURS))
    assert any(":instance/*" in d for d in denied([manager()], no_template))
    itself = worker_launch(spot=False)
    itself.params["IamInstanceProfile.Arn"] = f"arn:aws:iam::{ACCOUNT}:instance-profile/mcc/mcc-r1"
    assert any(d.startswith("iam:PassRole on arn:aws:iam::123456789012:role/mcc/mcc-r1 ") for d in denied([manager()], itself))


def test_terminate_only_this_ledgers_instances() -> None:
    assert not denied([manager()], ec2_call("TerminateInstances", InstanceIds=["i-ours"]))
    assert denied([manager()], ec2_call("TerminateInstances", InstanceIds=["i-foreign"]))


def test_workers_hold_nothing_in_ec2_or_iam() -> None:
    doc = policy.worker_policy(BUCKET, PREFIX, REGION, ACCOUNT, PARAMS)
    actions = {a for st in doc["Statement"] for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    assert not [a for a in actions if a.startswith(("ec2:", "iam:"))]
    assert denied([doc], worker_launch(spot=False))
    put = Check("s3:PutObject", f"arn:aws:s3:::{BUCKET}/{PREFIX}results/w1-b1.h5", "object")
    assert decide([doc], put) == "allow"
    assert decide([doc], Check("s3:PutObject", f"arn:aws:s3:::{BUCKET}/{PREFIX}spec.json", "object")) == "implicit"


def test_readme_policy_launches_the_manager_and_refuses_tagging_foreign_resources() -> None:
    user = readme_policy()
    launch = ec2_call("RunInstances", MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateId": "lt-1"},
                      TagSpecifications=tag_specifications(launched_types(False), OURS),
                      IamInstanceProfile={"Arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/mcc/mcc-r1"})
    assert not denied([user], launch)
    # CreateTags outside a create call: refused on a foreign resource, with or without the ledger's tag
    assert denied([user], ec2_call("CreateTags", Resources=["sg-foreign"], Tags=[{"Key": "mcc:ledger", "Value": LEDGER}]))
    assert denied([user], ec2_call("CreateTags", Resources=["i-ours"], Tags=[{"Key": "Name", "Value": "x"}]))
    assert denied([user], ec2_call("TerminateInstances", InstanceIds=["i-foreign"]))
    assert not denied([user], ec2_call("TerminateInstances", InstanceIds=["i-ours"]))
    create_image = ec2_call("CreateImage", InstanceId="i-ours", Name="n",
                            TagSpecifications=tag_specifications(["image", "snapshot"], OURS))
    assert not denied([user], create_image)


def test_readme_policy_fits_a_customer_managed_policy() -> None:
    """IAM quotas: a customer managed policy holds 6,144 characters, whitespace not counted; an inline user
    policy 2,048 (README says to create a managed one)."""
    size = len(re.sub(r"\s", "", json.dumps(readme_policy())))
    assert 2048 < size <= 6144, size


def iam_call(action: str, **params: str) -> Call:
    return Call("iam", action, dict(params), "ASIA", "POST", "/")


def test_readme_policy_creates_and_writes_roles_only_with_mccs_boundary() -> None:
    """Issue 15 §3: no holder of the user policy can mint a role broader than the boundary (CreateRole and
    PutRolePolicy carry ``iam:PermissionsBoundary``; nothing may change a role's boundary or a managed policy)."""
    user = readme_policy()
    create = {"RoleName": "mcc-r2", "Path": "/mcc/", "AssumeRolePolicyDocument": "{}"}
    assert not denied([user], iam_call("CreateRole", **create, PermissionsBoundary=BOUNDARY))
    assert denied([user], iam_call("CreateRole", **create))
    assert denied([user], iam_call("CreateRole", **create, PermissionsBoundary=f"arn:aws:iam::{ACCOUNT}:policy/mcc/wider"))
    put = {"PolicyName": "p", "PolicyDocument": json.dumps({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})}
    assert not denied([user], iam_call("PutRolePolicy", RoleName="mcc-r1", **put))
    assert denied([user], iam_call("PutRolePolicy", RoleName="mcc-other", **put))  # another boundary
    assert denied([user], iam_call("PutRolePolicy", RoleName="mcc-unbounded", **put))  # none at all
    assert not denied([user], iam_call("GetPolicy", PolicyArn=BOUNDARY))
    role = f"arn:aws:iam::{ACCOUNT}:role/mcc/mcc-r1"
    for action, resource in (("CreatePolicy", BOUNDARY), ("CreatePolicyVersion", BOUNDARY),
                             ("SetDefaultPolicyVersion", BOUNDARY), ("AttachRolePolicy", role),
                             ("PutRolePermissionsBoundary", role), ("DeleteRolePermissionsBoundary", role)):
        assert decide([user], Check(f"iam:{action}", resource, "x")) == "implicit", action


def test_the_readme_boundary_is_the_one_mcc_names_and_holds_every_mcc_role() -> None:
    """README's second block is ``boundary_policy()``; every call mcc's roles make, judged against it, passes."""
    boundary = readme_boundary()
    assert boundary == policy.boundary_policy()
    assert len(re.sub(r"\s", "", json.dumps(boundary))) <= 6144  # a customer managed policy
    for spot in (False, True):
        assert not denied([boundary], worker_launch(spot))
    assert not denied([boundary], ec2_call("TerminateInstances", InstanceIds=["i-ours"]))
    for check in (Check("s3:PutObject", f"arn:aws:s3:::{BUCKET}/{PREFIX}results/w1.h5", "object"),
                  Check("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", "bucket", {"s3:prefix": (PREFIX,)}),
                  Check("ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{PARAMS}queue-password", "parameter"),
                  Check("ssm:PutParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{PARAMS}queue-ca", "parameter"),
                  Check("ec2:CreateTags", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-ours", "instance",
                        {"ec2:ResourceTag/mcc:ledger": (LEDGER,), "aws:TagKeys": ("mcc:ready",)})):
        assert decide([boundary], check) == "allow", check.describe()


def test_the_boundary_refuses_what_no_mcc_role_needs() -> None:
    """Inside the boundary, even a role whose inline policy allows everything cannot write IAM, launch untagged,
    terminate a foreign instance, tag one, or touch a bucket that is not mcc's."""
    boundary, everything = policy.boundary_policy(), {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    role = f"arn:aws:iam::{ACCOUNT}:role/mcc/mcc-r1"
    for check in (Check("iam:CreateRole", role, "role"), Check("iam:PutRolePolicy", role, "role"),
                  Check("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin", "role",
                        {"iam:PassedToService": ("ec2.amazonaws.com",)}),
                  Check("s3:GetObject", "arn:aws:s3:::payroll/2026.csv", "object"),
                  Check("ec2:CreateTags", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-foreign", "instance",
                        {"aws:TagKeys": ("mcc:ledger",)})):
        assert decide([everything], check) == "allow" and decide([boundary], check) == "implicit", check.describe()
    assert denied([boundary], ec2_call("TerminateInstances", InstanceIds=["i-foreign"]))
    untagged = ec2_call("RunInstances", MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateId": "lt-1"})
    assert any(":instance/*" in d for d in denied([boundary], untagged))


def test_condition_operators() -> None:
    ctx = {"iam:passedtoservice": ["ec2.amazonaws.com"]}
    assert condition_holds("StringEqualsIfExists", "iam:PassedToService", "ec2.amazonaws.com", ctx)
    assert condition_holds("StringEqualsIfExists", "iam:PassedToService", "ec2.amazonaws.com", {})
    assert not condition_holds("StringEquals", "iam:PassedToService", "ec2.amazonaws.com", {})
    assert not condition_holds("StringEqualsIfExists", "iam:PassedToService", "lambda.amazonaws.com", ctx)
    assert condition_holds("Null", "aws:RequestTag/mcc:ledger", "false", {"aws:requesttag/mcc:ledger": ["x"]})
    assert not condition_holds("Null", "aws:RequestTag/mcc:ledger", "false", {})
    assert condition_holds("ForAllValues:StringEquals", "aws:TagKeys", ["mcc:ready"], {"aws:tagkeys": ["mcc:ready"]})
    assert not condition_holds("ForAllValues:StringEquals", "aws:TagKeys", ["mcc:ready"],
                               {"aws:tagkeys": ["mcc:ready", "mcc:ledger"]})
    assert condition_holds("StringLike", "s3:prefix", ["runs/r1/*"], {"s3:prefix": ["runs/r1/project/"]})
    assert condition_holds("Bool", "aws:SecureTransport", "false", {"aws:securetransport": ["false"]})
    with pytest.raises(ValueError):
        condition_holds("NumericLessThan", "k", "1", {"k": ["0"]})


def test_the_tls_only_bucket_policy_denies_plain_http() -> None:
    from mcc.providers.aws.bucket import tls_only_policy

    deny = tls_only_policy(BUCKET)
    plain = Check("s3:GetObject", f"arn:aws:s3:::{BUCKET}/k", "object", {"aws:SecureTransport": ("false",)})
    tls = Check("s3:GetObject", f"arn:aws:s3:::{BUCKET}/k", "object", {"aws:SecureTransport": ("true",)})
    assert decide([deny], plain) == "deny" and decide([deny], tls) == "implicit"


def test_a_call_the_table_does_not_know_fails() -> None:
    with pytest.raises(UnknownCall):
        Requests(FakeLookup(), REGION, ACCOUNT).checks(ec2_call("ModifyInstanceAttribute", InstanceId="i-ours"))
