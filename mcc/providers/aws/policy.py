"""The least-privilege policy of the fleet's instance role (manager and workers share it).

Everything mutating is scoped to this run's bucket prefix, this ledger's tag, this role and this
run's parameters. Never ``s3:*``, ``iam:*``, ``ec2:*``, nor a mutating action on Resource "*".
"""
from __future__ import annotations

from typing import Any

from mcc.providers.base import TAG_LEDGER

# Actions that only read; the one place Resource "*" is allowed (EC2 describe calls cannot be scoped).
# The manager prices its workers at launch (spot price history, vCPUs of the type): read-only as well.
READ_ONLY_ON_ANY = ["ec2:DescribeInstances", "ec2:DescribeInstanceStatus", "ec2:DescribeInstanceTypes",
                    "ec2:DescribeSpotPriceHistory"]


def worker_policy(bucket: str, prefix: str, ledger_uuid: str, region: str, account_id: str, role_arn: str,
                  parameter_path: str) -> dict[str, Any]:
    """The inline policy document for the instance role of one run."""
    ec2 = f"arn:aws:ec2:{region}:{account_id}"
    launched = [f"{ec2}:instance/*", f"{ec2}:volume/*", f"{ec2}:network-interface/*"]
    tagged_request = {"StringEquals": {f"aws:RequestTag/{TAG_LEDGER}": ledger_uuid}}
    statements: list[dict[str, Any]] = [
        {"Sid": "RunObjects", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
         "Resource": f"arn:aws:s3:::{bucket}/{prefix}*"},
        {"Sid": "ListRunPrefix", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}},
        # What RunInstances creates must carry this ledger's tag in the request itself.
        {"Sid": "LaunchTaggedOnly", "Effect": "Allow", "Action": "ec2:RunInstances", "Resource": launched,
         "Condition": tagged_request},
        # What RunInstances only uses: these resources carry no request tags, so they are scoped by ARN.
        {"Sid": "LaunchFromOwnParts", "Effect": "Allow", "Action": "ec2:RunInstances", "Resource": [
            f"arn:aws:ec2:{region}::image/*", f"{ec2}:subnet/*", f"{ec2}:security-group/*",
            f"{ec2}:launch-template/*", f"{ec2}:key-pair/*"]},
        {"Sid": "TagOnLaunchOnly", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": launched,
         "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}},
        {"Sid": "TerminateOwnFleet", "Effect": "Allow", "Action": "ec2:TerminateInstances",
         "Resource": f"{ec2}:instance/*",
         "Condition": {"StringEquals": {f"ec2:ResourceTag/{TAG_LEDGER}": ledger_uuid}}},
        # EC2 describe actions support no resource-level permissions: "*" is the only valid Resource.
        {"Sid": "SeeFleet", "Effect": "Allow", "Action": READ_ONLY_ON_ANY, "Resource": "*"},
        {"Sid": "PassOwnRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": role_arn,
         "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
        # ``parameter_path`` should end with "/" to keep sibling paths out. SecureStrings use the AWS-managed
        # aws/ssm key, whose key policy already allows decryption through SSM: no kms statement needed.
        {"Sid": "ReadRunSecrets", "Effect": "Allow", "Action": "ssm:GetParameter",
         "Resource": f"arn:aws:ssm:{region}:{account_id}:parameter{parameter_path}*"},
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def builder_policy(bucket: str, prefix: str, ledger_uuid: str, region: str, account_id: str,
                   ready_tag: str) -> dict[str, Any]:
    """The inline policy of the image builder's role: read the wheel under ``prefix`` of the bucket, and tag
    an instance of this ledger with ``ready_tag`` only (how a builder reports a failed install). Nothing else."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadWheel", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/{prefix}*"},
        {"Sid": "SignalReadiness", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": f"arn:aws:ec2:{region}:{account_id}:instance/*",
         "Condition": {"StringEquals": {f"ec2:ResourceTag/{TAG_LEDGER}": ledger_uuid},
                       "ForAllValues:StringEquals": {"aws:TagKeys": [ready_tag]}}},
    ]}


def mutating_on_any(policy: dict[str, Any]) -> list[str]:
    """Actions that a statement allows on Resource "*" and that are not read-only (should be empty)."""
    bad = []
    for st in policy["Statement"]:
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        resources = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        if "*" in resources:
            bad += [a for a in actions if a not in READ_ONLY_ON_ANY
                    and not a.split(":", 1)[-1].startswith(("Describe", "Get", "List"))]
    return bad
