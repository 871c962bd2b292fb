"""The Python API: ``run``, ``resume``, ``status``, ``clean``. The CLI is a thin layer over these."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcc.errors import MccError, ProjectError
from mcc.ledger import Ledger, fire, fire_bulk, models, open_ledger, queries
from mcc.ledger.db import open_for_reading
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
    from mcc.driver.context import Context
    from mcc.driver.prepare import prepare
    from mcc.driver.runlock import RunLock
    from mcc.driver.supervisor import create_run

    overrides = {"backend": backend, "workers": workers, "chunk_size": chunk_size, "max_attempts": max_attempts,
                 "entry": entry, "point_timeout": point_timeout, "lease_seconds": lease_seconds}
    prepared = prepare(project_dir, overrides, aws=aws)
    prices = _checked_prices(prepared, project_dir)
    ledger = _ledger(home)
    ctx = Context.open(ledger, prepared.settings.backend, prepared.settings.backend_table)
    ctx.backend.preflight()
    run_row = create_run(ledger, prepared, estimate=_recorded_estimate(prepared, prices))
    with RunLock(ledger.home, run_row.id):
        if on_created:
            on_created(run_row)
        run_row = _drive(ctx, run_row, detach=detach, keep=keep, on_progress=on_progress)
    return with_cost(summary(run_row), run_row)


def estimate(project_dir: str | Path = ".", *, backend: str | None = None, workers: int | None = None,
             chunk_size: int | None = None, entry: str | None = None, point_timeout: float | None = None,
             aws: dict[str, Any] | None = None, sample_points: int | None = None) -> dict[str, Any]:
    """Predicted wall time, instance-hours and cost of running ``project_dir``, per candidate instance type.

    Times the entry on a few points spread over the sweep (locally, in a child process), prices the
    candidates (``worker_types`` of [aws], or ``aws={"worker_type": ...}``) from the price table and, where
    credentials allow, EC2's current spot prices. Creates nothing in the cloud and opens no ledger.
    """
    from mcc.report import estimation as model
    from mcc.driver.prepare import PROBE_BUDGET, SAMPLE_POINTS, prepare, probe_sample

    overrides = {"backend": backend, "workers": workers, "chunk_size": chunk_size, "entry": entry,
                 "point_timeout": point_timeout}
    prepared = prepare(project_dir, overrides, aws=aws)
    prices = _checked_prices(prepared, project_dir)
    sample = probe_sample(prepared.project, min(prepared.settings.point_timeout or PROBE_BUDGET, PROBE_BUDGET),
                          sample_points or SAMPLE_POINTS)
    doc = model.for_run(prepared.settings, len(prepared.project.points), int(prepared.project.points.shape[1]),
                        prepared.chunks, sample.to_dict(), prices, worker_type=(aws or {}).get("worker_type"),
                        measure_startup=True)
    return {**doc, "project_dir": str(prepared.project.dir)}


def _checked_prices(prepared: Any, project_dir: str | Path) -> Any:
    """For an AWS run: the candidate types checked as offered in the region, with their prices, and the
    budget checked against them (else None; a budget on the local backend is an error)."""
    from mcc.backends.aws_settings import aws_settings
    from mcc.driver.budget import check_budget, minimum_usd
    from mcc.errors import ConfigError

    where = f"{Path(project_dir) / 'mcc.toml'} [aws] (or its flags)"
    if prepared.settings.backend != "aws":
        if prepared.settings.aws.get("budget_usd") is not None:
            raise ConfigError(f"{where}: a budget caps what AWS bills; the {prepared.settings.backend} backend "
                              "costs nothing. Fix: add --backend aws, or drop --budget / budget_usd.")
        return None
    from mcc.report import estimation as model

    prices = model.aws_prices(prepared.settings, where)
    aws = aws_settings(prepared.settings.aws)
    check_budget(aws.budget_usd, minimum_usd(prices, aws.manager_type, aws.candidate_types, aws.spot), where)
    return prices


def _recorded_estimate(prepared: Any, prices: Any) -> dict[str, Any] | None:
    """The estimate kept with the run (for `mcc analyze`), from the run's own one-point probe; None without one
    (a chunk_size set in mcc.toml skips the probe)."""
    import math

    from mcc.report import estimation as model

    seconds = prepared.seconds_per_point
    if seconds is None or not math.isfinite(seconds):
        return None
    sample = {"indices": [0], "seconds": [seconds], "failed": {}, "mean_s": seconds, "min_s": seconds, "max_s": seconds}
    return model.for_run(prepared.settings, len(prepared.project.points), int(prepared.project.points.shape[1]),
                         prepared.chunks, sample, prices)


def resume(run_id: str, *, keep: bool = False, detach: bool = False, retry_dead: bool = False,
           budget: float | None = None, on_progress: ProgressCallback | None = None,
           home: str | Path | None = None) -> dict[str, Any]:
    """Re-enter the run's current state and drive it to its goal (a failed run is retried).

    ``retry_dead``: a run that finished ``completed_with_failures`` recomputes only its dead points
    (see :func:`revive_dead`); the combined file is rebuilt with every point once. ``budget``: a run
    stopped by its budget continues with the larger cap, computing only what is not done.
    """
    from mcc.driver.context import Context
    from mcc.driver.runlock import RunLock

    ledger = _ledger(home)
    run_row = queries.get_run(run_id)
    with RunLock(ledger.home, run_row.id):
        run_row = queries.get_run(run_id)  # as the previous driver left it
        if (retry_dead or run_row.state not in TERMINAL_STATES) and not Path(run_row.project_dir).is_dir():
            raise ProjectError(
                f"run {run_row.id} cannot go on: its project folder {run_row.project_dir} is gone (moved or "
                f"deleted); its manager runs there and its results are written there. Put the folder back and run "
                f"`mcc resume {run_row.id}` again, or remove what the run left with `mcc clean --run {run_row.id}`. "
                f"Nothing was started."
            )
        ctx = Context.for_run(ledger, run_row)
        if retry_dead:
            run_row = revive_dead(run_row)
        elif run_row.state == "stopped_budget":
            from mcc.driver.budget import raise_budget

            run_row = raise_budget(run_row, budget)
            run_row = fire(run_row, "raise_budget", reason=f"mcc resume --budget {budget}")
        elif budget is not None:
            from mcc.driver.budget import raise_budget

            run_row = raise_budget(run_row, budget)  # the next manager launch publishes it
        if run_row.state in ("failed", "cancelled"):
            run_row = fire(run_row, "retry", reason="mcc resume")
        run_row = _drive(ctx, run_row, detach=detach, keep=keep, on_progress=on_progress)
    return with_cost(summary(run_row), run_row)


TERMINAL_STATES = ("completed", "completed_with_failures", "cleaning", "cleaned")


def _drive(ctx: Context, run_row: models.Run, **options: Any) -> models.Run:
    """supervisor.drive; a failure (the world's or ours) first stops what the run no longer needs and says
    what is left running and why (supervisor.after_failure)."""
    from mcc.driver.supervisor import after_failure, drive
    from mcc.work.diskspace import disk_full, is_no_space

    try:
        return drive(ctx, run_row, **options)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        error: Exception = exc
        if is_no_space(exc):
            error = disk_full(getattr(exc, "filename", None) or ctx.ledger.home,
                              hint="Nothing recorded is lost: free some space there.")
        try:
            left = after_failure(ctx, run_row)
        except Exception as inner:  # noqa: BLE001 - never hide the error that stopped the run
            left = f"(Checking what the run left running failed too: {type(inner).__name__}: {inner}.)"
        if isinstance(error, MccError):
            raise error.tell(left) from exc
        raise


def revive_dead(run_row: models.Run) -> models.Run:
    """Start a round of --retry-dead: the run back to provisioning and its dead subproblems to pending,
    in one transaction, with Events naming why; the round (its time, the entry's content hash now, the
    revived subproblems) is appended to ``spec["rounds"]``. A run already on its way (an interrupted
    retry) is left as it is."""
    from mcc.project.folder import Entry, entry_sha256

    if run_row.state in ("provisioning", "launching", "running", "combining", "collecting"):
        return run_row
    if run_row.state != "completed_with_failures":
        raise MccError(f"run {run_row.id} is {run_row.state}: --retry-dead recomputes the dead points of a run that "
                       f"finished completed_with_failures (`mcc status {run_row.id}` shows its state).")
    dead = queries.dead_subproblems(run_row.id)
    spec = run_row.spec or {}
    entry_hash = entry_sha256(Path(run_row.project_dir), Entry(spec["entry_kind"], spec["entry_target"]))
    changed = "unchanged" if entry_hash == spec.get("entry_sha256") else "changed"
    reason = (f"mcc resume --retry-dead: {len(dead)} dead subproblem(s), {sum(d['n_points'] for d in dead)} "
              f"point(s) recomputed; entry {spec['entry_target']} {changed} (sha256 {entry_hash[:12]})")
    rounds = [*(spec.get("rounds") or [{}]),
              {"at": time.time(), "entry_sha256": entry_hash, "why": reason, "subproblems": [d["index"] for d in dead]}]
    ids = [row_id for (row_id,) in models.Subproblem.select(models.Subproblem.id).where(
        (models.Subproblem.run == run_row.id) & (models.Subproblem.state == "dead")).tuples()]
    with models.db.atomic():
        run_row = fire(run_row, "retry_dead", reason=reason, spec={**spec, "rounds": rounds, "entry_sha256": entry_hash})
        fire_bulk(models.Subproblem, "revive", ids, run_id=run_row.id, reason=reason)
    return run_row


def status(run_id: str | None = None, *, home: str | Path | None = None) -> dict[str, Any] | list[dict[str, Any]]:
    """One run's summary (with live progress while it runs), or the list of every run's summary.

    Each summary has ``cost``: ``so_far_usd``, ``burn_usd_per_hour``, ``projected_usd`` (None until a rate is
    known), ``local`` (True: the local backend costs $0), ``complete`` (False: an instance type had no price).
    """
    ledger = open_for_reading(home)
    if run_id is not None:
        from mcc.driver.context import Context

        run_row = queries.get_run(run_id)
        doc = summary(run_row, live=True, ctx=Context.for_run(ledger, run_row))
        return with_cost({**doc, "running": running(run_row.id)}, run_row)
    return [with_cost(summary(r), r) for r in queries.list_runs()]


def running(run_id: str) -> list[dict[str, Any]]:
    """What the ledger says runs for the run (queue, manager, workers it heard of): kind, name, physical id."""
    rows = models.Resource.select().where(
        (models.Resource.run == run_id) & models.Resource.kind.in_(["instance", "cache"])
        & models.Resource.state.in_(["creating", "active", "adopted"]))
    return [{"kind": r.kind, "name": r.name, "physical_id": r.physical_id, "state": r.state} for r in rows]


def with_cost(doc: dict[str, Any], run_row: models.Run) -> dict[str, Any]:
    """``doc`` (a run summary) with ``cost``: so far, burn rate and projected total (mcc.report.analysis.cost_figures).

    The rate is the summary's ``timings.points_per_second`` once the run has one, so both read the same."""
    from mcc.report.analysis import cost_figures

    rate = (doc.get("timings") or {}).get("points_per_second")
    return {**doc, "cost": cost_figures(run_row, done=doc["done"], dead=doc["dead"], points_per_s=rate)}


def clean(run_id: str | None = None, *, all: bool = False, dry_run: bool = False, regions: list[str] | None = None,
          ledger_id: str | None = None, home: str | Path | None = None) -> dict[str, Any]:
    """Delete the resources of one run (``run_id``) or of every run (``all=True``); verified by a sweep.

    ``regions`` sweeps more AWS regions (``["all"]``: every one); ``ledger_id`` finds and removes what a
    lost ledger created, by its tags.
    """
    if run_id is None and not all:
        raise ValueError("clean needs a run id or all=True")
    ledger = _ledger(home)
    from contextlib import ExitStack

    from mcc.driver import cleaner
    from mcc.driver.runlock import RunLock

    with ExitStack() as locks:  # never clean a run under the feet of a process that drives it (it would relaunch)
        if not dry_run:
            ids = [queries.get_run(run_id).id] if run_id else [r.id for r in queries.list_runs() if r.state != "cleaned"]
            for rid in ids:
                locks.enter_context(RunLock(ledger.home, rid))
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
    ledger = open_for_reading(home)
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
        if store is not None and not ctx.ledger.read_only:
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
        "workers": (run_row.settings or {}).get("workers"),  # configured (settings: the one source)
        "workers_alive": (progress or {}).get("workers"),  # live runs only: what the manager last counted
        "timings": timings(run_row.id, done),
    }


