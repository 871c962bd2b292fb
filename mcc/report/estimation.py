"""What a sweep will take and cost before anything is launched: a timed sample, a schedule, the bill.

The model (pure functions, so a test can recompute every number):

- each worker instance runs ``processes`` worker processes (one per instance today: the worker is
  single-process); a subproblem of ``k`` points takes ``k x mean seconds per point`` of the sample;
- the subproblems are dealt to the free slots in queue order (list scheduling); compute = the makespan;
- wall = manager boot + worker boot + compute + combine; each worker instance lives worker boot +
  compute, the manager the whole wall time;
- every instance-run is billed per second with the 60-second minimum (mcc.report.pricing); workers at the
  on-demand table price or at the current spot price (the highest zone of the region: the fleet may land
  in any zone), the manager always on-demand; the bucket holds the points and the results for the wall
  time (S3 Standard); an ElastiCache queue bills node-hours.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from mcc.report import pricing

# Expected start-up, seconds (measured orders of magnitude, not the replacement timeouts of the settings).
BOOT_SECONDS = {"aws": 90.0, "aws_custom_image": 30.0, "local": 1.0}
MANAGER_BOOT_SECONDS = {"aws": 90.0, "aws_custom_image": 30.0, "local": 0.5}
COMBINE_SECONDS_PER_SUBPROBLEM = 0.002  # the manager appends each acked batch as it arrives
BYTES_PER_VALUE = 8


@dataclass(frozen=True)
class Schedule:
    """The predicted shape of a run on one candidate: seconds and instance counts."""

    compute_s: float
    wall_s: float
    worker_instances: int
    worker_life_s: float
    manager_life_s: float


def makespan(chunk_seconds: Iterable[float], slots: int) -> float:
    """Seconds until the last subproblem ends when each goes, in order, to the first free slot."""
    free = [0.0] * max(1, slots)
    end = 0.0
    for seconds in chunk_seconds:
        start = heapq.heappop(free)
        heapq.heappush(free, start + seconds)
        end = max(end, start + seconds)
    return end


def schedule(chunks: list[tuple[int, int]], seconds_per_point: float, workers: int, processes: int,
             boot_s: float, manager_boot_s: float) -> Schedule:
    """The run's predicted schedule (see the module doc)."""
    instances = max(1, min(workers, len(chunks)))
    compute = makespan((n * seconds_per_point for _, n in chunks), instances * max(1, processes))
    combine = COMBINE_SECONDS_PER_SUBPROBLEM * len(chunks)
    wall = manager_boot_s + boot_s + compute + combine
    return Schedule(compute, wall, instances, boot_s + compute, wall)


def bill(sched: Schedule, worker_usd_h: float | None, manager_usd_h: float | None) -> dict[str, float] | None:
    """USD for the instances of ``sched`` (None when a price is unknown)."""
    if worker_usd_h is None or manager_usd_h is None:
        return None
    return {"workers": sched.worker_instances * pricing.instance_cost(sched.worker_life_s, worker_usd_h),
            "manager": pricing.instance_cost(sched.manager_life_s, manager_usd_h)}


def bucket_cost(n_points: int, n_values_per_point: int, wall_s: float, usd_per_gb_month: float | None) -> float:
    """S3 Standard for the points and the results (float64 values) kept for the wall time."""
    gb = n_points * n_values_per_point * BYTES_PER_VALUE / 1e9
    return pricing.storage_cost(gb, wall_s, usd_per_gb_month)


# -- prices ---------------------------------------------------------------------------------------------------

