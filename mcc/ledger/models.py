"""Peewee models of the ledger, on one deferred database bound by ``open_ledger``.

Timestamps are float UNIX seconds. The schema itself is owned by the numbered migrations in
``mcc.ledger_schema``; ``tests/test_ledger.py`` checks that the two agree. Only
``mcc.ledger.machines`` writes a ``state`` column.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import peewee

from peewee import (
    AutoField,
    CharField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)

from mcc.errors import LedgerBusy, MccError

SQLITE_BUSY = 5  # primary result code; extended codes (BUSY_SNAPSHOT, BUSY_TIMEOUT...) share its low byte


def _sqlite_error(exc: BaseException) -> sqlite3.Error | None:
    """The sqlite3 error behind a (possibly peewee-wrapped) exception."""
    seen: BaseException | None = exc
    for _ in range(8):  # wrappers are shallow; never loop on a cyclic chain
        if seen is None:
            break
        if isinstance(seen, sqlite3.Error):
            return seen
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = inner or seen.__cause__ or seen.__context__
    return None


def is_busy(exc: BaseException) -> bool:
    """True when SQLite gave up waiting for another connection's lock (by result code, not text)."""
    err = _sqlite_error(exc)
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == SQLITE_BUSY


SQLITE_READONLY, SQLITE_FULL = 8, 13


def ledger_error(exc: BaseException, path: Path, busy_timeout_ms: int) -> MccError | None:
    """The MccError for a SQLite failure that is the world's doing (None for anything else: a bug)."""
    err = _sqlite_error(exc)
    code = getattr(err, "sqlite_errorcode", None)
    if code is None:
        return None
    primary = code & 0xFF
    if primary == SQLITE_BUSY:
        return busy_error(path, busy_timeout_ms)
    if primary == SQLITE_FULL:
        from mcc.work.diskspace import disk_full

        return disk_full(path)
    if primary == SQLITE_READONLY:
        from mcc.ledger.db import read_only_error

        return read_only_error(path, str(err))
    from mcc.ledger.backup import damaged_error, is_damage

    if is_damage(err):
        return damaged_error(path, str(err))
    return None


def busy_error(path: Any, busy_timeout_ms: int) -> LedgerBusy:
    """The message for a lock held by another process past the busy timeout."""
    return LedgerBusy(
        f"Another mcc process is using the ledger at {path} and held it for more than "
        f"{busy_timeout_ms / 1000:g} s. Wait for that command to finish (or stop it), then run this one again."
    )


class LedgerDatabase(SqliteDatabase):
    """SqliteDatabase that turns "database is locked" into ``LedgerBusy`` naming the ledger file.

    Created with ``lock_type="IMMEDIATE"``: every top-level transaction takes the write lock when it
    begins, so two processes wait for each other (busy timeout) instead of failing mid-transaction.
    """

    busy_timeout_ms: int = 10_000

    @contextmanager
    def _busy_guard(self) -> Iterator[None]:
        """SQLite's refusals, classified once by result code: busy, read-only, full disk, damaged file."""
        try:
            yield
        except MccError:
            raise
        except Exception as exc:
            known = ledger_error(exc, self.ledger_path, self.busy_timeout_ms)
            if known is None:
                raise
            raise known from exc

    @property
    def ledger_path(self) -> Path:
        """The ledger file (the database name without a read-only URI's ``file:`` and query)."""
        name = str(self.database)
        if name.startswith("file:"):
            name = urllib.parse.unquote(name[len("file:"):].split("?", 1)[0])
        return Path(name)

    def connect(self, reuse_if_open: bool = False) -> bool:
        with self._busy_guard():
            return super().connect(reuse_if_open)

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        with self._busy_guard():
            return super().execute_sql(sql, params)

    def executemany(self, sql: str, seq_of_params: Iterable[Sequence[Any]]) -> Any:
        """``cursor.executemany`` with peewee's exception types: the fast path for bulk writes."""
        with self._busy_guard(), peewee.__exception_wrapper__:
            return self.cursor().executemany(sql, seq_of_params)

    def begin(self, lock_type: str | None = None) -> None:
        with self._busy_guard():
            super().begin(lock_type)

    def commit(self) -> None:
        with self._busy_guard():
            super().commit()

    def rollback(self) -> None:
        """Roll back, unless SQLite already did (it rolls a transaction back itself on a full disk): the
        caller then sees the error that ended the transaction, not "no transaction is active"."""
        if not self.is_closed() and not self.connection().in_transaction:
            return
        with self._busy_guard():
            super().rollback()


