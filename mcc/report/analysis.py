"""What a run cost and how it went, from the ledger alone (never from logs).

Instance-seconds come from each instance resource's launch and terminate times (``attrs.launched_at`` /
``attrs.terminated_at`` where the launcher recorded them, else the resource's ``active_at`` / ``deleted_at``).
Cost follows AWS billing (see :mod:`mcc.report.pricing`): per second with a 60-second minimum per instance-run,
ElastiCache by node-hour, EBS and S3 by GB-month where a resource records its size. Local processes cost
0 but still count instance-seconds. Retries, preemptions and dead points come from the subproblems'
Events, stalls from the instances' deletion reasons.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from peewee import fn

from mcc.backends.slurm_cost import core_hour_usd, job_rows
from mcc.report import pricing
from mcc.ledger import current_ledger, models, open_ledger, queries

RUN_END_TRIGGERS = ("complete", "complete_with_failures", "stop_budget", "fail", "cancel")
LOCAL = pricing.LOCAL

# The columns of the original mCC's summary.txt (one row per run) and analysis.txt (one per instance type).
SUMMARY_COLUMNS = [
    "started", "run_id", "state", "instance_type", "instances", "vcpus", "wall_h", "hours_per_vcpu", "cost_usd",
    "cost_per_vcpu", "data_kb", "points", "done", "points_per_s", "instance_seconds", "cost_per_point",
    "retries", "preemptions", "stalls", "dead_points",
]
BY_TYPE_COLUMNS = [
    "instance_type", "runs", "instances", "avg_vcpus", "avg_total_hours", "avg_hours_per_vcpu", "avg_total_cost",
    "avg_cost_per_vcpu", "avg_cost_per_hour_per_vcpu", "points", "points_per_s", "instance_seconds", "cost_usd",
    "cost_per_point",
]


def _ensure_ledger(home: str | Path | None) -> None:
    if home is not None or current_ledger() is None:
        open_ledger(home)


def _region(run: models.Run, row: models.Resource | None = None) -> str | None:
    if row is not None and row.region:
        return row.region
    settings = run.settings or {}
    return settings.get("region") or (settings.get("aws") or {}).get("region")


def _configured(run: models.Run, key: str) -> Any:
    """A setting of the run, at the top level or in its [aws] table."""
    settings = run.settings or {}
    return settings.get(key, (settings.get("aws") or {}).get(key))


def _role(row: models.Resource) -> str:
    role = (row.spec or {}).get("role") or (row.attrs or {}).get("role")
    if role:
        return str(role)
    return "manager" if row.name == "manager" else "worker"


def _interval(row: models.Resource, now: float) -> tuple[float, float, bool]:
    """(start, end, still_running) of a resource's life."""
    attrs = row.attrs or {}
    start = next(t for t in (attrs.get("launched_at"), row.active_at, row.created_at) if t is not None)
    end = attrs.get("terminated_at") if attrs.get("terminated_at") is not None else row.deleted_at
    return float(start), float(end if end is not None else now), end is None


def instance_rows(run: models.Run, *, table: dict[str, Any] | None = None,
                  now: float | None = None) -> list[dict[str, Any]]:
    """One dict per instance resource of the run: role, type, times, seconds, price and cost."""
    now = time.time() if now is None else now
    table = table or pricing.load_table()
    out = []
    for row in queries.resources(run_id=run.id, kind="instance"):
        attrs = row.attrs or {}
        role = _role(row)
        itype = attrs.get("instance_type") or (
            LOCAL if row.backend == "local" else _configured(run, f"{role}_type") or "unknown")
        spot = bool(attrs["spot"] if "spot" in attrs else role == "worker" and _configured(run, "spot"))
        start, end, running = _interval(row, now)
        seconds = max(0.0, end - start)
        region = _region(run, row)
        per_hour = attrs.get("price_per_hour")
        if per_hour is None:
            per_hour = 0.0 if itype == LOCAL else table["regions"].get(region or "", {}).get(itype)
        cpus = attrs.get("vcpus") or (1 if itype == LOCAL else table["vcpus"].get(itype))
        local = itype == LOCAL
        out.append({
            "id": row.id, "name": row.name, "role": role, "instance_type": itype, "region": region,
            "spot": spot, "spot_at_on_demand": spot and attrs.get("price_per_hour") is None, "launched_at": start, "terminated_at": None if running else end,
            "running": running, "seconds": seconds,
            "billed_seconds": 0 if local else pricing.billed_seconds(seconds),
            "price_per_hour": per_hour, "priced": per_hour is not None, "vcpus": cpus,
            "cost_usd": pricing.instance_cost(seconds, per_hour),
        })
    return out


