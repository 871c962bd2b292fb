"""Atomic file writes: write beside the destination under a temporary name, then rename over it.

A reader (another process, a crash-interrupted writer's successor) sees the old file or the whole new one,
never half a file. Standard library only, so every module (storage, pricing, remote/) can import it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp-"  # LocalStore.list skips names starting with this


@contextmanager
def replacing(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on a clean exit it is renamed over ``dest``, else removed.

    The folder of ``dest`` is created if needed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=TMP_PREFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        unlink_quietly(tmp)
        raise


def write_bytes(dest: str | Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with replacing(dest) as tmp:
        tmp.write_bytes(data)


def copy_file(src: str | Path, dest: str | Path) -> None:
    """Copy ``src`` to ``dest`` atomically."""
    with replacing(dest) as tmp:
        shutil.copyfile(src, tmp)


def unlink_quietly(path: str | Path) -> None:
    """Remove ``path``; a file that is already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
