"""B1 — steady-state dispatch: a no-op function entry, 2 real worker processes, N points.

mcc: the real ``python -m mcc.remote.worker`` processes against a real redis-server; the workers
are started and polling an unseeded queue first (start-up excluded), then the queue is seeded, and
the figure is N / (first claim → last ack), both taken from the queue's own event stream (Redis
server time). Measured at the default automatic chunk size (what ``mcc run`` would pick: the
entry's probe time through ``mcc.project.folder.auto_chunk_size``) — the user-visible rate — and at
chunk size 1 (one subproblem per point: the rate of dispatch itself).

Baselines in the same run: ``multiprocessing.Pool(2).map`` over the same points (warm pool; the
limit), RQ with 2 ``SimpleWorker`` processes on a redis-server started the same way, one job
per point, first job start → last job end from the jobs' own timestamps, and dask.distributed's
``LocalCluster`` (2 worker processes, 1 thread each, warm): at B1 the points chunked as a dask user
would (one task per chunk of mcc's automatic size), at B1/c1 one task per point; submit → every
result gathered in the client.
"""
from __future__ import annotations

import multiprocessing
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench import Context, Row, fmt_rate, fmt_ratio
from bench import workloads
from bench.harness import (
    NOOP_ENTRY, LocalRun, env_with_repo, file_create_us, median, redis_server, tags, tempdir, wait_until, window,
    write_project,
)
from mcc.project.folder import Entry, Project, auto_chunk_size
from mcc.driver.prepare import probe_entry
from mcc.providers.local import processes
from mcc.work import pack

ID = "B1"
TITLE = "steady-state dispatch, no-op function entry, 2 local workers"
DEFAULT_SIZE = 10_000
SMOKE_SIZE = 1_000  # python -m bench --smoke: does it run here (figures not comparable)
WORKERS = 2
RQ_MAX_JOBS = 1_000  # RQ runs ~100-250 jobs/s here: its (flat) rate is taken over the first 1,000 points


def auto_chunk(project_dir: Path, points: np.ndarray, workers: int) -> tuple[int, float]:
    """The chunk size ``mcc run`` would choose: mcc's own probe of the first point, then its rule."""
    project = Project(project_dir, points, Entry("function", "entry:compute"), None)
    seconds, result_bytes = probe_entry(project, 30.0)
    return auto_chunk_size(seconds, len(points), workers, result_bytes), seconds


def mcc_dispatch(ctx: Context, n: int, chunk: int | str = "auto", workers: int = WORKERS,
                 entry: str = NOOP_ENTRY) -> dict[str, Any]:
    """Points/s of real mcc workers over ``n`` points (cached per invocation)."""
    key = ("mcc-dispatch", n, chunk, workers, entry)
    if key in ctx.cache:
        return ctx.cache[key]
    with tempdir("b1") as root, redis_server(root) as server:
        project = write_project(root / "project", entry)
        pts = workloads.points(n)
        probe = None
        size = chunk
        if chunk == "auto":
            size, probe = auto_chunk(project, pts, workers)
        run = LocalRun.create(root, server, project, pts, int(size), workers=workers)
        ctx.log(f"mcc dispatch: {n:,} points, chunk {size} ({len(run.spec.chunks):,} subproblems), {workers} workers")
        run.spawn_workers(workers)
        try:
            run.wait_workers_polling()
            t0 = time.monotonic()
            run.seed()
            run.wait_finished(timeout=max(120.0, n / 200))
            wall = time.monotonic() - t0
            events = run.events()
            w = window(events)
            per_worker = {}
            for e in events:
                if e["type"] == "acked":
                    per_worker[e["worker"]] = per_worker.get(e["worker"], 0) + 1
            objects = sorted((root / "bucket" / "results").glob("*.pack"))
            results = len({m.sub for obj in objects for m in pack.members(obj)})
            p = run.queue.progress()
            if p.done != len(run.spec.chunks) or results != p.done or w.acks != p.done:
                raise RuntimeError(f"inconsistent run: progress {p}, {results} results stored, {w.acks} acks")
        finally:
            run.stop_workers()
    out = {
        "points": n, "chunk": int(size), "subproblems": len(run.spec.chunks), "workers": workers,
        "seconds": w.seconds, "rate": n / w.seconds, "worker_stagger_s": w.stagger,
        "seed_to_finished_s": wall, "claim_events": w.claims, "probe_s": probe,
        "acks_per_worker": per_worker, "result_objects": len(objects),
    }
    ctx.log(f"  → {out['rate']:,.0f} pts/s over {w.seconds:.3f} s (stagger {w.stagger * 1000:.0f} ms)")
    ctx.cache[key] = out
    return out


