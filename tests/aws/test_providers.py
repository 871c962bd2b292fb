"""The AWS providers against a real moto_server over HTTP: create → find → describe → sweep → delete."""
from __future__ import annotations

import os
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from mcc.errors import ProviderError

from mcc.providers.aws import images, instance as inst, policy
from mcc.providers.aws.bucket import BucketProvider, abort_uploads, bucket_name
from mcc.providers.aws.cache import CacheProvider
from mcc.providers.aws.clients import AwsContext, tag_dict
from mcc.providers.aws.iam import InstanceProfileProvider, RolePolicyProvider, RoleProvider
from mcc.providers.aws.image import ImageProvider, SnapshotProvider
from mcc.providers.aws.key_pair import KeyPairProvider
from mcc.providers.aws.launch_template import LaunchTemplateProvider
from mcc.providers.aws.parameter import ParameterProvider, read_secret
from mcc.providers.aws.network import default_subnet
from mcc.providers.aws.security_group import SecurityGroupProvider, default_vpc_id
from mcc.providers.aws.vpc_endpoint import VpcEndpointProvider
from tests.aws.harness.tagging import sweep_tagged
from mcc.providers.base import Found, ResourceSpec
from tests.aws._moto import aws_ctx, aws_env, make_spec, moto_endpoint, new_ctx  # noqa: F401 - fixtures
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _profile(ctx: AwsContext) -> Found:
    role = RoleProvider(ctx).create(make_spec(ctx, "role", f"r-{_uid()}", {"name": f"mcc-r-{_uid()}"}))
    spec = make_spec(ctx, "instance_profile", "p", {"name": f"mcc-p-{_uid()}", "role_name": role.physical_id})
    return InstanceProfileProvider(ctx).create(spec)


def _group(ctx: AwsContext) -> Found:
    return SecurityGroupProvider(ctx).create(make_spec(ctx, "security_group", "sg", {"name": f"mcc-sg-{_uid()}"}))


def _template(ctx: AwsContext) -> Found:
    params = {**_lt_params(ctx), "max_lifetime_hours": 12}
    return LaunchTemplateProvider(ctx).create(make_spec(ctx, "launch_template", "lt", params))


def _role_name(c: AwsContext) -> str:
    return RoleProvider(c).create(make_spec(c, "role", "role", {"name": f"mcc-{_uid()}"})).physical_id


def _lt_params(c: AwsContext) -> dict[str, Any]:
    return {"name": f"mcc-{_uid()}", "image_id": images.base_image_id(c), "instance_type": "t3.micro",
            "security_group_id": _group(c).physical_id, "instance_profile_arn": _profile(c).attrs["arn"]}


def _token(c: AwsContext) -> str:
    spec = make_spec(c, "parameter", "token", {"name": f"/mcc/{c.ledger_uuid}/token-{_uid()}"})
    return ParameterProvider(c).create(spec).physical_id


POLICY = {"Version": "2012-10-17",
          "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/runs/*"}]}

# kind → (provider, spec) for a fresh resource of that kind in c's ledger (dependencies created on the way)
FACTORIES: dict[str, Callable[[AwsContext, Path], tuple[Any, ResourceSpec]]] = {
    "bucket": lambda c, d: (BucketProvider(c), make_spec(
        c, "bucket", "bucket", {"name": bucket_name(c.ledger_uuid, c.region)})),
    "security_group": lambda c, d: (SecurityGroupProvider(c, delete_deadline=5), make_spec(
        c, "security_group", "sg", {"name": f"mcc-{_uid()}", "ssh_cidr": "203.0.113.7/32"})),
    "key_pair": lambda c, d: (KeyPairProvider(c), make_spec(
        c, "key_pair", "key", {"name": f"mcc-{_uid()}", "key_dir": str(d)})),
    "role": lambda c, d: (RoleProvider(c), make_spec(c, "role", "role", {"name": f"mcc-{_uid()}"})),
    "role_policy": lambda c, d: (RolePolicyProvider(c), make_spec(
        c, "role_policy", "rp", {"role_name": _role_name(c), "policy_name": "mcc-worker", "policy": POLICY})),
    "instance_profile": lambda c, d: (InstanceProfileProvider(c), make_spec(
        c, "instance_profile", "ip", {"name": f"mcc-{_uid()}", "role_name": _role_name(c)})),
    "launch_template": lambda c, d: (LaunchTemplateProvider(c), make_spec(c, "launch_template", "lt", _lt_params(c))),
    "parameter": lambda c, d: (ParameterProvider(c), make_spec(
        c, "parameter", "pw", {"name": f"/mcc/{c.ledger_uuid}/run-1/queue-password-{_uid()}", "value_bytes": 24})),
    "instance": lambda c, d: (inst.InstanceProvider(c, terminate_timeout=30), make_spec(c, "instance", "manager", {
        "launch_template_id": _template(c).physical_id, "instance_type": "t3.micro",
        "user_data": "#!/bin/sh\necho hi", "spot": True})),
    "cache": lambda c, d: (CacheProvider(c, delete_wait=0), make_spec(c, "cache", "queue", {
        "cluster_id": f"mcc-{_uid()}", "node_type": "cache.t3.micro", "security_group_id": _group(c).physical_id,
        "auth_token_parameter": _token(c)})),
    "vpc_endpoint": lambda c, d: (VpcEndpointProvider(c, poll=0.1), make_spec(c, "vpc_endpoint", "ssm", {
        "vpc_id": default_vpc_id(c), "service_name": f"com.amazonaws.{c.region}.ssm", "endpoint_type": "Interface",
        "subnet_ids": [default_subnet(c, default_vpc_id(c))], "security_group_id": _group(c).physical_id})),
}


