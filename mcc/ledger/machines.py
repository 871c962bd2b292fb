"""The three lifecycles (run, resource, subproblem) as data, and the only code that writes ``state``.

A transition is one SQLite transaction: the machine checks the trigger and computes the
destination, a conditional ``UPDATE ... WHERE id=? AND state=<old>`` moves the row (0 rows →
``TransitionConflict``) and an ``Event`` row records it — or nothing happens at all.
"""
from __future__ import annotations

import copy
import threading
import time
from typing import Any, Iterable, Sequence

from transitions import Machine

from mcc.errors import IllegalTransition, LedgerError, TransitionConflict
from mcc.ledger.models import ENTITY_OF, BaseModel, Event, JSONField, Run, Subproblem, db, new_run_id

_ALIVE_RUN = ["provisioning", "launching", "running", "combining", "collecting"]
_RUN_STATES = [
    "draft", "provisioning", "launching", "running", "combining", "collecting", "completed",
    "completed_with_failures", "stopped_budget", "failed", "cancelled", "cleaning", "cleaned",
]

STATES: dict[str, list[str]] = {
    "run": _RUN_STATES,
    "resource": ["planned", "creating", "active", "deleting", "deleted", "failed", "adopted"],
    "subproblem": ["pending", "leased", "done", "failed", "dead"],
}
INITIAL: dict[str, str] = {"run": "draft", "resource": "planned", "subproblem": "pending"}


def _t(trigger: str, source: str | list[str], dest: str) -> dict[str, Any]:
    return {"trigger": trigger, "source": [source] if isinstance(source, str) else source, "dest": dest}


TRANSITIONS: dict[str, list[dict[str, Any]]] = {
    "run": [
        _t("provision", "draft", "provisioning"),
        _t("launch", "provisioning", "launching"),
        _t("start", "launching", "running"),
        _t("combine", "running", "combining"),
        _t("collect", "combining", "collecting"),
        _t("complete", "collecting", "completed"),
        _t("complete_with_failures", "collecting", "completed_with_failures"),
        # the budget ran out: the partial results are collected (or, when even a new manager's minimum would
        # cross it, left in the bucket); `mcc resume RUN --budget N` goes on
        _t("stop_budget", ["collecting", "launching"], "stopped_budget"),
        _t("raise_budget", "stopped_budget", "provisioning"),
        _t("fail", _ALIVE_RUN, "failed"),
        _t("cancel", ["draft", *_ALIVE_RUN], "cancelled"),
        _t("retry", ["failed", "cancelled"], "provisioning"),
        _t("retry_dead", "completed_with_failures", "provisioning"),  # `mcc resume RUN --retry-dead`
        _t("relaunch", ["running", "combining"], "launching"),  # the manager died; start it again
        _t("clean", [s for s in _RUN_STATES if s not in ("cleaning", "cleaned")], "cleaning"),
        _t("cleaned", "cleaning", "cleaned"),
    ],
    "resource": [
        _t("begin_create", ["planned", "failed"], "creating"),
        _t("created", "creating", "active"),
        _t("create_failed", "creating", "failed"),
        _t("adopt", "creating", "active"),  # find-before-create found it
        _t("begin_delete", ["active", "adopted", "creating", "failed", "planned"], "deleting"),
        _t("deleted", "deleting", "deleted"),
        _t("delete_failed", "deleting", "failed"),
    ],
    "subproblem": [
        _t("lease", "pending", "leased"),
        _t("complete", ["leased", "pending", "failed"], "done"),  # a late ack after a requeue
        _t("fail", "leased", "failed"),
        _t("retry", "failed", "pending"),
        _t("give_up", "failed", "dead"),
        _t("release", "leased", "pending"),  # preemption: no attempt spent
        _t("revive", "dead", "pending"),  # `mcc resume RUN --retry-dead`: attempts start again
    ],
}

TERMINAL_RUN_STATES: frozenset[str] = frozenset(
    {"completed", "completed_with_failures", "stopped_budget", "failed", "cancelled", "cleaned"}
)

# (entity, trigger) -> {source: dest}, derived from TRANSITIONS for bulk moves and lookups.
PLAN: dict[str, dict[str, dict[str, str]]] = {
    entity: {
        t["trigger"]: {src: t["dest"] for tt in rules if tt["trigger"] == t["trigger"] for src in tt["source"]}
        for t in rules
    }
    for entity, rules in TRANSITIONS.items()
}

