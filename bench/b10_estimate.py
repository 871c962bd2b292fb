"""B10 — how far to trust `mcc run --estimate`: its predicted wall time against the measured one.

For each bundled example (examples/*) and one synthetic sweep whose compute dominates (``size``
points of 20 ms), in this invocation: `mcc run DIR --estimate --json` (the sampled prediction), then
`mcc run DIR --json` on the local backend and `mcc analyze RUN --json` (the measured wall time, run
start to end, from the ledger), then `mcc clean --all`. The ratio is measured / predicted: 1 is a
perfect estimate, above 1 the estimate was optimistic. The notes give the estimate `mcc analyze`
shows beside the run (from the run's own one-point probe) with its ratio.

Size: the synthetic sweep's points (default 400).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import Context, Row, fmt_ratio, fmt_s
from bench.harness import tempdir

ID = "B10"
TITLE = "estimate's predicted wall time vs the measured one (local backend, same run)"
DEFAULT_SIZE = 400
SMOKE_SIZE = 40
REPO = Path(__file__).resolve().parents[1]
TARGET = (0.5, 2.0)
SYNTHETIC_POINTS = "def get_points():\n    return [[float(i)] for i in range({n})]\n"
SYNTHETIC_ENTRY = "import time\n\ndef compute(point):\n    time.sleep(0.02)\n    return [point[0], 2 * point[0]]\n"


def mcc_json(args: list[str], home: Path, timeout: float = 600.0) -> Any:
    """`mcc ARGS --json` in its own process group, ended whole on timeout."""
    proc = subprocess.Popen([sys.executable, "-m", "mcc.cli", *args, "--json"], env={**os.environ, "MCC_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"mcc {' '.join(args)} exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return json.loads(out)


def measure(project: Path, home: Path) -> dict[str, Any]:
    estimate = mcc_json(["run", str(project), "--estimate"], home)
    result = mcc_json(["run", str(project)], home)
    analysis = mcc_json(["analyze", result["run_id"]], home)
    mcc_json(["clean", "--all", "--yes"], home)
    return {"points": estimate["points"], "workers": estimate["workers"], "subproblems": estimate["subproblems"],
            "predicted_s": estimate["candidates"][0]["wall_s"], "measured_s": analysis["wall_s"],
            "sample_mean_s": estimate["sample"]["mean_s"], "recorded": analysis.get("estimate")}


def projects(root: Path, size: int) -> list[tuple[str, Path]]:
    out = []
    for example in sorted((REPO / "examples").iterdir()):
        if (example / "points.py").exists():
            out.append((example.name, Path(shutil.copytree(example, root / example.name,
                                                         ignore=shutil.ignore_patterns("results")))))
    synthetic = root / "synthetic"
    synthetic.mkdir()
    (synthetic / "points.py").write_text(SYNTHETIC_POINTS.format(n=size))
    (synthetic / "entry.py").write_text(SYNTHETIC_ENTRY)
    (synthetic / "mcc.toml").write_text('entry = "entry:compute"\n')
    out.append((f"synthetic ({size} points x 20 ms)", synthetic))
    return out


def run(size: int | None, ctx: Context) -> list[Row]:
    rows = []
    with tempdir("b9") as root:
        for name, project in projects(root, size or DEFAULT_SIZE):
            ctx.log(f"B10: {name}")
            m = measure(project, root / "home")
            ratio = m["measured_s"] / m["predicted_s"]
            rec = m["recorded"] or {}
            rows.append(Row(
                ID, f"{name}: {m['points']:,} points, {m['subproblems']} subproblems, {m['workers']} workers; "
                    "`--estimate`'s wall time",
                fmt_s(m["predicted_s"]), f"measured {fmt_s(m['measured_s'])}", fmt_ratio(ratio),
                f"{TARGET[0]}×–{TARGET[1]}× (measured / predicted)", TARGET[0] <= ratio <= TARGET[1],
                notes=(f"sample mean {m['sample_mean_s'] * 1000:.3g} ms/point; the run's recorded estimate "
                       f"(one-point probe) {fmt_s(rec['wall_s'])}, ratio {rec['wall_ratio']:.3g}×"
                       if rec.get("wall_ratio") else "no recorded estimate (chunk_size set: no probe)"),
                data=m))
    return rows
