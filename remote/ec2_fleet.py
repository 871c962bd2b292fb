"""Workers as EC2 instances, launched by the manager instance with its instance profile.

The same four verbs as the local fleet. One DescribeInstances call per tick covers every worker, so
API calls per tick do not grow with the fleet, and it asks only for the workers that are NOT running, so
neither does its reply (see ``query_workers``); capacity and quota errors shrink the fleet instead of
failing the run (with backoff); every instance carries the ledger's tags inside its RunInstances call.

Diversified capacity: ``worker_types`` (ordered preference) x ``subnets`` are the launch options. A
batch goes to the first option that is not cooling down: one RunInstances call for the whole batch; an
option that meets a capacity error (InsufficientInstanceCapacity, a quota, SpotMaxPriceTooLow) cools
down and the batch moves on to the next one. With ``max_spot_price``, a spot type whose current price
(DescribeSpotPriceHistory, asked once per type per SPOT_PRICE_TTL) is above the cap in every zone is
skipped without a launch call, and the cap goes into the request as the spot MaxPrice. With
``hyperthreading`` false every launch carries ``CpuOptions`` (one thread per physical core, from
DescribeInstanceTypes, asked once). Each worker's record says which type, subnet and zone it got, at what
price, and the vCPUs it really has.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from mcc.errors import MccError
from mcc.providers.aws.clients import AwsContext
from mcc.providers.aws import market
from mcc.providers.aws.errors import AwsCapacity
from mcc.providers.aws.instance import (
    STATES, LaunchRequest, describe_instances, launch_overrides, query_instances, run_instances, terminate_instances,
)
from mcc.providers.base import ownership_tags
from mcc.remote.fleet import mark_terminated
from mcc.remote.runtime import Runtime
from mcc.work.runspec import INSTANCES, instance_key
from mcc.work.stores import get_json, put_json

ALIVE = {"pending", "running"}
NOT_RUNNING = [s for s in STATES if s != "running"]  # what a tick asks EC2 about (query_workers)
STOPPED = {"stopping", "stopped"}  # a worker in these never works for the run again: terminated, not left stopped
SPOT_PRICE_TTL = 300.0  # seconds a spot price lookup is reused across launch batches
log = logging.getLogger("manager")


class Ec2Fleet:
    def __init__(self, rt: Runtime, ctx: AwsContext, aws: dict[str, Any], user_data: str) -> None:
        self.rt, self.ctx, self.aws, self.user_data = rt, ctx, aws, user_data
        self.known: dict[str, str] = {}  # instance id → state, refreshed once per tick
        self.backoff_until = 0.0
        self.backoff = 5.0
        self.launches = 0
        self._cpus: dict[str, market.Cpus] | None = None  # the worker types' processors, asked of EC2 once
        self.hyperthreading = bool(aws.get("hyperthreading", True))
        self.types: list[str] = list(aws.get("worker_types") or [aws["worker_type"]])
        self.subnets: list[str | None] = list(aws.get("subnets") or [aws.get("subnet_id")])
        self.cooling: dict[tuple[str, str | None], float] = {}  # option → monotonic time it may be tried again
        self._spot_cache: dict[str, tuple[float, dict[str, float]]] = {}
        self.records: dict[str, dict[str, Any]] = {}  # instance id → its record, as last written by this fleet

    def _pricing(self, itype: str, zone: str | None, spot_prices: dict[str, float]) -> dict[str, Any]:
        """What the instance record says about price: the spot price in force at launch in the instance's
        zone, or the on-demand price the laptop recorded in the run spec, and the instance's vCPUs."""
        cpus = self._cpu_info().get(itype)
        if self.aws.get("spot"):
            per_hour = market.spot_price(spot_prices, zone) if spot_prices else None
        else:
            per_hour = (self.aws.get("on_demand_prices") or {}).get(itype)
        return {"region": self.ctx.region, "zone": zone, "vcpus": cpus.vcpus_with(self.hyperthreading) if cpus else None,
                "price_per_hour": per_hour}

    def _cpu_info(self) -> dict[str, market.Cpus]:
        if self._cpus is None:
            self._cpus = market.instance_cpus(self.ctx, self.types)
        return self._cpus

    def _spot_prices(self, itype: str) -> dict[str, float]:
        """Zone → current spot price of ``itype`` (one DescribeSpotPriceHistory per type per SPOT_PRICE_TTL)."""
        now = time.monotonic()
        cached = self._spot_cache.get(itype)
        if cached is None or now - cached[0] > SPOT_PRICE_TTL:
            cached = (now, market.spot_prices(self.ctx, itype))
            self._spot_cache[itype] = cached
        return cached[1]

    def _options(self) -> list[tuple[str, str | None]]:
        """The (type, subnet) options not cooling down, in order of preference."""
        now = time.monotonic()
        return [(t, n) for t in self.types for n in self.subnets if self.cooling.get((t, n), 0.0) <= now]

    def _over_cap(self, itype: str, prices: dict[str, float]) -> float | None:
        """The cheapest zone's spot price of ``itype`` when even that is above ``max_spot_price``, else None."""
        cap = self.aws.get("max_spot_price")
        if not (self.aws.get("spot") and cap and prices):
            return None
        cheapest = min(prices.values())
        return cheapest if cheapest > cap else None

    def _tags(self, name: str) -> dict[str, str]:
        spec = self.rt.spec
        return {**ownership_tags(spec.ledger_uuid, spec.run_id, f"{spec.run_id}/workers", name), "mcc:role": "worker"}

    def launch_workers(self, count: int) -> list[str]:
        """Launch ``count`` workers in one call on the first option with capacity (see the module doc)."""
        if count <= 0 or time.monotonic() < self.backoff_until:
            return []
        tags = self._tags(f"{self.rt.spec.run_id}-worker")
        spot = bool(self.aws.get("spot"))
        refusals, undescribed = [], False
        for itype, subnet in self._options():
            # one price lookup per type and TTL, never per tick (calls per tick stay O(1) in workers)
            spot_prices = self._spot_prices(itype) if spot else {}
            over = self._over_cap(itype, spot_prices)
            if over is not None:
                refusals.append(f"{itype}: spot ${over:.4f}/h > max_spot_price ${self.aws['max_spot_price']}/h")
                self._cool((itype, subnet))
                continue
            try:
                cpu_options = None if self.hyperthreading else market.smt_off(itype, self._cpu_info().get(itype))
            except MccError as exc:  # the laptop checked the types: EC2 did not answer the lookup this time
                refusals.append(f"{itype}: {exc}")
                self._cool((itype, subnet))
                undescribed = True
                continue
            self.launches += 1
            request = LaunchRequest(
                self.aws["launch_template_id"], tags, f"{self.rt.spec.run_id}-w{self.launches}-{int(time.time())}",
                itype, self.user_data, spot, subnet, launch_overrides(self.aws), self.aws.get("max_spot_price"),
                cpu_options)
            try:
                # MinCount=MaxCount=count: on a capacity error the next option gets the whole batch
                zones = run_instances(self.ctx, request, count)
            except AwsCapacity as exc:
                refusals.append(f"{itype}{' in ' + subnet if subnet else ''}: {exc}")
                self._cool((itype, subnet))
                log.warning("cannot launch %d %s worker(s) now (%s); trying the next type/zone", count, itype, exc)
                continue
            self.backoff = 5.0
            self._record(zones, itype, subnet, tags, spot_prices)
            log.info("launched %d %s worker(s)%s", len(zones), itype, f" in {subnet}" if subnet else "")
            return list(zones)
        if undescribed:
            self._cpus = None  # asked again for the next batch
        self.backoff_until = time.monotonic() + self.backoff
        log.warning("cannot launch %d worker(s) now (%s); retrying in %.0f s with what runs", count,
                    "; ".join(refusals) or "every type and zone is cooling down", self.backoff)
        self.backoff = min(self.backoff * 2, 300.0)
        return []

    def _cool(self, option: tuple[str, str | None]) -> None:
        """An option refused: leave it alone for the fleet's current backoff (so the preferred type is asked
        again, one call per batch, once that passes)."""
        self.cooling[option] = time.monotonic() + self.backoff

    def _record(self, zones: dict[str, str | None], itype: str, subnet: str | None, tags: dict[str, str],
                spot_prices: dict[str, float]) -> None:
        launched_at = time.time()
        for iid, zone in zones.items():
            self.known[iid] = "pending"
            self.records[iid] = {
                "worker_id": iid, "physical_id": iid, "kind": "instance", "role": "worker", "backend": "aws",
                "instance_type": itype, "subnet_id": subnet, "spot": bool(self.aws.get("spot")),
                "launched_at": launched_at, "tags": tags, **self._pricing(itype, zone, spot_prices),
                "entry_sha256": self.rt.spec.entry_sha256,
            }
            put_json(self.rt.store, instance_key(iid), self.records[iid])

    def _worker_tags(self) -> dict[str, str]:
        return {"mcc:run": self.rt.spec.run_id, "mcc:role": "worker"}

    def query_workers(self) -> dict[str, bool]:
        """worker id → alive, from ONE paginated DescribeInstances of the run's workers that are not running.

        The reply holds the exceptions only: pending (launched, not yet running: alive), stopping/stopped,
        shutting-down and terminated (dead: a spot interruption, a stop or a termination behind the
        manager's back). A known worker absent from it is running. So the reply, and botocore's parse of
        it (0.6–1 ms of CPU per instance: nearly all of a 1,000-worker tick when every instance came
        back), grows with the run's instances in those states (EC2 keeps listing a terminated one for a
        while, usually under an hour), not with the fleet. A stopped worker is terminated (one call for
        all of them) so that it does not stay in every later reply, nor cost its disk.

        How late a death is noticed: at the first tick after EC2 reports the instance in one of those
        states, i.e. within one tick of EC2 itself (``tick_seconds`` plus the tick's own time). A worker
        absent from the reply that is not running after all (EC2 no longer lists it, or does not list it
        yet) is caught by the manager's heartbeat checks: replaced ``boot_seconds`` after its launch if it
        never heartbeated, ``stall_after`` (3 leases by default) after its last heartbeat otherwise. Its
        leases go back to the queue on their own when they expire (``lease_seconds`` after the last
        heartbeat), whatever the manager has noticed. ``adopt_workers`` asks the full question instead.
        """
        return self._update(query_instances(self.ctx, self._worker_tags(), states=NOT_RUNNING), absent="running")

    def _query_all(self) -> dict[str, bool]:
        """worker id → alive, from the full DescribeInstances of the run's live workers (absent = gone):
        what a new manager asks once, for workers it has only records of."""
        return self._update(query_instances(self.ctx, self._worker_tags()), absent="terminated")

    def _update(self, states: dict[str, str], absent: str) -> dict[str, bool]:
        """The known workers' states from a reply (``absent``: the state of one not in it); worker id → alive.
        Stopped workers are terminated, in one call."""
        stopped = [iid for iid in self.known if states.get(iid) in STOPPED]
        if stopped:
            terminate_instances(self.ctx, stopped)
        for iid in list(self.known):
            self.known[iid] = states.get(iid, absent)
        return {iid: state in ALIVE for iid, state in self.known.items()}

    def terminate_worker(self, worker_id: str, reason: str) -> None:
        terminate_instances(self.ctx, [worker_id])
        self.forget_worker(worker_id, reason)

    def forget_worker(self, worker_id: str, reason: str) -> None:
        self.known.pop(worker_id, None)
        self.records[worker_id] = mark_terminated(self.rt.store, worker_id, reason)

    def adopt_workers(self) -> list[str]:
        for key in self.rt.store.list(INSTANCES):
            record = get_json(self.rt.store, key) or {}
            if record.get("role") == "worker" and "terminated_at" not in record:
                self.known[record["worker_id"]] = "pending"
        alive = self._query_all()
        for iid, ok in list(alive.items()):
            if not ok:
                self.forget_worker(iid, "found terminated by a new manager")
        return [iid for iid, ok in alive.items() if ok]

    def launch_time(self, instance_id: str) -> float | None:
        """When EC2 launched ``instance_id`` (epoch seconds; None if EC2 does not say): what its bill runs from."""
        found = describe_instances(self.ctx, ids=[instance_id])
        stamp = found[0].get("LaunchTime") if found else None
        return stamp.timestamp() if stamp is not None else None

    def terminate_all(self, reason: str) -> None:
        ids = list(self.known)
        terminate_instances(self.ctx, ids)
        for iid in ids:
            self.forget_worker(iid, reason)
