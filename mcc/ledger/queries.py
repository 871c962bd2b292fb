"""Read-side helpers over the ledger (no state writes); each one uses an index."""
from __future__ import annotations

from typing import Any

from peewee import fn

from mcc.errors import UnknownRun
from mcc.ledger.machines import STATES
from mcc.ledger.models import BaseModel, Event, Resource, Run, Subproblem, db


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
    query = (Subproblem.select(Subproblem.state, fn.COUNT(Subproblem.id))
             .where(Subproblem.run == run_id).group_by(Subproblem.state).tuples())
    counts.update({state: n for state, n in query})
    return counts


def resource_by_key(key: str) -> Resource | None:
    """The resource recorded under this idempotency key, if any."""
    return Resource.get_or_none(Resource.idempotency_key == key)


def failed_subproblems(run_id: str) -> list[Subproblem]:
    """Subproblems of the run that failed: awaiting retry ('failed') or given up ('dead'), by index."""
    return list(Subproblem.select()
                .where((Subproblem.run == run_id) & Subproblem.state.in_(["failed", "dead"]))
                .order_by(Subproblem.index))


def row_to_dict(row: BaseModel) -> dict[str, Any]:
    """A JSON-friendly dict of the row's columns (foreign keys as their id, e.g. ``run_id``)."""
    return {field.column_name: row.__data__.get(field.name) for field in row._meta.sorted_fields}
