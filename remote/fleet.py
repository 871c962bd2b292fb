"""Workers as local processes, tagged and recorded like instances (``instances/<id>.json`` in the bucket).

The EC2 fleet (AWS backend) offers the same four verbs: launch_workers, query_workers,
terminate_worker, adopt_workers.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from mcc.providers.base import ownership_tags
from mcc.providers.local import processes
from mcc.providers.local.instance import TAG_KIND
from mcc.work.runspec import INSTANCES, LOGS, WORK, instance_key
from mcc.work.stores import Store, get_json, put_json
from mcc.remote.runtime import Runtime


class LocalFleet:
    def __init__(self, rt: Runtime, env: dict[str, str]) -> None:
        self.rt, self.env = rt, env
        self.workers: dict[str, processes.ProcessId] = {}

    def _new_id(self) -> str:
        """``w-0001``, … unique within the run: a fresh queue (a later --retry-dead round, a lost queue)
        continues after the workers already recorded in the bucket, so no two share a ledger row."""
        key = f"mcc:{{{self.rt.spec.run_id}}}:worker_seq"
        self.rt.redis.setnx(key, len(self.rt.store.list(INSTANCES)))
        n = self.rt.redis.incr(key)
        return f"w-{int(n):04d}"

    def launch_workers(self, count: int) -> list[str]:
        launched = []
        for _ in range(count):
            worker_id = self._new_id()
            tags = ownership_tags(self.rt.spec.ledger_uuid, self.rt.spec.run_id, f"{self.rt.spec.run_id}/{worker_id}", worker_id)
            workdir = self.rt.store.local_path(f"{WORK}{worker_id}")
            log = self.rt.store.local_path(f"{LOGS}{worker_id}.log")
            assert workdir is not None and log is not None
            log.parent.mkdir(parents=True, exist_ok=True)
            proc = processes.spawn(
                [sys.executable, "-m", "mcc.remote.worker"],
                tags={**tags, TAG_KIND: "instance"},
                env={**self.env, "MCC_WORKER_ID": worker_id, "MCC_WORKDIR": str(workdir)},
                cwd=self.rt.spec.project_dir,
                log_path=log,
            )
            self.workers[worker_id] = proc
            put_json(self.rt.store, instance_key(worker_id), {
                "worker_id": worker_id, "physical_id": str(proc), "kind": "instance", "role": "worker",
                "backend": "local", "launched_at": time.time(), "tags": tags,
                "entry_sha256": self.rt.spec.entry_sha256,  # the code this worker's rows come from
            })
            launched.append(worker_id)
        return launched

    def query_workers(self) -> dict[str, bool]:
        """worker id → alive, for every worker this fleet knows."""
        return {wid: processes.is_alive(proc) for wid, proc in self.workers.items()}

    def terminate_worker(self, worker_id: str, reason: str) -> None:
        proc = self.workers.pop(worker_id, None)
        if proc is not None:
            processes.terminate(proc, grace=15.0)
        self._mark_terminated(worker_id, reason)

    def forget_worker(self, worker_id: str, reason: str) -> None:
        """A worker that exited by itself: record its end."""
        self.workers.pop(worker_id, None)
        self._mark_terminated(worker_id, reason)

    def _mark_terminated(self, worker_id: str, reason: str) -> None:
        mark_terminated(self.rt.store, worker_id, reason)

    def adopt_workers(self) -> list[str]:
        """After a manager restart: take over workers the previous manager started that still run."""
        adopted = []
        for key in self.rt.store.list(INSTANCES):
            record = get_json(self.rt.store, key) or {}
            if record.get("role") != "worker" or "terminated_at" in record:
                continue
            proc = processes.ProcessId.parse(record["physical_id"])
            if processes.is_alive(proc):
                self.workers[record["worker_id"]] = proc
                adopted.append(record["worker_id"])
            else:
                self._mark_terminated(record["worker_id"], "found dead by a new manager")
        return adopted

    def terminate_all(self, reason: str) -> None:
        """Every worker, side by side (they exit together at the end of a run, not one after the other)."""
        ended = {wid: self.workers.pop(wid) for wid in list(self.workers)}
        processes.terminate_all(list(ended.values()), grace=15.0)
        for worker_id in ended:
            self._mark_terminated(worker_id, reason)


def mark_terminated(store: Store, worker_id: str, reason: str) -> dict[str, Any]:
    """Record a worker's end in its ``instances/`` record, once (every fleet's way of saying it ended);
    returns the record."""
    record: dict[str, Any] = get_json(store, instance_key(worker_id)) or {"worker_id": worker_id}
    if "terminated_at" not in record:
        record.update(terminated_at=time.time(), reason=reason)
        put_json(store, instance_key(worker_id), record)
    return record
