"""The ledger under stress (issue 12 §3), without a whole run: read-only, a home that is a file, damage,
the rolling backup and `mcc ledger recover`."""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from mcc import api
from mcc.errors import LedgerDamaged, LedgerError, LedgerReadOnly, MccError
from mcc.ledger import create_row, models, open_ledger, queries
from mcc.ledger.backup import backup_path, make_backup, quick_check
from mcc.ledger.db import open_for_reading
from tests.e2e.faults import damage_middle, remount, tmpfs  # noqa: F401 - fixture

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root, as in CI)")


def _ledger_with_runs(home: Path, n: int = 3) -> list[str]:
    ledger = open_ledger(home)
    ids = [create_row(models.Run, backend="local", project_dir=f"/p/{i}", points=i).id for i in range(n)]
    ledger.backup()
    ledger.close()
    return ids


@as_root
def test_read_only_home_serves_reads_and_names_itself_to_writes(tmp_path: Path, tmpfs) -> None:
    home = tmpfs(tmp_path / "h ome ü?#%20", "4m")  # a read-only URI percent-encodes all of these
    ids = _ledger_with_runs(home)
    remount(home, "ro")
    try:
        with pytest.raises(LedgerReadOnly) as info:
            open_ledger(home)
        assert "read-only" in str(info.value) and str(home / "ledger.db") in str(info.value)
        assert sorted(r["run_id"] for r in api.status(home=home)) == sorted(ids)
        assert len(api.ledger_view(home=home)["runs"]) == 3
        ledger = open_for_reading(home)
        assert ledger.read_only
        with pytest.raises(LedgerReadOnly):  # a write through the read-only connection
            create_row(models.Run, backend="local", project_dir="/q", points=1)
        ledger.close()
    finally:
        remount(home, "rw")


def test_home_that_is_a_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    with pytest.raises(LedgerError) as info:
        api.status(home=home)
    assert "which is a file, not a folder" in str(info.value) and str(home) in str(info.value)


def test_damage_is_named_on_open_and_recover_restores_the_backup(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ids = _ledger_with_runs(home)
    ledger = open_ledger(home)
    uuid, created = ledger.uuid, ledger.created_at
    damage_middle(home / "ledger.db")
    with pytest.raises(LedgerDamaged) as info:
        open_ledger(home)
    text = str(info.value)
    assert "is damaged" in text and str(backup_path(home / "ledger.db")) in text and "mcc ledger recover" in text
    doc = api.ledger_recover(home=home)
    assert doc["uuid"] == uuid and Path(doc["damaged_copy"]).exists()
    assert open_ledger(home).created_at == created  # the sweep's bound: what it made since is adopted
    assert sorted(r.id for r in queries.list_runs()) == sorted(ids)
    with pytest.raises(MccError, match="nothing to recover"):
        api.ledger_recover(home=home)


def test_recover_without_a_backup_keeps_the_ledger_id_and_its_creation_time(tmp_path: Path) -> None:
    """The fresh ledger takes the damaged one's uuid and ``created_at``: the sweep must not refuse, as older than
    the fresh file, what the old ledger made."""
    home = tmp_path / "home"
    _ledger_with_runs(home)
    ledger = open_ledger(home)
    uuid, created = ledger.uuid, ledger.created_at
    ledger.close()
    backup_path(home / "ledger.db").unlink()
    damage_middle(home / "ledger.db")
    time.sleep(0.01)  # the fresh file's own first migration is later
    doc = api.ledger_recover(home=home)
    assert doc["backup"] is None and doc["uuid"] == uuid
    assert open_ledger(home).created_at == created


def test_a_damaged_ledger_never_replaces_the_last_good_backup(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _ledger_with_runs(home)
    path = home / "ledger.db"
    good = backup_path(path).read_bytes()
    damage_middle(path)
    conn = sqlite3.connect(path)
    with pytest.raises(LedgerDamaged):
        make_backup(conn, path)
    conn.close()
    assert backup_path(path).read_bytes() == good
    with sqlite3.connect(backup_path(path)) as check:
        assert quick_check(check) is None
