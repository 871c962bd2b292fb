"""What compute costs: an offline table of EC2 On-Demand Linux prices, AWS's billing rules, and a refresh
from the AWS Price List API cached in the ledger's ``prices`` table.

Billing rule (Amazon EC2 pricing page, https://aws.amazon.com/ec2/pricing/on-demand/): Linux On-Demand and
Spot instances are billed per second with a 60-second minimum, per instance-run. The original mCC charged
every instance a whole hour at least. ElastiCache bills node-hours; a partial node-hour counts as a full one.
"""
from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

TABLE_FILE = Path(__file__).parent / "prices" / "ec2-ondemand-linux.json"
MINIMUM_SECONDS = 60
LOCAL = "local"

# Price List API "location" → region code (older responses carry no regionCode attribute).
LOCATIONS: dict[str, str] = {
    "US East (N. Virginia)": "us-east-1", "US East (Ohio)": "us-east-2", "US West (N. California)": "us-west-1",
    "US West (Oregon)": "us-west-2", "EU (Ireland)": "eu-west-1", "Europe (Ireland)": "eu-west-1",
    "EU (London)": "eu-west-2", "Europe (London)": "eu-west-2", "EU (Paris)": "eu-west-3", "Europe (Paris)": "eu-west-3",
    "EU (Frankfurt)": "eu-central-1", "Europe (Frankfurt)": "eu-central-1", "EU (Stockholm)": "eu-north-1",
    "Europe (Stockholm)": "eu-north-1", "Asia Pacific (Tokyo)": "ap-northeast-1", "Asia Pacific (Seoul)": "ap-northeast-2",
    "Asia Pacific (Singapore)": "ap-southeast-1", "Asia Pacific (Sydney)": "ap-southeast-2",
    "Asia Pacific (Mumbai)": "ap-south-1", "Canada (Central)": "ca-central-1", "South America (Sao Paulo)": "sa-east-1",
}


def billed_seconds(seconds: float) -> int:
    """Seconds AWS bills for one instance-run of ``seconds``: whole seconds, at least 60."""
    return max(MINIMUM_SECONDS, math.ceil(max(0.0, seconds)))


def instance_cost(seconds: float, price_per_hour: float | None) -> float:
    """USD for one EC2 instance-run (Linux, On-Demand or Spot): per-second billing, 60-second minimum.

    A price of None or 0 (a local process) costs 0.
    """
    if not price_per_hour:
        return 0.0
    return billed_seconds(seconds) * price_per_hour / 3600.0


def cache_cost(seconds: float, price_per_hour: float | None) -> float:
    """USD for one ElastiCache node that lived ``seconds``: node-hours, a partial hour billed as a full one."""
    if not price_per_hour:
        return 0.0
    return max(1, math.ceil(max(0.0, seconds) / 3600.0)) * price_per_hour


def storage_cost(gb: float, seconds: float, price_per_gb_month: float | None) -> float:
    """USD for ``gb`` of EBS or S3 storage kept ``seconds`` (a month is 730 hours, prorated)."""
    if not price_per_gb_month or not gb:
        return 0.0
    return gb * price_per_gb_month * max(0.0, seconds) / (730 * 3600.0)


# -- the table ------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def packaged_table() -> dict[str, Any]:
    """The table shipped with mcc (``mcc/report/prices/ec2-ondemand-linux.json``)."""
    return json.loads(TABLE_FILE.read_text())


