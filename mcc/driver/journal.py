"""Sync the manager's journal (queue events in the bucket) and worker records into the ledger.

Events are applied in stream order; each maps to subproblem transitions from the machine's table,
applied in bulk. The run's ``journal_cursor`` remembers the last applied event, so a sync resumes
exactly where the previous one stopped, and a segment rewritten by a restarted manager is harmless.
"""
from __future__ import annotations

import json
import time
from typing import Any

from mcc.driver.engine import Engine
from mcc.ledger import create_point_subproblems, create_row, models, queries
from mcc.ledger.steps import fire_steps
from mcc.work.runspec import INSTANCES, JOURNAL
from mcc.work.stores import Store, get_json

# queue event → subproblem triggers (outcome-dependent for failures and expiries)
TRIGGERS = {
    "claimed": ["lease"],
    "acked": ["complete"],
    "preempted": ["release"],
    ("failed", "retry"): ["fail", "retry"],
    ("failed", "dead"): ["fail", "give_up"],
    ("expired", "retry"): ["fail", "retry"],
    ("expired", "dead"): ["fail", "give_up"],
    # a point split off its chunk by a partial ack: a new one-point subproblem, its first attempt spent
    ("spawned", "retry"): ["lease", "fail", "retry"],
    ("spawned", "dead"): ["lease", "fail", "give_up"],
}


def _id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def read_new_events(store: Store, cursor: str) -> list[dict[str, Any]]:
    """Events after ``cursor`` from the journal objects, in order."""
    keys = store.list(JOURNAL)
    after = _id_key(cursor or "0-0")
    start = 0
    for i, key in enumerate(keys):  # the last segment starting at or before the cursor may hold newer events
        first = key[len(JOURNAL):].split(".")[0]
        if _id_key(first) <= after:
            start = i
    events = []
    for key in keys[start:]:
        data = store.get_bytes(key) or b""
        for line in data.decode().splitlines():
            if line.strip():
                event = json.loads(line)
                if _id_key(event["id"]) > after:
                    events.append(event)
    events.sort(key=lambda e: _id_key(e["id"]))
    return events


def _subproblem_ids(run_id: str, indexes: list[int]) -> dict[int, int]:
    """index → row id of the run's subproblems with these indexes (all of them when there are many)."""
    if len(indexes) >= 5000:  # one scan of the run's (run_id, index) range beats thousands of lookups
        return dict(models.db.execute_sql('SELECT "index", "id" FROM "subproblems" WHERE "run_id" = ?',
                                          (run_id,)).fetchall())
    found: dict[int, int] = {}
    for start in range(0, len(indexes), 500):
        batch = indexes[start:start + 500]
        found.update(models.db.execute_sql(
            f'SELECT "index", "id" FROM "subproblems" WHERE "run_id" = ? AND "index" IN ({", ".join("?" * len(batch))})',
            (run_id, *batch)).fetchall())
    return found


def apply_events(run: models.Run, events: list[dict[str, Any]]) -> int:
    """Move subproblems through the transitions the events imply, in one transaction; returns rows changed."""
    if not events:
        return 0
    spawned = {int(ev["sub"]): int(ev["point"]) for ev in events if ev["type"] == "spawned"}
    if spawned:
        create_point_subproblems(run.id, spawned, actor="manager")
    steps: dict[int, list[tuple[str, str, dict[str, Any], float | None]]] = {}
    shared: dict[tuple[Any, ...], dict[str, Any]] = {}  # equal changes share one dict (fire_bulk groups them)
    for ev in events:
        kind = ev["type"]
        triggers = TRIGGERS.get((kind, ev.get("outcome"))) or TRIGGERS.get(kind)
        if not triggers:
            continue
        worker = ev.get("worker")
        attempt = ev.get("attempt") if kind != "claimed" else None
        key = (worker, attempt, ev.get("reason"))
        changes = shared.get(key)
        if changes is None:
            changes = shared[key] = {"worker": worker}
            if attempt is not None:
                changes["attempts"] = int(attempt)
            if key[2]:
                changes["error"] = key[2]
        t = ev.get("t")
        at = float(t) if t else None  # the queue server's time of the event
        sub = int(ev["sub"])
        seq = steps.get(sub)
        if seq is None:
            seq = steps[sub] = []
        actor = worker or "manager"
        for trigger in triggers:
            if trigger == "lease" and kind == "spawned":  # the split point's lease of its chunk, not its failure
                seq.append((trigger, actor, {"worker": worker}, at))
            else:
                seq.append((trigger, actor, changes, at))
    index_to_id = _subproblem_ids(run.id, list(steps))
    by_id = {index_to_id[sub]: seq for sub, seq in steps.items() if sub in index_to_id}
    return fire_steps(models.Subproblem, by_id, run_id=run.id)


def sync_run(store: Store, run: models.Run, engine: Engine | None = None) -> models.Run:
    """Apply new journal events and worker records; update the run's cursor."""
    events = read_new_events(store, run.journal_cursor)
    if events:
        with models.db.atomic():  # the transitions and the cursor that covers them commit together
            apply_events(run, events)
            models.Run.update(journal_cursor=events[-1]["id"]).where(models.Run.id == run.id).execute()
        run.journal_cursor = events[-1]["id"]
    if engine is not None:
        sync_workers(store, run, engine)
    return run


# what an instance record in the bucket (remote/fleet.py, remote/ec2_fleet.py) says that `mcc analyze`
# prices an instance by: its type, spot or on-demand, its price if the launcher knew it, and its times; and
# which run of a Slurm array task a worker was (remote/slurm_fleet.py: a requeued task runs again, same id)
RECORD_ATTRS = ("instance_type", "spot", "price_per_hour", "vcpus", "region", "zone", "subnet_id", "launched_at",
                "terminated_at", "entry_sha256", "restarts")


def record_attrs(record: dict[str, Any]) -> dict[str, Any]:
    """The ``attrs`` of a worker Resource from its instance record (keys it does not have are left out)."""
    return {k: record[k] for k in RECORD_ATTRS if record.get(k) is not None}


def sync_workers(store: Store, run: models.Run, engine: Engine) -> None:
    """Worker instances the manager created appear as Resources (adopted), deleted once terminated.

    Their ``attrs`` carry what the instance record says (type, spot, price, launch and termination
    times), so a run's cost is computed per instance type from what really ran.
    """
    for key in store.list(INSTANCES):
        record = get_json(store, key) or {}
        worker_key = f"{run.id}/{record.get('worker_id')}"
        attrs = record_attrs(record)
        row = queries.resource_by_key(worker_key)
        if row is None:
            row = create_row(
                models.Resource, actor="manager", reason="launched by the manager", run=run.id, kind=record.get("kind", "instance"),
                name=record.get("worker_id"), backend=record.get("backend", "local"), idempotency_key=worker_key,
                region=record.get("region"), spec={"role": record.get("role", "worker")}, tags=record.get("tags", {}),
                physical_id=record.get("physical_id"), attrs=attrs, state="adopted",
            )
        elif any((row.attrs or {}).get(k) != v for k, v in attrs.items()):  # e.g. terminated since
            row.attrs = {**(row.attrs or {}), **attrs}
            models.Resource.update(attrs=row.attrs, updated_at=time.time()).where(
                models.Resource.id == row.id).execute()
        if "terminated_at" in record and row.state != "deleted":
            engine.destroy(row, record.get("reason") or "terminated by the manager")