NO_CREATION_TIME = {"security_group"}  # EC2 tells none for a group


def _ids(found: list[Found]) -> set[str]:
    return {f.physical_id for f in found}


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_lifecycle(kind: str, aws_ctx: AwsContext, tmp_path: Path) -> None:
    provider, spec = FACTORIES[kind](aws_ctx, tmp_path / "a")
    started = time.time()
    created = provider.create(spec)
    assert created.physical_id and created.tags["mcc:ledger"] == aws_ctx.ledger_uuid
    found = provider.find(spec)
    assert found is not None and found.physical_id == created.physical_id
    described = provider.describe(created.physical_id, created.attrs)
    assert described is not None and described.tags.get("mcc:entity", spec.idempotency_key) == spec.idempotency_key

    other_ctx = new_ctx()
    other_provider, other_spec = FACTORIES[kind](other_ctx, tmp_path / "b")
    other = other_provider.create(other_spec)
    swept = _ids(provider.sweep(aws_ctx.ledger_uuid))
    assert created.physical_id in swept and other.physical_id not in swept
    assert created.physical_id in _ids(provider.sweep(aws_ctx.ledger_uuid, "run-1"))
    assert created.physical_id not in _ids(provider.sweep(aws_ctx.ledger_uuid, "run-2"))
    assert other.physical_id in _ids(other_provider.sweep(other_ctx.ledger_uuid))
    # the sweep tells when each was made (what clean's refusal of resources older than the ledger needs)
    made = next(f for f in provider.sweep(aws_ctx.ledger_uuid) if f.physical_id == created.physical_id).created_at
    if kind in NO_CREATION_TIME:
        assert made is None, made
    else:  # whole seconds in some answers
        assert made is not None and started - 1 <= made <= time.time() + 1, (made, started)

    provider.delete(created.physical_id, created.attrs)
    after = provider.describe(created.physical_id, created.attrs)
    if kind == "cache":  # moto never finishes deleting a replication group
        assert after is None or after.attrs["status"] == "deleting"
    else:
        assert after is None
        assert provider.find(spec) is None
    provider.delete(created.physical_id, created.attrs)  # deleting again succeeds


def test_bucket_purge_deletes_every_version(aws_ctx: AwsContext) -> None:
    provider = BucketProvider(aws_ctx)
    spec = make_spec(aws_ctx, "bucket", "bucket", {"name": bucket_name(aws_ctx.ledger_uuid, "x"), "versioning": True})
    name = provider.create(spec).physical_id
    s3 = aws_ctx.client("s3")
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"].values())
    rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    for i in range(3):
        s3.put_object(Bucket=name, Key="results/a.h5", Body=f"v{i}".encode())
    s3.put_object(Bucket=name, Key="logs/b.txt", Body=b"x")
    s3.delete_object(Bucket=name, Key="results/a.h5")  # a delete marker
    listing = s3.list_object_versions(Bucket=name)
    assert len(listing["Versions"]) == 4 and len(listing["DeleteMarkers"]) == 1
    s3.create_multipart_upload(Bucket=name, Key="results/big.h5")  # an interrupted large upload
    assert abort_uploads(s3, name) == 1 and not s3.list_multipart_uploads(Bucket=name).get("Uploads")
    s3.create_multipart_upload(Bucket=name, Key="results/big.h5")  # delete aborts it too
    provider.delete(name, {})
    assert provider.describe(name, {}) is None
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_security_group_rules(aws_ctx: AwsContext) -> None:
    spec = make_spec(aws_ctx, "security_group", "sg", {"name": f"mcc-{_uid()}", "queue_port": 6379,
                                                       "ssh_cidr": "198.51.100.0/24"})
    group_id = SecurityGroupProvider(aws_ctx).create(spec).physical_id
    group = aws_ctx.client("ec2").describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    rules = group["IpPermissions"]
    assert not [r for r in rules for ip in r.get("IpRanges", []) if ip["CidrIp"] == "0.0.0.0/0"]
    queue = [r for r in rules if r.get("FromPort") == 6379]
    assert queue and queue[0]["UserIdGroupPairs"][0]["GroupId"] == group_id and not queue[0]["IpRanges"]
    assert [ip["CidrIp"] for r in rules if r.get("FromPort") == 22 for ip in r["IpRanges"]] == ["198.51.100.0/24"]
    assert tag_dict(group["Tags"])["mcc:entity"] == spec.idempotency_key


