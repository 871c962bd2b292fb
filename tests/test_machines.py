"""The three state machines against a real SQLite ledger: every legal move, illegal ones, conflicts,
bulk moves and rollback."""
from __future__ import annotations

import re
from collections import deque
from pathlib import Path
from typing import Iterator

import peewee
import pytest

from mcc.errors import IllegalTransition, TransitionConflict
from mcc.ledger import (
    STATES,
    TERMINAL_RUN_STATES,
    TRANSITIONS,
    Event,
    Ledger,
    Resource,
    Run,
    Subproblem,
    create_row,
    create_subproblems,
    fire,
    fire_bulk,
    legal_triggers,
    open_ledger,
)
from mcc.ledger.machines import INITIAL, bound_names
from mcc.ledger.models import MODEL_OF

# The contract, written out independently of machines.py: "trigger: sources -> dest".
CONTRACT = {
    "run": """
        provision: draft -> provisioning
        launch: provisioning -> launching
        start: launching -> running
        combine: running -> combining
        collect: combining -> collecting
        complete: collecting -> completed
        complete_with_failures: collecting -> completed_with_failures
        stop_budget: collecting launching -> stopped_budget
        raise_budget: stopped_budget -> provisioning
        fail: provisioning launching running combining collecting -> failed
        cancel: draft provisioning launching running combining collecting -> cancelled
        retry: failed cancelled -> provisioning
        retry_dead: completed_with_failures -> provisioning
        relaunch: running combining -> launching
        clean: draft provisioning launching running combining collecting completed
               completed_with_failures stopped_budget failed cancelled -> cleaning
        cleaned: cleaning -> cleaned
    """,
    "resource": """
        begin_create: planned failed -> creating
        created: creating -> active
        create_failed: creating -> failed
        adopt: creating -> active
        begin_delete: active adopted creating failed planned -> deleting
        deleted: deleting -> deleted
        delete_failed: deleting -> failed
    """,
    "subproblem": """
        lease: pending -> leased
        complete: leased pending failed -> done
        fail: leased -> failed
        retry: failed -> pending
        give_up: failed -> dead
        release: leased -> pending
        revive: dead -> pending
    """,
}


def _parse(text: str) -> set[tuple[str, str, str]]:
    """{(source, trigger, dest)} from the rules above."""
    return {(src, trigger, dest) for trigger, sources, dest in re.findall(r"(\w+):([^:]*?)->\s*(\w+)", text)
            for src in sources.split()}


EXPECTED = {entity: _parse(text) for entity, text in CONTRACT.items()}
LEGAL = sorted((entity, src, trig, dest) for entity, moves in EXPECTED.items() for src, trig, dest in moves)


def _illegal_sample() -> list[tuple[str, str, str]]:
    """For every state of every machine, the first trigger it does not allow, plus an unknown one."""
    sample = []
    for entity, moves in EXPECTED.items():
        triggers = sorted({t for _, t, _ in moves})
        for state in STATES[entity]:
            allowed = {t for s, t, _ in moves if s == state}
            sample += [(entity, state, t) for t in triggers if t not in allowed][:1]
        sample.append((entity, INITIAL[entity], "explode"))
    return sample


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with open_ledger(tmp_path / "home") as opened:
        yield opened


def _path_to(entity: str, state: str) -> list[str]:
    """Shortest list of triggers from the initial state to ``state`` (breadth-first over the contract)."""
    seen, todo = {INITIAL[entity]: []}, deque([INITIAL[entity]])
    while todo:
        here = todo.popleft()
        for src, trig, dest in sorted(EXPECTED[entity]):
            if src == here and dest not in seen:
                seen[dest] = seen[here] + [trig]
                todo.append(dest)
    return seen[state]


def _new(entity: str, n: int = 0):
    """A fresh row of the entity in its initial state (with the run it needs)."""
    if entity == "run":
        return create_row(Run, backend="local", project_dir="/p")
    run = create_row(Run, backend="local", project_dir="/p")
    if entity == "resource":
        return create_row(Resource, run=run, kind="directory", name=f"d{n}", backend="local",
                          idempotency_key=f"key-{run.id}-{n}")
    return create_row(Subproblem, run=run, index=n, first_point=10 * n, n_points=10)


def _row_in(entity: str, state: str):
    """A row put into ``state`` only through legal transitions (or created adopted)."""
    if (entity, state) == ("resource", "adopted"):
        run = create_row(Run, backend="local", project_dir="/p")
        return create_row(Resource, run=run, kind="instance", name="found", backend="local",
                          idempotency_key=f"adopted-{run.id}", state="adopted", physical_id="i-1")
    row = _new(entity)
    for trigger in _path_to(entity, state):
        fire(row, trigger)
    assert row.state == state
    return row


