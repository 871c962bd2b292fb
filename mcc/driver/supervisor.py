"""The local supervisor: drives a run's state machine from draft to a terminal state.

Each state's step is idempotent, so ``resume`` simply re-enters the current state:
draft → provisioning (bucket, queue, inputs) → launching (manager) → running (follow the bucket,
sync the journal, relaunch a dead manager) → combining → collecting (fetch combined.h5) → completed.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mcc.driver.context import Context, inputs_path, store_of
from mcc.driver.journal import sync_run
from mcc.driver.prepare import Prepared
from mcc.driver.resultfile import describe, file_attrs, points_sha256
from mcc.errors import MccError
from mcc.project.folder import entry_sha256, result_columns
from mcc.ledger import Ledger, TERMINAL_RUN_STATES, create_row, create_subproblems, fire, fire_bulk, models, queries
from mcc.report.analysis import CostMeter
from mcc.report.logs import collect_failures, collect_logs
from mcc.work.diskspace import disk_full, is_no_space, no_space_errors
from mcc.work.runspec import WORK, COMBINED, FAILURES, FINAL, POINTS, PROGRESS, RETRIED, SPEC, RunSpec
from mcc.work.stores import Store, get_json

#: on_progress(run, progress, cost): the manager's latest progress document (None before the first one) and
#: the run's cost figures (mcc.report.analysis.cost_figures: so far, burn rate, projected total; $0 for local runs).
ProgressCallback = Callable[[models.Run, dict[str, Any] | None, dict[str, Any]], None]


CREATE_BACKUP_MAX_BYTES = 32 << 20


def create_run(ledger: Ledger, prepared: Prepared, estimate: dict[str, Any] | None = None) -> models.Run:
    """Record a new run (draft) with its subproblems; the points are saved beside the ledger first.
    ``estimate`` (mcc.report.estimation) is kept in the run's spec, for `mcc analyze` to set beside the actual run."""
    run_id = models.new_run_id()
    points_file = inputs_path(ledger, run_id)
    try:
        with no_space_errors(points_file, prepared.project.points.nbytes):
            points_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(os.open(points_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
                np.save(fh, prepared.project.points, allow_pickle=False)
        return _record_run(ledger, prepared, run_id, estimate)
    except BaseException as exc:
        points_file.unlink(missing_ok=True)
        if isinstance(exc, MccError):
            exc.tell("Nothing was recorded or started; free some space and run the same command again.")
        raise


def _record_run(ledger: Ledger, prepared: Prepared, run_id: str, estimate: dict[str, Any] | None) -> models.Run:
    s, p = prepared.settings, prepared.project
    entry_hash = entry_sha256(p.dir, p.entry)
    spec = {
        "entry_kind": p.entry.kind, "entry_target": p.entry.target, "chunk_size": prepared.chunk_size,
        "n_subproblems": len(prepared.chunks), "seconds_per_point": prepared.seconds_per_point,
        "has_combiner": p.combine is not None, "n_dims": int(p.points.shape[1]),
        "points_sha256": points_sha256(p.points), "columns": result_columns(p), "entry_sha256": entry_hash,
        "rounds": [{"at": time.time(), "entry_sha256": entry_hash, "why": "mcc run"}],
        **({"estimate": estimate} if estimate else {}),
    }
    with ledger.atomic():
        run = create_row(models.Run, id=run_id, state="draft", backend=s.backend, project_dir=str(p.dir),
                         settings=s.to_dict(), spec=spec, points=len(p.points))
        create_subproblems(run, prepared.chunks)
    ledger.backup(max_bytes=CREATE_BACKUP_MAX_BYTES)  # so a recover knows the run; big ledgers: at run end only
    return run


def run_spec(ctx: Context, run: models.Run, urls: dict[str, Any]) -> RunSpec:
    s, sp = run.settings, run.spec
    chunk = sp["chunk_size"]
    n_points = run.points
    return RunSpec(
        run_id=run.id, ledger_uuid=ctx.ledger.uuid, n_points=n_points,
        chunks=[(i, min(chunk, n_points - i)) for i in range(0, n_points, chunk)],
        entry_kind=sp["entry_kind"], entry_target=sp["entry_target"], project_dir=run.project_dir,
        workers=s["workers"], max_attempts=s["max_attempts"], point_timeout=s["point_timeout"],
        lease_seconds=s["lease_seconds"], has_combiner=sp["has_combiner"],
        tick_seconds=urls.get("tick_seconds", 0.1), extra=urls.get("extra", {}),
        generation=generation(run), entry_sha256=sp.get("entry_sha256", ""),
    )


def generation(run: models.Run) -> int:
    """How many `mcc resume --retry-dead` rounds the run has had (0: only the first `mcc run`)."""
    return max(0, len((run.spec or {}).get("rounds") or [None]) - 1)


def current_manager(run: models.Run) -> models.Resource | None:
    return (models.Resource.select().where((models.Resource.run == run.id) & (models.Resource.name == "manager"))
            .order_by(models.Resource.id.desc()).first())


def drive(ctx: Context, run: models.Run, *, detach: bool = False, keep: bool = False,
          on_progress: ProgressCallback | None = None) -> models.Run:
    """Advance the run until it is terminal (or running, with ``detach``); idempotent per state."""
    while True:
        state = run.state
        if state == "draft":
            run = fire(run, "provision")
        elif state == "provisioning":
            _provision(ctx, run)
            run = fire(run, "launch")
        elif state == "launching":
            urls = ctx.backend.provision(ctx.engine, run)  # a dead queue is replaced here
            store = store_of(ctx, run)
            if store is not None:
                from mcc.driver.budget import manager_refused, publish, spent_usd

                if publish(store, run):  # the cap and the spend so far, for the manager to enforce on its own
                    aws = urls["extra"]["aws"]
                    refused = manager_refused(run, aws["on_demand_prices"].get(aws["manager_type"]), spent_usd(run))
                    if refused:
                        run = fire(run, "stop_budget", reason=refused)
                        continue
            ctx.backend.launch_manager(ctx.engine, run, urls)
            run = fire(run, "start")
        elif state in ("running", "combining"):
            if detach:
                return run
            run = _follow(ctx, run, on_progress)
        elif state == "collecting":
            run = _collect(ctx, run)
        else:
            if state in TERMINAL_RUN_STATES and state not in ("cleaning", "cleaned") and not keep:
                ctx.backend.teardown(ctx.engine, run)
                if state in ("completed", "completed_with_failures"):
                    drop_collected_copies(ctx, run)
            ctx.ledger.backup()
            return run


def after_failure(ctx: Context, run: models.Run) -> str:
    """After a command driving ``run`` failed: stop what the run no longer needs, and say what is left.

    A run whose manager is alive keeps going in the background (said, with how to follow or stop it).
    Otherwise the local backend's queue and processes are stopped: through the ledger when it can record
    it, else directly by their tags (the ledger then still says ``active``, and the next `mcc resume`
    finds them gone and replaces them). Cloud resources stay (re-creating a cache cluster takes minutes)
    and are named.
    """
    try:
        run = models.Run.get_by_id(run.id)
    except Exception:  # noqa: BLE001 - the ledger may be what failed; the row we hold is the best we know
        pass
    follow = (f"`mcc status {run.id}` shows it, `mcc resume {run.id}` follows it again, "
              f"`mcc clean --run {run.id}` stops and removes it.")
    try:
        manager = current_manager(run)
        alive = manager is not None and manager.state in ("active", "adopted") and ctx.engine.describe(manager)
    except Exception:  # noqa: BLE001
        manager, alive = None, False
    if alive and run.state in ("running", "combining"):
        return f"The run goes on in the background (its manager is {manager.physical_id}): {follow}"
    if ctx.backend.name != "local":
        try:
            left = [f"{r.kind} {r.physical_id}" if r.physical_id else
                    f"{r.kind} {r.name} (if its create call went through; mcc finds it by its tags)"
                    for r in models.Resource.select().where(
                (models.Resource.run == run.id) & models.Resource.kind.in_(["instance", "cache"])
                & models.Resource.state.in_(["active", "adopted", "creating", "failed"]))]
        except Exception:  # noqa: BLE001
            left = []
        if left:
            return (f"Still running, as the ledger records: {', '.join(left)} (`mcc resume {run.id}` reuses them, "
                    f"`mcc clean --run {run.id}` removes them).")
        return f"Nothing of the run is running; `mcc resume {run.id}` continues it from {run.state}."
    try:
        ctx.backend.teardown(ctx.engine, run)
    except Exception:  # noqa: BLE001 - the ledger cannot record it: stop them by their tags all the same
        for kind in ("instance", "cache"):
            provider = ctx.engine.provider(kind)
            for found in provider.sweep(ctx.engine.ledger_uuid, run.id):
                if not ctx.engine.predates(found):  # older than the ledger: tagged afterwards, not ours
                    provider.delete(found.physical_id, found.attrs)
    return (f"The run's queue and processes were stopped; `mcc resume {run.id}` continues it from where it "
            f"stopped ({run.state}).")


def _provision(ctx: Context, run: models.Run) -> None:
    urls = ctx.backend.provision(ctx.engine, run)
    if run.spec.get("store_url") != urls["store_url"]:
        run.spec = {**run.spec, "store_url": urls["store_url"]}
        models.Run.update(spec=run.spec).where(models.Run.id == run.id).execute()
    store = store_of(ctx, run)
    assert store is not None
    spec = run_spec(ctx, run, urls)
    if store.get_bytes(SPEC) != spec.to_json():
        store.put_bytes(SPEC, spec.to_json())
    if not store.exists(POINTS):
        store.put_file(POINTS, inputs_path(ctx.ledger, run.id))
    final = get_json(store, FINAL)
    if final is not None and (final.get("state") not in ("completed", "completed_with_failures")
                              or final.get("generation", 0) != spec.generation):
        store.delete(FINAL)  # a retried run: let the new manager finish it again
    if spec.generation:
        _archive_failures(store, run, spec.generation)


def _archive_failures(store: Store, run: models.Run, gen: int) -> None:
    """Before round ``gen`` of --retry-dead: move the revived subproblems' failure texts from failures/ to
    retried/<gen>/failures/, so the new queue seeds them pending with every attempt; once per round."""
    marker = f"{RETRIED}{gen}/archived"
    if store.exists(marker):
        return
    for sub in run.spec["rounds"][gen].get("subproblems", []):
        for key in store.list(f"{FAILURES}{sub:07d}/"):
            data = store.get_bytes(key)
            if data is not None:
                store.put_bytes(f"{RETRIED}{gen}/{key}", data)
            store.delete(key)
    store.delete(PROGRESS)  # the last round's counts
    store.put_bytes(marker, b"")


def _follow(ctx: Context, run: models.Run, on_progress: ProgressCallback | None) -> models.Run:
    store = store_of(ctx, run)
    assert store is not None
    started = time.monotonic()
    meter = CostMeter()
    while True:
        progress = get_json(store, PROGRESS)
        run = sync_run(store, run, ctx.engine)
        _record_counts(run, progress)
        if on_progress:
            on_progress(run, progress, meter.update(run, progress))
        final = get_json(store, FINAL)
        if final is None and progress and progress.get("phase") == "combining" and run.state == "running":
            run = fire(run, "combine", actor="manager")
        if final is None:
            manager = current_manager(run)
            if manager is not None and manager.state == "deleting":  # a replacement was interrupted: finish it
                ctx.engine.destroy(manager, "finishing an interrupted replacement")
                return fire(run, "relaunch", reason="finishing an interrupted manager replacement")
            silent = _silent_for(ctx, manager, progress)
            if manager is None or silent or ctx.engine.describe(manager) is None:
                final = get_json(store, FINAL)  # it may have finished between the two reads
                if final is None:
                    if manager is not None and silent:
                        ctx.engine.destroy(manager, f"alive but silent for {silent:.0f} s")
                    _check_space(store, run)
                    return fire(run, "relaunch", reason="the manager is gone or silent; starting a new one")
        if final is not None:
            run = sync_run(store, run, ctx.engine)
            if run.state == "running":
                run = fire(run, "combine", actor="manager")
            if final["state"] in ("completed", "completed_with_failures", "stopped_budget"):
                return fire(run, "collect", actor="manager")
            _collect_logs(ctx, run, store, result_path(run).parent / "logs")  # the why of a failed run, kept
            return fire(run, "fail", actor="manager", reason=final.get("reason"))
        first, most = ctx.backend.poll_seconds
        time.sleep(min(most, first + (time.monotonic() - started) / 60))


SPACE_PROBE = 1 << 20  # bytes a manager needs in a local bucket to carry on (progress, journal, a result)


def _check_space(store: Store, run: models.Run) -> None:
    """Before relaunching a manager into a local bucket: can the bucket take a small write? A manager (and
    its workers) stop on a full disk; relaunching them into it would only loop."""
    probe = "space-probe.bin"
    where = store.local_path(probe)
    if where is None:
        return
    root = where.parent
    try:
        store.put_bytes(probe, b"\0" * SPACE_PROBE)
    except OSError as exc:
        if is_no_space(exc):
            raise disk_full(root, SPACE_PROBE, "The workers handed their subproblems back without spending an "
                            "attempt; free some space there.") from exc
        raise
    finally:
        store.delete(probe)


def _silent_for(ctx: Context, manager: models.Resource | None, progress: dict[str, Any] | None) -> float:
    """Seconds a live manager has said nothing past its allowance (0 when it is fine).

    A manager publishes progress every tick; one that never started or stopped publishing (a hung
    process on a running instance) is replaced, so a run cannot wait forever on it.
    """
    if manager is None or manager.state not in ("active", "adopted"):
        return 0.0
    now = time.time()
    if progress and progress.get("resource") == manager.physical_id:
        if progress.get("phase") != "running":  # combining publishes nothing until it is done
            return 0.0
        quiet = now - progress["t"]
        return quiet if quiet > ctx.backend.manager_silence_seconds else 0.0
    quiet = now - (manager.active_at or now)
    return quiet if quiet > ctx.backend.manager_boot_seconds else 0.0


def _record_counts(run: models.Run, progress: dict[str, Any] | None) -> None:
    if not progress:
        return
    p = progress["progress"]
    if (p["done_points"], p["dead_points"]) != (run.done, run.dead):
        models.Run.update(done=p["done_points"], dead=p["dead_points"]).where(models.Run.id == run.id).execute()
        run.done, run.dead = p["done_points"], p["dead_points"]


def result_path(run: models.Run) -> Path:
    return Path(run.project_dir) / run.settings.get("results_dir", "results") / run.id / "combined.h5"


def settle_subproblems(run: models.Run, dead: set[int]) -> int:
    """Bring the ledger's subproblems to the final truth of a finished run: the ``dead`` ones dead, every
    other one done. Events lost with a queue (a manager that died) would otherwise leave some leased or
    pending forever. Moves go through the machine's own transitions; returns rows moved."""
    rows = dict(models.Subproblem.select(models.Subproblem.index, models.Subproblem.id)
                .where((models.Subproblem.run == run.id) & models.Subproblem.state.not_in(["done", "dead"])).tuples())
    if not rows:
        return 0
    reason = "settled from the finished run's summary"
    to_dead = [rows[i] for i in rows if i in dead]
    moved = 0
    for trigger in ("lease", "fail", "give_up"):  # pending → leased → failed → dead
        moved += fire_bulk(models.Subproblem, trigger, to_dead, run_id=run.id, actor="manager", reason=reason)
    to_done = [rows[i] for i in rows if i not in dead]
    return moved + fire_bulk(models.Subproblem, "complete", to_done, run_id=run.id, actor="manager", reason=reason)


def _collect(ctx: Context, run: models.Run) -> models.Run:
    store = store_of(ctx, run)
    assert store is not None
    final = get_json(store, FINAL) or {}
    stopped = final.get("state") == "stopped_budget"
    if not stopped:  # a run stopped by its budget keeps its pending subproblems pending, for `mcc resume`
        settle_subproblems(run, {int(k) for k in final.get("dead", {})})
    dest = result_path(run)
    if stopped and not final.get("result"):  # stopped before any subproblem was done: nothing to collect
        return fire(run, "stop_budget", actor="manager", reason=_budget_reason(run, final))
    part = dest.with_name(dest.name + ".part")
    try:
        if not store.get_file(COMBINED, part):
            raise MccError(f"run {run.id}: the bucket {store.url} has no {COMBINED}; `mcc resume {run.id}` recomputes it")
        describe(part, file_attrs(run.id, run.spec, run.settings, run.points), queries.missing_points(run.id))
        os.chmod(part, 0o666 & ~_umask())  # the user's file: their umask (the bucket's copies stay 0600)
        part.replace(dest)
    except OSError as exc:
        if is_no_space(exc):
            local = store.local_path(COMBINED)
            raise disk_full(dest, local.stat().st_size if local else None,
                            "Nothing is lost: the combined file is still in the bucket. Free some space (or set "
                            "results_dir in mcc.toml to a roomier folder) and run "
                            f"`mcc resume {run.id}`.") from exc
        raise MccError(f"could not write {dest}: {exc}. Fix it and run `mcc resume {run.id}`.") from exc
    _collect_logs(ctx, run, store, dest.parent / "logs")
    p = final.get("progress", {})
    if stopped:
        return fire(run, "stop_budget", actor="manager", reason=_budget_reason(run, final), result_path=str(dest),
                    done=p.get("done_points", run.done), dead=p.get("dead_points", run.dead))
    trigger = "complete" if final.get("state") == "completed" else "complete_with_failures"
    reason = None if trigger == "complete" else f"{p.get('dead_points', 0)} point(s) failed every attempt"
    return fire(run, trigger, reason=reason, result_path=str(dest),
                done=p.get("done_points", run.done), dead=p.get("dead_points", run.dead))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def drop_collected_copies(ctx: Context, run: models.Run) -> None:
    """Once the result is in the project, the bucket's copy of it and the workers' scratch folders go.

    Kept: the logs, the journal, the spec and points, and results/ (what `mcc resume RUN --retry-dead` rebuilds
    the combined file from). `mcc clean` removes the rest; ``--keep`` keeps everything."""
    store = store_of(ctx, run)
    if store is None:
        return
    for key in [COMBINED, *store.list(WORK)]:
        store.delete(key)


def _budget_reason(run: models.Run, final: dict[str, Any]) -> str:
    """The Event's reason for a run stopped by its budget: what was spent, what is left, how to go on."""
    p = final.get("progress", {})
    left = (run.points or 0) - p.get("done_points", 0) - p.get("dead_points", 0)
    return (f"budget: spent ${final.get('spent_usd', 0):.6f} of ${final.get('budget_usd', 0):.6f} "
            f"(the manager's projection of the work in hand, with its reserve for a lost manager, would have "
            f"crossed it); {left} point(s) left. "
            f"`mcc resume {run.id} --budget N` continues with a larger cap.")


def _collect_logs(ctx: Context, run: models.Run, store: Store, dest: Path) -> None:
    """Copy the bucket's logs/ to results/<run-id>/logs/ with a merged, time-sorted merged.log.

    Waits a moment for a local manager to exit so its last lines are in; a failure here is logged,
    never fatal (the logs stay in the bucket until `mcc clean`).
    """
    manager = current_manager(run)
    deadline = time.monotonic() + 3.0
    while run.backend == "local" and manager is not None and time.monotonic() < deadline:
        if manager.state not in ("active", "adopted") or ctx.engine.describe(manager) is None:
            break
        time.sleep(0.05)
    try:
        collect_logs(store, dest)
        collect_failures(store, dest)
    except Exception as exc:  # noqa: BLE001 - logs are a convenience; the result must still be collected
        logging.getLogger(__name__).warning("could not copy the logs of %s to %s: %s", run.id, dest, exc)
