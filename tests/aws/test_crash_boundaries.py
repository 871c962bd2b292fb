"""Crash at every boundary: SIGKILL the local process just before and just after each distinct
mutating AWS call of provision, launch, teardown and clean; resume; the tagged resources per kind are
those of an uninterrupted run, and after clean there are none. Also: a lost response at every create."""
from __future__ import annotations

import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from tests.aws.test_run_aws import tagged_counts
from tests.conftest import combined_rows, latest_run_id, mcc, mcc_json, spawn_mcc

MUTATING = re.compile(r"^(Create|Put|Delete|Run|Terminate|Authorize|Revoke|Add|Remove|Attach|Detach|Modify|"
                      r"Deregister|Register|Tag|Untag|Upload|Complete|Copy)")
LAPTOP_KEY = "testing"  # the baseline laptop; instances sign with the role credentials from IMDS
N = 4
TOML = """chunk_size = 2
workers = 1
lease_seconds = 4
backend = "aws"

[aws]
region = "us-east-1"
worker_type = "t3.micro"
manager_type = "t3.micro"
tick_seconds = 0.3
boot_seconds = 120
"""


def laptop_mutations(cloud, since: int) -> list[tuple[str, str]]:
    return [(c.service, c.action) for c in cloud.proxy.requests[since:]
            if c.access_key == LAPTOP_KEY and MUTATING.match(c.action or "")]


def distinct(calls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(calls))


class Killer:
    """A proxy hook that SIGKILLs the armed process at its first call of ``target`` in ``phase``; each
    iteration signs with its own access key, so iterations running side by side never touch each other."""

    def __init__(self, target: tuple[str, str], phase: str, key: str) -> None:
        self.target, self.phase, self.key = target, phase, key
        self.pid: int | None = None
        self.fired = threading.Event()

    def __call__(self, call, phase: str) -> bool:
        if (self.pid is None or self.fired.is_set() or phase != self.phase or call.access_key != self.key
                or (call.service, call.action) != self.target):
            return False
        os.kill(self.pid, signal.SIGKILL)
        self.fired.set()
        return True  # the connection closes with the process: before = never sent, after = never heard


def exactly_once(result: str) -> None:
    rows = combined_rows(result)
    np.testing.assert_array_equal(np.sort(rows[:, 0]), np.arange(N, dtype=float))


def killed(cloud, home: Path, killer: Killer, command: list[str]) -> None:
    cloud.proxy.add_hook(killer)
    proc = spawn_mcc(*command, home=home, env={"AWS_ACCESS_KEY_ID": killer.key})
    killer.pid = proc.pid
    proc.wait(timeout=300)
    assert killer.fired.is_set(), f"{command[0]} never reached {killer.target} ({killer.phase})"


def run_boundary(cloud, tmp_path: Path, project: Path, baseline: dict, n: int, target, phase: str) -> str:
    """Kill `mcc run` at the boundary, resume, compare, clean."""
    key = f"laptop{n}{phase}"
    home, env = tmp_path / f"run-{n}-{phase}", {"AWS_ACCESS_KEY_ID": key}
    killed(cloud, home, Killer(target, phase, key), ["run", str(project), "--json"])
    resumed = mcc_json("resume", latest_run_id(home), home=home, timeout=300, env=env)
    assert resumed["state"] == "completed", (target, phase)
    exactly_once(resumed["result"])
    assert tagged_counts(home) == baseline, (target, phase)
    mcc_json("clean", "--all", "--yes", home=home, timeout=300, env=env)
    assert tagged_counts(home) == {}, (target, phase)
    return " ".join(("run", *target, phase))


def clean_boundary(cloud, tmp_path: Path, project: Path, n: int, target, phase: str) -> str:
    """Kill `mcc clean` at the boundary, clean again: nothing tagged survives."""
    key = f"cleaner{n}{phase}"
    home, env = tmp_path / f"clean-{n}-{phase}", {"AWS_ACCESS_KEY_ID": key}
    assert mcc_json("run", str(project), home=home, timeout=300, env=env)["state"] == "completed"
    killed(cloud, home, Killer(target, phase, key), ["clean", "--all", "--yes"])
    again = mcc("clean", "--all", "--yes", "--json", home=home, timeout=300, env=env)
    assert again.returncode == 0, (target, phase, again.stderr)
    assert tagged_counts(home) == {}, (target, phase)
    return " ".join(("clean", *target, phase))


@pytest.mark.skipif(not os.environ.get("MCC_SLOW_TESTS"), reason=(
    "~50 whole emulated-cloud runs (15-25 min on 2 cores): run with MCC_SLOW_TESTS=1; it passed with 48 "
    "boundaries, and once timed out on a heavily loaded machine (a manager replacement interrupted at "
    "TerminateInstances; fixed in the supervisor since, not yet re-run)"))
@pytest.mark.timeout(2700)  # ~50 whole runs, four at a time: minutes, not the suite's 300 s default
def test_crash_at_every_boundary(cloud, tmp_path: Path, make_project) -> None:
    project = make_project(N, toml=TOML)
    base = tmp_path / "baseline"
    mark = len(cloud.proxy.requests)
    out = mcc_json("run", str(project), home=base, timeout=300)
    assert out["state"] == "completed"
    run_calls = distinct(laptop_mutations(cloud, mark))
    baseline = tagged_counts(base)
    mark = len(cloud.proxy.requests)
    mcc_json("clean", "--all", "--yes", home=base, timeout=300)
    clean_calls = distinct(laptop_mutations(cloud, mark))
    assert tagged_counts(base) == {}
    assert ("ec2", "RunInstances") in run_calls and ("s3", "DeleteBucket") in clean_calls

    jobs = [partial(run_boundary, cloud, tmp_path, project, baseline, n, t, p)
            for n, t in enumerate(run_calls) for p in ("before", "after")]
    jobs += [partial(clean_boundary, cloud, tmp_path, project, n, t, p)
             for n, t in enumerate(clean_calls) for p in ("before", "after")]
    with ThreadPoolExecutor(max_workers=4) as pool:  # the iterations mostly wait on instances booting
        exercised = list(pool.map(lambda job: job(), jobs))
    print(f"\ncrash boundaries exercised: {len(exercised)} "
          f"({len(run_calls)} distinct mutating calls in run, {len(clean_calls)} in clean, before and after each)")
    print("per-kind tagged resources of an uninterrupted run before clean:", baseline, "after clean: {}")
    print("\n".join(exercised))