def test_declared_transitions_match_the_contract() -> None:
    for entity, moves in EXPECTED.items():
        declared = {(src, t["trigger"], t["dest"]) for t in TRANSITIONS[entity] for src in t["source"]}
        assert declared == moves, entity
        assert {s for s, _, _ in moves} | {d for _, _, d in moves} <= set(STATES[entity])
    assert TERMINAL_RUN_STATES <= set(STATES["run"])
    assert legal_triggers("run", "cleaned") == []
    assert legal_triggers("subproblem", "failed") == ["complete", "retry", "give_up"]


@pytest.mark.parametrize("entity", sorted(EXPECTED))
def test_bound_names_do_not_collide_with_peewee(entity: str) -> None:
    model = MODEL_OF[entity]
    clashes = [name for name in bound_names(entity) if hasattr(model, name)]
    assert clashes == []


@pytest.mark.parametrize("entity,source,trigger,dest", LEGAL, ids=["-".join(c[:3]) for c in LEGAL])
def test_every_legal_transition(ledger: Ledger, entity: str, source: str, trigger: str, dest: str) -> None:
    row = _row_in(entity, source)
    mark = Event.select(peewee.fn.MAX(Event.id)).scalar()
    fire(row, trigger, actor="tester", reason=f"because {trigger}")
    assert row.state == dest
    assert type(row).get_by_id(row.id).state == dest
    assert row.dirty_fields == []  # a later save() cannot write the state behind fire's back
    (event,) = Event.select().where(Event.id > mark)
    assert (event.entity, event.entity_id, event.source, event.dest, event.trigger, event.actor, event.reason) == (
        entity, str(row.id), source, dest, trigger, "tester", f"because {trigger}")
    assert event.run_id == (row.id if entity == "run" else row.run_id)


@pytest.mark.parametrize("entity,state,trigger", _illegal_sample(), ids="-".join)
def test_illegal_transition_raises_and_writes_nothing(ledger: Ledger, entity: str, state: str,
                                                      trigger: str) -> None:
    row = _row_in(entity, state)
    model = type(row)
    before = (Event.select().count(), model.get_by_id(row.id).updated_at)
    with pytest.raises(IllegalTransition) as info:
        fire(row, trigger)
    message = str(info.value)
    assert entity in message and str(row.id) in message and state in message and trigger in message
    assert row.state == state
    assert (Event.select().count(), model.get_by_id(row.id).updated_at) == before
    assert model.get_by_id(row.id).state == state


@pytest.mark.parametrize("entity", sorted(EXPECTED))
def test_stale_row_raises_conflict(ledger: Ledger, entity: str) -> None:
    fresh = _new(entity)
    stale = type(fresh).get_by_id(fresh.id)
    trigger = legal_triggers(entity, fresh.state)[0]
    fire(fresh, trigger)
    events = Event.select().count()
    with pytest.raises(TransitionConflict) as info:
        fire(stale, trigger)
    assert fresh.state in str(info.value)
    assert Event.select().count() == events
    assert stale.state == INITIAL[entity]
    assert type(fresh).get_by_id(fresh.id).state == fresh.state


def test_changes_are_written_with_the_transition(ledger: Ledger) -> None:
    res = _row_in("resource", "creating")
    fire(res, "created", physical_id="i-123", attrs={"pid": 42})
    stored = Resource.get_by_id(res.id)
    assert (stored.physical_id, stored.attrs, stored.state) == ("i-123", {"pid": 42}, "active")
    assert stored.active_at is not None and res.active_at == stored.active_at
    run = _row_in("run", "running")
    fire(run, "fail", reason="manager lost")
    assert Run.get_by_id(run.id).reason == "manager lost"


@pytest.mark.parametrize("changes", [{"no_such_column": 1}, {"state": "done"}, {"id": 7}])
def test_bad_changes_write_nothing(ledger: Ledger, changes: dict) -> None:
    sub = _new("subproblem")
    events = Event.select().count()
    with pytest.raises(ValueError):
        fire(sub, "lease", **changes)
    assert Subproblem.get_by_id(sub.id).state == "pending" and sub.state == "pending"
    assert Event.select().count() == events


