"""A sweep with bad points, as a newcomer meets it: the final screen, the exit code, the file's own
description of what is missing, and `mcc resume RUN --retry-dead` recomputing only those points."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from mcc.errors import EXIT_COMPLETED_WITH_FAILURES
from mcc.ledger import open_ledger, queries
from tests.conftest import mcc, mcc_json

BAD = """
if i in (7, 23) and not os.path.exists(os.path.join(os.path.dirname(__file__), "fixed")):
    raise ValueError(f"cannot converge at [k={i}]")
"""


def test_dead_points_exit_code_file_and_retry_dead(mcc_home: Path, make_project) -> None:
    project = make_project(30, body=BAD, toml="max_attempts = 1\nchunk_size = 5\nworkers = 2\n")
    (project / "entry.py").write_text((project / "entry.py").read_text() + 'compute.columns = ["i", "half", "sum"]\n')
    proc = mcc("run", str(project), home=mcc_home)  # the human view: not a terminal, so no live bar
    assert proc.returncode == EXIT_COMPLETED_WITH_FAILURES, proc.stderr
    assert "finished 20/30 · 10 dead" in proc.stdout
    # the first errors, verbatim (brackets kept), with the user's frame, and the commands that follow
    assert "point 7: ValueError: cannot converge at [k=7] (entry.py:" in proc.stderr
    assert "point 23: ValueError: cannot converge at [k=23]" in proc.stderr
    run_id = next(line.split()[1].rstrip(":") for line in proc.stderr.splitlines() if line.startswith("run "))
    assert f"mcc status {run_id}" in proc.stderr and f"mcc resume {run_id} --retry-dead" in proc.stderr

    status = mcc("status", run_id, home=mcc_home, check=True).stdout
    assert "cannot converge at [k=7] (entry.py:" in status and "in compute)" in status
    logs = project / "results" / run_id / "logs" / "failures"
    assert "Traceback (most recent call last)" in (logs / "0000001" / "001.txt").read_text()

    result = project / "results" / run_id / "combined.h5"
    with h5py.File(result, "r") as fh:
        assert fh["data"].shape == (20, 3) and fh["data"].chunks is None  # exact size, no block padding
        np.testing.assert_array_equal(fh["point_index"][...], [i for i in range(30) if i // 5 not in (1, 4)])
        np.testing.assert_array_equal(fh["data"][:, 0], fh["point_index"][...])
        missing = fh["missing"][...]
        assert missing["point_index"].tolist() == [5, 6, 7, 8, 9, 20, 21, 22, 23, 24]
        errors = dict(zip(missing["point_index"].tolist(), (e.decode() for e in missing["error"])))
        assert errors[7].startswith("ValueError: cannot converge at [k=7] (entry.py:")
        assert errors[5].startswith("not computed: subproblem 1 failed every attempt")
        a = fh.attrs
        assert (a["run_id"], int(a["missing_points"]), bool(a["complete"]), int(a["n_points"])) == (run_id, 10, False, 30)
        assert [c.decode() if isinstance(c, bytes) else c for c in a["columns"]] == ["i", "half", "sum"]
        assert a["entry"] == "function entry:compute" and len(a["points_sha256"]) == 64
        assert json.loads(a["settings"])["max_attempts"] == 1 and a["mcc_version"]
        first_hash = a["entry_sha256"]
    assert result.stat().st_size < 64 * 1024  # in proportion to 20 rows (was one 4 MiB chunk)
    umask = os.umask(0o022)
    os.umask(umask)
    assert result.stat().st_mode & 0o777 == 0o666 & ~umask  # the user's file follows the user's umask
    bucket = mcc_home / "buckets" / run_id
    assert not (bucket / "combined.h5").exists() and not list((bucket / "work").rglob("*.*"))  # collected: gone
    assert len(list((bucket / "results").iterdir())) == 4 and list((bucket / "logs").iterdir())  # what resume needs

    (project / "fixed").write_text("")
    (project / "entry.py").write_text((project / "entry.py").read_text() + "# fixed\n")
    again = mcc("resume", run_id, "--retry-dead", "--json", home=mcc_home)
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert (out["state"], out["done"], out["dead"]) == ("completed", 30, 0)
    assert out["workers"] == 2 and out["cost"]["points_per_s"] == out["timings"]["points_per_second"]  # one source each
    with h5py.File(result, "r") as fh:
        np.testing.assert_array_equal(np.sort(fh["point_index"][...]), np.arange(30))  # every point once
        np.testing.assert_array_equal(fh["data"][:, 0], fh["point_index"][...])
        assert fh["missing"].shape == (0,) and bool(fh.attrs["complete"])
        assert fh.attrs["entry_sha256"] != first_hash

    open_ledger(mcc_home)
    events = [e for e in queries.events(run_id=run_id) if e.trigger in ("retry_dead", "revive")]
    assert {e.trigger for e in events} == {"retry_dead", "revive"}
    assert sum(e.trigger == "revive" for e in events) == 2
    assert all("--retry-dead" in e.reason and "changed" in e.reason for e in events)
    rounds = queries.get_run(run_id).spec["rounds"]
    assert [r.get("subproblems") for r in rounds] == [None, [1, 4]]
    assert rounds[0]["entry_sha256"] == first_hash != rounds[1]["entry_sha256"]
    hashes = {r.attrs.get("entry_sha256") for r in queries.resources(run_id=run_id, kind="instance")}
    assert {rounds[0]["entry_sha256"], rounds[1]["entry_sha256"]} <= hashes  # which code each worker ran

    refused = mcc("resume", run_id, "--retry-dead", home=mcc_home)
    assert refused.returncode == 1 and "is completed: --retry-dead recomputes" in refused.stderr