def _other_costs(run: models.Run, now: float) -> dict[str, float]:
    """ElastiCache node-hours, interface VPC endpoint hours, EBS and S3 storage, and any cost a resource recorded
    itself."""
    costs: dict[str, float] = defaultdict(float)
    for row in queries.resources(run_id=run.id):
        attrs = row.attrs or {}
        start, end, _ = _interval(row, now)
        seconds = max(0.0, end - start)
        region = _region(run, row)
        if "cost_usd" in attrs and row.kind != "instance":  # an instance's cost is computed, not taken
            costs[row.kind] += float(attrs["cost_usd"])
            continue
        if row.kind == "cache" and row.backend != "local":
            per_hour = attrs.get("price_per_hour") or pricing.cache_price(attrs.get("node_type", ""), region)
            costs["elasticache"] += pricing.cache_cost(seconds, per_hour) * int(attrs.get("num_nodes") or 1)
        if row.kind == "vpc_endpoint" and (row.spec or {}).get("endpoint_type") == "Interface":
            # billed per endpoint per zone per hour, like a cache node in whole hours (gateway endpoints are free)
            per_hour = pricing.packaged_table().get("vpc_endpoint", {}).get("interface_az_hour", {}).get(region or "")
            costs["vpc endpoints"] += pricing.cache_cost(seconds, per_hour) * len(row.spec.get("subnet_ids") or [None])
        if attrs.get("ebs_gb"):
            per_gb = attrs.get("ebs_price_per_gb_month") or pricing.packaged_table()["ebs"]["gp3_gb_month"].get(region or "")
            costs["ebs"] += pricing.storage_cost(float(attrs["ebs_gb"]), seconds, per_gb)
        if attrs.get("stored_gb") and row.kind == "bucket":
            per_gb = attrs.get("price_per_gb_month") or pricing.packaged_table()["s3"]["standard_gb_month"].get(region or "")
            costs["s3"] += pricing.storage_cost(float(attrs["stored_gb"]), seconds, per_gb)
    return dict(costs)


def peak_concurrency(intervals: Iterable[tuple[float, float, float]]) -> float:
    """The largest sum of weights of (start, end, weight) intervals open at one instant."""
    spans = list(intervals)
    edges = sorted([(s, 1, w) for s, _, w in spans] + [(e, 0, -w) for _, e, w in spans])
    level = peak = 0.0
    for _, _, delta in edges:  # ends (0) sort before starts (1) at the same instant
        level += delta
        peak = max(peak, level)
    return peak


def _run_times(run: models.Run, now: float) -> tuple[float | None, float | None, bool]:
    start = end = None
    for event in queries.events(run_id=run.id, entity="run"):
        if event.trigger == "start" and start is None:
            start = event.at
        if event.trigger in RUN_END_TRIGGERS:
            end = event.at
    finished = run.state in ("completed", "completed_with_failures", "stopped_budget", "failed", "cancelled",
                             "cleaning", "cleaned")
    if start is None:
        return None, None, finished
    return start, end if finished else now, finished


def _subproblem_counts(run: models.Run) -> Counter:
    ev = models.Event
    return Counter(dict(
        ev.select(ev.trigger, fn.COUNT(ev.id))
        .where((ev.run_id == run.id) & (ev.entity == "subproblem")).group_by(ev.trigger).tuples()
    ))


def _stalls(run: models.Run) -> int:
    ev = models.Event
    return (ev.select().where((ev.run_id == run.id) & (ev.entity == "resource") & (ev.trigger == "begin_delete")
                              & (ev.reason == "stalled")).count())


