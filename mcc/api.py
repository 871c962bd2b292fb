"""The Python API: ``run``, ``resume``, ``status``, ``clean``. The CLI is a thin layer over these."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcc.ledger import Ledger, fire, models, open_ledger, queries
from mcc.work.runspec import PROGRESS
from mcc.work.stores import get_json

if TYPE_CHECKING:
    from mcc.driver.context import Context
    from mcc.driver.supervisor import ProgressCallback

# The supervisor, preparation and cleaner (numpy, boto3...) are imported by the calls that use them:
# `mcc ledger show` starts without them (~half of `import mcc.cli`).


def _ledger(home: str | Path | None) -> Ledger:
    return open_ledger(home)


def run(project_dir: str | Path = ".", *, backend: str | None = None, workers: int | None = None,
        chunk_size: int | None = None, max_attempts: int | None = None, entry: str | None = None,
        point_timeout: float | None = None, lease_seconds: float | None = None, aws: dict[str, Any] | None = None,
        detach: bool = False, keep: bool = False, on_progress: ProgressCallback | None = None,
        on_created: Any = None, home: str | Path | None = None) -> dict[str, Any]:
    """Run the sweep in ``project_dir``; returns the run summary (see :func:`status`).

    Everything that can be checked is checked before any resource exists. With ``detach`` the call
    returns once the manager runs; ``resume(run_id)`` follows it later.
    """
    from mcc.driver.prepare import prepare
    from mcc.driver.context import Context
    from mcc.driver.supervisor import create_run, drive

    overrides = {"backend": backend, "workers": workers, "chunk_size": chunk_size, "max_attempts": max_attempts,
                 "entry": entry, "point_timeout": point_timeout, "lease_seconds": lease_seconds}
    prepared = prepare(project_dir, overrides, aws=aws)
    ledger = _ledger(home)
    ctx = Context.open(ledger, prepared.settings.backend, prepared.settings.aws)
    ctx.backend.preflight()
    run_row = create_run(ledger, prepared)
    if on_created:
        on_created(run_row)
    run_row = drive(ctx, run_row, detach=detach, keep=keep, on_progress=on_progress)
    return with_cost(summary(run_row), run_row)


def resume(run_id: str, *, keep: bool = False, detach: bool = False, on_progress: ProgressCallback | None = None,
           home: str | Path | None = None) -> dict[str, Any]:
    """Re-enter the run's current state and drive it to its goal (a failed run is retried)."""
    from mcc.driver.context import Context
    from mcc.driver.supervisor import drive

    ledger = _ledger(home)
    run_row = queries.get_run(run_id)
    ctx = Context.for_run(ledger, run_row)
    if run_row.state in ("failed", "cancelled"):
        run_row = fire(run_row, "retry", reason="mcc resume")
    run_row = drive(ctx, run_row, detach=detach, keep=keep, on_progress=on_progress)
    return with_cost(summary(run_row), run_row)


def status(run_id: str | None = None, *, home: str | Path | None = None) -> dict[str, Any] | list[dict[str, Any]]:
    """One run's summary (with live progress while it runs), or the list of every run's summary.

    Each summary has ``cost``: ``so_far_usd``, ``burn_usd_per_hour``, ``projected_usd`` (None until a rate is
    known), ``local`` (True: the local backend costs $0), ``complete`` (False: an instance type had no price).
    """
    ledger = _ledger(home)
    if run_id is not None:
        from mcc.driver.context import Context

        run_row = queries.get_run(run_id)
        return with_cost(summary(run_row, live=True, ctx=Context.for_run(ledger, run_row)), run_row)
    return [with_cost(summary(r), r) for r in queries.list_runs()]


def with_cost(doc: dict[str, Any], run_row: models.Run) -> dict[str, Any]:
    """``doc`` (a run summary) with ``cost``: so far, burn rate and projected total (mcc.report.analysis.cost_figures)."""
    from mcc.report.analysis import cost_figures

    return {**doc, "cost": cost_figures(run_row, done=doc["done"], dead=doc["dead"])}


def clean(run_id: str | None = None, *, all: bool = False, dry_run: bool = False, regions: list[str] | None = None,
          ledger_id: str | None = None, home: str | Path | None = None) -> dict[str, Any]:
    """Delete the resources of one run (``run_id``) or of every run (``all=True``); verified by a sweep.

    ``regions`` sweeps more AWS regions (``["all"]``: every one); ``ledger_id`` finds and removes what a
    lost ledger created, by its tags.
    """
    if run_id is None and not all:
        raise ValueError("clean needs a run id or all=True")
    ledger = _ledger(home)
    from mcc.driver import cleaner

    return cleaner.clean(ledger, run_id, dry_run=dry_run, regions=regions, ledger_id=ledger_id).to_dict()


