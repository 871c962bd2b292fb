"""The operating system's refusals that are the world's doing (no space left), as MccErrors naming the path.

Classified once, by errno, never by message text. Callers that know what the user should do next
(``mcc resume RUN``) add it as the error's ``hint``.
"""
from __future__ import annotations

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mcc.errors import DiskFull

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the file system holding ``path`` (its nearest existing parent); None if unknown."""
    p = Path(path)
    for candidate in (p, *p.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def disk_full(path: str | Path, needed: int | None = None, hint: str = "") -> DiskFull:
    """The DiskFull error for ``path``, with the space free there now."""
    return DiskFull(str(path), free_bytes(path), needed, hint)


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


@contextmanager
def no_space_errors(path: str | Path, needed: int | None = None) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT raised inside into DiskFull naming the file (``path`` when the OS named none)."""
    try:
        yield
    except OSError as exc:
        if not is_no_space(exc):
            raise
        raise disk_full(exc.filename or path, needed) from exc
