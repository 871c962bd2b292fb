"""The real single-node Slurm the Slurm backend's tests use (.ci/slurm-up.sh), and squeue helpers."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

UP = REPO / ".ci" / "slurm-up.sh"
NO_SLURM = "sbatch is not on PATH: the Slurm backend's tests need Slurm (as root: .ci/slurm-up.sh installs and starts it)"


def require_slurm() -> None:
    """Skip without sbatch; otherwise make sure the cluster runs (slurm-up.sh is a no-op when it does)."""
    if shutil.which("sbatch") is None:
        pytest.skip(NO_SLURM)
    if os.geteuid() == 0:
        subprocess.run([str(UP)], check=True, timeout=300, stdin=subprocess.DEVNULL)


def jobs(comment_has: str = "") -> list[dict[str, str]]:
    """squeue's alive jobs (array tasks one per line) whose comment contains ``comment_has``."""
    out = subprocess.run(["squeue", "--noheader", "--array", "-O", "JobArrayID:|,JobID:|,State:|,Comment:|"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) >= 4 and comment_has in parts[3]:
            rows.append({"id": parts[0], "job_id": parts[1], "state": parts[2], "comment": parts[3]})
    return rows


def submit(name: str, comment: str | None, seconds: int = 300, partition: str | None = None, cpus: int = 1) -> str:
    argv = ["sbatch", "--parsable", f"--job-name={name}", "--output=/dev/null", f"--wrap=sleep {seconds}",
            f"--cpus-per-task={cpus}"]
    if comment is not None:
        argv.append(f"--comment={comment}")
    if partition:
        argv.append(f"--partition={partition}")
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True, cwd="/tmp").stdout.strip()


def node_cpus() -> int:
    """CPUs of the cluster's one node."""
    out = subprocess.run(["sinfo", "--noheader", "--format=%c"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    return int(out.split()[0])


def cancel(*ids: str) -> None:
    if ids:
        subprocess.run(["scancel", *ids], timeout=30)


def seed_dir() -> Path:
    """The original README's files: shared/seed beside the repository (MCC_SEED_DIR names it elsewhere)."""
    from tests.conftest import SEED

    return SEED
