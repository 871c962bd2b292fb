"""The base image: the current Amazon Linux 2023 AMI, read from AWS's public SSM parameter.

Never a hard-coded AMI id: ids differ per region and go stale. The parameter read is
``/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-<arch>`` (moto 5 serves it in us-east-1).
"""
from __future__ import annotations

from typing import Any

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



def root_volume(ctx: AwsContext, image_id: str) -> dict[str, Any]:
    """``{"root_device": name, "root_size": GiB}`` of ``image_id``'s root volume: what a BlockDeviceMapping
    must name (and may size) to encrypt it."""
    try:
        images = call(ctx.client("ec2").describe_images, ImageIds=[image_id])["Images"]
    except AwsNotFound:
        images = []
    if not images or not images[0].get("RootDeviceName"):
        raise ProviderError(f"image {image_id} does not exist in {ctx.region} or names no root device")
    device = images[0]["RootDeviceName"]
    sizes = [m["Ebs"].get("VolumeSize") for m in images[0].get("BlockDeviceMappings", [])
             if m.get("DeviceName") == device and m.get("Ebs")]
    return {"root_device": device, "root_size": sizes[0] if sizes else None}


def encrypted_root(device_name: str, size_gib: int | None = None, kms_key_id: str | None = None) -> list[dict]:
    """BlockDeviceMappings that encrypt the root volume: with ``kms_key_id`` (a customer managed key), else
    with the account's default EBS key, the AWS-managed ``aws/ebs``. Its snapshots (a baked image's) are
    encrypted with the same key. ``size_gib`` is the image's own root size (stated, so nothing is guessed)."""
    ebs: dict[str, Any] = {"Encrypted": True, "DeleteOnTermination": True}
    if size_gib:
        ebs["VolumeSize"] = int(size_gib)
    if kms_key_id:
        ebs["KmsKeyId"] = kms_key_id
    return [{"DeviceName": device_name, "Ebs": ebs}]
