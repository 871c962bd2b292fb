"""The original mCC's ``mcc.config``: the AWS settings of this machine (the standard boto3 chain).

mcc itself never needs these values: every call uses the credential chain directly (profiles, SSO,
environment), and nothing mcc writes (user data, S3, logs, the ledger) ever holds a credential.
``get_aws_settings`` exists so the original's ``build_template_userdata(*get_aws_settings())`` runs.
(mcc's own project settings, mcc.toml, live in mcc/project/settings.py.)
"""
from __future__ import annotations

__all__ = ["get_aws_settings", "get_aws_credentials"]


def get_aws_settings(profile: str | None = None) -> tuple[str, str, str]:
    """``(access_key, secret_key, region)`` of the standard chain; a clear MccError when either is missing."""
    import boto3

    from mcc.errors import MccError

    session = boto3.Session(profile_name=profile)
    credentials = session.get_credentials()
    if credentials is None:
        raise MccError("no AWS credentials found: run `aws configure` (or `aws sso login`), or set AWS_PROFILE; "
                       "see https://docs.aws.amazon.com/cli/latest/userguide/cli-chap-configure.html")
    if not session.region_name:
        raise MccError("no AWS region: set AWS_REGION, or a region in your AWS profile (`aws configure`)")
    frozen = credentials.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, session.region_name


get_aws_credentials = get_aws_settings  # the name the original's config.py used
