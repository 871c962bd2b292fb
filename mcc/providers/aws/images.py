"""The base image: the current Amazon Linux 2023 AMI, read from AWS's public SSM parameter.

Never a hard-coded AMI id: ids differ per region and go stale. The parameter read is
``/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-<arch>`` (moto 5 serves it in us-east-1).
"""
from __future__ import annotations

from mcc.errors import ProviderError
from mcc.providers.aws.clients import AwsContext
from mcc.providers.aws.errors import AwsNotFound, call

PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
ARCHES = ("x86_64", "arm64")


def base_image_id(ctx: AwsContext, arch: str = "x86_64") -> str:
    """The AMI id of the latest Amazon Linux 2023 for ``arch`` ("x86_64" or "arm64") in ``ctx.region``."""
    if arch not in ARCHES:
        raise ProviderError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHES)}")
    name = PARAMETER.format(arch=arch)
    try:
        return call(ctx.client("ssm").get_parameter, Name=name)["Parameter"]["Value"]
    except AwsNotFound:
        raise ProviderError(f"the public SSM parameter {name} does not exist in {ctx.region}; "
                            "set `image_id` under [aws] in mcc.toml") from None
