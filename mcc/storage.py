"""The original mCC's ``mcc.storage``: the S3 bucket of a calculation, and files in and out of it.

``create_s3_bucket`` is a ledger resource of the project folder's setup group (mcc/driver/setup.py): private,
encrypted, tagged, and emptied of every object version when ``mcc clean`` deletes it. ``upload`` /
``download`` move files through mcc's S3 store; they refuse buckets this ledger did not make.
(mcc's own bucket stores live in mcc/work/stores.py.)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mcc.driver.setup import Setup, boto3_region, setup_group
from mcc.errors import MccError, ProviderError

__all__ = ["create_s3_bucket", "upload", "download", "delete_s3_bucket", "bucket_store"]

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def create_s3_bucket(s3: Any, name: str | None = None, *, copy: int = 1) -> str:
    """A private, encrypted bucket; returns its name (default: derived from the ledger and the setup group).

    S3 names are global: a ``name`` another AWS account holds is refused with a clear error. A ``name`` must start
    with ``mcc-``: the least-privilege policy README documents grants S3 on those buckets only.
    """
    setup = setup_group(boto3_region(s3, "s3", "resource", "s3"))
    if name is not None and (not isinstance(name, str) or not BUCKET_NAME.match(name) or ".." in name):
        raise MccError(f"create_s3_bucket: {name!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, "
                       "dots and hyphens; starts and ends with a letter or digit)")
    if name is not None and not name.startswith("mcc-"):
        raise MccError(f"create_s3_bucket: {name!r} does not start with 'mcc-'. mcc's documented IAM policy (README, "
                       "AWS setup) grants S3 only on buckets named mcc-*, so AWS would refuse it; name it "
                       f"'mcc-{name}', or leave `name` out for one derived from your ledger.")
    key = setup.key("bucket", {"name": name, "copy": copy})
    bucket = name or f"mcc-{setup.short}-{key.rsplit('/', 1)[-1]}"
    try:
        row = setup.ensure("bucket", bucket, key, {"name": bucket})
    except ProviderError as exc:
        from mcc.providers.aws.errors import error_code

        if error_code(exc.__cause__) == "BucketAlreadyExists":
            raise MccError(f"create_s3_bucket: the bucket name {bucket!r} is taken by another AWS account (S3 names "
                           "are global). Choose another name, or leave `name` out for one derived from your "
                           "ledger.") from None
        raise
    return row.physical_id


def bucket_store(setup: Setup, bucket: str) -> Any:
    """mcc's store of ``bucket`` (a live bucket row of this ledger), at its root."""
    from mcc.work.stores import S3Store

    if not isinstance(bucket, str):
        raise MccError(f"the bucket must be given by name (what create_s3_bucket returned), got {type(bucket).__name__}")
    setup.member("bucket", bucket)
    return S3Store(bucket, client=setup.backend.ctx.client("s3"))


def upload(bucket: str, file: str | Path, key: str | None = None) -> str:
    """Upload ``file`` to ``bucket`` under ``key`` (default: its path as given, as the original did); returns the key."""
    path = Path(file)
    if not path.is_file():
        raise MccError(f"upload: {path} is not a file")
    key = key or path.as_posix().lstrip("/")
    bucket_store(setup_group(), bucket).put_file(key, path)
    return key


def download(bucket: str, file: str, key: str | None = None, output: str | Path | None = None) -> Path:
    """Download ``key`` (default: the first key ending with ``file``) from ``bucket`` to ``output`` (default
    ``file``); returns the local path."""
    store = bucket_store(setup_group(), bucket)
    if key is None:
        key = next((k for k in store.list("") if k.endswith(file)), None)
        if key is None:
            raise MccError(f"download: no object in bucket {bucket} ends with {file!r}")
    dest = Path(output or file)
    if not store.get_file(key, dest):
        raise MccError(f"download: bucket {bucket} has no object {key!r}")
    return dest


def delete_s3_bucket(bucket_name: str, safe: bool = True, s3: Any = None) -> dict[str, Any]:
    """Delete the bucket and every object version in it (see mcc.clean.delete_s3_bucket)."""
    from mcc.clean import delete_s3_bucket as clean_bucket

    return clean_bucket(bucket_name, safe=safe, s3=s3)
