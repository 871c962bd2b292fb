"""custom_image = true end to end through the emulated cloud: `mcc provision` bakes the AMI (builder
instance, create_image, snapshots recorded, builder terminated), `mcc run` launches every instance from it
and computes every point once, `mcc clean --all` deregisters the AMI and deletes its snapshots."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mcc.providers.aws.policy import mutating_on_any
from tests.aws.conftest import aws_toml
from tests.aws.test_run_aws import tagged_counts
from tests.conftest import combined_rows, ledger_uuid, mcc, mcc_json

pytestmark = pytest.mark.slow
N = 12


def instances_of(cloud, **tags: str) -> list[dict]:
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
    pages = cloud.client("ec2").get_paginator("describe_instances").paginate(Filters=filters)
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


# A bake boots a builder, installs mcc, stops it and images it: ~4-5 min on a loaded 2-core machine, every
# emulated call also judged by the policy evaluator. Each command gets 10 minutes, the test 20.
@pytest.mark.timeout(1200)
def test_custom_image_baked_at_provision_used_by_every_instance_then_cleaned(cloud, mcc_home: Path,
                                                                            make_project) -> None:
    project = make_project(N, toml=aws_toml(custom_image=True, requirements=["numpy"]))
    rows = mcc_json("provision", "--backend", "aws", home=mcc_home, cwd=project, timeout=600)
    kinds = sorted(r["kind"] for r in rows)
    assert kinds == ["bucket", "image", "security_group"], rows
    image = next(r for r in rows if r["kind"] == "image")
    ami = image["physical_id"]
    assert ami.startswith("ami-") and image["state"] == "active"

    ledger = mcc_json("ledger", "show", home=mcc_home)["resources"]
    builders = [r for r in ledger if r["kind"] == "instance" and r["name"] == "image-builder"]
    assert [b["state"] for b in builders] == ["deleted"]  # terminated once the image was available
    builder = instances_of(cloud, **{"mcc:entity": builders[0]["idempotency_key"]})[0]
    assert builder["State"]["Name"] == "terminated"
    console = cloud.runner.console(builder["InstanceId"])
    assert "mcc image builder:" not in console, console  # no step of the install failed
    snapshots = [r for r in ledger if r["kind"] == "snapshot"]
    described = cloud.client("ec2").describe_images(ImageIds=[ami])["Images"][0]
    made = {m["Ebs"]["SnapshotId"] for m in described["BlockDeviceMappings"] if "Ebs" in m}
    assert made and {s["physical_id"] for s in snapshots} == made and {s["state"] for s in snapshots} == {"active"}
    # tagged inside CreateImage (never after), from a builder whose root volume is encrypted (what makes
    # AWS encrypt the snapshots; moto leaves them unencrypted: tests/aws/harness/gaps.py)
    for snap in cloud.client("ec2").describe_snapshots(SnapshotIds=sorted(made))["Snapshots"]:
        assert {t["Key"]: t["Value"] for t in snap["Tags"]}.get("mcc:ledger") == ledger_uuid(mcc_home)
    assert not [r for r in cloud.proxy.requests if r.action == "CreateTags" and r.access_key == "testing"]
    bakes = [r for r in cloud.proxy.requests if r.action == "RunInstances" and "ImageId" in r.params]
    assert bakes and {b.params["BlockDeviceMapping.1.Ebs.Encrypted"] for b in bakes} == {"true"}

    role = next(r for r in ledger if r["kind"] == "role_policy" and "builder" in r["name"])
    policy = cloud.client("iam").get_role_policy(RoleName=role["physical_id"].split("/")[0],
                                                 PolicyName=role["physical_id"].split("/")[1])["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    actions = {a for st in policy["Statement"] for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    assert actions == {"s3:GetObject", "ec2:CreateTags"} and mutating_on_any(policy) == []

    out = mcc_json("run", str(project), home=mcc_home, timeout=600)
    assert out["state"] == "completed" and out["done"] == N
    np.testing.assert_array_equal(np.sort(combined_rows(out["result"])[:, 0]), np.arange(N, dtype=float))
    launched = instances_of(cloud, **{"mcc:run": out["run_id"]})
    names = [{t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("Name", "") for i in launched]
    assert "manager" in names and any(n.endswith("-worker") for n in names), names
    baked = {r["physical_id"] for r in mcc_json("ledger", "show", "--kind", "image", home=mcc_home)["resources"]}
    # The image is keyed by the wheel's contents: the run reuses the provisioned one unless mcc's source changed
    # in between (other edits in a working tree), in which case it bakes its own — never boots a plain image.
    assert ami in baked and {i["ImageId"] for i in launched} <= baked, "every instance boots from a baked image"
    assert len({i["ImageId"] for i in launched}) == 1 and (len(baked) == 1 or {i["ImageId"] for i in launched} != {ami})
    made |= {s["physical_id"] for s in mcc_json("ledger", "show", "--kind", "snapshot", home=mcc_home)["resources"]}

    before = tagged_counts(mcc_home)
    assert before.get("image") == len(baked) and before.get("snapshot") == len(made)
    result = mcc_json("clean", "--all", "--yes", home=mcc_home, timeout=300)
    assert result["survivors"] == []
    assert tagged_counts(mcc_home) == {}
    live = {i["ImageId"] for i in cloud.client("ec2").describe_images(Owners=["self"])["Images"]
            if i["State"] != "deregistered"}
    assert not baked & live
    left = cloud.client("ec2").describe_snapshots(SnapshotIds=[], Filters=[{"Name": "snapshot-id", "Values": sorted(made)}])
    assert left["Snapshots"] == []
    print("custom image: tagged before clean", before, "after: {}; ledger", ledger_uuid(mcc_home))


def test_failed_builder_install_is_reported_and_leaves_no_builder(cloud, mcc_home: Path, make_project) -> None:
    """A requirement pip cannot install: the builder tags itself failed, provision exits non-zero naming it,
    the builder is terminated, and a clean leaves nothing."""
    missing = "/nonexistent-mcc-test/requirement"  # pip fails at once, without asking an index
    project = make_project(2, toml=aws_toml(custom_image=True, requirements=[missing]))
    proc = mcc("provision", "--backend", "aws", home=mcc_home, cwd=project, timeout=300)
    assert proc.returncode != 0 and "image builder" in proc.stderr and "failed" in proc.stderr, proc.stderr
    ledger = mcc_json("ledger", "show", home=mcc_home)["resources"]
    assert [(r["kind"], r["state"]) for r in ledger if r["name"] == "image-builder"] == [("instance", "deleted")]
    assert [r["state"] for r in ledger if r["kind"] == "image"] == ["failed"]
    assert mcc_json("clean", "--all", "--yes", home=mcc_home, timeout=300)["survivors"] == []
    assert tagged_counts(mcc_home) == {}