@dataclass
class Prices:
    """Where the estimate's prices come from: the table (on-demand, vCPUs) and, when EC2 answers, the types
    it offers in the region and their current spot prices (``None``: EC2 was not asked or did not answer)."""

    region: str | None
    table: dict[str, Any]
    offered: set[str] | None = None
    spot: dict[str, dict[str, float]] | None = None
    cpus_ec2: dict[str, Any] | None = None  # type → mcc.providers.aws.market.Cpus
    ec2_note: str | None = None

    def on_demand(self, itype: str) -> float | None:
        if itype == pricing.LOCAL:
            return 0.0
        return self.table["regions"].get(self.region or "", {}).get(itype)

    def spot_price(self, itype: str) -> float | None:
        zones = (self.spot or {}).get(itype) or {}
        return max(zones.values()) if zones else None

    def vcpus(self, itype: str, hyperthreading: bool = True) -> int | None:
        """EC2's count (with SMT off: the physical cores), else the table's."""
        if itype == pricing.LOCAL:
            return 1
        cpus = (self.cpus_ec2 or {}).get(itype)
        return cpus.vcpus_with(hyperthreading) if cpus else self.table["vcpus"].get(itype)


def ec2_prices(region: str | None, types: list[str], *, spot: bool, profile: str | None = None,
               table: dict[str, Any] | None = None) -> Prices:
    """The table's prices, and EC2's word on ``types`` where credentials allow (read-only calls:
    DescribeInstanceTypeOfferings, DescribeInstanceTypes, DescribeSpotPriceHistory once per type)."""
    from mcc.errors import MccError
    from mcc.providers.aws import market
    from mcc.providers.aws.clients import AwsContext

    prices = Prices(region, table or pricing.load_table())
    try:
        ctx = AwsContext.create("", region=region, profile=profile)
        prices.region = ctx.region
        prices.offered = market.offered_types(ctx, types)
        prices.cpus_ec2 = market.instance_cpus(ctx, sorted(prices.offered)) if prices.offered else {}
        prices.spot = {t: market.spot_prices(ctx, t) for t in types if t in prices.offered} if spot else None
    except MccError as exc:
        prices.ec2_note = f"EC2 not asked ({str(exc).split('. ')[0]}): types checked against the price table only"
    return prices


# -- the estimate ---------------------------------------------------------------------------------------------

