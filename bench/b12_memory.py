"""B12 — memory at a million points: mcc's own resident memory beside what ``get_points()`` itself takes.

``mcc run`` of N no-op points (2 workers, automatic chunk), once with ``get_points()`` returning a list
of lists and once a numpy array, each measured against the same ``get_points()`` alone in a fresh
process (Python, numpy and the points: what the user's own code costs). Peak resident memory (VmHWM)
of each of mcc's processes is sampled every 20 ms from /proc (:class:`bench.b3_efficiency.CpuSampler`).
The manager and the workers never run ``get_points()``: their figure at N is compared with the same
run at 1,000 points, which is what "independent of the number of points" means here.
"""
from __future__ import annotations

import sys
from typing import Any

from bench import Context, Row, fmt_ratio
from bench.b3_efficiency import POINTS_PY, mcc_run
from bench.harness import NOOP_ENTRY, tempdir
from mcc.providers.local.processes import run_bounded

ID = "B12"
TITLE = "memory at a million points: the CLI, the manager and the workers beside get_points() alone"
DEFAULT_SIZE = 1_000_000
SMOKE_SIZE = 20_000  # python -m bench --smoke: does it run here (figures not comparable)
SMALL = 1_000  # the run the manager's and workers' figures at N are compared with

POINTS_ARRAY_PY = ("import numpy as np\n\ndef get_points():\n    i = np.arange({n}, dtype=float)\n"
                   "    return np.column_stack([i, i * 0.5, np.zeros({n})])\n")
SOURCES = {"list": POINTS_PY, "array": POINTS_ARRAY_PY}
CLI_TARGET_MB, MANAGER_TARGET_MB, GROWTH_TARGET_MB = 50.0, 100.0, 5.0

_ALONE = """\
import sys
sys.path.insert(0, sys.argv[1])
import numpy, points
kept = points.get_points()
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0])
"""


def points_alone_mb(ctx: Context, source: str, n: int) -> float:
    """Peak RSS of a fresh Python importing numpy and calling the project's ``get_points()``."""
    with tempdir("b12") as root:
        (root / "points.py").write_text(source.format(n=n))
        proc = run_bounded([sys.executable, "-c", _ALONE, str(root)], timeout=600, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"get_points() alone exited {proc.returncode}: {proc.stderr[-1000:]}")
    mb = int(proc.stdout.split()[-1]) / 1024
    ctx.log(f"get_points() alone ({n:,} points): {mb:.1f} MB")
    return mb


def measure(ctx: Context, kind: str, n: int) -> dict[str, Any]:
    m = mcc_run(ctx, n, NOOP_ENTRY, points_py=SOURCES[kind], sample_every=0.02)
    peaks = m["peak_mb"]
    ctx.log(f"mcc run, {kind} of {n:,} points: peak MB " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(peaks.items())))
    return {"kind": kind, "points": n, "peak_mb": peaks, "alone_mb": points_alone_mb(ctx, SOURCES[kind], n),
            "total_s": m["total_s"], "chunk": m["chunk"]}


def run(size: int | None, ctx: Context) -> list[Row]:
    n = size or DEFAULT_SIZE
    rows: list[Row] = []
    small = measure(ctx, "list", SMALL)
    for kind in SOURCES:
        big = measure(ctx, kind, n)
        cli, alone = big["peak_mb"].get("mcc run", 0.0), big["alone_mb"]
        own = cli - alone
        returns = "a list of lists" if kind == "list" else "a numpy array"
        rows.append(Row(f"B12/cli·{kind}", f"`mcc run` of {n:,} no-op points, get_points() returns {returns}: the "
                        "CLI's peak RSS above get_points() alone", f"{cli:.1f} MB (+{own:.1f} MB)",
                        f"get_points() alone: {alone:.1f} MB", fmt_ratio(cli / alone),
                        f"≤ +{CLI_TARGET_MB:.0f} MB", own <= CLI_TARGET_MB,
                        notes=f"automatic chunk {big['chunk']}; whole job {big['total_s']:.2f} s", data=big))
        if kind == "list":
            for role, label, target in (("manager", "manager", MANAGER_TARGET_MB), ("workers", "worker", None)):
                at_n, at_small = big["peak_mb"].get(role, 0.0), small["peak_mb"].get(role, 0.0)
                growth = at_n - at_small
                met = growth <= GROWTH_TARGET_MB if target is None else (at_n <= target)
                rows.append(Row(f"B12/{label}", f"the {label}'s peak RSS at {n:,} points (largest of its "
                                f"processes)", f"{at_n:.1f} MB", f"the same at {SMALL:,} points: {at_small:.1f} MB",
                                fmt_ratio(at_n / at_small if at_small else float("nan")),
                                f"≤ {target:.0f} MB" if target else f"≤ +{GROWTH_TARGET_MB:.0f} MB over {SMALL:,}",
                                met, notes=f"{growth:+.1f} MB from {SMALL:,} to {n:,} points",
                                data={"big": big, "small": small}))
    return rows
