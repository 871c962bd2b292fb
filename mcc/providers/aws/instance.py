"""kind ``instance``: EC2 instances launched from a launch template, found by their ``mcc:entity`` tag.

The plural functions (``run_instances``, ``query_instances``, ``terminate_instances``) are what the
manager uses for its workers: one call for many instances, SkyPilot style.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mcc.errors import ProviderError
from mcc.providers.aws.clients import AwsContext, client_token, epoch, tag_dict, tag_specifications
from mcc.providers.aws.errors import AwsNotFound, call
from mcc.providers.aws.images import encrypted_root
from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, TAG_RUN, Found, ResourceSpec

# EC2 state → ours: None means gone (or going, and nothing can stop it now).
STATES: dict[str, str | None] = {
    "pending": "alive", "running": "alive", "stopping": "alive", "stopped": "alive",
    "shutting-down": None, "terminated": None,
}
LIVE_STATES = [s for s, ours in STATES.items() if ours]


def tag_filters(tags: dict[str, str]) -> list[dict[str, Any]]:
    """EC2 ``Filters`` matching every tag in ``tags`` ({"mcc:ledger": uuid} → tag:mcc:ledger=uuid)."""
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted(tags.items())]


def ownership(ledger_uuid: str, run_id: str | None = None) -> dict[str, str]:
    """The tags a sweep filters on."""
    return {TAG_LEDGER: ledger_uuid, **({TAG_RUN: run_id} if run_id else {})}


@dataclass(frozen=True)
class LaunchRequest:
    """What ``run_instances`` needs: the template does the rest (image, profile, IMDSv2, security group).

    Without a template (the image builder) ``extra`` carries the image, security group and IMDS options."""

    launch_template_id: str | None
    tags: dict[str, str]
    client_token: str
    instance_type: str | None = None
    user_data: str | None = None
    spot: bool = False
    subnet_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    max_price: float | None = None  # spot: the most $/h to pay (EC2 refuses with SpotMaxPriceTooLow above it)
    cpu_options: dict[str, int] | None = None  # CpuOptions, over the template's (SMT off: market.smt_off)


IMDS_V2 = {"HttpTokens": "required", "HttpEndpoint": "enabled", "InstanceMetadataTags": "enabled"}


def launch_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """Settings repeated in RunInstances although the launch template has them: the instance profile and
    the shutdown behaviour (``terminate`` unless ``shutdown_behavior`` says ``stop``, as for the image
    builder) must hold even where a template's data is not applied (seen in emulators). With ``public_ip``
    False, the primary network interface asks for no public address (``security_group_id`` goes there). Without a
    template, the image, security group, IMDSv2 options and the encrypted root volume (``root_device``,
    ``kms_key_id``) come from ``params`` too."""
    extra: dict[str, Any] = {"InstanceInitiatedShutdownBehavior": params.get("shutdown_behavior") or "terminate"}
    if params.get("instance_profile_arn"):
        extra["IamInstanceProfile"] = {"Arn": params["instance_profile_arn"]}
    if params.get("public_ip") is False:
        extra["NetworkInterfaces"] = [private_interface(params["security_group_id"])]
    if not params.get("launch_template_id"):
        extra.update(ImageId=params["image_id"], MetadataOptions=IMDS_V2)
        if "NetworkInterfaces" not in extra:
            extra["SecurityGroupIds"] = [params["security_group_id"]]
        if params.get("root_device"):
            extra["BlockDeviceMappings"] = encrypted_root(params["root_device"], params.get("root_size"),
                                                          params.get("kms_key_id"))
    return extra


def private_interface(security_group_id: str) -> dict[str, Any]:
    """The primary network interface of an instance without a public IPv4 address (RunInstances then takes the
    security group and the subnet inside it, never beside it)."""
    return {"DeviceIndex": 0, "AssociatePublicIpAddress": False, "Groups": [security_group_id],
            "DeleteOnTermination": True}


# What RunInstances creates, each authorised by AWS on its own ARN (Service Authorization Reference, Amazon
# EC2, RunInstances: instance, volume, network-interface, and spot-instances-request for a spot launch), so
# each gets the ledger's tags inside the call: a policy on ``aws:RequestTag/mcc:ledger`` then allows all of them.
LAUNCHED = ["instance", "volume", "network-interface"]
LAUNCHED_SPOT = [*LAUNCHED, "spot-instances-request"]


def launched_types(spot: bool) -> list[str]:
    """The resource types one RunInstances creates (and tags) for an on-demand or a spot launch."""
    return LAUNCHED_SPOT if spot else LAUNCHED


def run_instances(ctx: AwsContext, req: LaunchRequest, count: int = 1) -> dict[str, str | None]:
    """Launch ``count`` tagged instances in one call; returns instance id → availability zone."""
    kwargs: dict[str, Any] = {
        "MinCount": count, "MaxCount": count, "ClientToken": req.client_token[:64],
        "TagSpecifications": tag_specifications(launched_types(req.spot), req.tags), **req.extra,
    }
    if req.launch_template_id:
        kwargs["LaunchTemplate"] = {"LaunchTemplateId": req.launch_template_id, "Version": "$Latest"}
    if req.instance_type:
        kwargs["InstanceType"] = req.instance_type
    if req.user_data:
        kwargs["UserData"] = req.user_data  # botocore base64-encodes RunInstances UserData itself
    if req.subnet_id and "NetworkInterfaces" in kwargs:
        kwargs["NetworkInterfaces"] = [{**kwargs["NetworkInterfaces"][0], "SubnetId": req.subnet_id}]
    elif req.subnet_id:
        kwargs["SubnetId"] = req.subnet_id
    if req.cpu_options:
        kwargs["CpuOptions"] = req.cpu_options
    if req.spot:
        kwargs["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        if req.max_price:
            kwargs["InstanceMarketOptions"]["SpotOptions"]["MaxPrice"] = f"{req.max_price:.5f}"
    reply = call(ctx.client("ec2").run_instances, **kwargs)
    return {i["InstanceId"]: i.get("Placement", {}).get("AvailabilityZone") for i in reply["Instances"]}


def describe_instances(ctx: AwsContext, *, ids: list[str] | None = None,
                       tags: dict[str, str] | None = None, states: list[str] | None = None) -> list[dict[str, Any]]:
    """Raw instance records by ids and/or tags, one paginated call (missing ids are simply absent)."""
    if ids is not None and not ids:
        return []
    filters = tag_filters(tags or {})
    if states:
        filters.append({"Name": "instance-state-name", "Values": states})
    id_batches: list[list[str] | None] = [ids[i:i + 200] for i in range(0, len(ids), 200)] if ids else [None]
    paginator, out = ctx.client("ec2").get_paginator("describe_instances"), []
    for batch in id_batches:
        batch_filters = filters + ([{"Name": "instance-id", "Values": batch}] if batch else [])
        kwargs: dict[str, Any] = {"Filters": batch_filters} if batch_filters else {}
        for page in call(lambda: list(paginator.paginate(**kwargs))):
            for reservation in page["Reservations"]:
                out.extend(reservation["Instances"])
    return out


def query_instances(ctx: AwsContext, tags: dict[str, str], include_gone: bool = False,
                    states: list[str] | None = None) -> dict[str, str]:
    """{instance id: EC2 state name} for every instance carrying ``tags``, in ONE paginated call.

    ``STATES[state]`` maps the EC2 state to ours; terminated/shutting-down are left out unless asked.
    ``states`` asks for exactly those EC2 states instead (the reply, and its parse, holds only them)."""
    if states is None:
        states = None if include_gone else LIVE_STATES
    return {i["InstanceId"]: i["State"]["Name"] for i in describe_instances(ctx, tags=tags, states=states)}


def terminate_instances(ctx: AwsContext, ids: list[str]) -> None:
    """Terminate ``ids`` (batches of 1000); ids that no longer exist count as terminated."""
    ec2 = ctx.client("ec2")
    for start in range(0, len(ids), 1000):
        batch = ids[start:start + 1000]
        try:
            call(ec2.terminate_instances, InstanceIds=batch)
        except AwsNotFound:  # one unknown id fails the whole batch: retry the ones that exist
            alive = [i["InstanceId"] for i in describe_instances(ctx, ids=batch, states=LIVE_STATES)]
            if alive:
                call(ec2.terminate_instances, InstanceIds=alive)


def wait_terminated(ctx: AwsContext, ids: list[str], timeout: float) -> None:
    """Poll until none of ``ids`` is in a live or shutting-down state; raise after ``timeout`` s."""
    deadline, delay = time.monotonic() + timeout, 0.5
    while True:
        left = [i["InstanceId"] for i in describe_instances(ctx, ids=ids) if i["State"]["Name"] != "terminated"]
        if not left:
            return
        if time.monotonic() > deadline:
            raise ProviderError(f"instances {', '.join(left)} not terminated after {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 10.0)


def _found(instances: list[dict[str, Any]]) -> Found:
    ids = sorted(i["InstanceId"] for i in instances)
    first = min(instances, key=lambda i: i["InstanceId"])
    state = first["State"]["Name"]
    attrs = {"instance_ids": ids, "state": state, "status": STATES.get(state),
             "private_ip": first.get("PrivateIpAddress"), "public_ip": first.get("PublicIpAddress"),
             "instance_type": first.get("InstanceType")}
    launched = [epoch(i.get("LaunchTime")) for i in instances]  # the last start: no earlier than the launch
    created = max(launched) if None not in launched else None
    return Found(",".join(ids), attrs, tag_dict(first.get("Tags")), created)


class InstanceProvider:
    """kind ``instance``: physical id is the instance id (ids joined by "," when ``count`` > 1).

    params: ``launch_template_id`` (or, without one, ``image_id`` and ``security_group_id``), ``instance_type``,
    ``user_data``, ``count``, ``spot``, ``subnet_id``, ``instance_profile_arn``, ``shutdown_behavior``, ``public_ip``
    (False: no public address; ``security_group_id`` then too)."""

    kind = "instance"

    def __init__(self, ctx: AwsContext, terminate_timeout: float = 900.0) -> None:
        self.ctx, self.terminate_timeout = ctx, terminate_timeout

    def create(self, spec: ResourceSpec) -> Found:
        p = spec.params
        token = client_token(spec.tags[TAG_LEDGER], spec.idempotency_key)
        req = LaunchRequest(p.get("launch_template_id"), dict(spec.tags), token, p.get("instance_type"),
                            p.get("user_data"), bool(p.get("spot")), p.get("subnet_id"), launch_overrides(p))
        ids = list(run_instances(self.ctx, req, int(p.get("count", 1))))
        found = self.describe(",".join(ids), {})
        return found or Found(",".join(sorted(ids)), {"instance_ids": sorted(ids)}, dict(spec.tags))

    def find(self, spec: ResourceSpec) -> Found | None:
        # by tag, never by client-token (moto ignores ClientToken; its client-token filter is an HTTP 500)
        live = describe_instances(self.ctx, tags={TAG_ENTITY: spec.idempotency_key,
                                                  TAG_LEDGER: spec.tags[TAG_LEDGER]}, states=LIVE_STATES)
        return _found(live) if live else None

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        live = describe_instances(self.ctx, ids=physical_id.split(","), states=LIVE_STATES)
        return _found(live) if live else None

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        ids = physical_id.split(",")
        terminate_instances(self.ctx, ids)
        wait_terminated(self.ctx, ids, self.terminate_timeout)

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        live = describe_instances(self.ctx, tags=ownership(ledger_uuid, run_id), states=LIVE_STATES)
        return [_found([i]) for i in sorted(live, key=lambda i: i["InstanceId"])]
