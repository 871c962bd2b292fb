"""B4 — recovery: SIGKILL a worker that holds leases; time until all of its subproblems are leased again.

The real manager (``python -m mcc.remote.manager``) runs a run of 2 subproblems whose single point
never finishes (a long sleep), with 2 workers and ``lease_seconds = LEASE``: each worker holds one
lease, and the queue has nothing else to hand out, so what is timed is recovery itself and not a
wait behind other pending work (a requeued subproblem goes to the back of the queue by design).
Each trial SIGKILLs the worker holding one of them, then polls the queue's owner table every 5 ms
until every subproblem the victim held is leased by another worker. That time covers: lease expiry
(the victim's last heartbeat + lease), the manager noticing (its tick), the manager replacing the
dead worker (a new process that must start), and a worker claiming the requeued subproblem.

Size: the number of kills (trials).
"""
from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

from bench import Context, Row, fmt_s, workloads
from bench.harness import (
    LocalRun, percentile, redis_server, tags, tempdir, wait_until, write_project,
)
from mcc.providers.local import processes
from mcc.work.runspec import instance_key

ID = "B4"
TITLE = "recovery: SIGKILL a worker holding leases → its subproblems leased again"
DEFAULT_SIZE = 10
SMOKE_SIZE = 2  # python -m bench --smoke: does it run here (figures not comparable)
LEASE = 2.0

STUCK_ENTRY = "import time\n\ndef compute(point):\n    time.sleep(100_000)\n    return point\n"


def _owners(run: LocalRun) -> dict[int, str]:
    raw = run.queue.client.hgetall(run.queue.keys["owner"])
    return {int(k): v.decode() for k, v in raw.items()}


def _worker_proc(run: LocalRun, wid: str) -> processes.ProcessId:
    record = json.loads(run.store.get_bytes(instance_key(wid)) or b"{}")
    return processes.ProcessId.parse(record["physical_id"])


def recovery_trials(ctx: Context, kills: int, lease: float = LEASE) -> dict[str, Any]:
    with tempdir("b4") as root, redis_server(root) as server:
        project = write_project(root / "project", STUCK_ENTRY)
        run = LocalRun.create(root, server, project, workloads.points(2), 1, workers=2, lease_seconds=lease,
                              max_attempts=10_000)
        manager = processes.spawn(
            [sys.executable, "-m", "mcc.remote.manager"], tags=tags("manager"),
            env={**run.env(), "MCC_WORKDIR": str(root / "work" / "manager")}, cwd=str(project),
            log_path=root / "logs" / "manager.log")
        times: list[float] = []
        try:
            wait_until(lambda: len(set(_owners(run).values())) == 2, 120, "both workers to hold a lease")
            for trial in range(kills):
                owners = _owners(run)
                victim = owners[trial % 2]
                held = [sub for sub, w in owners.items() if w == victim]
                proc = _worker_proc(run, victim)
                time.sleep(0.3 + 0.1 * (trial % 7))  # kill at varied phases of the victim's heartbeat
                killed_at = time.time()
                processes._signal_group(proc, signal.SIGKILL)

                def recovered() -> bool:
                    now = _owners(run)
                    return all(now.get(sub) not in (None, victim) for sub in held)

                wait_until(recovered, 20 * lease + 60, f"subproblems {held} to be leased again", interval=0.005)
                times.append(time.time() - killed_at)
                ctx.log(f"  kill {trial + 1}/{kills}: {victim} held {held}; leased again after {times[-1]:.2f} s")
                wait_until(lambda: len(set(_owners(run).values())) == 2, 120, "two live lease holders")
        finally:
            processes.terminate(manager, grace=5.0)
            for wid in _owners(run).values():
                try:
                    processes.terminate(_worker_proc(run, wid), grace=2.0)
                except (KeyError, ValueError):
                    pass
    return {"lease_s": lease, "kills": kills, "seconds": times,
            "p50": percentile(times, 50), "p95": percentile(times, 95), "max": max(times)}


def run(size: int | None, ctx: Context) -> list[Row]:
    kills = size or DEFAULT_SIZE
    r = recovery_trials(ctx, kills)
    lease = r["lease_s"]
    return [
        Row("B4", f"{kills} SIGKILLs of a worker holding a lease (real manager, 2 workers, lease {lease:g} s); "
                  "kill → every subproblem it held leased by another worker",
            f"p50 {fmt_s(r['p50'])}, p95 {fmt_s(r['p95'])}", f"lease {fmt_s(lease)}",
            f"p50 = lease {r['p50'] - lease:+.2f} s, p95 = lease {r['p95'] - lease:+.2f} s",
            "p50 ≤ lease + 1 s, p95 ≤ lease + 2 s", r["p50"] <= lease + 1 and r["p95"] <= lease + 2,
            notes=f"max {fmt_s(r['max'])}; a lease ends ⅔–1 lease after the last heartbeat (every lease/3)",
            data=r),
    ]