def _ledger_rows(home: str | Path | None) -> tuple[Path | None, list[tuple[Any, ...]]]:
    """The ledger's ``prices`` rows (region, type, $/h, vCPUs, source, fetched_at) and the ledger's path.

    Reads the open ledger when it is the one asked for; otherwise reads ``home/ledger.db`` (default
    ``$MCC_HOME``) with a bare connection, only if the file exists: a read never creates or migrates a
    ledger. A ledger without the table (older schema) has no rows.
    """
    from mcc.ledger import current_ledger, default_home, models

    ledger = current_ledger()
    wanted = Path(home).expanduser().resolve() if home is not None else None
    if ledger is not None and wanted in (None, ledger.home):
        query = models.Price.select().tuples().order_by(models.Price.fetched_at)
        return ledger.path, list(query)
    path = (wanted or default_home().resolve()) / "ledger.db"
    if not path.is_file():
        return None, []
    try:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    except sqlite3.Error as exc:
        log.warning("ignoring the prices in %s: %s", path, exc)
        return None, []
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='prices'").fetchone() is None:
            return path, []
        return path, conn.execute("SELECT region, instance_type, usd_per_hour, vcpus, source, fetched_at "
                                  "FROM prices ORDER BY fetched_at").fetchall()
    except sqlite3.Error as exc:
        log.warning("ignoring the prices in %s: %s", path, exc)
        return path, []
    finally:
        conn.close()


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def load_table(home: str | Path | None = None) -> dict[str, Any]:
    """The packaged table with the ledger's refreshed prices (``prices`` table) laid over it.

    The ledger is the open one, else ``home/ledger.db`` (default ``$MCC_HOME``) when it exists. The
    result has ``regions`` (region → type → $/h), ``vcpus`` (type → n), ``date``, ``source``,
    ``elasticache`` and ``refreshed`` (None, or the ledger ``path`` and the latest fetch's ``date``
    and ``source``).
    """
    base = packaged_table()
    table: dict[str, Any] = {
        "regions": {r: dict(p) for r, p in base["regions"].items()}, "vcpus": dict(base["vcpus"]),
        "date": base["date"], "source": base["source"], "refreshed": None,
        "elasticache": {r: dict(p) for r, p in base["elasticache"]["regions"].items()},
    }
    path, rows = _ledger_rows(home)
    for region, itype, usd, cpus, _source, _at in rows:
        table["regions"].setdefault(region, {})[itype] = usd
        if cpus is not None:
            table["vcpus"][itype] = cpus
    if rows:
        *_, source, fetched_at = rows[-1]
        table["refreshed"] = {"date": _iso(fetched_at), "source": source, "path": str(path)}
    return table


def price(instance_type: str, region: str | None, *, home: str | Path | None = None) -> float | None:
    """On-Demand Linux $/hour of ``instance_type`` in ``region``; 0 for ``local``; None when unknown."""
    if instance_type == LOCAL:
        return 0.0
    if not region:
        return None
    return load_table(home)["regions"].get(region, {}).get(instance_type)


def vcpus(instance_type: str, *, home: str | Path | None = None) -> int | None:
    """vCPUs of ``instance_type`` (1 for a local process: it runs one point at a time); None when unknown."""
    if instance_type == LOCAL:
        return 1
    return load_table(home)["vcpus"].get(instance_type)


def cache_price(node_type: str, region: str | None) -> float | None:
    """ElastiCache on-demand $/node-hour from the packaged table; None when unknown."""
    return packaged_table()["elasticache"]["regions"].get(region or "", {}).get(node_type)


