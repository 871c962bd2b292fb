"""`mcc run --backend aws` end to end through the emulated cloud: instances really compute."""
from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path

import boto3
import numpy as np
import pytest

from mcc.providers.aws.clients import AwsContext
from mcc.providers.aws.policy import boundary_arn
from tests.aws.harness.authz import ACCOUNT
from tests.aws.test_smt_aws import MUTATING
from tests.aws.harness.tagging import sweep_tagged
from tests.aws.conftest import aws_toml
from tests.conftest import combined_rows, ledger_uuid, mcc, mcc_json

AWS_TOML = aws_toml()  # chunks of 5, 2 workers, t3.micro, 0.5 s ticks


_SESSIONS = threading.local()


def _session() -> boto3.Session:
    """One boto3 session per thread and emulated cloud: a fresh session reloads every service model (~0.4 s of
    CPU for the sweep's clients), and sessions are not thread-safe."""
    key = (os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_SECRET_ACCESS_KEY"))
    if getattr(_SESSIONS, "key", None) != key:
        _SESSIONS.key, _SESSIONS.session = key, boto3.Session(region_name="us-east-1")
    return _SESSIONS.session


def tagged_counts(home: Path) -> dict[str, int]:
    """{kind: count} of live resources tagged with the ledger of ``home`` (the sweep mcc clean verifies with)."""
    ctx = AwsContext(_session(), "us-east-1", ledger_uuid(home))
    found = sweep_tagged(ctx, ledger_uuid(home))
    return {kind: len(items) for kind, items in sorted(found.items()) if items and kind != "unknown"}


def everything_written(cloud, bucket_prefix: str = "") -> list[str]:
    """Every text mcc wrote into the cloud: S3 objects, user data, launch template data."""
    s3, ec2 = cloud.client("s3"), cloud.client("ec2")
    texts = []
    for bucket in s3.list_buckets()["Buckets"]:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket["Name"]):
            for version in page.get("Versions", []):
                body = s3.get_object(Bucket=bucket["Name"], Key=version["Key"], VersionId=version["VersionId"])["Body"]
                texts.append(body.read().decode("latin-1"))
    for res in ec2.describe_instances()["Reservations"]:
        for inst in res["Instances"]:
            data = ec2.describe_instance_attribute(InstanceId=inst["InstanceId"], Attribute="userData")
            texts.append(base64.b64decode(data.get("UserData", {}).get("Value", "") or b"").decode())
    for template in ec2.describe_launch_templates()["LaunchTemplates"]:
        for version in ec2.describe_launch_template_versions(LaunchTemplateId=template["LaunchTemplateId"])["LaunchTemplateVersions"]:
            texts.append(json.dumps(version["LaunchTemplateData"], default=str))
    return texts


def watch_launches(cloud) -> dict[str, dict]:
    """{instance id: {"volumes": {device: volume}, "interfaces": [tags]}} read from moto right as each
    RunInstances answers (a finished run's instances are terminated and their volumes gone)."""
    import re

    seen: dict[str, dict] = {}
    ec2 = cloud.client("ec2")

    def record(service: str, action: str, params: dict, status: int, body: bytes) -> None:
        if service != "ec2" or action != "RunInstances" or status >= 300:
            return None
        for iid in sorted({i.decode() for i in re.findall(rb"<instanceId>(i-[0-9a-f]+)</instanceId>", body)}):
            inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
            volumes = {m["DeviceName"]: ec2.describe_volumes(VolumeIds=[m["Ebs"]["VolumeId"]])["Volumes"][0]
                       for m in inst["BlockDeviceMappings"]}
            interfaces = [ec2.describe_network_interfaces(NetworkInterfaceIds=[n["NetworkInterfaceId"]])[
                "NetworkInterfaces"][0].get("TagSet", []) for n in inst["NetworkInterfaces"]]
            seen[iid] = {"volumes": volumes, "interfaces": interfaces}
        return None

    cloud.proxy.add_rewriter(record)
    return seen


