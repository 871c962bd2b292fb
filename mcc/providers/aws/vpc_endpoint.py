"""kind ``vpc_endpoint``: how instances without a public address reach S3 (a gateway endpoint on their subnets'
route tables) and SSM and EC2 (interface endpoints with private DNS, in the endpoints' security group).

Tagged inside CreateVpcEndpoint (TagSpecifications ``vpc-endpoint``), found by its ``mcc:entity`` tag, and
waited for until ``available`` (an instance booted before it answers would find no route to the service).
"""
from __future__ import annotations

import time
from typing import Any

from mcc.errors import ProviderError
from mcc.providers.aws.clients import AwsContext, client_token, epoch, tag_dict, tag_specifications
from mcc.providers.aws.errors import AwsNotFound, call
from mcc.providers.aws.instance import ownership, tag_filters
from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, Found, ResourceSpec

GONE = {"deleted", "deleting", "rejected", "failed", "expired"}  # State, lower-cased (the API spells "Available")


class VpcEndpointProvider:
    """kind ``vpc_endpoint``: physical id is the endpoint id.

    params: ``vpc_id``, ``service_name`` (com.amazonaws.<region>.<service>), ``endpoint_type`` (Gateway or
    Interface), ``route_table_ids`` (gateway), ``subnet_ids`` and ``security_group_id`` (interface)."""

    kind = "vpc_endpoint"

    def __init__(self, ctx: AwsContext, ready_timeout: float = 600.0, poll: float = 5.0) -> None:
        self.ctx, self.ec2, self.ready_timeout, self.poll = ctx, ctx.client("ec2"), ready_timeout, poll

    def create(self, spec: ResourceSpec) -> Found:
        p = spec.params
        kwargs: dict[str, Any] = {
            "VpcEndpointType": p["endpoint_type"], "VpcId": p["vpc_id"], "ServiceName": p["service_name"],
            "ClientToken": client_token(spec.tags[TAG_LEDGER], spec.idempotency_key),
            "TagSpecifications": tag_specifications(["vpc-endpoint"], spec.tags)}
        if p["endpoint_type"] == "Gateway":
            kwargs["RouteTableIds"] = list(p["route_table_ids"])
        else:
            kwargs.update(SubnetIds=list(p["subnet_ids"]), SecurityGroupIds=[p["security_group_id"]],
                          PrivateDnsEnabled=True)
        endpoint = call(self.ec2.create_vpc_endpoint, **kwargs)["VpcEndpoint"]
        return self._ready(endpoint["VpcEndpointId"])

    def _ready(self, endpoint_id: str) -> Found:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            endpoints = self._describe([endpoint_id])
            state = endpoints[0].get("State", "").lower() if endpoints else "deleted"
            if state == "available":
                return _found(endpoints[0])
            if state in GONE or time.monotonic() > deadline:
                raise ProviderError(f"VPC endpoint {endpoint_id} is {state}, not available "
                                    f"(waited up to {self.ready_timeout:.0f} s)")
            time.sleep(self.poll)

    def _describe(self, ids: list[str] | None = None, filters: list[dict[str, Any]] | None = None) -> list[dict]:
        kwargs: dict[str, Any] = {"Filters": filters} if filters else {}
        if ids:
            kwargs["VpcEndpointIds"] = ids
        try:
            pages = call(lambda: list(self.ec2.get_paginator("describe_vpc_endpoints").paginate(**kwargs)))
        except AwsNotFound:
            return []
        return [e for page in pages for e in page["VpcEndpoints"]]

    def find(self, spec: ResourceSpec) -> Found | None:
        live = self._live(self._describe(filters=tag_filters({TAG_LEDGER: spec.tags[TAG_LEDGER],
                                                               TAG_ENTITY: spec.idempotency_key})))
        return self._ready(live[0]["VpcEndpointId"]) if live else None

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        endpoints = self._live(self._describe([physical_id]))
        return _found(endpoints[0]) if endpoints else None

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        """Delete and wait until it is gone (its network interfaces hold the endpoints' security group). One already
        gone is not asked again (a delete resumed after it went through)."""
        if self.describe(physical_id, attrs) is None:
            return
        try:
            reply = call(self.ec2.delete_vpc_endpoints, VpcEndpointIds=[physical_id])
        except AwsNotFound:  # the endpoint, or the gateway's route, went away meanwhile
            return
        failed = [u for u in reply.get("Unsuccessful") or []
                  if u.get("Error", {}).get("Code") != "InvalidVpcEndpoint.NotFound"]
        if failed:
            raise ProviderError(f"VPC endpoint {physical_id} not deleted: {failed[0].get('Error')}")
        deadline = time.monotonic() + self.ready_timeout
        while self.describe(physical_id, attrs) is not None:
            if time.monotonic() > deadline:
                raise ProviderError(f"VPC endpoint {physical_id} still exists {self.ready_timeout:.0f} s after its delete")
            time.sleep(self.poll)

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        return [_found(e) for e in self._live(self._describe(filters=tag_filters(ownership(ledger_uuid, run_id))))]

    @staticmethod
    def _live(endpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # by State, not the vpc-endpoint-state filter: its values are documented lower-case, the State enum is not
        return [e for e in endpoints if e.get("State", "").lower() not in GONE]


def _found(endpoint: dict[str, Any]) -> Found:
    attrs = {"vpc_id": endpoint.get("VpcId"), "service_name": endpoint.get("ServiceName"),
             "endpoint_type": endpoint.get("VpcEndpointType"), "state": endpoint.get("State"),
             "subnet_ids": endpoint.get("SubnetIds") or [], "route_table_ids": endpoint.get("RouteTableIds") or []}
    return Found(endpoint["VpcEndpointId"], attrs, tag_dict(endpoint.get("Tags")), epoch(endpoint.get("CreationTimestamp")))
