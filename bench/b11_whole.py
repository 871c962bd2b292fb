"""B11 — whole jobs, as a user times them: big rows and 20 ms points, 2 workers, from a fresh process to exit.

Every figure is a whole job: a fresh Python process from its start to its exit, the points computed
by 2 worker processes and every result gathered into one HDF5 file. mcc: ``python -m mcc.cli run``
(:func:`bench.b3_efficiency.mcc_run`: automatic chunk size, and chunk size 1 for big rows).
Baselines in the same run, each a fresh process of its own (:mod:`bench.whole_job`):
``multiprocessing.Pool(2).map`` with its default chunking, and dask.distributed's ``LocalCluster``
(2 worker processes × 1 thread, one task per point, the cluster's start-up included); both stack
the gathered results and write them with h5py as one dataset.

- big rows: N points, each returning a 5 × 4096 float64 array (160 KB; at N = 1,000, 160 MB).
- 20 ms: 2N points × 20 ms of CPU each (a busy loop), one row each.
- W1: 20N no-op points (at N = 1,000: issue 13's 20k), one row each: almost all of it is fixed cost.

Pool runs right before and right after mcc and its figure is the mean of the two (the machine is
shared: bracketing mcc cancels a steady drift of the load). The big-row and W1 mcc jobs are short, so each
runs twice, automatic and chunk 1 interleaved, and their means are compared (the start-up alone
moves by ±1 s between two runs on the shared machine).
"""
from __future__ import annotations

import sys
import time
from typing import Any

import h5py
import numpy as np

from bench import Context, Row, fmt_ratio, fmt_s
from bench.b3_efficiency import SECONDS_PER_POINT, SPIN_20MS, mcc_run
from bench.harness import BIG_ROWS_ENTRY, NOOP_ENTRY, env_with_repo, tempdir
from mcc.providers.local.processes import run_bounded

ID = "B11"
TITLE = "whole jobs from a fresh process: big rows (5 × 4096 float64 per point), 20 ms points, no-op points, 2 workers"
DEFAULT_SIZE = 1_000  # big-row points; the 20 ms workload has twice as many
SMOKE_SIZE = 20  # python -m bench --smoke: does it run here (figures not comparable)
WORKERS = 2  # as bench.whole_job's

# name (as bench.whole_job knows it) -> (mcc's entry source, rows per point, points per unit of size)
WORKLOADS: dict[str, tuple[str, int, int]] = {"big": (BIG_ROWS_ENTRY, 5, 1), "20ms": (SPIN_20MS, 1, 2),
                                              "w1": (NOOP_ENTRY, 1, 20)}
# name -> (what the row says, with {:,} for the points; the target: mcc's whole job ≤ this × Pool's; as said)
DESCRIBED: dict[str, tuple[str, float, str]] = {
    "big": ("{:,} points × a 5 × 4096 float64 array, gathered into one HDF5 file", 1.5, "≤ 1.5× Pool"),
    "20ms": ("{:,} points × 20 ms CPU, gathered into one HDF5 file", 1.05, "≤ 1.05× Pool"),
    "w1": ("W1: {:,} no-op points, gathered into one HDF5 file", 2.0, "≤ 2.0× Pool (≥ ½ of its speed)"),
}


def baseline_job(ctx: Context, tool: str, workload: str, n: int) -> dict[str, Any]:
    """Seconds of one whole baseline job (``tool``: pool or dask), a fresh process start to exit; its
    output checked (every point's rows once, in point order)."""
    rows_per_point = WORKLOADS[workload][1]
    with tempdir("b11") as root:
        out = root / "out.h5"
        argv = [sys.executable, "-m", "bench.whole_job", tool, workload, str(n), str(out)]
        t0 = time.perf_counter()
        proc = run_bounded(argv, timeout=max(600.0, n * SECONDS_PER_POINT * 5), capture_output=True, text=True,
                           env=env_with_repo(), cwd=root)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} job exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        with h5py.File(out, "r") as fh:
            first_column = fh["data"][:, 0]
    np.testing.assert_array_equal(first_column, np.repeat(np.arange(n, dtype=float), rows_per_point))
    ctx.log(f"{tool} whole job, {workload}: {n:,} points → {seconds:.2f} s")
    return {"tool": tool, "workload": workload, "points": n, "seconds": seconds}


