"""`mcc run --backend aws --estimate` against the emulated cloud: numbers recomputed here, nothing created."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.aws.conftest import aws_toml
from tests.aws.harness.market import Market
from tests.conftest import mcc, mcc_json

PRICES = json.loads((Path(__file__).parents[2] / "mcc" / "report" / "prices" / "ec2-ondemand-linux.json").read_text())
READ_ONLY = ("Describe", "Get", "List")


def cloud_is_empty(cloud) -> None:
    ec2, s3, iam = cloud.client("ec2"), cloud.client("s3"), cloud.client("iam")
    assert s3.list_buckets()["Buckets"] == []
    assert [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]] == []
    assert ec2.describe_launch_templates()["LaunchTemplates"] == []
    assert [r for r in iam.list_roles()["Roles"] if r["RoleName"].startswith("mcc")] == []


def test_estimate_reproduces_and_creates_nothing(cloud, mcc_home: Path, make_project) -> None:
    market = Market(cloud.proxy)
    market.set_spot_price("c6i.large", 0.031)
    market.set_spot_price("c5.large", 0.029)
    project = make_project(60, body="time.sleep(0.01)", toml=aws_toml(
        run={"workers": 3, "chunk_size": 5}, worker_types=["c6i.large", "c5.large"], manager_type="t3.small", spot=True))
    cloud.proxy.reset_counts()
    doc = mcc_json("run", str(project), "--estimate", home=mcc_home, timeout=120)

    # nothing created: no call but reads, nothing in the emulator, no ledger
    actions = {a for _, a in cloud.proxy.calls}
    assert actions and all(a.startswith(READ_ONLY) for a in actions), actions
    cloud_is_empty(cloud)
    assert not (mcc_home / "ledger.db").exists()

    # every number again, from the sample, the shipped table and the harness's spot prices
    mean = doc["sample"]["mean_s"]
    assert mean == pytest.approx(sum(doc["sample"]["seconds"]) / len(doc["sample"]["seconds"]))
    assert doc["sample"]["indices"] == [0, 15, 30, 44, 59]
    rounds = math.ceil(12 / 3)  # 12 subproblems of 5 points on 3 one-process workers
    compute = rounds * 5 * mean
    wall = 90 + 90 + compute + 12 * 0.002  # manager boot + worker boot (plain image) + compute + combine
    manager = max(60, math.ceil(wall)) * PRICES["regions"]["us-east-1"]["t3.small"] / 3600
    bucket = 60 * (2 * 2 + 1) * 8 / 1e9 * PRICES["s3"]["standard_gb_month"]["us-east-1"] * wall / (730 * 3600)
    by_type = {row["instance_type"]: row for row in doc["candidates"]}
    assert list(by_type) == ["c6i.large", "c5.large"]
    for itype, spot in (("c6i.large", 0.031), ("c5.large", 0.029)):
        row = by_type[itype]
        workers_life = max(60, math.ceil(90 + compute))
        assert row["compute_s"] == pytest.approx(compute)
        assert row["wall_s"] == pytest.approx(wall)
        assert row["instance_hours"] == pytest.approx((3 * (90 + compute) + wall) / 3600)
        on_demand = PRICES["regions"]["us-east-1"][itype]
        assert row["on_demand_usd"] == pytest.approx(3 * workers_life * on_demand / 3600 + manager + bucket)
        assert row["spot_usd"] == pytest.approx(3 * workers_life * spot / 3600 + manager + bucket)
        assert row["vcpus"] == 2
    text = " ".join(doc["assumptions"])
    assert "60-second minimum" in text and "highest zone" in text and "manager t3.small on-demand" in text


def test_estimate_names_a_bad_instance_type(cloud, mcc_home: Path, make_project) -> None:
    project = make_project(10, toml=aws_toml(worker_types=["c6i.large", "c6i.larg"]))
    for args in (("--estimate",), ()):
        proc = mcc("run", str(project), *args, home=mcc_home, timeout=120)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        text = " ".join(proc.stderr.split())
        assert "'c6i.larg'" in text and "us-east-1" in text and "Did you mean c6i.large?" in text, proc.stderr
    cloud_is_empty(cloud)
    assert not (mcc_home / "ledger.db").exists() or mcc_json("ledger", "show", home=mcc_home)["runs"] == []


def test_empty_worker_types_is_a_clear_error(cloud, mcc_home: Path, make_project) -> None:
    project = make_project(10, toml=aws_toml(worker_types=[]))
    proc = mcc("run", str(project), "--estimate", home=mcc_home, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "`worker_types` is empty" in proc.stderr and "mcc.toml" in proc.stderr
    cloud_is_empty(cloud)
