"""Whole runs on the local backend: real redis-server, real processes, real SQLite."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mcc.errors import EXIT_COMPLETED_WITH_FAILURES
from tests.conftest import (
    EXAMPLE, SEED, combined_rows, mcc, mcc_json, seed_points, tagged_processes,
)


def expected_rows(n: int) -> np.ndarray:
    i = np.arange(n, dtype=float)
    return np.column_stack([i, i * 0.5, i * 2.0 + i * 0.5])


def assert_exactly_once(result: str, n: int) -> None:
    rows = combined_rows(result)
    assert rows.shape == (n, 3)
    order = np.argsort(rows[:, 0])
    np.testing.assert_array_equal(rows[order], expected_rows(n))


def test_example_kpoints_function_entry(mcc_home: Path, tmp_path: Path) -> None:
    import shutil

    project = tmp_path / "kpoints"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("results"))
    out = mcc_json("run", str(project), home=mcc_home)
    assert out["state"] == "completed" and out["dead"] == 0
    assert out["result"] == str(project / "results" / out["run_id"] / "combined.h5")
    rows = combined_rows(out["result"])
    sys.path.insert(0, str(project))
    try:
        import points as kpoints_points  # noqa: PLC0415
        import bands as kpoints_bands  # noqa: PLC0415
        pts = np.asarray(kpoints_points.get_points(), dtype=float)
        want = np.array([kpoints_bands.bands(list(p)) for p in pts])
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("points", None)
        sys.modules.pop("bands", None)
    assert out["points"] == len(pts) == out["done"]
    np.testing.assert_allclose(rows, want)  # built-in combiner keeps point order
    assert tagged_processes(mcc_home) == []  # queue, manager and workers all stopped
    status = mcc_json("status", out["run_id"], home=mcc_home)
    assert {k: status[k] for k in ("run_id", "state", "result", "points", "done", "dead")} == {
        k: out[k] for k in ("run_id", "state", "result", "points", "done", "dead")}
    listed = mcc_json("status", home=mcc_home)
    assert [r["run_id"] for r in listed] == [out["run_id"]]


@pytest.mark.skipif(not (SEED / "points.py").exists(), reason="shared/seed is not beside the repository")
def test_original_points_and_combine_data_unchanged(mcc_home: Path, tmp_path: Path) -> None:
    """The original mCC README's points.py (19,710 points) and combine_data.py, read from shared/seed."""
    project = tmp_path / "original"
    project.mkdir()
    (project / "points.py").symlink_to(SEED / "points.py")
    (project / "combine_data.py").symlink_to(SEED / "combine_data.py")
    (project / "bands.py").symlink_to(EXAMPLE / "bands.py")
    out = mcc_json("run", str(project), "--entry", "bands:bands", "--workers", "2", home=mcc_home)
    assert out["state"] == "completed"
    rows = combined_rows(out["result"])
    pts = seed_points()
    assert rows.shape == (19_710, 5) == (len(pts), 5)
    # every point exactly once: the k-columns are a permutation of the input points
    got = rows[:, :3][np.lexsort(rows[:, :3].T[::-1])]
    want = pts[np.lexsort(pts.T[::-1])]
    np.testing.assert_array_equal(got, want)


def test_script_entry(mcc_home: Path, tmp_path: Path) -> None:
    project = tmp_path / "script"
    project.mkdir()
    (project / "points.py").write_text("def get_points():\n    return [[0.1 * i, 0.2, 0.0] for i in range(24)]\n")
    (project / "bands_script.py").write_text((EXAMPLE / "bands_script.py").read_text())
    out = mcc_json("run", str(project), "--entry", "bands_script.py", "--chunk-size", "5", home=mcc_home)
    assert out["state"] == "completed" and out["done"] == 24
    rows = combined_rows(out["result"])
    assert rows.shape == (24, 5)
    np.testing.assert_allclose(np.sort(rows[:, 0]), [0.1 * i for i in range(24)])