def check_types(types: list[str], prices: Prices, where: str) -> None:
    """Every candidate type is one EC2 offers in the region (or, without EC2's word, one the table prices)."""
    from mcc.errors import ConfigError
    import difflib

    known = prices.offered if prices.offered is not None else set(prices.table["regions"].get(prices.region or "", {}))
    if not types:
        raise ConfigError(f"{where}: `worker_types` is empty. Fix: name at least one instance type, "
                          f'e.g. worker_types = ["c6i.large", "c5.large"], or delete the line.')
    for itype in types:
        if itype == pricing.LOCAL or itype in known:
            continue
        catalogue = set(prices.table["vcpus"]) | known
        close = difflib.get_close_matches(itype, sorted(catalogue), n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        source = "EC2 (DescribeInstanceTypeOfferings)" if prices.offered is not None else "mcc's price table"
        raise ConfigError(f"{where}: instance type {itype!r} is not offered in {prices.region} according to "
                          f"{source}.{hint} Fix: use a type of `mcc prices --region {prices.region}`.")


def check_smt_off(types: list[str], prices: Prices, where: str) -> None:
    """With ``hyperthreading = false``: every worker type allows one thread per core, by EC2's word."""
    from mcc.errors import ConfigError, MccError
    from mcc.providers.aws import market

    for itype in types:
        try:
            market.smt_off(itype, (prices.cpus_ec2 or {}).get(itype))
        except MccError as exc:
            note = f" ({prices.ec2_note})" if prices.ec2_note else ""
            raise ConfigError(f"{where}: {exc}{note}. Nothing was created.") from None


def estimate_doc(*, backend: str, n_points: int, chunks: list[tuple[int, int]], values_per_point: int,
                 sample: dict[str, Any], workers: int, candidates: list[str], manager_type: str | None,
                 prices: Prices, spot: bool, custom_image: bool = False, queue: str = "manager",
                 cache_node_type: str | None = None, processes: Callable[[str], int] = lambda t: 1,
                 startup_s: tuple[float, float] | None = None, hyperthreading: bool = True) -> dict[str, Any]:
    """The estimate as one JSON-friendly document: the inputs, the assumptions, one row per candidate."""
    mean = sample["mean_s"]
    key = "aws_custom_image" if backend == "aws" and custom_image else backend
    manager_boot, boot = startup_s or (MANAGER_BOOT_SECONDS[key], BOOT_SECONDS[key])
    manager_price = 0.0 if backend == "local" else prices.on_demand(manager_type or "")
    s3 = pricing.packaged_table()["s3"]["standard_gb_month"].get(prices.region or "") if backend == "aws" else None
    rows = []
    for itype in candidates:
        procs = processes(itype)
        sched = schedule(chunks, mean, workers, procs, boot, manager_boot)
        on_demand, spot_usd_h = prices.on_demand(itype), prices.spot_price(itype)
        other = {"bucket": bucket_cost(n_points, values_per_point, sched.wall_s, s3)}
        if backend == "aws" and queue == "elasticache":
            other["elasticache"] = pricing.cache_cost(sched.wall_s, pricing.cache_price(cache_node_type or "", prices.region))
        costs = {}
        for market, usd_h in (("on_demand", on_demand), ("spot", spot_usd_h)):
            parts = bill(sched, usd_h, manager_price)
            costs[market] = None if parts is None else {**parts, **other, "total": sum(parts.values()) + sum(other.values())}
        rows.append({
            "instance_type": itype, "vcpus": prices.vcpus(itype, hyperthreading), "processes_per_worker": procs,
            "worker_instances": sched.worker_instances, "compute_s": sched.compute_s, "wall_s": sched.wall_s,
            "instance_hours": (sched.worker_instances * sched.worker_life_s + (sched.manager_life_s if backend == "aws" else 0)) / 3600,
            "billed_instance_hours": (sched.worker_instances * pricing.billed_seconds(sched.worker_life_s)
                                      + (pricing.billed_seconds(sched.manager_life_s) if backend == "aws" else 0)) / 3600,
            "on_demand_usd_per_hour": on_demand, "spot_usd_per_hour": spot_usd_h,
            "on_demand_usd": costs["on_demand"]["total"] if costs["on_demand"] else None,
            "spot_usd": costs["spot"]["total"] if costs["spot"] else None,
            "cost_parts": costs,
        })
    assumptions = [
        f"{mean:.4g} s per point: the mean of {len(sample['seconds'])} sampled point(s) "
        f"(min {sample['min_s']:.4g} s, max {sample['max_s']:.4g} s), timed on this machine",
        f"{len(chunks)} subproblem(s) of up to {max((n for _, n in chunks), default=0)} points dealt in order to "
        f"{workers} worker(s) x their processes (one worker process per instance)",
        f"start-up {manager_boot:.3g} s (manager) + {boot:.3g} s (workers)"
        + (", measured: one child process importing mcc's manager and worker" if startup_s else "")
        + f"; combine {COMBINE_SECONDS_PER_SUBPROBLEM * 1000:.0f} ms per subproblem",
    ]
    if sample.get("failed"):
        assumptions.append(f"{len(sample['failed'])} sampled point(s) failed and are left out: {sorted(sample['failed'])}")
    if backend == "aws":
        assumptions += [
            "billing per second with a 60-second minimum per instance-run (Linux On-Demand and Spot)",
            f"manager {manager_type} on-demand at {_usd_h(manager_price)} for the whole wall time; bucket S3 Standard "
            "for the points and results; requests and data transfer not included",
            f"on-demand prices: mcc's table of {prices.table['date']}"
            + (f" refreshed {prices.table['refreshed']['date']}" if prices.table.get("refreshed") else ""),
            "spot: the current DescribeSpotPriceHistory price, the highest zone of the region"
            if prices.spot is not None else "spot: not asked of EC2 (spot = false)" if not spot else "spot: unknown",
        ]
        if not hyperthreading:
            assumptions.append("workers with SMT off (hyperthreading = false): one thread per physical core, "
                               "vCPUs = cores")
        if prices.ec2_note:
            assumptions.append(prices.ec2_note)
    return {"backend": backend, "region": prices.region if backend == "aws" else None, "points": n_points,
            "subproblems": len(chunks), "chunk_size": max((n for _, n in chunks), default=0), "workers": workers,
            "spot": spot, "manager_type": manager_type if backend == "aws" else None, "sample": sample,
            "startup_s": {"manager": manager_boot, "workers": boot},
            "assumptions": assumptions, "candidates": rows}


def _usd_h(v: float | None) -> str:
    return "unknown $/h" if v is None else f"${v:.4g}/h"


def chosen(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The prediction for what the run uses: the first candidate, at spot if spot is on and priced."""
    if not doc or not doc.get("candidates"):
        return None
    row = doc["candidates"][0]
    usd = row["spot_usd"] if doc.get("spot") and row["spot_usd"] is not None else row["on_demand_usd"]
    return {"instance_type": row["instance_type"], "wall_s": row["wall_s"], "compute_s": row["compute_s"],
            "usd": usd, "market": "spot" if doc.get("spot") and row["spot_usd"] is not None else "on_demand"}


def local_startup_s() -> tuple[float, float]:
    """(manager, workers) start-up on this machine, measured: a child process importing what the local
    manager and a worker import, timed once (it reflects the machine's load as the run will meet it)."""
    import subprocess
    import sys
    import time

    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import mcc.remote.manager, mcc.remote.worker"], check=False, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    # the manager starts redis-server and itself, then the workers start: two process start-ups in a row
    return seconds, seconds


def for_run(settings: Any, n_points: int, n_dims: int, chunks: list[tuple[int, int]], sample: dict[str, Any],
            prices: Prices | None, worker_type: str | None = None, measure_startup: bool = False) -> dict[str, Any]:
    """:func:`estimate_doc` for validated ``settings`` (mcc.project.settings.Settings): the candidates are the
    [aws] table's ``worker_types`` (or ``worker_type``; ``worker_type`` given: that one), or ``local`` (with
    ``measure_startup``, its start-up measured by :func:`local_startup_s`)."""
    if settings.backend != "aws":
        return estimate_doc(backend="local", n_points=n_points, chunks=chunks, values_per_point=2 * n_dims + 1,
                            sample=sample, workers=settings.workers, candidates=[pricing.LOCAL], manager_type=None,
                            prices=prices or Prices(None, pricing.load_table()), spot=False,
                            startup_s=local_startup_s() if measure_startup else None)
    from mcc.backends.aws_settings import aws_settings

    aws = aws_settings(settings.aws)
    assert prices is not None
    return estimate_doc(backend="aws", n_points=n_points, chunks=chunks, values_per_point=2 * n_dims + 1,
                        sample=sample, workers=settings.workers,
                        candidates=[worker_type] if worker_type else aws.candidate_types,
                        manager_type=aws.manager_type, prices=prices, spot=aws.spot, custom_image=aws.custom_image,
                        queue=aws.queue, cache_node_type=aws.cache_node_type, hyperthreading=aws.hyperthreading)


def aws_prices(settings: Any, where: str) -> Prices:
    """EC2's prices for the run's candidate types, every type checked as offered (ConfigError if not)."""
    from mcc.backends.aws_settings import aws_settings

    aws = aws_settings(settings.aws)
    types = aws.candidate_types
    prices = ec2_prices(aws.region, sorted(set(types) | {aws.manager_type}), spot=aws.spot, profile=aws.profile)
    if not prices.region:
        from mcc.errors import ConfigError

        raise ConfigError("no AWS region to price the run in: set `region` in the [aws] table of mcc.toml, "
                          "pass --region, or set AWS_REGION.")
    check_types(types + [aws.manager_type], prices, where)
    if not aws.hyperthreading:
        check_smt_off(types, prices, where)
    return prices