def analyze_run(run_id: str, *, home: str | Path | None = None, now: float | None = None) -> dict[str, Any]:
    """The run's numbers: instance type(s), workers, vCPUs, wall time, instance-seconds, cost and its parts,
    cost per point, points/s, retries, preemptions, stalls and dead points (see the module doc)."""
    _ensure_ledger(home)
    now = time.time() if now is None else now
    run = queries.get_run(run_id)
    table = pricing.load_table()
    instances = instance_rows(run, table=table, now=now)
    workers = [i for i in instances if i["role"] == "worker"]
    types = Counter(i["instance_type"] for i in instances)
    worker_types = sorted({i["instance_type"] for i in workers}) or sorted(types)
    start, end, finished = _run_times(run, now)
    wall = (end - start) if start is not None and end is not None else 0.0
    counts = _subproblem_counts(run)
    sub = models.Subproblem
    dead = list(sub.select(sub.n_points).where((sub.run == run.id) & (sub.state == "dead")).tuples())
    breakdown: dict[str, float] = defaultdict(float)
    for i in instances:
        breakdown[f"ec2 {i['instance_type']}" if i["instance_type"] != LOCAL else "local"] += i["cost_usd"]
    for kind, usd in _other_costs(run, now).items():
        breakdown[kind] += usd
    jobs = job_rows(run, now) if run.backend == "slurm" else []
    if jobs:
        breakdown["slurm core-hours"] += sum(j["cost_usd"] for j in jobs)
    cost = sum(breakdown.values())
    instance_seconds = sum(i["seconds"] for i in instances)
    vcpu_seconds = sum(i["seconds"] * (i["vcpus"] or 0) for i in instances)
    vcpus = peak_concurrency((i["launched_at"], i["terminated_at"] or now, i["vcpus"] or 0) for i in instances)
    done = run.done or (sub.select(fn.SUM(sub.n_points)).where((sub.run == run.id) & (sub.state == "done")).scalar() or 0)
    result = Path(run.result_path) if run.result_path else None
    unpriced = sorted({i["instance_type"] for i in instances if not i["priced"]})
    notes = []
    if unpriced:
        notes.append(f"no price for {', '.join(unpriced)}: counted as $0 (`mcc prices --refresh` may know it)")
    if any(i["spot_at_on_demand"] for i in instances):
        notes.append("spot instances without a recorded price are counted at the on-demand rate (an upper bound)")
    return {
        "run_id": run.id, "state": run.state, "backend": run.backend, "finished": finished,
        "region": _region(run), "started_at": start, "ended_at": end,
        "instance_type": "+".join(worker_types) if worker_types else None,
        "instance_types": dict(sorted(types.items())),
        "workers": (run.settings or {}).get("workers"), "worker_instances": len(workers),
        "peak_workers": int(peak_concurrency((w["launched_at"], w["terminated_at"] or now, 1) for w in workers)),
        "instances": len(instances), "vcpus": int(vcpus), "vcpu_seconds": vcpu_seconds,
        "wall_s": wall, "instance_seconds": instance_seconds,
        "billed_instance_seconds": sum(i["billed_seconds"] for i in instances),
        "cost_usd": cost, "cost_breakdown": dict(sorted(breakdown.items())), "cost_complete": not unpriced,
        "unpriced_instance_types": unpriced, "notes": notes,
        "points": run.points, "done": done, "dead_points": sum(n for (n,) in dead), "dead_subproblems": len(dead),
        "cost_per_point": cost / done if done else None,
        "points_per_s": done / wall if wall > 0 else None,
        "retries": counts.get("fail", 0), "preemptions": counts.get("release", 0), "stalls": _stalls(run),
        "data_kb": result.stat().st_size / 1024 if result is not None and result.exists() else None,
        "instance_runs": instances,
        "core_hours": sum(j["core_hours"] for j in jobs), "jobs": jobs,
        "estimate": estimate_beside_actual((run.spec or {}).get("estimate"), wall, cost, finished),
    }


def estimate_beside_actual(doc: dict[str, Any] | None, wall_s: float, cost_usd: float,
                           finished: bool) -> dict[str, Any] | None:
    """What the run's recorded estimate predicted (mcc.report.estimation.chosen) beside what happened, with the
    ratios actual/predicted (None until the run is finished, or where a prediction is 0 or unknown)."""
    from mcc.report.estimation import chosen

    predicted = chosen(doc) if doc else None
    if predicted is None:
        return None

    def ratio(actual: float, guess: float | None) -> float | None:
        return actual / guess if finished and guess else None

    return {**predicted, "actual_wall_s": wall_s, "actual_usd": cost_usd,
            "wall_ratio": ratio(wall_s, predicted["wall_s"]), "cost_ratio": ratio(cost_usd, predicted["usd"])}


