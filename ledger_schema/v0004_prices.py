"""v0004: EC2 prices fetched by ``mcc prices --refresh``, kept in the ledger instead of ``prices.json``.

One row per (region, instance type): the On-Demand Linux $/hour, the vCPUs the Price List API gave
(NULL when it gave none), where the price came from and when it was fetched (UNIX seconds).
``mcc.report.pricing.load_table`` lays these rows over the table shipped with mcc. A ``prices.json`` left
by an older mcc is not imported: ``mcc prices --refresh`` fetches current prices again.
"""
from __future__ import annotations

from typing import Any

STATEMENTS = [
    """CREATE TABLE prices (
        region VARCHAR(255) NOT NULL,
        instance_type VARCHAR(255) NOT NULL,
        usd_per_hour REAL NOT NULL,
        vcpus INTEGER,
        source TEXT NOT NULL,
        fetched_at REAL NOT NULL,
        PRIMARY KEY (region, instance_type)) WITHOUT ROWID""",
]


def up(db: Any) -> None:
    """Create the prices table."""
    for sql in STATEMENTS:
        db.execute_sql(sql)