def test_key_file_is_private_and_removed(aws_ctx: AwsContext, tmp_path: Path) -> None:
    provider = KeyPairProvider(aws_ctx)
    spec = make_spec(aws_ctx, "key_pair", "key", {"name": f"mcc-{_uid()}", "key_dir": str(tmp_path / "keys")})
    found = provider.create(spec)
    path = Path(found.attrs["key_path"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and "PRIVATE KEY" in path.read_text()
    path.unlink()  # the private key is lost: find no longer adopts it, create replaces the pair
    assert provider.find(spec) is None
    again = provider.create(spec)
    assert path.exists() and again.attrs["key_pair_id"] != found.attrs["key_pair_id"]
    provider.delete(again.physical_id, again.attrs)
    assert not path.exists() and provider.describe(again.physical_id, {}) is None


def test_launch_template_data_and_find_before_create(aws_ctx: AwsContext) -> None:
    provider, spec = FACTORIES["launch_template"](aws_ctx, Path("."))
    created = provider.create(spec)
    ec2 = aws_ctx.client("ec2")
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=created.physical_id)["LaunchTemplateVersions"]
    data = versions[0]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
    assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    kinds = {t["ResourceType"]: tag_dict(t["Tags"]) for t in data["TagSpecifications"]}
    assert kinds["instance"]["mcc:ledger"] == kinds["volume"]["mcc:ledger"] == aws_ctx.ledger_uuid
    assert provider.find(spec).physical_id == created.physical_id  # resume adopts instead of creating again
    assert len(provider.sweep(aws_ctx.ledger_uuid)) == 1


def test_instance_tags_and_find_before_create(aws_ctx: AwsContext) -> None:
    provider, spec = FACTORIES["instance"](aws_ctx, Path("."))
    created = provider.create(spec)
    assert created.attrs["status"] == "alive"
    ec2 = aws_ctx.client("ec2")
    described = ec2.describe_instances(InstanceIds=[created.physical_id])["Reservations"][0]["Instances"][0]
    assert tag_dict(described["Tags"])["mcc:entity"] == spec.idempotency_key
    assert described.get("InstanceLifecycle") == "spot"
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [created.physical_id]}])
    assert all(tag_dict(v["Tags"])["mcc:ledger"] == aws_ctx.ledger_uuid for v in volumes["Volumes"])
    assert volumes["Volumes"]
    assert provider.find(spec).physical_id == created.physical_id
    assert _ids(provider.sweep(aws_ctx.ledger_uuid)) == {created.physical_id}


def test_plural_worker_functions(aws_ctx: AwsContext) -> None:
    template = _template(aws_ctx)
    tags = {"mcc:ledger": aws_ctx.ledger_uuid, "mcc:run": "run-1", "mcc:entity": "run-1/workers/1", "Name": "worker"}
    req = inst.LaunchRequest(template.physical_id, tags, "run-1/workers/1", instance_type="t3.micro")
    zones = inst.run_instances(aws_ctx, req, count=3)
    ids = list(zones)
    assert len(ids) == 3 and all(z and z.startswith(aws_ctx.region) for z in zones.values())
    states = inst.query_instances(aws_ctx, {"mcc:ledger": aws_ctx.ledger_uuid, "mcc:run": "run-1"})
    assert set(states) == set(ids) and all(inst.STATES[s] == "alive" for s in states.values())
    inst.terminate_instances(aws_ctx, ids + ["i-0123456789abcdef0"])  # an unknown id does not block the rest
    assert inst.query_instances(aws_ctx, {"mcc:ledger": aws_ctx.ledger_uuid}) == {}
    gone = inst.query_instances(aws_ctx, {"mcc:ledger": aws_ctx.ledger_uuid}, include_gone=True)
    assert set(gone) == set(ids) and set(gone.values()) == {"terminated"}
    swept = sweep_tagged(aws_ctx, aws_ctx.ledger_uuid, "run-1")  # the tagging API still lists them: verified
    assert "instance" not in swept and "unknown" not in swept, [f.physical_id for f in swept.get("unknown", [])] + [f.physical_id for f in swept.get("instance", [])]


