"""kinds ``image`` and ``snapshot``: the custom AMI baked from a builder instance, and its EBS snapshots.

The bake (driven by mcc/backends/aws_image.py): the builder is an ``instance`` row of its own (tagged,
InstanceInitiatedShutdownBehavior=stop) whose user data installs mcc and the requirements and powers
off. ``image`` create waits until the builder signals readiness — it reaches state ``stopped`` or tags
itself ``mcc:ready=true`` (``failed``, or a builder that is gone, aborts) — then calls create_image and
waits until the AMI is available. The image is found again on resume by its name and ``mcc:entity``
tag, so an interrupted bake continues where it stopped. The builder is terminated by its own row.

Snapshots are made by create_image, tagged inside that call (TagSpecifications ``image`` and ``snapshot``:
CreateImage authorises the image and each snapshot it creates on their own ARNs, with ``aws:RequestTag``),
and encrypted because the builder's root volume is (an encrypted volume's snapshot is encrypted with its
key). Each snapshot then becomes its own ``snapshot`` row, whose create only adopts the existing snapshot:
no tag is ever added after a create. (moto answers HTTP 500 to a ``snapshot`` TagSpecification; the test
harness closes that gap, tests/aws/harness/gaps.py.)
"""
from __future__ import annotations

import time
from typing import Any, Callable

from mcc.errors import ProviderError
from mcc.providers.aws.clients import AwsContext, epoch, tag_dict, tag_specifications
from mcc.providers.aws.errors import AwsDependency, AwsNotFound, call, error_code
from mcc.providers.aws.instance import describe_instances, ownership, tag_filters
from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, Found, ResourceSpec

TAG_READY = "mcc:ready"
IMAGE_CREATES = ["image", "snapshot"]  # what CreateImage creates, each tagged inside the call


