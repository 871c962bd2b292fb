"""The manager: seed the queue once, keep N workers alive, journal events, combine, stop.

A new manager (after a crash) rebuilds the queue from the run spec and the result and failure objects
already in the bucket if the queue itself was lost, and adopts the workers that still run.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import redis

from mcc.work.combine import combine_files
from mcc.project.folder import load_combiner
from mcc.providers.local import processes
from mcc.work.queue import Progress
from mcc.remote.fleet import LocalFleet
from mcc.remote.runtime import Runtime, connect, setup_logging
from mcc.work.runspec import (
    COMBINED, FAILURES, FINAL, INSTANCES, LOGS, PROGRESS, RESULTS, journal_key, result_key, sub_of_result_key,
)
from mcc.work.stores import put_json

JOURNAL_BATCH = 10_000
STARTUP_CRASH_LIMIT = 5  # workers that die before their first heartbeat, in a row, before we give up


class Manager:
    def __init__(self, rt: Runtime) -> None:
        self.rt, self.q, self.spec = rt, rt.queue, rt.spec
        self.log = setup_logging("manager")
        self.key = f"mcc:{{{self.spec.run_id}}}:"
        self.id = f"manager-{os.getpid()}-{int(time.time())}"
        # what the laptop's ledger calls this manager: the instance id on EC2, pid@start locally
        self.resource_id = os.environ.get("MCC_WORKER_ID") or str(processes.identify(os.getpid()))
        self.fleet = make_fleet(rt)
        self.launched_at: dict[str, float] = {}
        self.alive_workers = 0
        self.boot_seconds = float(self.spec.extra.get("worker_boot_seconds", 120.0))
        self.startup_crashes = 0
        self.cursor = "0-0"  # the last queue event copied into the journal

    def run(self) -> int:
        self._acquire_lock()
        lost_queue = not self.q.is_seeded() and bool(self.rt.store.list(INSTANCES))
        for wid in self.fleet.adopt_workers():
            if lost_queue:  # bound to the queue that died with the previous manager: stop before reseeding
                self.log.info("stopping worker %s of the lost queue", wid)
                self.fleet.terminate_worker(wid, "its queue was lost with the previous manager")
                continue
            self.launched_at[wid] = time.time()
            self.log.info("adopted running worker %s", wid)
        self._ensure_seeded()
        self.cursor = (self.rt.redis.get(self.key + "journal_cursor") or b"0-0").decode()
        while True:
            prog, failure = self.tick()
            if prog.finished:
                break
            if failure:
                return self._finish({"state": "failed", "reason": failure}, prog)
            time.sleep(self.spec.tick_seconds)
        self.fleet.terminate_all("run finished")
        self.alive_workers = 0
        self.cursor = self._flush_journal(self.cursor)
        self._publish("combining", prog)
        return self._finish(self._combine(prog), prog)

    def tick(self) -> tuple[Progress, str | None]:
        """One supervision step: requeue expired leases, journal new events, keep the fleet (one query),
        publish progress. Returns the progress and, if the run must fail, why."""
        self._renew_lock()
        for sub, outcome in self.q.requeue_expired():
            self.log.info("lease of subproblem %d expired → %s", sub, outcome)
        prog = self.q.progress()
        self.cursor = self._flush_journal(self.cursor)
        if prog.finished:
            return prog, None
        failure = self._maintain_workers(prog)
        if not failure:
            self._publish("running", prog)
        return prog, failure

    # -- the queue ---------------------------------------------------------------------------------
    def _ensure_seeded(self) -> None:
        """Seed the queue once (from the run spec and the results already in the bucket)."""
        if self.q.is_seeded():
            return
        store = self.rt.store
        done = {sub_of_result_key(k) for k in store.list(RESULTS) if k.endswith(".h5")}
        failures: dict[int, int] = {}
        for key in store.list(FAILURES):
            sub = int(key[len(FAILURES) :].split("/")[0])
            failures[sub] = failures.get(sub, 0) + 1
        dead = {s for s, n in failures.items() if n >= self.spec.max_attempts and s not in done}
        sizes = [n for _, n in self.spec.chunks]
        if self.q.seed(sizes, self.spec.max_attempts, done=done, dead=dead, attempts=failures):
            self.log.info("seeded %d subproblems (%d already done, %d dead)", len(sizes), len(done), len(dead))

    def _flush_journal(self, cursor: str) -> str:
        """Copy new queue events into journal objects in the bucket; the laptop syncs them into its ledger."""
        while True:
            events = self.q.read_events(cursor, JOURNAL_BATCH)
            if not events:
                return cursor
            lines = [json.dumps({"id": eid, **fields}, sort_keys=True) for eid, fields in events]
            self.rt.store.put_bytes(journal_key(events[0][0]), ("\n".join(lines) + "\n").encode())
            cursor = events[-1][0]
            self.rt.redis.set(self.key + "journal_cursor", cursor)
            self.q.trim_events(cursor)
            if len(events) < JOURNAL_BATCH:
                return cursor

    # -- the workers -------------------------------------------------------------------------------
    def _maintain_workers(self, prog: Progress) -> str | None:
        """One fleet query per tick (O(1) API calls in the number of workers on EC2)."""
        heartbeats = self.q.worker_heartbeats()
        now = self.q.server_time()
        alive_now = 0
        for wid, alive in self.fleet.query_workers().items():
            if not alive:
                self.fleet.forget_worker(wid, "exited")
                self.q.forget_worker(wid)
                if wid not in heartbeats:
                    self.startup_crashes += 1
                    self.log.warning("worker %s died before its first heartbeat", wid)
                continue
            if wid not in heartbeats and time.time() - self.launched_at.get(wid, time.time()) > self.boot_seconds:
                self.log.warning("worker %s sent no heartbeat within %.0f s of its launch; replacing it", wid,
                                 self.boot_seconds)
                self.fleet.terminate_worker(wid, "no heartbeat after boot")
                self.startup_crashes += 1
                continue
            if wid in heartbeats:
                self.startup_crashes = 0
                if now - heartbeats[wid] > self.spec.stall_after:
                    self.log.warning("worker %s stalled (no heartbeat for %.0f s); replacing it", wid, now - heartbeats[wid])
                    self.fleet.terminate_worker(wid, "stalled")
                    self.q.forget_worker(wid)
                    continue
            alive_now += 1
        if self.startup_crashes >= STARTUP_CRASH_LIMIT:
            return (f"{self.startup_crashes} workers in a row died at start-up; "
                    f"see the worker logs under {LOGS} in the bucket ({self.rt.store.url})")
        self.alive_workers = alive_now
        remaining = prog.total - prog.done - prog.dead
        wanted = min(self.spec.workers, remaining) - alive_now
        if wanted > 0:
            for wid in self.fleet.launch_workers(wanted):
                self.launched_at[wid] = time.time()
                self.alive_workers += 1
                self.log.info("launched worker %s", wid)
        return None

    # -- finishing ---------------------------------------------------------------------------------
    def _combine(self, prog: Progress) -> dict[str, Any]:
        if prog.done == 0:
            return {"state": "failed", "reason": "every subproblem failed; see `mcc status RUN` for the errors"}
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=16) as pool:  # remote buckets: fetch results side by side
            files = list(pool.map(self._local_result, sorted(self.q.done_ids())))
        out = self.rt.workdir / "combined.h5"
        try:
            combiner = load_combiner(Path(self.spec.project_dir)) if self.spec.has_combiner else None
            combine_files([str(f) for f in files], out, combiner)
        except Exception:
            self.log.error("combining failed:\n%s", traceback.format_exc())
            return {"state": "combine_failed", "reason": "combine_data raised:\n" + traceback.format_exc(limit=-3)}
        self.rt.store.put_file(COMBINED, out, move=True)
        return {"state": "completed" if prog.dead == 0 else "completed_with_failures", "result": COMBINED}

    def _local_result(self, sub: int) -> Path:
        path = self.rt.store.local_path(result_key(sub))
        if path is not None:
            return path
        path = self.rt.workdir / "results" / f"{sub:07d}.h5"
        self.rt.store.get_file(result_key(sub), path)
        return path

    def _finish(self, final: dict[str, Any], prog: Progress) -> int:
        self.fleet.terminate_all("manager finished")
        errors = self.q.errors()
        final.update(
            progress=prog.to_dict(),
            dead={str(s): errors.get(s, "") for s in self.q.dead_ids()},
            finished_at=time.time(),
        )
        put_json(self.rt.store, FINAL, final)
        self._publish("finished", prog)
        self.rt.redis.delete(self.key + "manager_lock")
        self.log.info("finished: %s", final["state"])
        return 0

    def _publish(self, phase: str, prog: Progress) -> None:
        put_json(self.rt.store, PROGRESS, {
            "phase": phase, "t": time.time(), "progress": prog.to_dict(),
            "workers": self.alive_workers, "manager": self.id, "resource": self.resource_id,
        })

    # -- one manager at a time ---------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        ttl = max(int(self.spec.lease_seconds), 5)
        while not self.rt.redis.set(self.key + "manager_lock", self.id, nx=True, ex=ttl):
            self.log.info("another manager holds the lock; waiting")
            time.sleep(1.0)

    def _renew_lock(self) -> None:
        self.rt.redis.set(self.key + "manager_lock", self.id, ex=max(int(self.spec.lease_seconds), 5))


def make_fleet(rt: Runtime) -> Any:
    """Worker processes next to the manager (local backend) or EC2 instances (aws backend)."""
    if rt.spec.extra.get("backend") != "aws":
        env = {k: os.environ[k] for k in ("MCC_STORE", "MCC_REDIS_URL", "MCC_RUN_ID") if k in os.environ}
        return LocalFleet(rt, env)
    from mcc.providers.aws.clients import AwsContext
    from mcc.remote.bootstrap import render_user_data
    from mcc.remote.ec2_fleet import Ec2Fleet

    aws = rt.spec.extra["aws"]
    user_data = render_user_data(
        role="worker", store_url=rt.store.url, run_id=rt.spec.run_id, region=aws["region"], wheel=aws["wheel"],
        requirements=aws.get("requirements", []), max_lifetime_seconds=aws["max_lifetime_seconds"],
    )
    return Ec2Fleet(rt, AwsContext.create(rt.spec.ledger_uuid, region=aws["region"]), aws, user_data)


def main() -> int:
    rt = connect("manager")
    try:
        return Manager(rt).run()
    except redis.ConnectionError as exc:
        print(f"manager: queue unreachable: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
