"""What a run without public addresses needs to know of its VPC: subnets, their route tables, NAT routes.

Read-only lookups (DescribeSubnets, DescribeRouteTables); the endpoints themselves are ledger resources
(mcc/providers/aws/vpc_endpoint.py).
"""
from __future__ import annotations

from typing import Any

from mcc.errors import ConfigError
from mcc.providers.aws.clients import AwsContext
from mcc.providers.aws.errors import call

# Services instances call (remote/): S3 for the run's objects (gateway endpoint, free), SSM for the queue's
# secret and CA, EC2 for the manager's launches, describes and terminations. Instance-profile credentials come
# from IMDS (link-local), and KMS is called by SSM and EC2 on the caller's behalf: no endpoint for STS or KMS.
INTERFACE_SERVICES = ("ssm", "ec2")
GATEWAY_SERVICES = ("s3",)


def service_name(region: str, service: str) -> str:
    return f"com.amazonaws.{region}.{service}"


def subnets(ctx: AwsContext, subnet_ids: list[str]) -> list[dict[str, Any]]:
    """The named subnets' records (SubnetId, VpcId, AvailabilityZone), in the order named."""
    # by filter, not SubnetIds: an id that does not exist is then missing from the answer, not an error
    found = {s["SubnetId"]: s for s in call(ctx.client("ec2").describe_subnets,
                                            Filters=[{"Name": "subnet-id", "Values": subnet_ids}])["Subnets"]}
    return [found[i] for i in subnet_ids if i in found]


def default_subnet(ctx: AwsContext, vpc_id: str) -> str:
    """The VPC's default subnet of the first zone (by name): where a private run without named subnets goes, so
    one endpoint network interface per service serves it."""
    found = call(ctx.client("ec2").describe_subnets, Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                           {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    if not found:
        raise ConfigError(f"VPC {vpc_id} has no default subnet for `public_ip = false`: name the instances' subnets "
                          'in mcc.toml [aws], e.g. subnets = ["subnet-0abc"].')
    return min(found, key=lambda s: (s["AvailabilityZone"], s["SubnetId"]))["SubnetId"]


def one_per_zone(ctx: AwsContext, subnet_ids: list[str]) -> list[str]:
    """The first named subnet of each zone (an interface endpoint takes at most one subnet per zone)."""
    zones: dict[str, str] = {}
    for subnet in subnets(ctx, subnet_ids):
        zones.setdefault(subnet["AvailabilityZone"], subnet["SubnetId"])
    return sorted(zones.values(), key=subnet_ids.index)


def route_tables(ctx: AwsContext, vpc_id: str, subnet_ids: list[str]) -> dict[str, dict[str, Any]]:
    """subnet id → the route table it uses: its explicit association, else the VPC's main table."""
    tables = call(ctx.client("ec2").describe_route_tables,
                  Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    main = next((t for t in tables if any(a.get("Main") for a in t.get("Associations", []))), None)
    out = {}
    for subnet_id in subnet_ids:
        explicit = next((t for t in tables if any(a.get("SubnetId") == subnet_id for a in t.get("Associations", []))),
                        None)
        table = explicit or main
        if table is not None:
            out[subnet_id] = table
    return out


def internet_route(table: dict[str, Any]) -> str | None:
    """The target of the table's default route when it is not an internet gateway (a NAT gateway, a NAT instance,
    a transit gateway…): what an instance without a public address reaches the internet through."""
    for route in table.get("Routes", []):
        if route.get("DestinationCidrBlock") != "0.0.0.0/0" or route.get("State") == "blackhole":
            continue
        for key in ("NatGatewayId", "TransitGatewayId", "InstanceId", "NetworkInterfaceId", "VpcPeeringConnectionId"):
            if route.get(key):
                return route[key]
    return None


def require_nat(ctx: AwsContext, subnet_ids: list[str], source: str = "mcc.toml [aws]") -> None:
    """Refuse (before anything is created) named subnets whose route table has no default route through a NAT."""
    records = subnets(ctx, subnet_ids)
    missing = sorted(set(subnet_ids) - {s["SubnetId"] for s in records})
    if missing:
        raise ConfigError(f"{source}: subnet(s) {', '.join(missing)} do not exist in {ctx.region}. Fix: name "
                          "subnets of this region in `subnets`.")
    tables = {}
    for vpc_id in sorted({s["VpcId"] for s in records}):
        tables.update(route_tables(ctx, vpc_id, [s["SubnetId"] for s in records if s["VpcId"] == vpc_id]))
    closed = [i for i in subnet_ids if tables.get(i) is None or internet_route(tables[i]) is None]
    if closed:
        raise ConfigError(f'{source}: `egress = "nat"` but the route table of subnet(s) {", ".join(closed)} has no '
                          "default route (0.0.0.0/0) through a NAT: instances without a public address there could "
                          'reach neither PyPI nor AWS. Fix: add the NAT route, name other subnets, or use egress = '
                          '"endpoints" (with custom_image = true). Nothing was created.')