def _has_dask() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def run(size: int | None, ctx: Context) -> list[Row]:
    n = size or DEFAULT_SIZE
    rows: list[Row] = []
    dask = _has_dask()
    for workload in WORKLOADS:
        entry, per_point, scale = WORKLOADS[workload]
        points = n * scale
        before = baseline_job(ctx, "pool", workload, points)
        if workload in ("big", "w1"):  # short jobs, so each twice, interleaved: start-up alone moves ±1 s here
            runs = [(mcc_run(ctx, points, entry, per_point, repeat=k), mcc_run(ctx, points, entry, per_point, 1, k))
                    for k in range(2)]
            auto, one = _mean([a for a, _ in runs]), _mean([c for _, c in runs])
        else:
            auto, one = mcc_run(ctx, points, entry, per_point), None
        after = baseline_job(ctx, "pool", workload, points)
        pool_s = (before["seconds"] + after["seconds"]) / 2
        other = baseline_job(ctx, "dask", workload, points) if dask else None
        rows += _rows(workload, points, auto, one, pool_s, (before["seconds"], after["seconds"]), other)
    return rows


def _mean(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of repeated mcc runs' figures (the first run's for anything not a number), the runs kept."""
    out = {**measured[0], "runs": measured}
    for key, value in measured[0].items():
        if isinstance(value, float):
            out[key] = sum(m[key] for m in measured) / len(measured)
    return out


def _rows(workload: str, points: int, auto: dict[str, Any], one: dict[str, Any] | None, pool_s: float,
          pools: tuple[float, float], other: dict[str, Any] | None) -> list[Row]:
    label = f"B11/{workload}"
    what, target, target_said = DESCRIBED[workload]
    what = what.format(points)
    ratio = auto["total_s"] / pool_s
    cpu = auto["cpu_in_window_s"]
    notes = (f"automatic chunk {auto['chunk']} ({auto['subproblems']} subproblems); start-up {fmt_s(auto['startup_s'])} "
             f"(command → first claim), compute {fmt_s(auto['compute_s'])} (first claim → last ack; the workers' "
             f"last acks {fmt_s(auto['worker_end_spread_s'])} apart), finish {fmt_s(auto['finish_s'])} (last ack → "
             f"exit: combine, collect, teardown); in the compute window manager {cpu.get('manager', 0):.2f} s CPU, "
             f"mcc run {cpu.get('mcc run', 0):.2f} s, redis-server {cpu.get('redis-server', 0):.2f} s")
    if workload == "20ms":
        ideal = points * SECONDS_PER_POINT / WORKERS
        notes += f"; ideal {fmt_s(ideal)}: mcc {ideal / auto['total_s']:.0%} of it, Pool {ideal / pool_s:.0%}"
    if "runs" in auto:
        notes = (f"mean of {len(auto['runs'])} runs ({', '.join(fmt_s(r['total_s']) for r in auto['runs'])}) "
                 f"interleaved with chunk 1's; " + notes)
    out = [Row(label, f"{what}, `mcc run` (automatic chunk), whole job", fmt_s(auto["total_s"]),
               f"Pool(2).map whole job: {fmt_s(pool_s)} (mean of {fmt_s(pools[0])} before, {fmt_s(pools[1])} after)",
               fmt_ratio(ratio), target_said, ratio <= target, notes=notes,
               data={"mcc": auto, "pool_s": pools})]
    if one is not None:
        vs_one = auto["total_s"] / one["total_s"]
        out.append(Row(f"{label}·c1", "the same, automatic chunk vs chunk size 1 (one subproblem per point)",
                       fmt_s(auto["total_s"]), f"mcc chunk 1: {fmt_s(one['total_s'])} "
                                               f"({one['total_s'] / pool_s:.2f}× Pool)",
                       fmt_ratio(vs_one), "≤ 1× chunk 1 (automatic never slower)", vs_one <= 1.0,
                       notes=f"chunk 1 (mean of {', '.join(fmt_s(r['total_s']) for r in one['runs'])}): start-up "
                             f"{fmt_s(one['startup_s'])}, compute {fmt_s(one['compute_s'])}, finish "
                             f"{fmt_s(one['finish_s'])}", data={"mcc": auto, "mcc_c1": one}))
    if other is not None:
        out.append(Row(f"{label}·dask", "the same vs dask.distributed LocalCluster (2 processes × 1 thread, one task "
                                        "per point, cluster start-up included), whole job",
                       fmt_s(auto["total_s"]), f"dask whole job: {fmt_s(other['seconds'])}",
                       fmt_ratio(auto["total_s"] / other["seconds"]), "report the ratio", None,
                       data={"mcc": auto, "dask": other}))
    return out


