"""B2 — flatness: B1 at 10× the points must keep ≥ 80 % of B1's rate.

B2 is B1 (automatic chunk size, real workers, first claim → last ack) at N = 100k against B1 at
N/10 = 10k, both measured in this invocation (B1's figure is reused when B1 ran first).

B2/queue isolates the queue's own data structures, which only grow with the number of
*subproblems* (with automatic chunks 100k points are ~10 subproblems): two processes drive the
real ``mcc.work.queue.Queue.ack_and_claim`` exactly as a worker does (batches of up to 64, each ack
sent with the next claim) over N/10 and N one-point subproblems, with no compute and no result
files, first claim → last ack from the queue's events.
"""
from __future__ import annotations

import sys
from typing import Any

import redis

from bench import Context, Row, fmt_rate
from bench.b1_dispatch import mcc_dispatch
from bench.harness import env_with_repo, redis_server, tags, tempdir, wait_until
from mcc.providers.local import processes
from mcc.work.queue import Queue

ID = "B2"
TITLE = "flatness: B1 at 100k points vs B1 at 10k"
DEFAULT_SIZE = 100_000
SMOKE_SIZE = 10_000  # python -m bench --smoke: does it run here (figures not comparable)
BATCH = 64  # as remote.worker.MAX_BATCH


def queue_only(ctx: Context, n_subs: int, workers: int = 2) -> dict[str, Any]:
    key = ("queue-only", n_subs, workers)
    if key in ctx.cache:
        return ctx.cache[key]
    with tempdir("b2") as root, redis_server(root) as server:
        client = server.client()
        run_id = f"q-{n_subs}"
        queue = Queue(client, run_id)
        procs = [processes.spawn([sys.executable, "-m", "bench.b2_flatness", "queue-worker", server.url, run_id,
                                  f"w-{i}"], tags=tags(f"q-{i}"), env=env_with_repo(), log_path=root / f"q-{i}.log")
                 for i in range(workers)]
        try:
            wait_until(lambda: int(client.get("bench:ready") or 0) == workers, 60, "queue drivers to start")
            assert queue.seed([1] * n_subs, 3)
            client.rpush("bench:go", *["go"] * workers)
            wait_until(lambda: queue.progress().finished, max(120, n_subs / 500), "the queue to drain", 0.01)
            (_, first), = client.xrange(queue.keys["events"], count=1)
            (_, last), = client.xrevrange(queue.keys["events"], count=1)
            assert first[b"type"] == b"claimed" and last[b"type"] == b"acked", (first, last)
            seconds = float(last[b"t"]) - float(first[b"t"])
        finally:
            for proc in procs:
                processes.terminate(proc, grace=2.0)
    out = {"subproblems": n_subs, "seconds": seconds, "rate": n_subs / seconds}
    ctx.log(f"queue only: {n_subs:,} subproblems → {out['rate']:,.0f} subproblems/s")
    ctx.cache[key] = out
    return out


def _queue_worker(url: str, run_id: str, worker: str) -> None:
    client = redis.Redis.from_url(url)
    queue = Queue(client, run_id)
    client.incr("bench:ready")
    client.blpop(["bench:go"], timeout=120)
    acks: list[int] = []
    while True:
        _, ids = queue.ack_and_claim(worker, acks, BATCH, 30.0)
        if not ids:
            return
        acks = ids  # "computed": acked with the next claim, as the worker does


def run(size: int | None, ctx: Context) -> list[Row]:
    n = size or DEFAULT_SIZE
    small = mcc_dispatch(ctx, n // 10, "auto")
    big = mcc_dispatch(ctx, n, "auto")
    q_small = queue_only(ctx, n // 10)
    q_big = queue_only(ctx, n)
    ratio = big["rate"] / small["rate"]
    q_ratio = q_big["rate"] / q_small["rate"]
    return [
        Row("B2", f"B1 at {n:,} points (automatic chunk {big['chunk']}: {big['subproblems']} subproblems) vs B1 at "
                  f"{n // 10:,} (chunk {small['chunk']}); first claim → last ack",
            fmt_rate(big["rate"]), f"B1 at {n // 10:,}: {fmt_rate(small['rate'])}", f"{ratio:.0%}",
            "≥ 80 % of the 10k rate", ratio >= 0.8, data={"big": big, "small": small}),
        Row("B2/queue", f"the queue alone: Queue.ack_and_claim from 2 processes (batches of {BATCH}), "
                        f"{n:,} vs {n // 10:,} one-point subproblems, no compute or files",
            f"{q_big['rate']:,.0f} subproblems/s", f"{n // 10:,}: {q_small['rate']:,.0f} subproblems/s",
            f"{q_ratio:.0%}", "≥ 80 %", q_ratio >= 0.8, data={"big": q_big, "small": q_small}),
    ]


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "queue-worker":
    _queue_worker(sys.argv[2], sys.argv[3], sys.argv[4])
