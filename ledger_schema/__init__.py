"""Numbered schema migrations for the ledger, and the ~50-line runner that applies them.

Each migration is a module ``vNNNN_<name>.py`` with ``up(db)`` written in plain SQL, so a migration
never changes when ``mcc/ledger/models.py`` does. ``schema_version`` holds one row per applied
version. See README.md for how to add one.
"""
from __future__ import annotations

import time
from types import ModuleType
from typing import Any

from mcc.errors import LedgerError

from . import v0001_initial, v0002_attrs_and_journal_cursor, v0003_subproblem_counts, v0004_prices, v0005_created_at

MIGRATIONS: list[tuple[int, ModuleType]] = [
    (1, v0001_initial),
    (2, v0002_attrs_and_journal_cursor),
    (3, v0003_subproblem_counts),
    (4, v0004_prices),
    (5, v0005_created_at),
]
LATEST: int = MIGRATIONS[-1][0]

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version "
    "(version INTEGER NOT NULL PRIMARY KEY, applied_at REAL NOT NULL)"
)


def _execute(db: Any, sql: str, params: tuple = ()) -> Any:
    """Run SQL on a peewee Database or a plain sqlite3 connection."""
    run = getattr(db, "execute_sql", None) or db.execute
    return run(sql, params)


def current_version(db: Any) -> int:
    """The highest applied migration (0 for an empty file); reads only, never writes."""
    found = _execute(db, "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'")
    if found.fetchone() is None:
        return 0
    row = _execute(db, "SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(db: Any, target: int | None = None) -> list[int]:
    """Apply every pending migration up to ``target`` (default LATEST); return the versions applied.

    Each migration and its version row commit in one ``db.atomic()`` transaction, and the version is
    re-read inside it, so two processes opening a fresh ledger at once apply each step exactly once.
    """
    target = LATEST if target is None else target
    version = current_version(db)
    if version > LATEST:
        raise LedgerError(f"ledger schema version {version} is newer than this mcc knows ({LATEST}); upgrade mcc")
    applied: list[int] = []
    for number, module in MIGRATIONS:
        if number <= version or number > target:
            continue
        with db.atomic():
            _execute(db, _VERSION_TABLE)
            if current_version(db) >= number:
                continue  # another process applied it while we waited for the lock
            module.up(db)
            _execute(db, "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (number, time.time()))
        applied.append(number)
    return applied