def timings(run_id: str, done_points: int) -> dict[str, float]:
    """Seconds spent per phase, from the run's transition events (first start → last combine = compute).

    A run with `mcc resume --retry-dead` rounds adds up each round's compute and total time (the time
    between rounds, while the user fixed the entry, is no one's)."""
    rounds: list[dict[str, list[float]]] = [{}]
    for trigger, when in queries.run_transitions(run_id):
        if trigger == "retry_dead":
            rounds.append({})
        rounds[-1].setdefault("create" if trigger == "retry_dead" else trigger, []).append(when)
    out: dict[str, float] = {}
    first = rounds[0]
    if "create" in first and "start" in first:
        out["startup_s"] = round(first["start"][0] - first["create"][0], 3)
    computes = [at["combine"][-1] - at["start"][0] for at in rounds if "start" in at and "combine" in at]
    if computes:
        compute = sum(computes)
        out["compute_s"] = round(compute, 3)
        if compute > 0:
            out["points_per_second"] = round(done_points / compute, 1)
    last = rounds[-1]
    if "combine" in last and "collect" in last:
        out["combine_s"] = round(last["collect"][-1] - last["combine"][-1], 3)
    totals = [max(t for trig in ("complete", "complete_with_failures", "stop_budget", "fail") for t in at.get(trig, []))
              - at["create"][0] for at in rounds
              if "create" in at and any(at.get(trig) for trig in ("complete", "complete_with_failures", "stop_budget", "fail"))]
    if totals:
        out["total_s"] = round(sum(totals), 3)
    return out


