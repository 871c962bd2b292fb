"""Crash at every mutating boundary of the Slurm backend (MCC_SLOW_TESTS=1): every sbatch and scancel
that provision (the bucket probe), launch, the manager job (worker arrays), teardown and clean make,
with the process that makes it SIGKILLed just before and just after the call; then `mcc resume` (or
`mcc run` again when the kill came before the run existed) and `mcc clean --all`: every point exactly
once, every job ever submitted known to the ledger, one manager job per manager the run needed, and
no job with the ledger's comment after clean.

The boundaries are found by PATH shims for sbatch and scancel that number every call (the laptop's and
the jobs' alike, in one counter) and SIGKILL their parent at the armed number: a test device in the
harness, not a branch of product code."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import combined_rows, latest_run_id, ledger_uuid, mcc, mcc_json
from tests.slurm_cluster import cancel, jobs, require_slurm

pytestmark = pytest.mark.skipif(not os.environ.get("MCC_SLOW_TESTS"), reason="slow: set MCC_SLOW_TESTS=1")

N = 40
TOML = """
workers = 1
chunk_size = 5
lease_seconds = 5
[slurm]
poll_seconds = 1.0
tick_seconds = 0.5
"""
SHIM = """#!/bin/sh
real=/usr/bin/$(basename "$0")
who=laptop; [ -n "$SLURM_JOB_ID" ] && who=job
name=$(printf '%s\n' "$@" | sed -n 's/^--job-name=//p')
case "$(basename "$0") $*" in
  scancel*) what=cancel ;; *--test-only*) what=test ;;
  *) case "$name" in *-manager) what=manager ;; *-workers) what=workers ;; mcc-probe-*) what=probe ;; *) what=other ;; esac ;;
