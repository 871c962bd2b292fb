"""Workers as Slurm job-array tasks: long-lived pilots, submitted by the manager job.

The same verbs as the local and EC2 fleets. One array ``--array=0-(2n-1)%n`` holds n running pilots
and n spare indexes: when a task ends (time limit, node failure, scancel) Slurm itself starts the
next index, so a replacement costs no new submission; a new array is submitted only when the
pending indexes cannot cover what the manager wants. A preempted task (``--requeue``) comes back as
the same index with ``.<restarts>`` in its worker id. One squeue call per ``poll_seconds`` answers
for every task. Tasks are recorded in ``instances/`` (kind ``job``) so the laptop's ledger has a
row per task; arrays are recorded too (role ``array``) so clean knows them by id.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mcc.providers.base import ownership_tags
from mcc.providers.slurm import scheduler
from mcc.providers.slurm.jobs import cancel_jobs, owned, query_jobs, submit_job
from mcc.providers.slurm.runner import LocalRunner, Runner, SchedulerError
from mcc.providers.slurm.scheduler import JobInfo, JobRequest
from mcc.remote.fleet import mark_terminated
from mcc.remote.runtime import Runtime
from mcc.work.runspec import INSTANCES, LOGS, instance_key
from mcc.work.stores import get_json, put_json

log = logging.getLogger("manager")


class SlurmFleet:
    def __init__(self, rt: Runtime, slurm: dict[str, Any], runner: Runner | None = None) -> None:
        self.rt, self.slurm = rt, slurm
        self.runner = runner or LocalRunner()
        self.arrays: set[str] = set()
        self.known: set[str] = set()  # worker ids seen running and not yet forgotten
        self.tasks: dict[str, str] = {}  # worker id → Slurm task id ("A_T")
        self.poll = float(slurm.get("poll_seconds") or 5.0)
        self._jobs: list[JobInfo] = []
        self._asked = 0.0

    def _tags(self, role: str) -> dict[str, str]:
        s = self.rt.spec
        return {**ownership_tags(s.ledger_uuid, s.run_id, f"{s.run_id}/workers", f"{s.run_id}-{role}"), "mcc:role": role}

    def _query(self, force: bool = False) -> list[JobInfo]:
        if force or time.monotonic() - self._asked >= self.poll:
            try:
                self._jobs = [j for j in owned(query_jobs(self.runner), self.rt.spec.ledger_uuid, self.rt.spec.run_id)
                              if (j.array_job_id or j.job_id) in self.arrays]
                self._asked = time.monotonic()
            except SchedulerError as exc:  # slurmctld busy: keep the last answer, ask again next tick
                log.warning("squeue failed (%s); using the previous answer", exc)
        return self._jobs

    @staticmethod
    def _worker_id(job: JobInfo) -> str:
        wid = f"{job.array_job_id}_{job.array_task_id}"
        return f"{wid}.{job.restarts}" if job.restarts else wid

    def launch_workers(self, count: int) -> list[str]:
        """Submit an array only for what the pending indexes cannot cover; Slurm starts the tasks, so
        none is returned as launched (they appear in query_workers once they run)."""
        if count <= 0:
            return []
        pending = sum(1 for j in self._query() if j.state == "PENDING")
        if pending >= count:
            return []
        n = count - pending
        s = self.rt.spec
        root = Path(self.rt.store.url[len("file://"):])  # the bucket is a shared folder
        tags = self._tags("worker")
        script = scheduler.shell_script(
            {"MCC_STORE": self.rt.store.url, "MCC_RUN_ID": s.run_id, "MCC_ROLE": "worker"},
            [self.slurm["python"], "-m", "mcc.remote.slurm_job"])
        req = JobRequest(
            name=f"mcc-{s.run_id}-workers", comment=scheduler.comment_of(tags), script=script,
            output=str(root / LOGS / "worker-%A_%a.log"), chdir=s.project_dir, cpus=int(self.slurm.get("cpus") or 1),
            partition=self.slurm.get("partition"), account=self.slurm.get("account"), qos=self.slurm.get("qos"),
            time_limit=self.slurm.get("time_limit"), mem=self.slurm.get("mem"), array=f"0-{2 * n - 1}%{n}",
            requeue=self.slurm.get("requeue"), extra=tuple(self.slurm.get("extra") or ()))
        try:
            array_id = submit_job(self.runner, req)
        except SchedulerError as exc:
            log.warning("cannot submit %d worker task(s) now (%s); retrying next tick", n, exc)
            return []
        self.arrays.add(array_id)
        put_json(self.rt.store, instance_key(f"array-{array_id}"), {
            "worker_id": f"array-{array_id}", "physical_id": array_id, "kind": "job", "role": "array",
            "backend": "slurm", "array": req.array, "launched_at": time.time(), "tags": tags,
        })
        log.info("submitted worker array %s (--array=%s)", array_id, req.array)
        self._query(force=True)
        return []

    def query_workers(self, force: bool = False) -> dict[str, bool]:
        """worker id → alive: running tasks (recorded on first sight), and the known ones now gone."""
        running = {self._worker_id(j): j for j in self._query(force) if j.running}
        for wid, job in running.items():
            if wid not in self.known:
                self.known.add(wid)
                self.tasks[wid] = job.id
                put_json(self.rt.store, instance_key(wid), {
                    "worker_id": wid, "physical_id": job.id, "kind": "job", "role": "worker", "backend": "slurm",
                    "launched_at": job.start or time.time(), "vcpus": job.cpus, "partition": job.partition,
                    "restarts": job.restarts,  # which run of the task this worker is (a requeued task runs again)
                    "tags": self._tags("worker"),
                })
        return {wid: wid in running for wid in self.known}

    def terminate_worker(self, worker_id: str, reason: str) -> None:
        task = self.tasks.get(worker_id)
        if task:
            cancel_jobs(self.runner, [task])
        self.forget_worker(worker_id, reason)

    def forget_worker(self, worker_id: str, reason: str) -> None:
        self.known.discard(worker_id)
        self.tasks.pop(worker_id, None)
        self._mark_terminated(worker_id, reason)

    def _mark_terminated(self, worker_id: str, reason: str) -> None:
        mark_terminated(self.rt.store, worker_id, reason)

    def adopt_workers(self) -> list[str]:
        """After a manager restart: the arrays the previous manager submitted, and their running tasks."""
        for key in self.rt.store.list(INSTANCES):
            record = get_json(self.rt.store, key) or {}
            if record.get("role") == "array" and "terminated_at" not in record:
                self.arrays.add(str(record["physical_id"]))
        # find before create: an array whose record was lost with a killed manager is found by its comment
        for job in owned(query_jobs(self.runner), self.rt.spec.ledger_uuid, self.rt.spec.run_id):
            array_id = job.array_job_id or job.job_id
            if job.tags.get("mcc:role") == "worker" and job.state in scheduler.ALIVE and array_id not in self.arrays:
                self.arrays.add(array_id)
                put_json(self.rt.store, instance_key(f"array-{array_id}"), {
                    "worker_id": f"array-{array_id}", "physical_id": array_id, "kind": "job", "role": "array",
                    "backend": "slurm", "launched_at": time.time(), "tags": job.tags, "found": "by its comment"})
        for key in self.rt.store.list(INSTANCES):
            record = get_json(self.rt.store, key) or {}
            if record.get("role") == "worker" and "terminated_at" not in record:
                self.known.add(record["worker_id"])
                self.tasks[record["worker_id"]] = record["physical_id"]
        alive = self.query_workers() if self.arrays else {wid: False for wid in self.known}
        for wid, ok in alive.items():
            if not ok:
                self.forget_worker(wid, "found gone by a new manager")
        return [wid for wid, ok in alive.items() if ok]

    def terminate_all(self, reason: str) -> None:
        if self.arrays:  # record the tasks that started since the last squeue (a short run may have seen none)
            self.query_workers(force=True)
        arrays = sorted(self.arrays)
        cancel_jobs(self.runner, arrays)
        for wid in list(self.known):
            self.forget_worker(wid, reason)
        for array_id in arrays:
            self._mark_terminated(f"array-{array_id}", reason)
        self.arrays.clear()
        self._jobs = []
