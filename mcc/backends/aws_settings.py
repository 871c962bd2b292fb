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
EGRESS = ("endpoints", "nat")


@dataclass(frozen=True)
class AwsSettings:
    region: str | None = None            # None = the standard chain (AWS_REGION, profile)
    profile: str | None = None
    manager_type: str = "t3.small"
    worker_type: str = "c6i.large"
    spot: bool = False                   # workers on spot; the manager is always on-demand
    hyperthreading: bool = True          # false: workers launched with SMT off (CpuOptions: one thread per core)
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
    worker_types: list[str] | None = None  # ordered preference; None = [worker_type]
    subnets: list[str] | None = None     # subnets (one per zone) to try in order; None = subnet_id / the default
    max_spot_price: float | None = None  # $/h: a worker type whose spot price is above it is skipped
    budget_usd: float | None = None      # the most the run may cost (enforced by the manager)
    public_ip: bool = True               # false: no instance gets a public IPv4 address (billed per hour)
    egress: str = "endpoints"            # with public_ip = false, how instances reach AWS: "endpoints" (mcc makes
                                         # VPC endpoints per run) or "nat" (the named subnets route through your NAT)
    permissions_boundary: str = "mcc-boundary"  # the managed policy (path /mcc/) every role mcc creates carries;
                                                # "" = none (README's user policy then refuses CreateRole)

    @property
    def candidate_types(self) -> list[str]:
        """The worker types the manager tries, in order of preference."""
        return list(self.worker_types) if self.worker_types is not None else [self.worker_type]

    @property
    def private_endpoints(self) -> bool:
        """True when mcc makes the run's VPC endpoints (no public address, no NAT named)."""
        return not self.public_ip and self.egress == "endpoints"

    @property
    def candidate_subnets(self) -> list[str | None]:
        """The subnets the manager tries for each type, in order (None: the default subnet)."""
        return list(self.subnets) if self.subnets else [self.subnet_id]
    # Parts made beforehand by the original mCC's setup calls (mcc.templates, mcc.storage; mcc.launch sets
    # them): ids of resources of this ledger that the run uses instead of the ledger's shared ones.
    bucket: str | None = None            # the run's prefix goes into this bucket
    image_id: str | None = None
    security_group_id: str | None = None
    key_name: str | None = None
    cache_id: str | None = None          # an ElastiCache replication group of this ledger as the queue
    ebs_kms_key: str | None = None       # KMS key ARN for root volumes; None = the AWS-managed aws/ebs key

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_LISTS = {"requirements", "worker_types", "subnets"}
_NUMBERS = {"max_spot_price", "budget_usd"}
_TYPES: dict[str, tuple[type, ...]] = {
    f.name: ((list,) if f.name in _LISTS else (int, float) if f.name in _NUMBERS
             else (str, type(None)) if f.default is None else (bool,) if isinstance(f.default, bool)
             else (int, float) if isinstance(f.default, float) else (str,))
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
    if settings.worker_types is not None:
        if not settings.worker_types:
            raise ConfigError(f"{source}: `worker_types` is empty. Fix: name at least one instance type in order of "
                              'preference, e.g. worker_types = ["c6i.large", "c5.large"], or delete the line.')
        if not all(isinstance(t, str) and t.strip() for t in settings.worker_types):
            raise ConfigError(f"{source}: `worker_types` must be a list of instance type names like [\"c6i.large\"].")
    if settings.subnets is not None and not all(isinstance(t, str) and t.startswith("subnet-") for t in settings.subnets):
        raise ConfigError(f"{source}: `subnets` must be a list of subnet ids like [\"subnet-0abc\", \"subnet-0def\"].")
    if settings.budget_usd is not None and not settings.budget_usd > 0:
        raise ConfigError(f"{source}: `budget_usd` (--budget) must be an amount in USD > 0, got {settings.budget_usd}. "
                          "Fix: e.g. budget_usd = 25, or leave it out for no cap.")
    _check_private(settings, source)
    if settings.permissions_boundary and not re.fullmatch(r"[\w+=,.@-]{1,128}", settings.permissions_boundary):
        raise ConfigError(f"{source}: `permissions_boundary` must be the name of a managed policy under the path /mcc/ "
                          f'(like "mcc-boundary"), or "" for none; got {settings.permissions_boundary!r}.')
    if settings.max_spot_price is not None and not settings.max_spot_price > 0:
        raise ConfigError(f"{source}: `max_spot_price` must be a price in USD per hour > 0, got {settings.max_spot_price}.")
    return settings


def _check_private(settings: AwsSettings, source: str) -> None:
    """``public_ip = false`` only with a way for instances to reach what they need (checked before anything exists)."""
    if settings.egress not in EGRESS:
        raise ConfigError(f"{source}: `egress` must be one of {', '.join(EGRESS)}, got {settings.egress!r}.")
    if settings.public_ip:
        return
    if settings.egress == "nat" and not settings.candidate_subnets[0]:
        raise ConfigError(f'{source}: `egress = "nat"` needs the subnets whose route table reaches the internet '
                          'through your NAT. Fix: name them, e.g. subnets = ["subnet-0abc"] (or subnet_id = '
                          '"subnet-0abc"), or use egress = "endpoints".')
    if settings.egress == "endpoints" and not (settings.custom_image or settings.image_id):
        raise ConfigError(f"{source}: `public_ip = false` with egress = \"endpoints\" leaves instances no way to PyPI, "
                          "where a plain image installs mcc and the requirements at boot. Fix: set custom_image = true "
                          "(mcc bakes them into an image once; the image builder alone keeps a public address for the "
                          "bake; or image_id = an image with mcc installed), or name subnets that reach the internet "
                          'through your NAT: egress = "nat" with subnets = ["subnet-..."], or keep public_ip = true. '
                          "Nothing was created.")