esac
sig="$who-$(basename "$0")-$what"
n=$(flock "$MCC_SHIM_DIR/lock" sh -c 'f="$1/count-$2"; n=$(( $(cat "$f" 2>/dev/null || echo 0) + 1 )); echo $n > "$f"; echo $n' sh "$MCC_SHIM_DIR" "$sig")
flock "$MCC_SHIM_DIR/lock" sh -c 'echo "$2" >> "$1/calls"' sh "$MCC_SHIM_DIR" "$sig $n $*"
armed=no; [ "$sig" = "$MCC_CRASH_SIG" ] && [ "$n" = "$MCC_CRASH_NTH" ] && armed=yes
if [ $armed = yes ] && [ "$MCC_CRASH_WHEN" = before ]; then kill -9 $PPID; exit 1; fi
"$real" "$@"; rc=$?
if [ $armed = yes ] && [ "$MCC_CRASH_WHEN" = after ]; then kill -9 $PPID; fi
exit $rc
"""


def _shims(base: Path) -> Path:
    bin_dir = base / "shim-bin"
    bin_dir.mkdir(parents=True)
    for cmd in ("sbatch", "scancel"):
        (bin_dir / cmd).write_text(SHIM)
        (bin_dir / cmd).chmod(0o755)
    return bin_dir


def _env(bin_dir: Path, at: tuple[str, int] = ("", 0), when: str = "") -> dict[str, str]:
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "MCC_SHIM_DIR": str(bin_dir), "MCC_CRASH_SIG": at[0],
            "MCC_CRASH_NTH": str(at[1]), "MCC_CRASH_WHEN": when}


def boundaries(calls: list[str]) -> list[tuple[str, int]]:
    """(signature, occurrence) of every mutating call, a retry of the call just before it left out
    (cancel_jobs scancels again while a job lingers: the same boundary)."""
    out, previous = [], None
    for line in calls:
        sig, nth = line.split()[:2]
        if sig.endswith("-test") or sig == previous:
            previous = sig
            continue
        out.append((sig, int(nth)))
        previous = sig
    return out


def _calls(bin_dir: Path) -> list[str]:
    path = bin_dir / "calls"
    return path.read_text().splitlines() if path.exists() else []


def _sweep(home: Path, project: Path, env: dict[str, str]) -> dict:
    """Run (killed or not), finish it, clean it (every call through the shims, disarmed after the kill);
    returns what to compare."""
    first = mcc("run", str(project), "--backend", "slurm", "--json", home=home, timeout=300, env=env)
    killed = first.returncode != 0
    env = {**env, "MCC_CRASH_SIG": ""}
    run_id = latest_run_id(home)
    if run_id is None:  # killed before the run was recorded (the bucket probe): run again
        out = mcc_json("run", str(project), "--backend", "slurm", home=home, timeout=300, env=env)
    else:
        out = mcc_json("resume", run_id, home=home, timeout=300, env=env)
    uuid = ledger_uuid(home)
    with sqlite3.connect(home / "ledger.db") as con:
        managers = [r[0] for r in con.execute("select physical_id from resources where kind='job' and name='manager'")]
        known = {r[0] for r in con.execute("select physical_id from resources where kind='job'")}
    clean = mcc("clean", "--all", "--yes", home=home, timeout=300, env=env)
    return {"out": out, "killed": killed, "managers": managers, "known": known, "uuid": uuid,
            "clean_rc": clean.returncode, "left": jobs(f"mcc:ledger={uuid}")}


def _manager_submissions(calls: list[str], at: tuple[str, int], when: str) -> int:
    """sbatch calls of a manager job that reached Slurm (the armed one did not when killed before it)."""
    return sum(1 for c in calls if c.split()[0].endswith("-sbatch-manager")
               and not (when == "before" and c.split()[:2] == [at[0], str(at[1])]))


@pytest.mark.timeout(3600)
def test_crash_at_every_boundary(tmp_path: Path, make_project) -> None:
    require_slurm()
    project = make_project(N, body="time.sleep(0.01)", toml=TOML)
    want = np.column_stack([np.arange(N), np.arange(N) * 0.5, np.arange(N) * 2.5])
    base_bin = _shims(tmp_path / "baseline")
    baseline = _sweep(tmp_path / "baseline" / "home", project, _env(base_bin))
    assert baseline["out"]["state"] == "completed" and not baseline["killed"]
    targets = boundaries(_calls(base_bin))
    sigs = {sig for sig, _ in targets}
    assert {"laptop-sbatch-probe", "laptop-sbatch-manager", "job-sbatch-workers", "job-scancel-cancel",
            "laptop-scancel-cancel"} <= sigs, _calls(base_bin)
    failures = []
    for at in targets:
        for when in ("before", "after"):
            case = tmp_path / f"{at[0]}-{at[1]}-{when}"
            case.mkdir()
            bin_dir = _shims(case)
            try:
                got = _sweep(case / "home", project, _env(bin_dir, at, when))
            except Exception as exc:  # noqa: BLE001 - collect every boundary's failure, then report them all
                failures.append(f"{at} {when}: {exc}")
                continue
            finally:
                if (case / "home" / "ledger.db").exists():
                    cancel(*[j["job_id"] for j in jobs(f"mcc:ledger={ledger_uuid(case / 'home')}")])
            calls = _calls(bin_dir)
            if not any(line.startswith(f"{at[0]} {at[1]} ") for line in calls):
                failures.append(f"{at[0]} #{at[1]} {when}: the boundary was never reached")
                continue
            label = f"{at[0]} #{at[1]} {when}"
            rows = combined_rows(got["out"]["result"])
            problems = []
            if got["out"]["state"] != "completed":
                problems.append(f"state {got['out']['state']}")
            elif rows.shape != (N, 3) or not np.array_equal(rows[np.argsort(rows[:, 0])], want):
                problems.append("combined file differs from the uninterrupted run's")
            submitted = _manager_submissions(calls, at, when)
            if submitted != len([m for m in got["managers"] if m]):  # each manager job has its row, none twice
                problems.append(f"{submitted} manager submissions, ledger rows {got['managers']}")
            if not at[0].startswith("job-") and submitted != 1:  # the laptop's kills never need a second manager
                problems.append(f"{submitted} manager jobs submitted for one manager")
            if got["left"] or got["clean_rc"] != 0:
                problems.append(f"after clean: {got['left']} (exit {got['clean_rc']})")
            if problems:
                failures.append(f"{label}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)


@pytest.mark.timeout(1200)
def test_crash_at_every_clean_boundary(tmp_path: Path, make_project) -> None:
    """`mcc clean --all` of a running (detached) run, SIGKILLed before and after each of its scancels,
    then `mcc clean --all` again: no job with the ledger's comment survives, none of another is touched."""
    require_slurm()
    project = make_project(400, body="time.sleep(0.02)", toml=TOML)
    failures = []
    for when in ("before", "after"):
        for nth in (1, 2):
            case = tmp_path / f"clean-{nth}-{when}"
            bin_dir = _shims(case)
            home = case / "home"
            quiet = _env(bin_dir)
            mcc_json("run", str(project), "--backend", "slurm", "--detach", home=home, timeout=300, env=quiet)
            uuid = ledger_uuid(home)
            try:
                _wait_workers(uuid)
                at = nth + sum(1 for line in _calls(bin_dir) if line.startswith("laptop-scancel-cancel "))  # the run's own
                killed = mcc("clean", "--all", "--yes", home=home, timeout=300,
                             env=_env(bin_dir, ("laptop-scancel-cancel", at), when))
                again = mcc("clean", "--all", "--yes", home=home, timeout=300, env=quiet)
                left = jobs(f"mcc:ledger={uuid}")
                reached = any(line.startswith(f"laptop-scancel-cancel {at} ") for line in _calls(bin_dir))
                if not reached:
                    failures.append(f"clean scancel #{nth} {when}: never reached ({killed.returncode})")
                if killed.returncode == 0 and reached:
                    failures.append(f"clean scancel #{nth} {when}: the armed clean was not killed")
                if again.returncode != 0 or left:
                    failures.append(f"clean scancel #{nth} {when}: after the second clean {left} "
                                    f"(exit {again.returncode}: {again.stdout[-300:]} {again.stderr[-300:]})")
            finally:
                cancel(*[j["job_id"] for j in jobs(f"mcc:ledger={uuid}")])
    assert not failures, "\n".join(failures)


def _wait_workers(uuid: str) -> None:
    from tests.conftest import wait_for

    wait_for(lambda: [j for j in jobs(f"mcc:ledger={uuid}") if "_" in j["id"] and j["state"] == "RUNNING"], 120,
             "a running worker task")
