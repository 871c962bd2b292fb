"""kind ``setup_group``: the marker that binds a project folder to the ledger's setup group.

The original mCC's setup calls (``mcc.templates.*``, ``mcc.storage.create_s3_bucket``) are made once per
project folder; mcc records what they create under one setup group per folder. Its physical form is
``<project>/.mcc/setup-group.json`` (mode 0600), naming the ledger uuid and the group's key, so a folder
already bound to another ledger is refused instead of silently getting a second set of resources.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mcc.errors import ProviderError
from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, Found, ResourceSpec

MARKER = Path(".mcc") / "setup-group.json"


def marker_path(project_dir: str | Path) -> Path:
    return Path(project_dir) / MARKER


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class SetupGroupProvider:
    """kind ``setup_group``: physical id is the marker's absolute path."""

    kind = "setup_group"

    def create(self, spec: ResourceSpec) -> Found:
        path = marker_path(spec.params["project_dir"])
        current = _read(path)
        if current is not None and current.get("ledger") != spec.tags[TAG_LEDGER]:
            raise ProviderError(
                f"{path} binds this project folder to another mcc ledger ({current.get('ledger')}); use that "
                f"ledger (MCC_HOME), or delete {path} after cleaning what that ledger created.")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        doc = {"ledger": spec.tags[TAG_LEDGER], "group": spec.tags[TAG_ENTITY],
               "project_dir": str(spec.params["project_dir"])}
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, sort_keys=True)
        os.replace(tmp, path)
        return Found(str(path), {"path": str(path), "project_dir": doc["project_dir"]}, dict(spec.tags))

    def find(self, spec: ResourceSpec) -> Found | None:
        path = marker_path(spec.params["project_dir"])
        doc = _read(path)
        if doc is None or doc.get("ledger") != spec.tags[TAG_LEDGER] or doc.get("group") != spec.idempotency_key:
            return None
        return Found(str(path), {"path": str(path), "project_dir": doc["project_dir"]}, dict(spec.tags))

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        doc = _read(Path(physical_id))
        return None if doc is None else Found(physical_id, {**attrs, "path": physical_id},
                                              {TAG_LEDGER: doc.get("ledger", ""), TAG_ENTITY: doc.get("group", "")})

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        Path(physical_id).unlink(missing_ok=True)

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        return []  # markers live in project folders the ledger names; nothing to list beyond its rows
