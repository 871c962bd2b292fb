"""The write-ahead rule: kill between any two steps, resume, and get exactly one resource per key."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mcc.driver.engine import Engine
from mcc.ledger import create_row, fire, models, open_ledger, queries
from mcc.providers.base import ownership_tags
from mcc.providers.local import processes
from mcc.providers.local.bucket import DirectoryProvider
from mcc.providers.local.instance import ProcessProvider
from tests.conftest import wait_for

SLEEPER = {"argv": [sys.executable, "-c", "import time; time.sleep(600)"]}


@pytest.fixture
def engine(tmp_path: Path):
    ledger = open_ledger(tmp_path / "home")
    eng = Engine(ledger.uuid, "local", {"instance": ProcessProvider(), "directory": DirectoryProvider(ledger.home)})
    yield eng
    for proc in processes.find_tagged({"mcc:ledger": ledger.uuid}):
        processes.terminate(proc, grace=1)
    ledger.close()


def live(engine: Engine) -> list[processes.ProcessId]:
    return processes.find_tagged({"mcc:ledger": engine.ledger_uuid})


def test_ensure_is_idempotent(engine: Engine) -> None:
    first = engine.ensure(None, "instance", "a", "key-a", SLEEPER)
    again = engine.ensure(None, "instance", "a", "key-a", SLEEPER)
    assert first.id == again.id and first.state == "active" and first.physical_id == again.physical_id
    assert [str(p) for p in live(engine)] == [first.physical_id]
    assert [e.trigger for e in queries.events(entity="resource")] == ["create", "begin_create", "created"]


def test_crash_after_create_call_before_record_is_adopted(engine: Engine) -> None:
    """The call succeeded but the process died before writing `active`: resume finds it by its tags."""
    tags = ownership_tags(engine.ledger_uuid, None, "key-b", "b")
    row = create_row(models.Resource, kind="instance", name="b", backend="local", idempotency_key="key-b",
                     spec=SLEEPER, tags=tags, attrs={}, state="planned")
    row = fire(row, "begin_create")
    made = engine.provider("instance").create(engine.spec_of(row))  # ... and here the laptop died
    resumed = engine.ensure(None, "instance", "b", "key-b", SLEEPER)
    assert resumed.state == "active" and resumed.physical_id == made.physical_id
    assert len(live(engine)) == 1
    assert queries.events(entity="resource")[-1].trigger == "adopt"


def test_crash_before_create_call_creates_once(engine: Engine) -> None:
    tags = ownership_tags(engine.ledger_uuid, None, "key-c", "c")
    row = create_row(models.Resource, kind="instance", name="c", backend="local", idempotency_key="key-c",
                     spec=SLEEPER, tags=tags, attrs={}, state="planned")
    fire(row, "begin_create")  # ... and here the laptop died, before the call
    resumed = engine.ensure(None, "instance", "c", "key-c", SLEEPER)
    assert resumed.state == "active" and len(live(engine)) == 1


def test_current_adopts_what_a_failed_create_made_and_replaces_a_failed_delete(engine: Engine) -> None:
    """A create that failed after its call went out (the process runs, the row says ``failed``): the next
    ``current`` adopts it under the same key. A row whose delete failed is replaced under a new key."""
    tags = ownership_tags(engine.ledger_uuid, None, "role", "role")
    row = fire(create_row(models.Resource, kind="instance", name="role", backend="local", idempotency_key="role",
                          spec=SLEEPER, tags=tags, attrs={}, state="planned"), "begin_create")
    made = engine.provider("instance").create(engine.spec_of(row))  # the call went out...
    fire(row, "create_failed", reason="the wait after the call failed")  # ...and its wait did not
    again = engine.current(None, "instance", "role", SLEEPER)
    assert (again.idempotency_key, again.state, again.physical_id) == ("role", "active", made.physical_id)
    assert len(live(engine)) == 1
    failed = fire(fire(again, "begin_delete"), "delete_failed", reason="the terminate call failed")
    replaced = engine.current(None, "instance", "role", SLEEPER)
    assert replaced.idempotency_key == "role-2" and replaced.state == "active"
    assert queries.resource_by_key("role").state == "failed" == failed.state  # left for clean to finish


def test_destroy_resumes_and_missing_counts_as_deleted(engine: Engine) -> None:
    row = engine.ensure(None, "instance", "d", "key-d", SLEEPER)
    row = fire(row, "begin_delete")  # ... died before the delete call
    processes.terminate(processes.ProcessId.parse(row.physical_id))  # and the resource vanished anyway
    done = engine.destroy(row)
    assert done.state == "deleted" and done.deleted_at is not None
    assert engine.destroy(done).state == "deleted"  # idempotent


def test_sweep_adopts_only_this_ledgers_resources(engine: Engine) -> None:
    stray = engine.provider("instance").create(engine.spec_of(create_row(
        models.Resource, kind="instance", name="stray", backend="local", idempotency_key="key-s", spec=SLEEPER,
        tags=ownership_tags(engine.ledger_uuid, None, "key-s", "stray"), attrs={}, state="planned")))
    foreign = processes.spawn(SLEEPER["argv"], tags={"mcc:ledger": "another-ledger", "mcc:kind": "instance"})
    try:
        adopted = engine.sweep()
        assert [r.physical_id for r in adopted] == [stray.physical_id]
        assert adopted[0].state == "adopted"
        engine.destroy_all(adopted, "test")
        assert live(engine) == [] and processes.is_alive(foreign)
    finally:
        processes.terminate(foreign, grace=1)


def test_find_before_create_never_adopts_another_ledgers_process() -> None:
    """Two ledgers may use one idempotency key (seen: the same test in two test processes); a process of one
    is never the other's on resume."""
    from mcc.providers.base import ResourceSpec

    provider = ProcessProvider()
    mine, theirs = ("ledger-a", "ledger-b")
    spec = ResourceSpec("instance", "n0", "key-0", ownership_tags(theirs, None, "key-0", "n0"), dict(SLEEPER))
    found = provider.create(spec)
    try:
        other = ResourceSpec("instance", "n0", "key-0", ownership_tags(mine, None, "key-0", "n0"), dict(SLEEPER))
        assert provider.find(other) is None
        assert provider.find(spec).physical_id == found.physical_id
    finally:
        provider.delete(found.physical_id, {})


