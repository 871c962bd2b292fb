"""The Resource Groups Tagging API's view of a ledger, mapped to mcc's kinds: a cross-check for clean.

Unioned with each provider's own ``sweep`` (per-service describes — the only way to see key pairs, launch
templates, IAM roles and instance profiles, which the tagging API misses). An ARN the providers did not list
is checked with ``describe`` (the tagging API keeps terminated instances for a while); an ARN of no kind of
ours is reported under ``unknown`` with the ARN as its id. Test-side only: mcc's clean does not call the
tagging API (mcc/providers/aws/sweep.py says why).
"""
from __future__ import annotations

from typing import Any

from mcc.providers.aws.clients import AwsContext, tag_dict
from mcc.providers.aws.errors import call
from mcc.providers.aws.sweep import KIND_CLASSES
from mcc.providers.base import TAG_LEDGER, TAG_RUN, Found

HARNESS_KEY = "harness"  # the access key of the harness's own calls through the proxy: not judged as mcc's


def harness_client(ctx: AwsContext, service: str) -> Any:
    """A client like ``ctx``'s (same endpoint, region and secret) under the harness's own access key."""
    creds = ctx.session.get_credentials()
    return ctx.session.client(service, region_name=ctx.region, aws_access_key_id=HARNESS_KEY,
                              aws_secret_access_key=creds.secret_key if creds else "x")

# (service, resource type) of an ARN → our kind
ARN_KINDS: dict[tuple[str, str], str] = {
    ("ec2", "instance"): "instance", ("ec2", "security-group"): "security_group", ("ec2", "key-pair"): "key_pair",
    ("ec2", "launch-template"): "launch_template", ("ec2", "image"): "image", ("ec2", "snapshot"): "snapshot",
    ("elasticache", "replicationgroup"): "cache", ("ssm", "parameter"): "parameter", ("s3", ""): "bucket",
    ("iam", "role"): "role", ("iam", "instance-profile"): "instance_profile", ("ec2", "vpc-endpoint"): "vpc_endpoint",
}


def kind_of_arn(arn: str) -> tuple[str, str] | None:
    """(kind, physical id) for an ARN of one of our kinds, else None."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return None
    service, resource = parts[2], parts[5]
    if service == "s3":
        return ("bucket", resource) if "/" not in resource else None
    rtype, sep, rid = resource.replace(":", "/", 1).partition("/")
    kind = ARN_KINDS.get((service, rtype))
    if kind is None or not sep:
        return None
    if kind == "parameter":
        rid = "/" + rid  # arn:...:parameter/mcc/x → /mcc/x
    elif kind in ("role", "instance_profile"):
        rid = rid.rsplit("/", 1)[-1]  # the path is not part of the name
    return kind, rid


def tagged_arns(ctx: AwsContext, ledger_uuid: str, run_id: str | None = None) -> dict[str, dict[str, str]]:
    """{ARN: tags} of everything the Resource Groups Tagging API lists with this ledger's (and run's) tags."""
    filters: list[dict[str, Any]] = [{"Key": TAG_LEDGER, "Values": [ledger_uuid]}]
    if run_id:
        filters.append({"Key": TAG_RUN, "Values": [run_id]})
    paginator = harness_client(ctx, "resourcegroupstaggingapi").get_paginator("get_resources")
    pages = call(lambda: list(paginator.paginate(TagFilters=filters)))
    return {m["ResourceARN"]: tag_dict(m.get("Tags")) for page in pages for m in page["ResourceTagMappingList"]}


def sweep_tagged(ctx: AwsContext, ledger_uuid: str, run_id: str | None = None,
                 providers: dict[str, Any] | None = None) -> dict[str, list[Found]]:
    """{kind: [Found]} of every live resource tagged with ``ledger_uuid`` (and ``run_id`` if given)."""
    providers = providers or {kind: cls(ctx) for kind, cls in KIND_CLASSES.items()}
    result: dict[str, list[Found]] = {kind: list(p.sweep(ledger_uuid, run_id)) for kind, p in providers.items()}
    for arn, tags in sorted(tagged_arns(ctx, ledger_uuid, run_id).items()):
        mapped = kind_of_arn(arn)
        if _member_of_group(arn, result.get("cache", [])) or _gone_with_its_instance(ctx, arn):
            continue
        if mapped is None or mapped[0] not in providers:
            result.setdefault("unknown", []).append(Found(arn, {"arn": arn}, tags))
            continue
        kind, physical_id = mapped
        if any(f.physical_id == physical_id for f in result[kind]):
            continue
        found = providers[kind].describe(physical_id, {})
        if found is not None:  # e.g. a terminated instance still listed by the tagging API is not
            result[kind].append(found)
    return {kind: found for kind, found in result.items() if found}


def _member_of_group(arn: str, caches: list[Found]) -> bool:
    """A node (cache cluster ``<group>-001``) of a replication group we already listed: AWS copies the
    group's tags to its nodes, so the tagging API lists both."""
    if ":elasticache:" not in arn or ":cluster:" not in arn:
        return False
    node = arn.rsplit(":", 1)[-1]
    return any(node.startswith(f"{c.physical_id}-") for c in caches)


def _gone_with_its_instance(ctx: AwsContext, arn: str) -> bool:
    """A network interface whose instance is terminated: AWS deletes an instance's primary interface with it;
    moto keeps it (and its tags) attached to the terminated instance. A detached tagged one is a leak."""
    if ":network-interface/" not in arn:
        return False
    ec2 = harness_client(ctx, "ec2")
    found = ec2.describe_network_interfaces(Filters=[{"Name": "network-interface-id",
                                                      "Values": [arn.rsplit("/", 1)[-1]]}])["NetworkInterfaces"]
    instance = ((found[0].get("Attachment") or {}).get("InstanceId")) if found else None
    if not found:
        return True
    if instance is None:
        return False
    reservations = ec2.describe_instances(InstanceIds=[instance])["Reservations"]
    states = [i["State"]["Name"] for r in reservations for i in r["Instances"]]
    return bool(states) and all(s in ("shutting-down", "terminated") for s in states)