def test_failed_event_insert_rolls_back_the_transition(ledger: Ledger) -> None:
    sub = _new("subproblem")
    run = _row_in("run", "provisioning")
    ledger.db.execute_sql("CREATE TEMP TRIGGER events_fail BEFORE INSERT ON events "
                          "BEGIN SELECT RAISE(ABORT, 'no events today'); END")
    try:
        with pytest.raises(peewee.IntegrityError):
            fire(sub, "lease", worker="w1", attempts=1)  # the UPDATE ran, then the Event insert failed
        with pytest.raises(peewee.IntegrityError):
            fire_bulk(Subproblem, "lease", [sub.id], run_id=sub.run_id, changes_by_id={sub.id: {"worker": "w"}})
        with pytest.raises(peewee.IntegrityError):
            fire(run, "launch")
        with pytest.raises(peewee.IntegrityError):
            create_row(Run, id="r-never", backend="local", project_dir="/p")
    finally:
        ledger.db.execute_sql("DROP TRIGGER temp.events_fail")
    stored = Subproblem.get_by_id(sub.id)
    assert (stored.state, stored.worker, stored.attempts) == ("pending", None, 0)
    assert (sub.state, sub.worker) == ("pending", None)
    assert Run.get_by_id(run.id).state == "provisioning" and run.state == "provisioning"
    assert Run.get_or_none(Run.id == "r-never") is None


def _subproblems(n: int) -> tuple[Run, list[int]]:
    run = create_row(Run, backend="local", project_dir="/p")
    create_subproblems(run, [(10 * i, 10) for i in range(n)])
    ids = [i for (i,) in Subproblem.select(Subproblem.id).where(Subproblem.run == run.id)
           .order_by(Subproblem.index).tuples()]
    return run, ids


def test_fire_bulk_moves_only_legal_rows(ledger: Ledger) -> None:
    run, ids = _subproblems(1200)
    leased = ids[:700]
    assert fire_bulk(Subproblem, "lease", leased, run_id=run.id, actor="w1") == 700
    first_event = Event.select(peewee.fn.MAX(Event.id)).scalar()
    changes = {i: {"attempts": 1, "error": f"boom {i}", "worker": "w1"} for i in ids}
    moved = fire_bulk(Subproblem, "fail", ids + ids[:3], run_id=run.id, actor="sync", reason="lost",
                      changes_by_id=changes)
    assert moved == 700
    new = list(Event.select().where(Event.id > first_event))
    assert len(new) == 700 and {e.entity_id for e in new} == {str(i) for i in leased}
    assert {(e.source, e.dest, e.trigger, e.actor, e.reason, e.run_id) for e in new} == {
        ("leased", "failed", "fail", "sync", "lost", run.id)}
    rows = {s.id: s for s in Subproblem.select().where(Subproblem.run == run.id)}
    assert all(rows[i].state == "failed" and rows[i].attempts == 1 and rows[i].error == f"boom {i}"
               for i in leased)
    assert all(rows[i].state == "pending" and rows[i].attempts == 0 and rows[i].error is None for i in ids[700:])


def test_fire_bulk_records_each_rows_own_source(ledger: Ledger) -> None:
    run, ids = _subproblems(9)
    fire_bulk(Subproblem, "lease", ids[3:], run_id=run.id)
    fire_bulk(Subproblem, "fail", ids[6:], run_id=run.id)
    fire_bulk(Subproblem, "give_up", ids[8:], run_id=run.id)  # one dead row: complete skips it
    mark = Event.select(peewee.fn.MAX(Event.id)).scalar()
    assert fire_bulk(Subproblem, "complete", ids, run_id=run.id) == 8
    sources = {int(e.entity_id): e.source for e in Event.select().where(Event.id > mark)}
    assert sources == {**{i: "pending" for i in ids[:3]}, **{i: "leased" for i in ids[3:6]},
                       **{i: "failed" for i in ids[6:8]}}
    assert Subproblem.get_by_id(ids[8]).state == "dead"


def test_fire_bulk_rejects_unknown_trigger(ledger: Ledger) -> None:
    run, ids = _subproblems(2)
    with pytest.raises(IllegalTransition):
        fire_bulk(Subproblem, "provision", ids, run_id=run.id)


