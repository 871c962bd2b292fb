"""v0001: the tables meta, runs, resources, subproblems, events and their indexes."""
from __future__ import annotations

from typing import Any

STATEMENTS = [
    """CREATE TABLE meta (
        "key" VARCHAR(255) NOT NULL PRIMARY KEY,
        "value" TEXT NOT NULL)""",
    """CREATE TABLE runs (
        id VARCHAR(255) NOT NULL PRIMARY KEY,
        state VARCHAR(255) NOT NULL,
        backend VARCHAR(255) NOT NULL,
        project_dir TEXT NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}',
        spec TEXT NOT NULL DEFAULT '{}',
        result_path TEXT,
        reason TEXT,
        points INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        dead INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL)""",
    "CREATE INDEX runs_state ON runs (state)",
    """CREATE TABLE resources (
        id INTEGER NOT NULL PRIMARY KEY,
        run_id VARCHAR(255) REFERENCES runs (id),
        kind VARCHAR(255) NOT NULL,
        name VARCHAR(255) NOT NULL,
        backend VARCHAR(255) NOT NULL,
        region VARCHAR(255),
        physical_id VARCHAR(255),
        state VARCHAR(255) NOT NULL,
        idempotency_key VARCHAR(255) NOT NULL,
        spec TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        active_at REAL,
        deleted_at REAL)""",
    "CREATE INDEX resources_run_id ON resources (run_id)",
    "CREATE INDEX resources_kind ON resources (kind)",
    "CREATE INDEX resources_state ON resources (state)",
    "CREATE UNIQUE INDEX resources_idempotency_key ON resources (idempotency_key)",
    """CREATE TABLE subproblems (
        id INTEGER NOT NULL PRIMARY KEY,
        run_id VARCHAR(255) NOT NULL REFERENCES runs (id),
        "index" INTEGER NOT NULL,
        first_point INTEGER NOT NULL,
        n_points INTEGER NOT NULL,
        state VARCHAR(255) NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        worker VARCHAR(255),
        error TEXT,
        updated_at REAL NOT NULL)""",
    'CREATE UNIQUE INDEX subproblems_run_id_index ON subproblems (run_id, "index")',
    "CREATE INDEX subproblems_run_id_state ON subproblems (run_id, state)",
    """CREATE TABLE events (
        id INTEGER NOT NULL PRIMARY KEY,
        at REAL NOT NULL,
        entity VARCHAR(255) NOT NULL,
        entity_id VARCHAR(255) NOT NULL,
        run_id VARCHAR(255),
        "trigger" VARCHAR(255) NOT NULL,
        source VARCHAR(255),
        dest VARCHAR(255) NOT NULL,
        actor VARCHAR(255) NOT NULL DEFAULT 'local',
        reason TEXT)""",
    "CREATE INDEX events_at ON events (at)",
    "CREATE INDEX events_run_id ON events (run_id)",
    "CREATE INDEX events_entity_entity_id ON events (entity, entity_id)",
]


def up(db: Any) -> None:
    """Create the initial tables."""
    for sql in STATEMENTS:
        db.execute_sql(sql)