MACHINES: dict[str, Machine] = {
    entity: Machine(
        model=None, states=STATES[entity], transitions=copy.deepcopy(TRANSITIONS[entity]),
        initial=INITIAL[entity], model_attribute="state", auto_transitions=False,
    )
    for entity in STATES
}
_BIND_LOCK = threading.Lock()  # add_model/remove_model mutate the shared class-level machine
_BATCH = 500
# Timestamp columns stamped when a row enters a state.
_STAMPS: dict[tuple[str, str], str] = {
    ("resource", "active"): "active_at", ("resource", "adopted"): "active_at",
    ("resource", "deleted"): "deleted_at",
}


def legal_triggers(entity: str, state: str) -> list[str]:
    """Triggers allowed from ``state``, in declaration order."""
    return [trigger for trigger, moves in PLAN[entity].items() if state in moves]


def bound_names(entity: str) -> list[str]:
    """Attribute names ``add_model`` puts on a row (they must not collide with peewee's)."""
    names = ["trigger", "may_trigger"]
    for trigger in PLAN[entity]:
        names += [trigger, f"may_{trigger}"]
    return names + [f"is_{state}" for state in STATES[entity]]


def _entity(model: type) -> str:
    try:
        return ENTITY_OF[model]
    except KeyError:
        raise TypeError(f"{model.__name__} has no state machine") from None


def _illegal(entity: str, row_id: Any, state: str, trigger: str) -> IllegalTransition:
    allowed = ", ".join(legal_triggers(entity, state)) or "none"
    return IllegalTransition(
        f"{entity} {row_id} is in state '{state}'; trigger '{trigger}' is not allowed there "
        f"(allowed: {allowed})."
    )


def _destination(row: BaseModel, entity: str, trigger: str) -> str:
    """Run the class-level machine on the row in memory; return the destination, leave row.state."""
    old = row.state
    if old not in STATES[entity] or trigger not in PLAN[entity]:
        raise _illegal(entity, row.id, old, trigger)
    machine = MACHINES[entity]
    with _BIND_LOCK:
        machine.add_model(row, initial=old)
        try:
            if not getattr(row, f"may_{trigger}")():
                raise _illegal(entity, row.id, old, trigger)
            getattr(row, trigger)()
            return row.state
        finally:
            machine.remove_model(row)
            for name in bound_names(entity):
                row.__dict__.pop(name, None)
            _set(row, {"state": old})


def _set(row: BaseModel, values: dict[str, Any]) -> None:
    """Update the in-memory row without marking fields dirty (a later save() must not write state)."""
    for name, value in values.items():
        setattr(row, name, value)
        row._dirty.discard(name)


def _columns(model: type[BaseModel], changes: dict[str, Any]) -> dict[str, Any]:
    fields = model._meta.fields
    bad = sorted(n for n in changes if n not in fields or n in ("id", "state"))
    if bad:
        raise ValueError(f"{model.__name__} has no writable column {', '.join(bad)}")
    return {fields[n]: v for n, v in changes.items()}


def _run_id_of(row: BaseModel) -> str | None:
    return row.id if isinstance(row, Run) else row.run_id


def fire(row: BaseModel, trigger: str, *, actor: str = "local", reason: str | None = None,
         **changes: Any) -> BaseModel:
    """Move ``row`` by ``trigger`` and write ``changes`` with it, in one transaction with its Event.

    For a Run, ``reason`` is also stored in ``Run.reason`` (why it is in its current state).
    Raises IllegalTransition (nothing written) or TransitionConflict (someone moved it first).
    """
    model = type(row)
    entity = _entity(model)
    old = row.state
    dest = _destination(row, entity, trigger)
    now = time.time()
    written = {"updated_at": now, **changes}
    if (entity, dest) in _STAMPS:
        written.setdefault(_STAMPS[entity, dest], now)
    if entity == "run":
        written["reason"] = reason
    values = {model.state: dest, **_columns(model, written)}
    with db.atomic():
        moved = model.update(values).where((model.id == row.id) & (model.state == old)).execute()
        if moved != 1:
            current = model.select(model.state).where(model.id == row.id).scalar()
            raise TransitionConflict(
                f"{entity} {row.id} was expected in state '{old}' but is now '{current}' "
                f"(another process moved it); reload it and decide again."
            )
        Event.insert(at=now, entity=entity, entity_id=str(row.id), run_id=_run_id_of(row),
                     trigger=trigger, source=old, dest=dest, actor=actor, reason=reason).execute()
        if entity == "subproblem":
            _count({(row.run_id, old): -1, (row.run_id, dest): 1})
    _set(row, {"state": dest, **written})
    return row


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