def assert_secure_defaults(cloud, run_id: str, seen: dict[str, dict]) -> None:
    """Issue 15 §4, read back from the emulator: the workers' own role, encrypted root volumes, tagged
    network interfaces, the TLS-only bucket policy; and the policy evaluator judged every identity."""
    ec2, iam = cloud.client("ec2"), cloud.client("iam")
    [template] = ec2.describe_launch_templates(Filters=[{"Name": "tag:mcc:run", "Values": [run_id]}])["LaunchTemplates"]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=template["LaunchTemplateId"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    [root_mapping] = data["BlockDeviceMappings"]  # the image's root device, encrypted
    assert root_mapping["Ebs"]["Encrypted"] is True
    types = {s["ResourceType"] for s in data["TagSpecifications"]}  # (moto adds the template's own type)
    assert {"instance", "volume", "network-interface"} <= types and "spot-instances-request" not in types
    launched = [i for r in ec2.describe_instances(Filters=[{"Name": "tag:mcc:run", "Values": [run_id]}])["Reservations"]
                for i in r["Instances"]]
    roles = {}
    for inst in launched:
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        # the role its IMDS hands out (moto drops the profile from all but one instance of a launch: runner.py)
        roles[tags.get("mcc:role", "manager")] = cloud.runner.imds(inst["InstanceId"]).identity.role
        # (moto also attaches its default /dev/sda1 volume to every instance: tests/aws/harness/gaps.py)
        volume = seen[inst["InstanceId"]]["volumes"][root_mapping["DeviceName"]]
        assert volume["Encrypted"] and {t["Key"]: t["Value"] for t in volume.get("Tags", [])}.get("mcc:run") == run_id
        assert seen[inst["InstanceId"]]["interfaces"]
        for eni_tags in seen[inst["InstanceId"]]["interfaces"]:
            assert {t["Key"]: t["Value"] for t in eni_tags}.get("mcc:ledger") == tags["mcc:ledger"]
    assert roles == {"manager": f"mcc-{run_id}", "worker": f"mcc-{run_id}-worker"}, roles
    worker_policy = iam.get_role_policy(RoleName=roles["worker"], PolicyName="worker-access")["PolicyDocument"]
    worker_policy = json.loads(worker_policy) if isinstance(worker_policy, str) else worker_policy
    assert not [a for st in worker_policy["Statement"] for a in (st["Action"] if isinstance(st["Action"], list)
                else [st["Action"]]) if a.startswith(("ec2:", "iam:"))]
    [(bucket, sent)] = cloud.bucket_policies.items()
    assert sent["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert cloud.client("s3").get_bucket_policy(Bucket=bucket)["Policy"]  # stored (gaps.py says how)
    judged = {who for who, _ in cloud.authz.allowed}
    assert {"laptop (README's user policy)", f"role {roles['manager']}", f"role {roles['worker']}"} <= judged
    # every role carries mcc's permissions boundary, and the evaluator judged the roles' calls against it too
    for name in roles.values():
        assert iam.get_role(RoleName=name)["Role"]["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary_arn(ACCOUNT)
    assert {f"role {roles['manager']}", f"role {roles['worker']}"} <= {who for who, _ in cloud.authz.bounded}


def test_run_on_emulated_cloud_exactly_once_then_clean(cloud, mcc_home: Path, make_project) -> None:
    project = make_project(40, toml=AWS_TOML)
    seen = watch_launches(cloud)
    # IAM is eventually consistent: the manager's launch, right after its instance profile was created, is
    # refused twice as AWS does it then; mcc retries (RunInstances is idempotent by its ClientToken)
    not_yet = cloud.proxy.fail("ec2:RunInstances", "InvalidParameterValue", times=2, message=(
        "Value (mcc-profile) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"))
    try:
        proc = mcc("run", str(project), "--json", home=mcc_home, timeout=240)
    finally:
        for iid in cloud.runner.booted():
            print(f"===== {iid}\n{cloud.runner.console(iid)[-3000:]}")
    assert proc.returncode == 0, proc.stderr
    assert not_yet.hits == 2
    out = json.loads(proc.stdout)
    assert out["state"] == "completed" and out["done"] == 40
    rows = combined_rows(out["result"])
    np.testing.assert_array_equal(np.sort(rows[:, 0]), np.arange(40, dtype=float))

    # no credentials anywhere mcc wrote: S3 objects, user data, launch templates, instance consoles
    texts = everything_written(cloud) + [cloud.runner.console(i) for i in cloud.runner.booted()]
    assert texts and not [t for t in texts if cloud.secret_key in t]

    # least privilege: the run's role policy
    iam = cloud.client("iam")
    role = f"mcc-{out['run_id']}"
    policy = iam.get_role_policy(RoleName=role, PolicyName="run-access")["PolicyDocument"]
    statements = policy["Statement"] if isinstance(policy, dict) else json.loads(policy)["Statement"]
    for st in statements:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert not {"s3:*", "iam:*", "ec2:*", "*"} & set(actions)

    assert_secure_defaults(cloud, out["run_id"], seen)

    before = tagged_counts(mcc_home)
    assert before.get("bucket") == 1 and before.get("security_group") == 1
    result = mcc_json("clean", "--all", "--yes", home=mcc_home, timeout=600)
    assert result["survivors"] == []
    assert tagged_counts(mcc_home) == {}
    print("tagged resources before clean:", before, "after: {}")


def test_readme_aws_commands_as_written(cloud, mcc_home: Path, tmp_path: Path) -> None:
    import re
    import shutil

    from tests.conftest import EXAMPLE, REPO

    text = (REPO / "README.md").read_text()
    block = re.search(r"## On AWS.*?```sh\n(.*?)```", text, re.S).group(1)
    commands = [line.strip() for line in block.splitlines() if line.strip()]
    assert [c.split()[1] for c in commands] == ["provision", "run", "ledger", "clean"]
    shutil.copytree(EXAMPLE, tmp_path / "examples" / "kpoints", ignore=shutil.ignore_patterns("results"))
    for command in commands:
        proc = mcc(*command.split()[1:], home=mcc_home, cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, (command, proc.stderr[-3000:])
    assert list((tmp_path / "examples" / "kpoints" / "results").glob("*/combined.h5"))
    assert tagged_counts(mcc_home) == {}


def test_elasticache_queue_with_tls(cloud, mcc_home: Path, make_project) -> None:
    """queue = "elasticache" (the original design): TLS + AUTH token from SSM; every point once."""
    if not cloud.elasticache.available():
        pytest.skip("the ElastiCache stand-in needs a TLS-capable redis-server 7 (Debian's redis-server)")
    project = make_project(12, toml=aws_toml(queue="elasticache"))
    out = mcc_json("run", str(project), home=mcc_home, timeout=600)
    assert out["state"] == "completed" and out["done"] == 12
    doc = mcc_json("ledger", "show", "--kind", "cache", home=mcc_home)
    assert [r["state"] for r in doc["resources"]] == ["deleted"]  # torn down with the run
    assert mcc_json("clean", "--all", "--yes", home=mcc_home, timeout=600)["survivors"] == []


def test_clean_with_ledger_id_after_the_ledger_is_lost(cloud, mcc_home: Path, tmp_path: Path, make_project) -> None:
    project = make_project(6, toml=AWS_TOML)
    assert mcc_json("run", str(project), home=mcc_home, timeout=600)["state"] == "completed"
    lost = ledger_uuid(mcc_home)
    before = tagged_counts(mcc_home)
    assert before
    fresh = tmp_path / "another-laptop"
    result = mcc_json("clean", "--all", "--yes", "--ledger-id", lost, home=fresh, timeout=600)
    assert result["survivors"] == [] and len(result["adopted"]) >= sum(before.values())
    assert tagged_counts(mcc_home) == {}  # everything tagged with the lost ledger is gone


def test_a_launch_cut_short_names_what_may_be_left(cloud, mcc_home: Path, make_project) -> None:
    """The manager's RunInstances went out, then EC2 refuses to describe it: `mcc run` fails with a message that
    names the instance recorded before the call (its id never learned: no "instance None"); `mcc resume` adopts
    that instance instead of launching a second manager, and clean leaves nothing."""
    launched, armed = threading.Event(), threading.Event()
    armed.set()

    def watch(call, phase: str) -> bool:
        if phase == "after" and call.action == "RunInstances" and call.access_key == "testing":
            launched.set()
        return False

    cloud.proxy.add_hook(watch)
    cloud.proxy.fail(lambda s, a: s == "ec2" and a == "DescribeInstances" and launched.is_set() and armed.is_set(),
                     "UnauthorizedOperation", times=None)
    project = make_project(8, toml=aws_toml())
    proc = mcc("run", str(project), home=mcc_home, timeout=300)
    armed.clear()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    message = " ".join(proc.stderr.split())
    assert "Still running, as the ledger records: instance manager" in message, message
    assert "None" not in message, message
    # the manager launched before the refusal is adopted by the resume (found by its tags), not launched twice
    done = mcc_json("resume", proc.stderr.split()[1].rstrip(":"), home=mcc_home, timeout=300)
    assert done["state"] == "completed" and done["done"] == 8, done
    managers = cloud.client("ec2").describe_instances(Filters=[{"Name": "tag:Name", "Values": ["manager"]}])
    assert sum(len(r["Instances"]) for r in managers["Reservations"]) == 1
    assert mcc_json("clean", "--all", "--yes", home=mcc_home, timeout=300)["survivors"] == []
    assert tagged_counts(mcc_home) == {}


def test_a_missing_permissions_boundary_is_refused_before_anything_is_created(cloud, mcc_home: Path,
                                                                               make_project) -> None:
    """README's user policy creates roles only with mcc's boundary, which an administrator makes once: without
    it `mcc run` says so and how to make it (or to opt out) before any mutating call; the ledger holds nothing."""
    cloud.client("iam").delete_policy(PolicyArn=boundary_arn(ACCOUNT))
    project = make_project(4, toml=AWS_TOML)
    mark = len(cloud.proxy.requests)
    proc = mcc("run", str(project), home=mcc_home, timeout=120)
    message = " ".join(proc.stderr.split())
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"the permissions boundary {boundary_arn(ACCOUNT)} does not exist" in message, proc.stderr
    assert "aws iam create-policy --path /mcc/ --policy-name mcc-boundary" in message, proc.stderr
    assert 'permissions_boundary = ""' in message and "Nothing was created" in message, proc.stderr
    assert not [c.action for c in cloud.proxy.requests[mark:] if (c.action or "").startswith(MUTATING)]
    assert not (mcc_home / "ledger.db").exists() or not mcc_json("ledger", "show", home=mcc_home)["resources"]
