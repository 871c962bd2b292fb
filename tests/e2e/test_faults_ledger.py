"""Issue 12 §3: a read-only, misplaced or damaged ledger is readable or gets a clear word; recover restores it."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import latest_run_id, ledger_uuid, mcc, mcc_json, tagged_processes, wait_for
from tests.e2e.faults import SLOW, damage_middle, no_internal_error, remount, tmpfs  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root, as in CI)")

READS = [("status",), ("ledger", "show"), ("analyze",)]


def _one_run(home: Path, make_project) -> str:
    done = mcc_json("run", str(make_project(n=30, toml="workers = 1\n")), home=home)
    assert done["state"] == "completed"
    return done["run_id"]


@SLOW
def test_read_only_home_reads_work_and_writes_say_where(mcc_home: Path, make_project, tmpfs) -> None:
    tmpfs(mcc_home, "16m")
    run_id = _one_run(mcc_home, make_project)
    remount(mcc_home, "ro")
    try:
        for args in [*READS, ("status", run_id), ("analyze", run_id)]:
            proc = mcc(*args, home=mcc_home)
            no_internal_error(proc)
            assert proc.returncode == 0, (args, proc.stderr)
        assert run_id in mcc("status", home=mcc_home).stdout
        proc = mcc("run", str(make_project(n=10, name="second")), home=mcc_home)
        no_internal_error(proc)
        assert proc.returncode == 1 and "read-only" in proc.stderr and str(mcc_home / "ledger.db") in proc.stderr
    finally:
        remount(mcc_home, "rw")


@SLOW
def test_read_only_ledger_file(mcc_home: Path, make_project) -> None:
    run_id = _one_run(mcc_home, make_project)
    ledger = mcc_home / "ledger.db"
    subprocess.run(["mount", "--bind", str(ledger), str(ledger)], check=True, timeout=30)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ledger)], check=True, timeout=30)
        proc = mcc("status", run_id, home=mcc_home)
        no_internal_error(proc)
        assert proc.returncode == 0 and "completed" in proc.stdout
        proc = mcc("resume", run_id, home=mcc_home)
        no_internal_error(proc)
        assert proc.returncode == 1 and "read-only" in proc.stderr and str(ledger) in proc.stderr
    finally:
        subprocess.run(["umount", str(ledger)], timeout=30)


def test_home_that_is_a_file(tmp_path: Path) -> None:
    home = tmp_path / "not-a-folder"
    home.write_text("oops")
    for args in [("status",), ("ledger", "show")]:
        proc = mcc(*args, home=home)
        no_internal_error(proc)
        assert proc.returncode == 1 and "is a file, not a folder" in proc.stderr and str(home) in proc.stderr


@SLOW
def test_damaged_mid_run_recover_then_clean_to_zero(mcc_home: Path, make_project) -> None:
    project = make_project(n=200, body="time.sleep(0.5)", toml="workers = 2\nchunk_size = 10\n")  # ~50 s
    mcc("run", str(project), "--detach", home=mcc_home, check=True)
    run_id = latest_run_id(mcc_home)
    uuid = ledger_uuid(mcc_home)
    wait_for(lambda: len(tagged_processes(mcc_home, **{"mcc:run": run_id})) >= 3, 60, "the manager's workers")
    backup = mcc_home / "ledger.db.backup"
    assert backup.exists()  # taken when the run was created: it knows the run, not its queue or processes
    damage_middle(mcc_home / "ledger.db")
    for args in [("status",), ("status", run_id), ("ledger", "show"), ("resume", run_id)]:
        proc = mcc(*args, home=mcc_home)
        no_internal_error(proc)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert "is damaged" in proc.stderr and str(backup) in proc.stderr and "mcc ledger recover" in proc.stderr
    doc = mcc_json("ledger", "recover", home=mcc_home)
    assert doc["backup"] == str(backup) and Path(doc["damaged_copy"]).exists() and doc["uuid"] == uuid
    kinds = sorted(r["kind"] for r in doc["adopted"])
    assert "cache" in kinds and "instance" in kinds  # created after the backup: adopted, not leaked
    assert mcc_json("status", home=mcc_home)[0]["run_id"] == run_id
    cleaned = mcc("clean", "--all", "--yes", home=mcc_home)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert tagged_processes(mcc_home) == []
    assert not (mcc_home / "buckets").exists() or not any((mcc_home / "buckets").iterdir())
