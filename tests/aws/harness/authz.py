"""A resource- and condition-aware IAM evaluator on every call of the emulated cloud.

moto checks IAM by action name only (when asked to at all), never by resource ARN or condition key. This
hook on the fault proxy judges every call before moto runs it, the way AWS would:

* who: the laptop's key (``testing``) holds exactly README's user policy; an instance's IMDS key holds its
  role's inline policies as mcc wrote them, read back from moto (tests/aws/harness/runner.py records which
  key is which role), capped by the role's permissions boundary (the managed policy it carries, read back
  from moto as well: :func:`ensure_boundary` creates README's, as an administrator would);
* what: authz_requests.py turns the call into the authorisations AWS makes (every resource a RunInstances
  creates or uses, the CreateTags of tags inside a create, the PassRole of an instance profile…), with
  resource tags read from moto before the call;
* how: authz_policy.py (explicit deny, allow, implicit deny), plus the bucket's own policy (its Deny
  statements: mcc's TLS-only policy) for S3 calls; a role's call is allowed only when its boundary allows
  it too (moto ignores boundaries altogether).

Every implicit or explicit deny, and every call the table does not cover, is a failure; the ``cloud``
fixture fails the test on any (``Cloud.authz.failures``).
"""
from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from tests.aws.harness.authz_policy import Check, decide, resource_statements
from tests.aws.harness.authz_requests import Requests, UnknownCall
from tests.aws.harness.authz_table import UNAUTHORISED_OK

REPO = Path(__file__).resolve().parents[3]
LAPTOP_KEY = "testing"
ACCOUNT = "123456789012"  # moto's default account


def _setup_json(readme: Path, index: int) -> dict[str, Any]:
    text = readme.read_text().split("### AWS setup", 1)[1].split("\n## ", 1)[0]
    return json.loads(text.split("```json", index + 1)[index + 1].split("```", 1)[0])


def readme_policy(readme: Path = REPO / "README.md") -> dict[str, Any]:
    """The user policy of README's "AWS setup" (its first ```json block)."""
    return _setup_json(readme, 0)


def readme_boundary(readme: Path = REPO / "README.md") -> dict[str, Any]:
    """The permissions boundary of README's "AWS setup" (its second ```json block)."""
    return _setup_json(readme, 1)


def ensure_boundary(iam: Any) -> None:
    """Create README's permissions boundary in moto, as the account's administrator does once (AWS setup, step 4)."""
    from mcc.providers.aws.policy import BOUNDARY_NAME, BOUNDARY_PATH

    try:
        iam.create_policy(PolicyName=BOUNDARY_NAME, Path=BOUNDARY_PATH, PolicyDocument=json.dumps(readme_boundary()))
    except iam.exceptions.EntityAlreadyExistsException:
        pass


