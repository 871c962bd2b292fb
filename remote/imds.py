"""The instance metadata service (IMDSv2): identity, region, and the spot interruption notice.

``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (the variable botocore honours) moves it, as everywhere.
"""
from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

DEFAULT = "http://169.254.169.254/"


class Imds:
    def __init__(self, endpoint: str | None = None, timeout: float = 2.0) -> None:
        self.base = (endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT).rstrip("/")
        self.timeout = timeout
        self._token: tuple[str, float] | None = None

    def _token_value(self) -> str:
        if self._token is None or self._token[1] < time.monotonic():
            req = urllib.request.Request(f"{self.base}/latest/api/token", method="PUT",
                                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                self._token = (resp.read().decode(), time.monotonic() + 21000)
        return self._token[0]

    def get(self, path: str) -> str | None:
        """The value at /latest/meta-data/<path>, or None if there is none (404)."""
        req = urllib.request.Request(f"{self.base}/latest/meta-data/{path}",
                                     headers={"X-aws-ec2-metadata-token": self._token_value()})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def spot_interruption(self) -> bool:
        """True once AWS has scheduled this spot instance's interruption (a two-minute notice)."""
        try:
            return self.get("spot/instance-action") is not None
        except (OSError, urllib.error.URLError):
            return False