def test_image_bake_and_snapshots(aws_ctx: AwsContext) -> None:
    # the builder: an instance without a launch template, stopped (not terminated) by its own shutdown
    builder_spec = make_spec(aws_ctx, "instance", "image-builder", {
        "image_id": images.base_image_id(aws_ctx), "security_group_id": _group(aws_ctx).physical_id,
        "instance_type": "t3.micro", "instance_profile_arn": _profile(aws_ctx).attrs["arn"],
        "shutdown_behavior": "stop", "user_data": "#!/bin/sh\npip install mcc\nshutdown -h now\n"})
    builder = inst.InstanceProvider(aws_ctx).create(builder_spec).physical_id
    ec2 = aws_ctx.client("ec2")
    described = ec2.describe_instances(InstanceIds=[builder])["Reservations"][0]["Instances"][0]
    assert described["MetadataOptions"]["HttpTokens"] == "required"
    shutdown = ec2.describe_instance_attribute(InstanceId=builder, Attribute="instanceInitiatedShutdownBehavior")
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"

    provider = ImageProvider(aws_ctx, poll=0.1)
    spec = make_spec(aws_ctx, "image", "image", {"name": f"mcc-image-{_uid()}", "builder_id": builder,
                                                 "ready_timeout": 30})
    result: dict[str, Any] = {}
    baker = threading.Thread(target=lambda: result.update(found=provider.create(spec)))
    baker.start()
    wait_for(lambda: inst.query_instances(aws_ctx, {"mcc:entity": builder_spec.idempotency_key}), 20, "the builder")
    assert provider.find(spec) is None  # not baked before the builder signals readiness
    ec2.stop_instances(InstanceIds=[builder])  # what `shutdown -h now` does to a stop-on-shutdown instance
    baker.join(30)
    image = result["found"]
    assert image.physical_id.startswith("ami-") and image.attrs["snapshot_ids"]
    assert image.attrs["builder_id"] == builder
    assert provider.find(spec).physical_id == image.physical_id
    assert _ids(provider.sweep(aws_ctx.ledger_uuid)) == {image.physical_id}
    made = [f.created_at for f in provider.sweep(aws_ctx.ledger_uuid)] + [
        f.created_at for f in SnapshotProvider(aws_ctx).sweep(aws_ctx.ledger_uuid)]  # CreationDate: ISO 8601 text
    assert all(m is not None and m <= time.time() + 1 for m in made), made

    snapshots = SnapshotProvider(aws_ctx)
    snap_id = image.attrs["snapshot_ids"][0]
    assert _ids(snapshots.sweep(aws_ctx.ledger_uuid)) == {snap_id}  # tagged inside create_image
    snap_spec = make_spec(aws_ctx, "snapshot", "snapshot", {"snapshot_id": snap_id, "image_id": image.physical_id})
    assert snapshots.create(snap_spec).physical_id == snap_id  # adopts it: nothing tagged after a create
    foreign = make_spec(new_ctx(), "snapshot", "snapshot", {"snapshot_id": snap_id, "image_id": image.physical_id})
    with pytest.raises(ProviderError, match="does not carry this ledger"):
        snapshots.create(foreign)
    assert snapshots.find(foreign) is None
    assert snapshots.find(snap_spec).physical_id == snap_id
    assert snap_id not in _ids(snapshots.sweep(new_ctx().ledger_uuid))
    provider.delete(image.physical_id, image.attrs)  # deregisters, then deletes the snapshots it names
    assert provider.describe(image.physical_id, {}) is None
    assert snapshots.describe(snap_id, {}) is None
    provider.delete(image.physical_id, image.attrs)
    snapshots.delete(snap_id, {})  # the snapshot's own row: "not found" counts as deleted


