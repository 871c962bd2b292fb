"""B6 — combine: N subproblems' results × 100 rows × 5 float64 with the built-in combiner.

The results are written as workers write them: one batch object (:mod:`mcc.work.pack`) per claimed
batch of ``BATCH`` subproblems (the worker's ``MAX_BATCH``), each subproblem's result file appended by
``ResultWriter.append`` (byte for byte what h5py writes). Timed in a fresh subprocess each (so the
peak RSS is the combine's own): reading the objects' indexes (``pack.members``) and
``mcc.work.combine.combine_files(members, out, None)`` — the manager's calls, built-in combiner —
against the baseline, a raw h5py copy of the same bytes stored as one dataset (read the whole
(N·100, 5) dataset, write it as one dataset into a new file). Rates are data bytes per second.
Peak memory is reported as the peak RSS (VmHWM) over the RSS before the call (the interpreter,
numpy and h5py already loaded). Each side runs three times, interleaved; the medians are compared.

B6/end — the end of a real run: ``mcc run`` of N no-op points at chunk size 1 (N subproblems, 2 workers;
B3's ``mcc_run``); timed: the last ack (the queue's own clock) → the command's exit, which holds what
was left to combine (the manager's log says how many results it appended as they came and how many at
the end), the collect of the combined file and the teardown. Target: ≤ 1 s at 10,000 subproblems.

Size: the number of subproblems.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mcc.providers.local import processes
from bench import Context, Row, fmt_s
from bench.harness import env_with_repo, tempdir

ID = "B6"
TITLE = "combine: 10k subproblems' results (batch objects of 64) × 100 rows × 5 float64, built-in combiner"
DEFAULT_SIZE = 10_000
SMOKE_SIZE = 300  # python -m bench --smoke: does it run here (figures not comparable)
ROWS, WIDTH = 100, 5
REPEATS = 3  # each side's median of this many fresh processes
BATCH = 64  # subproblems per batch object: remote.worker.MAX_BATCH, what a worker claims at most


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ``ru_maxrss``: after fork + exec that also counts the
    parent's peak (Linux folds the old address space's high-water mark into it)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(mode: str, src: str, out: str) -> None:
    """In a fresh process: time one combine (or raw copy); print JSON with its peak memory."""
    import h5py

    from mcc.work import pack
    from mcc.work.combine import combine_files

    before = _rss_mb()
    t0 = time.perf_counter()
    if mode == "combine":
        members = [m for obj in Path(src).read_text().split("\n") for m in pack.members(obj)]
        combine_files(sorted(members, key=lambda m: m.sub), Path(out), None)
    else:
        with h5py.File(src, "r") as fin, h5py.File(out, "w") as fout:
            fout.create_dataset("data", data=fin["data"][...])
    seconds = time.perf_counter() - t0
    peak = _peak_rss_mb()
    with h5py.File(out, "r") as fh:
        total = float(fh["data"][...].sum())
        shape = fh["data"].shape
    print(json.dumps({"seconds": seconds, "rss_before_mb": before, "peak_rss_mb": peak, "sum": total,
                      "shape": shape}))


def _run_child(mode: str, src: Path, out: Path) -> dict[str, Any]:
    proc = processes.run_bounded([sys.executable, "-m", "bench.b6_combine", "child", mode, str(src), str(out)],
                                 env=env_with_repo(), capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(ctx: Context, n_files: int) -> dict[str, Any]:
    import os

    import h5py

    from mcc.remote.results import ResultWriter
    from mcc.remote.worker import _write_result
    from mcc.work import pack

    with tempdir("b6") as root:
        parts = root / "results"
        parts.mkdir()
        rng = np.random.default_rng(6)
        data = rng.random((n_files * ROWS, WIDTH))
        t0 = time.perf_counter()
        objects, writer = [], ResultWriter(_write_result)
        for start in range(0, n_files, BATCH):
            path = parts / f"w-b6-{start // BATCH:06d}.pack"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                placed = [(i, None, *writer.append(fd, data[i * ROWS:(i + 1) * ROWS], i * ROWS, ROWS, lambda: root / "scratch"))
                          for i in range(start, min(start + BATCH, n_files))]
                pack.seal(fd, placed)
            finally:
                os.close(fd)
            objects.append(str(path))
        (root / "files.txt").write_text("\n".join(objects))
        with h5py.File(root / "one.h5", "w") as fh:
            fh.create_dataset("data", data=data)
        ctx.log(f"  wrote {n_files:,} results in {len(objects):,} batch objects in {time.perf_counter() - t0:.1f} s")
        runs: dict[str, list[dict[str, Any]]] = {"combine": [], "raw": []}
        for k in range(REPEATS):  # interleaved, so a change of the machine's load hits both alike
            runs["combine"].append(_run_child("combine", root / "files.txt", root / f"combined{k}.h5"))
            runs["raw"].append(_run_child("raw", root / "one.h5", root / f"copy{k}.h5"))
        combined, raw = (sorted(runs[m], key=lambda r: r["seconds"])[REPEATS // 2] for m in ("combine", "raw"))
    expect = float(data.sum())
    for name, r in (("combine", combined), ("raw", raw)):
        if tuple(r["shape"]) != data.shape or not np.isclose(r["sum"], expect, rtol=1e-12):
            raise RuntimeError(f"{name} output differs from the input: {r}")
    nbytes = data.nbytes
    out = {"files": n_files, "objects": -(-n_files // BATCH), "bytes": nbytes, "combine": combined, "raw": raw, "runs": runs,
           "combine_rate_mb_s": nbytes / combined["seconds"] / 2**20, "raw_rate_mb_s": nbytes / raw["seconds"] / 2**20}
    ctx.log(f"  combine {combined['seconds']:.2f} s ({out['combine_rate_mb_s']:.0f} MB/s, peak +"
            f"{combined['peak_rss_mb'] - combined['rss_before_mb']:.0f} MB); raw copy {raw['seconds']:.3f} s")
    return out


def end_of_run(ctx: Context, n: int) -> Row:
    """B6/end: last ack → exit of a whole run at chunk size 1 (the incremental combine's leftover)."""
    from bench.b3_efficiency import mcc_run
    from bench.harness import NOOP_ENTRY

    m = mcc_run(ctx, n, entry=NOOP_ENTRY, chunk=1)
    came, left = m["combined_as_they_came"], m["combined_at_end"]
    return Row("B6/end", f"`mcc run` of {n:,} no-op points at chunk 1 ({m['subproblems']:,} subproblems), 2 workers: "
                         f"last ack → exit (what is left to combine, collect, teardown)",
               fmt_s(m["finish_s"]), "—", "—", "≤ 1 s at 10,000 subproblems", m["finish_s"] <= 1.0,
               notes=f"the manager appended {came} results as they came, {left} at the end; "
                     f"compute window {fmt_s(m['compute_s'])}, start-up {fmt_s(m['startup_s'])}", data=m)


def run(size: int | None, ctx: Context) -> list[Row]:
    n = size or DEFAULT_SIZE
    end = end_of_run(ctx, n)
    m = measure(ctx, n)
    c, r = m["combine"], m["raw"]
    ratio = m["combine_rate_mb_s"] / m["raw_rate_mb_s"]
    mb = m["bytes"] / 2**20
    per_file_us = c["seconds"] / n * 1e6
    return [
        Row("B6", f"combine_files(..., builtin) of {n:,} subproblems' results in {m['objects']:,} batch objects "
                  f"× {ROWS} rows × {WIDTH} float64 ({mb:.0f} MB of data), fresh process; median of {REPEATS}, "
                  f"interleaved with the baseline's",
            f"{m['combine_rate_mb_s']:.0f} MB/s ({fmt_s(c['seconds'])})",
            f"raw h5py copy as one dataset: {m['raw_rate_mb_s']:.0f} MB/s ({fmt_s(r['seconds'])})",
            f"{ratio:.0%}", "≥ 80 % of the raw rate; peak memory bounded",
            ratio >= 0.8,
            notes=f"peak RSS +{c['peak_rss_mb'] - c['rss_before_mb']:.0f} MB over {c['rss_before_mb']:.0f} MB "
                  f"(raw copy +{r['peak_rss_mb'] - r['rss_before_mb']:.0f} MB); {per_file_us:.0f} µs per subproblem",
            data=m),
        end,
    ]


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "child":
    _child(sys.argv[2], sys.argv[3], sys.argv[4])
