"""A hard budget on the emulated cloud: the run stops at or under it, partial results collected, then
`mcc resume RUN --budget N` completes it without recomputing anything; bad budgets are refused up front."""
from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.aws.conftest import aws_toml
from tests.aws.test_estimate_aws import cloud_is_empty
from tests.aws.test_fleet_aws import RunProcess, RunView, relaunches
from tests.conftest import combined_rows, latest_run_id, mcc, mcc_json

MINUTE = 60 * 0.0104 / 3600  # one t3.micro instance-run's 60-second minimum
# The manager keeps back a reserve for its own loss (remote/budget.py): a replacement manager's minute and each
# running worker's 120 s without a manager; a new worker must fit its minute and those 120 s (3 MINUTEs)
N_POINTS = 240


@pytest.mark.parametrize("kill", [None, "mcc run", "manager"])
def test_budget_stops_the_run_then_resume_completes_it(cloud, mcc_home: Path, make_project, tmp_path: Path,
                                                       kill: str | None) -> None:
    """A budget below the run's cost stops it at or under the cap, partial results collected, and a larger one
    completes it with nothing recomputed; also when `mcc run` or the manager is SIGKILLed during the drain."""
    if not os.environ.get("MCC_SLOW_TESTS"):
        pytest.skip("about 3 minutes of emulated fleet (set MCC_SLOW_TESTS=1)")
    n = N_POINTS
    # the manager's minute + its reserve (1 + 1) + one worker's minute and tail (3) fit; a second worker would
    # cross the cap. 240 points of 0.5 s on one worker take longer than the budget lasts: the run must drain.
    budget = 6.0 * MINUTE
    project = make_project(n, body="time.sleep(0.5)", toml=aws_toml(budget_usd=budget))
    if kill is None:
        first = mcc_json("run", str(project), home=mcc_home, timeout=400)
    else:
        view = RunView(cloud, mcc_home, RunProcess(project, mcc_home, tmp_path / "logs"))
        try:
            (manager,) = view.wait(lambda: [m["InstanceId"] for m in view.managers()], 120, "the manager")
            view.wait(lambda: "draining" in cloud.runner.console(manager), 300, "the manager to start draining")
            if kill == "mcc run":  # the manager stops the run on its own; `mcc resume` collects it
                os.kill(view.run.proc.pid, signal.SIGKILL)
                view.run.proc.wait(timeout=60)
                first = mcc_json("resume", view.run_id, home=mcc_home, timeout=400)
            else:  # `mcc run` relaunches the lost manager, which finds the run over its projection and stops it
                cloud.runner.terminate(manager)
                first = view.run.result(timeout=400)
        finally:
            view.run.stop()
    assert first["state"] == "stopped_budget", first
    assert 0 < first["done"] < n
    cost = mcc_json("analyze", first["run_id"], home=mcc_home)
    print(f"[{kill}] first segment", cost["cost_usd"], "budget", budget, "done", first["done"], cost["cost_breakdown"])
    assert cost["cost_usd"] <= budget
    assert cost["peak_workers"] == 1  # the second worker was never launched: it would have crossed the cap
    if kill == "manager":
        assert relaunches(mcc_home, first["run_id"]) == 1
        assert cost["instances"] >= 3  # two managers and the worker, all in the ledger's cost
    partial = combined_rows(first["result"])
    assert len(partial) == first["done"] and len(np.unique(partial[:, 0])) == first["done"]
    events = mcc_json("ledger", "show", "--run", first["run_id"], "--events", home=mcc_home)["events"]
    (stop,) = [e for e in events if e["trigger"] == "stop_budget"]
    assert "spent $" in stop["reason"] and f"{n - first['done']} point(s) left" in stop["reason"]
    done_before = {int(x) for x in partial[:, 0]}

    # a budget that leaves nothing for going on is refused; a larger one completes the run
    low = mcc("resume", first["run_id"], "--budget", f"{cost['cost_usd'] * 1.01:.9f}", home=mcc_home)
    assert low.returncode != 0 and "already spent" in " ".join(low.stderr.split()), low.stderr
    top_up = 60 * MINUTE
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


def test_readme_costs_walkthrough(cloud, mcc_home: Path, tmp_path: Path) -> None:
    """README's Costs section, command by command, on the emulated cloud: `--estimate`, a `--budget` that stops
    the run, `mcc analyze`, and `mcc resume --budget` that completes it. Run with `-s` to see the text README
    shows (it is pasted from here)."""
    if not os.environ.get("MCC_SLOW_TESTS"):
        pytest.skip("about 5 minutes of emulated fleet (set MCC_SLOW_TESTS=1)")
    from tests.aws.harness.market import Market
    from tests.conftest import ENTRY_PY, POINTS_PY

    Market(cloud.proxy).set_spot_price("t3.micro", 0.0041)
    project = tmp_path / "mysweep"
    project.mkdir()
    (project / "points.py").write_text(POINTS_PY.format(n=400))
    (project / "entry.py").write_text(ENTRY_PY.format(body="    time.sleep(0.5)"))
    (project / "mcc.toml").write_text('entry = "entry:compute"\n' + aws_toml(
        run={"chunk_size": 5, "workers": 2}, worker_types=["t3.micro"], worker_type=None, spot=True))

    def shown(*args: str, timeout: float = 600) -> str:
        proc = mcc(*args, home=mcc_home, cwd=tmp_path, timeout=timeout, env={"COLUMNS": "105"})
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        print(f"\n$ mcc {' '.join(args)}\n{proc.stdout}{proc.stderr}")
        return proc.stdout + proc.stderr

    assert "nothing was created" in shown("run", "mysweep", "--estimate", timeout=120)
    stopped = shown("run", "mysweep", "--budget", "0.0009")
    assert "stopped_budget" in stopped and "mcc resume" in stopped
    run_id = latest_run_id(mcc_home)
    first = mcc_json("analyze", run_id, home=mcc_home)
    assert first["cost_usd"] <= 0.0009 and 0 < first["done"] < 400, first
    shown("analyze", run_id)
    done = shown("resume", run_id, "--budget", "0.003")
    assert "completed" in done
    final = mcc_json("analyze", run_id, home=mcc_home)
    assert final["cost_usd"] <= 0.003 and final["done"] == 400, final
    shown("analyze", run_id)
    assert mcc_json("clean", "--all", "--yes", home=mcc_home, timeout=600)["survivors"] == []