_EVENT_INSERT = ('INSERT INTO "events" ("at", "entity", "entity_id", "run_id", "trigger", "source", "dest", '
                 '"actor", "reason") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)')


_COUNT_UPSERT = ('INSERT INTO "subproblem_counts" ("run_id", "state", "n") VALUES (?, ?, ?) '
                 'ON CONFLICT ("run_id", "state") DO UPDATE SET "n" = "n" + excluded."n"')


def _count(deltas: dict[tuple[str, str], int]) -> None:
    """Add ``deltas`` ((run_id, state) → change) to the subproblem counts (inside the caller's transaction)."""
    rows = [(run_id, state, n) for (run_id, state), n in deltas.items() if n]
    if rows:
        db.executemany(_COUNT_UPSERT, rows)


_EVENT_ROWS = 3000  # rows per multi-row INSERT (3 variables each: well under SQLite's 32766)


def _insert_events(events: Sequence[tuple[Any, ...]]) -> None:
    """Insert Event rows given as ``_EVENT_INSERT`` tuples, in order, inside the caller's transaction.

    Consecutive events sharing entity, trigger, source, dest, actor and reason (a bulk move's are
    all alike) go in together through :func:`_insert_alike`.
    """
    start = 0
    while start < len(events):
        first = events[start]
        shared = (first[1], first[4], first[5], first[6], first[7], first[8])
        end = start + 1
        while end < len(events) and (events[end][1], *events[end][4:]) == shared:
            end += 1
        _insert_alike(shared, [v for event in events[start:end] for v in (event[0], event[2], event[3])])
        start = end


