"""Spot prices and processors asked of EC2 (moto_server over HTTP), and the pure parts on real reply shapes."""
from __future__ import annotations

import datetime as dt

import pytest

from mcc.errors import MccError
from mcc.providers.aws import market
from mcc.providers.aws.clients import AwsContext
from tests.aws._moto import aws_ctx, aws_env, moto_endpoint  # noqa: F401 - fixtures

T0 = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)


def test_latest_spot_price_per_zone_from_a_history() -> None:
    # the shape DescribeSpotPriceHistory returns: several entries per zone, newest first is not guaranteed
    history = [
        {"AvailabilityZone": "us-east-1a", "InstanceType": "c6i.large", "ProductDescription": "Linux/UNIX",
         "SpotPrice": "0.031000", "Timestamp": T0},
        {"AvailabilityZone": "us-east-1a", "InstanceType": "c6i.large", "ProductDescription": "Linux/UNIX",
         "SpotPrice": "0.035000", "Timestamp": T0 + dt.timedelta(hours=1)},
        {"AvailabilityZone": "us-east-1b", "InstanceType": "c6i.large", "ProductDescription": "Linux/UNIX",
         "SpotPrice": "0.029000", "Timestamp": T0},
        {"AvailabilityZone": "us-east-1c", "InstanceType": "c6i.large", "SpotPrice": "n/a", "Timestamp": T0},
    ]
    prices = market.latest_spot_prices(history)
    assert prices == {"us-east-1a": 0.035, "us-east-1b": 0.029}
    assert market.spot_price(prices, "us-east-1b") == 0.029
    assert market.spot_price(prices, None) == 0.035  # zone unknown: the region's highest, an upper bound
    assert market.spot_price({}, "us-east-1a") is None


def test_processors_from_describe_instance_types(aws_ctx: AwsContext) -> None:
    cpus = market.instance_cpus(aws_ctx, ["t3.micro", "m5.xlarge", "m5.xlarge", "t2.micro", "c5.metal"])
    assert cpus == {"t3.micro": market.Cpus(2, 1, 2, (1, 2)), "m5.xlarge": market.Cpus(4, 2, 2, (1, 2)),
                    "t2.micro": market.Cpus(1, 1, 1, ()), "c5.metal": market.Cpus(96, 48, 2, ())}
    assert cpus["m5.xlarge"].vcpus_with(True) == 4 and cpus["m5.xlarge"].vcpus_with(False) == 2


def test_smt_off_takes_the_physical_cores_or_names_the_type_that_cannot(aws_ctx: AwsContext) -> None:
    cpus = market.instance_cpus(aws_ctx, ["m5.xlarge", "t2.micro", "c5.metal"])
    assert market.smt_off("m5.xlarge", cpus["m5.xlarge"]) == {"CoreCount": 2, "ThreadsPerCore": 1}
    assert market.smt_off("t2.micro", cpus["t2.micro"]) is None  # one thread per core already: nothing to change
    with pytest.raises(MccError, match=r"'c5.metal' cannot run with `hyperthreading = false`.*ThreadsPerCore only "
                                       r"its default 2, not 1\. Fix: choose a worker type"):
        market.smt_off("c5.metal", cpus["c5.metal"])
    with pytest.raises(MccError, match="did not describe instance type 'no-such.type'"):
        market.smt_off("no-such.type", None)


def test_unknown_type_gives_no_count_and_no_error(aws_ctx: AwsContext) -> None:
    assert market.instance_cpus(aws_ctx, ["no-such.type"]) == {}


def test_spot_prices_are_asked_of_the_region(aws_ctx: AwsContext) -> None:
    prices = market.spot_prices(aws_ctx, "t3.micro")
    # moto answers one entry per zone offering the type (at a token price): parsed, per zone of this region
    assert prices and all(zone.startswith(aws_ctx.region) and price > 0 for zone, price in prices.items())
