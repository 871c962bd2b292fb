"""kinds ``role``, ``role_policy``, ``instance_profile``: the workers' identity, created under path /mcc/.

IAM is global (not per region) and listed neither by moto's tagging API nor, for inline policies, tagged
at all: sweeps list the /mcc/ path and read tags per entity. Inline policies are found through their
role's tags.
"""
from __future__ import annotations

import json
from typing import Any

from mcc.errors import ConfigError, ProviderError
from mcc.providers.aws.clients import AwsContext, aws_tags, epoch, tag_dict
from mcc.providers.aws.errors import AwsNotFound, call
from mcc.providers.aws.policy import boundary_setup
from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, TAG_RUN, Found, ResourceSpec

PATH = "/mcc/"
EC2_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def _owned(tags: dict[str, str], ledger_uuid: str, run_id: str | None) -> bool:
    return tags.get(TAG_LEDGER) == ledger_uuid and (run_id is None or tags.get(TAG_RUN) == run_id)


def _mine(tags: dict[str, str], spec: ResourceSpec) -> bool:
    return tags.get(TAG_LEDGER) == spec.tags[TAG_LEDGER] and tags.get(TAG_ENTITY) == spec.idempotency_key


def _document(doc: Any) -> dict[str, Any]:
    """IAM returns policy documents URL-decoded JSON (boto3 parses them) or as a string."""
    return json.loads(doc) if isinstance(doc, str) else doc


def role_params(name: str, boundary: str | None) -> dict[str, Any]:
    """The spec params of the role ``name`` carrying the permissions boundary ``boundary`` (an ARN, or None)."""
    return {"name": name, "permissions_boundary": boundary}


class RoleProvider:
    """kind ``role``: physical id is the role name; the trust lets EC2 instances assume it.

    ``policy_document`` (optional) is put as the inline policy ``mcc-inline`` right after create; the
    usual shape is a separate ``role_policy`` row. ``permissions_boundary`` (a managed policy's ARN, or None)
    is set inside CreateRole: README's user policy allows creating a role only with mcc's boundary."""

    kind = "role"

    def __init__(self, ctx: AwsContext) -> None:
        self.ctx, self.iam = ctx, ctx.client("iam")

    def create(self, spec: ResourceSpec) -> Found:
        name = spec.params["name"]
        boundary = spec.params.get("permissions_boundary")
        role = call(self.iam.create_role, RoleName=name, Path=PATH, AssumeRolePolicyDocument=json.dumps(EC2_TRUST),
                    Description=f"mcc {spec.name}"[:1000], Tags=aws_tags(spec.tags),
                    **({"PermissionsBoundary": boundary} if boundary else {}))["Role"]
        if spec.params.get("policy_document"):
            call(self.iam.put_role_policy, RoleName=name, PolicyName="mcc-inline",
                 PolicyDocument=json.dumps(spec.params["policy_document"]))
        return _role_found(role, dict(spec.tags))

    def find(self, spec: ResourceSpec) -> Found | None:
        found = self.describe(spec.params["name"], {})
        return found if found is not None and _mine(found.tags, spec) else None

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        try:
            role = call(self.iam.get_role, RoleName=physical_id)["Role"]
        except AwsNotFound:
            return None
        return _role_found(role, tag_dict(role.get("Tags")))

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        """Remove what still hangs on the role (inline policies, profile links), then the role."""
        try:
            for policy in call(self.iam.list_role_policies, RoleName=physical_id)["PolicyNames"]:
                _ignore_missing(self.iam.delete_role_policy, RoleName=physical_id, PolicyName=policy)
            for attached in call(self.iam.list_attached_role_policies, RoleName=physical_id)["AttachedPolicies"]:
                _ignore_missing(self.iam.detach_role_policy, RoleName=physical_id, PolicyArn=attached["PolicyArn"])
            for profile in call(self.iam.list_instance_profiles_for_role, RoleName=physical_id)["InstanceProfiles"]:
                _ignore_missing(self.iam.remove_role_from_instance_profile,
                                InstanceProfileName=profile["InstanceProfileName"], RoleName=physical_id)
            call(self.iam.delete_role, RoleName=physical_id, retry_dependency=True, deadline=60)
        except AwsNotFound:
            return

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        pages = call(lambda: list(self.iam.get_paginator("list_roles").paginate(PathPrefix=PATH)))
        found = []
        for role in [r for page in pages for r in page["Roles"] if r.get("Path") == PATH]:
            f = self.describe(role["RoleName"], {})  # list_roles returns no tags
            if f is not None and _owned(f.tags, ledger_uuid, run_id):
                found.append(f)
        return found