def _insert_alike(shared: tuple[Any, ...], flat: list[Any]) -> None:
    """Events that share (entity, trigger, source, dest, actor, reason), given as a flat list of
    at, entity_id, run_id, at, entity_id, run_id, ...: one ``INSERT ... SELECT ... FROM (VALUES ...)``
    per 3,000 rows with the shared values bound once, about half the cost of an executemany row each."""
    for start in range(0, len(flat), 3 * _EVENT_ROWS):
        part = flat[start:start + 3 * _EVENT_ROWS]
        db.execute_sql(
            'INSERT INTO "events" ("at", "entity", "entity_id", "run_id", "trigger", "source", "dest", '
            '"actor", "reason") SELECT column1, ?, column2, column3, ?, ?, ?, ?, ? FROM (VALUES '
            + ", ".join(["(?, ?, ?)"] * (len(part) // 3)) + ")", [*shared, *part])


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def fire_bulk(model: type[BaseModel], trigger: str, ids: Iterable[Any], *, run_id: str | None,
              actor: str = "local", reason: str | None = None,
              changes_by_id: dict[Any, dict[str, Any]] | None = None,
              at_by_id: dict[Any, float] | None = None) -> int:
    """Move every row of ``ids`` that is in a legal source state; skip the others; return the count.

    One transaction; one Event per moved row. ``changes_by_id`` (id → columns) is written, in the
    same UPDATE, for the moved rows only. ``at_by_id`` (id → UNIX seconds) gives a row's Event the
    time the transition really happened (e.g. the queue server's time of a journal event) instead
    of now. Set-based: the rows' states are read in batches of 500 ids, then rows with the same
    source state and equal changes move in one ``UPDATE ... WHERE id IN (...) AND state = ?``, and
    the Events go in with one ``executemany`` (plain SQL: peewee's query builder alone would take
    seconds for 100k rows).
    """
    entity = _entity(model)
    moves = PLAN[entity].get(trigger)
    if not moves:
        raise IllegalTransition(f"{entity} has no trigger '{trigger}' (triggers: {', '.join(PLAN[entity])}).")
    ids = list(dict.fromkeys(ids))
    changes = changes_by_id or {}
    at = at_by_id or {}
    now, sources, table = time.time(), list(moves), model._meta.table_name
    groups: dict[tuple[str, tuple[tuple[str, Any], ...]], list[Any]] = {}  # (source, changes) -> ids
    singles: list[tuple[str, Any]] = []  # rows whose changes cannot be grouped (unhashable values)
    events: list[tuple[Any, ...]] = []
    counted = entity == "subproblem"
    deltas: dict[tuple[str, str], int] = {}  # (run_id, state) -> change of the subproblem counts
    items_of: dict[int, tuple[tuple[str, Any], ...]] = {}  # id(changes dict) -> its items (callers share dicts)
    selected = '"id", "state", "run_id"' if counted else '"id", "state"'
    with db.atomic():
        for batch in _batches(ids, _BATCH):
            found = db.execute_sql(
                f'SELECT {selected} FROM "{table}" '
                f'WHERE "id" IN ({_marks(len(batch))}) AND "state" IN ({_marks(len(sources))})',
                [*batch, *sources]).fetchall()
            if counted:
                for _, state, row_run in found:
                    deltas[row_run, state] = deltas.get((row_run, state), 0) - 1
                    deltas[row_run, moves[state]] = deltas.get((row_run, moves[state]), 0) + 1
            for row_id, state, *_ in found:
                row = changes.get(row_id)
                items = (items_of.get(id(row)) or items_of.setdefault(id(row), tuple(row.items()))) if row else ()
                try:
                    groups.setdefault((state, items), []).append(row_id)
                except TypeError:
                    singles.append((state, row_id))
        for (source, items), group in groups.items():
            _move(model, entity, source, moves[source], dict(items), group, now, reason)
        for source, row_id in singles:
            _move(model, entity, source, moves[source], changes[row_id], [row_id], now, reason)
        moved = [*((source, group) for (source, _), group in groups.items()),
                 *((source, [row_id]) for source, row_id in singles)]
        for source, group in moved:
            dest = moves[source]
            events += [(at.get(i, now), entity, str(i), i if entity == "run" else run_id, trigger, source,
                        dest, actor, reason) for i in group]
        _insert_events(events)
        _count(deltas)
    return len(events)


def _state_columns(entity: str, dest: str, now: float, reason: str | None) -> dict[str, Any]:
    columns: dict[str, Any] = {"state": dest, "updated_at": now}
    if (entity, dest) in _STAMPS:
        columns[_STAMPS[entity, dest]] = now
    if entity == "run":
        columns["reason"] = reason
    return columns


def _move(model: type[BaseModel], entity: str, source: str, dest: str, row_changes: dict[str, Any],
          ids: list[Any], now: float, reason: str | None) -> None:
    """``UPDATE ... SET <state columns + row_changes> WHERE id IN (ids) AND state = source``, 500 ids
    at a time; the changes are checked and JSON-encoded here."""
    columns = _state_columns(entity, dest, now, reason)
    for field, value in _columns(model, row_changes).items():
        columns[field.column_name] = field.db_value(value) if isinstance(field, JSONField) else value
    assignments = ", ".join(f'"{name}" = ?' for name in columns)
    values = list(columns.values())
    for batch in _batches(ids, _BATCH):
        db.execute_sql(f'UPDATE "{model._meta.table_name}" SET {assignments} '
                       f'WHERE "id" IN ({_marks(len(batch))}) AND "state" = ?', [*values, *batch, source])


def recount(run_id: str | None = None) -> None:
    """Rebuild the subproblem counts of one run (or of all) from the rows: for ledgers whose rows were
    changed by plain SQL outside these functions (e.g. a benchmark's data preparation)."""
    where, params = ('WHERE "run_id" = ?', (run_id,)) if run_id is not None else ("", ())
    with db.atomic():
        db.execute_sql(f'DELETE FROM "subproblem_counts" {where}', params)
        db.execute_sql(f'INSERT INTO "subproblem_counts" ("run_id", "state", "n") SELECT "run_id", "state", '
                       f'COUNT(*) FROM "subproblems" {where} GROUP BY "run_id", "state"', params)


def create_row(model: type[BaseModel], *, actor: str = "local", reason: str | None = None,
               **fields: Any) -> BaseModel:
    """Insert a Run/Resource/Subproblem in its initial state with a "create" Event, in one transaction.

    A Resource found by a sweep may be inserted directly with ``state="adopted"``. A Run without an
    ``id`` gets ``new_run_id()``.
    """
    entity = _entity(model)
    state = fields.pop("state", None) or INITIAL[entity]
    if state != INITIAL[entity] and (entity, state) != ("resource", "adopted"):
        raise IllegalTransition(f"a new {entity} starts in '{INITIAL[entity]}', not '{state}'.")
    now = time.time()
    fields.setdefault("updated_at", now)
    if "created_at" in model._meta.fields:
        fields.setdefault("created_at", now)
    if (entity, state) in _STAMPS:
        fields.setdefault(_STAMPS[entity, state], now)
    if entity == "run":
        fields.setdefault("id", new_run_id(now))
        fields.setdefault("reason", reason)
    with db.atomic():
        row = model.create(state=state, **fields)
        Event.insert(at=now, entity=entity, entity_id=str(row.id), run_id=_run_id_of(row),
                     trigger="create", source=None, dest=state, actor=actor, reason=reason).execute()
        if entity == "subproblem":
            _count({(row.run_id, state): 1})
    return row


def create_subproblems(run: Run | str, chunks: Sequence[tuple[int, int]], *, actor: str = "local",
                       reason: str | None = None) -> int:
    """Insert one pending Subproblem per ``(first_point, n_points)`` chunk, indexed 0..n-1.

    One transaction and one summary Event. Idempotent: if the run already has exactly
    ``len(chunks)`` subproblems nothing is written and 0 is returned; another count → LedgerError.
    """
    run_id = run.id if isinstance(run, Run) else str(run)
    now = time.time()
    with db.atomic():
        existing = Subproblem.select().where(Subproblem.run == run_id).count()
        if existing:
            if existing == len(chunks):
                return 0
            raise LedgerError(f"run {run_id} already has {existing} subproblems, not {len(chunks)}.")
        db.executemany(
            'INSERT INTO "subproblems" ("run_id", "index", "first_point", "n_points", "state", '
            '"attempts", "updated_at") VALUES (?, ?, ?, ?, \'pending\', 0, ?)',
            ((run_id, i, int(first), int(n), now) for i, (first, n) in enumerate(chunks)),
        )
        Event.insert(at=now, entity="subproblem", entity_id="*", run_id=run_id, trigger="create",
                     source=None, dest="pending", actor=actor,
                     reason=reason or f"{len(chunks)} subproblems").execute()
        _count({(run_id, "pending"): len(chunks)})
    return len(chunks)


def create_point_subproblems(run_id: str, points: dict[int, int], *, actor: str = "local",
                             reason: str | None = None) -> int:
    """Insert the one-point subproblems a partial ack split off (index -> its point), pending, one
    "create" Event each; indexes the run already has are skipped. Returns the number inserted.

    A failing point of a chunk goes on alone (``mcc.work.queue.Queue.ack_partial``): its row is created
    when the journal first names it, then moved like any subproblem's.
    """
    if not points:
        return 0
    now = time.time()
    with db.atomic():
        have: set[int] = set()
        wanted = sorted(points)
        for batch in _batches(wanted, _BATCH):
            have.update(i for (i,) in db.execute_sql(
                f'SELECT "index" FROM "subproblems" WHERE "run_id" = ? AND "index" IN ({_marks(len(batch))})',
                (run_id, *batch)).fetchall())
        new = [i for i in wanted if i not in have]
        if not new:
            return 0
        db.executemany(
            'INSERT INTO "subproblems" ("run_id", "index", "first_point", "n_points", "state", '
            '"attempts", "updated_at") VALUES (?, ?, ?, 1, \'pending\', 0, ?)',
            ((run_id, i, int(points[i]), now) for i in new),
        )
        ids = dict(db.execute_sql(
            'SELECT "index", "id" FROM "subproblems" WHERE "run_id" = ? AND "index" >= ?', (run_id, new[0])).fetchall())
        db.executemany(_EVENT_INSERT, [
            (now, "subproblem", str(ids[i]), run_id, "create", None, "pending", actor,
             reason or f"point {points[i]} split off its chunk") for i in new])
        _count({(run_id, "pending"): len(new)})
    return len(new)
