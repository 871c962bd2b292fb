"""B5 — the ledger at scale: 1M subproblems, 10k resources, 1M events (report only).

A ledger in a fresh ``MCC_HOME`` is filled the way years of use would fill it: 10 runs of 100k
subproblems each through the ledger's own ``create_row`` / ``create_subproblems`` (then, as bench
data preparation, their states set in bulk SQL: mostly done, a few dead with an error, the last run
half pending; then ``recount()``, as plain SQL bypasses the per-run counts the ledger keeps), 10k
resources and 1M events by raw ``executemany`` (instances, mostly deleted).

Timed, each in this process on the open ledger (median of 3):
* ``mcc ledger show`` = ``mcc.api.ledger_view()`` (every run's summary and every resource), and the
  whole ``mcc ledger show --json`` command as a subprocess, once (interpreter start-up included);
* a filtered query: ``queries.resources(kind="instance", state="active")`` and
  ``ledger_view(kind="instance", state="active")``;
* journal sync: ``mcc.driver.journal.apply_events`` of 100k synthetic queue events (50k subproblems of a
  new run, each ``claimed`` then ``acked``: 100k state changes).

Size: the number of subproblems (resources = size / 100, events = size).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from mcc.providers.local import processes
from bench import Context, Row, fmt_s
from bench.harness import median, tempdir

ID = "B5"
TITLE = "ledger at scale: ledger show, a filtered query, journal sync"
DEFAULT_SIZE = 1_000_000
SMOKE_SIZE = 20_000  # python -m bench --smoke: does it run here (figures not comparable)
RUNS = 10
SYNC_CHANGES = 100_000


def build(home: Path, n_subs: int, ctx: Context) -> dict[str, Any]:
    from mcc.ledger import create_row, create_subproblems, models, open_ledger, recount

    ledger = open_ledger(home)
    db = models.db
    t0 = time.perf_counter()
    per_run = n_subs // RUNS
    run_ids = []
    for r in range(RUNS):
        run = create_row(models.Run, backend="local", project_dir=f"/home/user/sweep{r}",
                         settings={"workers": 2, "chunk_size": 1}, points=per_run,
                         spec={"chunk_size": 1, "entry_kind": "function", "entry_target": "entry:compute",
                               "n_subproblems": per_run, "has_combiner": False, "n_dims": 3})
        create_subproblems(run, [(i, 1) for i in range(per_run)])
        run_ids.append(run.id)
    with db.atomic():
        for r, run_id in enumerate(run_ids):
            last = r == RUNS - 1
            db.execute_sql("UPDATE runs SET state = ?, done = ? WHERE id = ?",
                           ("running" if last else "completed", per_run // 2 if last else per_run, run_id))
            db.execute_sql("UPDATE subproblems SET state = 'done', attempts = 1, worker = 'w-0001' WHERE run_id = ?"
                           + (' AND "index" % 2 = 0' if last else ""), (run_id,))
            db.execute_sql("UPDATE subproblems SET state = 'dead', attempts = 3, error = 'point 7: ValueError: no "
                           "convergence' WHERE run_id = ? AND \"index\" % 997 = 1", (run_id,))
    recount()  # the states above were set by plain SQL, behind the ledger's counts
    ctx.log(f"  {n_subs:,} subproblems in {RUNS} runs: {time.perf_counter() - t0:.1f} s")
    t1 = time.perf_counter()
    rng = random.Random(1)
    n_res = max(1, n_subs // 100)
    now = time.time()
    kinds = ["instance"] * 18 + ["directory", "cache"]
    resources = []
    for i in range(n_res):
        kind = rng.choice(kinds)
        run_id = run_ids[i * RUNS // n_res]
        state = "active" if run_id == run_ids[-1] and rng.random() < 0.5 else "deleted"
        resources.append((run_id, kind, f"w-{i:05d}", "local", None, f"{100000 + i}@{i * 7}", state,
                          f"{run_id}/w-{i:05d}", json.dumps({"role": "worker"}),
                          json.dumps({"mcc:ledger": ledger.uuid, "mcc:run": run_id, "Name": f"w-{i:05d}"}),
                          json.dumps({"launched_at": now}), now, now, now, None if state == "active" else now))
    with db.atomic():
        db.executemany(
            'INSERT INTO resources (run_id, kind, name, backend, region, physical_id, state, idempotency_key, spec, '
            'tags, attrs, created_at, updated_at, active_at, deleted_at) '
            'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', resources)
    ctx.log(f"  {n_res:,} resources: {time.perf_counter() - t1:.1f} s")
    t2 = time.perf_counter()
    triggers = [("lease", "pending", "leased"), ("complete", "leased", "done")]
    batch: list[tuple[Any, ...]] = []
    with db.atomic():
        for i in range(n_subs):
            run_id = run_ids[i * RUNS // n_subs]
            trig, src, dest = triggers[i % 2]
            batch.append((now + i * 1e-3, "subproblem", str(i // 2), run_id, trig, src, dest, "w-0001", None))
            if len(batch) == 50_000:
                db.executemany('INSERT INTO events (at, entity, entity_id, run_id, "trigger", source, dest, actor, '
                               'reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)', batch)
                batch = []
        if batch:
            db.executemany('INSERT INTO events (at, entity, entity_id, run_id, "trigger", source, dest, actor, '
                           'reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)', batch)
    ctx.log(f"  {n_subs:,} events: {time.perf_counter() - t2:.1f} s")
    size_mb = (home / "ledger.db").stat().st_size / 2**20
    return {"ledger": ledger, "run_ids": run_ids, "resources": n_res, "events": n_subs, "file_mb": size_mb,
            "build_s": time.perf_counter() - t0}


def timed(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return median(times), out


def journal_sync(changes: int) -> float:
    """apply_events of ``changes`` synthetic events (claimed + acked per subproblem) on a new run."""
    from mcc.driver.journal import apply_events
    from mcc.ledger import create_row, create_subproblems, models

    n = changes // 2
    run = create_row(models.Run, backend="local", project_dir="/home/user/sync", settings={}, points=n,
                     spec={"chunk_size": 1})
    create_subproblems(run, [(i, 1) for i in range(n)])
    t = time.time()
    events = [{"id": f"{int(t * 1000)}-{i}", "type": "claimed", "sub": str(i), "worker": "w-0001",
               "t": f"{t:.6f}", "attempt": "1"} for i in range(n)]
    events += [{"id": f"{int(t * 1000) + 1}-{i}", "type": "acked", "sub": str(i), "worker": "w-0001",
                "t": f"{t:.6f}"} for i in range(n)]
    t0 = time.perf_counter()
    moved = apply_events(run, events)
    seconds = time.perf_counter() - t0
    if moved != changes:
        raise RuntimeError(f"apply_events moved {moved} rows, expected {changes}")
    return seconds


def run(size: int | None, ctx: Context) -> list[Row]:
    from mcc import api
    from mcc.ledger import queries

    n = size or DEFAULT_SIZE
    with tempdir("b5") as root:
        home = root / "home"
        built = build(home, n, ctx)
        try:
            show_s, doc = timed(lambda: api.ledger_view(home=home))
            filt_s, rows = timed(lambda: queries.resources(kind="instance", state="active"))
            filt_view_s, _ = timed(lambda: api.ledger_view(home=home, kind="instance", state="active"))
            t0 = time.perf_counter()
            cli = processes.run_bounded([sys.executable, "-m", "mcc.cli", "ledger", "show", "--json"],
                                           env={**os.environ, "MCC_HOME": str(home)}, capture_output=True,
                                           text=True, stdin=subprocess.DEVNULL, timeout=600)
            cli_s = time.perf_counter() - t0
            if cli.returncode != 0:
                raise RuntimeError(f"mcc ledger show failed: {cli.stderr[-2000:]}")
            t0 = time.perf_counter()
            processes.run_bounded([sys.executable, "-c", "import mcc.cli"], capture_output=True, timeout=120)
            import_s = time.perf_counter() - t0
            sync_s = journal_sync(SYNC_CHANGES)
        finally:
            built["ledger"].close()
    ctx.log(f"  ledger show {show_s:.3f} s; filtered {filt_s:.3f} s; CLI {cli_s:.2f} s; sync {sync_s:.2f} s")
    scale = f"{n:,} subproblems in {RUNS} runs, {built['resources']:,} resources, {built['events']:,} events " \
            f"({built['file_mb']:.0f} MB)"
    data = {**{k: v for k, v in built.items() if k != "ledger"}, "ledger_show_s": show_s, "filtered_s": filt_s,
            "filtered_view_s": filt_view_s, "cli_s": cli_s, "python_import_mcc_cli_s": import_s,
            "journal_sync_s": sync_s, "resources_shown": len(doc["resources"]), "filtered_rows": len(rows)}
    return [
        Row("B5", f"`mcc ledger show`: api.ledger_view() over {scale}; median of 3",
            fmt_s(show_s), "—", "—", "< 1 s", show_s < 1.0,
            notes=f"whole `mcc ledger show --json` command: {fmt_s(cli_s)} (of which interpreter + imports "
                  f"{fmt_s(import_s)}); {len(doc['resources']):,} resources listed", data=data),
        Row("B5/filter", "filtered query: queries.resources(kind='instance', state='active'); median of 3",
            fmt_s(filt_s), "—", "—", "< 1 s", filt_s < 1.0,
            notes=f"{len(rows):,} rows; `ledger show --kind instance --state active` (api): {fmt_s(filt_view_s)}",
            data=data),
        Row("B5/sync", f"journal sync: mcc.driver.journal.apply_events of {SYNC_CHANGES:,} state changes "
                       f"({SYNC_CHANGES // 2:,} subproblems claimed + acked) into that ledger",
            fmt_s(sync_s), "—", "—", "< 2 s", sync_s < 2.0, data=data),
    ]