def summary_row(a: dict[str, Any]) -> dict[str, Any]:
    """One analysis as a row of :data:`SUMMARY_COLUMNS` (the original's summary.txt, plus ours)."""
    vcpus = a["vcpus"] or 0
    wall_h = a["wall_s"] / 3600
    return {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["started_at"])) if a["started_at"] else "",
        "run_id": a["run_id"], "state": a["state"], "instance_type": a["instance_type"], "instances": a["instances"],
        "vcpus": vcpus, "wall_h": wall_h, "hours_per_vcpu": wall_h / vcpus if vcpus else None,
        "cost_usd": a["cost_usd"], "cost_per_vcpu": a["cost_usd"] / vcpus if vcpus else None,
        "data_kb": a["data_kb"], "points": a["points"], "done": a["done"], "points_per_s": a["points_per_s"],
        "instance_seconds": a["instance_seconds"], "cost_per_point": a["cost_per_point"], "retries": a["retries"],
        "preemptions": a["preemptions"], "stalls": a["stalls"], "dead_points": a["dead_points"],
    }


def analyze_by_type(run_ids: Iterable[str] | None = None, *, home: str | Path | None = None,
                    now: float | None = None) -> list[dict[str, Any]]:
    """Runs aggregated by their workers' instance type (the original's analysis.txt columns, plus totals).

    ``run_ids`` None = every run in the ledger.
    """
    _ensure_ledger(home)
    ids = list(run_ids) if run_ids is not None else [r.id for r in queries.list_runs()]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run_id in ids:
        a = analyze_run(run_id, now=now)
        groups[a["instance_type"] or "none"].append(a)
    rows = []
    for itype, runs in sorted(groups.items()):
        n = len(runs)
        rows_ = [summary_row(a) for a in runs]
        hours = [r["wall_h"] for r in rows_]
        per_vcpu_h = [r["hours_per_vcpu"] for r in rows_ if r["hours_per_vcpu"] is not None]
        per_vcpu_cost = [r["cost_per_vcpu"] for r in rows_ if r["cost_per_vcpu"] is not None]
        vcpu_hours = sum(a["vcpu_seconds"] for a in runs) / 3600
        done = sum(a["done"] for a in runs)
        wall = sum(a["wall_s"] for a in runs)
        cost = sum(a["cost_usd"] for a in runs)
        rows.append({
            "instance_type": itype, "runs": n, "instances": sum(a["instances"] for a in runs),
            "avg_vcpus": sum(a["vcpus"] for a in runs) / n, "avg_total_hours": sum(hours) / n,
            "avg_hours_per_vcpu": sum(per_vcpu_h) / len(per_vcpu_h) if per_vcpu_h else None,
            "avg_total_cost": cost / n,
            "avg_cost_per_vcpu": sum(per_vcpu_cost) / len(per_vcpu_cost) if per_vcpu_cost else None,
            "avg_cost_per_hour_per_vcpu": cost / vcpu_hours if vcpu_hours else None,
            "points": done, "points_per_s": done / wall if wall else None,
            "instance_seconds": sum(a["instance_seconds"] for a in runs), "cost_usd": cost,
            "cost_per_point": cost / done if done else None,
        })
    return rows


