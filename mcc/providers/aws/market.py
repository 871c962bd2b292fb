"""What an instance costs and what it has, asked of EC2 at launch: spot prices and processors.

Read-only calls (``DescribeSpotPriceHistory``, ``DescribeInstanceTypes``); a launch never fails
because of them: a price or a count EC2 does not give is simply unknown (``None``), and
``mcc analyze`` then falls back to its price table and says so.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Cpus:
    """An instance type's processors, as ``DescribeInstanceTypes``' ``VCpuInfo`` gives them."""

    vcpus: int                      # DefaultVCpus
    cores: int                      # DefaultCores: physical cores
    threads_per_core: int           # DefaultThreadsPerCore
    valid_threads: tuple[int, ...]  # ValidThreadsPerCore (empty: the type's CPU options cannot be changed)

    def vcpus_with(self, hyperthreading: bool) -> int:
        """The vCPUs an instance has: all of them, or with SMT off one per physical core."""
        return self.vcpus if hyperthreading else self.cores


def instance_cpus(ctx: AwsContext, instance_types: list[str]) -> dict[str, Cpus]:
    """Instance type → its processors, from ``DescribeInstanceTypes`` (types EC2 does not know are left out)."""
    try:
        reply = call(ctx.client("ec2").describe_instance_types, InstanceTypes=sorted(set(instance_types)),
                     deadline=LOOKUP_DEADLINE)
    except MccError as exc:
        log.warning("no vCPU count for %s (%s): mcc analyze uses its price table's", instance_types, exc)
        return {}
    out = {}
    for t in reply.get("InstanceTypes", []):
        info = t.get("VCpuInfo", {})
        if not info.get("DefaultVCpus"):
            continue
        vcpus, threads = int(info["DefaultVCpus"]), int(info.get("DefaultThreadsPerCore") or 1)
        out[t["InstanceType"]] = Cpus(vcpus, int(info.get("DefaultCores") or vcpus // threads), threads,
                                      tuple(int(n) for n in info.get("ValidThreadsPerCore") or ()))
    return out


def smt_off(instance_type: str, cpus: Cpus | None) -> dict[str, int] | None:
    """RunInstances' ``CpuOptions`` launching ``instance_type`` with SMT off (one thread per physical core);
    None when the type has one thread per core already. MccError when EC2 did not describe the type or the
    type does not allow ThreadsPerCore=1."""
    if cpus is None:
        raise MccError(f"EC2 (DescribeInstanceTypes) did not describe instance type {instance_type!r}, so mcc cannot "
                       "tell its physical cores, which `hyperthreading = false` launches it with")
    if cpus.threads_per_core == 1:
        return None
    if 1 not in cpus.valid_threads:
        allowed = ", ".join(map(str, cpus.valid_threads)) or f"only its default {cpus.threads_per_core}"
        raise MccError(f"instance type {instance_type!r} cannot run with `hyperthreading = false`: EC2 "
                       f"(DescribeInstanceTypes, ValidThreadsPerCore) allows ThreadsPerCore {allowed}, not 1. Fix: "
                       "choose a worker type that allows one thread per core (most non-metal c/m/r types, e.g. "
                       "c6i.large), or keep hyperthreading on")
    return {"CoreCount": cpus.cores, "ThreadsPerCore": 1}


def offered_types(ctx: AwsContext, instance_types: list[str]) -> set[str]:
    """Which of ``instance_types`` EC2 offers in the context's region (``DescribeInstanceTypeOfferings``).

    Raises MccError (credentials, region) when EC2 cannot be asked: the caller decides what that means."""
    reply = call(ctx.client("ec2").describe_instance_type_offerings, LocationType="region",
                 Filters=[{"Name": "instance-type", "Values": sorted(set(instance_types))}], deadline=LOOKUP_DEADLINE)
    return {o["InstanceType"] for o in reply.get("InstanceTypeOfferings", [])}
