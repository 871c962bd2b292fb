"""kind ``security_group``: the fleet's group — queue port open only to members of the group itself.

No rule ever opens ingress to 0.0.0.0/0; SSH is allowed only from ``ssh_cidr`` when one is given.
"""
from __future__ import annotations

from typing import Any

from mcc.errors import ProviderError
from mcc.providers.aws.clients import AwsContext, tag_dict, tag_specifications
from mcc.providers.aws.errors import AwsDependency, AwsNotFound, call, error_code
from mcc.providers.aws.instance import ownership, tag_filters
from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, Found, ResourceSpec


def default_vpc_id(ctx: AwsContext) -> str:
    """The region's default VPC (the one mcc uses unless ``vpc_id`` is set)."""
    vpcs = call(ctx.client("ec2").describe_vpcs, Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ProviderError(f"no default VPC in {ctx.region}: set `vpc_id` under [aws] in mcc.toml "
                            "(or create one with `aws ec2 create-default-vpc`)")
    return vpcs[0]["VpcId"]


def ingress_rules(group_id: str, queue_port: int | None, ssh_cidr: str | None,
                  extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The group's ingress: the queue port from the group itself (none when ``queue_port`` is None: the VPC
    endpoints' group), SSH only from ``ssh_cidr``, and the ``extra`` IpPermissions asked for by name (the original
    mCC's ``ips``/``ports``, the endpoints' HTTPS from the VPC; never a world-open SSH)."""
    if ssh_cidr in ("0.0.0.0/0", "::/0"):
        raise ProviderError("ssh_cidr must name your own network (e.g. 203.0.113.7/32), never the whole internet")
    for rule in extra or []:
        world = [r for r in rule.get("IpRanges", []) if r.get("CidrIp") == "0.0.0.0/0"]
        if world and rule.get("FromPort", 0) <= 22 <= rule.get("ToPort", 65535):
            raise ProviderError("an ingress rule opens SSH (port 22) to 0.0.0.0/0; name your own network instead")
    rules = [{"IpProtocol": "tcp", "FromPort": queue_port, "ToPort": queue_port,
              "UserIdGroupPairs": [{"GroupId": group_id, "Description": "mcc queue, fleet members only"}]}
             ] if queue_port is not None else []
    if ssh_cidr:
        rules.append({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                      "IpRanges": [{"CidrIp": ssh_cidr, "Description": "mcc ssh"}]})
    return rules + list(extra or [])


def _queue_port(params: dict[str, Any]) -> int | None:
    port = params.get("queue_port", 6379)
    return None if port is None else int(port)


class SecurityGroupProvider:
    """kind ``security_group``: physical id is the group id. EC2 tells no creation time of a group, so the
    sweep cannot see a ledger tag put on one afterwards (``Found.created_at`` stays None)."""

    kind = "security_group"

    def __init__(self, ctx: AwsContext, delete_deadline: float = 600.0) -> None:
        self.ctx, self.ec2, self.delete_deadline = ctx, ctx.client("ec2"), delete_deadline

    def create(self, spec: ResourceSpec) -> Found:
        p = spec.params
        ingress_rules("", _queue_port(p), p.get("ssh_cidr"), p.get("ingress"))  # refused before it exists
        vpc_id = p.get("vpc_id") or default_vpc_id(self.ctx)
        group_id = call(self.ec2.create_security_group, GroupName=p["name"], VpcId=vpc_id,
                        Description=f"mcc {spec.name}"[:255],
                        TagSpecifications=tag_specifications(["security-group"], spec.tags))["GroupId"]
        self._authorize(group_id, ingress_rules(group_id, _queue_port(p), p.get("ssh_cidr"), p.get("ingress")))
        found = self.describe(group_id, {})
        if found is None:
            raise ProviderError(f"security group {group_id} vanished right after it was created")
        return found

    def _authorize(self, group_id: str, rules: list[dict[str, Any]]) -> None:
        for rule in rules:  # one call per rule: a resume re-adds only the missing ones
            try:
                call(self.ec2.authorize_security_group_ingress, GroupId=group_id, IpPermissions=[rule])
            except ProviderError as exc:
                if error_code(exc.__cause__) != "InvalidPermission.Duplicate":
                    raise

    def find(self, spec: ResourceSpec) -> Found | None:
        p = spec.params
        vpc_id = p.get("vpc_id") or default_vpc_id(self.ctx)
        filters = [{"Name": "group-name", "Values": [p["name"]]}, {"Name": "vpc-id", "Values": [vpc_id]}]
        filters += tag_filters({TAG_LEDGER: spec.tags[TAG_LEDGER], TAG_ENTITY: spec.idempotency_key})
        groups = call(self.ec2.describe_security_groups, Filters=filters)["SecurityGroups"]
        if not groups:
            return None
        group_id = groups[0]["GroupId"]  # found after a crash mid-create: make sure the rules are there
        self._authorize(group_id, ingress_rules(group_id, _queue_port(p), p.get("ssh_cidr"), p.get("ingress")))
        return _found(groups[0])

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        try:
            groups = call(self.ec2.describe_security_groups, GroupIds=[physical_id])["SecurityGroups"]
        except AwsNotFound:
            return None
        return _found(groups[0]) if groups else None

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        """Delete the group, retrying while instances or caches still use it; name the blockers if that lasts."""
        try:
            call(self.ec2.delete_security_group, GroupId=physical_id, retry_dependency=True,
                 deadline=self.delete_deadline)
        except AwsNotFound:
            return
        except AwsDependency as exc:
            raise AwsDependency(f"security group {physical_id} is still in use after {self.delete_deadline:.0f} s "
                                f"by: {', '.join(self.users(physical_id)) or 'unknown'} ({exc})") from exc

    def users(self, group_id: str) -> list[str]:
        """What holds the group: network interfaces (instance id or description)."""
        enis = call(self.ec2.describe_network_interfaces,
                    Filters=[{"Name": "group-id", "Values": [group_id]}])["NetworkInterfaces"]
        return [e.get("Attachment", {}).get("InstanceId") or f"{e['NetworkInterfaceId']} ({e.get('Description', '')})"
                for e in enis]

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        pages = call(lambda: list(self.ec2.get_paginator("describe_security_groups").paginate(
            Filters=tag_filters(ownership(ledger_uuid, run_id)))))
        return [_found(g) for page in pages for g in page["SecurityGroups"]]


def _found(group: dict[str, Any]) -> Found:
    attrs = {"group_id": group["GroupId"], "vpc_id": group.get("VpcId"), "name": group["GroupName"]}
    return Found(group["GroupId"], attrs, tag_dict(group.get("Tags")))