def to_tsv(rows: Iterable[dict[str, Any]], columns: list[str]) -> str:
    """Tab-separated text with a header line; floats with 6 significant digits, None as empty."""
    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    lines = ["\t".join(columns)] + ["\t".join(cell(r.get(c)) for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


# -- the live cost of a run (for `mcc run`'s live view and the run/status JSON) ---------------------------

def projected_cost(so_far_usd: float, burn_usd_per_hour: float, remaining_points: int,
                   points_per_s: float | None, prepaid: Iterable[tuple[float, float]] = ()) -> float | None:
    """The run's projected total: cost so far + (remaining points / current rate) x current burn rate,
    less what running instances have already paid for: ``prepaid`` is (USD/hour, seconds billed but not
    yet lived) per running instance — the 60-second minimum of a young one is in the cost so far already.

    Nothing left to do (or nothing burning) → the cost so far. Points left but no rate yet → None (unknown).
    """
    if remaining_points <= 0 or burn_usd_per_hour <= 0:
        return so_far_usd
    if not points_per_s or points_per_s <= 0:
        return None
    seconds = remaining_points / points_per_s
    credit = sum(per_hour * min(seconds, ahead) for per_hour, ahead in prepaid) / 3600.0
    return so_far_usd + seconds * burn_usd_per_hour / 3600.0 - credit


def _prepaid(instances: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(USD/hour, seconds billed beyond the time lived) of each running instance (see :func:`projected_cost`)."""
    return [(i["price_per_hour"] or 0.0, max(0.0, i["billed_seconds"] - i["seconds"]))
            for i in instances if i["running"] and i["price_per_hour"]]


def _burn_per_hour(run: models.Run, instances: list[dict[str, Any]], table: dict[str, Any]) -> float:
    """USD per hour of what is running now: live instances at their price, live cache nodes at theirs."""
    burn = sum(i["price_per_hour"] or 0.0 for i in instances if i["running"])
    for row in queries.resources(run_id=run.id, kind="cache"):
        attrs = row.attrs or {}
        if row.backend == "local" or row.deleted_at is not None or attrs.get("terminated_at") is not None:
            continue
        per_hour = attrs.get("price_per_hour") or pricing.cache_price(attrs.get("node_type", ""), _region(run, row))
        burn += (per_hour or 0.0) * int(attrs.get("num_nodes") or 1)
    return burn


def cost_figures(run: models.Run, *, done: int | None = None, dead: int | None = None,
                 points_per_s: float | None = None, now: float | None = None) -> dict[str, Any]:
    """Cost so far, current burn rate and projected total of ``run``, from the ledger.

    So far: every instance from its launch to its termination (or now) at its recorded price, per second
    with the 60-second minimum, plus ElastiCache node-hours, EBS and S3 (as :func:`analyze_run`). Burn: the
    $/hour of what is running now. Projected: :func:`projected_cost` with ``points_per_s`` (the live view's
    measured rate) or, without it, the points done since the run started over the time since. Local runs
    cost nothing and read nothing.
    """
    done = run.done if done is None else done
    dead = run.dead if dead is None else dead
    remaining = max(0, (run.points or 0) - done - dead)
    finished = run.state not in ("draft", "provisioning", "launching", "running", "combining", "collecting")
    if run.backend == "local":
        return {"local": True, "so_far_usd": 0.0, "burn_usd_per_hour": 0.0, "projected_usd": 0.0, "prepaid": [],
                "points_per_s": points_per_s, "remaining_points": remaining, "complete": True, "finished": finished}
    now = time.time() if now is None else now
    table = pricing.load_table()
    instances = instance_rows(run, table=table, now=now)
    so_far = sum(i["cost_usd"] for i in instances) + sum(_other_costs(run, now).values())
    burn = 0.0 if finished else _burn_per_hour(run, instances, table)
    jobs = job_rows(run, now) if run.backend == "slurm" else []
    if jobs:  # core-hours at core_hour_usd; the burn is what runs now
        so_far += sum(j["cost_usd"] for j in jobs)
        burn += core_hour_usd(run) * sum(j["cpus"] for j in jobs if j["running"])
    prepaid = [] if finished else _prepaid(instances)
    if points_per_s is None and not finished:
        start, _, _ = _run_times(run, now)
        if start is not None and now > start and done + dead > 0:
            points_per_s = (done + dead) / (now - start)
    return {
        "local": False, "so_far_usd": so_far, "burn_usd_per_hour": burn,
        "projected_usd": so_far if finished else projected_cost(so_far, burn, remaining, points_per_s, prepaid),
        "prepaid": prepaid, "points_per_s": points_per_s, "remaining_points": 0 if finished else remaining,
        "complete": all(i["priced"] for i in instances), "finished": finished,
        **({"core_hours": sum(j["core_hours"] for j in jobs), "slurm_jobs": [j["job_id"] for j in jobs]}
           if run.backend == "slurm" else {}),
    }


class CostMeter:
    """The live view's cost: measures the rate between calls and recomputes the figures at most every
    ``every`` seconds (they read the ledger)."""

    def __init__(self, every: float = 2.0, clock: Any = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self.first: tuple[float, int] | None = None
        self.last_at: float | None = None
        self.figures: dict[str, Any] | None = None

    def update(self, run: models.Run, progress: dict[str, Any] | None) -> dict[str, Any]:
        """Figures for ``run`` given the manager's latest ``progress`` document (None before the first one)."""
        p = (progress or {}).get("progress") or {}
        done, dead = p.get("done_points", run.done), p.get("dead_points", run.dead)
        now = self.clock()
        if progress is not None and self.first is None:
            self.first = (now, done + dead)
        rate = None
        if self.first is not None and now - self.first[0] >= 1.0 and done + dead > self.first[1]:
            rate = (done + dead - self.first[1]) / (now - self.first[0])
        if self.figures is None or self.last_at is None or now - self.last_at >= self.every:
            self.figures = cost_figures(run, done=done, dead=dead, points_per_s=rate)
            self.last_at = now
            return self.figures
        # between ledger reads: the same cost so far and burn, the projection from the latest counts
        f = self.figures
        remaining = 0 if f["finished"] else max(0, (run.points or 0) - done - dead)
        rate = rate or f["points_per_s"]
        projected = f["so_far_usd"] if f["finished"] else projected_cost(f["so_far_usd"], f["burn_usd_per_hour"],
                                                                          remaining, rate, f["prepaid"])
        return {**f, "remaining_points": remaining, "points_per_s": rate, "projected_usd": projected}


# -- the worker timeline (for plots) ------------------------------------------------------------------

def worker_timeline(run_id: str, *, home: str | Path | None = None, now: float | None = None) -> dict[str, Any]:
    """Per worker, its life and one bar per subproblem attempt, from the subproblems' Events.

    Returns ``{"workers": [ids], "bars": [{worker, sub, leased_at, start, end, outcome}], "lives":
    {worker: (launched, terminated)}, "t0": first time}``. ``outcome`` is done, failed or preempted;
    ``start`` is the lease time, or the worker's previous end when it held several leases at once.
    """
    _ensure_ledger(home)
    now = time.time() if now is None else now
    run = queries.get_run(run_id)
    lives = {}
    for i in instance_rows(run, now=now):
        if i["role"] == "worker":
            lives[i["name"]] = (i["launched_at"], i["terminated_at"] or now)
    ev = models.Event
    events = (ev.select(ev.entity_id, ev.trigger, ev.actor, ev.at)
              .where((ev.run_id == run.id) & (ev.entity == "subproblem") & (ev.entity_id != "*"))
              .order_by(ev.id).tuples())
    sub = models.Subproblem
    index_of = {str(i): k for i, k in sub.select(sub.id, sub.index).where(sub.run == run.id).tuples()}
    open_leases: dict[str, tuple[str, float]] = {}
    bars = []
    outcome_of = {"complete": "done", "fail": "failed", "release": "preempted"}
    for sub_id, trigger, actor, at in events:
        if trigger == "lease":
            open_leases[sub_id] = (actor, at)
        elif trigger in outcome_of and sub_id in open_leases:
            worker, leased = open_leases.pop(sub_id)
            bars.append({"worker": worker, "sub": index_of.get(sub_id, -1), "leased_at": leased, "start": leased,
                         "end": max(at, leased), "outcome": outcome_of[trigger]})
    for sub_id, (worker, leased) in open_leases.items():  # still leased (a live run)
        bars.append({"worker": worker, "sub": index_of.get(sub_id, -1), "leased_at": leased, "start": leased, "end": now,
                     "outcome": "leased"})
    by_worker: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for bar in bars:
        by_worker[bar["worker"]].append(bar)
    for worker_bars in by_worker.values():
        worker_bars.sort(key=lambda b: (b["end"], b["leased_at"]))
        previous = None
        for bar in worker_bars:
            if previous is not None:
                bar["start"] = min(bar["end"], max(bar["leased_at"], previous))
            previous = bar["end"]
    workers = sorted(set(lives) | set(by_worker))
    times = [b["leased_at"] for b in bars] + [s for s, _ in lives.values()]
    return {"run_id": run.id, "workers": workers, "bars": bars, "lives": lives, "t0": min(times) if times else now}


def utilisation(timeline: dict[str, Any], *, steps: int = 200) -> dict[str, list[float]]:
    """Busy and alive workers sampled at ``steps`` instants (seconds since the timeline's t0)."""
    lives = list(timeline["lives"].values())
    bars = timeline["bars"]
    ends = [e for _, e in lives] + [b["end"] for b in bars]
    t0 = timeline["t0"]
    t1 = max(ends) if ends else t0
    if t1 <= t0:
        return {"t": [], "busy": [], "alive": [], "utilisation": []}
    ts = [t0 + (t1 - t0) * k / (steps - 1) for k in range(steps)]
    busy = [sum(1 for b in bars if b["start"] <= t < b["end"]) for t in ts]
    alive = [sum(1 for s, e in lives if s <= t < e) for t in ts]
    util = [b / a if a else 0.0 for b, a in zip(busy, alive)]
    return {"t": [t - t0 for t in ts], "busy": busy, "alive": alive, "utilisation": util}
