"""v0005: the ledger's own creation time, ``meta.created_at`` (float UNIX seconds, as text).

It is when the file got its first migration (``schema_version`` version 1), just before its uuid was
minted: nothing tagged with this ledger's uuid by mcc can have been created earlier. ``mcc clean``'s sweep
refuses such a resource (its ledger tag was added afterwards, elsewhere) instead of deleting it.
"""
from __future__ import annotations

from typing import Any

STATEMENTS = [
    "INSERT OR IGNORE INTO meta (key, value) "
    "SELECT 'created_at', CAST(MIN(applied_at) AS TEXT) FROM schema_version HAVING MIN(applied_at) IS NOT NULL",
]


def up(db: Any) -> None:
    """Record the ledger's creation time from its first migration."""
    for sql in STATEMENTS:
        db.execute_sql(sql)
