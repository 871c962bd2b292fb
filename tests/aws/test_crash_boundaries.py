"""Crash at every boundary: SIGKILL the local process just before and just after each distinct
mutating AWS call of provision, launch, teardown and clean; resume; the tagged resources per kind are
those of an uninterrupted run, and after clean there are none. Every boundary with MCC_SLOW_TESTS=1; the
default suite takes every fourth (``crash_sample``), spread over the calls and both phases.

One iteration per run boundary: `mcc run` killed there, `mcc resume` to the end (every point exactly once,
tagged resources per kind equal to the uninterrupted run's), then `mcc clean --all` killed at one of the
clean boundaries (while any is left), `mcc clean --all` again: nothing tagged survives. The resumed run is
what the killed clean starts from — its tagged resources were just shown equal to an uninterrupted run's —
so no iteration pays for a run of its own only to have something to clean."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import zip_longest
from pathlib import Path

import numpy as np
import pytest

from mcc.providers.local.processes import run_bounded
from tests.aws.conftest import aws_toml
from tests.aws.test_run_aws import tagged_counts
from tests.conftest import combined_rows, latest_run_id, mcc, mcc_json

pytestmark = pytest.mark.slow

MUTATING = re.compile(r"^(Create|Put|Delete|Run|Terminate|Authorize|Revoke|Add|Remove|Attach|Detach|Modify|"
                      r"Deregister|Register|Tag|Untag|Upload|Complete|Copy)")
LAPTOP_KEY = "testing"  # the baseline laptop; instances sign with the role credentials from IMDS
N = 4
TOML = aws_toml(run={"chunk_size": 2, "workers": 1, "lease_seconds": 4}, tick_seconds=0.3, boot_seconds=120)
PHASES = ("before", "after")
Target = tuple[tuple[str, str], str]  # ((service, action), phase)


def crash_sample() -> int:
    """Every N-th boundary is exercised: all with MCC_SLOW_TESTS=1, a quarter (spread over the calls and both
    phases) in the default suite; MCC_CRASH_SAMPLE=N overrides."""
    return int(os.environ.get("MCC_CRASH_SAMPLE") or (1 if os.environ.get("MCC_SLOW_TESTS") else 4))


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
        self.fired.set()  # before the kill: the test reads it as soon as the killed process is reaped
        os.kill(self.pid, signal.SIGKILL)
        return True  # the connection closes with the process: before = never sent, after = never heard


def exactly_once(result: str) -> None:
    rows = combined_rows(result)
    np.testing.assert_array_equal(np.sort(rows[:, 0]), np.arange(N, dtype=float))


def killed(cloud, home: Path, target: Target, key: str, command: list[str], cwd: Path | None = None) -> None:
    """Run `mcc COMMAND` signing with ``key`` and SIGKILL it at ``target``; fail if it never got there."""
    killer = Killer(target[0], target[1], key)
    cloud.proxy.add_hook(killer)
    env = {**os.environ, "MCC_HOME": str(home), "AWS_ACCESS_KEY_ID": key}

    def arm(proc: subprocess.Popen) -> None:
        killer.pid = proc.pid

    proc = run_bounded([sys.executable, "-m", "mcc.cli", *command], env=env, cwd=cwd, text=True, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=300, on_start=arm)
    assert killer.fired.is_set(), (f"mcc {command[0]} never reached {target} (exit {proc.returncode}):\n"
                                   f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def boundary(cloud, tmp_path: Path, project: Path, baseline: dict, n: int, run_at: Target | None,
             clean_at: Target | None) -> tuple[list[str], float]:
    """Kill `mcc run` at ``run_at``, resume, compare with the baseline; kill `mcc clean` at ``clean_at``, clean
    again: nothing tagged. Returns the boundaries exercised and the seconds it took."""
    start, key, home = time.monotonic(), f"laptop{n}", tmp_path / f"iteration-{n}"
    env, done = {"AWS_ACCESS_KEY_ID": key}, []
    if run_at is not None:
        killed(cloud, home, run_at, key, ["run", str(project), "--json"])
        resumed = mcc_json("resume", latest_run_id(home), home=home, timeout=300, env=env)
        assert resumed["state"] == "completed", run_at
        exactly_once(resumed["result"])
        done.append(" ".join(("run", *run_at[0], run_at[1])))
    else:
        assert mcc_json("run", str(project), home=home, timeout=300, env=env)["state"] == "completed"
    assert tagged_counts(home) == baseline, (run_at, clean_at)
    if clean_at is not None:
        killed(cloud, home, clean_at, key, ["clean", "--all", "--yes"])
        done.append(" ".join(("clean", *clean_at[0], clean_at[1])))
    again = mcc("clean", "--all", "--yes", "--json", home=home, timeout=300, env=env)
    assert again.returncode == 0, (run_at, clean_at, again.stderr[-4000:])
    assert tagged_counts(home) == {}, (run_at, clean_at)
    return done, time.monotonic() - start


# all 48 boundaries (MCC_SLOW_TESTS=1) in 32 iterations of whole emulated-cloud runs: about 6 min wall on 2 cores;
# the default suite's quarter of them under 2 min
@pytest.mark.timeout(1800)  # 33 whole runs, four at a time: minutes, not the suite's 300 s default
def test_crash_at_every_boundary(cloud, tmp_path: Path, make_project, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # one wheel for every iteration's mcc
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

    every = crash_sample()
    run_targets = [(call, phase) for call in run_calls for phase in PHASES][::every]
    clean_targets = [(call, phase) for call in clean_calls for phase in PHASES][::every]
    jobs = [partial(boundary, cloud, tmp_path, project, baseline, n, run_at, clean_at)
            for n, (run_at, clean_at) in enumerate(zip_longest(run_targets, clean_targets))]
    with ThreadPoolExecutor(max_workers=4) as pool:  # the iterations mostly wait on instances and polls
        results = list(pool.map(lambda job: job(), jobs))
    exercised = [b for done, _ in results for b in done]
    assert len(exercised) == len(run_targets) + len(clean_targets)
    print(f"\ncrash boundaries exercised: {len(exercised)} of {2 * (len(run_calls) + len(clean_calls))} "
          f"({len(run_calls)} distinct mutating calls in run, {len(clean_calls)} in clean, before and after each; "
          f"every {every}-th) in {len(jobs)} iterations, "
          f"{time.monotonic() - started:.0f} s in all (slowest iteration {max(t for _, t in results):.0f} s)")
    print("per-kind tagged resources of an uninterrupted run before clean:", baseline, "after clean: {}")
    print("\n".join(exercised))
