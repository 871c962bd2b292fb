"""v0002: resources.attrs (what describe returned) and runs.journal_cursor (remote journal position)."""
from __future__ import annotations

from typing import Any


def up(db: Any) -> None:
    """Add the two columns with defaults, so existing rows stay valid."""
    db.execute_sql("ALTER TABLE resources ADD COLUMN attrs TEXT NOT NULL DEFAULT '{}'")
    db.execute_sql("ALTER TABLE runs ADD COLUMN journal_cursor VARCHAR(255) NOT NULL DEFAULT ''")
