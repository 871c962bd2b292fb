"""README's "On a Slurm cluster" section, every command as written, on the local Slurm; its [slurm]
example is a valid table."""
from __future__ import annotations


try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from pathlib import Path

from mcc.backends.slurm_settings import slurm_settings
from tests.conftest import EXAMPLE, latest_run_id, ledger_uuid, run_state
from tests.e2e.test_readme import blocks, commands, mcc_on_path, shell
from tests.slurm_cluster import jobs, require_slurm

SECTION = "On a Slurm cluster"


def test_readme_slurm_settings_are_valid() -> None:
    [(_, text)] = [b for b in blocks("text") if b[0] == SECTION]
    table = tomllib.loads(text)["slurm"]
    settings = slurm_settings(table)
    assert settings.workers == 8 and settings.sbatch_args == ["--constraint=haswell"]


def test_readme_slurm_as_written(mcc_home: Path, tmp_path: Path) -> None:
    require_slurm()
    import shutil

    lines = commands(SECTION)
    assert [line.split()[1] for line in lines] == ["run", "status", "ledger", "analyze", "clean"]
    shutil.copytree(EXAMPLE, tmp_path / "examples" / "kpoints", ignore=shutil.ignore_patterns("results"))
    bin_dir = mcc_on_path(tmp_path)
    run_id = None
    for line in lines:
        proc = shell(line, cwd=tmp_path, home=mcc_home, bin_dir=bin_dir, run_id=run_id, timeout=300)
        run_id = latest_run_id(mcc_home) or run_id
        if line.startswith("mcc status"):
            assert run_id in proc.stdout and "completed" in proc.stdout
        if line.startswith("mcc ledger show"):
            assert "manager" in proc.stdout and "job" in proc.stdout
        if line.startswith("mcc analyze"):
            assert "slurm core-hours" in proc.stdout
    assert run_state(mcc_home, run_id) == "cleaned"
    assert jobs(f"mcc:ledger={ledger_uuid(mcc_home)}") == []
