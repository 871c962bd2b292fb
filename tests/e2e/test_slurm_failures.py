"""Failures on a real Slurm: a worker array task scancel'd mid-run and the manager job's processes
SIGKILLed; a worker task preempted by a job on the higher-priority partition. The run completes with
every point exactly once. Gated behind MCC_SLOW_TESTS=1 (each ~1 min on 2 cores)."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import combined_rows, ledger_uuid, mcc_json, spawn_mcc, stored_results, wait_for
from tests.slurm_cluster import cancel, jobs, node_cpus, require_slurm, submit

pytestmark = pytest.mark.skipif(not os.environ.get("MCC_SLOW_TESTS"), reason="slow: set MCC_SLOW_TESTS=1")

N = 600
TOML = """
workers = 1
chunk_size = 10
lease_seconds = 10
[slurm]
poll_seconds = 1.0
"""


def _expected(n: int) -> np.ndarray:
    i = np.arange(n, dtype=float)
    return np.column_stack([i, i * 0.5, i * 2.0 + i * 0.5])


def _exactly_once(result: str) -> None:
    rows = combined_rows(result)
    assert rows.shape == (N, 3)
    np.testing.assert_array_equal(rows[np.argsort(rows[:, 0])], _expected(N))


def _running_workers(uuid: str) -> list[dict[str, str]]:
    return [j for j in jobs(f"mcc:ledger={uuid}") if "_" in j["id"] and j["state"] == "RUNNING"]


def _results(home: Path) -> int:
    return stored_results(home / "slurm-buckets", "r-*/results/*.pack")


def _start(home: Path, project: Path):
    proc = spawn_mcc("run", str(project), "--backend", "slurm", "--json", home=home)
    wait_for(lambda: (home / "ledger.db").exists() and _ledger_ready(home), 60, "the ledger")
    return proc, ledger_uuid(home)


def _ledger_ready(home: Path) -> bool:
    try:
        ledger_uuid(home)
        return True
    except (sqlite3.Error, TypeError):
        return False


def _finish(proc) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    return json.loads(out)


def _kill_job_processes(job_id: str) -> int:
    """SIGKILL every process of a job (found by SLURM_JOB_ID in its environment)."""
    killed = 0
    for env_file in Path("/proc").glob("[0-9]*/environ"):
        try:
            env = env_file.read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SLURM_JOB_ID={job_id}".encode() in env and b"MCC_ROLE=manager" in env:
            try:
                os.kill(int(env_file.parent.name), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def test_scancel_worker_and_sigkill_manager(mcc_home: Path, make_project) -> None:
    require_slurm()
    project = make_project(N, body="time.sleep(0.02)", toml=TOML)
    proc, uuid = _start(mcc_home, project)
    try:
        first = wait_for(lambda: _running_workers(uuid), 120, "a running worker task")[0]
        wait_for(lambda: _results(mcc_home) >= 3, 120, "some results")
        cancel(first["id"])
        replacement = wait_for(lambda: [j for j in _running_workers(uuid) if j["id"] != first["id"]], 120,
                               "a replacement worker task")[0]
        wait_for(lambda: _results(mcc_home) >= 8, 120, "more results")
        manager = next(j for j in jobs(f"mcc:ledger={uuid}") if "/manager" in j["comment"])
        assert _kill_job_processes(manager["job_id"]) >= 2  # the manager and its redis-server
        out = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out["state"] == "completed" and out["dead"] == 0
    _exactly_once(out["result"])
    rows = mcc_json("ledger", "show", "--kind", "job", home=mcc_home)["resources"]
    managers = [r for r in rows if r["name"] == "manager"]
    workers = {r["physical_id"]: r for r in rows if r["spec"].get("role") == "worker"}
    assert len(managers) >= 2  # the killed one and its replacement
    assert first["id"] in workers and replacement["id"] in workers
    assert all(r["state"] == "deleted" for r in rows)
    assert jobs(f"mcc:ledger={uuid}") == []


def _ledger_state(home: Path, name: str) -> str | None:
    try:
        with sqlite3.connect(home / "ledger.db", timeout=5) as con:
            row = con.execute("select state from resources where kind='job' and name=?", (name,)).fetchone()
    except sqlite3.OperationalError:  # the run is writing: ask again
        return None
    return row[0] if row else None


def test_preempted_worker_requeued(mcc_home: Path, make_project) -> None:
    """A job on `urgent` (PriorityTier 10) preempts the worker task on `debug` (REQUEUE): its leases go
    back without spending an attempt (a preemption, not a failure), and the task Slurm requeued is left to
    come back (the ledger closing the preempted run's row does not scancel it). The points from 30 on wait
    for a file, so the task is busy when the urgent job comes, whatever this machine's speed."""
    require_slurm()
    release = mcc_home.parent / "release"
    body = f"time.sleep(0.02)\nwhile i >= 30 and not os.path.exists({str(release)!r}):\n    time.sleep(0.05)"
    project = make_project(N, body=body, toml=TOML + 'manager_partition = "urgent"\n')
    proc, uuid = _start(mcc_home, project)
    urgent = None
    try:
        task = wait_for(lambda: _running_workers(uuid), 120, "a running worker task")[0]
        wait_for(lambda: _results(mcc_home) >= 3, 120, "some results")  # then it waits at point 30
        # every CPU but the manager's: the worker task must give its CPU up
        urgent = submit("urgent-work", None, seconds=3, partition="urgent", cpus=node_cpus() - 1)
        wait_for(lambda: task["id"] not in {j["id"] for j in _running_workers(uuid)}, 120, "the preemption")
        wait_for(lambda: _ledger_state(mcc_home, task["id"]) == "deleted", 120, "the preempted run's row closed")
        requeued = [j for j in jobs(f"mcc:ledger={uuid}") if j["id"] == task["id"]]
        assert requeued, "the requeued task was cancelled with the ledger row of its preempted run"
        release.write_text("go")
        out = _finish(proc)
    finally:
        release.write_text("go")
        if proc.poll() is None:  # failed on the way: its manager job would hold a CPU of the one node
            proc.kill()
            cancel(*{j["job_id"] for j in jobs(f"mcc:ledger={uuid}")})
        if urgent:
            cancel(urgent)
    assert out["state"] == "completed" and out["dead"] == 0
    _exactly_once(out["result"])
    a = mcc_json("analyze", out["run_id"], home=mcc_home)
    assert a["preemptions"] >= 1 and a["retries"] == 0
    rows = mcc_json("ledger", "show", "--kind", "job", home=mcc_home)["resources"]
    workers = {r["name"]: r for r in rows if r["spec"].get("role") == "worker"}
    assert task["id"] in workers and len(workers) >= 2  # the preempted task and whichever task ran next
    # the scheduler's own record of the preempted run (not of the requeued one teardown cancelled): its state,
    # the start the manager saw, its CPU
    preempted = workers[task["id"]]["attrs"]
    assert preempted["slurm_state"] == "PREEMPTED"
    assert preempted["start_at"] == preempted["launched_at"] and preempted["cpus"] == 1
    billed = next(j for j in a["jobs"] if j["name"] == task["id"])
    assert billed["from_scheduler"] and billed["start"] == preempted["start_at"] and billed["cpus"] == 1
    assert all(r["state"] == "deleted" for r in rows)
    assert jobs(f"mcc:ledger={uuid}") == []
