"""kind ``parameter``: an SSM SecureString holding a generated secret (queue password, cache AUTH token).

The value is generated inside ``create`` and goes only to SSM: it is never returned in attrs, logged, or
put in user data; instances read it with their role (``read_secret``). The queue's CA certificate is a
parameter too (made here with a placeholder, so the ledger tracks and cleans it): the manager instance
writes the certificate into it at start-up (``overwrite_secret``), the only parameter its role may write.
"""
from __future__ import annotations

import secrets
from typing import Any

from mcc.errors import ProviderError
from mcc.providers.aws.clients import AwsContext, aws_tags, epoch, tag_dict
from mcc.providers.aws.errors import AwsNotFound, call, error_code
from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, TAG_RUN, Found, ResourceSpec


def read_secret(ctx: AwsContext, name: str) -> str:
    """The decrypted value of the SecureString ``name``."""
    return call(ctx.client("ssm").get_parameter, Name=name, WithDecryption=True)["Parameter"]["Value"]


def overwrite_secret(ctx: AwsContext, name: str, value: str) -> int:
    """Replace the value of the existing SecureString ``name`` (its tags, and its ledger row, stay); the new
    version number."""
    return call(ctx.client("ssm").put_parameter, Name=name, Value=value, Type="SecureString",
                Overwrite=True)["Version"]


class ParameterProvider:
    """kind ``parameter``: physical id is the parameter name (a path like /mcc/<ledger>/<run>/queue-password)."""

    kind = "parameter"

    def __init__(self, ctx: AwsContext) -> None:
        self.ctx, self.ssm = ctx, ctx.client("ssm")

    def create(self, spec: ResourceSpec) -> Found:
        name = spec.params["name"]
        value = secrets.token_urlsafe(int(spec.params.get("value_bytes", 32)))
        try:
            call(self.ssm.put_parameter, Name=name, Value=value, Type="SecureString", Overwrite=False,
                 Description=f"mcc {spec.name}"[:1024], Tags=aws_tags(spec.tags))
        except ProviderError as exc:
            if error_code(exc.__cause__) == "ParameterAlreadyExists":
                raise ProviderError(f"SSM parameter {name} already exists and is not this entity's; "
                                    "delete it or change the ledger") from None
            raise
        found = self.describe(name, {})
        if found is None:
            raise ProviderError(f"SSM parameter {name} vanished right after it was created")
        return found

    def find(self, spec: ResourceSpec) -> Found | None:
        found = self.describe(spec.params["name"], {})
        if found is None:
            return None
        mine = (found.tags.get(TAG_LEDGER) == spec.tags[TAG_LEDGER]
                and found.tags.get(TAG_ENTITY) == spec.idempotency_key)
        return found if mine else None

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        try:
            param = call(self.ssm.get_parameter, Name=physical_id)["Parameter"]  # no decryption: value unused
            tags = call(self.ssm.list_tags_for_resource, ResourceType="Parameter", ResourceId=physical_id)["TagList"]
        except AwsNotFound:
            return None
        return _found(physical_id, param.get("ARN"), param.get("Version"), tag_dict(tags),
                      epoch(param.get("LastModifiedDate")))

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        try:
            call(self.ssm.delete_parameter, Name=physical_id)
        except AwsNotFound:
            pass

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        filters = [{"Key": f"tag:{TAG_LEDGER}", "Values": [ledger_uuid]}]
        if run_id:
            filters.append({"Key": f"tag:{TAG_RUN}", "Values": [run_id]})
        pages = call(lambda: list(self.ssm.get_paginator("describe_parameters").paginate(ParameterFilters=filters)))
        found = []
        for meta in [m for page in pages for m in page["Parameters"]]:
            f = self.describe(meta["Name"], {})
            if f is not None:
                found.append(f)
        return found


def _found(name: str, arn: str | None, version: int | None, tags: dict[str, str], modified: float | None) -> Found:
    """``modified`` (its last write, no earlier than its creation) stands for the creation time SSM does not tell."""
    return Found(name, {"name": name, "arn": arn, "version": version}, tags, modified)
