"""A wheel of the mcc that is running here, for instances to install (the launcher uploads it).

From a source checkout (editable install) it is built with pip; from an installed wheel it is
re-packed from the installed files listed in the distribution's RECORD.
"""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from mcc.errors import MccError

DIST = "materialsCloudCompute"


def build_wheel(dest: Path) -> Path:
    """Write the wheel into ``dest`` and return its path (cached by version + source state)."""
    dest.mkdir(parents=True, exist_ok=True)
    dist = metadata.distribution(DIST)
    source = _source_dir(dist)
    if source is not None:
        return _pip_wheel(source, dest)
    return _repack(dist, dest)


def _source_dir(dist: metadata.Distribution) -> Path | None:
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    info = json.loads(text)
    if not info.get("dir_info", {}).get("editable"):
        return None
    url = info.get("url", "")
    return Path(url[len("file://"):]) if url.startswith("file://") else None


def _pip_wheel(source: Path, dest: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="mcc-wheel-") as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp, str(source)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise MccError(f"could not build the mcc wheel for the instances from {source}:\n{proc.stderr[-2000:]}")
        built = next(Path(tmp).glob("*.whl"))
        target = dest / built.name
        built.replace(target)
    return target


def _repack(dist: metadata.Distribution, dest: Path) -> Path:
    name = dist.metadata["Name"].replace("-", "_").lower()
    version = dist.version
    target = dest / f"{name}-{version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in dist.files or []:
            rel = str(file)
            if rel.endswith(".pyc") or rel.startswith("..") or rel.endswith("RECORD") or "__pycache__" in rel:
                continue
            data = Path(file.locate()).read_bytes()
            zf.writestr(rel, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{rel},sha256={digest},{len(data)}")
        record_name = f"{name}-{version}.dist-info/RECORD"
        records.append(f"{record_name},,")
        zf.writestr(record_name, "\n".join(records) + "\n")
    return target
