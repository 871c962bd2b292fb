"""Workers as EC2 instances, launched by the manager instance with its instance profile.

The same four verbs as the local fleet. One DescribeInstances call per tick covers every worker, so
API calls per tick do not grow with the fleet; capacity and quota errors shrink the fleet instead of
failing the run (with backoff); every instance carries the ledger's tags inside its RunInstances call.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from mcc.providers.aws.clients import AwsContext, tag_specifications
from mcc.providers.aws.errors import AwsCapacity, call
from mcc.providers.base import ownership_tags
from mcc.remote.runtime import Runtime
from mcc.runspec import INSTANCES, instance_key
from mcc.storage import get_json, put_json

ALIVE = {"pending", "running"}
log = logging.getLogger("manager")


class Ec2Fleet:
    def __init__(self, rt: Runtime, ctx: AwsContext, aws: dict[str, Any], user_data: str) -> None:
        self.rt, self.ctx, self.aws, self.user_data = rt, ctx, aws, user_data
        self.ec2 = ctx.client("ec2")
        self.known: dict[str, str] = {}  # instance id → state, refreshed once per tick
        self.backoff_until = 0.0
        self.backoff = 5.0
        self.launches = 0

    def _tags(self, name: str) -> dict[str, str]:
        spec = self.rt.spec
        return {**ownership_tags(spec.ledger_uuid, spec.run_id, f"{spec.run_id}/workers", name), "mcc:role": "worker"}

    def launch_workers(self, count: int) -> list[str]:
        if count <= 0 or time.monotonic() < self.backoff_until:
            return []
        self.launches += 1
        token = f"{self.rt.spec.run_id}-w{self.launches}-{int(time.time())}"[:64]
        kwargs: dict[str, Any] = {
            "LaunchTemplate": {"LaunchTemplateId": self.aws["launch_template_id"]},
            "InstanceType": self.aws["worker_type"], "MinCount": 1, "MaxCount": count,
            "UserData": self.user_data, "ClientToken": token,
            "TagSpecifications": tag_specifications(["instance", "volume"], self._tags(f"{self.rt.spec.run_id}-worker")),
        }
        if self.aws.get("spot"):
            kwargs["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        if self.aws.get("subnet_id"):
            kwargs["SubnetId"] = self.aws["subnet_id"]
        try:
            reply = call(self.ec2.run_instances, deadline=60, **kwargs)
        except AwsCapacity as exc:
            self.backoff_until = time.monotonic() + self.backoff
            log.warning("cannot launch %d worker(s) now (%s); retrying in %.0f s with what runs", count, exc, self.backoff)
            self.backoff = min(self.backoff * 2, 300.0)
            return []
        self.backoff = 5.0
        launched = []
        for inst in reply["Instances"]:
            iid = inst["InstanceId"]
            self.known[iid] = inst["State"]["Name"]
            put_json(self.rt.store, instance_key(iid), {
                "worker_id": iid, "physical_id": iid, "kind": "instance", "role": "worker", "backend": "aws",
                "instance_type": inst.get("InstanceType"), "spot": bool(self.aws.get("spot")),
                "launched_at": time.time(), "tags": self._tags(f"{self.rt.spec.run_id}-worker"),
            })
            launched.append(iid)
        return launched

    def query_workers(self) -> dict[str, bool]:
        """worker id → alive, from ONE paginated DescribeInstances for every worker of the run."""
        filters = [{"Name": "tag:mcc:run", "Values": [self.rt.spec.run_id]},
                   {"Name": "tag:mcc:role", "Values": ["worker"]}]
        states: dict[str, str] = {}
        token = None
        while True:
            kwargs: dict[str, Any] = {"Filters": filters, "MaxResults": 1000}
            if token:
                kwargs["NextToken"] = token
            reply = call(self.ec2.describe_instances, **kwargs)
            for res in reply.get("Reservations", []):
                for inst in res["Instances"]:
                    states[inst["InstanceId"]] = inst["State"]["Name"]
            token = reply.get("NextToken")
            if not token:
                break
        for iid in list(self.known):
            self.known[iid] = states.get(iid, "terminated")
        self.known.update({i: s for i, s in states.items() if i in self.known})
        return {iid: state in ALIVE for iid, state in self.known.items()}

    def terminate_worker(self, worker_id: str, reason: str) -> None:
        call(self.ec2.terminate_instances, InstanceIds=[worker_id])
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
        if ids:
            call(self.ec2.terminate_instances, InstanceIds=ids)
        for iid in ids:
            self.forget_worker(iid, reason)
