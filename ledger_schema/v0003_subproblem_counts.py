"""v0003: per-run subproblem counts kept beside the rows; drop the unused index on events.at.

``mcc ledger show`` and ``mcc status`` count every run's subproblems by state. Counting a run's
rows reads its whole (run_id, state) index range (100k entries for a 100k-subproblem run); the
``subproblem_counts`` table answers in one lookup. The ledger's write paths (``create_subproblems``,
``create_row``, ``fire``, ``fire_bulk``) change it in the same transaction as the rows it counts.
No query reads events by ``at`` (they are read by id, run and entity), while every journal sync
inserts one event per transition: its index only cost time.
"""
from __future__ import annotations

from typing import Any

STATEMENTS = [
    """CREATE TABLE subproblem_counts (
        run_id VARCHAR(255) NOT NULL REFERENCES runs (id),
        state VARCHAR(255) NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (run_id, state)) WITHOUT ROWID""",
    'INSERT INTO subproblem_counts (run_id, state, n) SELECT run_id, state, COUNT(*) FROM subproblems '
    'GROUP BY run_id, state',
    "DROP INDEX IF EXISTS events_at",
]


def up(db: Any) -> None:
    """Create and fill the counts table; drop events_at."""
    for sql in STATEMENTS:
        db.execute_sql(sql)
