"""The least-privilege inline policies of the roles mcc creates: the run's manager, its workers, the image builder.

Everything mutating is scoped to this run's bucket prefix, this ledger's tag, the worker role and this run's
parameters. Never ``s3:*``, ``iam:*``, ``ec2:*``, nor a mutating action on Resource "*". Resource types and
condition keys follow the Service Authorization Reference, "Actions, resources, and condition keys for Amazon
EC2" (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html), for S3, IAM
and SSM likewise; tests/aws/harness/authz.py evaluates every call of the emulated runs against these.

- RunInstances authorises every resource it creates on its own ARN — ``instance``, ``volume``,
  ``network-interface`` and, for a spot launch, ``spot-instances-request`` — each with ``aws:RequestTag``
  (so mcc tags all of them inside the call), and every resource it uses: ``image``, ``subnet``,
  ``security-group``, ``key-pair`` and, launched from a template, ``launch-template`` (whose
  ``ec2:LaunchTemplate`` key then rides on every resource of the call).
- CreateTags inside a create call carries ``ec2:CreateAction`` (the create's name).

Every role mcc creates also carries the permissions boundary ``mcc-boundary`` (path ``/mcc/``; an administrator
makes it once from :func:`boundary_policy`, printed in README). A role's effective permissions are what its
inline policy *and* the boundary allow, so a holder of README's user policy — which may create and write roles
only with that boundary — cannot mint a role broader than the boundary, whatever inline policy it puts.
"""
from __future__ import annotations

from typing import Any

from mcc.providers.aws.image import TAG_READY
from mcc.providers.base import TAG_LEDGER

# Actions that only read; the one place Resource "*" is allowed (EC2 describe calls cannot be scoped).
# The manager prices its workers at launch (spot price history, vCPUs of the type): read-only as well.
READ_ONLY_ON_ANY = ["ec2:DescribeInstances", "ec2:DescribeInstanceStatus", "ec2:DescribeInstanceTypes",
                    "ec2:DescribeSpotPriceHistory"]
# RunInstances creates these (the last only for a spot launch); each must carry the ledger tag in the request.
LAUNCH_CREATES = ["volume", "network-interface", "spot-instances-request"]
WORKER_WRITES = ["results/", "failures/", "logs/"]  # the run-prefix folders a worker writes (mcc/work/runspec.py)
RUN_OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]  # the manager's
BOUNDARY_NAME, BOUNDARY_PATH = "mcc-boundary", "/mcc/"
VOLUME_KEY_ACTIONS = ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext",
                      "kms:ReEncryptFrom", "kms:ReEncryptTo"]


def _ledger_tag(ledger_uuid: str, key: str = "aws:RequestTag") -> dict[str, Any]:
    return {"StringEquals": {f"{key}/{TAG_LEDGER}": ledger_uuid}}


def _secrets(region: str, account_id: str, parameter_path: str) -> dict[str, Any]:
    # ``parameter_path`` should end with "/" to keep sibling paths out. SecureStrings use the AWS-managed
    # aws/ssm key, whose key policy already allows decryption through SSM: no kms statement needed.
    return {"Sid": "ReadRunSecrets", "Effect": "Allow", "Action": "ssm:GetParameter",
            "Resource": f"arn:aws:ssm:{region}:{account_id}:parameter{parameter_path}*"}


def _list_prefix(bucket: str, prefix: str) -> dict[str, Any]:
    return {"Sid": "ListRunPrefix", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}}


def kms_statement(kms_key_arn: str, region: str) -> dict[str, Any]:
    """What launching onto volumes encrypted with a customer managed key needs (EC2 asks KMS on the caller's
    behalf: kms:ViaService). With the AWS-managed aws/ebs key (the default) no statement is needed: its key
    policy allows every principal of the account through EC2."""
    return {"Sid": "UseVolumeKey", "Effect": "Allow", "Resource": kms_key_arn, "Action": VOLUME_KEY_ACTIONS,
            "Condition": {"StringEquals": {"kms:ViaService": f"ec2.{region}.amazonaws.com"}}}


