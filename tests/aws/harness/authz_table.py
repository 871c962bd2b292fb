"""Each IAM action mcc's calls need → the resource types AWS authorises it on → the condition keys each carries.

Taken from the Service Authorization Reference ("Actions, resources, and condition keys for ..."), one page
per service:

* EC2: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html
* S3: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html
* IAM: https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsidentityandaccessmanagementiam.html
* SSM: https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssystemsmanager.html
* ElastiCache: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticache.html
* Resource Groups Tagging, Pricing, Service Quotas, STS: the same reference, their own pages.

and, for what a create call also authorises, the EC2 User Guide's "Grant permission to tag Amazon EC2
resources during creation" (CreateTags with ``ec2:CreateAction``) and the API references' TagSpecifications
("RunInstances ... You can specify tags for instances, volumes, Spot Instance requests, network interfaces";
"CreateImage ... image, snapshot").

Only the condition keys mcc's policies use, or that the evaluator must supply for them to be judged, are
listed (the global ``aws:`` request keys — SecureTransport, PrincipalArn… — are added to every request).
``"*"`` as the only type means the action supports no resource-level permission. A request that names a
type or key not in this table fails the evaluation: the table is the evaluator's contract.
"""
from __future__ import annotations

REQ = ["aws:RequestTag/${TagKey}", "aws:TagKeys"]
RES = ["aws:ResourceTag/${TagKey}", "ec2:ResourceTag/${TagKey}"]
LT = ["ec2:LaunchTemplate"]

