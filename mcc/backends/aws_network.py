"""A run without public IPv4 addresses (``public_ip = false`` in [aws]): where its instances go, and, with
``egress = "endpoints"``, the VPC endpoints that let them reach S3, SSM and EC2.

- ``egress = "nat"``: the named subnets route to the internet through the user's NAT (checked at preflight,
  mcc/providers/aws/network.require_nat); mcc creates nothing for the network.
- ``egress = "endpoints"``: per run, an S3 gateway endpoint on the route tables of the run's subnets and one
  interface endpoint (private DNS) per service of ``network.INTERFACE_SERVICES`` in one subnet per zone, in the
  ledger's endpoints security group (HTTPS from the VPC only). Each is a ledger row made write-ahead by the engine
  (found by its tags on resume), deleted with the run's compute at its end (they bill per hour) and by ``mcc clean``
  before the security group their interfaces sit in. Without a named subnet, the run goes to the VPC's default
  subnet of its first zone, so one interface per service serves it.
"""
from __future__ import annotations

from mcc.backends.aws_settings import AwsSettings
from mcc.driver.engine import Engine
from mcc.ledger import models
from mcc.providers.aws import network
from mcc.providers.aws.clients import AwsContext
from mcc.providers.aws.errors import call

HTTPS = 443


def run_subnets(ctx: AwsContext, settings: AwsSettings, vpc_id: str) -> list[str | None]:
    """The subnets the run's instances try in order (None: EC2's default); a private run always names one."""
    named = settings.candidate_subnets
    if settings.public_ip or named[0]:
        return named
    return [network.default_subnet(ctx, vpc_id)]


def vpc_cidrs(ctx: AwsContext, vpc_id: str) -> list[str]:
    vpc = call(ctx.client("ec2").describe_vpcs, VpcIds=[vpc_id])["Vpcs"][0]
    blocks = [a["CidrBlock"] for a in vpc.get("CidrBlockAssociationSet", [])
              if a.get("CidrBlockState", {}).get("State", "associated") == "associated"]
    return blocks or [vpc["CidrBlock"]]


def ensure_endpoints(engine: Engine, run: models.Run, ctx: AwsContext, *, vpc_id: str, subnets: list[str],
                     short: str) -> list[models.Resource]:
    """The run's VPC endpoints (made now if needed, each available before it returns); idempotent, resumable."""
    region = ctx.region
    name = f"mcc-{short}-endpoints"
    https = [{"IpProtocol": "tcp", "FromPort": HTTPS, "ToPort": HTTPS,
              "IpRanges": [{"CidrIp": cidr, "Description": "mcc: AWS APIs through the VPC endpoints"}]}
             for cidr in vpc_cidrs(ctx, vpc_id)]
    group = engine.ensure(None, "security_group", name, f"aws:{region}:endpoint_group:{vpc_id}",
                          {"name": name, "vpc_id": vpc_id, "queue_port": None, "ssh_cidr": None, "ingress": https})
    tables = sorted({t["RouteTableId"] for t in network.route_tables(ctx, vpc_id, subnets).values()})
    rows = []
    for service in network.GATEWAY_SERVICES:
        rows.append(engine.current(run, "vpc_endpoint", f"{run.id}/endpoint/{service}", {
            "vpc_id": vpc_id, "service_name": network.service_name(region, service), "endpoint_type": "Gateway",
            "route_table_ids": tables}, name=f"mcc-{run.id}-{service}"))
    zones = network.one_per_zone(ctx, subnets)
    for service in network.INTERFACE_SERVICES:
        rows.append(engine.current(run, "vpc_endpoint", f"{run.id}/endpoint/{service}", {
            "vpc_id": vpc_id, "service_name": network.service_name(region, service), "endpoint_type": "Interface",
            "subnet_ids": zones, "security_group_id": group.physical_id}, name=f"mcc-{run.id}-{service}"))
    return rows