def pool_map(ctx: Context, n: int, fn: Any = workloads.noop, repeats: int = 3, workers: int = WORKERS,
             offset: int = 0, chunksize: int | None = None) -> dict[str, Any]:
    """multiprocessing.Pool(workers).map over the same points (``offset``.. ``offset + n``): warm pool,
    median of ``repeats``; ``chunksize`` as Pool.map takes it (None: its default, 4 tasks per process)."""
    key = ("pool-map", n, fn.__name__, repeats, workers, offset, chunksize)
    if key in ctx.cache:
        return ctx.cache[key]
    pts = workloads.points(offset + n)[offset:].tolist()
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(fn, pts[: 2 * workers])  # both processes up and warm
        startup = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            rows = pool.map(fn, pts, chunksize)
            times.append(time.perf_counter() - t)
        assert len(rows) == n
    out = {"points": n, "seconds": median(times), "all_seconds": times, "rate": n / median(times),
           "pool_startup_s": startup}
    ctx.log(f"Pool.map (chunksize {chunksize or 'default'}): {n:,} points → {out['rate']:,.0f} pts/s "
            f"(median of {repeats}: {out['seconds']:.3f} s)")
    ctx.cache[key] = out
    return out


def rq_dispatch(ctx: Context, n: int, workers: int = WORKERS) -> dict[str, Any]:
    """RQ, 2 SimpleWorker processes, one job per point; first job start → last job end."""
    key = ("rq", n, workers)
    if key in ctx.cache:
        return ctx.cache[key]
    try:
        import rq
    except ImportError:
        return {"error": "rq is not installed (pip install rq, or the bench extra)"}
    with tempdir("b1-rq") as root, redis_server(root) as server:
        conn = server.client()
        queue = rq.Queue("bench", connection=conn)
        procs = [processes.spawn([sys.executable, "-m", "bench.b1_dispatch", "rq-worker", server.url, f"rq-{i}"],
                                 tags=tags(f"rq-{i}"), env=env_with_repo(), log_path=root / f"rq-{i}.log")
                 for i in range(workers)]
        try:
            wait_until(lambda: len(rq.Worker.all(connection=conn)) == workers, 60, "the RQ workers to register")
            pts = workloads.points(n).tolist()
            jobs = queue.enqueue_many([rq.Queue.prepare_data(workloads.noop, args=(p,)) for p in pts])
            ctx.log(f"RQ: {n:,} jobs enqueued, {workers} SimpleWorkers")
            finished = queue.finished_job_registry
            wait_until(lambda: finished.count >= n or queue.failed_job_registry.count, max(300.0, n / 20),
                       "RQ to finish", interval=0.05)
            if queue.failed_job_registry.count:
                raise RuntimeError(f"{queue.failed_job_registry.count} RQ jobs failed")
            pipe = conn.pipeline(transaction=False)
            for job in jobs:
                pipe.hmget(job.key, "started_at", "ended_at")
            stamps = pipe.execute()
        finally:
            for proc in procs:
                processes.terminate(proc, grace=5.0)
    starts = [_rq_time(s) for s, _ in stamps]
    ends = [_rq_time(e) for _, e in stamps]
    seconds = max(ends) - min(starts)
    out = {"points": n, "seconds": seconds, "rate": n / seconds, "rq": rq.__version__}
    ctx.log(f"  → RQ {out['rate']:,.0f} jobs/s over {seconds:.2f} s")
    ctx.cache[key] = out
    return out


def dask_dispatch(ctx: Context, n: int, chunk: int, workers: int = WORKERS) -> dict[str, Any]:
    """dask.distributed LocalCluster (``workers`` processes × 1 thread, warm), one task per ``chunk`` points;
    submit → all results gathered."""
    key = ("dask", n, chunk, workers)
    if key in ctx.cache:
        return ctx.cache[key]
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        return {"error": "dask.distributed is not installed (pip install distributed, or the bench extra)"}
    pts = workloads.points(n).tolist()
    batches = [pts[i:i + chunk] for i in range(0, n, chunk)]
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        client.gather(client.map(workloads.noop_batch, batches[: 2 * workers], pure=False))  # warm
        t0 = time.perf_counter()
        results = client.gather(client.map(workloads.noop_batch, batches, pure=False))
        seconds = time.perf_counter() - t0
    assert sum(len(r) for r in results) == n
    import distributed

    out = {"points": n, "chunk": chunk, "tasks": len(batches), "seconds": seconds, "rate": n / seconds,
           "dask": distributed.__version__}
    ctx.log(f"dask LocalCluster: {n:,} points in {len(batches):,} tasks → {out['rate']:,.0f} pts/s")
    ctx.cache[key] = out
    return out


