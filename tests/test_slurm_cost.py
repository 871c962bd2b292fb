"""mcc.backends.slurm_cost: core-hours per job from the scheduler's own times, each run of a requeued task by its
own record, and a scheduler record billed once."""
from __future__ import annotations

from pathlib import Path

import pytest

from mcc.backends.slurm_cost import job_rows
from mcc.ledger import Resource, Run, create_row, open_ledger


def _job(run: Run, name: str, job_id: str, role: str, attrs: dict) -> None:
    create_row(Resource, run=run.id, kind="job", name=name, backend="slurm", physical_id=job_id,
               idempotency_key=f"{run.id}/{name}", state="planned", spec={"role": role}, attrs=attrs)


def test_core_hours_from_the_scheduler_and_each_run_of_a_requeued_task(mcc_home: Path) -> None:
    with open_ledger(mcc_home):
        run = create_row(Run, id="r-slurm", backend="slurm", project_dir="/nowhere", points=10,
                         settings={"slurm": {"core_hour_usd": 0.5}})
        _job(run, "manager", "7", "manager", {"start_at": 1000.0, "end_at": 4600.0, "cpus": 1})
        _job(run, "7_0", "8_0", "worker", {"start_at": 1010.0, "end_at": 2810.0, "cpus": 2})
        # preempted and requeued: one job id, a row and a scheduler record per run
        _job(run, "8_1", "8_1", "worker", {"start_at": 1020.0, "end_at": 1920.0, "cpus": 2})
        _job(run, "8_1.1", "8_1", "worker", {"start_at": 2000.0, "end_at": 2360.0, "cpus": 2})
        # one record on two rows (a ledger written before each run had its own): billed once
        _job(run, "8_3", "8_3", "worker", {"start_at": 1000.0, "end_at": 1360.0, "cpus": 1})
        _job(run, "8_3.1", "8_3", "worker", {"start_at": 1000.0, "end_at": 1360.0, "cpus": 1})
        # seen by the manager only (no scheduler record): its own times
        _job(run, "8_2", "8_2", "worker", {"launched_at": 3000.0, "terminated_at": 3360.0, "cpus": 4})
        rows = job_rows(run, now=5000.0)
    hours = {r["name"]: r["core_hours"] for r in rows}
    assert hours == pytest.approx({"manager": 1.0, "7_0": 1.0, "8_1": 0.5, "8_1.1": 0.2, "8_3": 0.1, "8_2": 0.4})
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(3.2 * 0.5)
