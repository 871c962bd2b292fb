"""AWS errors classified once, by error code, into typed exceptions; one retry helper for transients."""
from __future__ import annotations

import random
import time
from typing import Callable, TypeVar

from botocore.exceptions import (
    ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError, PartialCredentialsError,
    ReadTimeoutError, ConnectionClosedError, TokenRetrievalError,
)

from mcc.errors import MccError, ProviderError

T = TypeVar("T")

TRANSIENT = {
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "ServiceUnavailable", "InternalError", "InternalFailure", "RequestTimeout", "SlowDown",
    "EC2ThrottledException", "PriorRequestNotComplete",
}
CAPACITY = {
    "InsufficientInstanceCapacity", "InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded",
    "SpotMaxPriceTooLow", "InsufficientCacheClusterCapacity", "InsufficientFreeAddressesInSubnet",
}
NOT_FOUND = {
    "NoSuchBucket", "NoSuchKey", "404", "NotFound", "NoSuchEntity", "InvalidGroup.NotFound",
    "InvalidKeyPair.NotFound", "InvalidLaunchTemplateId.NotFound", "InvalidLaunchTemplateName.NotFoundException",
    "InvalidAMIID.NotFound", "InvalidAMIID.Unavailable", "InvalidSnapshot.NotFound", "InvalidInstanceID.NotFound",
    "CacheClusterNotFound", "CacheClusterNotFoundFault", "ReplicationGroupNotFoundFault", "ParameterNotFound",
    "InvalidLaunchTemplateId.Malformed", "NoSuchUpload",
}
CREDENTIALS = {
    "AuthFailure", "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException",
    "SignatureDoesNotMatch", "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "InvalidAccessKeyId",
}
DEPENDENCY = {"DependencyViolation", "DeleteConflict", "InvalidCacheClusterState", "ResourceInUse"}


class AwsTransient(ProviderError):
    """Throttling or a passing service fault: retried with backoff."""


class AwsCapacity(ProviderError):
    """No capacity or quota for what was asked: run with fewer, or try another type."""


class AwsNotFound(ProviderError):
    """The resource does not exist (for a delete: it counts as deleted)."""


class AwsCredentials(MccError):
    """Missing, expired or insufficient credentials."""

    exit_code = 4


class AwsDependency(ProviderError):
    """Another resource still uses this one (DependencyViolation)."""


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "")
    return None


def _profile_not_yet_visible(code: str, message: str) -> bool:
    """IAM is eventually consistent: for some seconds after an instance profile is created, RunInstances
    rejects it as an invalid ``iamInstanceProfile`` parameter. That passes; it is retried like throttling."""
    return code == "InvalidParameterValue" and "iamInstanceProfile" in message


def classify(exc: BaseException) -> BaseException:
    """The typed exception for a botocore error (or ``exc`` itself when it is not one we know)."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, TokenRetrievalError)):
        return AwsCredentials(
            f"no usable AWS credentials ({exc}). Configure them the usual way: `aws configure`, "
            "`aws sso login --profile P` then --profile P, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."
        )
    if isinstance(exc, NoRegionError):
        return AwsCredentials("no AWS region: pass --region, set AWS_REGION, or set `region` under [aws] in mcc.toml.")
    if isinstance(exc, (EndpointConnectionError, ReadTimeoutError, ConnectionClosedError)):
        return AwsTransient(str(exc))
    code = error_code(exc)
    if code is None:
        return exc
    message = f"{code}: {exc.response.get('Error', {}).get('Message', '')}"  # type: ignore[union-attr]
    if code in TRANSIENT or _profile_not_yet_visible(code, message):
        return AwsTransient(message)
    if code in CAPACITY:
        return AwsCapacity(message)
    if code in NOT_FOUND or code.endswith(".NotFound") or code.endswith("NotFoundFault") or code.endswith("NotFoundException"):
        return AwsNotFound(message)
    if code in CREDENTIALS:
        return AwsCredentials(f"AWS refused the call ({message}). Check the credentials and the IAM permissions "
                              "listed in README's AWS setup section.")
    if code in DEPENDENCY:
        return AwsDependency(message)
    return ProviderError(message)


def call(fn: Callable[..., T], *args: object, deadline: float = 120.0, retry_dependency: bool = False,
         **kwargs: object) -> T:
    """Call ``fn``; retry transient errors (and DependencyViolation when asked) with jittered backoff until
    ``deadline`` seconds; raise every error as its typed exception."""
    start, delay = time.monotonic(), 0.2
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - classified just below
            typed = classify(exc)
            retry = isinstance(typed, AwsTransient) or (retry_dependency and isinstance(typed, AwsDependency))
            if not retry or time.monotonic() - start + delay > deadline:
                if typed is exc:
                    raise
                raise typed from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 10.0)
