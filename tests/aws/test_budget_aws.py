"""A hard budget on the emulated cloud: the run stops at or under it, partial results collected, then
`mcc resume RUN --budget N` completes it without recomputing anything; bad budgets are refused up front."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.aws.conftest import aws_toml
from tests.aws.test_estimate_aws import cloud_is_empty
from tests.conftest import combined_rows, mcc, mcc_json

MINUTE = 60 * 0.0104 / 3600  # one t3.micro instance-run's 60-second minimum


def test_budget_stops_the_run_then_resume_completes_it(cloud, mcc_home: Path, make_project) -> None:
    if not os.environ.get("MCC_SLOW_TESTS"):
        pytest.skip("about 2.5 minutes of emulated fleet (set MCC_SLOW_TESTS=1)")
    n = 120
    # one t3.micro manager + one worker fit in the budget (a second worker's minimum would cross it), and
    # 120 points of 0.5 s take longer than what is left after the first minute: the run must drain
    budget = 2.3 * MINUTE
    project = make_project(n, body="time.sleep(0.5)", toml=aws_toml(budget_usd=budget))
    first = mcc_json("run", str(project), home=mcc_home, timeout=400)
    assert first["state"] == "stopped_budget", first
    assert 0 < first["done"] < n
    cost = mcc_json("analyze", first["run_id"], home=mcc_home)
    print("first segment", cost["cost_usd"], "budget", budget, "done", first["done"], cost["cost_breakdown"])
    assert cost["cost_usd"] <= budget
    assert cost["peak_workers"] == 1  # the second worker was never launched: it would have crossed the cap
    partial = combined_rows(first["result"])
    assert len(partial) == first["done"] and len(np.unique(partial[:, 0])) == first["done"]
    events = mcc_json("ledger", "show", "--run", first["run_id"], "--events", home=mcc_home)["events"]
    (stop,) = [e for e in events if e["trigger"] == "stop_budget"]
    assert "spent $" in stop["reason"] and f"{n - first['done']} point(s) left" in stop["reason"]
    done_before = {int(x) for x in partial[:, 0]}

    # a budget that is not above what was spent is refused; a larger one completes the run
    low = mcc("resume", first["run_id"], "--budget", f"{cost['cost_usd'] / 2:.9f}", home=mcc_home)
    assert low.returncode != 0 and "already spent" in low.stderr
    top_up = 40 * MINUTE
    second = mcc_json("resume", first["run_id"], "--budget", f"{top_up:.9f}", home=mcc_home, timeout=400)
    assert second["state"] == "completed" and second["done"] == n, second
    rows = combined_rows(second["result"])
    np.testing.assert_array_equal(np.sort(rows[:, 0]), np.arange(n, dtype=float))  # every point once
    total = mcc_json("analyze", first["run_id"], home=mcc_home)["cost_usd"]
    assert total <= top_up
    # nothing recomputed: no subproblem done before the stop was leased again
    with sqlite3.connect(mcc_home / "ledger.db") as con:
        (stop_at,) = con.execute("SELECT at FROM events WHERE run_id = ? AND trigger = 'stop_budget'",
                                 (first["run_id"],)).fetchone()
        leased_after = {first_point for (first_point,) in con.execute(
            "SELECT s.first_point FROM events e JOIN subproblems s ON CAST(e.entity_id AS INTEGER) = s.id "
            "WHERE e.entity = 'subproblem' AND e.trigger = 'lease' AND e.at > ?", (stop_at,))}
    assert leased_after and not leased_after & done_before, sorted(leased_after & done_before)
    assert mcc_json("clean", "--all", "--yes", home=mcc_home, timeout=600)["survivors"] == []


def test_bad_budgets_are_refused_before_anything_exists(cloud, mcc_home: Path, make_project) -> None:
    cases = [
        (["--budget", "0"], {}, "must be an amount in USD > 0"),
        ([], {"budget_usd": -5}, "must be an amount in USD > 0"),
        (["--budget", f"{MINUTE:.9f}"], {}, "below what the run bills in its first minute"),
        (["--budget", "5", "--backend", "local"], {}, "the local backend costs nothing"),
    ]
    for k, (args, toml, needle) in enumerate(cases):
        project = make_project(10, toml=aws_toml(**toml), name=f"proj{k}")
        proc = mcc("run", str(project), *args, home=mcc_home, timeout=120)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert needle in " ".join(proc.stderr.split()), (args, proc.stderr)
    cloud_is_empty(cloud)
    assert not (mcc_home / "ledger.db").exists() or mcc_json("ledger", "show", home=mcc_home)["runs"] == []
