"""Core-hours of a Slurm run: per job, the scheduler's own start/end times × its CPUs × core_hour_usd.

Times come from the job rows' attrs: ``start_at``/``end_at`` (sacct or jobcomp, recorded at teardown)
when known, else what the manager saw in squeue (``launched_at``/``terminated_at``), else the ledger's
own active/deleted times. A requeued task is one row per run (``A_T``, ``A_T.1``), each with that run's
record; a scheduler record is billed once, whatever rows carry it. An array row is not counted itself: its
tasks are, each its own row (one the manager never saw running is recorded at teardown from the scheduler).
"""
from __future__ import annotations

import time
from typing import Any

from mcc.ledger import models, queries


def core_hour_usd(run: models.Run) -> float:
    return float(((run.settings or {}).get("slurm") or {}).get("core_hour_usd") or 0.0)


def job_rows(run: models.Run, now: float | None = None) -> list[dict[str, Any]]:
    """One dict per manager job and worker task of the run: times, CPUs, core-hours and their cost."""
    now = time.time() if now is None else now
    usd = core_hour_usd(run)
    out = []
    timed: set[tuple[str, float]] = set()  # scheduler records already billed: (job id, start)
    for row in queries.resources(run_id=run.id, kind="job"):
        attrs = row.attrs or {}
        role = "manager" if row.name == "manager" else (row.spec or {}).get("role") or "worker"
        if role not in ("manager", "worker"):
            continue
        if attrs.get("start_at") is not None:
            if (row.physical_id, attrs["start_at"]) in timed:
                continue
            timed.add((row.physical_id, attrs["start_at"]))
        start = next((t for t in (attrs.get("start_at"), attrs.get("launched_at"), row.active_at) if t is not None), None)
        if start is None:  # never started (pending when cancelled)
            continue
        end = next((t for t in (attrs.get("end_at"), attrs.get("terminated_at"), row.deleted_at) if t is not None), None)
        cpus = int(attrs.get("cpus") or attrs.get("vcpus") or 1)
        seconds = max(0.0, float(end if end is not None else now) - float(start))
        out.append(_row(row.name, row.physical_id, role, float(start), None if end is None else float(end), cpus,
                        seconds, usd, attrs.get("start_at") is not None))
    return out


def _row(name: str, job_id: str, role: str, start: float, end: float | None, cpus: int, seconds: float, usd: float,
         from_scheduler: bool) -> dict[str, Any]:
    core_hours = seconds * cpus / 3600.0
    return {"name": name, "job_id": job_id, "role": role, "start": start, "end": end, "running": end is None,
            "cpus": cpus, "seconds": seconds, "core_hours": core_hours, "cost_usd": core_hours * usd,
            "from_scheduler": from_scheduler}
