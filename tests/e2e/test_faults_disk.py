"""Issue 12 §2: a full disk, odd paths and failed commands get a clear word and leave nothing running."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import (
    combined_rows, latest_run_id, mcc, mcc_json, run_state, stored_results, tagged_processes, wait_for,
)
from tests.e2e.faults import SLOW, fill, no_internal_error, tmpfs  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root, as in CI)")


@SLOW
def test_results_folder_full_is_one_clear_paragraph_and_resume_finishes(mcc_home: Path, make_project,
                                                                       tmpfs) -> None:
    project = make_project(n=300, toml="workers = 2\n")
    results = tmpfs(project / "results", "8m")
    filler = fill(results)
    proc = mcc("run", str(project), home=mcc_home)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    no_internal_error(proc)
    assert "No space left on the device that holds" in proc.stderr and str(results) in proc.stderr
    assert "free" in proc.stderr and "mcc resume" in proc.stderr
    run_id = latest_run_id(mcc_home)
    assert run_state(mcc_home, run_id) == "collecting"
    assert tagged_processes(mcc_home) == []  # the queue this command started is stopped
    filler.unlink()
    done = mcc_json("resume", run_id, home=mcc_home)
    assert done["state"] == "completed"
    assert len(combined_rows(done["result"])) == 300


@SLOW
def test_bucket_full_stops_the_queue_and_resume_finishes(mcc_home: Path, make_project, tmpfs) -> None:
    n = 100_000  # points.npy of 1.6 MB: written beside the ledger, then refused by the bucket on the same disk
    project = make_project(n=n, toml="workers = 2\nchunk_size = 20000\n")
    tmpfs(mcc_home, "24m")
    mcc("status", home=mcc_home, check=True)  # the ledger exists
    filler = fill(mcc_home, leave=int(n * 2 * 8 * 1.5))
    proc = mcc("run", str(project), home=mcc_home)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    no_internal_error(proc)
    assert "No space left on the device that holds" in proc.stderr and str(mcc_home) in proc.stderr
    assert "queue and processes were stopped" in proc.stderr
    run_id = latest_run_id(mcc_home)
    assert run_state(mcc_home, run_id) == "provisioning"
    assert tagged_processes(mcc_home) == []
    status = mcc_json("status", run_id, home=mcc_home)
    assert status["state"] == "provisioning" and status["running"] == []  # the ledger agrees: nothing runs
    filler.unlink()
    done = mcc_json("resume", run_id, home=mcc_home)
    assert done["state"] == "completed" and done["done"] == n
    assert tagged_processes(mcc_home) == []


def test_ledger_full_names_the_ledger(tmp_path: Path, tmpfs) -> None:
    from mcc.errors import DiskFull
    from mcc.ledger import create_row, models, open_ledger

    home = tmpfs(tmp_path / "home", "2m")
    ledger = open_ledger(home)
    fill(home)
    with pytest.raises(DiskFull) as info:
        with ledger.atomic():
            for i in range(1_000):
                create_row(models.Run, id=f"r-full-{i}", backend="local", project_dir="/p" * 5000, points=i)
    assert str(ledger.path) in str(info.value) and "free" in str(info.value)
    ledger.close()


@SLOW
def test_odd_paths_in_home_and_project(tmp_path: Path, make_project) -> None:
    odd = "sp ace 'single' \"double\" ünïcødé"
    home = tmp_path / f"home {odd}"
    project = make_project(n=40, toml="workers = 2\n", name=f"proj {odd}")
    done = mcc_json("run", str(project), home=home)
    assert done["state"] == "completed" and len(combined_rows(done["result"])) == 40
    assert tagged_processes(home) == []


def test_resume_without_its_project_folder_starts_nothing(mcc_home: Path, make_project) -> None:
    import shutil

    project = make_project(n=200, body="time.sleep(0.05)", toml="workers = 1\nchunk_size = 10\n")
    mcc("run", str(project), "--detach", home=mcc_home, check=True)
    run_id = latest_run_id(mcc_home)
    for proc in tagged_processes(mcc_home):  # the machine went down: nothing of the run runs
        os.kill(proc.pid, signal.SIGKILL)
    wait_for(lambda: tagged_processes(mcc_home) == [], 30, "the run's processes to die")
    state = run_state(mcc_home, run_id)
    shutil.rmtree(project)
    proc = mcc("resume", run_id, home=mcc_home)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    no_internal_error(proc)
    assert "project folder" in proc.stderr and str(project) in proc.stderr and "Nothing was started" in proc.stderr
    assert tagged_processes(mcc_home) == []
    assert run_state(mcc_home, run_id) == state


@SLOW
def test_bucket_fills_mid_run_nothing_is_lost_and_resume_finishes(mcc_home: Path, make_project, tmpfs) -> None:

    from tests.conftest import spawn_mcc

    buckets = tmpfs(mcc_home / "buckets", "32m")  # the bucket's disk fills; the ledger's does not
    project = make_project(n=400, body="time.sleep(0.02)", toml="workers = 2\nchunk_size = 10\n")
    proc = spawn_mcc("run", str(project), home=mcc_home)
    try:
        wait_for(lambda: stored_results(buckets, "*/results/*.pack") >= 3, 120, "the first results")
        filler = fill(buckets)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out + err
    assert "internal error" not in err and "Traceback" not in err, err
    assert "No space left on the device that holds" in err and str(buckets) in err, err
    assert "without spending an attempt" in err
    run_id = latest_run_id(mcc_home)
    assert tagged_processes(mcc_home) == []
    filler.unlink()
    done = mcc_json("resume", run_id, home=mcc_home)
    assert done["state"] == "completed" and done["done"] == 400 and done["dead"] == 0, done
    assert len(combined_rows(done["result"])) == 400
