"""The AWS provider classes by kind: what the engine's sweep and ``mcc clean`` walk.

Each provider's ``sweep`` lists this ledger's resources of its kind with per-service describes (tag filters
where the service has them, the /mcc/ path for IAM). The Resource Groups Tagging API is not used: it misses
key pairs, launch templates, IAM roles and instance profiles, and lists what AWS keeps for a while after
deletion (terminated instances, closed spot requests); the tests cross-check clean with it
(tests/aws/harness/tagging.py), mcc itself needs no ``tag:GetResources``.

Each ``Found`` carries the creation time its describe tells (``created_at``: LaunchTime, CreateTime,
CreationDate, StartTime, CreateDate, CreationTimestamp, ReplicationGroupCreateTime; an SSM parameter's LastModifiedDate, which
is no earlier than its creation; none for security groups), so the engine refuses what predates the ledger.
"""
from __future__ import annotations

from mcc.providers.aws.bucket import BucketProvider
from mcc.providers.aws.cache import CacheProvider
from mcc.providers.aws.iam import InstanceProfileProvider, RolePolicyProvider, RoleProvider
from mcc.providers.aws.image import ImageProvider, SnapshotProvider
from mcc.providers.aws.instance import InstanceProvider
from mcc.providers.aws.key_pair import KeyPairProvider
from mcc.providers.aws.launch_template import LaunchTemplateProvider
from mcc.providers.aws.parameter import ParameterProvider
from mcc.providers.aws.security_group import SecurityGroupProvider
from mcc.providers.aws.vpc_endpoint import VpcEndpointProvider

KIND_CLASSES: dict[str, type] = {cls.kind: cls for cls in (
    InstanceProvider, CacheProvider, LaunchTemplateProvider, ImageProvider, SnapshotProvider, VpcEndpointProvider,
    SecurityGroupProvider, KeyPairProvider, InstanceProfileProvider, RolePolicyProvider, RoleProvider,
    ParameterProvider, BucketProvider,
)}