ACTIONS: dict[str, dict[str, list[str]]] = {
    # -- EC2 --------------------------------------------------------------------------------------------
    # RunInstances: image* (required), instance*, network-interface*, security-group*, subnet*, volume*,
    # key-pair, launch-template, spot-instances-request (with InstanceMarketOptions spot); ec2:LaunchTemplate
    # on each when launched from a template.
    "ec2:RunInstances": {
        "image": RES + LT, "instance": REQ + LT, "network-interface": REQ + LT, "security-group": RES + LT,
        "subnet": RES + LT, "volume": REQ + LT + ["ec2:Encrypted"], "key-pair": RES + LT,
        "launch-template": RES + LT, "spot-instances-request": REQ + LT,
    },
    # CreateTags: ec2:CreateAction is set when the tags come inside a create call's TagSpecifications.
    "ec2:CreateTags": {t: REQ + RES + ["ec2:CreateAction"] for t in (
        "instance", "volume", "network-interface", "spot-instances-request", "image", "snapshot",
        "security-group", "key-pair", "launch-template", "vpc-endpoint")},
    "ec2:TerminateInstances": {"instance": RES},
    "ec2:CreateImage": {"image": REQ, "instance": RES, "snapshot": REQ},
    "ec2:DeregisterImage": {"image": RES},
    "ec2:DeleteSnapshot": {"snapshot": RES},
    "ec2:CreateSecurityGroup": {"security-group": REQ, "vpc": RES},
    "ec2:AuthorizeSecurityGroupIngress": {"security-group": RES + ["ec2:Vpc"]},
    "ec2:DeleteSecurityGroup": {"security-group": RES},
    "ec2:CreateKeyPair": {"key-pair": REQ},
    "ec2:DeleteKeyPair": {"key-pair": RES},
    "ec2:CreateLaunchTemplate": {"launch-template": REQ},
    "ec2:DeleteLaunchTemplate": {"launch-template": RES},
    # CreateVpcEndpoint: vpc-endpoint* (aws:RequestTag), vpc*, and the route-table, security-group and subnet it
    # names; DeleteVpcEndpoints: vpc-endpoint*.
    "ec2:CreateVpcEndpoint": {"vpc-endpoint": REQ, "vpc": RES, "route-table": RES, "security-group": RES,
                              "subnet": RES},
    "ec2:DeleteVpcEndpoints": {"vpc-endpoint": RES},
    **{f"ec2:{a}": {"*": []} for a in (
        "DescribeImages", "DescribeInstances", "DescribeInstanceStatus", "DescribeInstanceTypes",
        "DescribeInstanceTypeOfferings",
        "DescribeKeyPairs", "DescribeLaunchTemplates", "DescribeLaunchTemplateVersions",
        "DescribeNetworkInterfaces", "DescribeRegions", "DescribeSecurityGroups", "DescribeSnapshots",
        "DescribeSpotPriceHistory", "DescribeSubnets", "DescribeTags", "DescribeVpcs",
        "DescribeInstanceAttribute", "DescribeVpcEndpoints", "DescribeRouteTables")},
    # -- S3 ---------------------------------------------------------------------------------------------
    **{f"s3:{a}": {"object": []} for a in (
        "GetObject", "PutObject", "DeleteObject", "DeleteObjectVersion", "AbortMultipartUpload")},
    "s3:ListBucket": {"bucket": ["s3:prefix"]},
    **{f"s3:{a}": {"bucket": []} for a in (
        "ListBucketVersions", "ListBucketMultipartUploads", "CreateBucket", "DeleteBucket", "GetBucketTagging",
        "PutBucketTagging", "PutBucketPublicAccessBlock", "PutEncryptionConfiguration", "PutBucketVersioning",
        "PutBucketPolicy", "GetBucketPolicy", "DeleteBucketPolicy", "GetBucketLocation")},
    "s3:ListAllMyBuckets": {"*": []},
    # -- IAM --------------------------------------------------------------------------------------------
    "iam:CreateRole": {"role": REQ + ["iam:PermissionsBoundary"]},
    "iam:PutRolePolicy": {"role": ["iam:PermissionsBoundary", "iam:ResourceTag/${TagKey}"]},
    "iam:TagRole": {"role": REQ},
    "iam:PassRole": {"role": ["iam:PassedToService", "iam:AssociatedResourceArn"]},
    **{f"iam:{a}": {"role": ["iam:ResourceTag/${TagKey}"]} for a in (
        "GetRole", "GetRolePolicy", "DeleteRole", "DeleteRolePolicy", "DetachRolePolicy", "ListRolePolicies",
        "ListAttachedRolePolicies", "ListInstanceProfilesForRole")},
    "iam:CreateInstanceProfile": {"instance-profile": REQ},
    "iam:TagInstanceProfile": {"instance-profile": REQ},
    **{f"iam:{a}": {"instance-profile": ["iam:ResourceTag/${TagKey}"]} for a in (
        "GetInstanceProfile", "DeleteInstanceProfile", "AddRoleToInstanceProfile",
        "RemoveRoleFromInstanceProfile")},
    "iam:GetPolicy": {"policy": []},
    "iam:ListRoles": {"*": []},
    "iam:ListInstanceProfiles": {"*": []},
    "iam:CreateServiceLinkedRole": {"role": ["iam:AWSServiceName"]},
    # -- SSM ----------------------------------------------------------------------------------------------
    "ssm:PutParameter": {"parameter": REQ},
    "ssm:AddTagsToResource": {"parameter": REQ},
    **{f"ssm:{a}": {"parameter": ["aws:ResourceTag/${TagKey}"]} for a in (
        "GetParameter", "DeleteParameter", "ListTagsForResource")},
    "ssm:DescribeParameters": {"*": []},
    # -- ElastiCache ----------------------------------------------------------------------------------------
    "elasticache:CreateReplicationGroup": {"replicationgroup": REQ, "subnetgroup": [], "parametergroup": []},
    "elasticache:AddTagsToResource": {"replicationgroup": REQ},
    "elasticache:DeleteReplicationGroup": {"replicationgroup": ["aws:ResourceTag/${TagKey}"]},
    "elasticache:DescribeReplicationGroups": {"replicationgroup": []},
    "elasticache:ListTagsForResource": {"replicationgroup": []},
    # -- the rest: no resource-level permissions -------------------------------------------------------------
    "tag:GetResources": {"*": []},
    "pricing:GetProducts": {"*": []},
    "servicequotas:GetServiceQuota": {"*": []},
}

# Calls that need no permission at all (GetCallerIdentity works "even when access is explicitly denied").
UNAUTHORISED_OK = {"sts:GetCallerIdentity"}


def key_allowed(action: str, resource_type: str, key: str) -> bool:
    """True when the table lists ``key`` (``aws:RequestTag/mcc:ledger`` matches ``aws:RequestTag/${TagKey}``)."""
    listed = ACTIONS[action][resource_type]
    if key in listed:
        return True
    prefix = key.split("/", 1)[0] + "/${TagKey}" if "/" in key else None
    return prefix in listed
