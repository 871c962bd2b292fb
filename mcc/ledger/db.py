"""Open the ledger: the home folder, file modes, pragmas, migrations and the ledger uuid."""
from __future__ import annotations

import errno
import logging
import os
import sqlite3
import urllib.parse
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from mcc.errors import INSTALL_UPGRADE, LedgerError, LedgerReadOnly
from mcc.ledger import models
from mcc.ledger.backup import SQLITE_NOTADB, check_on_open, damaged_error, is_damage, make_backup
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

    def __init__(self, home: Path, path: Path, ledger_uuid: str, read_only: bool = False) -> None:
        self.home = home
        self.path = path
        self.uuid = ledger_uuid
        self.read_only = read_only
        self.db = models.db

    @property
    def created_at(self) -> float | None:
        """When this ledger was made (UNIX seconds, ``meta.created_at``); None when it does not say."""
        row = Meta.get_or_none(Meta.key == "created_at")
        return float(row.value) if row is not None else None

    def atomic(self) -> Any:
        """A transaction (a savepoint when nested); takes the write lock when it begins."""
        return self.db.atomic()

    def backup(self, max_bytes: int | None = None) -> Path | None:
        """Refresh the rolling backup (mcc.ledger.backup); a failure is logged, never fatal (None).

        ``max_bytes``: skip it for a larger ledger (a 283 MB one takes ~5 s to copy and check).
        """
        if self.read_only or (max_bytes is not None and self.path.stat().st_size > max_bytes):
            return None
        try:
            return make_backup(self.db.connection(), self.path)
        except Exception as exc:  # noqa: BLE001 - a full disk must not fail the run; the old backup stays
            logging.getLogger(__name__).warning("could not refresh the ledger backup of %s: %s", self.path, exc)
            return None

    def close(self) -> None:
        """Close this thread's connection, if the database is still bound to this file."""
        global _current
        if not self.db.deferred and self.db.database in (str(self.path), _read_only_uri(self.path)):
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


def read_only_error(path: Path, why: str) -> LedgerReadOnly:
    """The message for a write asked of a ledger this process may only read."""
    return LedgerReadOnly(
        f"The ledger at {path} is read-only ({why}), and this command needs to write it. Make it writable "
        f"again, or point MCC_HOME at a writable copy of the folder. Read commands (`mcc status`, "
        f"`mcc ledger show`, `mcc analyze`) still work on it as it is."
    )


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _prepare_files(home: Path) -> Path:
    """Create the home folder (0700) and the ledger file (0600) before SQLite ever touches it.

    A home that is a file, or a ledger (or its folder) that cannot be written, is refused with a clear
    message before SQLite sees it.
    """
    if home.exists() and not home.is_dir():
        raise LedgerError(f"MCC_HOME is {home}, which is a file, not a folder: mcc keeps its ledger in that folder. "
                          f"Move the file away, or set MCC_HOME to a folder (default ~/.mcc).")
    path = home / LEDGER_FILE
    try:
        if not home.exists():
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(home, 0o700)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        if not _writable(path) or not _writable(home):
            raise read_only_error(path, f"{path if not _writable(path) else home} cannot be written")
        if path.stat().st_mode & 0o777 != 0o600:
            os.chmod(path, 0o600)
    except NotADirectoryError:
        raise LedgerError(f"MCC_HOME is {home}, but a part of that path is a file, not a folder. "
                          f"Set MCC_HOME to a folder (default ~/.mcc).") from None
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise read_only_error(path, exc.strerror or str(exc)) from exc
        raise
    return path


def _read_only_uri(path: Path) -> str:
    """A SQLite URI that opens ``path`` for reading only (the path percent-encoded, so spaces, ``?``, ``#``
    and non-ASCII letters stay part of it). ``immutable=1`` when the folder cannot hold the -wal/-shm files
    a WAL reader needs and there is no -wal file whose pages we would miss."""
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
    if not _writable(path.parent) and not Path(f"{path}-wal").exists():
        uri += "&immutable=1"
    return uri


