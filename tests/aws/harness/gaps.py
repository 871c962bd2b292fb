"""Where moto falls short of AWS in a way product code must not work around, closed here.

* CreateImage with a ``snapshot`` TagSpecification: AWS tags every snapshot the call creates (CreateImage,
  EC2 API Reference: "To tag the snapshots ... the value for ResourceType must be snapshot"); moto answers
  HTTP 500. The proxy strips that TagSpecification before moto sees it, then tags the new image's snapshots
  in moto before the client hears the answer — what AWS does inside the call. Clients, hooks and the policy
  evaluator still see the call as sent.
* RunInstances with a ``network-interface`` TagSpecification: AWS tags the instances' network interfaces;
  moto accepts the specification and drops it. Right after moto's answer the proxy tags the interfaces of
  the instances it names.
* Bucket policies: moto enforces a bucket policy's statements with ``Principal: "*"`` and ignores their
  conditions, so mcc's Deny on ``aws:SecureTransport`` false (refuse plain HTTP) would refuse every request,
  TLS or not. Every real client speaks TLS to S3 (the emulator is plain HTTP only because it is local), so
  the proxy stores in moto the policy without the statements that hold only for non-TLS requests, keeps the
  policy as sent (``Cloud.bucket_policies``) for tests and for the policy evaluator
  (tests/aws/harness/authz.py), which evaluates the full policy with ``aws:SecureTransport`` true.
* RunInstances' ``CpuOptions`` (``hyperthreading = false``: one thread per physical core): moto neither
  stores nor returns them (DescribeInstances has no CpuOptions) and does not check them against the type's
  ``ValidThreadsPerCore``/``ValidCores``; its DescribeInstanceTypes does give ``VCpuInfo`` (DefaultCores,
  DefaultThreadsPerCore, ValidThreadsPerCore, the last absent for types like c5.metal that cannot change
  it, as AWS). Not closed: nothing could show an instance's threads. Tests assert on the RunInstances requests
  the proxy recorded (their ``CpuOptions.CoreCount``/``CpuOptions.ThreadsPerCore`` params) and on the vCPUs
  the run recorded; a type that cannot turn SMT off is refused by mcc before launch, from VCpuInfo.
* ``public_ip = false``: moto models the request (an interface with ``AssociatePublicIpAddress`` false gets no
  ``PublicIpAddress``) and makes VPC endpoints (``available`` at once, private DNS recorded, the gateway's
  route added) but routes nothing: an emulated instance reaches moto and PyPI whatever its address and
  endpoints, and DNS resolves as before. Not closed (nothing could cut an emulated instance off): tests assert
  on the RunInstances requests the proxy recorded, the instances' described addresses and the endpoints mcc
  made (tests/aws/test_private_network_aws.py); the emulated instances import mcc already (``MCC_PYTHON``), as
  on a baked image, which is what mcc requires of a private run without a NAT.
* moto's own IAM enforcement (resources judged as "*", DeleteObjects on the bucket's ARN, AssumeRole of a
  service-trusted role): closed in tests/aws/harness/enforce.py, where the enforcing proxy signs requests.
* Not closed (no API could): moto makes CreateImage's snapshots unencrypted whatever the volume (AWS:
  a snapshot of an encrypted volume is encrypted with its key), and every instance gets moto's default
  /dev/sda1 volume besides the BlockDeviceMappings it was launched with (untagged, unencrypted; AWS maps
  the image's root device once). Tests check the volume at the device the launch template names.
"""
from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

SPEC = re.compile(r"^TagSpecification\.(\d+)\.")


def _snapshot_spec(params: dict[str, Any], resource_type: str = "snapshot") -> tuple[str | None, list[dict[str, str]]]:
    """The index of the ``resource_type`` TagSpecification in flattened EC2 query params, and its tags."""
    for key, value in params.items():
        m = SPEC.match(key)
        if m and key.endswith(".ResourceType") and value == resource_type:
            n = m.group(1)
            tags, i = [], 1
            while f"TagSpecification.{n}.Tag.{i}.Key" in params:
                tags.append({"Key": params[f"TagSpecification.{n}.Tag.{i}.Key"],
                             "Value": params.get(f"TagSpecification.{n}.Tag.{i}.Value", "")})
                i += 1
            return n, tags
    return None, []


