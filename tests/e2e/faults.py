"""Helpers for the fault tests: small tmpfs mounts (a full disk, a read-only folder) and file damage."""
from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest


@pytest.fixture
def tmpfs() -> Iterator[Callable[..., Path]]:
    """``mount(path, size="16m")`` mounts a fresh tmpfs at ``path`` (created); all are unmounted at teardown."""
    mounted: list[Path] = []

    def mount(path: Path, size: str = "16m") -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True,
                       timeout=30)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        _stop_processes_under(path)
        subprocess.run(["umount", "-l", str(path)], timeout=30, check=False)


def _stop_processes_under(path: Path) -> None:
    """Safety net before unmounting: stop any process of a test's ledger kept there."""
    from tests.conftest import _kill_leftovers

    for ledger in [path, *path.glob("*")]:
        if (ledger / "ledger.db").exists():
            try:
                _kill_leftovers(ledger)
            except sqlite3.Error:
                pass


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, timeout=30)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system holding ``folder`` with one filler file until only ``leave`` bytes stay free."""
    filler = folder / "filler.bin"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as fh:
        while True:
            free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
            want = free - leave
            if want <= 0:
                break
            try:
                fh.write(chunk[: min(len(chunk), want)])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return filler


def damage_middle(db_file: Path, table: str = "events") -> int:
    """Overwrite ``table``'s root page (never page 1, the header) with garbage; returns the page number."""
    with sqlite3.connect(db_file) as con:
        page = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    assert page > 1
    with open(db_file, "r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(bytes([0xA5]) * size)
    return page


def no_internal_error(proc: subprocess.CompletedProcess) -> None:
    text = proc.stdout + proc.stderr
    assert "internal error" not in text and "Traceback" not in text, text


#: whole runs (~25-40 s each on the shared 2-core machine): the default suite has the cheap tests of the same
#: classes (tests/test_ledger_faults.py, tests/test_runlock.py, tests/test_output_cap.py, tests/test_manager_faults.py,
#: tests/test_local_cache.py)
SLOW = pytest.mark.skipif(not os.environ.get("MCC_SLOW_TESTS"), reason="whole runs: run with MCC_SLOW_TESTS=1")
