"""Workers as EC2 instances, launched by the manager instance with its instance profile.

The same four verbs as the local fleet. One DescribeInstances call per tick covers every worker, so
API calls per tick do not grow with the fleet; capacity and quota errors shrink the fleet instead of
failing the run (with backoff); every instance carries the ledger's tags inside its RunInstances call.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from mcc.providers.aws.clients import AwsContext
from mcc.providers.aws import market
from mcc.providers.aws.errors import AwsCapacity
from mcc.providers.aws.instance import (
    LaunchRequest, launch_overrides, query_instances, run_instances, terminate_instances,
)
from mcc.providers.base import ownership_tags
from mcc.remote.runtime import Runtime
from mcc.work.runspec import INSTANCES, instance_key
from mcc.work.stores import get_json, put_json

ALIVE = {"pending", "running"}
log = logging.getLogger("manager")


class Ec2Fleet:
    def __init__(self, rt: Runtime, ctx: AwsContext, aws: dict[str, Any], user_data: str) -> None:
        self.rt, self.ctx, self.aws, self.user_data = rt, ctx, aws, user_data
        self.known: dict[str, str] = {}  # instance id → state, refreshed once per tick
        self.backoff_until = 0.0
        self.backoff = 5.0
        self.launches = 0
        self._vcpus: dict[str, int] | None = None  # the worker type's, asked of EC2 once

    def _pricing(self, zone: str | None, spot_prices: dict[str, float]) -> dict[str, Any]:
        """What the instance record says about price: the spot price in force at launch in the instance's
        zone (on-demand instances are priced from the table by ``mcc analyze``) and the type's vCPUs."""
        worker_type = self.aws["worker_type"]
        if self._vcpus is None:
            self._vcpus = market.instance_vcpus(self.ctx, [worker_type])
        return {"region": self.ctx.region, "zone": zone, "vcpus": self._vcpus.get(worker_type),
                "price_per_hour": market.spot_price(spot_prices, zone) if spot_prices else None}

    def _tags(self, name: str) -> dict[str, str]:
        spec = self.rt.spec
        return {**ownership_tags(spec.ledger_uuid, spec.run_id, f"{spec.run_id}/workers", name), "mcc:role": "worker"}

    def launch_workers(self, count: int) -> list[str]:
        if count <= 0 or time.monotonic() < self.backoff_until:
            return []
        self.launches += 1
        tags = self._tags(f"{self.rt.spec.run_id}-worker")
        request = LaunchRequest(
            self.aws["launch_template_id"], tags, f"{self.rt.spec.run_id}-w{self.launches}-{int(time.time())}",
            self.aws["worker_type"], self.user_data, bool(self.aws.get("spot")), self.aws.get("subnet_id"),
            launch_overrides(self.aws))
        try:
            # MinCount=MaxCount=count: on a capacity error we back off and come back for what is missing
            zones = run_instances(self.ctx, request, count)
        except AwsCapacity as exc:
            self.backoff_until = time.monotonic() + self.backoff
            log.warning("cannot launch %d worker(s) now (%s); retrying in %.0f s with what runs", count, exc, self.backoff)
            self.backoff = min(self.backoff * 2, 300.0)
            return []
        self.backoff = 5.0
        launched_at = time.time()
        # one price lookup per launch batch, never per tick (calls per tick stay O(1) in workers)
        spot_prices = market.spot_prices(self.ctx, self.aws["worker_type"]) if self.aws.get("spot") else {}
        for iid, zone in zones.items():
            self.known[iid] = "pending"
            put_json(self.rt.store, instance_key(iid), {
                "worker_id": iid, "physical_id": iid, "kind": "instance", "role": "worker", "backend": "aws",
                "instance_type": self.aws["worker_type"], "spot": bool(self.aws.get("spot")),
                "launched_at": launched_at, "tags": tags, **self._pricing(zone, spot_prices),
            })
        return list(zones)

    def query_workers(self) -> dict[str, bool]:
        """worker id → alive, from ONE paginated DescribeInstances for every worker of the run."""
        states = query_instances(self.ctx, {"mcc:run": self.rt.spec.run_id, "mcc:role": "worker"})
        for iid in list(self.known):
            self.known[iid] = states.get(iid, "terminated")
        return {iid: state in ALIVE for iid, state in self.known.items()}

    def terminate_worker(self, worker_id: str, reason: str) -> None:
        terminate_instances(self.ctx, [worker_id])
        self.forget_worker(worker_id, reason)

    def forget_worker(self, worker_id: str, reason: str) -> None:
        self.known.pop(worker_id, None)
        record = get_json(self.rt.store, instance_key(worker_id)) or {"worker_id": worker_id}
        if "terminated_at" not in record:
            record.update(terminated_at=time.time(), reason=reason)
            put_json(self.rt.store, instance_key(worker_id), record)

    def adopt_workers(self) -> list[str]:
        for key in self.rt.store.list(INSTANCES):
            record = get_json(self.rt.store, key) or {}
            if record.get("role") == "worker" and "terminated_at" not in record:
                self.known[record["worker_id"]] = "pending"
        alive = self.query_workers()
        for iid, ok in list(alive.items()):
            if not ok:
                self.forget_worker(iid, "found terminated by a new manager")
        return [iid for iid, ok in alive.items() if ok]

    def terminate_all(self, reason: str) -> None:
        ids = list(self.known)
        terminate_instances(self.ctx, ids)
        for iid in ids:
            self.forget_worker(iid, reason)
