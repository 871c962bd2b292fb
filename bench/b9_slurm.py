"""B9 — the original README's sweep on the local Slurm (slurmctld + slurmd on this machine) vs the local
backend, same machine, same run of the suite.

The seed's points.py (19,710 points; fewer with --size) with a 5 ms function entry, automatic chunk,
one worker on each backend (2 CPUs: the Slurm manager job takes one, its worker array task the other).
Rate = points / compute time (the run's start → combine transitions, as `mcc status` reports it).
Reported apart for Slurm: submit-to-first-claim (manager job submitted → the first lease) and
last-ack-to-exit (the last completed subproblem → the manager job's end in the scheduler's record).
Needs Slurm (as root: .ci/slurm-up.sh); without sbatch the row says so and is skipped.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import Context, Row, fmt_rate, fmt_ratio, fmt_s
from bench.harness import tempdir

ID = "B9"
TITLE = "original README sweep, 5 ms entry: local Slurm vs the local backend"
DEFAULT_SIZE = 19_710
SMOKE_SIZE = 200
SEED = Path(__file__).resolve().parents[2] / "shared" / "seed"
ENTRY = "import time\n\ndef compute(point):\n    time.sleep(0.005)\n    return list(point) + [sum(point)]\n"


def _seed() -> Path:
    """shared/seed beside the repository (MCC_SEED_DIR names it elsewhere, as for the tests)."""
    return Path(os.environ["MCC_SEED_DIR"]) if os.environ.get("MCC_SEED_DIR") else SEED


def _project(root: Path, n: int) -> Path:
    seed = _seed()
    project = root / "project"
    project.mkdir()
    (project / "points.py").write_text(
        (seed / "points.py").read_text() + f"\n\n_all = get_points\n\ndef get_points():\n    return _all()[:{n}]\n")
    (project / "entry.py").write_text(ENTRY)
    (project / "mcc.toml").write_text('entry = "entry:compute"\nworkers = 1\n\n[slurm]\npoll_seconds = 1.0\n')
    return project


def _run(project: Path, home: Path, backend: str) -> dict[str, Any]:
    env = {**os.environ, "MCC_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "mcc.cli", "run", str(project), "--backend", backend, "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"mcc run --backend {backend} exited {proc.returncode}: {err[-1000:]}")
    return json.loads(out)  # the run's teardown cancelled its jobs; the temporary folder goes with the rest


def _slurm_phases(home: Path, run_id: str) -> dict[str, float | None]:
    with sqlite3.connect(home / "ledger.db") as con:
        submitted = con.execute("select min(at) from events where entity='resource' and trigger='begin_create' and "
                                "entity_id in (select cast(id as text) from resources where name='manager' and run_id=?)",
                                (run_id,)).fetchone()[0]
        first = con.execute("select min(at) from events where run_id=? and entity='subproblem' and trigger='lease'",
                            (run_id,)).fetchone()[0]
        last = con.execute("select max(at) from events where run_id=? and entity='subproblem' and trigger='complete' "
                           "and actor!='manager'", (run_id,)).fetchone()[0]
        attrs = [json.loads(a) for (a,) in con.execute("select attrs from resources where name='manager' and run_id=?",
                                                        (run_id,))]
    end = max((a.get("end_at") or 0 for a in attrs), default=0) or None
    return {"submit_to_first_claim": first - submitted if first and submitted else None,
            "last_ack_to_exit": end - last if end and last else None}


def run(size: int | None, ctx: Context) -> list[Row]:
    n = size or DEFAULT_SIZE
    if shutil.which("sbatch") is None or not (_seed() / "points.py").exists():
        why = "sbatch is not on PATH (.ci/slurm-up.sh)" if shutil.which("sbatch") is None else f"no seed at {_seed()}"
        return [Row(ID, TITLE, "skipped", "—", "—", ">= 0.8× local", None, notes=why)]
    with tempdir("b9") as root:
        project = _project(root, n)
        local = _run(project, root / "home-local", "local")
        slurm = _run(project, root / "home-slurm", "slurm")
        phases = _slurm_phases(root / "home-slurm", slurm["run_id"])
    lr, sr = local["timings"]["points_per_second"], slurm["timings"]["points_per_second"]
    ctx.log(f"local {lr:,.0f} pts/s (total {local['timings']['total_s']} s), slurm {sr:,.0f} pts/s "
            f"(total {slurm['timings']['total_s']} s), {phases}")
    fmt = lambda v: fmt_s(v) if v is not None else "?"  # noqa: E731
    return [Row(f"{ID}@{n // 1000}k", f"{n:,} seed points, 5 ms entry, 1 worker, chunk {slurm['chunk_size']}: "
                                      f"local Slurm vs local backend",
                fmt_rate(sr), f"local: {fmt_rate(lr)}", fmt_ratio(sr / lr), ">= 0.8× local", sr / lr >= 0.8,
                notes=f"Slurm submit→first claim {fmt(phases['submit_to_first_claim'])}, last ack→manager exit "
                      f"{fmt(phases['last_ack_to_exit'])}; wall {slurm['timings']['total_s']} s vs "
                      f"{local['timings']['total_s']} s",
                data={"local": local["timings"], "slurm": slurm["timings"], "phases": phases})]
