"""The custom image (``custom_image = true``): an AMI with mcc and the user's requirements installed, so
instances start computing at once instead of installing for minutes.

Shared by every run of the ledger in a region, and keyed by what it holds (the mcc wheel's contents and
the requirements): a changed mcc or requirement list bakes a new image, an unchanged one reuses it.
Every step is a ledger row made by the engine under the write-ahead rule, so an interrupted bake resumes:

  builder role + inline policy + instance profile (read the wheel under ``images/``, tag itself failed)
  → the wheel in the bucket → the builder ``instance`` (shutdown = stop; user data installs, powers off)
  → the ``image`` (waits for the stopped builder, create_image, available) → its ``snapshot`` rows
  → the builder terminated.
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

from mcc.driver.engine import Engine
from mcc.errors import MccError
from mcc.ledger import models
from mcc.providers.aws.iam import role_params
from mcc.providers.aws.image import TAG_READY
from mcc.providers.aws.policy import builder_policy
from mcc.remote.bootstrap import render_builder_user_data
from mcc.work.stores import S3Store

IMAGES = "images/"         # bucket prefix of the wheels builders install (all the builder role may read)
BAKE_TIMEOUT = 3600.0      # seconds a builder may take to install before the bake counts as failed
LIVE = ("active", "adopted")


def image_digest(wheel: Path, requirements: list[str]) -> str:
    """A short hash of what the image holds: the wheel's files (not zip timestamps, not the README that
    METADATA embeds, not RECORD, which only hashes the rest) + the requirements."""
    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith(".dist-info/RECORD"):
                continue
            data = zf.read(name)
            if name.endswith(".dist-info/METADATA"):
                data = data.split(b"\n\n", 1)[0]  # the headers: name, version, dependencies
            h.update(name.encode() + b"\0" + data + b"\0")
    h.update("\n".join(requirements).encode())
    return h.hexdigest()[:16]


def builder_script(bucket: str, wheel: Path, requirements: list[str], region: str) -> tuple[str, str, str]:
    """(digest, wheel key, user data) of the builder that bakes this wheel and these requirements: the user
    data installs mcc from ``s3://bucket/<wheel key>`` with the builder's instance profile (no credentials)."""
    digest = image_digest(wheel, requirements)
    wheel_key = f"{IMAGES}{digest}/{wheel.name}"
    return digest, wheel_key, render_builder_user_data(bucket=bucket, wheel_key=wheel_key, requirements=requirements,
                                                        region=region, ready_tag=TAG_READY)


def baked_image(region: str, digest: str) -> models.Resource | None:
    """The live image row holding ``digest`` in ``region``, if one was baked already."""
    return (models.Resource.select()
            .where((models.Resource.kind == "image") & models.Resource.run.is_null()
                   & models.Resource.idempotency_key.startswith(f"aws:{region}:image:{digest}")
                   & models.Resource.state.in_(LIVE))
            .order_by(models.Resource.id.desc()).first())


def ensure_image(engine: Engine, *, store: S3Store, wheel: Path, requirements: list[str], region: str, short: str,
                 account: str, security_group_id: str, instance_type: str, base_image_id: str,
                 root: dict[str, Any], kms_key_id: str | None = None,
                 network: dict[str, Any] | None = None, boundary: str | None = None) -> models.Resource:
    """The baked image for this wheel and these requirements (baked now if needed); idempotent, resumable.

    ``store`` is the ledger's bucket in ``region`` (its root): the wheel goes under ``images/<digest>/``. The
    builder's root volume (``root``: images.root_volume of the base image) is encrypted (``kms_key_id``, else aws/ebs), so
    the image's snapshots are too. ``network``: the builder's ``subnet_id`` and ``public_ip`` (by default EC2's
    default subnet, with a public address: the builder installs from PyPI). ``boundary``: the permissions
    boundary ARN the builder's role carries.
    """
    digest, wheel_key, user_data = builder_script(store.bucket, wheel, requirements, region)
    image = baked_image(region, digest)
    builder_base = f"aws:{region}:image-builder:{digest}"
    if image is None:
        if not store.exists(wheel_key):
            store.put_file(wheel_key, wheel)
        profile = _builder_identity(engine, store.bucket, region, short, account, boundary)
        builder = engine.current(None, "instance", builder_base, {
            "image_id": base_image_id, "security_group_id": security_group_id, "instance_type": instance_type,
            "instance_profile_arn": profile.attrs.get("arn"), "shutdown_behavior": "stop", "count": 1,
            **root, "kms_key_id": kms_key_id,
            "user_data": user_data, **(network or {}),
        }, name="image-builder")
        suffix = builder.idempotency_key[len(builder_base):]  # "" or "-2", "-3"…: one image row per builder
        try:
            image = engine.ensure(None, "image", f"mcc-{short}-{digest}{suffix}", f"aws:{region}:image:{digest}{suffix}",
                                  {"name": f"mcc-{short}-{digest}{suffix}", "builder_id": builder.physical_id,
                                   "ready_timeout": BAKE_TIMEOUT})
        except MccError:
            engine.destroy(builder, "the image bake failed")  # a retry boots a fresh builder
            raise
    for snapshot_id in image.attrs.get("snapshot_ids") or []:
        engine.ensure(None, "snapshot", f"{image.name}-snapshot", f"{image.idempotency_key}/snapshot/{snapshot_id}",
                      {"snapshot_id": snapshot_id, "image_id": image.physical_id})
    builders = models.Resource.select().where(
        (models.Resource.kind == "instance") & models.Resource.run.is_null()
        & models.Resource.idempotency_key.startswith(builder_base) & (models.Resource.state != "deleted"))
    for builder_row in builders:
        engine.destroy(builder_row, "image baked")
    return image


def _builder_identity(engine: Engine, bucket: str, region: str, short: str, account: str,
                      boundary: str | None) -> models.Resource:
    """The builder's role, its inline policy and instance profile (shared by the ledger's bakes in a region)."""
    name = f"mcc-{short}-builder-{region}"
    policy = builder_policy(bucket, IMAGES, engine.ledger_uuid, region, account, TAG_READY)
    engine.ensure(None, "role", name, f"aws:{region}:builder/role", role_params(name, boundary))
    engine.ensure(None, "role_policy", f"{name}/image-builder", f"aws:{region}:builder/role_policy",
                  {"role_name": name, "policy_name": "image-builder", "policy": policy})
    return engine.ensure(None, "instance_profile", name, f"aws:{region}:builder/instance_profile",
                         {"name": name, "role_name": name})
