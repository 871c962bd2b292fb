"""README is honest: its commands run as written, in order, and leave nothing behind."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.conftest import EXAMPLE, REPO, mcc, mcc_json, tagged_processes


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_quickstart_runs_as_written(mcc_home: Path, tmp_path: Path) -> None:
    commands = readme_commands()
    assert 'pip install -e ".[test]" && python -m pytest' in commands
    assert (REPO / ".ci" / "run").read_text().count('pip install -e ".[test]" && python -m pytest') == 1
    workdir = tmp_path / "repo"
    shutil.copytree(EXAMPLE, workdir / "examples" / "kpoints", ignore=shutil.ignore_patterns("results"))
    quickstart = ["mcc run examples/kpoints", "mcc status", "mcc ledger show", "mcc clean --all --yes"]
    for command in quickstart:
        assert command in commands, command
        proc = mcc(*command.split()[1:], home=mcc_home, cwd=workdir)
        assert proc.returncode == 0, (command, proc.stderr)
    assert tagged_processes(mcc_home) == []
    assert list((workdir / "examples" / "kpoints" / "results").glob("*/combined.h5"))


def test_readme_init_detach_resume_and_api(mcc_home: Path, tmp_path: Path) -> None:
    commands = readme_commands()
    assert "mcc run mysweep --detach" in commands and "mcc resume RUN" in commands
    mcc("init", "mysweep", home=mcc_home, cwd=tmp_path, check=True)
    launched = mcc_json("run", "mysweep", "--detach", home=mcc_home, cwd=tmp_path)
    assert launched["state"] == "running"
    done = mcc_json("resume", launched["run_id"], home=mcc_home, cwd=tmp_path)
    assert done["state"] == "completed" and done["done"] == done["points"]
    import mcc as api

    again = api.resume(launched["run_id"], home=mcc_home)  # idempotent on a finished run
    assert again["state"] == "completed" and again["result"] == done["result"]
    result = mcc_json("clean", "--run", launched["run_id"], home=mcc_home)
    assert result["survivors"] == [] and tagged_processes(mcc_home) == []
