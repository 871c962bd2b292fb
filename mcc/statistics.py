"""The original mCC's ``mcc.statistics``: facts about EC2 instance types and about a run's instances."""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["get_ec2_vcpus", "instances"]


def get_ec2_vcpus(instance_type: str = "t2.micro", *, home: str | Path | None = None) -> int | None:
    """vCPUs of ``instance_type`` (mcc's price table, refreshed by `mcc prices --refresh`); None when unknown."""
    from mcc.report.pricing import vcpus

    return vcpus(instance_type, home=home)


def instances(run_id: str, *, home: str | Path | None = None) -> list[dict[str, Any]]:
    """The run's instances: role, type, seconds, vCPUs and cost each (``mcc analyze``'s rows)."""
    from mcc.ledger import current_ledger, get_run, open_ledger
    from mcc.report.analysis import instance_rows

    if home is not None or current_ledger() is None:
        open_ledger(home)
    return instance_rows(get_run(run_id))
