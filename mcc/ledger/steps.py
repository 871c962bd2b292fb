"""Several transitions per row in one pass: what a journal sync needs (claimed, then acked, ...).

``fire_steps`` gives every row its own sequence of triggers and walks each sequence through the
machine's table (``PLAN``) exactly as calling ``fire_bulk`` once per step would — a step that is not
legal from the row's state at that point is skipped, the next one is tried from the same state —
but writes each row once: one ``UPDATE ... WHERE id IN (...) AND state = <where it started>`` per
group of rows with the same start, end and changes, one Event per transition taken, and the
subproblem counts, all in one transaction.
"""
from __future__ import annotations

import time
from typing import Any

from mcc.errors import IllegalTransition
from mcc.ledger.machines import _BATCH, _STAMPS, PLAN, _batches, _count, _entity, _insert_alike, _marks, _move
from mcc.ledger.models import BaseModel, db

# one step of a row: (trigger, actor, changes written with it, UNIX time of the event or None = now)
Step = tuple[str, str, dict[str, Any], "float | None"]


def fire_steps(model: type[BaseModel], steps_by_id: dict[Any, list[Step]], *, run_id: str | None,
               reason: str | None = None) -> int:
    """Apply each row's steps in order (illegal ones skipped); returns the number of transitions taken.

    Rows that do not exist are skipped. ``changes`` of the steps taken are written (a later step's
    value wins), with the state they lead to, in the same UPDATE. A step whose changes carry an
    ``error`` records it as its Event's reason (else ``reason``).
    """
    entity = _entity(model)
    plan = PLAN[entity]
    for seq in steps_by_id.values():
        for trigger, *_ in seq:
            if trigger not in plan:
                raise IllegalTransition(f"{entity} has no trigger '{trigger}' (triggers: {', '.join(plan)}).")
    now, table = time.time(), model._meta.table_name
    counted = entity == "subproblem"
    selected = '"id", "state", "run_id"' if counted else '"id", "state"'
    # events of every row's k-th transition, in rounds as fire_bulk would: per round, (trigger, source,
    # dest, actor) -> flat [at, entity_id, run_id, at, ...]
    rounds: list[dict[tuple[str, str, str, str], list[Any]]] = []
    groups: dict[tuple[str, str, tuple[tuple[str, Any], ...]], list[Any]] = {}  # (start, end, changes) -> ids
    singles: list[tuple[str, str, dict[str, Any], Any]] = []  # unhashable changes: one UPDATE each
    deltas: dict[tuple[str, str], int] = {}
    # (start, end, ids of the caller's changes dicts taken, stamps) -> that group's id list, or None for
    # unhashable changes; the caller's dicts live through this call, so their ids stay theirs
    slots: dict[tuple[Any, ...], list[Any] | None] = {}
    stamp_of = {dest: column for (kind, dest), column in _STAMPS.items() if kind == entity}
    is_run = entity == "run"  # a run's events carry its own id as run_id
    ids = list(steps_by_id)
    with db.atomic():
        for batch in _batches(ids, _BATCH):
            found = db.execute_sql(f'SELECT {selected} FROM "{table}" WHERE "id" IN ({_marks(len(batch))})',
                                   list(batch)).fetchall()
            for row_id, start, *row_run in found:
                state, taken, applied, stamps = start, 0, [], ()
                for trigger, actor, changes, at in steps_by_id[row_id]:
                    dest = plan[trigger].get(state)
                    if dest is None:
                        continue
                    if taken == len(rounds):
                        rounds.append({})
                    why = changes.get("error") or reason  # a failure's event says what failed
                    alike = rounds[taken].get((trigger, state, dest, actor, why))
                    if alike is None:
                        alike = rounds[taken][trigger, state, dest, actor, why] = []
                    alike += (now if at is None else at, str(row_id), row_id if is_run else run_id)
                    if dest in stamp_of:
                        stamps += (stamp_of[dest],)
                    applied.append(changes)
                    state, taken = dest, taken + 1
                if not taken:
                    continue
                if counted:
                    deltas[row_run[0], start] = deltas.get((row_run[0], start), 0) - 1
                    deltas[row_run[0], state] = deltas.get((row_run[0], state), 0) + 1
                key = (start, state, stamps, *map(id, applied))
                if key not in slots:
                    merged: dict[str, Any] = {}
                    for changes in applied:
                        merged.update(changes)
                    merged.update(dict.fromkeys(stamps, now))
                    try:
                        slots[key] = groups.setdefault((start, state, tuple(merged.items())), [])
                    except TypeError:
                        slots[key] = None
                slot = slots[key]
                if slot is not None:
                    slot.append(row_id)
                else:
                    merged = {}
                    for changes in applied:
                        merged.update(changes)
                    singles.append((start, state, {**merged, **dict.fromkeys(stamps, now)}, row_id))
        for (start, end, items), group in groups.items():
            _move(model, entity, start, end, dict(items), group, now, reason)
        for start, end, changes, row_id in singles:
            _move(model, entity, start, end, changes, [row_id], now, reason)
        moved = 0
        for alikes in rounds:
            for (trigger, source, dest, actor, why), flat in alikes.items():
                _insert_alike((entity, trigger, source, dest, actor, why), flat)
                moved += len(flat) // 3
        _count(deltas)
    return moved
