"""The ledger file: modes, pragmas, uuid, migrations, concurrency, locking, volume and the queries."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import peewee
import pytest

from mcc.errors import LedgerBusy, LedgerError, UnknownRun
from mcc.ledger import (
    Event,
    Ledger,
    Resource,
    Run,
    Subproblem,
    create_row,
    create_subproblems,
    dead_subproblems,
    events,
    failed_subproblems,
    fire,
    fire_bulk,
    get_run,
    list_runs,
    models,
    open_ledger,
    recount,
    resource_by_key,
    resource_dicts,
    resources,
    row_to_dict,
    run_transitions,
    subproblem_counts,
)
from mcc.ledger_schema import LATEST, MIGRATIONS, current_version, migrate


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def ledger(home: Path) -> Iterator[Ledger]:
    with open_ledger(home) as opened:
        yield opened


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_file_and_dir_modes(ledger: Ledger, home: Path) -> None:
    create_row(Run, backend="local", project_dir="/p")  # a write, so the -wal file exists
    assert ledger.path == home.resolve() / "ledger.db" and ledger.home == home.resolve()
    assert _mode(home) == 0o700
    assert _mode(ledger.path) == 0o600
    for extra in ("ledger.db-wal", "ledger.db-shm"):
        if (home / extra).exists():
            assert _mode(home / extra) == 0o600, extra
    ledger.close()
    os.chmod(ledger.path, 0o644)
    open_ledger(home).close()
    assert _mode(ledger.path) == 0o600


def test_home_defaults_to_mcc_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCC_HOME", str(tmp_path / "from-env"))
    with open_ledger() as opened:
        assert opened.path == (tmp_path / "from-env" / "ledger.db").resolve()


def test_uuid_is_made_once(home: Path) -> None:
    with open_ledger(home) as first:
        uuid = first.uuid
    with open_ledger(home) as second:
        assert second.uuid == uuid and len(uuid) == 32 and int(uuid, 16) >= 0
        assert models.Meta.select().where(models.Meta.key == "ledger_uuid").count() == 1


def test_pragmas(ledger: Ledger) -> None:
    def pragma(name: str) -> object:
        return ledger.db.execute_sql(f"PRAGMA {name}").fetchone()[0]

    assert pragma("journal_mode") == "wal"
    assert pragma("foreign_keys") == 1
    assert pragma("busy_timeout") == 10000
    assert pragma("synchronous") == 1  # NORMAL
    assert pragma("cache_size") == -64000
    with pytest.raises(peewee.IntegrityError):  # foreign keys are enforced
        create_row(Subproblem, run="r-missing", index=0, first_point=0, n_points=1)


def test_schema_matches_models(ledger: Ledger) -> None:
    """The migrations (plain SQL) and models.py describe the same columns and indexes."""
    for model in models.MODELS:
        table = model._meta.table_name
        info = {r[1]: r for r in ledger.db.execute_sql(f'PRAGMA table_info("{table}")').fetchall()}
        fields = {f.column_name: f for f in model._meta.sorted_fields}
        assert set(info) == set(fields), table
        for name, field in fields.items():
            if not field.primary_key:
                assert bool(info[name][3]) == (not field.null), (table, name)
        indexes = {}
        for _, index_name, unique, *_ in ledger.db.execute_sql(f'PRAGMA index_list("{table}")').fetchall():
            columns = [r[2] for r in ledger.db.execute_sql(f'PRAGMA index_info("{index_name}")').fetchall()]
            indexes[tuple(columns)] = bool(unique)
        for field in model._meta.sorted_fields:
            if field.unique or field.index:
                assert indexes.get((field.column_name,)) == bool(field.unique), (table, field.name)
        for fields_, unique in model._meta.indexes:
            columns = tuple(model._meta.fields[f].column_name for f in fields_)
            assert indexes.get(columns) == unique, (table, columns)


def test_migrates_a_version_1_ledger_and_keeps_its_rows(home: Path) -> None:
    home.mkdir(mode=0o700)
    path = home / "ledger.db"
    old = peewee.SqliteDatabase(str(path))
    assert migrate(old, target=1) == [1]
    assert current_version(old) == 1
    old.execute_sql("INSERT INTO runs (id, state, backend, project_dir, settings, spec, created_at, updated_at) "
                    "VALUES ('r-old', 'running', 'local', '/p', '{\"w\": 2}', '{}', 1.0, 2.0)")
    columns = {r[1] for r in old.execute_sql("PRAGMA table_info(resources)").fetchall()}
    assert "attrs" not in columns
    old.close()

    with open_ledger(home) as ledger:
        assert current_version(ledger.db) == LATEST == MIGRATIONS[-1][0]
        versions = ledger.db.execute_sql("SELECT version, applied_at FROM schema_version ORDER BY version")
        assert [v for v, _ in versions.fetchall()] == list(range(1, LATEST + 1))
        run = get_run("r-old")
        assert (run.state, run.settings, run.journal_cursor) == ("running", {"w": 2}, "")
        res = create_row(Resource, run=run, kind="directory", name="d", backend="local",
                         idempotency_key="k", attrs={"pid": 1})
        assert Resource.get_by_id(res.id).attrs == {"pid": 1}
        assert migrate(ledger.db) == []  # idempotent


def test_migrates_a_version_2_ledger_counts_its_subproblems(home: Path) -> None:
    home.mkdir(mode=0o700)
    old = peewee.SqliteDatabase(str(home / "ledger.db"))
    assert migrate(old, target=2) == [1, 2]
    old.execute_sql("INSERT INTO runs (id, state, backend, project_dir, created_at, updated_at) "
                    "VALUES ('r-old', 'running', 'local', '/p', 1.0, 2.0)")
    for i in range(30):
        old.execute_sql('INSERT INTO subproblems (run_id, "index", first_point, n_points, state, updated_at) '
                        "VALUES ('r-old', ?, ?, 1, ?, 1.0)", (i, i, "done" if i % 3 else "dead"))
    old.close()

    with open_ledger(home) as ledger:
        assert current_version(ledger.db) == LATEST
        assert subproblem_counts("r-old") == {"pending": 0, "leased": 0, "done": 20, "failed": 0, "dead": 10}
        indexes = {r[1] for r in ledger.db.execute_sql('PRAGMA index_list("events")').fetchall()}
        assert "events_at" not in indexes and "events_entity_entity_id" in indexes
        create_subproblems("r-old", [(0, 1)] * 30)  # idempotent: already there, counts unchanged
        assert subproblem_counts("r-old")["done"] == 20
        assert migrate(ledger.db) == []


def test_migrates_a_version_3_ledger_adds_an_empty_prices_table(home: Path) -> None:
    home.mkdir(mode=0o700)
    old = peewee.SqliteDatabase(str(home / "ledger.db"))
    assert migrate(old, target=3) == [1, 2, 3]
    old.execute_sql("INSERT INTO runs (id, state, backend, project_dir, created_at, updated_at) "
                    "VALUES ('r-old', 'done', 'local', '/p', 1.0, 2.0)")
    tables = {r[0] for r in old.execute_sql("SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
    assert "prices" not in tables
    old.close()

    with open_ledger(home) as ledger:
        assert current_version(ledger.db) == LATEST
        assert get_run("r-old").state == "done"
        assert models.Price.select().count() == 0
        row = {"region": "us-east-1", "instance_type": "m5.large", "usd_per_hour": 0.096, "vcpus": None,
               "source": "test", "fetched_at": 1.0}
        models.Price.insert(row).execute()
        with pytest.raises(peewee.IntegrityError):  # (region, instance_type) is the primary key
            models.Price.insert(row).execute()
        assert models.Price.get(models.Price.instance_type == "m5.large").vcpus is None
        assert migrate(ledger.db) == []


def test_migrates_a_version_4_ledger_records_when_it_was_made(home: Path) -> None:
    """v0005: ``meta.created_at`` is the ledger's first migration (when its uuid was minted), old or new."""
    home.mkdir(mode=0o700)
    old = peewee.SqliteDatabase(str(home / "ledger.db"))
    assert migrate(old, target=4) == [1, 2, 3, 4]
    old.execute_sql("UPDATE schema_version SET applied_at = 1000.5 + version")
    old.execute_sql("INSERT INTO meta (key, value) VALUES ('ledger_uuid', 'u-old')")
    old.close()

    with open_ledger(home) as ledger:
        assert current_version(ledger.db) == LATEST
        assert (ledger.uuid, ledger.created_at) == ("u-old", 1001.5)
        assert migrate(ledger.db) == []
    before = time.time()
    with open_ledger(home / "fresh") as fresh:
        assert before - 1 <= fresh.created_at <= time.time()


