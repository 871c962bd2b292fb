"""Bad [slurm] input: a clear message naming the setting and the fix, no traceback, nothing submitted
(no job with the ledger's comment in squeue) and no run recorded."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import mcc
from tests.slurm_cluster import jobs, require_slurm

SLOW = pytest.mark.skipif(not os.environ.get("MCC_SLOW_TESTS"), reason="slow (~5 s each): set MCC_SLOW_TESTS=1")


def _run(project: Path, home: Path, env: dict[str, str] | None = None):
    proc = mcc("run", str(project), "--backend", "slurm", home=home, timeout=120, env=env)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert "Traceback" not in text, text
    return " ".join(text.split())


def _nothing_happened(home: Path) -> None:
    import sqlite3

    if (home / "ledger.db").exists():
        with sqlite3.connect(home / "ledger.db") as con:
            assert con.execute("select count(*) from runs").fetchone()[0] == 0
            uuid = con.execute("select value from meta where key='ledger_uuid'").fetchone()[0]
        assert jobs(f"mcc:ledger={uuid}") == []


def test_sbatch_not_on_path(mcc_home: Path, make_project) -> None:
    project = make_project(10)
    text = _run(project, mcc_home, env={"PATH": os.path.dirname(sys.executable)})
    assert "`sbatch` is not on PATH" in text and "--backend local" in text
    _nothing_happened(mcc_home)


@SLOW
def test_malformed_setting_through_the_cli(mcc_home: Path, make_project) -> None:
    """Checked before Slurm is asked anything (every malformed case: tests/test_slurm_settings.py)."""
    project = make_project(10, toml='\n[slurm]\ntime_limit = "1 day"\n')
    text = _run(project, mcc_home)
    assert "mcc.toml [slurm]: `time_limit` = '1 day' is not a Slurm time limit" in text and "HH:MM:SS" in text, text
    _nothing_happened(mcc_home)


def test_partition_that_does_not_exist(mcc_home: Path, make_project) -> None:
    require_slurm()
    project = make_project(10, toml='\n[slurm]\npartition = "nosuch"\n')
    text = _run(project, mcc_home)
    assert "partition = 'nosuch'" in text and "invalid partition" in text.lower(), text
    assert "Partitions here: debug" in text and "Nothing was submitted" in text, text
    _nothing_happened(mcc_home)


@SLOW
def test_bucket_dir_not_writable_here(mcc_home: Path, make_project, tmp_path: Path) -> None:
    require_slurm()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    project = make_project(10, toml=f'\n[slurm]\nbucket_dir = "{blocker}/buckets"\n')
    text = _run(project, mcc_home)
    assert "`bucket_dir`" in text and "is not writable here" in text and "Fix: set bucket_dir" in text, text
    _nothing_happened(mcc_home)


@SLOW
@pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as another user (--uid) only when submitted by root")
def test_bucket_dir_not_writable_from_the_compute_node(mcc_home: Path, make_project, tmp_path: Path) -> None:
    """The compute side cannot write the folder: here its jobs run as `nobody` (root's --uid), and the
    folder is root's 0700 — the probe job runs and its file never appears."""
    require_slurm()
    bucket = tmp_path / "private"
    bucket.mkdir(mode=0o700)
    project = make_project(10, toml=f'\n[slurm]\nbucket_dir = "{bucket}"\nsbatch_args = ["--uid=nobody"]\n')
    text = _run(project, mcc_home)
    assert "`bucket_dir`" in text and "is not writable from the compute node" in text, text
    assert "filesystem the compute nodes share" in text, text
    _nothing_happened(mcc_home)
    assert not (bucket / ".mcc-shared").exists()
