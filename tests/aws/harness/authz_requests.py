"""One boto3 call as the proxy saw it → the authorisations AWS makes for it (``Check`` rows).

Resource ARNs, types and condition keys follow tests/aws/harness/authz_table.py (the Service Authorization
Reference); resource tags and what a launch template holds are read from moto *before* the call runs.
"""
from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any, Callable

from tests.aws.harness.authz_policy import Check
from tests.aws.harness.authz_table import ACTIONS, key_allowed

EC2_PREFIXES = {"i-": "instance", "sg-": "security-group", "snap-": "snapshot", "ami-": "image", "vol-": "volume",
                "eni-": "network-interface", "lt-": "launch-template", "key-": "key-pair", "subnet-": "subnet",
                "sir-": "spot-instances-request", "vpc-": "vpc",
                "vpce-": "vpc-endpoint", "rtb-": "route-table"}
REGIONAL_ONLY = {"image", "snapshot"}  # ARNs without an account: arn:aws:ec2:<region>::image/ami-…
S3_OBJECT = {"PutObject": "PutObject", "CreateMultipartUpload": "PutObject", "UploadPart": "PutObject",
             "CompleteMultipartUpload": "PutObject", "GetObject": "GetObject", "HeadObject": "GetObject",
             "AbortMultipartUpload": "AbortMultipartUpload"}
S3_BUCKET = {"ListObjectsV2": "ListBucket", "ListObjects": "ListBucket", "HeadBucket": "ListBucket",
             "ListObjectVersions": "ListBucketVersions", "ListMultipartUploads": "ListBucketMultipartUploads",
             "CreateBucket": "CreateBucket", "DeleteBucket": "DeleteBucket", "GetBucketTagging": "GetBucketTagging",
             "PutBucketTagging": "PutBucketTagging", "PutPublicAccessBlock": "PutBucketPublicAccessBlock",
             "PutBucketEncryption": "PutEncryptionConfiguration", "PutBucketVersioning": "PutBucketVersioning",
             "PutBucketPolicy": "PutBucketPolicy", "GetBucketPolicy": "GetBucketPolicy",
             "DeleteBucketPolicy": "DeleteBucketPolicy", "GetBucketLocation": "GetBucketLocation"}
ANY = {"tagging:GetResources": "tag:GetResources", "pricing:GetProducts": "pricing:GetProducts",
       "servicequotas:GetServiceQuota": "servicequotas:GetServiceQuota"}


class UnknownCall(Exception):
    """A call the table does not cover: the table must grow with mcc."""


def listed(params: dict[str, Any], prefix: str) -> list[str]:
    """``prefix.1``, ``prefix.2``… of flattened query params, in order."""
    out, i = [], 1
    while f"{prefix}.{i}" in params:
        out.append(params[f"{prefix}.{i}"])
        i += 1
    return out


def query_tags(params: dict[str, Any], prefix: str) -> dict[str, str]:
    """``prefix.N.Key``/``prefix.N.Value`` → {key: value}."""
    out, i = {}, 1
    while f"{prefix}.{i}.Key" in params:
        out[params[f"{prefix}.{i}.Key"]] = params.get(f"{prefix}.{i}.Value", "")
        i += 1
    return out


def tag_specs(params: dict[str, Any]) -> dict[str, dict[str, str]]:
    """EC2 TagSpecification.N → {resource type: tags}."""
    out, i = {}, 1
    while f"TagSpecification.{i}.ResourceType" in params:
        out[params[f"TagSpecification.{i}.ResourceType"]] = query_tags(params, f"TagSpecification.{i}.Tag")
        i += 1
    return out


def req_ctx(tags: dict[str, str]) -> dict[str, tuple[str, ...]]:
    ctx = {f"aws:RequestTag/{k}": (v,) for k, v in tags.items()}
    if tags:
        ctx["aws:TagKeys"] = tuple(sorted(tags))
    return ctx


def res_ctx(tags: dict[str, str], prefixes: tuple[str, ...] = ("aws:ResourceTag", "ec2:ResourceTag")) -> dict:
    return {f"{p}/{k}": (v,) for p in prefixes for k, v in tags.items()}