def manager_policy(bucket: str, prefix: str, ledger_uuid: str, region: str, account_id: str, worker_role_arn: str,
                   parameter_path: str, kms_key_arn: str | None = None,
                   queue_ca_parameter: str | None = None) -> dict[str, Any]:
    """The inline policy of the run's manager role: the run's objects, its secret, and launching (from this
    ledger's launch template only, everything tagged), seeing and terminating this ledger's instances; with
    the queue on the manager, writing its queue's CA certificate into ``queue_ca_parameter`` (that one only)."""
    ec2 = f"arn:aws:ec2:{region}:{account_id}"
    creates = [f"{ec2}:{kind}/*" for kind in LAUNCH_CREATES]
    statements: list[dict[str, Any]] = [
        {"Sid": "RunObjects", "Effect": "Allow", "Action": RUN_OBJECT_ACTIONS,
         "Resource": f"arn:aws:s3:::{bucket}/{prefix}*"},
        _list_prefix(bucket, prefix),
        # The instance: tagged in the request and launched from a launch template (which LaunchFromOwnParts
        # requires to be this ledger's): the template pins image, security group and IMDSv2.
        {"Sid": "LaunchTaggedFromTemplate", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": f"{ec2}:instance/*",
         "Condition": {**_ledger_tag(ledger_uuid), "Null": {"ec2:LaunchTemplate": "false"}}},
        {"Sid": "LaunchTaggedParts", "Effect": "Allow", "Action": "ec2:RunInstances", "Resource": creates,
         "Condition": _ledger_tag(ledger_uuid)},
        # What RunInstances uses and this ledger created: scoped by the ledger tag they carry.
        {"Sid": "LaunchFromOwnParts", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": [f"{ec2}:launch-template/*", f"{ec2}:security-group/*", f"{ec2}:key-pair/*"],
         "Condition": _ledger_tag(ledger_uuid, "ec2:ResourceTag")},
        # What it uses and mcc did not create (a public or baked image, the VPC's subnet): by ARN only.
        {"Sid": "LaunchIntoSubnet", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": [f"arn:aws:ec2:{region}::image/*", f"{ec2}:subnet/*"]},
        {"Sid": "TagOnLaunchOnly", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": [f"{ec2}:instance/*", *creates],
         "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}},
        {"Sid": "TerminateOwnFleet", "Effect": "Allow", "Action": "ec2:TerminateInstances",
         "Resource": f"{ec2}:instance/*", "Condition": _ledger_tag(ledger_uuid, "ec2:ResourceTag")},
        # EC2 describe actions support no resource-level permissions: "*" is the only valid Resource.
        {"Sid": "SeeFleet", "Effect": "Allow", "Action": READ_ONLY_ON_ANY, "Resource": "*"},
        # Workers start with the worker role, never with this one.
        {"Sid": "PassWorkerRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": worker_role_arn,
         "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
        _secrets(region, account_id, parameter_path),
    ]
    if queue_ca_parameter:
        statements.append({"Sid": "PublishQueueCa", "Effect": "Allow", "Action": "ssm:PutParameter",
                           "Resource": f"arn:aws:ssm:{region}:{account_id}:parameter{queue_ca_parameter}"})
    if kms_key_arn:
        statements.append(kms_statement(kms_key_arn, region))
    return {"Version": "2012-10-17", "Statement": statements}


def worker_policy(bucket: str, prefix: str, region: str, account_id: str, parameter_path: str) -> dict[str, Any]:
    """The inline policy of the run's worker role: read the run's inputs, write results, failures and logs
    under the run's prefix, read the queue secret. Nothing in EC2 or IAM: a user's entry code on a worker
    can neither launch, terminate nor pass a role."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadRunInputs", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/{prefix}*"},
        _list_prefix(bucket, prefix),
        {"Sid": "WriteRunOutputs", "Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
         "Resource": [f"arn:aws:s3:::{bucket}/{prefix}{folder}*" for folder in WORKER_WRITES]},
        _secrets(region, account_id, parameter_path),
    ]}


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


def boundary_arn(account_id: str, name: str = BOUNDARY_NAME) -> str:
    """The ARN of the permissions boundary ``name`` (a customer managed policy under ``BOUNDARY_PATH``)."""
    return f"arn:aws:iam::{account_id}:policy{BOUNDARY_PATH}{name}"


def boundary_setup(name: str = BOUNDARY_NAME) -> str:
    """How an administrator creates the boundary ``name`` once (README: AWS setup, step 4)."""
    return ("an administrator of the account creates it once from README's boundary policy (AWS setup, step 4): "
            f"`aws iam create-policy --path {BOUNDARY_PATH} --policy-name {name} --policy-document "
            f"file://{name}.json`; or, where your identity may create roles without a boundary, set "
            'permissions_boundary = "" under [aws]')


def boundary_policy() -> dict[str, Any]:
    """The permissions boundary of every role mcc creates: the most any of them may ever do, for any ledger and
    run — the union of :func:`manager_policy`, :func:`worker_policy` and :func:`builder_policy` with the ledger,
    bucket and run left open (``mcc-*`` buckets, ``/mcc/`` parameters and roles, anything carrying an
    ``mcc:ledger`` tag). Nothing in IAM but passing ``mcc-*`` roles to EC2: a role inside it can neither
    write a role nor widen one."""
    ec2 = "arn:aws:ec2:*:*"
    creates = [f"{ec2}:{kind}/*" for kind in LAUNCH_CREATES]
    tagged = {"Null": {f"aws:RequestTag/{TAG_LEDGER}": "false"}}
    own = {"Null": {f"ec2:ResourceTag/{TAG_LEDGER}": "false"}}
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "SeeFleet", "Effect": "Allow", "Action": READ_ONLY_ON_ANY, "Resource": "*"},
        {"Sid": "RunObjects", "Effect": "Allow", "Resource": "arn:aws:s3:::mcc-*/*", "Action": RUN_OBJECT_ACTIONS},
        {"Sid": "ListRunPrefixes", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::mcc-*"},
        {"Sid": "LaunchTagged", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": [f"{ec2}:instance/*", *creates], "Condition": tagged},
        {"Sid": "LaunchFromOwnParts", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": [f"{ec2}:launch-template/*", f"{ec2}:security-group/*", f"{ec2}:key-pair/*"], "Condition": own},
        {"Sid": "LaunchIntoSubnet", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": ["arn:aws:ec2:*::image/*", f"{ec2}:subnet/*"]},
        {"Sid": "TagOnLaunchOnly", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": [f"{ec2}:instance/*", *creates],
         "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}},
        {"Sid": "SignalReadiness", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": f"{ec2}:instance/*",
         "Condition": {**own, "ForAllValues:StringEquals": {"aws:TagKeys": [TAG_READY]}}},
        {"Sid": "TerminateOwn", "Effect": "Allow", "Action": "ec2:TerminateInstances", "Resource": f"{ec2}:instance/*",
         "Condition": own},
        {"Sid": "PassMccRolesToEc2", "Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::*:role/mcc/mcc-*",
         "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
        {"Sid": "RunParameters", "Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:PutParameter"],
         "Resource": "arn:aws:ssm:*:*:parameter/mcc/*"},
        {"Sid": "UseVolumeKeysThroughEc2", "Effect": "Allow", "Action": VOLUME_KEY_ACTIONS, "Resource": "arn:aws:kms:*:*:key/*",
         "Condition": {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}},
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