def _file_version(path: Path, busy_timeout_ms: int, read_only: bool = False) -> int:
    """The schema version of the file, read with a bare connection (no pragmas, no writes), after
    SQLite's quick check of the whole file (a damaged ledger is named here, before anything uses it).

    Not ``mode=ro`` unless ``read_only``: a read-only connection to a WAL file cannot remove the -wal/-shm
    files it creates, and would leave them behind beside a ledger we refuse to touch.
    """
    if read_only:
        conn = sqlite3.connect(_read_only_uri(path), uri=True, timeout=busy_timeout_ms / 1000, isolation_level=None)
    else:
        conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
    try:
        size = path.stat().st_size
        if size:
            problem = check_on_open(conn, size)
            if problem:
                raise damaged_error(path, problem)
        return current_version(conn)
    except sqlite3.Error as exc:
        if is_busy(exc):
            raise busy_error(path, busy_timeout_ms) from exc
        if is_damage(exc):
            what = "is not a readable mcc ledger" if exc.sqlite_errorcode & 0xFF == SQLITE_NOTADB else "is damaged"
            raise damaged_error(path, str(exc), what) from exc
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


def open_ledger(home: Path | str | None = None, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
                read_only: bool = False) -> Ledger:
    """Open (creating and migrating as needed) the ledger at ``home/ledger.db``.

    A file written by a newer mcc is refused untouched (LedgerError); a lock held by another
    process past ``busy_timeout_ms`` raises LedgerBusy; a damaged file raises LedgerDamaged; a ledger
    that cannot be written raises LedgerReadOnly. ``read_only`` opens an existing ledger for reading
    only (nothing created, migrated or written): see :func:`open_for_reading`.
    """
    global _current
    home = Path(home).expanduser() if home is not None else default_home()
    if read_only:
        return _open_read_only(home.resolve(), busy_timeout_ms)
    path = _prepare_files(home.resolve())
    version = _file_version(path, busy_timeout_ms)
    if version > LATEST:
        raise LedgerError(
            f"The ledger at {path} has schema version {version}, but this mcc only knows versions up to "
            f"{LATEST}: it was written by a newer mcc. Upgrade mcc (`{INSTALL_UPGRADE}` in the mcc checkout); "
            f"the file was left unchanged."
        )
    database = _bind(str(path), pragmas(busy_timeout_ms), busy_timeout_ms)
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


def _bind(name: str, db_pragmas: dict[str, Any], busy_timeout_ms: int, **connect: Any) -> models.LedgerDatabase:
    """Point the models' deferred database at ``name`` (closing whatever it was bound to before)."""
    database = models.db
    if _current is not None:
        _current.close()
    if not database.deferred and not database.is_closed():
        database.close()
    database.busy_timeout_ms = busy_timeout_ms
    database.init(name, pragmas=db_pragmas, timeout=busy_timeout_ms / 1000, **connect)
    return database


def open_for_reading(home: Path | str | None = None) -> Ledger:
    """The ledger for a read command: opened as usual, or read-only when it (or $MCC_HOME) cannot be written."""
    try:
        return open_ledger(home)
    except LedgerReadOnly:
        return open_ledger(home, read_only=True)


def _open_read_only(home: Path, busy_timeout_ms: int) -> Ledger:
    global _current
    path = home / LEDGER_FILE
    if not path.is_file():
        raise LedgerError(f"There is no ledger at {path} yet, and {home} cannot be written to create one.")
    version = _file_version(path, busy_timeout_ms, read_only=True)
    if version != LATEST:
        raise read_only_error(path, f"it has schema version {version} and this mcc needs {LATEST}, "
                                    "which means writing it")
    ro_pragmas = {k: v for k, v in pragmas(busy_timeout_ms).items() if k in ("foreign_keys", "cache_size", "busy_timeout")}
    database = _bind(_read_only_uri(path), ro_pragmas, busy_timeout_ms, uri=True)
    database.connect(reuse_if_open=True)
    row = Meta.get_or_none(Meta.key == "ledger_uuid")
    if row is None:
        database.close()
        raise LedgerError(f"{path} has no ledger id yet; open it once with write access.")
    _current = Ledger(home, path, row.value, read_only=True)
    return _current


def current_ledger() -> Ledger | None:
    """The ledger this process opened last (None when closed)."""
    return _current
