"""A wheel of the mcc that is running here, for instances to install (the launcher uploads it).

From a source checkout (editable install) it is built with pip — seconds of CPU, so it is cached in the
user's cache directory by a hash of the source files; from an installed wheel it is
re-packed from the installed files listed in the distribution's RECORD.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from mcc.work import atomic
from mcc.errors import MccError
from mcc.providers.local.processes import run_bounded

DIST = "materialsCloudCompute"
PIP_TIMEOUT = 600.0  # seconds for `pip wheel` of mcc itself (a few seconds when pip is healthy)


def cache_dir() -> Path:
    """Where built wheels are kept for every ledger of this user: ``$XDG_CACHE_HOME/mcc/wheels``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mcc" / "wheels"


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


SOURCE_DIRS = ("mcc", "remote", "ledger_schema")
SOURCE_FILES = ("pyproject.toml", "README.md", "setup.cfg", "setup.py", "MANIFEST.in")


def source_digest(source: Path) -> str:
    """A hash of every file a wheel of ``source`` can contain (caches are stale exactly when it changes)."""
    h = hashlib.sha256()
    files = [source / name for name in SOURCE_FILES if (source / name).is_file()]
    for top in SOURCE_DIRS:
        files += [f for f in (source / top).rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    for path in sorted(files):
        h.update(path.relative_to(source).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _pip_wheel(source: Path, dest: Path) -> Path:
    """``pip wheel`` of the checkout (seconds of CPU), cached under ``dest/src-<digest>/`` by its source."""
    cache = dest / f"src-{source_digest(source)}"
    built = sorted(cache.glob("*.whl"))
    if built:
        return built[0]
    cache.mkdir(parents=True, exist_ok=True)
    # One build at a time: pip builds in the source tree (build/, *.egg-info), so two at once break each
    # other; whoever waited finds the wheel the first one built.
    with open(dest / ".build.lock", "w") as lock:
        _lock(lock)
        built = sorted(cache.glob("*.whl"))
        return built[0] if built else _pip_build(source, cache)


def _lock(handle: Any) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: builds are not serialised
        return
    fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes


def _pip_build(source: Path, dest: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="mcc-wheel-") as tmp:
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp, str(source)]
        try:
            proc = run_bounded(argv, capture_output=True, text=True, timeout=PIP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise MccError(f"building the mcc wheel for the instances from {source} took more than "
                           f"{PIP_TIMEOUT:.0f} s (`{' '.join(argv)}`); check that pip can reach its index") from exc
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
    # the cache is shared: readers never see half a wheel
    with atomic.replacing(target) as partial, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
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
