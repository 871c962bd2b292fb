"""The ledger's health: SQLite's quick check on open, a rolling backup, and restoring it.

The backup is ``ledger.db.backup`` beside the ledger, written with SQLite's online backup API (a
consistent copy even while other connections write) under a temporary name and renamed into place,
so a crash mid-backup never replaces the last good copy with half of one. Plain ``sqlite3`` only: this
module never touches the models.
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from mcc.errors import LedgerDamaged

BACKUP_SUFFIX = ".backup"
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26


def backup_path(ledger_path: Path) -> Path:
    """Where the rolling backup of ``ledger_path`` lives."""
    return ledger_path.with_name(ledger_path.name + BACKUP_SUFFIX)


def is_damage(exc: BaseException) -> bool:
    """True for SQLite's "malformed" and "not a database" errors (by result code)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


def damaged_error(path: Path, detail: str = "", what: str = "is damaged") -> LedgerDamaged:
    """The one message for a damaged ledger: what, where the last good backup is, how to recover."""
    backup = backup_path(path)
    if backup.exists():
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(backup.stat().st_mtime))
        where = (f"The last good backup is {backup} (taken {when}). `mcc ledger recover` restores it (the damaged "
                 f"file is kept beside it) and adopts, by their tags, the resources created since, so nothing leaks.")
    else:
        where = (f"There is no backup ({backup} does not exist yet: one is taken when a run is created and when it "
                 "ends). `mcc ledger recover` starts a fresh ledger under the same ledger id when the damaged file "
                 "still names it, and adopts every resource tagged with it; otherwise `mcc clean --all "
                 "--ledger-id UUID` removes what the lost ledger created.")
    detail = f" (SQLite: {detail})" if detail else ""
    return LedgerDamaged(f"The ledger at {path} {what}{detail}. {where}")


FULL_CHECK_BYTES = 32 << 20  # below this a whole-file check takes well under 0.3 s
BULK_TABLES = ("subproblems", "events")  # ~2 s each to check at 1M rows: checked when read (SQLITE_CORRUPT)


def quick_check(conn: sqlite3.Connection, table: str | None = None) -> str | None:
    """SQLite's ``PRAGMA quick_check`` (b-tree structure, no index-vs-table cross-check) of the whole file or
    of one ``table`` and its indexes: None when sound, else the first problem it names."""
    sql = "PRAGMA quick_check(1)" if table is None else f'PRAGMA quick_check("{table}")'
    try:
        rows = conn.execute(sql).fetchall()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == SQLITE_CORRUPT:
            return str(exc)
        raise  # "not a database" (a damaged header, or not SQLite at all) is the caller's to word
    first = rows[0][0] if rows else "ok"
    return None if first == "ok" else str(first)


def check_on_open(conn: sqlite3.Connection, size: int) -> str | None:
    """The check every open makes: the whole file when it is small, else every table but the bulk ones.

    Measured on bench B5's ledger (1M subproblems, 1M events, 283 MB): a whole-file quick_check takes
    4.6-6.6 s on the shared machine, the same check of every table but ``subproblems`` and ``events``
    0.09 s. Damage in a bulk table is still named: reading a damaged page raises SQLITE_CORRUPT, which
    the ledger turns into the same message (mcc.ledger.models.ledger_error).
    """
    if size <= FULL_CHECK_BYTES:
        return quick_check(conn)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        if table not in BULK_TABLES:
            problem = quick_check(conn, table)
            if problem:
                return problem
    return None


def make_backup(conn: sqlite3.Connection, ledger_path: Path) -> Path:
    """Copy the ledger behind ``conn`` to its backup path (0600) with the online backup API; atomic."""
    dest = backup_path(ledger_path)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600))
    try:
        target = sqlite3.connect(tmp)
        try:
            conn.backup(target)
            # never replace the last good backup by a copy of a damaged file (the same check as on open)
            problem = check_on_open(target, os.path.getsize(tmp))
        finally:
            target.close()
        if problem:
            raise damaged_error(ledger_path, problem)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def meta_of(path: Path, key: str = "ledger_uuid") -> str | None:
    """A ``meta`` value (the ledger uuid, its ``created_at``) a (possibly damaged) file still names, if it can
    be read."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def set_aside(path: Path) -> Path:
    """Rename the damaged ledger (and its -wal/-shm) to ``ledger.db.damaged-<time>``; returns the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(aside) + suffix))
    return aside


def restore(path: Path) -> tuple[Path | None, Path | None]:
    """Put the backup in place of the ledger at ``path``; returns (damaged file set aside, backup used).

    Without a backup the ledger is only set aside (the caller starts a fresh one).
    """
    aside = set_aside(path) if path.exists() else None
    backup = backup_path(path)
    if not backup.exists():
        return aside, None
    source = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        problem = quick_check(source)
        if problem:
            raise damaged_error(backup, problem)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        target = sqlite3.connect(path)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    return aside, backup
