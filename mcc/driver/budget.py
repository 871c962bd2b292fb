"""A run's hard budget, the laptop's side: check it before anything exists, hand it to the manager.

The manager enforces the cap (remote/budget.py) with the laptop gone: before each manager launch the
laptop writes ``budget.json`` into the run's bucket prefix with the cap and ``prior_usd``, what the run
cost so far outside the manager's own view (earlier manager instances, the queue's cache, storage). The
manager adds its own instance and every worker record of the run (prices recorded at launch).
"""
from __future__ import annotations

from typing import Any

from mcc.report import pricing
from mcc.errors import ConfigError, MccError
from mcc.ledger import models
from mcc.work.runspec import BUDGET
from mcc.work.stores import Store, put_json


def minimum_usd(prices: Any, manager_type: str, worker_types: list[str], spot: bool) -> float | None:
    """What the smallest useful run bills: the manager's 60-second minimum plus one worker's (the cheapest
    candidate, at its spot price when spot is on and known). None when a price is unknown."""
    manager = prices.on_demand(manager_type)
    workers = [p for p in ((prices.spot_price(t) if spot else None) or prices.on_demand(t) for t in worker_types)
               if p is not None]
    if manager is None or not workers:
        return None
    return pricing.instance_cost(0, manager) + pricing.instance_cost(0, min(workers))


def check_budget(budget: float | None, minimum: float | None, where: str) -> None:
    """A budget must be > 0 and at least the run's 60-second minimum (ConfigError naming ``where``)."""
    if budget is None:
        return
    if not budget > 0:
        raise ConfigError(f"{where}: `budget_usd` (--budget) must be an amount in USD > 0, got {budget}.")
    if minimum is not None and budget < minimum:
        raise ConfigError(
            f"{where}: a budget of ${budget:.6g} is below what the run bills in its first minute (${minimum:.6g}: "
            "the manager's 60-second minimum and one worker's; EC2 bills every instance-run 60 s at least). "
            f"Fix: a budget of at least ${minimum:.6g}, or no budget.")


def spent_usd(run: models.Run) -> float:
    """The run's cost so far by the ledger (mcc.report.analysis.cost_figures)."""
    from mcc.report.analysis import cost_figures

    return float(cost_figures(run)["so_far_usd"])


def prior_usd(run: models.Run) -> float:
    """What the run cost so far outside the manager's view: every non-worker instance (earlier managers) and
    the other resources (cache, storage). Workers are counted by the manager from their records."""
    from mcc.report.analysis import _other_costs, instance_rows

    import time

    now = time.time()
    return (sum(i["cost_usd"] for i in instance_rows(run, now=now) if i["role"] != "worker")
            + sum(_other_costs(run, now).values()))


def publish(store: Store, run: models.Run) -> dict[str, Any] | None:
    """Write ``budget.json`` for the next manager of ``run`` (None and nothing written without a budget)."""
    cap = ((run.settings or {}).get("aws") or {}).get("budget_usd")
    if cap is None:
        return None
    doc = {"budget_usd": float(cap), "prior_usd": prior_usd(run)}
    put_json(store, BUDGET, doc)
    return doc


def raise_budget(run: models.Run, budget: float | None) -> models.Run:
    """Set a new cap on a run stopped by its budget; it must exceed what the run has spent."""
    if budget is None:
        raise MccError(f"run {run.id} stopped at its budget; give a larger one: `mcc resume {run.id} --budget N`.")
    spent = spent_usd(run)
    if not budget > spent:
        raise ConfigError(f"--budget {budget:.6g} is not above what run {run.id} has already spent (${spent:.6g}). "
                          f"Fix: `mcc resume {run.id} --budget N` with N > {spent:.6g}.")
    settings = {**(run.settings or {}), "aws": {**((run.settings or {}).get("aws") or {}), "budget_usd": float(budget)}}
    models.Run.update(settings=settings).where(models.Run.id == run.id).execute()
    run.settings = settings
    return run
