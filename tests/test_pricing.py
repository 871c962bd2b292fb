"""mcc.report.pricing: per-second billing with the 60 s minimum, the shipped table, the Price List parser on a
response of the recorded shape, and the refresh cached in the ledger's prices table."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import peewee
import pytest

from mcc.report import pricing
from mcc.ledger import current_ledger, open_ledger
from mcc.ledger.models import Price
from mcc.ledger_schema import current_version, migrate
from tests.conftest import mcc_json


def test_per_second_billing_with_a_60_second_minimum() -> None:
    assert [pricing.billed_seconds(s) for s in (0, 1, 59.2, 60, 60.1, 3600, 3600.4)] == [60, 60, 60, 60, 61, 3600, 3601]
    assert pricing.instance_cost(30, 0.096) == pytest.approx(60 * 0.096 / 3600)  # the minimum
    assert pricing.instance_cost(90.5, 0.36) == pytest.approx(91 * 0.36 / 3600)  # per second, rounded up
    assert pricing.instance_cost(3600, 0.096) == pytest.approx(0.096)
    assert pricing.instance_cost(600, 1.0) == pytest.approx(1 / 6)  # not the original mCC's whole hour
    assert pricing.instance_cost(1000, None) == 0 == pricing.instance_cost(1000, 0.0)


def test_cache_node_hours_and_storage() -> None:
    assert pricing.cache_cost(10, 0.017) == pytest.approx(0.017)
    assert pricing.cache_cost(3600, 0.017) == pytest.approx(0.017)
    assert pricing.cache_cost(3601, 0.017) == pytest.approx(0.034)
    assert pricing.storage_cost(100, 730 * 3600, 0.08) == pytest.approx(8.0)


def test_shipped_table_covers_families_and_regions() -> None:
    table = pricing.packaged_table()
    assert table["date"] and "aws.amazon.com/ec2/pricing" in table["source"]
    assert "60-second minimum" in table["billing"]
    regions = {"us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1"}
    assert regions <= set(table["regions"])
    for region in regions:
        prices = table["regions"][region]
        for family in ("m5", "m6i", "m7i", "c5", "c6i", "c7i", "r5", "r6i"):
            for size in ("large", "xlarge", "2xlarge", "4xlarge"):
                assert prices[f"{family}.{size}"] > 0, (region, family, size)
        for size in ("large", "xlarge", "2xlarge"):
            assert prices[f"t3.{size}"] > 0
        for itype in prices:
            assert table["vcpus"][itype] >= 2
    assert pricing.price("m5.large", "us-east-1") == 0.096
    assert pricing.price("m5.large", "eu-west-1") > pricing.price("m5.large", "us-east-1")
    assert pricing.price("local", None) == 0.0
    assert pricing.price("m5.large", "mars-1") is None and pricing.price("x9.weird", "us-east-1") is None
    assert pricing.vcpus("c5.9xlarge") == 36 and pricing.vcpus("m6i.4xlarge") == 16 and pricing.vcpus("local") == 1


def _item(itype: str, usd: str, *, region: str | None = "us-east-1", location: str = "US East (N. Virginia)",
          vcpu: str = "2", os_: str = "Linux", capacity: str = "Used", sku: str = "SKU") -> str:
    """One PriceList entry as the Price List API returns it: a JSON string (fields trimmed to the real shape)."""
    attributes = {
        "instanceType": itype, "vcpu": vcpu, "location": location, "locationType": "AWS Region",
        "operatingSystem": os_, "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": capacity,
        "licenseModel": "No License required", "usagetype": f"BoxUsage:{itype}", "operation": "RunInstances",
        "servicecode": "AmazonEC2", "instanceFamily": "General purpose", "memory": "8 GiB", "marketoption": "OnDemand",
    }
    if region:
        attributes["regionCode"] = region
    term = f"{sku}.JRTCKXETXF"
    doc = {
        "product": {"productFamily": "Compute Instance", "attributes": attributes, "sku": sku},
        "serviceCode": "AmazonEC2",
        "terms": {
            "OnDemand": {term: {
                "priceDimensions": {f"{term}.6YS6EN2CT7": {
                    "unit": "Hrs", "endRange": "Inf", "beginRange": "0", "appliesTo": [],
                    "description": f"${usd} per On Demand {os_} {itype} Instance Hour",
                    "rateCode": f"{term}.6YS6EN2CT7", "pricePerUnit": {"USD": usd}}},
                "sku": sku, "effectiveDate": "2025-11-01T00:00:00Z", "offerTermCode": "JRTCKXETXF", "termAttributes": {}}},
            "Reserved": {f"{sku}.4NA7Y494T4": {"priceDimensions": {f"{sku}.4NA7Y494T4.2TG2D8R56U": {
                "unit": "Quantity", "pricePerUnit": {"USD": "500"}, "description": "Upfront Fee"}}}},
        },
        "version": "20251101000000", "publicationDate": "2025-11-01T00:00:00Z",
    }
    return json.dumps(doc)


RECORDED_PAGES = [
    {"FormatVersion": "aws_v1", "NextToken": "page-2", "PriceList": [
        _item("m5.large", "0.0960000000", region=None),  # an older item: location only
        _item("c6i.xlarge", "0.1920000000", region="eu-west-1", location="EU (Ireland)", vcpu="4"),
        _item("m5.large", "0.1880000000", os_="Windows", sku="WIN"),  # not Linux
        _item("m5.large", "0.0000000000", capacity="AllocatedCapacityReservation", sku="ODCR"),
    ]},
    {"FormatVersion": "aws_v1", "PriceList": [
        _item("m7i.2xlarge", "0.4032000000", vcpu="8", sku="M7I"),
        _item("m5.xlarge", "0.0000000000", sku="ZERO"),  # a zero-priced dimension is no price
    ]},
]


def test_parse_products_on_a_recorded_response() -> None:
    items = [item for page in RECORDED_PAGES for item in page["PriceList"]]
    parsed = pricing.parse_products(items)
    assert parsed["regions"] == {"us-east-1": {"m5.large": 0.096, "m7i.2xlarge": 0.4032},
                                 "eu-west-1": {"c6i.xlarge": 0.192}}
    assert parsed["vcpus"] == {"m5.large": 2, "c6i.xlarge": 4, "m7i.2xlarge": 8}
    assert pricing.parse_products([json.loads(items[0])])["regions"] == {"us-east-1": {"m5.large": 0.096}}


class RecordedPricing:
    """Plays the recorded pages back through the paginator interface boto3's pricing client offers."""

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages, self.calls = pages, []

    def get_paginator(self, name: str) -> "RecordedPricing":
        assert name == "get_products"
        return self

    def paginate(self, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append(kwargs)
        region = next(f["Value"] for f in kwargs["Filters"] if f["Field"] == "regionCode")
        return self.pages if region == "us-east-1" else []


def test_refresh_prices_upserts_into_the_ledger(mcc_home: Path) -> None:
    ledger = open_ledger(mcc_home)
    client = RecordedPricing([RECORDED_PAGES[1]])
    doc = pricing.refresh_prices(ledger, client, regions=["us-east-1", "eu-west-1"], instance_types=["m7i.2xlarge"])
    assert doc["regions"] == {"us-east-1": {"m7i.2xlarge": 0.4032}}
    call = client.calls[0]
    assert call["ServiceCode"] == "AmazonEC2"
    filters = {f["Field"]: (f["Type"], f["Value"]) for f in call["Filters"]}
    assert filters["operatingSystem"] == ("TERM_MATCH", "Linux") and filters["instanceType"] == ("ANY_OF", "m7i.2xlarge")
    rows = list(Price.select().tuples())
    assert [r[:4] for r in rows] == [("us-east-1", "m7i.2xlarge", 0.4032, 8)]
    assert rows[0][4].startswith("AWS Price List API") and rows[0][5] > 0
    assert not (mcc_home / "prices.json").exists()
    table = pricing.load_table()
    assert table["refreshed"] == {"path": str(ledger.path), "date": doc["date"], "source": doc["source"]}
    assert table["regions"]["us-east-1"]["m7i.2xlarge"] == 0.4032
    assert table["regions"]["us-east-1"]["m5.large"] == 0.096  # the rest of the shipped table stays

    again = [{"PriceList": [RECORDED_PAGES[1]["PriceList"][0].replace("0.4032000000", "0.5000000000")]}]
    pricing.refresh_prices(ledger, RecordedPricing(again), regions=["us-east-1"], instance_types=["m7i.2xlarge"])
    assert Price.select().count() == 1  # upserted, not duplicated
    assert pricing.price("m7i.2xlarge", "us-east-1") == 0.5


def test_refreshed_prices_read_from_another_process(mcc_home: Path) -> None:
    """`mcc prices` opens no ledger: it reads the file's rows with a bare connection."""
    with open_ledger(mcc_home) as ledger:
        pricing.refresh_prices(ledger, RecordedPricing(RECORDED_PAGES), regions=["us-east-1"],
                               instance_types=["m5.large", "m7i.2xlarge"])
        path = str(ledger.path)
    assert current_ledger() is None
    assert pricing.load_table(mcc_home)["refreshed"]["path"] == path
    doc = mcc_json("prices", "--region", "us-east-1", home=mcc_home)
    assert doc["refreshed"]["path"] == path and doc["refreshed"]["source"].startswith("AWS Price List API")
    row = next(r for r in doc["prices"] if r["instance_type"] == "m7i.2xlarge")
    assert row == {"region": "us-east-1", "instance_type": "m7i.2xlarge", "vcpus": 8, "usd_per_hour": 0.4032}


def test_a_ledger_older_than_the_prices_table_has_no_refresh(tmp_path: Path) -> None:
    home = tmp_path / "old"
    home.mkdir()
    old = peewee.SqliteDatabase(str(home / "ledger.db"))
    migrate(old, target=3)
    old.close()
    table = pricing.load_table(home)
    assert table["refreshed"] is None and table["regions"] == pricing.packaged_table()["regions"]
    conn = sqlite3.connect(home / "ledger.db")
    try:
        assert current_version(conn) == 3  # a read does not migrate
    finally:
        conn.close()


def test_mcc_prices_json(mcc_home: Path) -> None:
    doc = mcc_json("prices", "--region", "eu-central-1", home=mcc_home)
    assert doc["date"] == pricing.packaged_table()["date"] and doc["refreshed"] is None
    assert {r["region"] for r in doc["prices"]} == {"eu-central-1"}
    row = next(r for r in doc["prices"] if r["instance_type"] == "c6i.2xlarge")
    assert row["vcpus"] == 8 and row["usd_per_hour"] == pricing.price("c6i.2xlarge", "eu-central-1")
    assert not mcc_home.exists()  # a fresh machine: reading prices creates no ledger