def test_failing_points_retry_then_dead(mcc_home: Path, make_project) -> None:
    project = make_project(60, body="""
        if i in (17, 42):
            raise ValueError(f"cannot converge at point {i}")
        """, toml="max_attempts = 2\nchunk_size = 5\n")
    proc = mcc("run", str(project), "--json", home=mcc_home)
    out = json.loads(proc.stdout)
    assert proc.returncode == EXIT_COMPLETED_WITH_FAILURES, proc.stderr  # a pipeline notices the lost points
    assert out["state"] == "completed_with_failures"
    assert out["dead"] == 2 and out["done"] == 58  # only the two failing points, not their chunks
    # each failing point went on as its own one-point subproblem: 12 chunks + its point
    assert [(f["subproblem"], f["first_point"], f["n_points"]) for f in out["failures"]] == [(29, 17, 1), (54, 42, 1)]
    assert all(f["attempts"] == 2 and "cannot converge" in f["error"] for f in out["failures"])
    assert out["failures"][0]["error"].startswith("point 17: ")
    rows = combined_rows(out["result"])
    assert rows[:, 0].astype(int).tolist() == [i for i in range(60) if i not in (17, 42)]  # in point order
    bucket = mcc_home / "buckets" / out["run_id"] / "failures" / "0000029"
    kept = sorted(p.read_text() for p in bucket.iterdir())
    assert len(kept) == 2 and all("ValueError: cannot converge at point 17" in t for t in kept)


def test_hanging_point_times_out(mcc_home: Path, make_project) -> None:
    project = make_project(12, body="""
        if i == 5:
            time.sleep(3600)
        """, toml="max_attempts = 1\nchunk_size = 4\npoint_timeout = 1.0\n")
    proc = mcc("run", str(project), "--json", home=mcc_home)
    assert proc.returncode == EXIT_COMPLETED_WITH_FAILURES, proc.stderr
    out = json.loads(proc.stdout)
    assert out["state"] == "completed_with_failures"
    assert [(f["subproblem"], f["first_point"]) for f in out["failures"]] == [(3 + 5, 5)]
    assert "timed out after 1 s" in out["failures"][0]["error"]
    assert out["done"] == 11


def test_clean_all_leaves_nothing(mcc_home: Path, make_project, tmp_path: Path) -> None:
    project = make_project(40)
    out = mcc_json("run", str(project), "--keep", home=mcc_home)
    assert out["state"] == "completed"
    assert tagged_processes(mcc_home), "--keep leaves the queue running"
    # foreign things that clean must never touch
    foreign_dir = mcc_home / "buckets" / "not-ours"
    foreign_dir.mkdir(parents=True)
    (foreign_dir / ".mcc-tags.json").write_text(json.dumps({"mcc:ledger": "someone-else"}))
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                               env={**os.environ, "MCC_TAG_MCC_LEDGER": "someone-else"})
    try:
        dry = mcc_json("clean", "--all", "--dry-run", home=mcc_home)
        assert dry["dry_run"] and dry["deleted"]
        assert tagged_processes(mcc_home), "a dry run deletes nothing"
        result = mcc_json("clean", "--all", "--yes", home=mcc_home)
        assert result["survivors"] == []
        assert tagged_processes(mcc_home) == []
        assert not (mcc_home / "buckets" / out["run_id"]).exists()
        assert foreign_dir.exists() and foreign.poll() is None
        doc = mcc_json("ledger", "show", home=mcc_home)
        assert doc["resources"] and all(r["state"] == "deleted" for r in doc["resources"])
        assert doc["runs"][0]["state"] == "cleaned"
        password = _queue_password(mcc_home)
        assert len(password) > 20 and password not in json.dumps(doc)  # secrets are redacted
    finally:
        foreign.kill()
        foreign.wait(timeout=60)


def _queue_password(home: Path) -> str:
    import sqlite3

    with sqlite3.connect(home / "ledger.db") as con:
        spec = con.execute("select spec from resources where kind='cache'").fetchone()[0]
    return json.loads(spec)["password"]


def test_the_builtin_combine_happens_as_results_arrive(mcc_home: Path, make_project) -> None:
    """The manager appended chunks as the chunks before them were done (during the run, not only at its end),
    and its log says how many were left for the end; the file still holds every point once, in order.
    How many come before the end depends on the machine's speed (bench B6/end measures it): asserted is
    only that the incremental combine ran and that the two counts add up."""
    import re

    project = make_project(120, body="time.sleep(0.01)", toml="workers = 2\nchunk_size = 3\n")
    out = mcc_json("run", str(project), home=mcc_home)
    assert out["state"] == "completed"
    assert_exactly_once(out["result"], 120)
    assert np.array_equal(combined_rows(out["result"])[:, 0], np.arange(120.0))  # in point order
    log = "".join(p.read_text() for p in (project / "results" / out["run_id"] / "logs").glob("manager-*.log"))
    found = re.search(r"combined (\d+) results as they came, (\d+) at the end", log)
    assert found, log[-3000:]
    as_they_came, at_end = map(int, found.groups())
    assert as_they_came + at_end == 40 and as_they_came >= 1, found.group(0)
