"""kind ``bucket``: the run's S3 bucket — private, encrypted, tagged, and purged of every version on delete.

S3 is the one service whose create call takes no tags: ``put_bucket_tagging`` follows ``create_bucket``
immediately (the documented exception to tags-inside-create). A crash between the two leaves an untagged
bucket with our deterministic name; ``find`` ignores it, and ``create`` on resume adopts and tags it
(BucketAlreadyOwnedByYou), refusing a bucket that carries another ledger's tag.
"""
from __future__ import annotations

import json
from typing import Any

from mcc.errors import ProviderError
from mcc.providers.aws.clients import AwsContext, aws_tags, epoch, tag_dict
from mcc.providers.aws.errors import AwsNotFound, call, error_code
from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, TAG_RUN, Found, ResourceSpec

PUBLIC_ACCESS_BLOCK = {k: True for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                                          "RestrictPublicBuckets")}
ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def tls_only_policy(name: str) -> dict[str, Any]:
    """The bucket policy refusing every request not made over TLS (``aws:SecureTransport`` false), whoever
    makes it: a Deny, so no identity policy can open plain HTTP again. Not a public policy (it grants nothing),
    so the public access block allows it."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}


def bucket_name(ledger_uuid: str, region: str) -> str:
    """The deterministic bucket name of a ledger in a region (≤ 63 chars, DNS-safe)."""
    return f"mcc-{ledger_uuid.replace('-', '')[:12].lower()}-{region}"


class BucketProvider:
    """kind ``bucket``: physical id is the bucket name."""

    kind = "bucket"

    def __init__(self, ctx: AwsContext) -> None:
        self.ctx, self.s3 = ctx, ctx.client("s3")

    def create(self, spec: ResourceSpec) -> Found:
        name = spec.params["name"]
        kwargs: dict[str, Any] = {"Bucket": name}
        if self.ctx.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.ctx.region}
        try:
            call(self.s3.create_bucket, **kwargs)
        except ProviderError as exc:
            if error_code(exc.__cause__) != "BucketAlreadyOwnedByYou":
                raise
        current = self._tags(name)
        if current and current.get(TAG_LEDGER) not in (None, spec.tags[TAG_LEDGER]):
            raise ProviderError(f"bucket {name} exists and belongs to another mcc ledger "
                                f"({current.get(TAG_LEDGER)}); choose another bucket name")
        call(self.s3.put_bucket_tagging, Bucket=name, Tagging={"TagSet": aws_tags(spec.tags)})
        call(self.s3.put_public_access_block, Bucket=name, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
        call(self.s3.put_bucket_encryption, Bucket=name, ServerSideEncryptionConfiguration=ENCRYPTION)
        call(self.s3.put_bucket_policy, Bucket=name, Policy=json.dumps(tls_only_policy(name)))
        if spec.params.get("versioning"):
            call(self.s3.put_bucket_versioning, Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return self._found(name, dict(spec.tags))

    def find(self, spec: ResourceSpec) -> Found | None:
        name = spec.params["name"]
        tags = self._tags(name)
        if not tags or tags.get(TAG_LEDGER) != spec.tags[TAG_LEDGER] or tags.get(TAG_ENTITY) != spec.idempotency_key:
            return None
        return self._found(name, tags)

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        tags = self._tags(physical_id)
        return None if tags is None else self._found(physical_id, tags)

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        """Abort unfinished multipart uploads (their parts are billed and block nothing else), purge every
        object version and delete marker, then the bucket; a missing bucket is deleted."""
        try:
            abort_uploads(self.s3, physical_id)
            purge(self.s3, physical_id)
            call(self.s3.delete_bucket, Bucket=physical_id)
        except AwsNotFound:
            return

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        found = []
        pages = call(lambda: list(self.s3.get_paginator("list_buckets").paginate()))
        # Only mcc's own names (bucket_name): reading a foreign bucket's tags is not ours to do, and the
        # user policy (README) allows bucket actions on mcc-* only.
        for bucket in [b for page in pages for b in page.get("Buckets", []) if b["Name"].startswith("mcc-")]:
            tags = self._tags(bucket["Name"])
            if tags and tags.get(TAG_LEDGER) == ledger_uuid and (run_id is None or tags.get(TAG_RUN) == run_id):
                found.append(self._found(bucket["Name"], tags, epoch(bucket.get("CreationDate"))))
        return found

    def _tags(self, name: str) -> dict[str, str] | None:
        """The bucket's tags: {} when it has none, None when the bucket does not exist."""
        try:
            return tag_dict(call(self.s3.get_bucket_tagging, Bucket=name)["TagSet"])
        except AwsNotFound:
            return None
        except ProviderError as exc:
            if error_code(exc.__cause__) == "NoSuchTagSet":
                return {}
            raise

    def _found(self, name: str, tags: dict[str, str], created: float | None = None) -> Found:
        """``created``: ListBuckets' CreationDate (only the sweep lists buckets; describe tells no time)."""
        return Found(name, {"name": name, "region": self.ctx.region, "arn": f"arn:aws:s3:::{name}",
                            "url": f"s3://{name}/"}, tags, created)


def abort_uploads(s3: Any, bucket: str) -> int:
    """Abort every multipart upload left unfinished in ``bucket`` (an interrupted large result upload);
    returns how many. A bucket still holding one cannot be deleted cleanly and its parts cost money."""
    aborted = 0
    pages = call(lambda: list(s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket)))
    for upload in [u for page in pages for u in page.get("Uploads", [])]:
        try:
            call(s3.abort_multipart_upload, Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        except AwsNotFound:  # NoSuchUpload: finished or aborted meanwhile
            continue
        aborted += 1
    return aborted


def purge(s3: Any, bucket: str) -> int:
    """Delete every object version and delete marker in ``bucket``; returns how many.

    Lists the first page (≤ 1000 versions + markers), deletes it in one delete_objects call, and lists
    again until the bucket is empty: no markers to keep, and a writer racing the purge leaves nothing."""
    deleted = 0
    while True:
        page = call(s3.list_object_versions, Bucket=bucket, MaxKeys=1000)
        items = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                 for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if not items:
            return deleted
        for start in range(0, len(items), 1000):
            chunk = items[start:start + 1000]
            reply = call(s3.delete_objects, Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
            if reply.get("Errors"):
                first = reply["Errors"][0]
                raise ProviderError(f"could not delete {first['Key']} from bucket {bucket}: {first.get('Code')}")
            deleted += len(chunk)
