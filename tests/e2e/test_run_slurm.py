"""Whole runs on the Slurm backend, on a real slurmctld + slurmd (.ci/slurm-up.sh): the original README's
sweep through `mcc run --backend slurm`, its core-hours in `mcc analyze`, and `mcc clean` with jobs
planted by hand. One run serves every test of this module (~40 s on 2 cores; MCC_SLOW_TESTS=1)."""
from __future__ import annotations

import os
import sqlite3
import sys

import numpy as np
import pytest

from tests.conftest import EXAMPLE, combined_rows, ledger_uuid, mcc, mcc_json, seed_points
from tests.slurm_cluster import cancel, jobs, require_slurm, seed_dir, submit

SEED = seed_dir()
USD = 0.25  # per core-hour

pytestmark = [
    pytest.mark.skipif(not os.environ.get("MCC_SLOW_TESTS"), reason="slow (~40 s): set MCC_SLOW_TESTS=1; the README "
                       "test runs a whole Slurm sweep, exactly once, analyze and a clean with planted jobs by default"),
    pytest.mark.skipif(not (SEED / "points.py").exists(), reason="shared/seed is not beside the repository"),
]


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_slurm()
    base = tmp_path_factory.mktemp("slurm")
    home, project = base / "mcc-home", base / "original"
    project.mkdir()
    for name in ("points.py", "combine_data.py"):
        (project / name).symlink_to(SEED / name)
    (project / "bands.py").symlink_to(EXAMPLE / "bands.py")
    (project / "mcc.toml").write_text(
        f'entry = "bands:bands"\nworkers = 1\n\n[slurm]\ncore_hour_usd = {USD}\npoll_seconds = 1.0\n')
    out = mcc_json("run", str(project), "--backend", "slurm", home=home, timeout=240)
    yield {"home": home, "project": project, "out": out}
    uuid = ledger_uuid(home)
    cancel(*[j["job_id"] for j in jobs(f"mcc:ledger={uuid}")])


def test_original_sweep_exactly_once(seed_run: dict) -> None:
    out = seed_run["out"]
    assert out["state"] == "completed" and out["backend"] == "slurm" and out["dead"] == 0
    rows = combined_rows(out["result"])
    pts = seed_points()
    sys.path.insert(0, str(EXAMPLE))
    try:
        import bands  # noqa: PLC0415
        want = np.array([bands.bands(list(p)) for p in pts])
    finally:
        sys.path.remove(str(EXAMPLE))
        sys.modules.pop("bands", None)
    assert rows.shape == (19_710, 5) == (len(pts), 5)
    # the user's combine_data.py concatenates in subproblem order: every point once, with its values
    np.testing.assert_allclose(rows, want)


def test_every_job_in_the_ledger_and_none_left(seed_run: dict) -> None:
    home = seed_run["home"]
    doc = mcc_json("ledger", "show", "--kind", "job", home=home)
    rows = doc["resources"]
    names = [r["name"] for r in rows]
    assert names.count("manager") == 1
    # every array task that ran has its row, seen running by the manager or not (a task may start and end
    # between two squeue polls), with the scheduler's final state
    workers = [r for r in rows if r["spec"].get("role") == "worker"]
    assert workers and all("_" in r["physical_id"] for r in workers)  # array tasks "A_T"
    assert all(r["attrs"].get("slurm_state") for r in rows if r["spec"].get("role") != "array")
    assert all(r["state"] == "deleted" for r in rows)
    manager = next(r for r in rows if r["name"] == "manager")
    assert manager["tags"]["mcc:ledger"] == ledger_uuid(home)
    assert jobs(f"mcc:ledger={ledger_uuid(home)}") == []  # the run's teardown cancelled and verified


def test_analyze_core_hours_from_the_scheduler(seed_run: dict) -> None:
    a = mcc_json("analyze", seed_run["out"]["run_id"], home=seed_run["home"])
    assert {j["role"] for j in a["jobs"]} == {"manager", "worker"}
    for j in a["jobs"]:
        assert j["from_scheduler"] and j["end"] >= j["start"] and j["cpus"] >= 1
        assert j["core_hours"] == pytest.approx((j["end"] - j["start"]) * j["cpus"] / 3600)
    assert a["core_hours"] == pytest.approx(sum(j["core_hours"] for j in a["jobs"])) and a["core_hours"] > 0
    assert a["cost_breakdown"]["slurm core-hours"] == pytest.approx(a["core_hours"] * USD)
    assert a["cost_usd"] == pytest.approx(a["core_hours"] * USD)


def test_clean_cancels_only_this_ledgers_jobs(seed_run: dict) -> None:
    """Planted by hand: a job with this ledger's comment the ledger never recorded (cancelled), one of
    another ledger and one untagged (both untouched)."""
    home = seed_run["home"]
    uuid = ledger_uuid(home)
    ours = submit("planted-ours", f"mcc:ledger={uuid},mcc:entity=planted,Name=planted")
    other = submit("planted-other", "mcc:ledger=00000000-0000-4000-8000-000000000000,Name=other")
    untagged = submit("planted-untagged", None)
    try:
        assert {j["job_id"] for j in jobs()} >= {ours, other, untagged}
        proc = mcc("clean", "--all", "--yes", "--json", home=home, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        alive = {j["job_id"] for j in jobs()}
        assert ours not in alive
        assert {other, untagged} <= alive
        assert jobs(f"mcc:ledger={uuid}") == []
        with sqlite3.connect(home / "ledger.db") as con:
            adopted = con.execute("select state from resources where kind='job' and physical_id=?", (ours,)).fetchall()
        assert adopted == [("deleted",)]  # found by the sweep, adopted, cancelled
    finally:
        cancel(ours, other, untagged)
