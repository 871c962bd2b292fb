"""`mcc clean --json` prints the report with its survivors when something tagged cannot be deleted.

The survivor is real: a tagged folder under $MCC_HOME/buckets that is a symlink (rmtree refuses symlinks),
so the sweep finds it, the delete fails and the verification names it.
"""
from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ledger_uuid, mcc


def _plant_undeletable(home: Path, tmp_path: Path) -> Path:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / ".mcc-tags.json").write_text(json.dumps({"mcc:ledger": ledger_uuid(home), "mcc:run": "r-planted"}))
    link = home / "buckets" / "planted"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    return link


def test_clean_json_reports_survivors_from_its_own_flag(mcc_home: Path, tmp_path: Path) -> None:
    assert mcc("status", home=mcc_home).returncode == 0  # creates the ledger
    link = _plant_undeletable(mcc_home, tmp_path)

    proc = mcc("clean", "--all", "--yes", "--json", home=mcc_home)
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    assert [s["physical_id"] for s in report["survivors"] if "error" not in s] == [str(link)]
    assert "survive" in proc.stderr and str(link) in proc.stderr

    # without --json nothing JSON goes to stdout, even when "--json" appears elsewhere on the line
    proc = mcc("clean", "--all", "--yes", "--regions", "--json", home=mcc_home)
    assert proc.returncode == 2 and proc.stdout == "" and "--regions" in proc.stderr and "us-east-1" in proc.stderr
    proc = mcc("clean", "--all", "--yes", home=mcc_home)
    assert proc.returncode == 3 and proc.stdout.strip() == "" and "survive" in proc.stderr
