"""Failure is a feature: SIGKILL the command, the workers or the manager; every point still lands once."""
from __future__ import annotations

import json
import random
import signal
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mcc.providers.local import processes
from tests.conftest import combined_rows, latest_run_id, mcc_json, run_state, spawn_mcc, tagged_processes, wait_for

N = 400
SLOW = "time.sleep(0.015)"
TOML = "chunk_size = 10\nlease_seconds = 2\nmax_attempts = 20\nworkers = 2\n"


def done_points(home: Path, run_id: str) -> int:
    progress = home / "buckets" / run_id / "progress.json"
    try:
        return json.loads(progress.read_text())["progress"]["done_points"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def assert_exactly_once(result: str, n: int = N) -> None:
    rows = combined_rows(result)
    assert rows.shape == (n, 3), rows.shape
    np.testing.assert_array_equal(np.sort(rows[:, 0]), np.arange(n, dtype=float))
    np.testing.assert_allclose(rows[np.argsort(rows[:, 0]), 2], np.arange(n) * 2.5)


def role_processes(home: Path, role: str) -> list[processes.ProcessId]:
    found = []
    for proc in tagged_processes(home, **{"mcc:kind": "instance"}):
        name = processes.tags_of(proc).get("NAME", "")
        if (role == "manager" and name == "manager") or (role == "worker" and name.startswith("w-")):
            found.append(proc)
    return found


def finish(proc, home: Path) -> dict:
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    return json.loads(stdout)


@pytest.mark.parametrize("moment", ["provisioning", "launching", "running-early", "running-late"])
def test_sigkill_mcc_run_then_resume(mcc_home: Path, make_project, moment: str) -> None:
    project = make_project(N, body=SLOW, toml=TOML)
    proc = spawn_mcc("run", str(project), "--json", home=mcc_home)
    run_id = wait_for(lambda: latest_run_id(mcc_home), what="the run row")
    if moment in ("provisioning", "launching"):
        wait_for(lambda: run_state(mcc_home, run_id) not in (None, "draft"), what="provisioning")
        if moment == "launching":
            wait_for(lambda: run_state(mcc_home, run_id) in ("launching", "running"), what="launching")
    else:
        target = 40 if moment == "running-early" else 300
        wait_for(lambda: done_points(mcc_home, run_id) >= target, timeout=120, what=f"{target} points")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    out = mcc_json("resume", run_id, home=mcc_home)
    assert out["state"] == "completed" and out["done"] == N
    assert_exactly_once(out["result"])
    assert tagged_processes(mcc_home) == []
    with sqlite3.connect(mcc_home / "ledger.db") as con:
        managers = con.execute("select count(*) from resources where name='manager' and state != 'deleted'").fetchone()
        subs = dict(con.execute("select state, count(*) from subproblems group by state").fetchall())
    assert managers == (0,)
    assert subs == {"done": N // 10}


def test_sigkill_random_workers(mcc_home: Path, make_project) -> None:
    project = make_project(N, body=SLOW, toml=TOML)
    proc = spawn_mcc("run", str(project), "--json", home=mcc_home)
    run_id = wait_for(lambda: latest_run_id(mcc_home), what="the run row")
    rng = random.Random(7)
    killed = 0
    for target in (60, 150, 240):
        wait_for(lambda: done_points(mcc_home, run_id) >= target, timeout=120, what=f"{target} points")
        workers = role_processes(mcc_home, "worker")
        if workers:
            victim = rng.choice(workers)
            processes._signal_group(victim, signal.SIGKILL)
            killed += 1
    assert killed >= 2
    out = finish(proc, mcc_home)
    assert out["state"] == "completed" and out["done"] == N
    assert_exactly_once(out["result"])
    assert tagged_processes(mcc_home) == []


def test_sigterm_worker_hands_back_leases_without_spending_an_attempt(mcc_home: Path, make_project) -> None:
    project = make_project(N, body=SLOW, toml=TOML.replace("max_attempts = 20", "max_attempts = 1"))
    proc = spawn_mcc("run", str(project), "--json", home=mcc_home)
    run_id = wait_for(lambda: latest_run_id(mcc_home), what="the run row")
    wait_for(lambda: done_points(mcc_home, run_id) >= 50, timeout=120, what="50 points")
    victims = role_processes(mcc_home, "worker")
    for victim in victims:  # a spot interruption of every worker: SIGTERM, as the instance would get
        processes._signal_group(victim, signal.SIGTERM)
    out = finish(proc, mcc_home)
    # max_attempts = 1: had the preemption spent an attempt, some subproblem would be dead
    assert out["state"] == "completed" and out["dead"] == 0
    assert_exactly_once(out["result"])


def test_sigkill_manager(mcc_home: Path, make_project) -> None:
    project = make_project(N, body=SLOW, toml=TOML)
    proc = spawn_mcc("run", str(project), "--json", home=mcc_home)
    run_id = wait_for(lambda: latest_run_id(mcc_home), what="the run row")
    wait_for(lambda: done_points(mcc_home, run_id) >= 80, timeout=120, what="80 points")
    managers = role_processes(mcc_home, "manager")
    assert len(managers) == 1
    processes._signal_group(managers[0], signal.SIGKILL)
    out = finish(proc, mcc_home)
    assert out["state"] == "completed" and out["done"] == N
    assert_exactly_once(out["result"])
    with sqlite3.connect(mcc_home / "ledger.db") as con:
        relaunches = con.execute("select count(*) from events where entity='run' and trigger='relaunch'").fetchone()[0]
    assert relaunches >= 1
    assert tagged_processes(mcc_home) == []


def test_hung_manager_is_replaced(mcc_home: Path, make_project) -> None:
    """A manager that is alive but silent (SIGSTOP: a hung process) is replaced after its allowance."""
    project = make_project(N, body=SLOW, toml=TOML)
    proc = spawn_mcc("run", str(project), "--json", home=mcc_home)
    run_id = wait_for(lambda: latest_run_id(mcc_home), what="the run row")
    wait_for(lambda: done_points(mcc_home, run_id) >= 40, timeout=120, what="40 points")
    manager = role_processes(mcc_home, "manager")[0]
    processes._signal_group(manager, signal.SIGSTOP)
    out = finish(proc, mcc_home)
    assert out["state"] == "completed" and out["done"] == N
    assert_exactly_once(out["result"])
    assert not processes.is_alive(manager)  # the silent one was terminated, not left behind
