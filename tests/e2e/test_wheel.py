"""Instances install mcc from a wheel: it must carry remote/ and ledger_schema/ and run a sweep on its own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from mcc.providers.local.processes import run_bounded
from tests.conftest import REPO, combined_rows


def test_wheel_installs_into_a_fresh_venv_and_runs_a_sweep(tmp_path: Path, make_project) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(dist.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("mcc/remote/worker.py", "mcc/remote/manager.py", "mcc/ledger_schema/v0001_initial.py",
                   "mcc/project/starter/points.py", "mcc/cli.py"):
        assert module in names, module

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True, timeout=600)
    # Third-party dependencies come from this interpreter's site-packages through a plain path entry
    # (which, unlike a site dir, does not run the editable-install hook of the repository's mcc).
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True, timeout=120).strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_deps.pth").write_text("\n".join(sorted(deps)) + "\n")

    where = subprocess.check_output([str(python), "-c", "import mcc.remote.worker as w; print(w.__file__)"], text=True,
                                    cwd=tmp_path, timeout=120)
    assert where.startswith(str(venv)), where

    project = make_project(30, toml="chunk_size = 7\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MCC_HOME=str(tmp_path / "home"), PATH=f"{venv / 'bin'}:{env['PATH']}")
    proc = run_bounded([str(venv / "bin" / "mcc"), "run", str(project), "--json"], env=env, capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["state"] == "completed" and out["done"] == 30
    assert sorted(combined_rows(out["result"])[:, 0].tolist()) == list(map(float, range(30)))
    manager_log = next((tmp_path / "home" / "buckets" / out["run_id"] / "logs").glob("manager-*.log")).read_text()
    assert "finished: completed" in manager_log
