"""Guaranteed cleanup: delete what the ledger knows in dependency order, sweep for anything else
tagged with this ledger, delete that too, then verify nothing survives.

A resource the sweep finds that was made before the ledger existed (``Engine.predates``) is refused: its
ledger tag was put on afterwards, so it is reported apart and never deleted, and clean fails naming it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mcc.errors import CleanIncomplete
from mcc.ledger import Ledger, fire, models, queries
from mcc.providers.base import Found
from mcc.driver.context import Context, inputs_path


@dataclass
class CleanReport:
    runs: list[str] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)
    adopted: list[dict[str, Any]] = field(default_factory=list)
    survivors: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "deleted": self.deleted, "adopted": self.adopted,
                "survivors": self.survivors, "refused": self.refused, "dry_run": self.dry_run}


def _describe(row: models.Resource) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "name": row.name, "physical_id": row.physical_id,
            "run": row.run_id, "state": row.state, "backend": row.backend, "region": row.region}


def _found(kind: str, f: Found) -> dict[str, Any]:
    return {"kind": kind, "physical_id": f.physical_id, "tags": f.tags, "created_at": f.created_at}


REFUSED = ("refused: tagged with this ledger after it was created elsewhere (it is older than the ledger) - "
           "not deleted; remove its mcc:ledger tag or delete it yourself")


def _refused(kind: str, f: Found) -> dict[str, Any]:
    return {**_found(kind, f), "error": REFUSED}


def plan(ledger: Ledger, run_id: str | None) -> tuple[list[models.Run], list[models.Resource]]:
    """The runs and the live resource rows a clean would delete."""
    runs = [queries.get_run(run_id)] if run_id else queries.list_runs()
    query = models.Resource.select().where(models.Resource.state != "deleted")
    if run_id:
        query = query.where(models.Resource.run == run_id)
    return runs, list(query.order_by(models.Resource.id))


def clean(ledger: Ledger, run_id: str | None = None, *, dry_run: bool = False, regions: list[str] | None = None,
          ledger_id: str | None = None) -> CleanReport:
    """Delete every resource of one run (or of the whole ledger) and prove nothing is left.

    ``regions`` adds AWS regions to sweep (``["all"]`` = every enabled region); ``ledger_id`` sweeps for
    resources tagged with another ledger uuid (a lost ledger file), adopting them into this one (with no
    creation-time bound: the lost ledger's is unknown). Resources older than this ledger are ``refused``.
    """
    runs, rows = plan(ledger, run_id)
    if ledger_id:
        runs, rows = [], []
    report = CleanReport(runs=[r.id for r in runs], dry_run=dry_run)
    contexts = _contexts(ledger, runs, rows, regions or [], ledger_id)
    if dry_run:
        report.deleted = [_describe(r) for r in rows]
        for ctx in contexts.values():
            for kind, provider in ctx.engine.providers.items():
                known = {r.physical_id for r in rows}
                for f in provider.sweep(ctx.engine.ledger_uuid, run_id):
                    if f.physical_id not in known:
                        if ctx.engine.predates(f):
                            report.refused.append(_refused(kind, f))
                        else:
                            report.adopted.append(_found(kind, f))
        return report
    for run in runs:
        if run.state not in ("cleaning", "cleaned"):
            fire(run, "clean")
    errors = []
    for name, ctx in contexts.items():
        mine = [r for r in rows if r.backend == ctx.backend.name and (r.region or None) == ctx.backend.region]
        errors += ctx.engine.destroy_all(mine, "mcc clean")
        report.deleted += [_describe(r) for r in mine]
        refused: list[tuple[str, Found]] = []
        adopted = ctx.engine.sweep(run_id, refused)
        report.adopted += [_describe(r) for r in adopted]
        report.refused += [_refused(kind, f) for kind, f in refused]
        errors += ctx.engine.destroy_all(adopted, "mcc clean (found by the sweep)")
    for run in runs:
        inputs_path(ledger, run.id).unlink(missing_ok=True)
    if run_id is None:  # the whole ledger: drop the now-empty folders too
        for folder in (ledger.home / "inputs", ledger.home / "buckets"):
            try:
                folder.rmdir()
            except OSError:
                pass
    survivors = _verify(ledger_id or ledger.uuid, contexts, run_id)
    report.survivors = survivors + [{"error": msg, **_describe(row)} for row, msg in errors]
    if report.survivors or report.refused:
        raise CleanIncomplete(_incomplete(report, ledger_id or ledger.uuid, ledger.created_at), report)
    for run in runs:
        run = queries.get_run(run.id)
        if run.state == "cleaning":
            fire(run, "cleaned")
    return report


def _contexts(ledger: Ledger, runs: list[models.Run], rows: list[models.Resource], regions: list[str],
              ledger_id: str | None) -> dict[str, Context]:
    """One context per backend (and AWS region) that any run or resource lives in; local always."""
    contexts = {"local": Context.open(ledger, "local", ledger_uuid=ledger_id)}
    aws_settings = {}
    for run in runs:
        if run.backend == "aws":
            table = dict((run.settings or {}).get("aws") or {})
            aws_settings[table.get("region") or ""] = table
    for row in rows:
        if row.backend == "aws" and row.region and row.region not in aws_settings:
            aws_settings[row.region] = {"region": row.region}
    if regions == ["all"]:
        from mcc.providers.aws.clients import AwsContext

        probe = AwsContext.create(ledger.uuid, region=next(iter(aws_settings), None) or None)
        regions = [r["RegionName"] for r in probe.client("ec2").describe_regions()["Regions"]]
    for region in regions:
        aws_settings.setdefault(region, {"region": region})
    if ledger_id and not aws_settings:  # a lost ledger: sweep the region of the standard chain
        aws_settings[""] = {}
    for region, table in aws_settings.items():  # with ledger_id: sweep for that (lost) ledger's tags
        contexts[f"aws:{region}"] = Context.open(ledger, "aws", table, ledger_uuid=ledger_id)
    slurm = [dict((r.settings or {}).get("slurm") or {}) for r in runs if r.backend == "slurm"]
    if slurm or any(row.backend == "slurm" for row in rows):  # one context: squeue lists every job
        contexts["slurm"] = Context.open(ledger, "slurm", (slurm or [{}])[-1], ledger_uuid=ledger_id)
    return contexts


def _verify(ledger_uuid: str, contexts: dict[str, Context], run_id: str | None) -> list[dict[str, Any]]:
    """What the sweep still finds, except the refused (reported apart)."""
    survivors = []
    for ctx in contexts.values():
        for kind, provider in ctx.engine.providers.items():
            survivors += [_found(kind, f) for f in provider.sweep(ledger_uuid, run_id) if not ctx.engine.predates(f)]
    return survivors


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _incomplete(report: CleanReport, ledger_uuid: str, created_at: float | None) -> str:
    """CleanIncomplete's message: the survivors, then the refused, each with what to do."""
    parts = []
    if report.survivors:
        lines = "\n".join(f"  - {s.get('kind')} {s.get('physical_id')} {s.get('error', '')}" for s in report.survivors)
        parts.append(f"clean finished but {len(report.survivors)} resource(s) tagged with ledger {ledger_uuid} "
                     f"survive:\n{lines}\nRun `mcc clean` again; if they persist, delete them by hand.")
    if report.refused:
        lines = "\n".join(f"  - {s['kind']} {s['physical_id']} (made {_when(s['created_at'])})" for s in report.refused)
        parts.append(f"refused {len(report.refused)} resource(s) older than this ledger (made {_when(created_at or 0)}):"
                     f" they were tagged with it after they were created elsewhere. Not "
                     f"deleted; remove their mcc:ledger tag or delete them yourself:\n{lines}")
    return "\n".join(parts)