class Lookup:
    """What the evaluator reads from moto, directly (not through the proxy, not evaluated)."""

    def __init__(self, client: Any) -> None:
        self.client = client  # service → boto3 client direct to moto

    def ec2_tags(self, rtype: str, rid: str) -> dict[str, str]:
        ec2 = self.client("ec2")
        if rtype == "key-pair":
            pairs = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [rid]}])["KeyPairs"]
            return {t["Key"]: t["Value"] for t in (pairs[0].get("Tags") if pairs else [])}
        if rtype == "launch-template":
            try:
                templates = ec2.describe_launch_templates(LaunchTemplateIds=[rid])["LaunchTemplates"]
            except ec2.exceptions.ClientError:
                templates = []
            return {t["Key"]: t["Value"] for t in (templates[0].get("Tags") if templates else [])}
        tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [rid]}])["Tags"]
        return {t["Key"]: t["Value"] for t in tags}

    def ec2_exists(self, rtype: str, rid: str) -> bool:
        """Whether moto still has the launch template or key pair ``rid`` (other types: assumed to exist)."""
        ec2 = self.client("ec2")
        try:
            if rtype == "launch-template":
                return bool(ec2.describe_launch_templates(LaunchTemplateIds=[rid])["LaunchTemplates"])
            if rtype == "key-pair":
                return bool(ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [rid]}])["KeyPairs"])
        except ec2.exceptions.ClientError:
            return False
        return True

    def template_data(self, template_id: str) -> dict[str, Any]:
        versions = self.client("ec2").describe_launch_template_versions(
            LaunchTemplateId=template_id, Versions=["$Latest"])["LaunchTemplateVersions"]
        return versions[0]["LaunchTemplateData"] if versions else {}

    def default_vpc(self) -> str:
        vpcs = self.client("ec2").describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        return vpcs[0]["VpcId"]

    def default_subnet(self) -> str:
        subnets = self.client("ec2").describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
        return sorted(s["SubnetId"] for s in subnets["Subnets"])[0]

    def profile_arn(self, name: str) -> str:
        try:
            return self.client("iam").get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
        except self.client("iam").exceptions.NoSuchEntityException:
            return f"arn:aws:iam::{ACCOUNT}:instance-profile/{name}"  # path unknown: the call fails anyway

    def profile_roles(self, name: str) -> list[str]:
        try:
            profile = self.client("iam").get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        except self.client("iam").exceptions.NoSuchEntityException:
            return []
        return [r["Arn"] for r in profile.get("Roles", [])]

    def role(self, name: str) -> dict[str, Any]:
        try:
            role = self.client("iam").get_role(RoleName=name)["Role"]
        except self.client("iam").exceptions.NoSuchEntityException:
            return {"arn": f"arn:aws:iam::{ACCOUNT}:role/{name}", "tags": {}, "boundary": None}
        return {"arn": role["Arn"], "tags": {t["Key"]: t["Value"] for t in role.get("Tags", [])},
                "boundary": (role.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")}

    def managed_policy(self, arn: str) -> dict[str, Any]:
        """The default version of the managed policy ``arn``; no statement at all when it does not exist."""
        iam = self.client("iam")
        try:
            version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
            doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
        except iam.exceptions.NoSuchEntityException:
            return {"Statement": []}
        return json.loads(doc) if isinstance(doc, str) else doc

    def role_policies(self, name: str) -> list[dict[str, Any]]:
        iam = self.client("iam")
        try:
            names = iam.list_role_policies(RoleName=name)["PolicyNames"]
            docs = [iam.get_role_policy(RoleName=name, PolicyName=n)["PolicyDocument"] for n in names]
        except iam.exceptions.NoSuchEntityException:
            return []
        return [json.loads(d) if isinstance(d, str) else d for d in docs]

    def cache_tags(self, arn: str) -> dict[str, str]:
        try:
            tags = self.client("elasticache").list_tags_for_resource(ResourceName=arn)["TagList"]
        except Exception:  # noqa: BLE001 - a group moto no longer knows carries no tags
            return {}
        return {t["Key"]: t["Value"] for t in tags}


class PolicyEvaluator:
    """Attach to the fault proxy; ``failures`` lists every deny and every call the table misses."""

    def __init__(self, client: Any, runner: Any, bucket_policies: dict[str, Any], region: str,
                 user_policy: dict[str, Any] | None = None, laptop_keys: tuple[str, ...] = ()) -> None:
        self.client, self.region = client, region
        self._by_region: dict[str, Requests] = {}
        self.requests = self._requests(region)
        self.look = self.requests.look
        self.runner, self.bucket_policies = runner, bucket_policies
        self.user_policy = user_policy or readme_policy()
        self.laptop_keys = {LAPTOP_KEY, *laptop_keys}  # and, under moto's IAM enforcement, the laptop user's key
        self.failures: list[str] = []
        self.allowed: Counter[tuple[str, str]] = Counter()  # (who, action) → authorisations that passed
        self.bounded: Counter[tuple[str, str]] = Counter()  # of those, judged against a role's boundary as well
        self.unattributed: Counter[str] = Counter()  # calls with a key of no known identity (not judged)
        self._lock = threading.Lock()
        self.enabled = True  # off only for the harness's self-tests, whose calls are not mcc's
        # role → (inline policies, permissions boundary or None), until one of its policies is put again
        self._roles: dict[str, tuple[list[dict[str, Any]], dict[str, Any] | None]] = {}

    def _requests(self, region: str) -> Requests:
        """The checks of calls signed for ``region``: their ARNs and the tags read back are that region's."""
        if region not in self._by_region:
            self._by_region[region] = Requests(Lookup(lambda service: self.client(service, region)), region, ACCOUNT)
        return self._by_region[region]

    def attach(self, proxy: Any) -> "PolicyEvaluator":
        proxy.add_hook(self._hook)
        return self

    def who(self, access_key: str | None) -> tuple[str, list[dict[str, Any]]] | None:
        if access_key in self.laptop_keys or (access_key or "").startswith("laptop"):  # crash sweeps: laptop1, laptop2…
            return "laptop (README's user policy)", [self.user_policy]
        role = self.runner.credentials.get(access_key or "")
        if role is None:
            return None
        return f"role {role}", self._role(role)[0]

    def boundary(self, access_key: str | None) -> dict[str, Any] | None:
        """The permissions boundary of the role signing with ``access_key`` (None: a user, or a role without)."""
        role = self.runner.credentials.get(access_key or "")
        return self._role(role)[1] if role is not None else None

    def _role(self, role: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        with self._lock:
            cached = self._roles.get(role)
        if cached is None:
            boundary = self.look.role(role)["boundary"]
            cached = (self.look.role_policies(role), self.look.managed_policy(boundary) if boundary else None)
            with self._lock:
                self._roles[role] = cached
        return cached

    def _hook(self, call: Any, phase: str) -> bool:
        if call.service == "iam" and call.action in ("PutRolePolicy", "DeleteRolePolicy", "DeleteRole"):
            with self._lock:  # before and after the change: the next call of that role reads moto again
                self._roles.pop(call.params.get("RoleName", ""), None)
        if not self.enabled or phase != "before" or call.service in ("unknown", "moto-api"):
            return False
        if f"{call.service}:{call.action}" in UNAUTHORISED_OK:
            return False
        identity = self.who(call.access_key)
        if identity is None:  # the harness's own checks (tagging.HARNESS_KEY), IMDS-less instances
            with self._lock:
                self.unattributed[f"{call.service}:{call.action}"] += 1
            return False
        name, policies = identity
        try:
            checks = self._requests(call.region or self.region).checks(call)
        except UnknownCall as exc:
            self._fail(f"{name}: {exc}")
            return False
        except Exception as exc:  # noqa: BLE001 - a harness bug must fail the test, not pass silently
            self._fail(f"{name}: evaluating {call.service}:{call.action} raised {type(exc).__name__}: {exc}")
            return False
        boundary = self.boundary(call.access_key)
        for check in checks:
            verdict, by = self._decide(policies, check), ""
            if verdict == "allow" and boundary is not None:
                verdict, by = decide([boundary], check), " by the role's permissions boundary"
            if verdict != "allow":
                self._fail(f"{name}: {'explicit' if verdict == 'deny' else 'implicit'} deny{by}: {check.describe()} "
                           f"(call {call.service}:{call.action})")
            else:
                with self._lock:
                    self.allowed[(name, check.action)] += 1
                    if boundary is not None:
                        self.bounded[(name, check.action)] += 1
        return False

    def _decide(self, policies: list[dict[str, Any]], check: Check) -> str:
        verdict = decide(policies, check)
        if check.action.startswith("s3:") and check.resource.startswith("arn:aws:s3:::"):
            bucket = check.resource[len("arn:aws:s3:::"):].split("/", 1)[0]
            on_bucket = decide([{"Statement": resource_statements(self.bucket_policies.get(bucket))}], check)
            if on_bucket == "deny":
                return "deny"
            if on_bucket == "allow" and verdict == "implicit":
                return "allow"
        return verdict

    def _fail(self, message: str) -> None:
        with self._lock:
            if message not in self.failures:
                self.failures.append(message)
