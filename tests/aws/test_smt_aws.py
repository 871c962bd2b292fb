"""``hyperthreading = false``: every worker instance is launched with SMT off (one thread per physical core).

moto ignores RunInstances' CpuOptions (tests/aws/harness/gaps.py): what these tests see is what the manager
asked EC2 for, the RunInstances requests the signing proxy recorded, and what the run recorded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.aws.conftest import aws_toml
from tests.aws.test_capacity_aws import worker_rows
from tests.conftest import combined_rows, mcc, mcc_json

MUTATING = ("Create", "Run", "Put", "Authorize", "Register", "Import", "Add", "Attach", "Pass", "Tag")


def test_hyperthreading_off_launches_every_worker_with_one_thread_per_core(cloud, mcc_home: Path,
                                                                            make_project) -> None:
    """m5.xlarge: 2 cores x 2 threads. Every worker launch carries CpuOptions 2 cores x 1 thread; the
    manager's own launch carries none (SMT is a worker setting); each worker is recorded with 2 vCPUs."""
    project = make_project(20, toml=aws_toml(worker_type="m5.xlarge", hyperthreading=False))
    out = mcc_json("run", str(project), home=mcc_home, timeout=300)
    assert out["state"] == "completed" and out["done"] == 20, out
    np.testing.assert_array_equal(np.sort(combined_rows(out["result"])[:, 0]), np.arange(20, dtype=float))

    launches = [r for r in cloud.proxy.requests if r.action == "RunInstances"]
    by_manager = [r.params for r in launches if (r.access_key or "").startswith("ASIA")]  # instance credentials
    by_laptop = [r.params for r in launches if r.access_key == "testing"]
    assert by_manager and by_laptop, [(r.access_key, r.params.get("InstanceType")) for r in launches]
    assert all(p["InstanceType"] == "m5.xlarge" and p["CpuOptions.CoreCount"] == "2"
               and p["CpuOptions.ThreadsPerCore"] == "1" for p in by_manager), by_manager
    assert not [k for p in by_laptop for k in p if k.startswith("CpuOptions")]

    workers = worker_rows(mcc_home)
    assert workers and all(w["attrs"]["instance_type"] == "m5.xlarge" and w["attrs"]["vcpus"] == 2
                           for w in workers), workers


def test_a_type_that_cannot_turn_smt_off_is_refused_before_anything_exists(cloud, mcc_home: Path,
                                                                         make_project) -> None:
    """c5.metal allows no ThreadsPerCore but its default 2: `mcc run` names the type, the setting and the fix,
    and made no mutating call (only EC2's read-only lookups reached the cloud)."""
    project = make_project(8, toml=aws_toml(worker_types=["m5.xlarge", "c5.metal"], hyperthreading=False))
    proc = mcc("run", str(project), home=mcc_home, timeout=120)
    assert proc.returncode != 0
    message = " ".join(proc.stderr.split())
    assert "instance type 'c5.metal' cannot run with `hyperthreading = false`" in message, proc.stderr
    assert "Fix: choose a worker type that allows one thread per core" in message and "Nothing was created" in message
    actions = {r.action for r in cloud.proxy.requests}
    assert "DescribeInstanceTypes" in actions and not [a for a in actions if a.startswith(MUTATING)], actions
    assert not (mcc_home / "ledger.db").exists() or not mcc_json("ledger", "show", home=mcc_home)["resources"]