class Requests:
    """Builds the checks of a call; ``look`` reads moto directly (clients not counted, not evaluated)."""

    def __init__(self, look: Any, region: str, account: str) -> None:
        self.look, self.region, self.account = look, region, account

    # -- ARNs ----------------------------------------------------------------------------------------
    def ec2_arn(self, rtype: str, rid: str) -> str:
        account = "" if rtype in REGIONAL_ONLY else self.account
        return f"arn:aws:ec2:{self.region}:{account}:{rtype}/{rid}"

    def check(self, action: str, rtype: str, arn: str, ctx: dict[str, tuple[str, ...]] | None = None) -> Check:
        """A Check, validated against the table (type and every key must be listed for the action)."""
        if action not in ACTIONS or rtype not in ACTIONS[action]:
            raise UnknownCall(f"{action} on a {rtype} is not in tests/aws/harness/authz_table.py")
        ctx = dict(ctx or {})
        bad = [k for k in ctx if not key_allowed(action, rtype, k)]
        if bad:
            raise UnknownCall(f"{action} on a {rtype}: condition keys {bad} are not in the table")
        ctx["aws:SecureTransport"] = ("true",)  # every real client speaks TLS (the emulator is local HTTP)
        return Check(action, arn, rtype, ctx)

    # -- dispatch ------------------------------------------------------------------------------------
    def checks(self, call: Any) -> list[Check]:
        handler: Callable[[Any], list[Check]] | None = getattr(self, f"_{call.service}_{call.action}", None)
        if handler is not None:
            return handler(call)
        key = f"{call.service}:{call.action}"
        if call.service == "ec2" and call.action.startswith("Describe"):
            return [self.check(f"ec2:{call.action}", "*", "*")]
        if key in ANY:
            return [self.check(ANY[key], "*", "*")]
        if call.service == "s3":
            return self._s3(call)
        if call.service in ("iam", "ssm", "elasticache"):
            return getattr(self, f"_{call.service}")(call)
        raise UnknownCall(f"no authorisation rule for {key}")

    # -- EC2 -----------------------------------------------------------------------------------------
    def _created(self, create_action: str, specs: dict[str, dict[str, str]], types: list[str]) -> list[Check]:
        """CreateTags for what a create call tags (``ec2:CreateAction``)."""
        return [self.check("ec2:CreateTags", t, self.ec2_arn(t, "*"), {**req_ctx(specs[t]), "ec2:CreateAction": (create_action,)})
                for t in types if specs.get(t)]

    def _ec2_RunInstances(self, call: Any) -> list[Check]:
        p = call.params
        template_id = p.get("LaunchTemplate.LaunchTemplateId")
        data = self.look.template_data(template_id) if template_id else {}
        # Only the request's own TagSpecifications count as aws:RequestTag: whether AWS adds the template's
        # is not stated in the reference, and assuming it does not can never allow what AWS refuses.
        specs = tag_specs(p)
        lt = {"ec2:LaunchTemplate": (self.ec2_arn("launch-template", template_id),)} if template_id else {}
        spot = p.get("InstanceMarketOptions.MarketType") == "spot" or (
            (data.get("InstanceMarketOptions") or {}).get("MarketType") == "spot")
        encrypted = p.get("BlockDeviceMapping.1.Ebs.Encrypted") or str(
            any((m.get("Ebs") or {}).get("Encrypted") for m in data.get("BlockDeviceMappings", []))).lower()
        created = ["instance", "volume", "network-interface"] + (["spot-instances-request"] if spot else [])
        out = []
        for t in created:
            extra = {"ec2:Encrypted": (encrypted,)} if t == "volume" else {}
            out.append(self.check("ec2:RunInstances", t, self.ec2_arn(t, "*"), {**req_ctx(specs.get(t, {})), **lt, **extra}))
        image = p.get("ImageId") or data.get("ImageId")
        # a primary network interface (no public address) takes the groups and the subnet instead
        interface = (data.get("NetworkInterfaces") or [{}])[0]
        groups = (listed(p, "SecurityGroupId") or listed(p, "NetworkInterface.1.SecurityGroupId")
                  or data.get("SecurityGroupIds") or interface.get("Groups", []))
        used = [("image", image)] + [("security-group", g) for g in groups]
        used.append(("subnet", p.get("SubnetId") or p.get("NetworkInterface.1.SubnetId") or interface.get("SubnetId")
                     or self.look.default_subnet()))
        if p.get("KeyName") or data.get("KeyName"):
            used.append(("key-pair", p.get("KeyName") or data.get("KeyName")))
        if template_id:
            used.append(("launch-template", template_id))
        for t, rid in used:
            out.append(self.check("ec2:RunInstances", t, self.ec2_arn(t, rid), {**res_ctx(self.look.ec2_tags(t, rid)), **lt}))
        out += self._created("RunInstances", specs, created)
        profile = p.get("IamInstanceProfile.Arn") or (data.get("IamInstanceProfile") or {}).get("Arn")
        for role_arn in self.look.profile_roles(profile.rsplit("/", 1)[-1]) if profile else []:
            out.append(self.check("iam:PassRole", "role", role_arn, {"iam:PassedToService": ("ec2.amazonaws.com",)}))
        return out

    def _ec2_CreateTags(self, call: Any) -> list[Check]:
        tags = query_tags(call.params, "Tag")
        out = []
        for rid in listed(call.params, "ResourceId"):
            t = next(v for k, v in EC2_PREFIXES.items() if rid.startswith(k))
            out.append(self.check("ec2:CreateTags", t, self.ec2_arn(t, rid), {**req_ctx(tags), **res_ctx(self.look.ec2_tags(t, rid))}))
        return out

    def _on(self, action: str, t: str, rid: str) -> list[Check]:
        """A use or delete of ``rid``, judged on its tags. A resource moto no longer has is not judged: EC2
        answers NotFound for an id that does not exist (a clean resumed after its delete went through)."""
        exists = getattr(self.look, "ec2_exists", None)
        if exists is not None and not exists(t, rid):
            return []
        return [self.check(action, t, self.ec2_arn(t, rid), res_ctx(self.look.ec2_tags(t, rid)))]

    def _ec2_TerminateInstances(self, call: Any) -> list[Check]:
        return [c for iid in listed(call.params, "InstanceId") for c in self._on("ec2:TerminateInstances", "instance", iid)]

    def _ec2_CreateImage(self, call: Any) -> list[Check]:
        specs = tag_specs(call.params)
        return [*self._on("ec2:CreateImage", "instance", call.params["InstanceId"]),
                *[self.check("ec2:CreateImage", t, self.ec2_arn(t, "*"), req_ctx(specs.get(t, {}))) for t in ("image", "snapshot")],
                *self._created("CreateImage", specs, ["image", "snapshot"])]

    def _ec2_DeregisterImage(self, call: Any) -> list[Check]:
        return self._on("ec2:DeregisterImage", "image", call.params["ImageId"])

    def _ec2_DeleteSnapshot(self, call: Any) -> list[Check]:
        return self._on("ec2:DeleteSnapshot", "snapshot", call.params["SnapshotId"])

    def _ec2_CreateSecurityGroup(self, call: Any) -> list[Check]:
        specs, vpc = tag_specs(call.params), call.params.get("VpcId") or self.look.default_vpc()
        return [self.check("ec2:CreateSecurityGroup", "security-group", self.ec2_arn("security-group", "*"),
                           req_ctx(specs.get("security-group", {}))),
                *self._on("ec2:CreateSecurityGroup", "vpc", vpc), *self._created("CreateSecurityGroup", specs, ["security-group"])]

    def _ec2_AuthorizeSecurityGroupIngress(self, call: Any) -> list[Check]:
        return self._on("ec2:AuthorizeSecurityGroupIngress", "security-group", call.params["GroupId"])

    def _ec2_DeleteSecurityGroup(self, call: Any) -> list[Check]:
        return self._on("ec2:DeleteSecurityGroup", "security-group", call.params["GroupId"])

    def _ec2_CreateKeyPair(self, call: Any) -> list[Check]:
        specs = tag_specs(call.params)
        return [self.check("ec2:CreateKeyPair", "key-pair", self.ec2_arn("key-pair", call.params["KeyName"]),
                           req_ctx(specs.get("key-pair", {}))), *self._created("CreateKeyPair", specs, ["key-pair"])]

    def _ec2_DeleteKeyPair(self, call: Any) -> list[Check]:
        return self._on("ec2:DeleteKeyPair", "key-pair", call.params["KeyName"])

    def _ec2_CreateLaunchTemplate(self, call: Any) -> list[Check]:
        specs = tag_specs(call.params)
        return [self.check("ec2:CreateLaunchTemplate", "launch-template", self.ec2_arn("launch-template", "*"),
                           req_ctx(specs.get("launch-template", {}))),
                *self._created("CreateLaunchTemplate", specs, ["launch-template"])]

    def _ec2_DeleteLaunchTemplate(self, call: Any) -> list[Check]:
        return self._on("ec2:DeleteLaunchTemplate", "launch-template", call.params["LaunchTemplateId"])

    def _ec2_CreateVpcEndpoint(self, call: Any) -> list[Check]:
        p, specs = call.params, tag_specs(call.params)
        used = [("vpc", p["VpcId"])] + [("route-table", r) for r in listed(p, "RouteTableId")]
        used += [("subnet", n) for n in listed(p, "SubnetId")] + [("security-group", g) for g in listed(p, "SecurityGroupId")]
        return [self.check("ec2:CreateVpcEndpoint", "vpc-endpoint", self.ec2_arn("vpc-endpoint", "*"),
                           req_ctx(specs.get("vpc-endpoint", {}))),
                *[c for t, rid in used for c in self._on("ec2:CreateVpcEndpoint", t, rid)],
                *self._created("CreateVpcEndpoint", specs, ["vpc-endpoint"])]

    def _ec2_DeleteVpcEndpoints(self, call: Any) -> list[Check]:
        return [c for vid in listed(call.params, "VpcEndpointId") for c in self._on("ec2:DeleteVpcEndpoints", "vpc-endpoint", vid)]

    # -- S3 ------------------------------------------------------------------------------------------
    def _s3(self, call: Any) -> list[Check]:
        parts = call.path.lstrip("/").split("/", 1)
        bucket, key = urllib.parse.unquote(parts[0]), urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""
        bucket_arn = f"arn:aws:s3:::{bucket}"
        if call.action == "ListBuckets":
            return [self.check("s3:ListAllMyBuckets", "*", "*")]
        if call.action in S3_OBJECT:
            return [self.check(f"s3:{S3_OBJECT[call.action]}", "object", f"{bucket_arn}/{key}")]
        if call.action == "DeleteObject":
            action = "DeleteObjectVersion" if call.params.get("versionId") else "DeleteObject"
            return [self.check(f"s3:{action}", "object", f"{bucket_arn}/{key}")]
        if call.action == "DeleteObjects":
            out = []
            for obj in ET.fromstring(call.body).iter():
                if obj.tag.rsplit("}", 1)[-1] != "Object":
                    continue
                fields = {c.tag.rsplit("}", 1)[-1]: c.text or "" for c in obj}
                action = "DeleteObjectVersion" if fields.get("VersionId") else "DeleteObject"
                out.append(self.check(f"s3:{action}", "object", f"{bucket_arn}/{fields['Key']}"))
            return out
        if call.action in S3_BUCKET:
            action = S3_BUCKET[call.action]
            ctx = {"s3:prefix": (call.params.get("prefix", ""),)} if action == "ListBucket" and call.action != "HeadBucket" else {}
            return [self.check(f"s3:{action}", "bucket", bucket_arn, ctx)]
        raise UnknownCall(f"no authorisation rule for s3:{call.action}")

    # -- IAM -----------------------------------------------------------------------------------------
    def _iam(self, call: Any) -> list[Check]:
        p, a = call.params, call.action
        iam = f"arn:aws:iam::{self.account}"
        tags = query_tags(p, "Tags.member")
        if a == "CreateRole":
            arn = f"{iam}:role{p.get('Path', '/')}{p['RoleName']}"
            ctx = {**req_ctx(tags), **({"iam:PermissionsBoundary": (p["PermissionsBoundary"],)} if p.get("PermissionsBoundary") else {})}
            return [self.check("iam:CreateRole", "role", arn, ctx)] + ([self.check("iam:TagRole", "role", arn, req_ctx(tags))] if tags else [])
        if a == "CreateInstanceProfile":
            arn = f"{iam}:instance-profile{p.get('Path', '/')}{p['InstanceProfileName']}"
            return [self.check("iam:CreateInstanceProfile", "instance-profile", arn, req_ctx(tags))] + (
                [self.check("iam:TagInstanceProfile", "instance-profile", arn, req_ctx(tags))] if tags else [])
        if a in ("ListRoles", "ListInstanceProfiles"):
            return [self.check(f"iam:{a}", "*", "*")]
        if a == "GetPolicy":
            return [self.check("iam:GetPolicy", "policy", p["PolicyArn"])]
        if a == "CreateServiceLinkedRole":
            service = p["AWSServiceName"]
            arn = f"{iam}:role/aws-service-role/{service}/*"
            return [self.check("iam:CreateServiceLinkedRole", "role", arn, {"iam:AWSServiceName": (service,)})]
        if "InstanceProfileName" in p:
            arn = self.look.profile_arn(p["InstanceProfileName"])
            out = [self.check(f"iam:{a}", "instance-profile", arn)]
            if a == "AddRoleToInstanceProfile":  # its dependent action: the role goes to whoever uses the profile
                out.append(self.check("iam:PassRole", "role", self.look.role(p["RoleName"])["arn"]))
            return out
        if "RoleName" in p:
            role = self.look.role(p["RoleName"])
            ctx = {f"iam:ResourceTag/{k}": (v,) for k, v in role["tags"].items()}
            if a == "PutRolePolicy":
                ctx = {"iam:PermissionsBoundary": (role["boundary"],)} if role["boundary"] else {}
            return [self.check(f"iam:{a}", "role", role["arn"], ctx)]
        raise UnknownCall(f"no authorisation rule for iam:{a}")

    # -- SSM -----------------------------------------------------------------------------------------
    def _ssm_arn(self, name: str) -> str:
        account = "" if name.startswith("/aws/service/") else self.account
        return f"arn:aws:ssm:{self.region}:{account}:parameter{name if name.startswith('/') else '/' + name}"

    def _ssm(self, call: Any) -> list[Check]:
        p, a = call.params, call.action
        if a == "DescribeParameters":
            return [self.check("ssm:DescribeParameters", "*", "*")]
        name = p.get("Name") or p.get("ResourceId")
        tags = {t["Key"]: t["Value"] for t in p.get("Tags", [])}
        if a in ("PutParameter", "AddTagsToResource"):
            out = [self.check(f"ssm:{a}", "parameter", self._ssm_arn(name), req_ctx(tags))]
            return out + ([self.check("ssm:AddTagsToResource", "parameter", self._ssm_arn(name), req_ctx(tags))]
                          if a == "PutParameter" and tags else [])
        if a in ("GetParameter", "DeleteParameter", "ListTagsForResource"):
            return [self.check(f"ssm:{a}", "parameter", self._ssm_arn(name))]
        raise UnknownCall(f"no authorisation rule for ssm:{a}")

    # -- ElastiCache ------------------------------------------------------------------------------------
    def _elasticache(self, call: Any) -> list[Check]:
        p, a = call.params, call.action
        base = f"arn:aws:elasticache:{self.region}:{self.account}"
        group = p.get("ReplicationGroupId")
        arn = f"{base}:replicationgroup:{group or '*'}" if not p.get("ResourceName") else p["ResourceName"]
        tags = query_tags(p, "Tags.Tag")
        if a == "CreateReplicationGroup":
            out = [self.check(f"elasticache:{a}", "replicationgroup", arn, req_ctx(tags))]
            if p.get("CacheSubnetGroupName"):
                out.append(self.check(f"elasticache:{a}", "subnetgroup", f"{base}:subnetgroup:{p['CacheSubnetGroupName']}"))
            return out + ([self.check("elasticache:AddTagsToResource", "replicationgroup", arn, req_ctx(tags))] if tags else [])
        if a == "DeleteReplicationGroup":
            return [self.check(f"elasticache:{a}", "replicationgroup", arn, res_ctx(self.look.cache_tags(arn), ("aws:ResourceTag",)))]
        if a in ("DescribeReplicationGroups", "ListTagsForResource"):
            return [self.check(f"elasticache:{a}", "replicationgroup", arn)]
        raise UnknownCall(f"no authorisation rule for elasticache:{a}")