class CreateImageSnapshotTags:
    """Attach to a FaultProxy; ``ec2`` is a client DIRECT to moto."""

    def __init__(self, ec2: Any) -> None:
        self.ec2 = ec2
        self.tagged: list[str] = []  # snapshot ids tagged on a CreateImage's behalf

    def attach(self, proxy: Any) -> "CreateImageSnapshotTags":
        proxy.add_request_filter(self._strip)
        proxy.add_rewriter(self._tag)
        return self

    def _strip(self, req: Any) -> None:
        if req.service != "ec2" or req.action != "CreateImage":
            return
        n, _ = _snapshot_spec(req.params)
        if n is None:
            return
        form = urllib.parse.parse_qsl(req.body.decode(), keep_blank_values=True)
        kept = [(k, v) for k, v in form if not k.startswith(f"TagSpecification.{n}.")]
        req.body = urllib.parse.urlencode(kept).encode()

    def _tag(self, service: str, action: str, params: dict, status: int, body: bytes) -> None:
        if service != "ec2" or action != "CreateImage" or status >= 300:
            return None
        _, tags = _snapshot_spec(params)
        m = re.search(rb"<imageId>([^<]+)</imageId>", body)
        if not tags or not m:
            return None
        image = self.ec2.describe_images(ImageIds=[m.group(1).decode()])["Images"][0]
        snapshots = [b["Ebs"]["SnapshotId"] for b in image.get("BlockDeviceMappings", [])
                     if b.get("Ebs", {}).get("SnapshotId")]
        if snapshots:
            self.ec2.create_tags(Resources=snapshots, Tags=tags)
            self.tagged += snapshots
        return None


class RunInstancesInterfaceTags:
    """Attach to a FaultProxy; ``ec2`` is a client DIRECT to moto."""

    def __init__(self, ec2: Any) -> None:
        self.ec2 = ec2

    def attach(self, proxy: Any) -> "RunInstancesInterfaceTags":
        proxy.add_rewriter(self._tag)
        return self

    def _tag(self, service: str, action: str, params: dict, status: int, body: bytes) -> None:
        if service != "ec2" or action != "RunInstances" or status >= 300:
            return None
        _, tags = _snapshot_spec(params, "network-interface")
        if not tags:
            return None
        interfaces = sorted(set(re.findall(rb"<networkInterfaceId>(eni-[0-9a-f]+)</networkInterfaceId>", body)))
        if interfaces:
            self.ec2.create_tags(Resources=[i.decode() for i in interfaces], Tags=tags)
        return None


def _only_without_tls(statement: dict[str, Any]) -> bool:
    """True for a statement whose whole condition is ``aws:SecureTransport`` false (applies only to plain HTTP)."""
    return statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}


def bucket_of(req: Any) -> str | None:
    """The bucket an S3 request addresses (path style first, then a virtual-host name)."""
    first = req.path.strip("/").split("/", 1)[0]
    if first:
        return urllib.parse.unquote(first)
    host = (req.header("Host") or "").split(":")[0]
    return host.split(".", 1)[0] if "." in host and not host.replace(".", "").isdigit() else None


class BucketPolicyConditions:
    """Attach to a FaultProxy; ``policies`` holds each bucket's policy as its client sent it."""

    def __init__(self) -> None:
        self.policies: dict[str, dict[str, Any]] = {}

    def attach(self, proxy: Any) -> "BucketPolicyConditions":
        proxy.add_request_filter(self._strip)
        return self

    def _strip(self, req: Any) -> None:
        if req.service != "s3" or req.action not in ("PutBucketPolicy", "DeleteBucketPolicy", "DeleteBucket"):
            return
        bucket = bucket_of(req)
        if req.action != "PutBucketPolicy":
            self.policies.pop(bucket or "", None)
            return
        policy = json.loads(req.body or b"{}")
        self.policies[bucket or ""] = policy
        kept = [st for st in policy.get("Statement", []) if not _only_without_tls(st)]
        req.body = json.dumps({**policy, "Statement": kept}).encode()
        req.headers = [(k, v) for k, v in req.headers if k.lower() not in ("content-md5", "x-amz-checksum-crc32",
                                                                            "x-amz-checksum-crc32c", "x-amz-checksum-sha256",
                                                                            "x-amz-sdk-checksum-algorithm")]

def attach_all(proxy: Any, ec2: Any) -> BucketPolicyConditions:
    """Close every gap above on ``proxy``; ``ec2`` is a client direct to moto. Returns the bucket policy record."""
    CreateImageSnapshotTags(ec2).attach(proxy)
    RunInstancesInterfaceTags(ec2).attach(proxy)
    return BucketPolicyConditions().attach(proxy)
