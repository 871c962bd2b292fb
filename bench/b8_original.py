"""B8 — the original mCC's queue algorithm, reimplemented as a baseline, against mcc's B1.

The original (LANL materialsCloudCompute, ``mcc/worker_userdata.py`` and ``manager_userdata.py``)
keeps the whole queue as JSON text in Redis: ``<id>_remaining`` (the list of every point not yet
claimed), ``<id>_in_progress`` (worker → its points and last check-in) and ``<id>_completed`` (the
list of points done). Every claim is: WATCH remaining and in_progress, GET and json-decode both,
pop a point, record it under the worker, json-encode both, MULTI / SET / SET / EXEC, and start over
on a WatchError; every completion does the same on in_progress and completed; and the loop reads
and decodes ``remaining`` once more before each claim. Each step costs O(all points), so a sweep
costs O(N²). Here: 2 worker processes (the original's worker ran one such loop per vCPU), a no-op
per point instead of the original's subprocess, the same kind of password-protected redis-server
as mcc's. Both workers start on a signal; the rate is points completed / (start → last completion),
over the whole queue or, where draining it would take too long, the first TIME_BUDGET seconds (the
cost per point only grows as the completed list grows, so this flatters the original).

mcc's figure is B1 (real workers, automatic chunk size, first claim → last ack) at the same N; the
per-point comparison with mcc at chunk size 1 is in the notes.

Size: one N (default: 1k, 4k and 20k).
"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
import redis

from bench import Context, Row, fmt_rate, fmt_ratio
from bench.b1_dispatch import mcc_dispatch
from bench.harness import env_with_repo, redis_server, tags, tempdir, wait_until
from mcc.providers.local import processes

ID = "B8"
TITLE = "original mCC queue algorithm (JSON lists under WATCH) vs mcc B1"
DEFAULT_SIZES = (1_000, 4_000, 20_000)
DEFAULT_SIZE = 20_000
SMOKE_SIZE = 1_000  # python -m bench --smoke: does it run here (figures not comparable)
TIME_BUDGET = 6.0
WORKERS = 2
MID = "i-0manager"


def _now() -> str:
    return str(datetime.now(timezone.utc))


def _orig_worker(url: str, worker: str, budget: float) -> None:
    """One worker loop of the original, as its worker_userdata.py main() runs it (no-op per point)."""
    r = redis.Redis.from_url(url)
    k_rem, k_prog, k_done = f"{MID}_remaining", f"{MID}_in_progress", f"{MID}_completed"
    with r.pipeline() as pipe:  # check in, as the original does at start-up
        while True:
            try:
                pipe.watch(k_prog)
                prog = json.loads(pipe.get(k_prog))
                prog[worker] = {"points": [], "check_in": _now()}
                pipe.multi()
                pipe.set(k_prog, json.dumps(prog))
                pipe.execute()
                break
            except redis.WatchError:
                continue
    r.incr("bench:ready")
    r.blpop(["bench:go"], timeout=120)
    start = time.time()
    deadline = start + budget
    done, conflicts, last = 0, 0, start
    remaining = json.loads(r.get(k_rem))
    while remaining and time.time() < deadline:
        point = None
        with r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(k_rem)
                    pipe.watch(k_prog)
                    remaining = json.loads(pipe.get(k_rem))
                    prog = json.loads(pipe.get(k_prog))
                    try:
                        point = remaining.pop()
                        prog[worker]["points"].append(point)
                        prog[worker]["check_in"] = _now()
                    except IndexError:
                        point = None
                        break
                    pipe.multi()
                    pipe.set(k_prog, json.dumps(prog))
                    pipe.set(k_rem, json.dumps(remaining))
                    pipe.execute()
                    break
                except redis.WatchError:
                    conflicts += 1
                    continue
        if point is not None:
            _ = list(point)  # the work: a no-op
            with r.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(k_prog)
                        pipe.watch(k_done)
                        completed = json.loads(pipe.get(k_done))
                        prog = json.loads(pipe.get(k_prog))
                        prog[worker]["points"].remove(point)
                        completed.append(point)
                        pipe.multi()
                        pipe.set(k_done, json.dumps(completed))
                        pipe.set(k_prog, json.dumps(prog))
                        pipe.execute()
                        break
                    except redis.WatchError:
                        conflicts += 1
                        continue
            done += 1
            last = time.time()
        remaining = json.loads(r.get(k_rem))
    r.set(f"bench:result:{worker}", json.dumps({"done": done, "start": start, "last": last,
                                                 "conflicts": conflicts}))


def original(ctx: Context, n: int, budget: float = TIME_BUDGET) -> dict[str, Any]:
    key = ("original", n, budget)
    if key in ctx.cache:
        return ctx.cache[key]
    points = np.random.default_rng(8).random((n, 3)).tolist()  # k-point-like floats (17 digits each)
    with tempdir("b8") as root, redis_server(root) as server:
        r = server.client()
        r.set(f"{MID}_all", json.dumps(points))
        r.set(f"{MID}_remaining", json.dumps(points))
        r.set(f"{MID}_completed", json.dumps([]))
        r.set(f"{MID}_in_progress", json.dumps({}))
        procs = [processes.spawn([sys.executable, "-m", "bench.b8_original", "worker", server.url, f"i-{i:04d}",
                                  str(budget)], tags=tags(f"orig-{i}"), env=env_with_repo(),
                                 log_path=root / f"orig-{i}.log") for i in range(WORKERS)]
        try:
            wait_until(lambda: int(r.get("bench:ready") or 0) == WORKERS, 60, "the original's workers to start")
            r.rpush("bench:go", *["go"] * WORKERS)
            results = wait_until(lambda: [json.loads(x) for x in r.mget(*(f"bench:result:i-{i:04d}"
                                                                            for i in range(WORKERS))) if x]
                                 if all(r.mget(*(f"bench:result:i-{i:04d}" for i in range(WORKERS)))) else None,
                                 budget + 120, "the original's workers to finish", interval=0.05)
            completed = len(json.loads(r.get(f"{MID}_completed")))
        finally:
            for proc in procs:
                processes.terminate(proc, grace=2.0)
    done = sum(x["done"] for x in results)
    if done != completed:
        raise RuntimeError(f"the original's workers report {done} points, its completed list holds {completed}")
    seconds = max(x["last"] for x in results) - min(x["start"] for x in results)
    out = {"points": n, "completed": done, "seconds": seconds, "rate": done / seconds,
           "drained": done == n, "conflicts": sum(x["conflicts"] for x in results)}
    ctx.log(f"original: {n:,} points → {out['rate']:,.0f} pts/s ({done:,} done in {seconds:.1f} s, "
            f"{out['conflicts']} WATCH conflicts)")
    ctx.cache[key] = out
    return out


def run(size: int | None, ctx: Context) -> list[Row]:
    sizes = (size,) if size else DEFAULT_SIZES
    per_point = ctx.cache.get(("mcc-dispatch", 10_000, 1, 2, _noop_entry()))
    if per_point is None:
        per_point = mcc_dispatch(ctx, min(sizes), 1)
    rows = []
    for n in sizes:
        o = original(ctx, n)
        m = mcc_dispatch(ctx, n, "auto")
        ratio = m["rate"] / o["rate"]
        how = "drained the queue" if o["drained"] else f"{o['completed']:,} of {n:,} points in the first {TIME_BUDGET:g} s"
        rows.append(Row(
            f"B8@{n // 1000}k", f"original algorithm, 2 workers, no-op, {n:,} points ({how}) vs mcc B1 at {n:,} "
                                f"(automatic chunk {m['chunk']})",
            fmt_rate(m["rate"]), f"original: {fmt_rate(o['rate'])}", fmt_ratio(ratio), "report the ratio", None,
            notes=f"per point, mcc at chunk 1 ({per_point['points']:,} points): {fmt_rate(per_point['rate'])} = "
                  f"{fmt_ratio(per_point['rate'] / o['rate'])} the original; {o['conflicts']} WATCH conflicts",
            data={"original": o, "mcc": m, "mcc_chunk1": per_point}))
    return rows


def _noop_entry() -> str:
    from bench.harness import NOOP_ENTRY

    return NOOP_ENTRY


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    _orig_worker(sys.argv[2], sys.argv[3], float(sys.argv[4]))