def test_create_row_starts_in_initial_state_with_one_event(ledger: Ledger) -> None:
    run = create_row(Run, backend="local", project_dir="/p", actor="cli", reason="mcc run")
    assert run.state == "draft" and run.id.startswith("r-")
    (event,) = Event.select().where(Event.entity_id == run.id)
    assert (event.trigger, event.source, event.dest, event.actor) == ("create", None, "draft", "cli")
    found = create_row(Resource, run=run, kind="instance", name="w", backend="aws", idempotency_key="k",
                       state="adopted", actor="sweep")
    assert found.state == "adopted" and found.active_at is not None
    with pytest.raises(IllegalTransition):
        create_row(Resource, run=run, kind="instance", name="w", backend="aws", idempotency_key="k2",
                   state="active")
    with pytest.raises(IllegalTransition):
        create_row(Run, backend="local", project_dir="/p", state="running")
    assert Resource.get_or_none(Resource.idempotency_key == "k2") is None


def test_fire_steps_equals_fire_bulk_round_by_round(ledger: Ledger) -> None:
    """fire_steps (one write per row) ends where fire_bulk applied one step per round ends: same states,
    columns, counts, and per row the same transitions with their actor, time and order."""
    import random

    from mcc.ledger import subproblem_counts
    from mcc.ledger.steps import fire_steps

    rng = random.Random(7)
    triggers = [t["trigger"] for t in TRANSITIONS["subproblem"]]
    runs = []
    for _ in range(2):
        run, ids = _subproblems(300)
        start = [rng.choice([[], ["lease"], ["lease", "fail"], ["lease", "fail", "give_up"]]) for _ in ids]
        for k, i in enumerate(ids):
            for trigger in start[k] if not runs else runs[0][2][k]:
                fire_bulk(Subproblem, trigger, [i], run_id=run.id)
        runs.append((run, ids, start))
    shared = [{"worker": f"w{k}", "attempts": k} for k in range(3)]
    plans = [[(rng.choice(triggers), f"w{rng.randrange(2)}", rng.choice(shared), 1000.0 + rng.random())
              for _ in range(rng.randrange(5))] for _ in range(300)]
    (run_a, ids_a, _), (run_b, ids_b, _) = runs
    mark = Event.select(peewee.fn.MAX(Event.id)).scalar()
    moved = fire_steps(Subproblem, {i: plan for i, plan in zip(ids_a, plans)}, run_id=run_a.id)
    expected = 0
    for k in range(max(map(len, plans))):
        for (trigger, actor, changes, at), i in [(p[k], i) for p, i in zip(plans, ids_b) if k < len(p)]:
            expected += fire_bulk(Subproblem, trigger, [i], run_id=run_b.id, actor=actor,
                                  changes_by_id={i: changes}, at_by_id={i: at})
    assert moved == expected > 0

    def view(run: Run, ids: list[int]) -> list[tuple]:
        rows = {s.id: s for s in Subproblem.select().where(Subproblem.run == run.id)}
        trail: dict[int, list[tuple]] = {i: [] for i in ids}
        for e in Event.select().where((Event.id > mark) & (Event.run_id == run.id)).order_by(Event.id):
            trail[int(e.entity_id)].append((e.trigger, e.source, e.dest, e.actor, e.at))
        return [(rows[i].state, rows[i].worker, rows[i].attempts, trail[i]) for i in ids]

    assert view(run_a, ids_a) == view(run_b, ids_b)
    assert subproblem_counts(run_a.id) == subproblem_counts(run_b.id)
    with pytest.raises(IllegalTransition):
        fire_steps(Subproblem, {ids_a[0]: [("provision", "x", {}, None)]}, run_id=run_a.id)


def test_fire_steps_on_resources_stamps_and_unhashable_changes(ledger: Ledger) -> None:
    from mcc.ledger.steps import fire_steps

    rows = [create_row(Resource, kind="instance", name=f"i{k}", backend="local", idempotency_key=f"s{k}")
            for k in range(3)]
    steps = {r.id: [("begin_create", "eng", {"attrs": {"n": [k]}}, None), ("created", "eng", {}, None)]
             for k, r in enumerate(rows[:2])}
    steps[rows[2].id] = [("begin_create", "eng", {}, None), ("created", "eng", {}, 5.0), ("begin_delete", "x", {}, None)]
    assert fire_steps(Resource, steps, run_id=None) == 7
    got = {r.id: r for r in Resource.select()}
    assert [got[r.id].state for r in rows] == ["active", "active", "deleting"]
    assert [got[r.id].attrs for r in rows] == [{"n": [0]}, {"n": [1]}, {}]
    assert all(got[r.id].active_at is not None for r in rows)
    trail = list(Event.select().where(Event.entity_id == str(rows[2].id)).order_by(Event.id))
    assert [(e.trigger, e.run_id) for e in trail] == [("create", None), ("begin_create", None), ("created", None),
                                                      ("begin_delete", None)]
    assert trail[2].at == 5.0
