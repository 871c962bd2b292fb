"""Journal sync: queue events into subproblem transitions, instance records into worker Resources."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from mcc.report.analysis import instance_rows
from mcc.driver.engine import Engine
from mcc.driver.journal import apply_events, sync_run
from mcc.ledger import Ledger, Resource, Run, Subproblem, create_row, create_subproblems, open_ledger, subproblem_counts
from mcc.providers.local.instance import ProcessProvider
from mcc.work.runspec import instance_key
from mcc.work.stores import LocalStore, put_json


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with open_ledger(tmp_path / "home") as opened:
        yield opened


def test_worker_resources_carry_type_spot_price_and_times(ledger: Ledger, tmp_path: Path) -> None:
    """Records as remote/ec2_fleet.py writes them (one with a price) become instance Resources whose
    attrs `mcc analyze` prices per instance type; a later termination is copied too."""
    run = create_row(Run, backend="aws", project_dir="/p", settings={"aws": {"region": "us-east-1"}})
    store = LocalStore(tmp_path / "bucket")
    base = {"kind": "instance", "role": "worker", "backend": "aws", "launched_at": 1000.0,
            "tags": {"mcc:run": run.id}}
    put_json(store, instance_key("i-1"), {**base, "worker_id": "i-1", "physical_id": "999999@1",
                                          "instance_type": "c5.large", "spot": True, "price_per_hour": 0.04})
    put_json(store, instance_key("i-2"), {**base, "worker_id": "i-2", "physical_id": "999998@1",
                                          "instance_type": "t3.micro", "spot": False})
    engine = Engine(ledger.uuid, "aws", {"instance": ProcessProvider()})
    sync_run(store, run, engine)
    rows = {r.name: r for r in Resource.select().where(Resource.run == run.id)}
    assert rows["i-1"].attrs == {"instance_type": "c5.large", "spot": True, "price_per_hour": 0.04,
                                 "launched_at": 1000.0}
    assert rows["i-2"].attrs == {"instance_type": "t3.micro", "spot": False, "launched_at": 1000.0}
    assert {r.state for r in rows.values()} == {"adopted"}

    put_json(store, instance_key("i-1"), {**base, "worker_id": "i-1", "physical_id": "999999@1",
                                          "instance_type": "c5.large", "spot": True, "price_per_hour": 0.04,
                                          "terminated_at": 4600.0, "reason": "run finished"})
    sync_run(store, run, engine)
    one = Resource.get(Resource.name == "i-1")
    assert one.state == "deleted" and one.attrs["terminated_at"] == 4600.0
    priced = {i["name"]: i for i in instance_rows(run, now=8200.0)}
    assert (priced["i-1"]["instance_type"], priced["i-1"]["spot"], priced["i-1"]["price_per_hour"]) == \
        ("c5.large", True, 0.04)
    assert priced["i-1"]["seconds"] == 3600.0 and priced["i-1"]["cost_usd"] == pytest.approx(0.04)
    assert (priced["i-2"]["instance_type"], priced["i-2"]["spot"]) == ("t3.micro", False)
    sync_run(store, run, engine)  # nothing new: nothing changes
    assert Resource.select().where(Resource.run == run.id).count() == 2


def test_apply_events_claims_acks_failures_and_expiries(ledger: Ledger) -> None:
    run = create_row(Run, backend="local", project_dir="/p")
    create_subproblems(run, [(i, 1) for i in range(6)])
    events = [
        {"id": "1-0", "type": "claimed", "sub": "0", "worker": "w1", "t": "10.5", "attempt": "1"},
        {"id": "1-1", "type": "acked", "sub": "0", "worker": "w1", "t": "11"},
        {"id": "1-2", "type": "claimed", "sub": "1", "worker": "w1", "t": "12", "attempt": "1"},
        {"id": "1-3", "type": "failed", "outcome": "retry", "sub": "1", "worker": "w1", "attempt": "1",
         "reason": "point 1: boom"},
        {"id": "1-4", "type": "claimed", "sub": "2", "worker": "w2", "attempt": "1"},
        {"id": "1-5", "type": "expired", "outcome": "dead", "sub": "2", "attempt": "3"},
        {"id": "1-6", "type": "acked", "sub": "3", "worker": "w2"},  # a late ack of a pending one
        {"id": "1-7", "type": "claimed", "sub": "4", "worker": "w2", "attempt": "1"},
        {"id": "1-8", "type": "preempted", "sub": "4", "worker": "w2"},
        {"id": "1-9", "type": "acked", "sub": "99", "worker": "w2"},  # not a subproblem of this run
        {"id": "1-10", "type": "heartbeat", "sub": "5", "worker": "w2"},  # no transition
    ]
    assert apply_events(run, events) == 11
    subs = {s.index: s for s in Subproblem.select().where(Subproblem.run == run.id)}
    assert [subs[i].state for i in range(6)] == ["done", "pending", "dead", "done", "pending", "pending"]
    assert (subs[1].error, subs[1].attempts, subs[1].worker) == ("point 1: boom", 1, "w1")
    assert (subs[2].attempts, subs[2].worker) == (3, None)
    assert subproblem_counts(run.id) == {"pending": 3, "leased": 0, "done": 2, "failed": 0, "dead": 1}
    assert apply_events(run, events[:2]) == 0  # replayed: nothing is legal any more