def _rq_time(raw: bytes) -> float:
    text = raw.decode()
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _rq_worker(url: str, name: str) -> None:
    import redis
    import rq

    conn = redis.Redis.from_url(url)
    rq.SimpleWorker([rq.Queue("bench", connection=conn)], connection=conn, name=name).work(
        logging_level="WARNING")


def run(size: int | None, ctx: Context) -> list[Row]:
    n = size or DEFAULT_SIZE
    auto = mcc_dispatch(ctx, n, "auto")
    one = mcc_dispatch(ctx, n, 1)
    pool = pool_map(ctx, n)
    pool1 = pool_map(ctx, n, chunksize=1)
    rq_ = rq_dispatch(ctx, min(n, RQ_MAX_JOBS))
    create_us = file_create_us()
    rows = []
    for label, m in (("", auto), ("/c1", one)):
        chunk_note = (f"chunk {m['chunk']} (automatic: {m['subproblems']} subproblems)" if label == ""
                      else f"chunk 1 ({m['subproblems']:,} subproblems: dispatch itself)")
        notes = (f"worker stagger {m['worker_stagger_s'] * 1000:.0f} ms; subproblems per worker "
                 f"{sorted(m['acks_per_worker'].values())}")
        if label:
            notes += (f"; {m['result_objects']:,} batch result objects ({m['subproblems'] / max(m['result_objects'], 1):.1f} "
                      f"subproblems each); creating a 2 KB file costs {create_us:,.0f} µs on this disk right now")
        if "rate" in rq_:
            vs_rq = m["rate"] / rq_["rate"]
            rows.append(Row(
                f"B1{label}", f"{n:,} no-op points, 2 workers, {chunk_note}; first claim → last ack",
                fmt_rate(m["rate"]), f"RQ ×2 SimpleWorker: {fmt_rate(rq_['rate'])} (1 job/point, over "
                                     f"{rq_['points']:,} points)",
                fmt_ratio(vs_rq), "≥ 5,000 pts/s and ≥ 15× RQ",
                m["rate"] >= 5000 and vs_rq >= 15, notes=notes,
                data={"mcc": m, "rq": rq_}))
        else:
            rows.append(Row(f"B1{label}", chunk_note, fmt_rate(m["rate"]), rq_["error"], "—",
                            "≥ 5,000 pts/s and ≥ 15× RQ", None, data={"mcc": m}))
        vs_pool = m["rate"] / pool["rate"]
        rows.append(Row(
            f"B1{label}·pool", "same run vs Pool(2).map of the same points (warm pool, median of 3)",
            fmt_rate(m["rate"]), f"Pool.map: {fmt_rate(pool['rate'])}",
            fmt_ratio(vs_pool) + (f" (1/{1 / vs_pool:.1f})" if vs_pool < 1 else ""),
            "≥ 1/6 of Pool.map", vs_pool >= 1 / 6, data={"mcc": m, "pool": pool}))
        if label:  # one point per task on both sides: the dispatch rates compared
            vs_pool1 = m["rate"] / pool1["rate"]
            rows.append(Row(
                "B1/c1·pool1", "same run vs Pool(2).map(fn, points, chunksize=1): one point per task (warm pool, "
                               "median of 3)",
                fmt_rate(m["rate"]), f"Pool.map, chunksize 1: {fmt_rate(pool1['rate'])}",
                fmt_ratio(vs_pool1) + (f" (1/{1 / vs_pool1:.1f})" if vs_pool1 < 1 else ""),
                "≥ ½ of Pool.map at one point per task", vs_pool1 >= 0.5, data={"mcc": m, "pool": pool1}))
        dask = dask_dispatch(ctx, n, m["chunk"])
        if "rate" in dask:
            rows.append(Row(
                f"B1{label}·dask", f"same run vs dask.distributed LocalCluster (2 processes × 1 thread, warm), "
                                   f"{dask['tasks']:,} tasks of {dask['chunk']} point(s); submit → all gathered",
                fmt_rate(m["rate"]), f"dask: {fmt_rate(dask['rate'])}", fmt_ratio(m["rate"] / dask["rate"]),
                "report the ratio", None, data={"mcc": m, "dask": dask}))
        else:
            rows.append(Row(f"B1{label}·dask", "same run vs dask.distributed", fmt_rate(m["rate"]), dask["error"],
                            "—", "report the ratio", None, data={"mcc": m}))
    return rows


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "rq-worker":
    _rq_worker(sys.argv[2], sys.argv[3])
