"""The ``[aws]`` table of mcc.toml (and its flags), validated into AwsSettings."""
from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from mcc.errors import ConfigError

QUEUES = ("manager", "elasticache")


@dataclass(frozen=True)
class AwsSettings:
    region: str | None = None            # None = the standard chain (AWS_REGION, profile)
    profile: str | None = None
    manager_type: str = "t3.small"
    worker_type: str = "c6i.large"
    spot: bool = False                   # workers on spot; the manager is always on-demand
    queue: str = "manager"               # redis-server on the manager, or "elasticache" (TLS + AUTH)
    cache_node_type: str = "cache.t3.micro"
    ssh_cidr: str | None = None          # SSH stays closed unless a CIDR is named (never 0.0.0.0/0)
    custom_image: bool = False           # bake an AMI with mcc and the requirements installed
    max_lifetime_hours: float = 24.0     # every instance ends itself after this, whatever happens
    requirements: list[str] = field(default_factory=list)  # pip requirements installed on instances
    subnet_id: str | None = None
    vpc_id: str | None = None
    tick_seconds: float = 5.0            # manager supervision period: one DescribeInstances per tick
    boot_seconds: float = 900.0          # a manager instance silent this long after launch is replaced
    ebs_kms_key: str | None = None       # KMS key ARN for root volumes; None = the AWS-managed aws/ebs key

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_TYPES: dict[str, tuple[type, ...]] = {
    f.name: ((str, type(None)) if f.default is None else (bool,) if isinstance(f.default, bool)
             else (int, float) if isinstance(f.default, float) else (list,) if f.name == "requirements" else (str,))
    for f in dataclasses.fields(AwsSettings)
}


def aws_settings(table: Mapping[str, Any] | None, source: str = "mcc.toml [aws]") -> AwsSettings:
    """Validate the [aws] table; every problem names the key and the fix."""
    table = dict(table or {})
    for key, value in table.items():
        if key not in _TYPES:
            close = difflib.get_close_matches(key, list(_TYPES), n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ConfigError(f"{source}: unknown key `{key}`.{hint} Valid keys: {', '.join(_TYPES)}.")
        if isinstance(value, bool) and bool not in _TYPES[key] or not isinstance(value, _TYPES[key]):
            raise ConfigError(f"{source}: `{key}` must be {' or '.join(t.__name__ for t in _TYPES[key] if t is not type(None))}, "
                              f"got {value!r}.")
    settings = AwsSettings(**table)
    if settings.queue not in QUEUES:
        raise ConfigError(f"{source}: `queue` must be one of {', '.join(QUEUES)}, got {settings.queue!r}.")
    for key in ("tick_seconds", "boot_seconds"):
        if getattr(settings, key) <= 0:
            raise ConfigError(f"{source}: `{key}` must be > 0, got {getattr(settings, key)}.")
    if settings.max_lifetime_hours <= 0:
        raise ConfigError(f"{source}: `max_lifetime_hours` must be > 0, got {settings.max_lifetime_hours}.")
    if settings.ssh_cidr is not None:
        try:
            net = ipaddress.ip_network(settings.ssh_cidr, strict=False)
        except ValueError:
            raise ConfigError(f"{source}: `ssh_cidr` {settings.ssh_cidr!r} is not a CIDR like \"203.0.113.7/32\".") from None
        if net.prefixlen == 0:
            raise ConfigError(f"{source}: `ssh_cidr` {settings.ssh_cidr} opens SSH to the whole internet; name your own address.")
    if settings.ebs_kms_key is not None and not re.fullmatch(r"arn:aws[\w-]*:kms:[\w-]+:\d{12}:key/[\w-]+",
                                                             settings.ebs_kms_key):
        raise ConfigError(f"{source}: `ebs_kms_key` must be a KMS key ARN like "
                          f"\"arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab\", "
                          f"got {settings.ebs_kms_key!r}.")
    if not all(isinstance(r, str) for r in settings.requirements):
        raise ConfigError(f"{source}: `requirements` must be a list of strings like [\"ase>=3.22\"].")
    return settings
