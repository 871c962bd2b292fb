"""What an instance costs and what it has, asked of EC2 at launch: spot prices and vCPU counts.

Read-only calls (``DescribeSpotPriceHistory``, ``DescribeInstanceTypes``); a launch never fails
because of them: a price or a count EC2 does not give is simply unknown (``None``), and
``mcc analyze`` then falls back to its price table and says so.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from mcc.providers.aws.clients import AwsContext
from mcc.errors import MccError
from mcc.providers.aws.errors import call

log = logging.getLogger(__name__)

LINUX = "Linux/UNIX"
LOOKUP_DEADLINE = 15.0  # seconds of retries on throttling: a price is not worth delaying a launch for


def latest_spot_prices(history: list[dict[str, Any]]) -> dict[str, float]:
    """Availability zone → the newest spot price ($/h) among ``SpotPriceHistory`` entries."""
    newest: dict[str, tuple[Any, float]] = {}
    for entry in history:
        zone, stamp = entry.get("AvailabilityZone"), entry.get("Timestamp")
        try:
            price = float(entry["SpotPrice"])
        except (KeyError, TypeError, ValueError):
            continue
        if zone and (zone not in newest or (stamp is not None and stamp > newest[zone][0])):
            newest[zone] = (stamp, price)
    return {zone: price for zone, (_, price) in newest.items()}


def spot_prices(ctx: AwsContext, instance_type: str) -> dict[str, float]:
    """Availability zone → current Linux spot price of ``instance_type`` in the context's region."""
    try:
        reply = call(ctx.client("ec2").describe_spot_price_history, InstanceTypes=[instance_type],
                     ProductDescriptions=[LINUX], StartTime=dt.datetime.now(dt.timezone.utc), deadline=LOOKUP_DEADLINE)
    except MccError as exc:
        log.warning("no spot price for %s in %s (%s): cost falls back to the on-demand table",
                    instance_type, ctx.region, exc)
        return {}
    return latest_spot_prices(reply.get("SpotPriceHistory", []))


def spot_price(prices: dict[str, float], zone: str | None) -> float | None:
    """The price in ``zone``; where the zone is unknown, the highest of the region (an upper bound)."""
    if zone in prices:
        return prices[zone]
    return max(prices.values()) if prices else None


def instance_vcpus(ctx: AwsContext, instance_types: list[str]) -> dict[str, int]:
    """Instance type → default vCPUs, from ``DescribeInstanceTypes`` (types EC2 does not know are left out)."""
    try:
        reply = call(ctx.client("ec2").describe_instance_types, InstanceTypes=sorted(set(instance_types)),
                     deadline=LOOKUP_DEADLINE)
    except MccError as exc:
        log.warning("no vCPU count for %s (%s): mcc analyze uses its price table's", instance_types, exc)
        return {}
    return {t["InstanceType"]: int(t["VCpuInfo"]["DefaultVCpus"])
            for t in reply.get("InstanceTypes", []) if t.get("VCpuInfo", {}).get("DefaultVCpus")}


def offered_types(ctx: AwsContext, instance_types: list[str]) -> set[str]:
    """Which of ``instance_types`` EC2 offers in the context's region (``DescribeInstanceTypeOfferings``).

    Raises MccError (credentials, region) when EC2 cannot be asked: the caller decides what that means."""
    reply = call(ctx.client("ec2").describe_instance_type_offerings, LocationType="region",
                 Filters=[{"Name": "instance-type", "Values": sorted(set(instance_types))}], deadline=LOOKUP_DEADLINE)
    return {o["InstanceType"] for o in reply.get("InstanceTypeOfferings", [])}