db = LedgerDatabase(None, lock_type="IMMEDIATE")


class JSONField(TextField):
    """A JSON document in a TEXT column (sorted keys, so equal values store equal text)."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(Model):
    class Meta:
        database = db
        legacy_table_names = False


class Meta(BaseModel):
    """Key/value facts about the ledger itself (``ledger_uuid``, ``created_at``)."""

    key = CharField(primary_key=True)
    value = TextField()

    class Meta:
        table_name = "meta"


def new_run_id(now: float | None = None) -> str:
    """A fresh run id such as ``r-20261126-1a2b3c`` (UTC date + 6 random hex digits)."""
    day = time.strftime("%Y%m%d", time.gmtime(time.time() if now is None else now))
    return f"r-{day}-{secrets.token_hex(3)}"


class Run(BaseModel):
    """One sweep: its settings, its spec and where it is in its lifecycle."""

    id = CharField(primary_key=True)
    state = CharField(index=True)
    backend = CharField()
    project_dir = TextField()
    settings = JSONField(default=dict)
    spec = JSONField(default=dict)
    result_path = TextField(null=True)
    reason = TextField(null=True)
    points = IntegerField(default=0)
    done = IntegerField(default=0)
    dead = IntegerField(default=0)
    journal_cursor = CharField(default="")
    created_at = FloatField(default=time.time)
    updated_at = FloatField(default=time.time)

    class Meta:
        table_name = "runs"


class Resource(BaseModel):
    """One physical resource (bucket, instance, local process...), created or adopted."""

    id = AutoField()
    run = ForeignKeyField(Run, null=True, backref="resources")
    kind = CharField(index=True)
    name = CharField()
    backend = CharField()
    region = CharField(null=True)
    physical_id = CharField(null=True)
    state = CharField(index=True)
    idempotency_key = CharField(unique=True)
    spec = JSONField(default=dict)
    tags = JSONField(default=dict)
    attrs = JSONField(default=dict)
    created_at = FloatField(default=time.time)
    updated_at = FloatField(default=time.time)
    active_at = FloatField(null=True)
    deleted_at = FloatField(null=True)

    class Meta:
        table_name = "resources"


class Subproblem(BaseModel):
    """A chunk of ``n_points`` consecutive points starting at ``first_point``."""

    id = AutoField()
    run = ForeignKeyField(Run, backref="subproblems", index=False)  # (run, index) covers it
    index = IntegerField()
    first_point = IntegerField()
    n_points = IntegerField()
    state = CharField()
    attempts = IntegerField(default=0)
    worker = CharField(null=True)
    error = TextField(null=True)
    updated_at = FloatField(default=time.time)

    class Meta:
        table_name = "subproblems"
        indexes = ((("run", "index"), True), (("run", "state"), False))


class Event(BaseModel):
    """Append-only audit trail: one row per transition (or creation) of any entity."""

    id = AutoField()
    at = FloatField()
    entity = CharField()
    entity_id = CharField()
    run_id = CharField(null=True, index=True)
    trigger = CharField()
    source = CharField(null=True)
    dest = CharField()
    actor = CharField(default="local")
    reason = TextField(null=True)

    class Meta:
        table_name = "events"
        indexes = ((("entity", "entity_id"), False),)


class SubproblemCount(BaseModel):
    """How many of a run's subproblems are in ``state``: kept by the ledger's write paths, in the
    same transaction as the rows (``mcc.ledger.machines``), so summaries never count rows."""

    run = ForeignKeyField(Run, index=False)  # the primary key (run, state) covers it
    state = CharField()
    n = IntegerField()

    class Meta:
        table_name = "subproblem_counts"
        primary_key = peewee.CompositeKey("run", "state")
        without_rowid = True


class Price(BaseModel):
    """An EC2 On-Demand Linux price fetched from the AWS Price List API (``mcc prices --refresh``)."""

    region = CharField()
    instance_type = CharField()
    usd_per_hour = FloatField()
    vcpus = IntegerField(null=True)
    source = TextField()
    fetched_at = FloatField(default=time.time)

    class Meta:
        table_name = "prices"
        primary_key = peewee.CompositeKey("region", "instance_type")
        without_rowid = True


MODELS: list[type[BaseModel]] = [Meta, Run, Resource, Subproblem, Event, SubproblemCount, Price]
ENTITY_OF: dict[type[BaseModel], str] = {Run: "run", Resource: "resource", Subproblem: "subproblem"}
MODEL_OF: dict[str, type[BaseModel]] = {name: model for model, name in ENTITY_OF.items()}
