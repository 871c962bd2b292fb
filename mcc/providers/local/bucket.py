"""The local "bucket": a directory under $MCC_HOME/buckets, tagged by a .mcc-tags.json file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mcc.providers.base import TAG_LEDGER, TAG_RUN, Found, ResourceSpec

TAGS_FILE = ".mcc-tags.json"


class DirectoryProvider:
    """kind ``directory``: physical id is the absolute path."""

    kind = "directory"

    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "buckets"

    def path_for(self, spec: ResourceSpec) -> Path:
        return self.root / spec.name

    def create(self, spec: ResourceSpec) -> Found:
        path = self.path_for(spec)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        tags_file = path / TAGS_FILE
        tmp = tags_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(spec.tags, sort_keys=True))
        tmp.replace(tags_file)
        return Found(str(path), {"path": str(path)}, dict(spec.tags))

    def find(self, spec: ResourceSpec) -> Found | None:
        path = self.path_for(spec)
        tags = _read_tags(path)
        if tags is None or tags.get(TAG_LEDGER) != spec.tags.get(TAG_LEDGER):
            return None
        return Found(str(path), {"path": str(path)}, tags)

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        tags = _read_tags(Path(physical_id))
        return None if tags is None else Found(physical_id, {"path": physical_id}, tags)

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        path = Path(physical_id)
        if path.exists():
            shutil.rmtree(path)

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        found = []
        if not self.root.exists():
            return found
        for path in sorted(self.root.iterdir()):
            tags = _read_tags(path)
            if tags and tags.get(TAG_LEDGER) == ledger_uuid and (run_id is None or tags.get(TAG_RUN) == run_id):
                found.append(Found(str(path), {"path": str(path)}, tags))
        return found


def _read_tags(path: Path) -> dict[str, str] | None:
    try:
        return json.loads((path / TAGS_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