CHILD = textwrap.dedent("""
    import sys
    from mcc.driver.engine import Engine
    from mcc.ledger import open_ledger
    from mcc.providers.local.instance import ProcessProvider
    ledger = open_ledger(sys.argv[1])
    engine = Engine(ledger.uuid, "local", {"instance": ProcessProvider()})
    print("ready", flush=True)
    for i in range(int(sys.argv[2])):
        engine.ensure(None, "instance", f"n{i}", f"key-{i}", {"argv": [sys.executable, "-c", "import time; time.sleep(600)"]})
        print(i, flush=True)
""")


@pytest.mark.parametrize("kill_after", [0, 3, 7])
def test_sigkill_during_ensure_then_resume_exactly_one_each(tmp_path: Path, kill_after: int) -> None:
    home, n = tmp_path / "home", 10
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(home), str(n)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        for _ in range(kill_after):
            child.stdout.readline()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
        ledger = open_ledger(home)
        engine = Engine(ledger.uuid, "local", {"instance": ProcessProvider()})
        rows = [engine.ensure(None, "instance", f"n{i}", f"key-{i}", SLEEPER) for i in range(n)]
        alive = wait_for(lambda: sorted(str(p) for p in live(engine)) if len(live(engine)) >= n else None,
                         timeout=20, what="all processes")
        assert alive == sorted(r.physical_id for r in rows)  # no duplicate, no orphan
        assert {r.state for r in rows} == {"active"}
        assert engine.destroy_all(rows, "test") == [] and live(engine) == []
    finally:
        if child.poll() is None:
            child.kill()
        for proc in processes.find_tagged({"mcc:ledger": open_ledger(home).uuid}):
            processes.terminate(proc, grace=1)
