"""`mcc clean --regions R1,R2` and `--regions all`: the sweep reaches regions the ledger never recorded."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.aws.harness import direct_client
from tests.conftest import ledger_uuid, mcc_json


def plant(cloud, region: str, ledger: str) -> dict[str, str]:
    """A security group and an SSM parameter tagged with ``ledger`` in ``region``, made behind mcc's back."""
    ec2 = direct_client("ec2", cloud.moto_url, cloud.secret_key, region)
    ssm = direct_client("ssm", cloud.moto_url, cloud.secret_key, region)
    tags = [{"Key": "mcc:ledger", "Value": ledger}, {"Key": "mcc:entity", "Value": f"planted-{region}"}]
    group = ec2.create_security_group(GroupName=f"planted-{region}", Description="planted", TagSpecifications=[
        {"ResourceType": "security-group", "Tags": tags}])["GroupId"]
    ssm.put_parameter(Name=f"/mcc/{ledger}/planted-{region}", Value="x", Type="SecureString", Tags=tags)
    return {"group": group, "parameter": f"/mcc/{ledger}/planted-{region}"}


def alive(cloud, region: str, planted: dict[str, str]) -> set[str]:
    ec2 = direct_client("ec2", cloud.moto_url, cloud.secret_key, region)
    ssm = direct_client("ssm", cloud.moto_url, cloud.secret_key, region)
    groups = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    params = {p["Name"] for p in ssm.describe_parameters()["Parameters"]}
    return {v for v in planted.values() if v in groups | params}


def adopted_regions(result: dict) -> set[str]:
    return {a["region"] for a in result["adopted"]}


def test_clean_sweeps_the_regions_it_is_given(cloud, mcc_home: Path) -> None:
    assert mcc_json("provision", "--backend", "aws", "--region", "us-east-1", home=mcc_home, timeout=120)
    ledger = ledger_uuid(mcc_home)
    west, europe = plant(cloud, "us-west-2", ledger), plant(cloud, "eu-west-1", ledger)

    # the ledger knows us-east-1 only: a plain clean neither sees nor touches the other regions
    assert mcc_json("clean", "--all", "--yes", home=mcc_home, timeout=300)["survivors"] == []
    assert alive(cloud, "us-west-2", west) == set(west.values())
    assert alive(cloud, "eu-west-1", europe) == set(europe.values())

    result = mcc_json("clean", "--all", "--yes", "--regions", "us-west-2,eu-west-1", home=mcc_home, timeout=300)
    assert result["survivors"] == [] and len(result["adopted"]) == 4
    assert adopted_regions(result) == {"us-west-2", "eu-west-1"}
    assert alive(cloud, "us-west-2", west) == set() and alive(cloud, "eu-west-1", europe) == set()


@pytest.mark.skipif(not os.environ.get("MCC_SLOW_TESTS"), reason=(
    "sweeps every provider in each of moto's ~30 regions, twice (sweep, then verify): ~85 s on 2 cores; "
    "run with MCC_SLOW_TESTS=1"))
def test_clean_regions_all_sweeps_every_region(cloud, mcc_home: Path) -> None:
    assert mcc_json("provision", "--backend", "aws", "--region", "us-east-1", home=mcc_home, timeout=120)
    ledger = ledger_uuid(mcc_home)
    far = plant(cloud, "ap-southeast-2", ledger)
    other_ledger = plant(cloud, "sa-east-1", "another-ledger-uuid")  # not ours: must survive

    result = mcc_json("clean", "--all", "--yes", "--regions", "all", home=mcc_home, timeout=600)
    assert result["survivors"] == [] and adopted_regions(result) == {"ap-southeast-2"}
    assert alive(cloud, "ap-southeast-2", far) == set()
    assert alive(cloud, "sa-east-1", other_ledger) == set(other_ledger.values())
