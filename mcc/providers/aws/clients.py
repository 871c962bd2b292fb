"""boto3 sessions and clients for one region, created once and passed to providers.

The standard credential and region chain applies (profiles, SSO, environment); ``AWS_ENDPOINT_URL``
(honoured by botocore itself) points every client at an emulator.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from mcc.errors import ConfigError

RETRY_CONFIG = Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=10, read_timeout=60)


@dataclass
class AwsContext:
    """One account + region, and the ledger whose tags every resource carries."""

    session: boto3.Session
    region: str
    ledger_uuid: str
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, ledger_uuid: str, *, region: str | None = None, profile: str | None = None) -> "AwsContext":
        session = boto3.Session(profile_name=profile, region_name=region)
        if not session.region_name:
            raise ConfigError(
                "no AWS region: set `region` in the [aws] table of mcc.toml, pass --region, or set AWS_REGION "
                "(or a region in your AWS profile)."
            )
        return cls(session, session.region_name, ledger_uuid)

    def client(self, service: str) -> Any:
        """A cached client for ``service`` in this context's region."""
        if service not in self._clients:
            self._clients[service] = self.session.client(service, region_name=self.region, config=RETRY_CONFIG)
        return self._clients[service]


def aws_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    """{"k": "v"} → [{"Key": "k", "Value": "v"}] (EC2, IAM, ElastiCache, S3 shape)."""
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    """[{"Key": "k", "Value": "v"}] → {"k": "v"}."""
    return {t["Key"]: t["Value"] for t in tags or []}


def epoch(value: Any) -> float | None:
    """A describe's timestamp (a datetime from botocore, or an ISO 8601 string such as an image's
    ``CreationDate``) as UNIX seconds; None when absent or unreadable."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()


def tag_specifications(resource_types: list[str], tags: dict[str, str]) -> list[dict[str, Any]]:
    """TagSpecifications for a create call: the tags go inside the create, never after it."""
    return [{"ResourceType": rt, "Tags": aws_tags(tags)} for rt in resource_types]


def client_token(ledger_uuid: str, idempotency_key: str) -> str:
    """The ClientToken of a create: deterministic per ledger and entity. A token is unique per account and
    region, and keys such as ``aws:<region>:image-builder:<digest>`` repeat across ledgers of one account."""
    return hashlib.sha256(f"{ledger_uuid}/{idempotency_key}".encode()).hexdigest()[:64]
