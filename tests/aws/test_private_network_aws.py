"""``public_ip = false``: no instance gets a public IPv4 address; with ``egress = "endpoints"`` each run has its
own S3 gateway endpoint and SSM and EC2 interface endpoints (ledger rows, gone with the run's compute, cleaned);
with ``egress = "nat"`` the named subnets must route through a NAT; without a way to install, nothing is created.

moto neither cuts a private instance off the internet nor routes through an endpoint (tests/aws/harness/gaps.py):
what these tests see is what mcc asked EC2 for (the RunInstances requests the proxy recorded, the instances'
described addresses) and what mcc made (the endpoints in moto and in the ledger).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mcc.errors import ConfigError
from mcc.providers.aws.clients import AwsContext
from mcc.providers.aws.network import require_nat
from tests.aws.conftest import aws_toml
from tests.aws.harness.moto_server import AL2023_PARAMETER
from tests.aws.test_crash_boundaries import exactly_once, killed
from tests.aws.test_run_aws import _session, tagged_counts
from tests.aws.test_smt_aws import MUTATING
from tests.conftest import combined_rows, latest_run_id, mcc, mcc_json

N = 4
RUN = {"chunk_size": 2, "workers": 1, "lease_seconds": 4}


def base_image(cloud) -> str:
    """An image instances can start from without installing (the emulated instances import mcc already, as a
    baked image would): a private run needs one (or custom_image = true)."""
    return cloud.client("ssm").get_parameter(Name=AL2023_PARAMETER)["Parameter"]["Value"]


def private_toml(cloud, **aws) -> str:
    return aws_toml(run=RUN, public_ip=False, image_id=base_image(cloud), tick_seconds=0.3, boot_seconds=120, **aws)


def endpoint_rows(home: Path) -> list[dict]:
    return [r for r in mcc_json("ledger", "show", home=home)["resources"] if r["kind"] == "vpc_endpoint"]


def test_private_run_has_no_public_address_and_its_endpoints_go_with_it(cloud, mcc_home: Path,
                                                                        make_project) -> None:
    project = make_project(N, toml=private_toml(cloud))
    out = mcc_json("run", str(project), home=mcc_home, timeout=300)
    assert out["state"] == "completed" and out["done"] == N, out
    np.testing.assert_array_equal(np.sort(combined_rows(out["result"])[:, 0]), np.arange(N, dtype=float))

    ec2 = cloud.client("ec2")
    subnet = min(ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"],
                 key=lambda s: (s["AvailabilityZone"], s["SubnetId"]))
    launches = [r for r in cloud.proxy.requests if r.action == "RunInstances"]
    by_manager = [r.params for r in launches if (r.access_key or "").startswith("ASIA")]
    by_laptop = [r.params for r in launches if r.access_key == "testing"]
    assert by_manager and by_laptop, [r.access_key for r in launches]
    for p in by_manager + by_laptop:  # the interface carries the subnet and the group, never beside it
        assert p["NetworkInterface.1.AssociatePublicIpAddress"] == "false", p
        assert p["NetworkInterface.1.SubnetId"] == subnet["SubnetId"] and "SubnetId" not in p, p
        assert p["NetworkInterface.1.SecurityGroupId.1"].startswith("sg-") and "SecurityGroupId.1" not in p, p
    instances = [i for r in ec2.describe_instances(Filters=[{"Name": "tag:mcc:run", "Values": [out["run_id"]]}])[
        "Reservations"] for i in r["Instances"]]
    assert len(instances) >= 2 and not [i["InstanceId"] for i in instances if i.get("PublicIpAddress")]

    rows = endpoint_rows(mcc_home)
    by_service = {r["spec"]["service_name"].rsplit(".", 1)[-1]: r for r in rows}
    assert sorted(by_service) == ["ec2", "s3", "ssm"] and len(rows) == 3, rows
    assert {r["state"] for r in rows} == {"deleted"}  # torn down with the run's compute: they bill per hour
    made = {e["VpcEndpointId"]: e for e in ec2.describe_vpc_endpoints()["VpcEndpoints"]}
    assert set(made) == {r["physical_id"] for r in rows} and {e["State"].lower() for e in made.values()} == {"deleted"}
    gateway, ssm = made[by_service["s3"]["physical_id"]], made[by_service["ssm"]["physical_id"]]
    main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [subnet["VpcId"]]},
                                              {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]
    assert gateway["VpcEndpointType"] == "Gateway" and gateway["RouteTableIds"] == [main["RouteTableId"]]
    assert ssm["VpcEndpointType"] == "Interface" and ssm["SubnetIds"] == [subnet["SubnetId"]] and ssm["PrivateDnsEnabled"]
    tags = {t["Key"]: t["Value"] for t in ssm["Tags"]}
    assert tags["mcc:entity"] == by_service["ssm"]["idempotency_key"] and tags["mcc:run"] == out["run_id"]
    group = ec2.describe_security_groups(GroupIds=[ssm["Groups"][0]["GroupId"]])["SecurityGroups"][0]
    assert [(p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in group["IpPermissions"]] == [
        (443, [ec2.describe_vpcs(VpcIds=[subnet["VpcId"]])["Vpcs"][0]["CidrBlock"]])]
    assert not [r for r in cloud.proxy.requests if r.action == "CreateTags" and r.access_key == "testing"]

    # two interface endpoints in one zone, each less than an hour: two endpoint-hours at us-east-1's $0.01
    assert mcc_json("analyze", out["run_id"], home=mcc_home)["cost_breakdown"]["vpc endpoints"] == pytest.approx(0.02)

    assert mcc_json("clean", "--all", "--yes", home=mcc_home, timeout=300)["survivors"] == []
    assert tagged_counts(mcc_home) == {}


# the default suite keeps the two boundaries that need a lookup on resume (a made-but-unheard endpoint to adopt,
# a delete that went through); the written-ahead-only one runs with MCC_SLOW_TESTS=1 (each ~20 s on 2 cores)
@pytest.mark.parametrize("target", [
    pytest.param(("CreateVpcEndpoint", "before"), marks=pytest.mark.skipif(
        not os.environ.get("MCC_SLOW_TESTS"), reason="slow (~20 s): set MCC_SLOW_TESTS=1")),
    ("CreateVpcEndpoint", "after"), ("DeleteVpcEndpoints", "after")])
def test_endpoint_calls_killed_on_either_side_are_resumed_without_a_duplicate(
        target: tuple[str, str], cloud, tmp_path: Path, make_project, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL just before or just after the first CreateVpcEndpoint (written ahead, not made or made unheard),
    or just after the run's first DeleteVpcEndpoints (its teardown): the resumed run adopts what its tags find
    or finishes the delete; one endpoint per service ever, every point once, none left live; clean leaves none."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    project = make_project(N, toml=private_toml(cloud))
    key, home = "laptop-crash", tmp_path / "home"
    killed(cloud, home, (("ec2", target[0]), target[1]), key, ["run", str(project), "--json"])
    resumed = mcc_json("resume", latest_run_id(home), home=home, timeout=300, env={"AWS_ACCESS_KEY_ID": key})
    assert resumed["state"] == "completed", target
    exactly_once(resumed["result"])
    rows = endpoint_rows(home)
    assert sorted(r["idempotency_key"].rsplit("/", 1)[-1] for r in rows) == ["ec2", "s3", "ssm"], (target, rows)
    assert {r["state"] for r in rows} == {"deleted"}, rows
    made = cloud.client("ec2").describe_vpc_endpoints(
        Filters=[{"Name": "tag:mcc:run", "Values": [resumed["run_id"]]}])["VpcEndpoints"]
    assert len(made) == 3 and {r["physical_id"] for r in rows} == {e["VpcEndpointId"] for e in made}, (target, made)
    assert {e["State"].lower() for e in made} == {"deleted"}
    again = mcc("clean", "--all", "--yes", "--json", home=home, timeout=300, env={"AWS_ACCESS_KEY_ID": key})
    assert again.returncode == 0, again.stderr[-3000:]
    assert tagged_counts(home) == {}, target


def test_private_without_a_way_to_install_is_refused_before_anything_exists(cloud, mcc_home: Path,
                                                                            make_project) -> None:
    """public_ip = false on a plain image with no NAT: the instances could not pip-install mcc. `mcc run` names
    the file, the setting and the fixes; no mutating call reached the cloud, the ledger holds no resource."""
    project = make_project(N, toml=aws_toml(public_ip=False))
    mark = len(cloud.proxy.requests)
    proc = mcc("run", str(project), home=mcc_home, timeout=120)
    assert proc.returncode != 0
    message = " ".join(proc.stderr.split())
    assert "mcc.toml [aws] (or its flags): `public_ip = false`" in message and "Fix: set custom_image = true" in message, proc.stderr
    assert 'egress = "nat"' in message and "Nothing was created" in message, proc.stderr
    assert not [c.action for c in cloud.proxy.requests[mark:] if (c.action or "").startswith(MUTATING)]
    assert not (mcc_home / "ledger.db").exists() or not mcc_json("ledger", "show", home=mcc_home)["resources"]


def test_nat_egress_needs_subnets_that_route_through_a_nat(cloud, mcc_home: Path, make_project) -> None:
    """egress = "nat" names subnets: a default subnet (its default route goes to the internet gateway) is refused
    by `mcc run` before anything exists; a subnet whose route table sends 0.0.0.0/0 to a NAT gateway passes."""
    ec2 = cloud.client("ec2")
    default = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]
    project = make_project(N, toml=aws_toml(public_ip=False, egress="nat", subnets=[default["SubnetId"]]))
    proc = mcc("run", str(project), home=mcc_home, timeout=120)
    message = " ".join(proc.stderr.split())
    assert proc.returncode != 0 and f"route table of subnet(s) {default['SubnetId']} has no default route" in message
    assert "Nothing was created" in message, proc.stderr
    assert not (mcc_home / "ledger.db").exists() or not mcc_json("ledger", "show", home=mcc_home)["resources"]

    private = ec2.create_subnet(VpcId=default["VpcId"], CidrBlock="172.31.200.0/24")["Subnet"]["SubnetId"]
    nat = ec2.create_nat_gateway(SubnetId=default["SubnetId"])["NatGateway"]["NatGatewayId"]
    table = ec2.create_route_table(VpcId=default["VpcId"])["RouteTable"]["RouteTableId"]
    ec2.associate_route_table(RouteTableId=table, SubnetId=private)
    ctx = AwsContext(_session(), "us-east-1", "nat-check")
    with pytest.raises(ConfigError, match="has no default route"):
        require_nat(ctx, [private])
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    require_nat(ctx, [private])
    with pytest.raises(ConfigError, match="subnet-0000 do not exist"):
        require_nat(ctx, ["subnet-0000"])
