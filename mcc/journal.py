"""Sync the manager's journal (queue events in the bucket) and worker records into the ledger.

Events are applied in stream order; each maps to subproblem transitions from the machine's table,
applied in bulk. The run's ``journal_cursor`` remembers the last applied event, so a sync resumes
exactly where the previous one stopped, and a segment rewritten by a restarted manager is harmless.
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from mcc.engine import Engine
from mcc.ledger import create_row, fire_bulk, models, queries
from mcc.runspec import INSTANCES, JOURNAL
from mcc.storage import Store, get_json

# queue event → subproblem triggers (outcome-dependent for failures and expiries)
TRIGGERS = {
    "claimed": ["lease"],
    "acked": ["complete"],
    "preempted": ["release"],
    ("failed", "retry"): ["fail", "retry"],
    ("failed", "dead"): ["fail", "give_up"],
    ("expired", "retry"): ["fail", "retry"],
    ("expired", "dead"): ["fail", "give_up"],
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


def apply_events(run: models.Run, events: list[dict[str, Any]]) -> int:
    """Move subproblems through the transitions the events imply; returns rows changed."""
    if not events:
        return 0
    steps: dict[int, list[tuple[str, dict[str, Any], str, float | None]]] = defaultdict(list)
    for ev in events:
        kind = ev["type"]
        triggers = TRIGGERS.get((kind, ev.get("outcome"))) or TRIGGERS.get(kind) or []
        changes: dict[str, Any] = {"worker": ev.get("worker")}
        if "attempt" in ev and kind != "claimed":
            changes["attempts"] = int(ev["attempt"])
        if ev.get("reason"):
            changes["error"] = ev["reason"]
        at = float(ev["t"]) if ev.get("t") else None  # the queue server's time of the event
        for trigger in triggers:
            steps[int(ev["sub"])].append((trigger, changes, ev.get("worker") or "manager", at))
    index_to_id = dict(
        models.Subproblem.select(models.Subproblem.index, models.Subproblem.id)
        .where((models.Subproblem.run == run.id) & models.Subproblem.index.in_(list(steps)))
        .tuples()
    ) if len(steps) < 5000 else dict(
        models.Subproblem.select(models.Subproblem.index, models.Subproblem.id)
        .where(models.Subproblem.run == run.id).tuples()
    )
    changed, round_no = 0, 0
    while True:  # round k applies the k-th step of every subproblem, grouped by trigger and actor
        groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
        times: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
        for sub, seq in steps.items():
            if round_no < len(seq) and sub in index_to_id:
                trigger, changes, actor, at = seq[round_no]
                groups[trigger, actor][index_to_id[sub]] = changes
                if at is not None:
                    times[trigger, actor][index_to_id[sub]] = at
        if not groups:
            return changed
        for (trigger, actor), by_id in groups.items():
            changed += fire_bulk(models.Subproblem, trigger, list(by_id), run_id=run.id, actor=actor,
                                 changes_by_id=by_id, at_by_id=times.get((trigger, actor)))
        round_no += 1


def sync_run(store: Store, run: models.Run, engine: Engine | None = None) -> models.Run:
    """Apply new journal events and worker records; update the run's cursor."""
    events = read_new_events(store, run.journal_cursor)
    if events:
        apply_events(run, events)
        models.Run.update(journal_cursor=events[-1]["id"]).where(models.Run.id == run.id).execute()
        run.journal_cursor = events[-1]["id"]
    if engine is not None:
        sync_workers(store, run, engine)
    return run


def sync_workers(store: Store, run: models.Run, engine: Engine) -> None:
    """Worker instances the manager created appear as Resources (adopted), deleted once terminated."""
    for key in store.list(INSTANCES):
        record = get_json(store, key) or {}
        worker_key = f"{run.id}/{record.get('worker_id')}"
        row = queries.resource_by_key(worker_key)
        if row is None:
            row = create_row(
                models.Resource, actor="manager", reason="launched by the manager", run=run.id, kind="instance",
                name=record.get("worker_id"), backend=record.get("backend", "local"), idempotency_key=worker_key,
                spec={"role": "worker"}, tags=record.get("tags", {}), physical_id=record.get("physical_id"),
                attrs={"launched_at": record.get("launched_at")}, state="adopted",
            )
        if "terminated_at" in record and row.state != "deleted":
            engine.destroy(row, record.get("reason") or "terminated by the manager")
