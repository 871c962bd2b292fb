"""B7 — AWS API efficiency (emulated cloud): API calls per manager supervision tick with 10 and 100
workers, which must be equal (O(1) in the number of workers). Not measurable yet: the manager's
fleet is local processes only; this row waits for the AWS backend's fleet."""
from __future__ import annotations

from bench import Context, Row

ID = "B7"
TITLE = "AWS API efficiency: calls per manager tick, 10 vs 100 workers"
DEFAULT_SIZE = 100


def run(size: int | None, ctx: Context) -> list[Row]:
    return [Row("B7", "AWS API calls per manager supervision tick, 10 vs 100 workers (emulated cloud)",
                "not yet (needs the AWS backend)", "—", "—", "equal counts (O(1) in workers)", None,
                notes="skipped: remote/fleet.py has only the local fleet")]
