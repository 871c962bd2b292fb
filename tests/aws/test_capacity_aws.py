"""Diversified capacity: the manager fills the fleet from the first worker type that has capacity.

The harness's market (tests/aws/harness/market.py) refuses the preferred type with
InsufficientInstanceCapacity, or prices its spot above `max_spot_price`; the fleet comes up on the next
type, and the ledger (synced from the manager's instance records) says which type each worker was and
what it paid.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.aws.conftest import aws_toml
from tests.aws.harness.market import Market
from tests.conftest import combined_rows, mcc_json


def worker_rows(home: Path) -> list[dict]:
    doc = mcc_json("ledger", "show", "--kind", "instance", home=home)
    return [r for r in doc["resources"] if r["name"] != "manager"]


def manager_launches(cloud) -> list[str]:
    """The InstanceType of every RunInstances the manager (instance credentials) made."""
    return [r.params.get("InstanceType") for r in cloud.proxy.requests
            if r.action == "RunInstances" and (r.access_key or "").startswith("ASIA")]


def test_the_fleet_skips_a_type_without_capacity_and_one_priced_above_the_cap(cloud, mcc_home: Path,
                                                                            make_project) -> None:
    """Three worker types in order: the first meets InsufficientInstanceCapacity, the second's spot price is
    above max_spot_price (skipped without a launch call), the third comes up: one run, both refusals."""
    market = Market(cloud.proxy)
    refused = market.refuse("t3.micro")
    market.set_spot_price("t3.micro", 0.004)
    market.set_spot_price("t3.medium", 0.02)
    market.set_spot_price("t3.large", 0.0125)
    project = make_project(20, toml=aws_toml(manager_type="t3.small", worker_types=["t3.micro", "t3.medium", "t3.large"],
                                             spot=True, max_spot_price=0.015))
    out = mcc_json("run", str(project), home=mcc_home, timeout=300)
    print("timings", out["timings"])
    assert out["state"] == "completed" and out["done"] == 20
    np.testing.assert_array_equal(np.sort(combined_rows(out["result"])[:, 0]), np.arange(20, dtype=float))

    launches = manager_launches(cloud)
    assert refused.hits >= 1 and launches[0] == "t3.micro", launches
    assert "t3.medium" not in launches and "t3.large" in launches, launches  # over the cap: never asked for
    spot_requests = [r.params for r in cloud.proxy.requests if r.action == "RunInstances"
                     and r.params.get("InstanceMarketOptions.MarketType") == "spot"]
    assert spot_requests and all(float(p["InstanceMarketOptions.SpotOptions.MaxPrice"]) == 0.015 for p in spot_requests)

    # the ledger says which type each worker was and what it paid (the spot price in force at launch)
    workers = worker_rows(mcc_home)
    assert workers and all(w["attrs"]["instance_type"] == "t3.large" and w["attrs"]["spot"] for w in workers), workers
    assert all(w["attrs"]["price_per_hour"] == 0.0125 for w in workers)
    by_type = {r["instance_type"]: r for r in mcc_json("analyze", "--by-type", home=mcc_home)}
    assert "t3.large" in by_type and "t3.micro" not in by_type and "t3.medium" not in by_type