def provision(*, backend: str = "aws", aws: dict[str, Any] | None = None, project_dir: str | Path = ".",
              home: str | Path | None = None) -> list[dict[str, Any]]:
    """Create (or find) the resources shared by every run of this ledger in a region; returns them.

    The [aws] table of ``project_dir``/mcc.toml applies when there is one (``aws`` flags over it), so a
    project's ``custom_image = true`` and ``requirements`` bake its image here, once, before any run.
    """
    from mcc.project.settings import CONFIG_NAME, load_settings
    from mcc.driver.context import Context

    if (Path(project_dir) / CONFIG_NAME).exists():
        aws = {**load_settings(Path(project_dir)).aws, **{k: v for k, v in (aws or {}).items() if v is not None}}
    ledger = _ledger(home)
    ctx = Context.open(ledger, backend, aws)
    ctx.backend.preflight()
    rows = ctx.backend.provision_shared(ctx.engine) if hasattr(ctx.backend, "provision_shared") else {}
    return [{**queries.row_to_dict(r), "run": r.run_id} for r in rows.values()]


def ledger_view(*, run_id: str | None = None, kind: str | None = None, state: str | None = None,
                events: int = 0, home: str | Path | None = None) -> dict[str, Any]:
    """Runs, resources (and the newest ``events`` events) as plain dicts, for `mcc ledger show`."""
    ledger = _ledger(home)
    runs = [queries.get_run(run_id)] if run_id else queries.list_runs()
    rows = queries.resource_dicts(run_id=run_id, kind=kind, state=state)
    doc: dict[str, Any] = {
        "ledger": {"uuid": ledger.uuid, "path": str(ledger.path)},
        "runs": [summary(r) for r in runs],
        "resources": [{**row, "run": row["run_id"]} for row in rows],
    }
    if events:
        evs = queries.events(run_id=run_id, limit=events)
        doc["events"] = [queries.row_to_dict(e) for e in evs]
    return doc


def summary(run_row: models.Run, live: bool = False, ctx: Context | None = None) -> dict[str, Any]:
    """The run as one JSON-friendly dict: run_id, state, result, points, done, dead, …"""
    counts = queries.subproblem_counts(run_row.id)
    progress = None
    if live and ctx is not None and run_row.state in ("running", "combining", "launching"):
        from mcc.driver.context import store_of

        store = store_of(ctx, run_row)
        progress = get_json(store, PROGRESS) if store else None
        if store is not None:
            from mcc.driver.journal import sync_run

            sync_run(store, run_row)
            counts = queries.subproblem_counts(run_row.id)
    done, dead = run_row.done, run_row.dead
    if progress:
        done, dead = progress["progress"]["done_points"], progress["progress"]["dead_points"]
    failures = [
        {"subproblem": s["index"], "first_point": s["first_point"], "n_points": s["n_points"],
         "attempts": s["attempts"], "state": s["state"], "error": s["error"]}
        for s in queries.dead_subproblems(run_row.id)
    ]
    return {
        "run_id": run_row.id, "state": run_row.state, "backend": run_row.backend, "project_dir": run_row.project_dir,
        "result": run_row.result_path, "points": run_row.points, "done": done, "dead": dead,
        "reason": run_row.reason, "subproblems": counts, "chunk_size": run_row.spec.get("chunk_size"),
        "entry": f"{run_row.spec.get('entry_kind')} {run_row.spec.get('entry_target')}",
        "failures": failures, "created_at": run_row.created_at, "updated_at": run_row.updated_at,
        "workers": (progress or {}).get("workers"),
        "timings": timings(run_row.id, done),
    }


def timings(run_id: str, done_points: int) -> dict[str, float]:
    """Seconds spent per phase, from the run's transition events (first start → last combine = compute)."""
    at: dict[str, list[float]] = {}
    for trigger, when in queries.run_transitions(run_id):
        at.setdefault(trigger, []).append(when)
    out: dict[str, float] = {}
    if "create" in at and "start" in at:
        out["startup_s"] = round(at["start"][0] - at["create"][0], 3)
    if "start" in at and "combine" in at:
        compute = at["combine"][-1] - at["start"][0]
        out["compute_s"] = round(compute, 3)
        if compute > 0:
            out["points_per_second"] = round(done_points / compute, 1)
    if "combine" in at and "collect" in at:
        out["combine_s"] = round(at["collect"][-1] - at["combine"][-1], 3)
    ends = [t for trig in ("complete", "complete_with_failures", "fail") for t in at.get(trig, [])]
    if "create" in at and ends:
        out["total_s"] = round(max(ends) - at["create"][0], 3)
    return out
