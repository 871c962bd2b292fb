"""kind ``launch_template``: how every mcc instance boots — IMDSv2 only, terminate on shutdown, the fleet's
role and security group (with ``public_ip`` False: in a primary network interface without a public address), encrypted root volumes, and tags on the instance, its volumes and its network
interface from the first second."""
from __future__ import annotations

from typing import Any

from mcc.providers.aws.clients import AwsContext, client_token, epoch, tag_dict, tag_specifications
from mcc.providers.aws.errors import AwsNotFound, call
from mcc.providers.aws.images import encrypted_root
from mcc.providers.aws.instance import LAUNCHED, ownership, private_interface, tag_filters
from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, Found, ResourceSpec

TAG_LIFETIME = "mcc:max-lifetime-hours"


def template_data(params: dict[str, Any], tags: dict[str, str]) -> dict[str, Any]:
    """LaunchTemplateData from the provider's params."""
    data: dict[str, Any] = {
        "ImageId": params["image_id"],
        "InstanceType": params["instance_type"],
        "IamInstanceProfile": {"Arn": params["instance_profile_arn"]},
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "InstanceMetadataTags": "enabled"},
        "InstanceInitiatedShutdownBehavior": "terminate",
        # Not spot-instances-request: a template naming a type its launch does not create fails the launch
        # (the manager is on-demand); a spot launch adds that tag in RunInstances itself.
        "TagSpecifications": tag_specifications(LAUNCHED, tags),
    }
    if params.get("public_ip") is False:  # the group goes inside the interface: EC2 refuses it beside one
        data["NetworkInterfaces"] = [private_interface(params["security_group_id"])]
    else:
        data["SecurityGroupIds"] = [params["security_group_id"]]
    if params.get("key_name"):
        data["KeyName"] = params["key_name"]
    if params.get("root_device"):
        data["BlockDeviceMappings"] = encrypted_root(params["root_device"], params.get("root_size"),
                                                     params.get("kms_key_id"))
    return data


class LaunchTemplateProvider:
    """kind ``launch_template``: physical id is the launch template id; found by its (unique) name."""

    kind = "launch_template"

    def __init__(self, ctx: AwsContext) -> None:
        self.ctx, self.ec2 = ctx, ctx.client("ec2")

    def create(self, spec: ResourceSpec) -> Found:
        tags = dict(spec.tags)
        if spec.params.get("max_lifetime_hours") is not None:
            tags[TAG_LIFETIME] = str(spec.params["max_lifetime_hours"])
        template = call(self.ec2.create_launch_template, LaunchTemplateName=spec.params["name"],
                        ClientToken=client_token(spec.tags[TAG_LEDGER], spec.idempotency_key), LaunchTemplateData=template_data(spec.params, tags),
                        TagSpecifications=tag_specifications(["launch-template"], tags))["LaunchTemplate"]
        return _found(template)

    def find(self, spec: ResourceSpec) -> Found | None:
        # By name first: a second create with the same name fails (moto ignores ClientToken here).
        try:
            templates = call(self.ec2.describe_launch_templates,
                             LaunchTemplateNames=[spec.params["name"]])["LaunchTemplates"]
        except AwsNotFound:
            return None
        if not templates:
            return None
        found = _found(templates[0])
        mine = (found.tags.get(TAG_LEDGER) == spec.tags[TAG_LEDGER]
                and found.tags.get(TAG_ENTITY) == spec.idempotency_key)
        return found if mine else None

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        try:
            templates = call(self.ec2.describe_launch_templates, LaunchTemplateIds=[physical_id])["LaunchTemplates"]
        except AwsNotFound:
            return None
        return _found(templates[0]) if templates else None

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        try:
            call(self.ec2.delete_launch_template, LaunchTemplateId=physical_id)
        except AwsNotFound:
            pass

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        pages = call(lambda: list(self.ec2.get_paginator("describe_launch_templates").paginate(
            Filters=tag_filters(ownership(ledger_uuid, run_id)))))
        return [_found(t) for page in pages for t in page["LaunchTemplates"]]


def _found(template: dict[str, Any]) -> Found:
    attrs = {"launch_template_id": template["LaunchTemplateId"], "name": template["LaunchTemplateName"],
             "version": template.get("LatestVersionNumber")}
    return Found(template["LaunchTemplateId"], attrs, tag_dict(template.get("Tags")), epoch(template.get("CreateTime")))
