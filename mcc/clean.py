"""``mcc.clean``: both mcc's clean of a run and the original mCC's per-kind cleaning functions.

Called, the module is mcc's API function :func:`mcc.api.clean` — ``mcc.clean(run_id)``,
``mcc.clean(all=True)`` — (its class makes the module callable, so ``mcc.clean`` stays one name).
Its functions are the original's: ``delete_s3_bucket``, ``delete_custom_image``, ``delete_launch_template``,
``delete_security_group``, ``delete_cache_cluster``, ``delete_keypair``. Each one deletes through the ledger
(the engine's write-ahead delete; "not found" counts as deleted) either the named resource, which must be
one this ledger made, or — with no name — every one of that kind in the project folder's setup group,
together with what belongs to it (an image's snapshots, a template's empty role, a cache's AUTH token,
a key's private key file), then verifies with the kind's sweep that none of them is left.
"""
from __future__ import annotations

import sys
import types
from typing import Any

from mcc.driver.setup import Setup, boto3_region, setup_group
from mcc.errors import CleanIncomplete, MccError
from mcc.ledger import models

__all__ = ["delete_s3_bucket", "delete_custom_image", "delete_launch_template", "delete_security_group",
           "delete_cache_cluster", "delete_keypair", "empty_storage"]


def _setup(obj: Any, service: str, shape: str, argument: str) -> Setup:
    return setup_group(boto3_region(obj, service, shape, argument) if obj is not None else None)


def _with_parts(rows: list[models.Resource]) -> list[models.Resource]:
    """The rows and what was made for them under their key (snapshots, role and profile, AUTH token)."""
    out = list(rows)
    for row in rows:
        out += list(models.Resource.select().where(
            models.Resource.idempotency_key.startswith(f"{row.idempotency_key}/") & (models.Resource.state != "deleted")))
    return out


def _delete(setup: Setup, kind: str, physical_id: str | None) -> dict[str, Any]:
    rows = [setup.member(kind, physical_id)] if physical_id is not None else setup.members(kind)
    rows = _with_parts(rows)
    errors = setup.engine.destroy_all(rows, f"mcc.clean ({kind})")
    gone = {(r.kind, r.physical_id) for r in rows if r.physical_id}
    survivors = [{"kind": k, "physical_id": f.physical_id}
                 for k in sorted({k for k, _ in gone})
                 for f in setup.engine.provider(k).sweep(setup.ledger.uuid) if (k, f.physical_id) in gone]
    survivors += [{"kind": r.kind, "physical_id": r.physical_id, "error": msg} for r, msg in errors]
    report = {"deleted": [{"kind": r.kind, "physical_id": r.physical_id, "name": r.name} for r in rows],
              "survivors": survivors}
    if survivors:
        lines = "\n".join(f"  - {s['kind']} {s['physical_id']} {s.get('error', '')}" for s in survivors)
        raise CleanIncomplete(f"{len(survivors)} resource(s) survive the clean:\n{lines}\nCall it again, or run "
                              "`mcc clean --all`.", report)
    return report


def empty_storage(name: str, s3: Any = None) -> int:
    """Delete every object of the bucket (a bucket this ledger made); returns how many were deleted."""
    from mcc.storage import bucket_store

    store = bucket_store(_setup(s3, "s3", "resource", "s3"), name)
    keys = store.list("")
    for key in keys:
        store.delete(key)
    return len(keys)


def delete_s3_bucket(bucket_name: str | None = None, safe: bool = True, s3: Any = None) -> dict[str, Any]:
    """Delete the bucket (every one of the setup group when None). ``safe=True``, as in the original, refuses a
    bucket that still holds objects; ``safe=False`` deletes every object version first."""
    setup = _setup(s3, "s3", "resource", "s3")
    if safe:
        from mcc.storage import bucket_store

        names = [bucket_name] if bucket_name is not None else [r.physical_id for r in setup.members("bucket")]
        for name in names:
            if bucket_store(setup, name).list(""):
                raise MccError(f"delete_s3_bucket: bucket {name} is not empty; pass safe=False to delete it with "
                               "every object in it")
    return _delete(setup, "bucket", bucket_name)


def delete_keypair(keyname: str | None = None, ec2: Any = None) -> dict[str, Any]:
    """Delete the key pair and its private key file."""
    return _delete(_setup(ec2, "ec2", "resource", "ec2"), "key_pair", keyname)


def delete_launch_template(template_id: str | None = None, ec2: Any = None) -> dict[str, Any]:
    """Delete the launch template (and its permission-less role and instance profile)."""
    return _delete(_setup(ec2, "ec2", "resource", "ec2"), "launch_template", template_id)


def delete_custom_image(custom_image_id: str | None = None, ec2: Any = None) -> dict[str, Any]:
    """Deregister the image and delete its snapshots. With None: the images the setup group's launch
    templates name (images are keyed by content and shared by the ledger, not by one group)."""
    setup = _setup(ec2, "ec2", "resource", "ec2")
    if custom_image_id is not None:
        return _delete(setup, "image", custom_image_id)
    ids = sorted({r.spec.get("image_id") for r in setup.members("launch_template")} - {None})
    reports = [_delete(setup, "image", i) for i in ids if _live("image", i)]
    return {"deleted": [d for r in reports for d in r["deleted"]], "survivors": []}


def _live(kind: str, physical_id: str) -> bool:
    return models.Resource.select().where((models.Resource.kind == kind) & (models.Resource.physical_id == physical_id)
                                          & models.Resource.state.in_(["active", "adopted"])).exists()


def delete_security_group(security_group_id: str | None = None, ec2: Any = None) -> dict[str, Any]:
    """Delete the security group (waits while instances or caches still use it)."""
    return _delete(_setup(ec2, "ec2", "resource", "ec2"), "security_group", security_group_id)


def delete_cache_cluster(name: str | None = None, cache_client: Any = None) -> dict[str, Any]:
    """Delete the Redis server (and its AUTH token parameter); waits until it is gone."""
    return _delete(_setup(cache_client, "elasticache", "client", "cache_client"), "cache", name)


class _CallableModule(types.ModuleType):
    """``mcc.clean(...)`` is :func:`mcc.api.clean`; ``mcc.clean.delete_*`` are the per-kind functions."""

    def __call__(self, run_id: str | None = None, **kwargs: Any) -> dict[str, Any]:
        from mcc.api import clean

        return clean(run_id, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
