"""The manager: seed the queue once, keep N workers alive, journal events, combine, stop.

A new manager (after a crash) rebuilds the queue from the run spec and the batch result objects and
failure objects already in the bucket if the queue itself was lost (each object's index names its
subproblems; a subproblem found in two objects is taken from the first by key order), and adopts the
workers that still run. A chunk acked without some of its points (their own one-point subproblems
since) is combined with the rows those have computed merged back in point order.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import redis

from mcc.remote.combining import IncrementalCombine, RunResults
from mcc.work import pack
from mcc.work.combine import combine_files
from mcc.work.diskspace import is_no_space
from mcc.project.folder import load_combiner
from mcc.providers.local import processes
from mcc.remote.budget import make_guard
from mcc.work.queue import Progress, point_subproblem
from mcc.remote.fleet import LocalFleet
from mcc.remote.runtime import Runtime, connect, setup_logging
from mcc.work.runspec import COMBINED, FAILURES, FINAL, INSTANCES, LOGS, PROGRESS, journal_key
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
        self.budget: Any = None  # remote/budget.BudgetGuard of a run with a budget
        self.draining = False  # the budget is reached: no new leases, no launches; stop once nothing is held
        self.results = RunResults(rt, self.log)
        self.incremental: IncrementalCombine | None = None  # the built-in combiner's file, built as acks arrive
        self.settled_seen = -1  # done + dead when the incremental combine last looked
        self.incremental_off = False  # it failed once: the end of the run combines everything

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
        self.budget = make_guard(self.rt, self.fleet, self.resource_id)
        if self.budget is not None:
            self.q.lease_only_under_manager()  # with this manager gone, its workers stop leasing (the reserve)
        if self.budget is None or not self.budget.must_drain():
            self.q.restore_withheld()  # a run resumed with a larger budget leases again what its drain set aside
        self.cursor = (self.rt.redis.get(self.key + "journal_cursor") or b"0-0").decode()
        while True:
            prog, failure = self.tick()
            if prog.finished:
                break
            if failure:
                return self._finish({"state": "failed", "reason": failure}, prog)
            if self.draining and prog.leased == 0:
                return self._stop_for_budget(prog)
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
        self._combine_step(prog)
        if prog.finished:
            return prog, None
        self._check_budget()
        failure = self._maintain_workers(prog)
        if not failure:
            self._publish("running", prog)
        return prog, failure

    # -- the queue ---------------------------------------------------------------------------------
    def _ensure_seeded(self) -> None:
        """Seed the queue once (from the run spec and the results already in the bucket)."""
        gen_key = self.key + "generation"
        if self.q.is_seeded() and int(self.rt.redis.get(gen_key) or 0) < self.spec.generation:
            self.log.info("round %d of --retry-dead: reseeding the queue from the bucket", self.spec.generation)
            self.rt.redis.delete(self.q.keys["seeded"])
        if self.q.is_seeded():
            return
        store = self.rt.store
        failures: dict[int, int] = {}
        for key in store.list(FAILURES):
            sub = int(key[len(FAILURES) :].split("/")[0])
            failures[sub] = failures.get(sub, 0) + 1
        done, partial, results = self.results.in_bucket()
        base = len(self.spec.chunks)
        # a split-off point's first failure object is written before the partial ack, so its count is its
        # attempts (after --retry-dead moved them to retried/, none: it is pending again)
        wanted = {point_subproblem(p, base) for pts in partial.values() for p in pts}
        attempts = {s: n for s, n in failures.items() if s < base or s in wanted}
        dead = {s for s, n in attempts.items() if n >= self.spec.max_attempts and s not in done}
        sizes = [n for _, n in self.spec.chunks]
        if self.q.seed(sizes, self.spec.max_attempts, done=done, dead=dead, attempts=attempts, partial=partial,
                       results=results):
            self.log.info("seeded %d subproblems (%d already done, %d dead, %d partial)", len(sizes), len(done),
                          len(dead), len(partial))
        self.rt.redis.set(gen_key, self.spec.generation)

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
        heartbeats = self.q.instance_heartbeats()  # the fleet's workers are instances (or processes)
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
        if self.budget is not None:
            wanted = 0 if self.draining else self.budget.allow(wanted)
        if wanted > 0:
            for wid in self.fleet.launch_workers(wanted):
                self.launched_at[wid] = time.time()
                self.alive_workers += 1
                self.log.info("launched worker %s", wid)
        return None

    # -- the budget --------------------------------------------------------------------------------
    def _check_budget(self) -> None:
        """Drain when finishing the work in hand would cross the budget (remote/budget.py); keep the queue
        from leasing anything new while draining."""
        if self.budget is None:
            return
        for record in getattr(self.fleet, "records", {}).values():
            self.budget.note(record)
        if not self.draining and self.budget.must_drain():
            self.draining = True
            self.log.warning("budget: spent $%.6f of $%.6f; draining (workers finish what they hold, then stop)",
                             self.budget.spent(), self.budget.budget)
        if self.draining:
            self.q.withhold()

    def _stop_for_budget(self, prog: Progress) -> int:
        """Nothing held any more: stop the workers, combine what is done, end as ``stopped_budget``."""
        self.fleet.terminate_all("budget reached")
        self.alive_workers = 0
        self.cursor = self._flush_journal(self.cursor)
        for record in getattr(self.fleet, "records", {}).values():
            self.budget.note(record)
        final: dict[str, Any] = {"state": "stopped_budget", "budget_usd": self.budget.budget}
        if prog.done:
            self._publish("combining", prog)
            combined = self._combine(prog)
            if "result" not in combined:
                return self._finish(combined, prog)
            final["result"] = combined["result"]
        final["spent_usd"] = self.budget.spent()
        self.log.warning("budget: stopped with $%.6f of $%.6f spent, %d of %d subproblems done", final["spent_usd"],
                         self.budget.budget, prog.done, prog.total)
        return self._finish(final, prog)

    # -- combining -------------------------------------------------------------------------------
    def _combine_step(self, prog: Progress) -> None:
        """The built-in combiner's incremental part: append what is newly settled at the front (when the
        counts moved). If it fails, it stops; the end of the run combines everything and reports why."""
        if self.spec.has_combiner or self.incremental_off or prog.done + prog.dead == self.settled_seen:
            return
        self.settled_seen = prog.done + prog.dead
        try:
            if self.incremental is None:
                self.incremental = IncrementalCombine(self.results, self.q, self.rt.workdir / "combined.h5.part")
            self.incremental.step(budget_s=self.spec.tick_seconds)
        except Exception:
            self.log.warning("incremental combine stopped; the end of the run combines everything:\n%s",
                             traceback.format_exc())
            self._drop_incremental()
            self.incremental_off = True

    def _drop_incremental(self) -> None:
        if self.incremental is not None:
            self.incremental.close()
            self.incremental = None

    # -- finishing ---------------------------------------------------------------------------------
    def _combine(self, prog: Progress) -> dict[str, Any]:
        if prog.done == 0:
            self._drop_incremental()
            return {"state": "failed", "reason": "every subproblem failed; see `mcc status RUN` for the errors"}
        out = self.rt.workdir / "combined.h5"
        try:
            if self.incremental is not None:
                before = self.incremental.appended
                self.incremental.finish().replace(out)
                self.log.info("combined %d results as they came, %d at the end", before,
                              self.incremental.appended - before)
                self.incremental = None
            else:
                self._combine_all(out)
        except Exception as exc:
            self.log.error("combining failed:\n%s", traceback.format_exc())
            return {"state": "combine_failed", "reason": user_error(exc, Path(self.spec.project_dir), self.spec.run_id)}
        self.rt.store.put_file(COMBINED, out, move=True)
        return {"state": "completed" if prog.dead == 0 else "completed_with_failures", "result": COMBINED}

    def _combine_all(self, out: Path) -> None:
        """Every done chunk's result in one go: a user's combine_data (one file per subproblem, in
        subproblem order: its contract), or the built-in combiner when its incremental part stopped."""
        done, partial, base = set(self.q.done_ids()), self.q.partial(), len(self.spec.chunks)
        keys = self.q.result_keys()
        self.results.fetch(set(keys.values()))
        chunks = [(s, partial.get(s)) for s in sorted(done) if s < base]
        sources, labels = self.results.sources(chunks, keys.get, done.__contains__)
        combiner = load_combiner(Path(self.spec.project_dir)) if self.spec.has_combiner else None
        if combiner is not None:
            sources = [self.results.member_file(f) if isinstance(f, pack.Member) else f for f in sources]
        combine_files(sources, out, combiner, chunks=labels)

    def _finish(self, final: dict[str, Any], prog: Progress) -> int:
        self.fleet.terminate_all("manager finished")
        errors = self.q.errors()
        final.update(
            progress=prog.to_dict(),
            dead={str(s): errors.get(s, "") for s in self.q.dead_ids()},
            dead_points={str(p): e for p, e in self.q.dead_points(self.spec.chunks).items()},
            finished_at=time.time(), generation=self.spec.generation,
        )
        put_json(self.rt.store, FINAL, final)
        self._publish("finished", prog)
        self.rt.redis.delete(self.q.keys["manager_lock"])
        self.log.info("finished: %s", final["state"])
        return 0

    def _publish(self, phase: str, prog: Progress) -> None:
        put_json(self.rt.store, PROGRESS, {
            "phase": phase, "t": time.time(), "progress": prog.to_dict(),
            "workers": self.alive_workers, "manager": self.id, "resource": self.resource_id,
        })

    # -- one manager at a time ---------------------------------------------------------------------
    def _lock_value(self) -> str:
        """Who holds the lock: this manager's id, host and process (``pid@start``), so a successor on the
        same host can tell at once that the holder is gone."""
        return json.dumps({"id": self.id, "host": socket.gethostname(), "process": str(processes.identify(os.getpid()))})

    def _acquire_lock(self) -> None:
        ttl = max(int(self.spec.lease_seconds), 5)
        key, mine = self.q.keys["manager_lock"], self._lock_value()
        while not self.rt.redis.set(key, mine, nx=True, ex=ttl):
            holder = self.rt.redis.get(key)
            if holder is not None and _holder_gone(holder.decode()):
                if self.rt.redis.eval(_DELETE_IF_EQUAL, 1, key, holder):
                    self.log.info("took over the lock of a manager that is gone (%s)", holder.decode())
                continue
            self.log.info("another manager holds the lock; waiting")
            time.sleep(1.0)
        self.lock_value = mine

    def _renew_lock(self) -> None:
        self.rt.redis.set(self.q.keys["manager_lock"], self.lock_value, ex=max(int(self.spec.lease_seconds), 5))


_DELETE_IF_EQUAL = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def _holder_gone(value: str) -> bool:
    """True when the lock's holder is a process on this host that no longer runs (an older manager's
    plain-id value, or one on another host, is waited out by its expiry)."""
    try:
        holder = json.loads(value)
        if holder["host"] != socket.gethostname():
            return False
        return not processes.is_alive(processes.ProcessId.parse(holder["process"]))
    except (ValueError, KeyError, TypeError):
        return False


def user_error(exc: BaseException, project_dir: Path, run_id: str) -> str:
    """A user's combine_data error as the user's own: their file, line and message (the last frame in the
    project folder), and where the full traceback is (the manager's log, copied to results/RUN/logs/)."""
    frames = traceback.extract_tb(exc.__traceback__)
    root = str(project_dir.resolve())
    own = [f for f in frames if os.path.abspath(f.filename).startswith(root + os.sep)] or frames[-1:]
    where = f"{own[-1].filename}, line {own[-1].lineno}, in {own[-1].name}: " if own else ""
    message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return (f"your combine_data raised an error at {where}{message}. The full traceback is in the manager's log: "
            f"`mcc logs {run_id} --worker manager`, and under results/{run_id}/logs/ once the run is collected or "
            f"failed. Fix combine_data.py and run `mcc resume {run_id}` (the computed results are kept).")


def make_fleet(rt: Runtime) -> Any:
    """Worker processes next to the manager (local backend), EC2 instances (aws) or Slurm array tasks (slurm)."""
    if rt.spec.extra.get("backend") == "slurm":
        from mcc.remote.slurm_fleet import SlurmFleet

        return SlurmFleet(rt, rt.spec.extra["slurm"])
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
    manager = Manager(rt)
    try:
        return manager.run()
    except redis.ConnectionError as exc:
        print(f"manager: queue unreachable: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if not is_no_space(exc):
            raise
        # the bucket's disk is full: the laptop names it (it probes the bucket before relaunching us)
        print(f"manager: no space left on the device ({exc.filename or exc}); stopping the workers (their "
              "leases go back without spending an attempt) and exiting", file=sys.stderr)
        manager.fleet.terminate_all("no space left on the device")
        return 28


if __name__ == "__main__":
    sys.exit(main())