def ledger_recover(*, home: str | Path | None = None) -> dict[str, Any]:
    """Replace a damaged ledger by its last good backup, then adopt by their tags what was created since.

    The damaged file is kept beside it (``ledger.db.damaged-<time>``). Without a backup a fresh ledger takes
    the damaged file's ledger id when it can still be read, so the sweep adopts everything it created.
    Refuses a ledger that passes its check (there is nothing to recover).
    """
    import json

    from mcc.errors import LedgerDamaged
    from mcc.ledger.backup import meta_of, restore
    from mcc.driver.context import Context
    from mcc.ledger.db import LEDGER_FILE, default_home

    root = (Path(home).expanduser() if home is not None else default_home()).resolve()
    path = root / LEDGER_FILE
    try:
        open_ledger(root).close()
    except LedgerDamaged:
        pass
    else:
        raise MccError(f"The ledger at {path} passes SQLite's check: there is nothing to recover.")
    old_uuid, old_created = meta_of(path), meta_of(path, "created_at")
    aside, backup = restore(path)
    ledger = open_ledger(root)
    if backup is None and old_uuid and old_uuid != ledger.uuid:
        with ledger.atomic():  # its creation time too (or none): the sweep must not refuse what the old one made
            models.Meta.update(value=old_uuid).where(models.Meta.key == "ledger_uuid").execute()
            models.Meta.delete().where(models.Meta.key == "created_at").execute()
            if old_created:
                models.Meta.insert(key="created_at", value=old_created).execute()
        ledger = open_ledger(root)
    targets = {("local", "null")} | {(r.backend, json.dumps((r.settings or {}).get("aws"), sort_keys=True))
                                     for r in queries.list_runs()}
    adopted = []
    for backend, aws in sorted(targets):
        engine = Context.open(ledger, backend, json.loads(aws)).engine
        adopted += [queries.row_to_dict(r) for r in engine.sweep(None)]
    ledger.backup()
    return {"ledger": str(path), "damaged_copy": str(aside) if aside else None,
            "backup": str(backup) if backup else None, "uuid": ledger.uuid, "adopted": adopted}