def table_rows(region: str | None = None, *, home: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows (region, instance_type, vcpus, usd_per_hour) for ``mcc prices``, sorted."""
    table = load_table(home)
    rows = []
    for reg, prices in sorted(table["regions"].items()):
        if region and reg != region:
            continue
        for itype, usd in sorted(prices.items(), key=lambda kv: _type_key(kv[0])):
            rows.append({"region": reg, "instance_type": itype, "vcpus": table["vcpus"].get(itype),
                         "usd_per_hour": usd})
    return rows


_SIZES = ["nano", "micro", "small", "medium", "large", "xlarge"]


def _type_key(itype: str) -> tuple[str, int, int]:
    family, _, size = itype.partition(".")
    if size in _SIZES:
        return family, 0, _SIZES.index(size)
    n = size[: -len("xlarge")] if size.endswith("xlarge") else ""
    return family, 1, int(n) if n.isdigit() else 10_000


# -- the AWS Price List API ---------------------------------------------------------------------------

def _region_of(attributes: dict[str, Any]) -> str | None:
    return attributes.get("regionCode") or LOCATIONS.get(attributes.get("location", ""))


def _hourly_usd(terms: dict[str, Any]) -> float | None:
    for term in (terms.get("OnDemand") or {}).values():
        for dim in (term.get("priceDimensions") or {}).values():
            usd = (dim.get("pricePerUnit") or {}).get("USD")
            if usd is None or dim.get("unit", "Hrs") not in ("Hrs", "Hours", "hours"):
                continue
            value = float(usd)
            if value > 0:
                return value
    return None


def parse_products(price_list: Iterable[str | dict[str, Any]]) -> dict[str, Any]:
    """``{"regions": {region: {type: $/h}}, "vcpus": {type: n}}`` from ``get_products`` PriceList items.

    Items are JSON strings (as the API returns them) or already-decoded dicts. Only Linux, shared tenancy,
    no pre-installed software, "Used" capacity entries count where those attributes are present.
    """
    regions: dict[str, dict[str, float]] = {}
    cpus: dict[str, int] = {}
    wanted = {"operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}
    for item in price_list:
        doc = json.loads(item) if isinstance(item, (str, bytes)) else item
        attributes = (doc.get("product") or {}).get("attributes") or {}
        itype = attributes.get("instanceType")
        region = _region_of(attributes)
        if not itype or not region:
            continue
        if any(k in attributes and attributes[k] != v for k, v in wanted.items()):
            continue
        usd = _hourly_usd(doc.get("terms") or {})
        if usd is None:
            continue
        regions.setdefault(region, {})[itype] = usd
        if str(attributes.get("vcpu", "")).isdigit():
            cpus[itype] = int(attributes["vcpu"])
    return {"regions": regions, "vcpus": cpus}


def get_products(pricing_client: Any, region: str, instance_types: Iterable[str]) -> list[str]:
    """Every PriceList item for Linux On-Demand ``instance_types`` in ``region`` (paginated)."""
    filters = [
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
        {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
        {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
        {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
        {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
        {"Type": "ANY_OF", "Field": "instanceType", "Value": ",".join(sorted(set(instance_types)))},
    ]
    items: list[str] = []
    paginator = pricing_client.get_paginator("get_products")
    for page in paginator.paginate(ServiceCode="AmazonEC2", Filters=filters, FormatVersion="aws_v1"):
        items.extend(page.get("PriceList") or [])
    return items


def refresh_prices(ledger: Any, pricing_client: Any, *, regions: Iterable[str] | None = None,
                   instance_types: Iterable[str] | None = None) -> dict[str, Any]:
    """Fetch current prices from the Price List API and upsert them into the ledger's ``prices`` table.

    Defaults: the packaged table's regions and instance types plus every region and type the ledger's
    resources record. All rows are written in one transaction; returns the fetched document
    (``source``, ``date``, ``regions``, ``vcpus``). ``pricing_client`` is ``boto3.client("pricing",
    region_name="us-east-1")`` (the API answers in us-east-1, eu-central-1 and ap-south-1 only).
    """
    base = packaged_table()
    wanted_regions = set(regions or base["regions"])
    wanted_types = set(instance_types or base["vcpus"])
    if regions is None or instance_types is None:
        used_regions, used_types = _ledger_usage()
        wanted_regions |= used_regions if regions is None else set()
        wanted_types |= used_types if instance_types is None else set()
    fetched: dict[str, Any] = {"regions": {}, "vcpus": {}}
    for region in sorted(wanted_regions):
        parsed = parse_products(get_products(pricing_client, region, wanted_types))
        fetched["regions"].update(parsed["regions"])
        fetched["vcpus"].update(parsed["vcpus"])
        log.info("fetched %d prices for %s", len(parsed["regions"].get(region, {})), region)
    now = time.time()
    doc = {"source": "AWS Price List API (pricing:GetProducts, ServiceCode AmazonEC2, Linux, On-Demand)",
           "date": _iso(now), **fetched}
    _store(ledger, doc, now)
    return doc


def _store(ledger: Any, doc: dict[str, Any], fetched_at: float) -> None:
    """Upsert ``doc``'s prices into the ledger in one transaction."""
    from peewee import chunked

    from mcc.ledger.models import Price

    rows = [{"region": region, "instance_type": itype, "usd_per_hour": usd, "vcpus": doc["vcpus"].get(itype),
             "source": doc["source"], "fetched_at": fetched_at}
            for region, prices in sorted(doc["regions"].items()) for itype, usd in sorted(prices.items())]
    update = [Price.usd_per_hour, Price.vcpus, Price.source, Price.fetched_at]
    with ledger.atomic():
        for batch in chunked(rows, 500):
            (Price.insert_many(batch)
             .on_conflict(conflict_target=[Price.region, Price.instance_type], preserve=update).execute())


def _ledger_usage() -> tuple[set[str], set[str]]:
    from mcc.ledger import models

    regions, types = set(), set()
    for row in models.Resource.select(models.Resource.region, models.Resource.attrs).where(
            models.Resource.kind == "instance"):
        if row.region:
            regions.add(row.region)
        itype = (row.attrs or {}).get("instance_type")
        if itype and itype != LOCAL:
            types.add(itype)
    return regions, types

