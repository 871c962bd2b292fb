"""The budget's arithmetic (remote/budget.py, mcc/driver/budget.py) and the queue's drain (withhold/restore)."""
from __future__ import annotations

import pytest

from mcc.driver.budget import check_budget, minimum_usd
from mcc.errors import ConfigError
from mcc.report.estimation import Prices
from mcc.report.pricing import load_table
from mcc.remote.budget import SHUTDOWN_SECONDS, BudgetGuard, Interval, launch_allowance, spend
from mcc.work.stores import LocalStore, put_json
from tests.test_queue import client, q, server  # noqa: F401 - fixtures

PRICE = 3.6  # $/h: a dollar per 1000 s, so the expected numbers read off directly


def test_spend_bills_per_second_with_the_minimum() -> None:
    runs = [Interval(0.0, 30.0, PRICE), Interval(0.0, None, PRICE), Interval(10.0, 200.5, PRICE), Interval(0, 99, None)]
    # 60 (minimum) + 100 (running until t=100) + 191 (ceil of 190.5)
    assert spend(runs, at=100.0) == pytest.approx((60 + 100 + 191) / 1000)


def test_launch_allowance_keeps_every_minimum_under_the_cap() -> None:
    assert launch_allowance(1.0, 0.5, 0.06, 10) == 8  # 0.06 each: 8 fit in the 0.5 left
    assert launch_allowance(1.0, 0.95, 0.06, 3) == 0
    assert launch_allowance(1.0, 0.0, 0.06, 3) == 3
    assert launch_allowance(1.0, 0.0, 0.0, 3) == 3  # unpriced: no cap can be computed
    assert launch_allowance(1.0, 0.0, 0.06, 0) == 0


def test_guard_drains_before_the_work_in_hand_would_cross(tmp_path) -> None:
    store = LocalStore(tmp_path / "bucket")
    put_json(store, "budget.json", {"budget_usd": 0.5, "prior_usd": 0.1})
    put_json(store, "instances/i-1", {"worker_id": "i-1", "role": "worker", "launched_at": 0.0, "price_per_hour": PRICE,
                                       "instance_type": "t3.micro"})
    aws = {"on_demand_prices": {"t3.small": PRICE, "t3.micro": PRICE}, "manager_type": "t3.small",
           "worker_types": ["t3.micro"]}
    guard = BudgetGuard(store, aws, manager_started=0.0, tick_seconds=1.0, seconds_per_subproblem=5.0,
                        tail_seconds=20.0)
    assert guard.active and guard.spent(at=10.0) == pytest.approx(0.1 + 0.06 + 0.06)
    # the reserve: a replacement manager's minute (0.06) and the running worker's 20 s without a manager
    assert guard.reserve() == pytest.approx(0.06 + 0.02)
    horizon = 2 * 1.0 + 5.0 + SHUTDOWN_SECONDS
    # 0.1 + 2 x t/1000 + 0.08 crosses 0.5 at t = 160: the drain starts when t + horizon does
    assert not guard.must_drain(now=159.0 - horizon)
    assert guard.must_drain(now=161.0 - horizon)
    # a new worker costs its minute and its tail (0.08) on top of the reserve:
    # 0.1 + 2 x (t + 1)/1000 + 0.08 + k x 0.08 <= 0.5
    assert guard.allow(2, now=70.0) == 2 and guard.allow(2, now=100.0) == 1 and guard.allow(1, now=130.0) == 0
    guard.note({"worker_id": "i-1", "role": "worker", "launched_at": 0.0, "terminated_at": 50.0, "price_per_hour": PRICE})
    assert guard.spent(at=100.0) == pytest.approx(0.1 + 0.06 + 0.1)  # the 50 s worker bills its minimum
    assert guard.reserve() == pytest.approx(0.06)  # a terminated worker has no tail


def test_no_budget_no_guard(tmp_path) -> None:
    guard = BudgetGuard(LocalStore(tmp_path / "bucket"), {}, 0.0, 1.0, 1.0)
    assert not guard.active and guard.allow(5) == 5 and not guard.must_drain()


def test_budget_minimum_is_the_first_minute_and_the_reserve() -> None:
    prices = Prices("us-east-1", load_table())
    minute = minimum_usd(prices, "t3.small", ["c6i.large", "c5.large"], spot=False)
    # two manager-minutes (its own and a replacement's), a worker's minute and its 120 s without a manager
    assert minute == pytest.approx((2 * 60 * 0.0208 + 60 * 0.085 + 120 * 0.085) / 3600)
    check_budget(minute, minute, "mcc.toml [aws]")
    with pytest.raises(ConfigError, match="first minute"):
        check_budget(minute * 0.99, minute, "mcc.toml [aws]")
    with pytest.raises(ConfigError, match="> 0"):
        check_budget(-1.0, minute, "mcc.toml [aws]")


def test_withhold_stops_new_leases_and_restore_gives_them_back(q) -> None:  # noqa: F811
    q.seed([1] * 6, 3)
    held = q.claim("w1", 2, 30)
    assert q.withhold() == 4
    assert q.claim("w2", 5, 30) == []  # nothing new is leased while the run drains
    assert q.ack("w1", held[0])  # held leases go on
    assert q.withhold() == 0
    assert q.restore_withheld() == 4
    assert sorted(q.claim("w2", 10, 30)) == [2, 3, 4, 5]


def test_a_supervised_queue_leases_only_while_a_manager_holds_the_lock(q) -> None:  # noqa: F811
    q.seed([1] * 4, 3)
    assert q.claim("w1", 1, 30) == [0]  # not asked for yet: leases as always
    q.lease_only_under_manager()
    assert q.claim("w1", 2, 30) == []  # no manager holds the lock: the worker goes idle
    acked, claimed = q.ack_and_claim("w1", [0], 2, 30)
    assert acked == [True] and claimed == []  # its held work is still acked, nothing new is leased
    q.client.set(q.keys["manager_lock"], "m", ex=30)
    assert q.claim("w1", 2, 30) == [1, 2]
    q.client.delete(q.keys["manager_lock"])  # the manager is gone
    assert q.claim("w2", 2, 30) == []


def test_the_laptop_launches_no_manager_whose_minimum_would_cross() -> None:
    from mcc.driver.budget import manager_refused
    from mcc.ledger import models

    run = models.Run(id="r-1", settings={"aws": {"budget_usd": 0.5}}, points=100, done=40, dead=0)
    assert manager_refused(run, PRICE, spent=0.44) is None  # 0.44 + a 0.06 minute fits
    reason = manager_refused(run, PRICE, spent=0.45)
    assert reason and "spent $0.450000 of $0.500000" in reason and "60 point(s) left" in reason
    assert "mcc resume r-1 --budget N" in reason
    assert manager_refused(models.Run(id="r-2", settings={}), PRICE, spent=9.0) is None  # no budget
