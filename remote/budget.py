"""A run's hard budget, the manager's side: what the run has spent, and whether it may go on.

Spend is priced exactly as ``mcc analyze`` prices it (per second, 60-second minimum per instance-run):
``prior_usd`` from the laptop's ``budget.json`` (earlier managers, cache, storage), this manager's own
instance from its EC2 LaunchTime at its on-demand price, and every worker record of the run at the price
recorded at launch. The records are read from the bucket once, at start; after that the fleet's own
launches and terminations keep them (no calls per tick that grow with the fleet).

Each tick the manager asks two questions, both about ``spend(at)``: everything billed by time ``at`` if
what runs now keeps running until then (a running instance bills at least its 60 s), with a *reserve* kept
back for the case that this manager dies (a SIGKILL, a lost instance) in the middle of it all:

- may k more workers start? Only if spend(next check) + the reserve + k new workers' share of it (their
  60-second minimum and their tail, below) stays within the cap;
- must the run drain? When spend(next check + the time to finish the subproblems in hand and shut down)
  + the reserve would cross the cap: the queue stops leasing, the workers finish what they hold, the run
  stops.

The reserve is what the run can still bill once this manager is gone and before anything stops it: a
replacement manager's 60-second minimum (the laptop relaunches one; it finds the run over its projection,
drains at once and combines what is done), and every running worker's *tail* — a worker with no manager
keeps its instance until it gives up on an empty or unreachable queue (``RunSpec.idle_exit_seconds``).
With the laptop gone too, nobody relaunches, and the workers' tails are all that is billed. The laptop
refuses to launch a manager whose minimum would cross the cap (mcc/driver/budget.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable

from mcc.report import pricing
from mcc.work.runspec import BUDGET, INSTANCES
from mcc.work.stores import Store, get_json

log = logging.getLogger("manager")
SHUTDOWN_SECONDS = 20.0  # combine, upload, the laptop's collect and the manager's termination


@dataclass
class Interval:
    """One instance-run: start, end (None: still running) and $/hour (None: unpriced, counted at 0)."""

    start: float
    end: float | None
    usd_per_hour: float | None


def spend(intervals: Iterable[Interval], at: float) -> float:
    """USD billed by time ``at`` if every running instance runs until then."""
    return sum(pricing.instance_cost((i.end if i.end is not None else at) - i.start, i.usd_per_hour)
               for i in intervals)


def launch_allowance(budget: float, spent_next: float, per_worker_usd: float, wanted: int) -> int:
    """How many of ``wanted`` workers can start without the cap being crossed, each costing ``per_worker_usd``
    at least (its 60-second minimum and its share of the reserve)."""
    if wanted <= 0:
        return 0
    if per_worker_usd <= 0:
        return wanted
    return max(0, min(wanted, int((budget - spent_next) // per_worker_usd)))


def tail_usd(usd_per_hour: float | None, tail_seconds: float) -> float:
    """What one worker bills with no manager, before it exits on its own (0 when unpriced)."""
    return (usd_per_hour or 0.0) * tail_seconds / 3600.0


class BudgetGuard:
    """The cap of one run, as the manager enforces it (see the module doc)."""

    def __init__(self, store: Store, aws: dict[str, Any], manager_started: float, tick_seconds: float,
                 seconds_per_subproblem: float, tail_seconds: float = 0.0) -> None:
        doc = get_json(store, BUDGET) or {}
        self.budget = float(doc["budget_usd"]) if doc.get("budget_usd") is not None else None
        self.prior = float(doc.get("prior_usd") or 0.0)
        prices = aws.get("on_demand_prices") or {}
        self.manager = Interval(manager_started, None, prices.get(aws.get("manager_type")))
        self.worker_price = max((p for t, p in prices.items() if t in (aws.get("worker_types") or []) and p),
                                default=None)
        self.tick = tick_seconds
        self.sub_seconds = seconds_per_subproblem
        self.tail = tail_seconds  # a worker's life with no manager (RunSpec.idle_exit_seconds)
        self.records: dict[str, Interval] = {}
        if self.budget is not None:
            for key in store.list(INSTANCES):
                self.note(get_json(store, key) or {})

    @property
    def active(self) -> bool:
        return self.budget is not None

    def note(self, record: dict[str, Any]) -> None:
        """A worker's instance record, as written at launch or termination."""
        if record.get("role") == "worker" and record.get("launched_at") is not None:
            self.records[record["worker_id"]] = Interval(float(record["launched_at"]), record.get("terminated_at"),
                                                         record.get("price_per_hour"))
            if record.get("price_per_hour") and record.get("instance_type"):
                self.worker_price = max(self.worker_price or 0.0, float(record["price_per_hour"]))

    def spent(self, at: float | None = None) -> float:
        at = time.time() if at is None else at
        return self.prior + spend([self.manager, *self.records.values()], at)

    def reserve(self) -> float:
        """What the run may still bill if this manager dies now (see the module doc): a replacement manager's
        60-second minimum and the tail of every running worker."""
        running = sum(tail_usd(i.usd_per_hour, self.tail) for i in self.records.values() if i.end is None)
        return pricing.instance_cost(0, self.manager.usd_per_hour) + running

    def allow(self, wanted: int, now: float | None = None) -> int:
        """Workers that may start now (all of ``wanted`` without a budget)."""
        if self.budget is None:
            return wanted
        now = time.time() if now is None else now
        per_worker = pricing.instance_cost(0, self.worker_price) + tail_usd(self.worker_price, self.tail)
        allowed = launch_allowance(self.budget - self.reserve(), self.spent(now + self.tick), per_worker, wanted)
        if allowed < wanted:
            log.info("budget: launching %d of %d wanted worker(s); more would cross $%.6f (spent $%.6f)",
                     allowed, wanted, self.budget, self.spent(now))
        return allowed

    def must_drain(self, now: float | None = None) -> bool:
        """True when finishing the work in hand after the next check, with the reserve kept, would cross the cap."""
        if self.budget is None:
            return False
        now = time.time() if now is None else now
        horizon = 2 * self.tick + self.sub_seconds + SHUTDOWN_SECONDS
        return self.spent(now + horizon) + self.reserve() > self.budget


def make_guard(rt: Any, fleet: Any, manager_id: str) -> BudgetGuard | None:
    """The guard of an AWS run with a budget (None otherwise): reads ``budget.json`` and the records once."""
    if rt.spec.extra.get("backend") != "aws":
        return None
    aws = rt.spec.extra["aws"]
    if not (get_json(rt.store, BUDGET) or {}).get("budget_usd"):
        return None  # no budget: not even the launch-time lookup
    started = fleet.launch_time(manager_id) or time.time()
    chunk = max((n for _, n in rt.spec.chunks), default=1)
    per_point = float(rt.spec.extra.get("seconds_per_point") or 0.0)
    guard = BudgetGuard(rt.store, aws, started, rt.spec.tick_seconds, max(rt.spec.lease_seconds, chunk * per_point),
                        tail_seconds=rt.spec.idle_exit_seconds)
    return guard if guard.active else None
