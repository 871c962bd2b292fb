"""`mcc run --estimate` / mcc.estimate: the sample, the schedule and the bill, recomputed here by hand."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mcc.report import estimation as model
from mcc.driver.prepare import probe_sample, sample_indices
from mcc.project.folder import load_project
from mcc.project.settings import load_settings
from tests.conftest import mcc, mcc_json

PRICES = json.loads((Path(__file__).parents[1] / "mcc" / "report" / "prices" / "ec2-ondemand-linux.json").read_text())


def test_sample_indices_spread_over_the_sweep() -> None:
    assert sample_indices(101, 5) == [0, 25, 50, 75, 100]
    assert sample_indices(3, 5) == [0, 1, 2]
    assert sample_indices(1, 5) == [0]
    assert sample_indices(10, 1) == [0]


def test_the_schedule_and_the_bill_recomputed_by_hand() -> None:
    # 10 subproblems of 4 points at 0.5 s a point on 3 workers: rounds of 3, 3, 3, 1 -> 4 rounds of 2 s
    chunks = [(i * 4, 4) for i in range(10)]
    sched = model.schedule(chunks, 0.5, workers=3, processes=1, boot_s=90.0, manager_boot_s=90.0)
    assert sched.compute_s == pytest.approx(8.0)
    assert sched.worker_instances == 3
    assert sched.wall_s == pytest.approx(90 + 90 + 8 + 10 * 0.002)
    # c6i.large $0.085/h, workers live 98 s (over the 60 s minimum: 98 billed s each), the t3.small manager
    # lives 188.02 s (189 billed s), the bucket nearly nothing
    parts = model.bill(sched, 0.085, 0.0208)
    assert parts["workers"] == pytest.approx(3 * 98 * 0.085 / 3600)
    assert parts["manager"] == pytest.approx(189 * 0.0208 / 3600)
    # a short run pays the 60-second minimum
    short = model.schedule([(0, 1)], 0.1, workers=4, processes=1, boot_s=1.0, manager_boot_s=0.5)
    assert short.worker_instances == 1
    assert model.bill(short, 0.085, 0.0208)["workers"] == pytest.approx(60 * 0.085 / 3600)
    assert model.bill(sched, None, 0.0208) is None


def test_makespan_deals_in_queue_order() -> None:
    assert model.makespan([3, 1, 1, 1], 2) == 3  # 3 | 1+1+1
    assert model.makespan([1, 1, 1, 3], 2) == 4  # 1+1 | 1+3
    assert model.makespan([], 2) == 0


def test_probe_sample_skips_a_point_that_crashes_the_entry(make_project) -> None:
    # point 50 kills its process outright, point 75 raises: neither stops the estimate, both are reported
    project_dir = make_project(101, body="""
        if i == 50:
            os._exit(3)
        if i == 75:
            raise ValueError("bad k-point")
    """)
    project = load_project(project_dir, load_settings(project_dir))
    sample = probe_sample(project, budget=10.0, count=5)
    assert sample.indices == [0, 25, 100]
    assert set(sample.failed) == {50, 75}
    assert "ValueError" in sample.failed[75] and "crashed" in sample.failed[50]
    assert all(math.isfinite(s) and s >= 0 for s in sample.seconds)


def test_probe_sample_first_point_must_work(make_project) -> None:
    from mcc.errors import ProjectError

    project_dir = make_project(10, body="""
        if i == 0:
            raise ValueError("no")
    """)
    project = load_project(project_dir, load_settings(project_dir))
    with pytest.raises(ProjectError, match="first point"):
        probe_sample(project, budget=10.0, count=3)


def test_estimate_local_json_reproduces_from_the_sample(make_project, mcc_home: Path) -> None:
    project = make_project(40, body="time.sleep(0.02)", toml="workers = 2\nchunk_size = 5\n")
    doc = mcc_json("run", str(project), "--estimate", home=mcc_home)
    assert not mcc_home.exists() or not (mcc_home / "ledger.db").exists()  # no ledger: nothing recorded
    assert doc["backend"] == "local" and doc["points"] == 40 and doc["subproblems"] == 8
    sample = doc["sample"]
    assert sample["indices"] == [0, 10, 20, 29, 39]
    mean = sum(sample["seconds"]) / len(sample["seconds"])
    assert mean == pytest.approx(sample["mean_s"]) and mean >= 0.02
    (row,) = doc["candidates"]
    assert row["instance_type"] == "local" and row["on_demand_usd"] == 0
    # 8 subproblems of 5 points on 2 workers: 4 rounds of 5 x mean; + the measured local start-up
    startup = doc["startup_s"]
    assert 0 < startup["manager"] < 120 and 0 < startup["workers"] < 120
    assert row["compute_s"] == pytest.approx(4 * 5 * mean)
    assert row["wall_s"] == pytest.approx(startup["manager"] + startup["workers"] + 4 * 5 * mean + 8 * 0.002)
    assert any("s per point" in a for a in doc["assumptions"])


def test_estimate_from_python_is_the_commands_document(make_project, mcc_home: Path, monkeypatch) -> None:
    """`mcc.estimate(dir)` gives what `mcc run dir --estimate --json` prints, and records nothing either."""
    import mcc

    project = make_project(40, body="time.sleep(0.01)", toml="workers = 2\nchunk_size = 5\n")
    monkeypatch.setenv("MCC_HOME", str(mcc_home))
    doc = mcc.estimate(project)
    assert not (mcc_home / "ledger.db").exists()
    command = mcc_json("run", str(project), "--estimate", home=mcc_home)
    assert set(doc) == set(command)
    for key in ("backend", "points", "subproblems", "chunk_size", "workers"):
        assert doc[key] == command[key], key
    assert doc["sample"]["indices"] == command["sample"]["indices"] == [0, 10, 20, 29, 39]
    assert [c["instance_type"] for c in doc["candidates"]] == ["local"]
    assert mcc.estimate(project, workers=4, chunk_size=10)["subproblems"] == 4


def test_estimate_table_output(make_project, mcc_home: Path) -> None:
    project = make_project(12, toml="chunk_size = 3\n")
    proc = mcc("run", str(project), "--estimate", home=mcc_home)
    assert proc.returncode == 0, proc.stderr
    assert "Estimate: 12 points in 4 subproblems" in proc.stdout and "nothing was created" in proc.stdout
    assert "assumes:" in proc.stdout


@pytest.mark.parametrize("table, needle", [
    ({"worker_types": []}, "`worker_types` is empty"),
    ({"worker_types": "c6i.large"}, "`worker_types` must be list"),
    ({"worker_types": ["c6i.large", ""]}, "list of instance type names"),
    ({"subnets": ["sn-1"]}, "subnet ids like"),
    ({"max_spot_price": 0}, "`max_spot_price` must be a price"),
])
def test_fleet_settings_are_checked(table: dict, needle: str) -> None:
    from mcc.backends.aws_settings import aws_settings
    from mcc.errors import ConfigError

    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        aws_settings(table, "proj/mcc.toml [aws]")


def test_candidate_types_and_subnets() -> None:
    from mcc.backends.aws_settings import aws_settings

    s = aws_settings({"worker_type": "c5.large"})
    assert s.candidate_types == ["c5.large"] and s.candidate_subnets == [None]
    s = aws_settings({"worker_types": ["c6i.large", "c5.large"], "subnets": ["subnet-a", "subnet-b"]})
    assert s.candidate_types == ["c6i.large", "c5.large"] and s.candidate_subnets == ["subnet-a", "subnet-b"]


def test_hyperthreading_off_counts_cores_and_refuses_a_type_that_cannot() -> None:
    from mcc.backends.aws_settings import aws_settings
    from mcc.errors import ConfigError
    from mcc.providers.aws.market import Cpus

    assert aws_settings({}).hyperthreading and not aws_settings({"hyperthreading": False}).hyperthreading
    with pytest.raises(ConfigError, match="`hyperthreading` must be bool"):
        aws_settings({"hyperthreading": "off"})
    prices = model.Prices("us-east-1", PRICES, offered={"m5.xlarge", "c5.metal"},
                          cpus_ec2={"m5.xlarge": Cpus(4, 2, 2, (1, 2)), "c5.metal": Cpus(96, 48, 2, ())})
    sample = {"seconds": [0.1], "mean_s": 0.1, "min_s": 0.1, "max_s": 0.1}
    doc = {ht: model.estimate_doc(backend="aws", n_points=8, chunks=[(0, 4), (4, 4)], values_per_point=5,
                                  sample=sample, workers=2, candidates=["m5.xlarge"], manager_type="t3.small",
                                  prices=prices, spot=False, hyperthreading=ht) for ht in (True, False)}
    assert doc[True]["candidates"][0]["vcpus"] == 4 and doc[False]["candidates"][0]["vcpus"] == 2
    # one worker process per instance, or one per physical core: the 2 chunks go to 2 x 2 processes side by side
    assert [doc[ht]["candidates"][0]["processes_per_worker"] for ht in (True, False)] == [1, 2]
    assert any("one worker process per physical core" in a for a in doc[False]["assumptions"])
    assert any("SMT off" in a for a in doc[False]["assumptions"])
    model.check_smt_off(["m5.xlarge"], prices, "proj/mcc.toml [aws]")
    with pytest.raises(ConfigError, match=r"proj/mcc.toml \[aws\]: instance type 'c5.metal' cannot run with "
                                          r"`hyperthreading = false`.*Fix:.*Nothing was created"):
        model.check_smt_off(["m5.xlarge", "c5.metal"], prices, "proj/mcc.toml [aws]")
    unasked = model.Prices("us-east-1", PRICES, ec2_note="EC2 not asked (no credentials)")
    with pytest.raises(ConfigError, match=r"did not describe instance type 'm5.xlarge'.*\(EC2 not asked"):
        model.check_smt_off(["m5.xlarge"], unasked, "proj/mcc.toml [aws]")


def test_analyze_sets_the_runs_estimate_beside_the_actual(make_project, mcc_home: Path) -> None:
    project = make_project(30, body="time.sleep(0.01)")  # automatic chunk size: the run probes its first point
    out = mcc_json("run", str(project), home=mcc_home, timeout=300)
    a = mcc_json("analyze", out["run_id"], home=mcc_home)
    est = a["estimate"]
    assert est["instance_type"] == "local" and est["market"] == "on_demand" and est["usd"] == 0
    assert est["actual_wall_s"] == pytest.approx(a["wall_s"])
    assert est["wall_ratio"] == pytest.approx(a["wall_s"] / est["wall_s"]) and est["cost_ratio"] is None
    text = mcc("analyze", out["run_id"], home=mcc_home).stdout
    assert "estimate local on-demand: wall" in text and "actual/estimate: wall x" in text
