"""Bad input: one clear paragraph naming the file/field and the fix, exit != 0, no traceback, nothing created."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from mcc.work import pack
from tests.conftest import combined_rows, mcc, mcc_json, tagged_processes


def nothing_created(home: Path) -> bool:
    if not (home / "ledger.db").exists():
        return True
    with sqlite3.connect(home / "ledger.db") as con:
        return con.execute("select count(*) from runs").fetchone()[0] == 0 and \
            con.execute("select count(*) from resources").fetchone()[0] == 0


def assert_clear_error(proc, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    text = " ".join(proc.stderr.split())
    for needle in needles:
        assert needle in text, f"{needle!r} not in {proc.stderr!r}"


CASES = {
    "missing-dir": (None, None, [], ["does not exist", "mcc init"]),
    "unparsable-toml": ("mcc.toml", "workers = = 2\n", [], ["mcc.toml", "line 1"]),
    "unknown-key": ("mcc.toml", 'entry = "entry:compute"\nworkres = 2\n', [], ["workres", "workers"]),
    "wrong-type": ("mcc.toml", 'entry = "entry:compute"\nworkers = "two"\n', [], ["workers", "integer"]),
    "workers-flag-zero": (None, None, ["--workers", "0"], ["--workers", ">= 1"]),
    "chunk-flag-zero": (None, None, ["--chunk-size", "0"], ["--chunk-size"]),
    "points-raise": ("points.py", "def get_points():\n    return 1/0\n", [], ["points.py", "ZeroDivisionError"]),
    "points-empty": ("points.py", "def get_points():\n    return []\n", [], ["points.py", "empty"]),
    "points-ragged": ("points.py", "def get_points():\n    return [[1, 2], [3]]\n", [], ["points.py", "1"]),
    "points-nan": ("points.py", "def get_points():\n    return [[1.0], [float('nan')]]\n", [], ["points.py", "NaN"]),
    "points-missing": ("points.py", None, [], ["points.py", "get_points"]),
    "entry-missing": (None, None, ["--entry", "nosuch:compute"], ["nosuch"]),
    "entry-import-error": ("entry.py", "import not_a_module\n", [], ["entry.py", "not_a_module"]),
    "entry-raises-first-point": ("entry.py", "def compute(p):\n    raise RuntimeError('boom')\n", [], ["boom", "Nothing was created"]),
    "script-exits": ("run.py", "import sys\nsys.exit(3)\n", ["--entry", "run.py"], ["run.py", "status 3"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_project_input(mcc_home: Path, make_project, tmp_path: Path, case: str) -> None:
    filename, content, flags, needles = CASES[case]
    project = make_project(20)
    if case == "missing-dir":
        project = tmp_path / "nowhere"
    elif filename and content is None:
        (project / filename).unlink()
    elif filename:
        (project / filename).write_text(content)
    proc = mcc("run", str(project), *flags, home=mcc_home)
    assert_clear_error(proc, *needles)
    assert nothing_created(mcc_home)


@pytest.mark.parametrize("command", [["resume", "r-nope"], ["status", "r-nope"], ["clean", "--run", "r-nope", "--yes"]])
def test_unknown_run(mcc_home: Path, command: list[str]) -> None:
    assert_clear_error(mcc(*command, home=mcc_home), "r-nope", "mcc status")


@pytest.mark.parametrize("command", [
    ["provision", "--backend", "aws", "--region", "us_east_1"],
    ["prices", "--region", "Virginia"],
    ["clean", "--all", "--yes", "--regions", "us-east-1,eu west"],
])
def test_region_names_are_checked_before_anything_runs(mcc_home: Path, command: list[str]) -> None:
    proc = mcc(*command, home=mcc_home)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "region" in proc.stderr and "us-east-1" in proc.stderr, proc.stderr  # what was wrong, and an example
    assert nothing_created(mcc_home)


def test_newer_ledger_schema_is_refused_untouched(mcc_home: Path, make_project) -> None:
    mcc("status", home=mcc_home, check=True)
    with sqlite3.connect(mcc_home / "ledger.db") as con:
        con.execute("insert into schema_version (version, applied_at) values (999, 0)")
    before = _dump(mcc_home)
    assert_clear_error(mcc("run", str(make_project(5)), home=mcc_home), "999", "Upgrade mcc")
    assert _dump(mcc_home) == before


def _dump(home: Path) -> list[str]:
    with sqlite3.connect(home / "ledger.db") as con:
        return list(con.iterdump())


def test_combine_data_raising_fails_keeps_partials_and_resumes_after_fix(mcc_home: Path, make_project) -> None:
    project = make_project(30, toml="chunk_size = 10\n")
    (project / "combine_data.py").write_text("def combine_data(files, fileout):\n    raise OSError('disk quota in combine')\n")
    proc = mcc("run", str(project), "--json", home=mcc_home)
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["state"] == "failed" and "disk quota in combine" in out["reason"]
    bucket = mcc_home / "buckets" / out["run_id"] / "results"
    assert sorted(m.sub for obj in bucket.glob("*.pack") for m in pack.members(obj)) == [0, 1, 2]  # results stay
    assert tagged_processes(mcc_home) == []
    (project / "combine_data.py").write_text(
        "import h5py, numpy as np\n"
        "def combine_data(files, fileout):\n"
        "    rows = [h5py.File(f, 'r')['data'][...] for f in files]\n"
        "    with h5py.File(fileout, 'w') as out:\n"
        "        out['data'] = np.vstack(rows)\n")
    fixed = mcc_json("resume", out["run_id"], home=mcc_home)
    assert fixed["state"] == "completed" and fixed["done"] == 30
    assert sorted(combined_rows(fixed["result"])[:, 0].tolist()) == list(map(float, range(30)))


def test_every_command_has_help_with_an_example(mcc_home: Path) -> None:
    for command in (["init"], ["run"], ["resume"], ["status"], ["ledger", "show"], ["clean"]):
        proc = mcc(*command, "--help", home=mcc_home, check=True)
        assert "Example: mcc" in proc.stdout, command