class RolePolicyProvider:
    """kind ``role_policy``: an inline policy; physical id is ``<role>/<policy>``. Inline policies carry no
    tags, so they are ours when their role is."""

    kind = "role_policy"

    def __init__(self, ctx: AwsContext) -> None:
        self.ctx, self.iam, self.roles = ctx, ctx.client("iam"), RoleProvider(ctx)

    def create(self, spec: ResourceSpec) -> Found:
        role, name = spec.params["role_name"], spec.params["policy_name"]
        call(self.iam.put_role_policy, RoleName=role, PolicyName=name, PolicyDocument=json.dumps(spec.params["policy"]))
        return Found(f"{role}/{name}", {"role_name": role, "policy_name": name}, dict(spec.tags))

    def find(self, spec: ResourceSpec) -> Found | None:
        role = self.roles.describe(spec.params["role_name"], {})
        if role is None or role.tags.get(TAG_LEDGER) != spec.tags[TAG_LEDGER]:
            return None
        found = self.describe(f"{spec.params['role_name']}/{spec.params['policy_name']}", {})
        if found is None or found.attrs["policy"] != spec.params["policy"]:
            return None  # absent, or not yet the wanted document: create (put) it again
        return Found(found.physical_id, found.attrs, dict(spec.tags))

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        role, name = physical_id.split("/", 1)
        try:
            doc = call(self.iam.get_role_policy, RoleName=role, PolicyName=name)["PolicyDocument"]
        except AwsNotFound:
            return None
        return Found(physical_id, {"role_name": role, "policy_name": name, "policy": _document(doc)})

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        role, name = physical_id.split("/", 1)
        _ignore_missing(self.iam.delete_role_policy, RoleName=role, PolicyName=name)

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        found = []
        for role in self.roles.sweep(ledger_uuid, run_id):
            try:
                names = call(self.iam.list_role_policies, RoleName=role.physical_id)["PolicyNames"]
            except AwsNotFound:
                continue
            found += [Found(f"{role.physical_id}/{n}", {"role_name": role.physical_id, "policy_name": n}, role.tags,
                            role.created_at) for n in names]  # no time of its own: no earlier than its role
        return found


class InstanceProfileProvider:
    """kind ``instance_profile``: physical id is the profile name; holds ``role_name``."""

    kind = "instance_profile"

    def __init__(self, ctx: AwsContext) -> None:
        self.ctx, self.iam = ctx, ctx.client("iam")

    def create(self, spec: ResourceSpec) -> Found:
        name = spec.params["name"]
        call(self.iam.create_instance_profile, InstanceProfileName=name, Path=PATH, Tags=aws_tags(spec.tags))
        return self._link(name, spec.params["role_name"])

    def _link(self, name: str, role_name: str) -> Found:
        """Put the role in the profile unless it is there already (a profile holds one role)."""
        found = self.describe(name, {})
        if found is None:
            raise ProviderError(f"instance profile {name} vanished right after it was created")
        if found.attrs["role_name"] != role_name:
            call(self.iam.add_role_to_instance_profile, InstanceProfileName=name, RoleName=role_name)
            found = self.describe(name, {}) or found
        return found

    def find(self, spec: ResourceSpec) -> Found | None:
        found = self.describe(spec.params["name"], {})
        if found is None or not _mine(found.tags, spec):
            return None
        return self._link(found.physical_id, spec.params["role_name"])

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        try:
            profile = call(self.iam.get_instance_profile, InstanceProfileName=physical_id)["InstanceProfile"]
        except AwsNotFound:
            return None
        return _profile_found(profile)

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        found = self.describe(physical_id, attrs)
        if found is None:
            return
        for role in found.attrs["role_names"]:
            _ignore_missing(self.iam.remove_role_from_instance_profile, InstanceProfileName=physical_id, RoleName=role)
        _ignore_missing(self.iam.delete_instance_profile, InstanceProfileName=physical_id)

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        # Tags come from get_instance_profile: moto's list_instance_profile_tags answers HTTP 500.
        pages = call(lambda: list(self.iam.get_paginator("list_instance_profiles").paginate(PathPrefix=PATH)))
        found = []
        for profile in [p for page in pages for p in page["InstanceProfiles"] if p.get("Path") == PATH]:
            f = self.describe(profile["InstanceProfileName"], {})
            if f is not None and _owned(f.tags, ledger_uuid, run_id):
                found.append(f)
        return found


def require_boundary(ctx: AwsContext, arn: str, source: str = "mcc.toml [aws] permissions_boundary") -> None:
    """Refuse (before anything is created) a permissions boundary that does not exist: CreateRole would fail
    half-way through a run's resources, and only an administrator can make it."""
    iam = ctx.client("iam")
    try:
        call(iam.get_policy, PolicyArn=arn)
    except AwsNotFound:
        raise ConfigError(
            f"{source}: the permissions boundary {arn} does not exist. Every IAM role mcc creates carries it, and "
            f"README's user policy lets mcc create roles only with it. Fix: {boundary_setup(arn.rsplit('/', 1)[-1])}. "
            "Nothing was created.") from None


def _ignore_missing(fn: Any, **kwargs: Any) -> None:
    try:
        call(fn, **kwargs)
    except AwsNotFound:
        pass


def _role_found(role: dict[str, Any], tags: dict[str, str]) -> Found:
    boundary = (role.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
    return Found(role["RoleName"], {"name": role["RoleName"], "arn": role["Arn"], "permissions_boundary": boundary},
                 tags, epoch(role.get("CreateDate")))


def _profile_found(profile: dict[str, Any]) -> Found:
    roles = [r["RoleName"] for r in profile.get("Roles", [])]
    attrs = {"name": profile["InstanceProfileName"], "arn": profile["Arn"], "role_names": roles,
             "role_name": roles[0] if roles else None}
    return Found(profile["InstanceProfileName"], attrs, tag_dict(profile.get("Tags")), epoch(profile.get("CreateDate")))
