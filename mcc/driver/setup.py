"""The setup group behind the original mCC's setup calls (mcc.templates, mcc.storage, mcc.launch, mcc.clean).

One group per project folder, itself a ledger entity (kind ``setup_group``, mcc/providers/local/setup_group.py).
Every resource a setup call makes is an ordinary ledger row created by the engine (write-ahead, tags inside the
create call, find-before-create), keyed ``setup/<group id>/<kind>/<digest of the call's arguments>``: the same
call with the same arguments in the same group finds its row and returns the existing resource. ``copy=N``
(N > 1) in a call's arguments changes the digest, which is how a second one is asked for deliberately.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcc.driver.context import Context
from mcc.errors import MccError
from mcc.ledger import Ledger, current_ledger, models, open_ledger

LIVE = ("active", "adopted")


@dataclass
class Setup:
    """The ledger, the AWS context of one region and the project folder's setup group row."""

    ledger: Ledger
    aws: Context
    group: models.Resource
    project_dir: Path
    notes: dict[str, Any] = field(default_factory=dict)  # per-process facts (the last user data rendered)

    @property
    def engine(self) -> Any:
        return self.aws.engine

    @property
    def backend(self) -> Any:
        return self.aws.backend

    @property
    def region(self) -> str:
        return self.aws.backend.region

    @property
    def short(self) -> str:
        return self.ledger.uuid.replace("-", "")[:12]

    def key(self, kind: str, args: dict[str, Any]) -> str:
        digest = hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"setup/{self.group.id}/{kind}/{digest}"

    def ensure(self, kind: str, name: str, key: str, params: dict[str, Any]) -> models.Resource:
        """The group's resource under ``key`` (created now, or the existing one)."""
        return self.engine.ensure(None, kind, name, key, params)

    def member(self, kind: str, physical_id: str) -> models.Resource:
        """The live row of ``kind`` with this id made in this ledger; a clear error naming the fix otherwise."""
        row = (models.Resource.select()
               .where((models.Resource.kind == kind) & (models.Resource.physical_id == physical_id)
                      & models.Resource.state.in_(LIVE))
               .order_by(models.Resource.id.desc()).first())
        if row is None:
            raise MccError(f"{kind.replace('_', ' ')} {physical_id!r} was not made by mcc in the ledger at "
                           f"{self.ledger.path}: pass what the matching mcc.templates / mcc.storage call returned.")
        return row

    def members(self, kind: str) -> list[models.Resource]:
        """The group's rows of ``kind`` that are not deleted, oldest first."""
        return list(models.Resource.select()
                    .where((models.Resource.kind == kind) & (models.Resource.state != "deleted")
                           & models.Resource.idempotency_key.startswith(f"setup/{self.group.id}/"))
                    .order_by(models.Resource.id))


_OPEN: dict[tuple[str, str, str | None], Setup] = {}


def setup_group(region: str | None = None, project_dir: str | Path | None = None) -> Setup:
    """The setup group of ``project_dir`` (default: the current folder) in ``region``, made on first use."""
    project = Path(project_dir or os.getcwd()).resolve()
    ledger = current_ledger() or open_ledger()
    cache_key = (str(ledger.path), str(project), region)
    setup = _OPEN.get(cache_key)
    if setup is not None:
        row = models.Resource.get_or_none(models.Resource.id == setup.group.id)
        if row is not None and row.state in LIVE:
            return setup
    local = Context.open(ledger, "local")
    group = _group_row(local, project)
    aws = Context.open(ledger, "aws", {"region": region} if region else None)
    aws.backend.preflight()  # missing credentials fail here, before anything is created
    setup = Setup(ledger, aws, group, project)
    _OPEN[cache_key] = setup
    return setup


def _group_row(local: Context, project: Path) -> models.Resource:
    base = "setup:" + hashlib.sha256(str(project).encode()).hexdigest()[:16]
    params = {"project_dir": str(project)}
    last = (models.Resource.select().where(models.Resource.idempotency_key.startswith(base))
            .order_by(models.Resource.id.desc()).first())
    if last is not None and last.state not in ("deleting", "deleted"):
        return local.engine.ensure(None, "setup_group", last.name, last.idempotency_key, params)
    return local.engine.current(None, "setup_group", base, params, name=f"setup {project.name}")


def forget() -> None:
    """Drop the per-process cache of open setup groups (a test opening another ledger)."""
    _OPEN.clear()


def boto3_region(obj: Any, service: str, shape: str, argument: str) -> str:
    """The region of ``obj``, checked to be ``boto3.<shape>(service)`` (shape "resource" or "client")."""
    meta = getattr(obj, "meta", None)
    client = getattr(meta, "client", None) if shape == "resource" else obj
    model = getattr(getattr(client, "meta", None), "service_model", None)
    if model is None or getattr(model, "service_name", None) != service:
        raise MccError(f"`{argument}` must be boto3.{shape}({service!r}), got {_boto3_kind(obj)}. "
                       f"Pass {argument} = boto3.{shape}({service!r}) as in the original mCC README.")
    return client.meta.region_name


def _boto3_kind(obj: Any) -> str:
    meta = getattr(obj, "meta", None)
    if getattr(meta, "service_model", None) is not None:
        return f"a {meta.service_model.service_name} client"
    if getattr(meta, "client", None) is not None:
        return f"a {getattr(meta, 'service_name', '?')} resource"
    return type(obj).__name__
