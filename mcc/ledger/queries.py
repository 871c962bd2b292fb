"""Read-side helpers over the ledger (no state writes); each one uses an index.

The ``*_dicts`` helpers and the counts read with plain SQL and build plain dicts: building peewee
model instances costs ~100 µs a row, which `mcc ledger show` over years of runs cannot afford.
"""
from __future__ import annotations

import json
from typing import Any

from mcc.errors import UnknownRun
from mcc.ledger.machines import STATES
from mcc.ledger.models import BaseModel, Event, JSONField, Resource, Run, Subproblem, db


def get_run(run_id: str) -> Run:
    """The run with this id (or the only run whose id starts with it); UnknownRun otherwise."""
    run = Run.get_or_none(Run.id == run_id)
    if run is not None:
        return run
    matches = list(Run.select().where(Run.id.startswith(run_id)).limit(2)) if run_id else []
    if len(matches) == 1:
        return matches[0]
    what = "several runs start with" if matches else "no run has the id"
    raise UnknownRun(
        f"In the ledger at {db.database}, {what} '{run_id}'. See the runs and their ids with `mcc status`."
    )


def list_runs() -> list[Run]:
    """Every run, newest first."""
    return list(Run.select().order_by(Run.created_at.desc(), Run.id.desc()))


def resources(run_id: str | None = None, kind: str | None = None, state: str | None = None) -> list[Resource]:
    """Resources filtered by run, kind and state (None = any), in creation order."""
    query = Resource.select()
    if run_id is not None:
        query = query.where(Resource.run == run_id)
    if kind is not None:
        query = query.where(Resource.kind == kind)
    if state is not None:
        query = query.where(Resource.state == state)
    return list(query.order_by(Resource.id))


def resource_dicts(run_id: str | None = None, kind: str | None = None,
                   state: str | None = None) -> list[dict[str, Any]]:
    """``resources(...)`` as ``row_to_dict`` dicts (JSON columns decoded), read with plain SQL."""
    fields = Resource._meta.sorted_fields
    names = [f.column_name for f in fields]
    docs = [k for k, f in enumerate(fields) if isinstance(f, JSONField)]
    where, params = [], []
    for column, value in (("run_id", run_id), ("kind", kind), ("state", state)):
        if value is not None:
            where.append(f'"{column}" = ?')
            params.append(value)
    # the JSON columns come as NULL in place and all together in one last column, so the JSON of
    # every row is decoded by a single json.loads call
    selected = ", ".join("NULL" if k in docs else f'"{name}"' for k, name in enumerate(names))
    packed = " || ',' || ".join(f"""coalesce("{names[k]}", 'null')""" for k in docs)
    sql = (f"SELECT {selected}, '[' || {packed} || ']' FROM \"resources\""
           + (f" WHERE {' AND '.join(where)}" if where else "") + ' ORDER BY "id"')
    rows = db.execute_sql(sql, params).fetchall()
    decoded = json.loads("[" + ",".join([row[-1] for row in rows]) + "]")
    out = []
    for row, values in zip(rows, decoded):
        row = list(row)
        for k, value in zip(docs, values):
            row[k] = value
        out.append(dict(zip(names, row)))
    return out


def run_transitions(run_id: str) -> list[tuple[str, float]]:
    """``(trigger, at)`` of the run's own events, oldest first (by the events' entity index)."""
    return db.execute_sql(
        'SELECT "trigger", "at" FROM "events" WHERE "entity" = \'run\' AND "entity_id" = ? ORDER BY "id"',
        (run_id,)).fetchall()


def events(run_id: str | None = None, entity: str | None = None, limit: int | None = None) -> list[Event]:
    """Events filtered by run and entity kind, oldest first; with ``limit``, the latest ``limit`` ones."""
    query = Event.select()
    if run_id is not None:
        query = query.where(Event.run_id == run_id)
    if entity is not None:
        query = query.where(Event.entity == entity)
    if limit is None:
        return list(query.order_by(Event.id))
    return list(reversed(query.order_by(Event.id.desc()).limit(limit)))


def subproblem_counts(run_id: str) -> dict[str, int]:
    """Number of subproblems of the run in each state (every state present, 0 when empty)."""
    counts = dict.fromkeys(STATES["subproblem"], 0)
    # kept by the write paths (mcc.ledger.machines): one lookup instead of counting the run's rows
    cursor = db.execute_sql('SELECT "state", "n" FROM "subproblem_counts" WHERE "run_id" = ?', (run_id,))
    counts.update(dict(cursor.fetchall()))
    return counts


def resource_by_key(key: str) -> Resource | None:
    """The resource recorded under this idempotency key, if any."""
    return Resource.get_or_none(Resource.idempotency_key == key)


def failed_subproblems(run_id: str) -> list[Subproblem]:
    """Subproblems of the run that failed: awaiting retry ('failed') or given up ('dead'), by index."""
    return list(Subproblem.select()
                .where((Subproblem.run == run_id) & Subproblem.state.in_(["failed", "dead"]))
                .order_by(Subproblem.index))


def dead_subproblems(run_id: str) -> list[dict[str, Any]]:
    """The run's given-up subproblems as dicts (index, first_point, n_points, attempts, state, error), by index."""
    # sorted here: an ORDER BY "index" would make SQLite walk the run's whole (run_id, index) index
    rows = db.execute_sql(
        'SELECT "index", "first_point", "n_points", "attempts", "state", "error" FROM "subproblems" '
        'WHERE "run_id" = ? AND "state" = \'dead\'', (run_id,)).fetchall()
    names = ("index", "first_point", "n_points", "attempts", "state", "error")
    return [dict(zip(names, row)) for row in sorted(rows)]


def missing_points(run_id: str) -> dict[int, str]:
    """Point index → last error, for every point of the run that has no result.

    THE one place that says which points are missing (the combined file's ``missing`` dataset, the
    final message). Today the unit of failure is the subproblem, so every point of a dead subproblem is
    missing: the point its error names (``point 17: …``) gets that error, its siblings "not computed"
    with it. When points fail alone (issue 12 §1), this function's body becomes the per-point record.
    """
    missing: dict[int, str] = {}
    for sub in dead_subproblems(run_id):
        error = (sub["error"] or "").strip()
        head, _, rest = error.partition(":")
        failed = int(head.split()[-1]) if head.startswith("point ") and head.split()[-1].isdigit() else None
        for index in range(sub["first_point"], sub["first_point"] + sub["n_points"]):
            missing[index] = (rest.strip() or error if index == failed else
                              f"not computed: subproblem {sub['index']} failed every attempt ({error or 'no error recorded'})")
    return missing


def row_to_dict(row: BaseModel) -> dict[str, Any]:
    """A JSON-friendly dict of the row's columns (foreign keys as their id, e.g. ``run_id``)."""
    return {field.column_name: row.__data__.get(field.name) for field in row._meta.sorted_fields}
