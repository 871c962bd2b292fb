"""Spot prices and vCPU counts asked of EC2 (moto_server over HTTP), and the pure parts on real reply shapes."""
from __future__ import annotations

import datetime as dt

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


def test_vcpus_from_describe_instance_types(aws_ctx: AwsContext) -> None:
    counts = market.instance_vcpus(aws_ctx, ["t3.micro", "c6i.large", "c6i.large"])
    assert counts == {"t3.micro": 2, "c6i.large": 2}


def test_unknown_type_gives_no_count_and_no_error(aws_ctx: AwsContext) -> None:
    assert market.instance_vcpus(aws_ctx, ["no-such.type"]) == {}


def test_spot_prices_are_asked_of_the_region(aws_ctx: AwsContext) -> None:
    prices = market.spot_prices(aws_ctx, "t3.micro")
    # moto answers one entry per zone offering the type (at a token price): parsed, per zone of this region
    assert prices and all(zone.startswith(aws_ctx.region) and price > 0 for zone, price in prices.items())
