"""kind ``cache``: the queue on ElastiCache Redis (the original mCC design) — TLS in transit, AUTH token.

A single-node replication group, so the endpoint is the primary endpoint. The AUTH token is read from an
SSM SecureString (a ``parameter`` row) at create time and never logged or returned. The cluster takes
minutes to come up: ``describe`` returns attrs without ``host`` until it has an endpoint, and the caller
waits on that.
"""
from __future__ import annotations

import time
from typing import Any

from mcc.errors import ProviderError
from mcc.providers.aws.clients import AwsContext, aws_tags, epoch, tag_dict
from mcc.providers.aws.errors import AwsNotFound, call, error_code
from mcc.providers.aws.parameter import read_secret
from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, TAG_RUN, Found, ResourceSpec

BUSY = {"InvalidReplicationGroupState", "InvalidReplicationGroupStateFault"}


class CacheProvider:
    """kind ``cache``: physical id is the replication group id (``cluster_id``).

    ``delete_wait``: seconds delete waits for the group to disappear (0 = return once AWS accepted it)."""

    kind = "cache"

    def __init__(self, ctx: AwsContext, delete_wait: float = 1800.0, poll: float = 15.0) -> None:
        self.ctx, self.ec, self.delete_wait, self.poll = ctx, ctx.client("elasticache"), delete_wait, poll

    def create(self, spec: ResourceSpec) -> Found:
        p = spec.params
        kwargs: dict[str, Any] = {
            "ReplicationGroupId": p["cluster_id"], "ReplicationGroupDescription": f"mcc {spec.name}"[:255],
            "Engine": "redis", "CacheNodeType": p.get("node_type", "cache.t3.micro"), "NumCacheClusters": 1,
            "Port": int(p.get("port", 6379)), "SecurityGroupIds": [p["security_group_id"]],
            "TransitEncryptionEnabled": True, "AtRestEncryptionEnabled": True,
            "AuthToken": read_secret(self.ctx, p["auth_token_parameter"]), "Tags": aws_tags(spec.tags),
        }
        if p.get("subnet_group"):
            kwargs["CacheSubnetGroupName"] = p["subnet_group"]
        call(self.ec.create_replication_group, **kwargs)
        found = self.describe(p["cluster_id"], {})
        if found is None:
            raise ProviderError(f"cache {p['cluster_id']} vanished right after it was created")
        return found

    def find(self, spec: ResourceSpec) -> Found | None:
        found = self.describe(spec.params["cluster_id"], {})
        if found is None or found.attrs["status"] == "deleting":
            return None
        mine = (found.tags.get(TAG_LEDGER) == spec.tags[TAG_LEDGER]
                and found.tags.get(TAG_ENTITY) == spec.idempotency_key)
        return found if mine else None

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        try:
            groups = call(self.ec.describe_replication_groups, ReplicationGroupId=physical_id)["ReplicationGroups"]
        except AwsNotFound:
            return None
        return self._found(groups[0]) if groups else None

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        """Ask for the deletion (waiting while the group is busy), then wait ``delete_wait`` s for it to go."""
        deadline = time.monotonic() + self.delete_wait
        while True:
            found = self.describe(physical_id, attrs)
            if found is None:
                return
            if found.attrs["status"] != "deleting":
                try:
                    call(self.ec.delete_replication_group, ReplicationGroupId=physical_id)
                    continue
                except AwsNotFound:
                    return
                except ProviderError as exc:
                    if error_code(exc.__cause__) not in BUSY:
                        raise
            elif self.delete_wait <= 0:
                return
            if time.monotonic() > deadline:
                raise ProviderError(f"cache {physical_id} still {found.attrs['status']} after {self.delete_wait:.0f} s")
            time.sleep(self.poll)

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        pages = call(lambda: list(self.ec.get_paginator("describe_replication_groups").paginate()))
        found = []
        for group in [g for page in pages for g in page["ReplicationGroups"]]:
            f = self._found(group)
            if f.tags.get(TAG_LEDGER) == ledger_uuid and (run_id is None or f.tags.get(TAG_RUN) == run_id):
                found.append(f)
        return found

    def _found(self, group: dict[str, Any]) -> Found:
        attrs: dict[str, Any] = {"cluster_id": group["ReplicationGroupId"], "status": group.get("Status"),
                                 "arn": group.get("ARN"), "tls": bool(group.get("TransitEncryptionEnabled"))}
        endpoint = group.get("ConfigurationEndpoint") or next(
            (n["PrimaryEndpoint"] for n in group.get("NodeGroups", []) if n.get("PrimaryEndpoint")), None)
        if endpoint and endpoint.get("Address"):  # absent until the group is up (and always, for some emulators)
            attrs.update(host=endpoint["Address"], port=endpoint.get("Port", 6379))
        tags: dict[str, str] = {}
        if group.get("ARN"):
            try:
                tags = tag_dict(call(self.ec.list_tags_for_resource, ResourceName=group["ARN"])["TagList"])
            except AwsNotFound:
                pass
        return Found(group["ReplicationGroupId"], attrs, tags, epoch(group.get("ReplicationGroupCreateTime")))
