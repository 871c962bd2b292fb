"""The original mCC's ``mcc.templates``: security group, key pair, image, launch template, Redis server.

Each call is a thin façade over mcc's engine and AWS providers (the ones ``mcc run --backend aws`` uses):
the resource is recorded in the ledger before it is created, carries mcc's tags from its create call, and
belongs to the project folder's setup group (mcc/driver/setup.py). Called again with the same arguments in
the same setup group, a function returns the resource it made the first time; pass ``copy=2`` (3, …) to
ask for another one deliberately. ``mcc ledger show`` lists them, ``mcc clean --all`` (or the functions of
``mcc.clean``) deletes them.

The boto3 object each function takes names the service and the region; the calls themselves go through
mcc's own clients of the same credential chain (one retry policy, one error classification).
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from mcc.driver.setup import Setup, boto3_region, setup_group
from mcc.errors import MccError

__all__ = ["create_security_group", "create_key_pair", "build_template_userdata", "create_custom_image",
           "create_launch_template", "create_redis_server"]

PROTOCOLS = ("tcp", "udp", "icmp")


def _ec2_setup(ec2: Any) -> Setup:
    return setup_group(boto3_region(ec2, "ec2", "resource", "ec2"))


def _ingress(ips: dict[str, str] | None, ports: dict[int, str] | None,
             security_groups: dict[str, str] | None) -> list[dict[str, Any]]:
    """The original's rules: every port in ``ports`` from every CIDR in ``ips`` and every group in
    ``security_groups``. Nothing is opened unless both ports and a source are given explicitly."""
    if ports is None or (ips is None and security_groups is None):
        return []
    if not isinstance(ports, dict) or not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 65535
                                              and proto in PROTOCOLS for p, proto in ports.items()):
        raise MccError(f"`ports` must map port numbers to a protocol ({', '.join(PROTOCOLS)}), like "
                       f"{{22: \"tcp\"}}; got {ports!r}")
    ranges = []
    for name, cidr in (ips or {}).items():
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except (TypeError, ValueError):
            raise MccError(f"`ips`: {name!r} → {cidr!r} is not a CIDR like \"203.0.113.7/32\"") from None
        ranges.append({"CidrIp": str(net), "Description": str(name)[:255]})
    pairs = [{"GroupId": gid, "Description": str(name)[:255]} for name, gid in (security_groups or {}).items()]
    rules = []
    for port, protocol in sorted(ports.items()):
        rule: dict[str, Any] = {"IpProtocol": protocol, "FromPort": port, "ToPort": port}
        if ranges:
            rule["IpRanges"] = ranges
        if pairs:
            rule["UserIdGroupPairs"] = pairs
        rules.append(rule)
    return rules


def create_security_group(ec2: Any, security_groups: dict[str, str] | None = None, ips: dict[str, str] | None = None,
                          ports: dict[int, str] | None = None, rules: list[dict[str, Any]] | None = None, *,
                          copy: int = 1) -> str:
    """A security group in the default VPC; returns its id.

    Members of the group always reach each other on the queue port (6379). ``ports`` ({port: protocol}) are
    opened from ``ips`` ({name: CIDR}) and ``security_groups`` ({name: group id}) only when given explicitly;
    SSH is never opened to 0.0.0.0/0. ``rules`` (raw IpPermissions) are taken as given.
    """
    from mcc.providers.aws.security_group import ingress_rules

    setup = _ec2_setup(ec2)
    ingress = _ingress(ips, ports, security_groups) + list(rules or [])
    ingress_rules("", 6379, None, ingress)  # a world-open SSH rule is refused before anything is recorded
    args = {"ingress": ingress, "copy": copy}
    key = setup.key("security_group", args)
    name = f"mcc-{setup.short}-{key.rsplit('/', 1)[-1]}"
    row = setup.ensure("security_group", name, key, {"name": name, "vpc_id": None, "queue_port": 6379,
                                                     "ssh_cidr": None, "ingress": ingress})
    return row.physical_id


def create_key_pair(ec2: Any, keyname: str | None = None, *, copy: int = 1) -> str:
    """An ed25519 key pair; returns its name. The private key is written to ``$MCC_HOME/keys/<name>.pem`` with
    mode 0600 (the original wrote ~/.ssh/<name>.pem); its path is recorded, and ``mcc clean`` deletes both."""
    setup = _ec2_setup(ec2)
    if keyname is not None and (not isinstance(keyname, str) or not keyname.strip()):
        raise MccError(f"`keyname` must be a non-empty string, got {keyname!r}")
    key = setup.key("key_pair", {"keyname": keyname, "copy": copy})
    name = keyname or f"mcc-{setup.short}-{key.rsplit('/', 1)[-1]}"
    key_dir = setup.ledger.home / "keys"
    return setup.ensure("key_pair", name, key, {"name": name, "key_dir": str(key_dir)}).physical_id


def _requirements(project: Path) -> list[str]:
    """The original read ``requirements.txt`` of the current folder; so does this, if there is one."""
    path = project / "requirements.txt"
    if not path.exists():
        return []
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def _builder_plan(setup: Setup) -> tuple[Path, list[str], str]:
    from mcc.backends.aws_image import builder_script
    from mcc.providers.aws.bucket import bucket_name

    wheel, requirements = setup.backend.wheel(), _requirements(setup.project_dir)
    _digest, _key, user_data = builder_script(bucket_name(setup.ledger.uuid, setup.region), wheel, requirements,
                                              setup.region)
    return wheel, requirements, user_data


def build_template_userdata(access_key: str | None = None, secret_key: str | None = None,
                            region: str | None = None) -> str:
    """The user data that bakes the custom image: mcc's own image builder (remote/bootstrap.py), installing mcc
    and ``requirements.txt`` of this folder. Returns the script text.

    The original pasted ``access_key`` and ``secret_key`` into this script. mcc never does: both are
    ignored (never stored, logged or sent); the builder instance gets an instance profile allowed to read
    its wheel and nothing else. ``region`` must match the region of the setup calls, if given.
    """
    setup = setup_group(region)
    if region is not None and region != setup.region:
        raise MccError(f"build_template_userdata: region {region!r} differs from the region of the setup calls "
                       f"({setup.region}); configure one region (AWS_REGION or your profile)")
    return _builder_plan(setup)[2]


def create_custom_image(ec2: Any, security_group_id: str, keyname: str | None = None, launch_script: str = "",
                        default_ami: str | None = None, instance_type: str = "t3.small") -> str:
    """A baked AMI with mcc and ``requirements.txt`` installed; returns its id.

    This is mcc's image bake (mcc/backends/aws_image.py, the one ``custom_image = true`` uses): builder
    instance, create_image, snapshots recorded, builder terminated. The image is keyed by what it holds (the
    mcc wheel and the requirements), so calling again returns the same image and a changed requirements.txt
    bakes a new one. ``launch_script`` must be what :func:`build_template_userdata` returned (or empty);
    ``default_ami`` defaults to the current Amazon Linux 2023 image of the region.
    """
    from mcc.backends.aws_image import ensure_image
    from mcc.providers.aws.bucket import bucket_name
    from mcc.providers.aws.images import base_image_id, root_volume
    from mcc.work.stores import S3Store

    setup = _ec2_setup(ec2)
    group = setup.member("security_group", security_group_id)
    if keyname is not None:
        setup.member("key_pair", keyname)  # the builder needs no key; a wrong name is still a mistake
    wheel, requirements, user_data = _builder_plan(setup)
    if launch_script and launch_script != user_data:
        raise MccError("create_custom_image: `launch_script` is not what mcc.templates.build_template_userdata() "
                       "returned for this folder. mcc bakes images with its own installer (no credentials in "
                       "user data); list extra packages in requirements.txt and pass build_template_userdata()'s "
                       "result, or leave launch_script out.")
    r = setup.region
    name = bucket_name(setup.ledger.uuid, r)
    bucket = setup.engine.ensure(None, "bucket", name, f"aws:{r}:bucket", {"name": name})  # the ledger's bucket
    base = default_ami or base_image_id(setup.backend.ctx)
    image = ensure_image(
        setup.engine, store=S3Store(bucket.attrs.get("name") or bucket.physical_id, client=setup.backend.ctx.client("s3")),
        wheel=wheel, requirements=requirements, region=r, short=setup.short, account=setup.backend.identity()["Account"],
        security_group_id=group.physical_id, instance_type=instance_type, base_image_id=base,
        root=root_volume(setup.backend.ctx, base), kms_key_id=setup.backend.settings.ebs_kms_key,
        boundary=setup.backend.boundary())
    return image.physical_id


def create_launch_template(ec2: Any, custom_ami_id: str, security_group_id: str, *, instance_type: str = "t3.small",
                           keyname: str | None = None, copy: int = 1) -> str:
    """A launch template for ``custom_ami_id`` in ``security_group_id``; returns its id.

    Like every mcc template: IMDSv2 only, terminate on shutdown, tags on instances and volumes. Its instance
    profile's role has no permissions at all; a run started from it (mcc.launch.launch_master_node) takes the
    image, group and key from it and gives its instances the run's own least-privilege role.
    """
    from mcc.providers.aws.iam import role_params
    from mcc.providers.aws.images import root_volume

    setup = _ec2_setup(ec2)
    image = setup.member("image", custom_ami_id) if custom_ami_id.startswith("ami-") else None
    if image is None:
        raise MccError(f"create_launch_template: {custom_ami_id!r} is not an AMI id; pass what "
                       "mcc.templates.create_custom_image returned")
    group = setup.member("security_group", security_group_id)
    if keyname is not None:
        setup.member("key_pair", keyname)
    args = {"image": image.physical_id, "group": group.physical_id, "type": instance_type, "key": keyname,
            "copy": copy}
    key = setup.key("launch_template", args)
    name = f"mcc-{setup.short}-{key.rsplit('/', 1)[-1]}"
    role = setup.ensure("role", name, f"{key}/role", role_params(name, setup.backend.boundary()))
    profile = setup.ensure("instance_profile", name, f"{key}/instance_profile", {"name": name, "role_name": role.physical_id})
    return setup.ensure("launch_template", name, key, {
        "name": name, "image_id": image.physical_id, "instance_type": instance_type,
        "security_group_id": group.physical_id, "instance_profile_arn": profile.attrs.get("arn"),
        **root_volume(setup.backend.ctx, image.physical_id), "kms_key_id": setup.backend.settings.ebs_kms_key,
        "key_name": keyname, "max_lifetime_hours": 24.0}).physical_id


def create_redis_server(rc: Any, security_group_id: str, name: str | None = None, nodes: int = 1,
                        instance_type: str = "cache.t3.micro", port: int = 6379, *,
                        copy: int = 1) -> tuple[str, str, int]:
    """An ElastiCache Redis server (TLS in transit, an AUTH token kept in SSM Parameter Store); returns
    ``(id, endpoint host, port)`` once it has an endpoint.

    ``launch_master_node(redis_endpoint=...)`` uses it as the run's queue; the run's role may read its token.
    """
    setup = setup_group(boto3_region(rc, "elasticache", "client", "rc"))
    if nodes != 1:
        raise MccError(f"create_redis_server: nodes={nodes!r}; mcc's queue is one node (a single-node replication "
                       "group), pass nodes=1")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise MccError(f"create_redis_server: port must be a TCP port number, got {port!r}")
    group = setup.member("security_group", security_group_id)
    key = setup.key("cache", {"name": name, "type": instance_type, "port": port, "group": group.physical_id,
                              "copy": copy})
    cluster_id = (name or f"mcc-{setup.short}-{key.rsplit('/', 1)[-1]}")[:40]
    secret = f"/mcc/{setup.ledger.uuid}/setup-{setup.group.id}/{cluster_id}/auth-token"
    token = setup.ensure("parameter", f"{cluster_id}/auth-token", f"{key}/auth-token",
                         {"name": secret, "value_bytes": 32})
    cache = setup.ensure("cache", cluster_id, key, {
        "cluster_id": cluster_id, "node_type": instance_type, "port": port,
        "security_group_id": group.physical_id, "auth_token_parameter": token.physical_id})
    cache = setup.backend.wait_cache(setup.engine, cache)
    return cache.physical_id, cache.attrs["host"], int(cache.attrs["port"])