def test_refuses_a_newer_ledger_and_leaves_it_unchanged(home: Path) -> None:
    open_ledger(home).close()
    path = home / "ledger.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", (LATEST + 1,))
    conn.close()
    before = (path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(home)))
    with pytest.raises(LedgerError) as info:
        open_ledger(home)
    message = str(info.value)
    assert f"version {LATEST + 1}" in message and str(LATEST) in message and "Upgrade mcc" in message
    assert (path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(home))) == before


WRITER = r"""
import sys
from mcc.ledger import Resource, Run, create_row, fire, open_ledger
home, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ledger = open_ledger(home, busy_timeout_ms=60000)
for i in range(n):
    run = create_row(Run, id=f"r-{tag}-{i}", backend="local", project_dir="/p", actor=tag)
    fire(run, "provision", actor=tag)
    res = create_row(Resource, run=run, kind="directory", name=f"{tag}{i}", backend="local",
                     idempotency_key=f"{tag}-{i}", actor=tag)
    fire(res, "begin_create", actor=tag)
print(ledger.uuid)
"""


def test_two_processes_write_concurrently(home: Path) -> None:
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(home), tag, str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    assert outputs[0][0] == outputs[1][0]  # both created/opened the same ledger: one uuid
    with open_ledger(home) as ledger:
        assert ledger.uuid == outputs[0][0].strip()
        assert ledger.db.execute_sql("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert current_version(ledger.db) == LATEST
        assert {r.id for r in Run.select()} == {f"r-{t}-{i}" for t in "ab" for i in range(n)}
        assert Run.select().where(Run.state == "provisioning").count() == 2 * n
        assert Resource.select().where(Resource.state == "creating").count() == 2 * n
        assert Event.select().count() == 2 * n * 4
        applied = ledger.db.execute_sql("SELECT COUNT(*) FROM schema_version").fetchone()[0]
        assert applied == LATEST


HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO meta (key, value) VALUES ('holder', 'x')")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def test_lock_held_past_busy_timeout_raises_ledger_busy(home: Path) -> None:
    open_ledger(home).close()
    path = home / "ledger.db"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        ledger = open_ledger(home, busy_timeout_ms=300)
        started = time.monotonic()
        with pytest.raises(LedgerBusy) as info:
            create_row(Run, backend="local", project_dir="/p")
        assert 0.25 <= time.monotonic() - started < 10
        assert str(path.resolve()) in str(info.value) and "Another mcc process" in str(info.value)
        assert not ledger.db.in_transaction()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    run = create_row(Run, backend="local", project_dir="/p")  # the lock is gone: writes work again
    assert get_run(run.id).state == "draft"
    ledger.close()


def test_opening_another_path_closes_the_previous(tmp_path: Path) -> None:
    first = open_ledger(tmp_path / "one")
    create_row(Run, id="r-one", backend="local", project_dir="/p")
    second = open_ledger(tmp_path / "two")
    assert second.db.database == str(second.path) and Run.select().count() == 0
    first.close()  # no longer bound: must not close the second
    assert not second.db.is_closed()
    second.close()
    assert second.db.is_closed()


def test_create_subproblems_200k_and_counts(ledger: Ledger) -> None:
    run = create_row(Run, backend="local", project_dir="/p")
    chunks = [(7 * i, 7) for i in range(200_000)]
    assert create_subproblems(run, chunks) == 200_000  # its speed is a benchmark's business (bench B5)
    assert subproblem_counts(run.id) == {"pending": 200_000, "leased": 0, "done": 0, "failed": 0, "dead": 0}
    assert Event.select().where(Event.run_id == run.id).count() == 2  # run created + one summary
    last = Subproblem.get((Subproblem.run == run.id) & (Subproblem.index == 199_999))
    assert (last.first_point, last.n_points, last.state, last.attempts) == (7 * 199_999, 7, "pending", 0)
    assert create_subproblems(run, chunks) == 0  # idempotent on resume
    with pytest.raises(LedgerError):
        create_subproblems(run, chunks[:10])
    ids = [i for (i,) in Subproblem.select(Subproblem.id).where(Subproblem.run == run.id).limit(1000).tuples()]
    fire_bulk(Subproblem, "lease", ids, run_id=run.id)
    fire_bulk(Subproblem, "complete", ids[:600], run_id=run.id)
    assert subproblem_counts(run.id) == {"pending": 199_000, "leased": 400, "done": 600, "failed": 0, "dead": 0}


def test_fire_bulk_100k(ledger: Ledger) -> None:
    run = create_row(Run, backend="local", project_dir="/p")
    create_subproblems(run, [(i, 1) for i in range(100_000)])
    ids = [i for (i,) in Subproblem.select(Subproblem.id).where(Subproblem.run == run.id).tuples()]
    assert fire_bulk(Subproblem, "lease", ids, run_id=run.id, actor="sync") == 100_000  # timed by bench B5
    assert subproblem_counts(run.id)["leased"] == 100_000
    assert Event.select().where((Event.run_id == run.id) & (Event.trigger == "lease")).count() == 100_000


def test_queries(ledger: Ledger) -> None:
    older = create_row(Run, id="r-20260101-aaaaaa", backend="local", project_dir="/p", created_at=1.0)
    newer = create_row(Run, id="r-20260102-bbbbbb", backend="aws", project_dir="/q", settings={"n": 1})
    assert [r.id for r in list_runs()] == [newer.id, older.id]
    assert get_run(newer.id).settings == {"n": 1}
    assert get_run("r-20260102").id == newer.id  # a unique prefix is enough
    for missing in ("r-nope", "r-2026"):  # unknown, and ambiguous
        with pytest.raises(UnknownRun) as info:
            get_run(missing)
        assert "mcc status" in str(info.value) and missing in str(info.value)

    bucket = create_row(Resource, run=newer, kind="bucket", name="b", backend="aws", idempotency_key="kb",
                        tags={"mcc:run": newer.id})
    inst = create_row(Resource, run=newer, kind="instance", name="i", backend="aws", idempotency_key="ki")
    fire(inst, "begin_create")
    assert [r.id for r in resources(run_id=newer.id)] == [bucket.id, inst.id]
    assert [r.id for r in resources(kind="instance", state="creating")] == [inst.id]
    assert resources(run_id=older.id) == []
    assert resource_by_key("kb").id == bucket.id and resource_by_key("nope") is None

    create_subproblems(newer, [(0, 5), (5, 5), (10, 5)])
    subs = list(Subproblem.select().where(Subproblem.run == newer.id).order_by(Subproblem.index))
    for sub in subs[:2]:
        fire(sub, "lease")
        fire(sub, "fail", error="boom", attempts=1)
    fire(subs[1], "give_up")
    assert [(s.index, s.state) for s in failed_subproblems(newer.id)] == [(0, "failed"), (1, "dead")]

    trail = events(run_id=newer.id)
    assert [e.trigger for e in trail][:2] == ["create", "create"] and trail == sorted(trail, key=lambda e: e.id)
    latest = events(run_id=newer.id, limit=2)
    assert [e.id for e in latest] == [e.id for e in trail[-2:]]
    assert {e.entity for e in events(entity="resource")} == {"resource"}
    assert len(events()) == Event.select().count()

    as_dict = row_to_dict(inst)
    assert as_dict["run_id"] == newer.id and as_dict["state"] == "creating" and as_dict["tags"] == {}
    assert json.loads(json.dumps([row_to_dict(r) for r in (newer, bucket, subs[0], trail[0])]))


def _counted(run_id: str) -> dict[str, int]:
    counts = dict.fromkeys(["pending", "leased", "done", "failed", "dead"], 0)
    counts.update(Subproblem.select(Subproblem.state, peewee.fn.COUNT(Subproblem.id))
                  .where(Subproblem.run == run_id).group_by(Subproblem.state).tuples())
    return counts


def test_subproblem_counts_follow_every_write_path(ledger: Ledger) -> None:
    """create_subproblems, create_row, fire and fire_bulk (grouped and per-row changes, skipped rows,
    two runs) keep the counts equal to counting the rows; recount rebuilds them after plain SQL."""
    runs = [create_row(Run, backend="local", project_dir=f"/p{k}") for k in range(2)]
    for run in runs:
        create_subproblems(run, [(i, 1) for i in range(50)])
    extra = create_row(Subproblem, run=runs[1], index=50, first_point=50, n_points=1)
    ids = {run.id: [i for (i,) in Subproblem.select(Subproblem.id).where(Subproblem.run == run.id).tuples()]
           for run in runs}
    a, b = ids[runs[0].id], ids[runs[1].id]
    fire_bulk(Subproblem, "lease", a[:30] + b[:10], run_id=runs[0].id,
              changes_by_id={i: {"worker": f"w{i % 3}"} for i in a[:30]})
    fire_bulk(Subproblem, "fail", a[:20] + a[40:], run_id=runs[0].id, reason="lost",
              changes_by_id={i: {"error": f"e{i}"} for i in a[:5]})  # a[40:] pending: skipped
    fire_bulk(Subproblem, "give_up", a[:5], run_id=runs[0].id)
    fire_bulk(Subproblem, "retry", a[5:20], run_id=runs[0].id)
    fire_bulk(Subproblem, "complete", a + b[:3], run_id=runs[0].id)
    fire(extra, "lease")
    fire(Subproblem.get_by_id(b[12]), "lease")
    for run in runs:
        assert subproblem_counts(run.id) == _counted(run.id), run.id
    assert subproblem_counts(runs[0].id) == {"pending": 0, "leased": 0, "done": 45, "failed": 0, "dead": 5}
    assert Subproblem.get_by_id(a[0]).error == f"e{a[0]}"
    assert {Subproblem.get_by_id(i).worker for i in a[20:30]} == {"w0", "w1", "w2"}

    ledger.db.execute_sql("UPDATE subproblems SET state = 'done' WHERE run_id = ?", (runs[1].id,))
    recount(runs[1].id)
    assert subproblem_counts(runs[1].id) == _counted(runs[1].id) == {**_counted(runs[0].id), "done": 51, "dead": 0}
    recount()
    assert subproblem_counts(runs[0].id)["dead"] == 5

    res = [create_row(Resource, kind="instance", name=f"i{k}", backend="local", idempotency_key=f"k{k}")
           for k in range(3)]  # unhashable (JSON) changes take the per-row path
    assert fire_bulk(Resource, "begin_create", [r.id for r in res], run_id=None,
                     changes_by_id={r.id: {"attrs": {"n": [r.id]}} for r in res[:2]}) == 3
    assert [Resource.get_by_id(r.id).attrs for r in res] == [{"n": [res[0].id]}, {"n": [res[1].id]}, {}]


def test_summary_reads(ledger: Ledger) -> None:
    """The plain-SQL readers behind `mcc ledger show` agree with the model-based ones."""
    run = create_row(Run, backend="local", project_dir="/p")
    fire(run, "provision")
    fire(run, "launch", reason="go")
    create_row(Resource, run=run, kind="bucket", name="b", backend="local", idempotency_key="kb",
               spec={"path": "/b"}, tags={"mcc:run": run.id}, attrs={"size": [1, 2]})
    create_row(Resource, kind="instance", name="i", backend="aws", idempotency_key="ki", state="adopted")
    for kind, state in [(None, None), ("bucket", None), (None, "adopted"), ("instance", "planned")]:
        assert resource_dicts(kind=kind, state=state) == [row_to_dict(r) for r in resources(kind=kind, state=state)]
    assert resource_dicts(run_id=run.id)[0]["attrs"] == {"size": [1, 2]}
    assert [t for t, _ in run_transitions(run.id)] == ["create", "provision", "launch"]
    create_subproblems(run, [(2 * i, 2) for i in range(5)])
    subs = list(Subproblem.select().where(Subproblem.run == run.id).order_by(Subproblem.index.desc()))
    for sub in subs[:3]:
        fire(sub, "lease")
        fire(sub, "fail", error=f"e{sub.index}", attempts=2)
    for sub in subs[:2]:
        fire(sub, "give_up")
    assert dead_subproblems(run.id) == [
        {"index": i, "first_point": 2 * i, "n_points": 2, "attempts": 2, "state": "dead", "error": f"e{i}"}
        for i in (3, 4)]


def test_a_file_that_is_not_a_ledger_is_refused(home: Path) -> None:
    home.mkdir(mode=0o700)
    (home / "ledger.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError) as info:
        open_ledger(home)
    assert "not a readable mcc ledger" in str(info.value)


def test_threads_fire_on_their_own_connections(ledger: Ledger) -> None:
    import threading

    run = create_row(Run, backend="local", project_dir="/p")
    create_subproblems(run, [(i, 1) for i in range(200)])
    subs = list(Subproblem.select().where(Subproblem.run == run.id))
    errors: list[BaseException] = []

    def work(part: list[Subproblem]) -> None:
        try:
            for sub in part:
                fire(sub, "lease", worker=threading.current_thread().name)
                fire(sub, "complete")
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(subs[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert subproblem_counts(run.id)["done"] == 200
    assert Event.select().where(Event.run_id == run.id).count() == 2 + 400
