"""A run's hard budget, the laptop's side: check it before anything exists, hand it to the manager.

The manager enforces the cap (remote/budget.py) with the laptop gone: before each manager launch the
laptop writes ``budget.json`` into the run's bucket prefix with the cap and ``prior_usd``, what the run
cost so far outside the manager's own view (earlier manager instances, the queue's cache, storage). The
manager adds its own instance and every worker record of the run (prices recorded at launch).

The manager keeps a reserve back (remote/budget.py): what the run may bill if it dies, a replacement
manager's 60-second minimum among it. So the smallest budget a run accepts counts that reserve, and the
laptop launches no manager whose own minimum would cross the cap: it stops the run as ``stopped_budget``
instead, the done results kept in the bucket for `mcc resume RUN --budget N`.
"""
from __future__ import annotations

from typing import Any

from mcc.errors import ConfigError, MccError
from mcc.ledger import models
from mcc.remote.budget import tail_usd
from mcc.report import pricing
from mcc.work.runspec import BUDGET, RunSpec
from mcc.work.stores import Store, put_json


def minimum_usd(prices: Any, manager_type: str, worker_types: list[str], spot: bool) -> float | None:
    """The smallest budget with which a run gets anything done: the manager's 60-second minimum plus one
    worker's (the cheapest candidate, at its spot price when spot is on and known), and the reserve the manager
    keeps back for its own loss (a replacement manager's minimum, the worker's tail). None when a price is
    unknown."""
    manager = prices.on_demand(manager_type)
    workers = [p for p in ((prices.spot_price(t) if spot else None) or prices.on_demand(t) for t in worker_types)
               if p is not None]
    if manager is None or not workers:
        return None
    worker = min(workers)
    return (2 * pricing.instance_cost(0, manager) + pricing.instance_cost(0, worker)
            + tail_usd(worker, RunSpec.idle_exit_seconds))


def check_budget(budget: float | None, minimum: float | None, where: str) -> None:
    """A budget must be > 0 and at least the run's 60-second minimum (ConfigError naming ``where``)."""
    if budget is None:
        return
    if not budget > 0:
        raise ConfigError(f"{where}: `budget_usd` (--budget) must be an amount in USD > 0, got {budget}.")
    if minimum is not None and budget < minimum:
        raise ConfigError(
            f"{where}: a budget of ${budget:.6g} is below what the run bills in its first minute (${minimum:.6g}: "
            "the manager's 60-second minimum and one worker's, as EC2 bills every instance-run 60 s at least, and "
            "the reserve the manager keeps in case it is lost: a second manager-minute and the worker's "
            f"{RunSpec.idle_exit_seconds:.0f} s without a manager). Fix: a budget of at least ${minimum:.6g}, or no "
            "budget.")


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


def manager_refused(run: models.Run, manager_usd_per_hour: float | None, spent: float) -> str | None:
    """Why no manager may be launched for ``run`` now (None: it may): its 60-second minimum on top of what the
    run has ``spent`` would cross the cap. The reason is the ``stop_budget`` Event's."""
    cap = ((run.settings or {}).get("aws") or {}).get("budget_usd")
    if cap is None:
        return None
    minute = pricing.instance_cost(0, manager_usd_per_hour)
    if spent + minute <= float(cap):
        return None
    left = (run.points or 0) - (run.done or 0) - (run.dead or 0)
    return (f"budget: spent ${spent:.6f} of ${float(cap):.6f}; a new manager's 60-second minimum (${minute:.6f}) "
            f"would cross it, so none was launched; {left} point(s) left, the done ones' results kept in the bucket. "
            f"`mcc resume {run.id} --budget N` combines them and continues with a larger cap.")


def segment_minimum_usd(run: models.Run) -> float:
    """What going on with ``run`` bills before its manager can do anything (minimum_usd at on-demand prices:
    the laptop asks EC2 for no spot price on resume)."""
    from mcc.backends.aws_settings import aws_settings
    from mcc.report.analysis import _region
    from mcc.report.estimation import Prices

    aws = aws_settings((run.settings or {}).get("aws"))
    prices = Prices(_region(run), pricing.load_table())
    return minimum_usd(prices, aws.manager_type, aws.candidate_types, spot=False) or 0.0


def raise_budget(run: models.Run, budget: float | None) -> models.Run:
    """Set a new cap on a run stopped by its budget; it must exceed what the run has spent by at least what
    going on bills first (segment_minimum_usd)."""
    if budget is None:
        raise MccError(f"run {run.id} stopped at its budget; give a larger one: `mcc resume {run.id} --budget N`.")
    spent = spent_usd(run)
    need = spent + segment_minimum_usd(run)
    if not budget >= need:
        raise ConfigError(f"--budget {budget:.6g} is not enough for run {run.id}: it has already spent ${spent:.6g}, "
                          f"and going on bills ${need - spent:.6g} before anything is computed (a manager's and a "
                          f"worker's 60-second minimum and the manager's reserve). Fix: `mcc resume {run.id} "
                          f"--budget N` with N >= {need:.6g}.")
    settings = {**(run.settings or {}), "aws": {**((run.settings or {}).get("aws") or {}), "budget_usd": float(budget)}}
    models.Run.update(settings=settings).where(models.Run.id == run.id).execute()
    run.settings = settings
    return run
