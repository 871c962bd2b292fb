"""A failing point fails only itself, whether its entry raises or kills its process (invariant 5).

Whole local runs: real redis-server, real worker processes, real signals (SIGSEGV, SIGKILL, os._exit,
a hang only the watchdog ends), real SQLite ledger.
"""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import combined_rows, mcc, tagged_processes


def _run_with_failures(project: Path, home: Path, timeout: float = 300) -> dict:
    proc = mcc("run", str(project), "--json", home=home, timeout=timeout)
    assert proc.returncode == 4, proc.stderr  # completed_with_failures
    return json.loads(proc.stdout)


def _events(home: Path, run_id: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(home / "ledger.db") as con:
        return con.execute("select trigger, dest, coalesce(reason, '') from events where run_id = ? and "
                           "entity = 'subproblem'", (run_id,)).fetchall()


def test_two_raising_points_in_400_lose_two_points(mcc_home: Path, make_project) -> None:
    project = make_project(400, body="""
        if i in (13, 250):
            raise ValueError(f"no convergence at {i}")
        marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"failed-{i}")
        if i == 77 and not os.path.exists(marker):  # fails once: recomputed alone, merged back in place
            open(marker, "w").close()
            raise RuntimeError("transient")
        """, toml="chunk_size = 50\n")  # default max_attempts (3)
    out = _run_with_failures(project, mcc_home)
    assert out["state"] == "completed_with_failures"
    assert (out["done"], out["dead"]) == (398, 2)
    rows = combined_rows(out["result"])
    assert rows[:, 0].astype(int).tolist() == [i for i in range(400) if i not in (13, 250)]
    import h5py

    with h5py.File(out["result"], "r") as fh:  # each row says its point, across the merged-back one too
        assert fh["point_index"][...].tolist() == [i for i in range(400) if i not in (13, 250)]
    assert [(f["first_point"], f["n_points"], f["attempts"]) for f in out["failures"]] == [(13, 1, 3), (250, 1, 3)]
    # the chunks of the failing points were acked with their other rows: no chunk spent an attempt
    with sqlite3.connect(mcc_home / "ledger.db") as con:
        chunks = con.execute("select state, attempts from subproblems where run_id = ? and n_points > 1",
                             (out["run_id"],)).fetchall()
    assert chunks == [("done", 0)] * 8
    status = mcc("status", out["run_id"], home=mcc_home, check=True).stdout
    assert "ValueError: no convergence at 13" in status and "ValueError: no convergence at 250" in status


def test_crashing_points_fail_alone_with_what_killed_them(mcc_home: Path, make_project) -> None:
    project = make_project(100, body="""
        import signal
        if i == 13:
            os.kill(os.getpid(), signal.SIGSEGV)
        if i == 37:
            os._exit(0)
        if i == 58:
            os.kill(os.getpid(), signal.SIGKILL)
        if i == 81:
            signal.signal(signal.SIGALRM, signal.SIG_IGN)  # as C code that never returns to Python
            time.sleep(3600)
        """, toml="chunk_size = 10\nmax_attempts = 2\nworkers = 2\npoint_timeout = 0.5\n")
    out = _run_with_failures(project, mcc_home, timeout=240)
    assert out["state"] == "completed_with_failures"
    assert (out["done"], out["dead"]) == (96, 4)
    rows = combined_rows(out["result"])
    assert rows[:, 0].astype(int).tolist() == [i for i in range(100) if i not in (13, 37, 58, 81)]
    errors = {f["first_point"]: f["error"] for f in out["failures"]}
    assert errors[13] == "point 13: killed by SIGSEGV"
    assert errors[37] == "point 37: exited with status 0 without returning"
    assert "SIGKILL" in errors[58]
    assert errors[81].startswith("point 81: killed after point_timeout (watchdog)")
    assert all(f["attempts"] == 2 and f["n_points"] == 1 for f in out["failures"])
    events = _events(mcc_home, out["run_id"])
    assert not any("lease expired" in reason for _, _, reason in events)  # no lease waited out
    with sqlite3.connect(mcc_home / "ledger.db") as con:  # no chunk (claimed with a crashing one or not) paid
        chunks = con.execute("select state, attempts from subproblems where run_id = ? and n_points > 1",
                             (out["run_id"],)).fetchall()
    assert chunks == [("done", 0)] * 10
    assert ("give_up", "dead", "point 13: killed by SIGSEGV") in events
    failures = mcc_home / "buckets" / out["run_id"] / "failures"
    assert "killed by SIGSEGV" in (failures / f"{10 + 13:07d}" / "001.txt").read_text()
    status = mcc("status", out["run_id"], home=mcc_home, check=True).stdout
    assert "point 37: exited with status 0 without returning" in status
    assert tagged_processes(mcc_home) == []


@pytest.mark.skipif(not os.environ.get("MCC_SLOW_TESTS"), reason="a Python process per point (MCC_SLOW_TESTS=1)")
def test_script_entry_point_failure_keeps_the_chunk(mcc_home: Path, tmp_path: Path) -> None:
    project = tmp_path / "scripted"
    project.mkdir()
    (project / "points.py").write_text("def get_points():\n    return [[float(i)] for i in range(6)]\n")
    (project / "run.py").write_text(
        "import sys, h5py, numpy as np\n"
        "out, x = sys.argv[1], float(sys.argv[2])\n"
        "with h5py.File(out, 'a') as fh:\n"
        "    row = np.array([[x, x * x]])\n"
        "    if 'data' in fh:\n"
        "        d = fh['data']; d.resize(d.shape[0] + 1, axis=0); d[-1] = row\n"
        "    else:\n"
        "        fh.create_dataset('data', data=row, maxshape=(None, 2))\n"
        "if x == 5:\n"
        "    sys.exit(3)  # after writing its row: the row must not survive\n")
    (project / "mcc.toml").write_text('entry = "run.py"\nchunk_size = 3\nmax_attempts = 1\n')
    out = _run_with_failures(project, mcc_home)
    assert out["state"] == "completed_with_failures" and (out["done"], out["dead"]) == (5, 1)
    assert combined_rows(out["result"])[:, 0].astype(int).tolist() == [0, 1, 2, 3, 4]
    assert out["failures"][0]["error"].startswith("point 5: exit status 3")


def test_a_crash_keeps_the_points_its_chunk_already_finished(mcc_home: Path, make_project) -> None:
    """The compute child streams finished rows to the worker about once a second: after the crash at
    point 5 the fresh child goes on from there, it does not start the chunk over."""
    project = make_project(8, body="""
        import signal
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "computed.log"), "a") as log:
            log.write(f"{i}\\n")
        time.sleep(0.4)
        if i == 5:
            os.kill(os.getpid(), signal.SIGSEGV)
        """, toml="chunk_size = 8\nmax_attempts = 1\nworkers = 1\n")
    out = _run_with_failures(project, mcc_home)
    assert (out["done"], out["dead"]) == (7, 1)
    assert combined_rows(out["result"])[:, 0].astype(int).tolist() == [0, 1, 2, 3, 4, 6, 7]
    computed = [int(x) for x in (project / "computed.log").read_text().split()]
    assert computed.count(5) == 1 and computed.count(6) == computed.count(7) == 1
    assert all(computed.count(i) == 1 for i in range(4))  # streamed before the crash: not computed again