def wait_until(check: Callable[[], Any], timeout: float, poll: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; ProviderError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ProviderError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def account_id(ctx: AwsContext) -> str:
    return call(ctx.client("sts").get_caller_identity)["Account"]


class ImageProvider:
    """kind ``image``: physical id is the AMI id; attrs hold ``snapshot_ids`` (separate rows)."""

    kind = "image"

    def __init__(self, ctx: AwsContext, poll: float = 10.0) -> None:
        self.ctx, self.ec2, self.poll = ctx, ctx.client("ec2"), poll

    def create(self, spec: ResourceSpec) -> Found:
        """params: ``name`` (unique AMI name), ``builder_id`` (the builder instance), ``ready_timeout`` (s)."""
        p, timeout = spec.params, float(spec.params.get("ready_timeout", 3600))
        builder_id = p["builder_id"]
        image = self._image(p["name"], {TAG_LEDGER: spec.tags[TAG_LEDGER], TAG_ENTITY: spec.idempotency_key})
        if image is None:
            wait_until(lambda: self._builder_ready(builder_id), timeout, self.poll, f"image builder {builder_id}")
            image_id = call(self.ec2.create_image, InstanceId=builder_id, Name=p["name"],
                            Description=f"mcc {spec.name}"[:255],
                            TagSpecifications=tag_specifications(IMAGE_CREATES, spec.tags))["ImageId"]
        else:
            image_id = image["ImageId"]
        image = wait_until(lambda: self._available(image_id), timeout, self.poll, f"image {image_id}")
        return _found(image, builder_id)

    def _builder_ready(self, builder_id: str) -> bool:
        found = describe_instances(self.ctx, ids=[builder_id])
        state = found[0]["State"]["Name"] if found else "terminated"
        ready = tag_dict(found[0].get("Tags")).get(TAG_READY) if found else None
        if state in ("shutting-down", "terminated") or ready == "failed":
            raise ProviderError(f"image builder {builder_id} failed (state {state}, {TAG_READY}={ready}); "
                                "its console output (`aws ec2 get-console-output`) says why")
        return state == "stopped" or ready == "true"

    def _image(self, name: str, entity: dict[str, str]) -> dict[str, Any] | None:
        filters = [{"Name": "name", "Values": [name]}] + tag_filters(entity)
        images = call(self.ec2.describe_images, Owners=["self"], Filters=filters)["Images"]
        live = [i for i in images if i.get("State") not in ("deregistered", "failed", "invalid")]
        return live[0] if live else None

    def _available(self, image_id: str) -> dict[str, Any] | None:
        image = self._describe_raw(image_id)
        if image is None or image.get("State") in ("failed", "invalid", "deregistered"):
            raise ProviderError(f"image {image_id} failed: {(image or {}).get('StateReason', {}).get('Message')}")
        return image if image.get("State") == "available" else None

    def _describe_raw(self, image_id: str) -> dict[str, Any] | None:
        try:
            images = call(self.ec2.describe_images, ImageIds=[image_id])["Images"]
        except AwsNotFound:
            return None
        return images[0] if images else None

    def find(self, spec: ResourceSpec) -> Found | None:
        entity = {TAG_LEDGER: spec.tags[TAG_LEDGER], TAG_ENTITY: spec.idempotency_key}
        image = self._image(spec.params["name"], entity)
        if image is None or image.get("State") != "available":
            return None  # absent or still pending: create() resumes the bake
        return _found(image, spec.params.get("builder_id"))

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        image = self._describe_raw(physical_id)
        if image is None or image.get("State") == "deregistered":
            return None
        return _found(image, attrs.get("builder_id"))

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        """Deregister the AMI, then delete the snapshots it names. They have rows of their own (deleted next,
        "not found" = deleted), but an image adopted by a sweep, or cleaned before its snapshot rows were
        written, would otherwise leave them behind — untagged if create_image made them after the last look."""
        image = self._describe_raw(physical_id)
        snapshots = _snapshot_ids(image) if image else list(attrs.get("snapshot_ids") or [])
        try:
            call(self.ec2.deregister_image, ImageId=physical_id)
        except AwsNotFound:
            pass
        for snapshot_id in snapshots:
            SnapshotProvider(self.ctx).delete(snapshot_id, {})

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        images = call(self.ec2.describe_images, Owners=["self"],
                      Filters=tag_filters(ownership(ledger_uuid, run_id)))["Images"]
        return [_found(i, None) for i in images if i.get("State") != "deregistered"]


class SnapshotProvider:
    """kind ``snapshot``: an EBS snapshot made by create_image; physical id is the snapshot id.

    params: ``snapshot_id`` (from the image's attrs). create adopts that existing snapshot, which CreateImage
    tagged with this ledger's tags; it refuses one without them (nothing is tagged after its create).
    Lookups filter on ``owner-id``: moto ignores ``OwnerIds=['self']`` and would list every public snapshot."""

    kind = "snapshot"

    def __init__(self, ctx: AwsContext, delete_deadline: float = 300.0) -> None:
        self.ctx, self.ec2, self.delete_deadline = ctx, ctx.client("ec2"), delete_deadline
        self._account: str | None = None

    def _owner(self) -> list[dict[str, Any]]:
        if self._account is None:
            self._account = account_id(self.ctx)
        return [{"Name": "owner-id", "Values": [self._account]}]

    def create(self, spec: ResourceSpec) -> Found:
        snapshot_id = spec.params["snapshot_id"]
        found = self.describe(snapshot_id, {})
        if found is None:
            raise ProviderError(f"snapshot {snapshot_id} does not exist (was its image deregistered?)")
        if found.tags.get(TAG_LEDGER) != spec.tags[TAG_LEDGER]:
            raise ProviderError(f"snapshot {snapshot_id} does not carry this ledger's {TAG_LEDGER} tag; mcc never "
                                "tags a snapshot after its create, so it is not recorded as this ledger's")
        return found

    def find(self, spec: ResourceSpec) -> Found | None:
        found = self.describe(spec.params["snapshot_id"], {})
        return found if found is not None and found.tags.get(TAG_LEDGER) == spec.tags[TAG_LEDGER] else None

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        try:
            snapshots = call(self.ec2.describe_snapshots, SnapshotIds=[physical_id])["Snapshots"]
        except AwsNotFound:
            return None
        return _snapshot_found(snapshots[0]) if snapshots else None

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        """Delete the snapshot, waiting while a (just deregistered) image still holds it."""
        deadline = time.monotonic() + self.delete_deadline
        while True:
            try:
                call(self.ec2.delete_snapshot, SnapshotId=physical_id)
                return
            except AwsNotFound:
                return
            except ProviderError as exc:
                if error_code(exc.__cause__) != "InvalidSnapshot.InUse":
                    raise
                if time.monotonic() > deadline:
                    raise AwsDependency(f"snapshot {physical_id} is still used by an image; deregister it first "
                                        f"({exc})") from exc
                time.sleep(5)

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        filters = self._owner() + tag_filters(ownership(ledger_uuid, run_id))
        pages = call(lambda: list(self.ec2.get_paginator("describe_snapshots").paginate(Filters=filters)))
        return [_snapshot_found(s) for page in pages for s in page["Snapshots"]]


def _snapshot_ids(image: dict[str, Any]) -> list[str]:
    return [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")]


def _found(image: dict[str, Any], builder_id: str | None) -> Found:
    attrs = {"image_id": image["ImageId"], "name": image.get("Name"), "state": image.get("State"),
             "snapshot_ids": _snapshot_ids(image), "builder_id": builder_id}
    return Found(image["ImageId"], attrs, tag_dict(image.get("Tags")), epoch(image.get("CreationDate")))


def _snapshot_found(snap: dict[str, Any]) -> Found:
    attrs = {"snapshot_id": snap["SnapshotId"], "state": snap.get("State"), "volume_size": snap.get("VolumeSize"),
             "encrypted": bool(snap.get("Encrypted")), "kms_key_id": snap.get("KmsKeyId")}
    return Found(snap["SnapshotId"], attrs, tag_dict(snap.get("Tags")), epoch(snap.get("StartTime")))
