"""The EC2 market moto does not emulate: spot prices per type, capacity that runs out, the spot MaxPrice.

moto prices every spot type at $0.00001 in every zone, never runs out of capacity and ignores a spot
request's MaxPrice. :class:`Market` sits on the fault proxy: it rewrites DescribeSpotPriceHistory to the
prices a test sets, refuses RunInstances of a type with InsufficientInstanceCapacity when asked, and
refuses a spot RunInstances whose MaxPrice is below the type's price with SpotMaxPriceTooLow, as EC2 does.
"""
from __future__ import annotations

import re
import threading
from typing import Any

from tests.aws.harness.proxy import Call, Fault, FaultProxy

_ITEM = re.compile(rb"<item>(?:(?!<item>).)*?</item>", re.S)
_TYPE = re.compile(rb"<instanceType>([^<]+)</instanceType>")
_PRICE = re.compile(rb"<spotPrice>[^<]*</spotPrice>")


class Market:
    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.spot: dict[str, float] = {}
        self._request = threading.local()  # the params of the request being handled (hooks run in its thread)
        proxy.add_hook(self._remember)
        proxy.add_rewriter(self._rewrite)
        proxy.fail(self._under_price, "SpotMaxPriceTooLow", times=None,
                   message="Your Spot request price is lower than the current Spot price (test harness market).")

    def _remember(self, call: Call, phase: str) -> bool:
        if phase == "before":
            self._request.params = call.params
        return False

    def params(self) -> dict[str, Any]:
        return getattr(self._request, "params", {})

    def set_spot_price(self, instance_type: str, usd_per_hour: float) -> None:
        """DescribeSpotPriceHistory answers ``usd_per_hour`` for ``instance_type`` in every zone."""
        self.spot[instance_type] = usd_per_hour

    def refuse(self, instance_type: str, code: str = "InsufficientInstanceCapacity", times: int | None = None) -> Fault:
        """RunInstances of ``instance_type`` answers ``code`` (``times`` None: until cleared)."""
        return self.proxy.fail(
            lambda s, a: s == "ec2" and a == "RunInstances" and self.params().get("InstanceType") == instance_type,
            code, times, message=f"We currently do not have sufficient {instance_type} capacity (test harness market).")

    def _under_price(self, service: str, action: str) -> bool:
        if service != "ec2" or action != "RunInstances":
            return False
        params = self.params()
        cap = params.get("InstanceMarketOptions.SpotOptions.MaxPrice")
        price = self.spot.get(params.get("InstanceType", ""))
        return cap is not None and price is not None and float(cap) < price

    def _rewrite(self, service: str, action: str, params: dict, status: int, body: bytes) -> bytes | None:
        if service != "ec2" or action != "DescribeSpotPriceHistory" or status >= 300 or not self.spot:
            return None

        def item(m: re.Match) -> bytes:
            found = _TYPE.search(m.group(0))
            usd = self.spot.get(found.group(1).decode()) if found else None
            return m.group(0) if usd is None else _PRICE.sub(f"<spotPrice>{usd:.6f}</spotPrice>".encode(), m.group(0))

        return _ITEM.sub(item, body)