def test_parameter_secret_never_in_attrs(aws_ctx: AwsContext) -> None:
    provider, spec = FACTORIES["parameter"](aws_ctx, Path("."))
    found = provider.create(spec)
    secret = read_secret(aws_ctx, found.physical_id)
    assert len(secret) >= 24 and secret not in repr(found)
    assert aws_ctx.client("ssm").get_parameter(Name=found.physical_id)["Parameter"]["Type"] == "SecureString"


def test_cache_uses_tls_and_auth(aws_ctx: AwsContext) -> None:
    provider, spec = FACTORIES["cache"](aws_ctx, Path("."))
    found = provider.create(spec)
    group = aws_ctx.client("elasticache").describe_replication_groups(ReplicationGroupId=found.physical_id)
    assert group["ReplicationGroups"][0]["TransitEncryptionEnabled"]
    assert group["ReplicationGroups"][0]["AuthTokenEnabled"]
    assert found.attrs["status"] == "available" and found.attrs["tls"]
    if "host" in found.attrs:  # moto gives replication groups an endpoint; describe tolerates its absence
        assert found.attrs["port"] == 6379


def test_role_delete_removes_what_hangs_on_it(aws_ctx: AwsContext) -> None:
    profile = _profile(aws_ctx)
    role = profile.attrs["role_name"]
    spec = make_spec(aws_ctx, "role_policy", "rp", {"role_name": role, "policy_name": "p", "policy": POLICY})
    RolePolicyProvider(aws_ctx).create(spec)
    RoleProvider(aws_ctx).delete(role, {})
    assert RoleProvider(aws_ctx).describe(role, {}) is None
    assert InstanceProfileProvider(aws_ctx).describe(profile.physical_id, {}).attrs["role_names"] == []


def test_sweep_tagged_maps_every_kind(aws_ctx: AwsContext, tmp_path: Path) -> None:
    made = {}
    for kind in ("bucket", "key_pair", "launch_template", "parameter"):
        provider, spec = FACTORIES[kind](aws_ctx, tmp_path)
        made[kind] = provider.create(spec)
    other = _group(new_ctx())
    result = sweep_tagged(aws_ctx, aws_ctx.ledger_uuid)
    for kind, found in made.items():
        assert found.physical_id in _ids(result[kind]), kind
    assert {"security_group", "role", "instance_profile"} <= set(result)  # the template's dependencies
    assert other.physical_id not in _ids(result["security_group"])
    assert "unknown" not in result


def test_manager_policy_is_least_privilege() -> None:
    doc = policy.manager_policy("bkt", "runs/r1/", "L1", "us-east-1", "123456789012",
                                "arn:aws:iam::123456789012:role/mcc/r", "/mcc/L1/r1/")
    actions = [a for st in doc["Statement"]
               for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])]
    assert not {"s3:*", "iam:*", "ec2:*", "*"} & set(actions) and not [a for a in actions if a.endswith(":*")]
    assert policy.mutating_on_any(doc) == []
    by_sid = {st["Sid"]: st for st in doc["Statement"]}
    assert by_sid["RunObjects"]["Resource"] == "arn:aws:s3:::bkt/runs/r1/*"
    assert by_sid["TerminateOwnFleet"]["Condition"]["StringEquals"] == {"ec2:ResourceTag/mcc:ledger": "L1"}
    assert by_sid["PassWorkerRole"]["Resource"] == "arn:aws:iam::123456789012:role/mcc/r"
    assert "PublishQueueCa" not in by_sid  # only with the queue on the manager: its CA parameter, nothing else
    with_ca = policy.manager_policy("bkt", "runs/r1/", "L1", "us-east-1", "123456789012",
                                    "arn:aws:iam::123456789012:role/mcc/r", "/mcc/L1/r1/",
                                    queue_ca_parameter="/mcc/L1/r1/queue-ca")
    [publish] = [st for st in with_ca["Statement"] if st["Sid"] == "PublishQueueCa"]
    assert publish["Action"] == "ssm:PutParameter"
    assert publish["Resource"] == "arn:aws:ssm:us-east-1:123456789012:parameter/mcc/L1/r1/queue-ca"
    bad = {"Statement": [{"Action": ["ec2:TerminateInstances"], "Resource": "*"}]}
    assert policy.mutating_on_any(bad) == ["ec2:TerminateInstances"]


def test_base_image_comes_from_ssm(aws_ctx: AwsContext) -> None:
    image_id = images.base_image_id(aws_ctx)
    assert image_id.startswith("ami-")
    assert aws_ctx.client("ec2").describe_images(ImageIds=[image_id])["Images"]
