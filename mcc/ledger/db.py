"""Open the ledger: the home folder, file modes, pragmas, migrations and the ledger uuid."""
from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from mcc.errors import INSTALL_UPGRADE, LedgerError
from mcc.ledger import models
from mcc.ledger.models import Meta, busy_error, is_busy
from mcc.ledger_schema import LATEST, current_version, migrate

DEFAULT_BUSY_TIMEOUT_MS = 10_000
LEDGER_FILE = "ledger.db"

_current: Ledger | None = None


def default_home() -> Path:
    """``$MCC_HOME`` or ``~/.mcc``."""
    return Path(os.environ.get("MCC_HOME") or Path.home() / ".mcc").expanduser()


def pragmas(busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> dict[str, Any]:
    """The pragmas every ledger connection gets."""
    return {"journal_mode": "wal", "foreign_keys": 1, "cache_size": -64000,
            "busy_timeout": int(busy_timeout_ms), "synchronous": "normal"}


class Ledger:
    """An open ledger file bound to the models' deferred database; a context manager."""

    def __init__(self, home: Path, path: Path, ledger_uuid: str) -> None:
        self.home = home
        self.path = path
        self.uuid = ledger_uuid
        self.db = models.db

    def atomic(self) -> Any:
        """A transaction (a savepoint when nested); takes the write lock when it begins."""
        return self.db.atomic()

    def close(self) -> None:
        """Close this thread's connection, if the database is still bound to this file."""
        global _current
        if not self.db.deferred and self.db.database == str(self.path):
            self.db.close()
        if _current is self:
            _current = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r}, uuid={self.uuid!r})"


def _prepare_files(home: Path) -> Path:
    """Create the home folder (0700) and the ledger file (0600) before SQLite ever touches it."""
    if not home.exists():
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(home, 0o700)
    path = home / LEDGER_FILE
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)
    return path


def _file_version(path: Path, busy_timeout_ms: int) -> int:
    """The schema version of the file, read with a bare connection (no pragmas, no writes).

    Not ``mode=ro``: a read-only connection to a WAL file cannot remove the -wal/-shm files it
    creates, and would leave them behind beside a ledger we refuse to touch.
    """
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
    try:
        return current_version(conn)
    except sqlite3.Error as exc:
        if is_busy(exc):
            raise busy_error(path, busy_timeout_ms) from exc
        raise LedgerError(f"{path} is not a readable mcc ledger ({exc}).") from exc
    finally:
        conn.close()


def _ensure_uuid() -> str:
    row = Meta.get_or_none(Meta.key == "ledger_uuid")
    if row is None:
        with models.db.atomic():
            Meta.insert(key="ledger_uuid", value=uuid.uuid4().hex).on_conflict_ignore().execute()
        row = Meta.get(Meta.key == "ledger_uuid")
    return row.value


def open_ledger(home: Path | str | None = None, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Ledger:
    """Open (creating and migrating as needed) the ledger at ``home/ledger.db``.

    A file written by a newer mcc is refused untouched (LedgerError); a lock held by another
    process past ``busy_timeout_ms`` raises LedgerBusy.
    """
    global _current
    home = Path(home).expanduser() if home is not None else default_home()
    path = _prepare_files(home.resolve())
    version = _file_version(path, busy_timeout_ms)
    if version > LATEST:
        raise LedgerError(
            f"The ledger at {path} has schema version {version}, but this mcc only knows versions up to "
            f"{LATEST}: it was written by a newer mcc. Upgrade mcc (`{INSTALL_UPGRADE}` in the mcc checkout); "
            f"the file was left unchanged."
        )
    database = models.db
    if _current is not None:
        _current.close()
    if not database.deferred and not database.is_closed():
        database.close()
    database.busy_timeout_ms = busy_timeout_ms
    database.init(str(path), pragmas=pragmas(busy_timeout_ms), timeout=busy_timeout_ms / 1000)
    try:
        database.connect(reuse_if_open=True)
        if version < LATEST:
            migrate(database)
        ledger = Ledger(path.parent, path, _ensure_uuid())
    except BaseException:
        if not database.in_transaction():
            database.close()
        raise
    _current = ledger
    return ledger


def current_ledger() -> Ledger | None:
    """The ledger this process opened last (None when closed)."""
    return _current
