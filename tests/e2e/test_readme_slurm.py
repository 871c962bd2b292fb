"""README's "On a Slurm cluster" section, every command as written, on the local Slurm; its [slurm]
example is a valid table."""
from __future__ import annotations


try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from pathlib import Path

from mcc.backends.slurm_settings import slurm_settings
from tests.conftest import EXAMPLE, combined_rows, latest_run_id, ledger_uuid, mcc_json, run_state
from tests.e2e.test_readme import blocks, commands, mcc_on_path, shell
from tests.slurm_cluster import cancel, jobs, require_slurm, submit

SECTION = "On a Slurm cluster"


def test_readme_slurm_settings_are_valid() -> None:
    [(_, text)] = [b for b in blocks("text") if b[0] == SECTION]
    table = tomllib.loads(text)["slurm"]
    settings = slurm_settings(table)
    assert settings.workers == 8 and settings.sbatch_args == ["--constraint=haswell"]


def test_readme_slurm_as_written(mcc_home: Path, tmp_path: Path) -> None:
    """Each line as written; on the way: every point once with its value, core-hours from the scheduler's
    times, and before the clean, jobs planted by hand — one with this ledger's comment the ledger never
    recorded (cancelled by the clean), one of another ledger and one untagged (both untouched)."""
    require_slurm()
    import shutil

    lines = commands(SECTION)
    assert [line.split()[1] for line in lines] == ["run", "status", "ledger", "analyze", "clean"]
    project = tmp_path / "examples" / "kpoints"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("results"))
    bin_dir = mcc_on_path(tmp_path)
    run_id, planted = None, {}
    try:
        for line in lines:
            if line.startswith("mcc clean"):
                uuid = ledger_uuid(mcc_home)
                planted = {"ours": submit("planted-ours", f"mcc:ledger={uuid},mcc:entity=planted,Name=planted"),
                           "other": submit("planted-other", "mcc:ledger=00000000-0000-4000-8000-000000000000"),
                           "untagged": submit("planted-untagged", None)}
            proc = shell(line, cwd=tmp_path, home=mcc_home, bin_dir=bin_dir, run_id=run_id, timeout=300)
            run_id = latest_run_id(mcc_home) or run_id
            if line.startswith("mcc run"):
                _exactly_once(project, run_id, mcc_home)
            if line.startswith("mcc status"):
                assert run_id in proc.stdout and "completed" in proc.stdout and "core-hours" in proc.stdout
            if line.startswith("mcc ledger show"):
                assert "manager" in proc.stdout and "job" in proc.stdout
            if line.startswith("mcc analyze"):
                assert "slurm core-hours" in proc.stdout
                doc = mcc_json("analyze", run_id, home=mcc_home)
                assert doc["core_hours"] > 0 and {j["role"] for j in doc["jobs"]} == {"manager", "worker"}
                assert all(j["from_scheduler"] and j["end"] >= j["start"] for j in doc["jobs"])
        assert run_state(mcc_home, run_id) == "cleaned"
        alive = {j["job_id"] for j in jobs()}
        assert planted["ours"] not in alive and {planted["other"], planted["untagged"]} <= alive
        assert jobs(f"mcc:ledger={ledger_uuid(mcc_home)}") == []
    finally:
        cancel(*planted.values())


def _exactly_once(project: Path, run_id: str, home: Path) -> None:
    import sys

    import numpy as np

    rows = combined_rows(project / "results" / run_id / "combined.h5")
    sys.path.insert(0, str(project))
    try:
        import bands  # noqa: PLC0415
        import points  # noqa: PLC0415
        want = np.array([bands.bands(list(p)) for p in points.get_points()])
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("bands", None)
        sys.modules.pop("points", None)
    np.testing.assert_allclose(rows, want)  # built-in combiner: point order, every point once
