"""Issue 12 §4: two drivers of one run, a user's combine_data that raises, a chatty entry, a dead manager's lock."""
from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

from tests.conftest import (
    combined_rows, latest_run_id, mcc, mcc_json, run_state, spawn_mcc, tagged_processes, wait_for,
)
from tests.e2e.faults import SLOW, no_internal_error


@SLOW
def test_two_resumes_at_once_one_drives_the_other_says_who(mcc_home: Path, make_project) -> None:
    project = make_project(n=300, body="time.sleep(0.02)", toml="workers = 2\nchunk_size = 10\n")
    mcc("run", str(project), "--detach", home=mcc_home, check=True)
    run_id = latest_run_id(mcc_home)
    procs = [spawn_mcc("resume", run_id, "--json", home=mcc_home) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    texts = [o + e for o, e in outs]
    for text in texts:
        assert "internal error" not in text and "IntegrityError" not in text, text
    assert sorted(codes) == [0, 1], texts
    loser = texts[codes.index(1)]
    winner_pid = procs[codes.index(0)].pid
    assert f"Another mcc process drives run {run_id}: pid {winner_pid} on host" in loser, loser
    assert run_state(mcc_home, run_id) == "completed"
    assert tagged_processes(mcc_home) == []


@SLOW
def test_combine_data_error_is_shown_as_the_users(mcc_home: Path, make_project) -> None:
    project = make_project(n=40, toml="workers = 1\n")
    (project / "combine_data.py").write_text(textwrap.dedent("""\
        def combine_data(files, fileout):
            rows = len(files)
            raise ValueError(f"cannot combine {rows} files")
        """))
    proc = mcc("run", str(project), "--json", home=mcc_home)
    assert proc.returncode == 1
    no_internal_error(proc)
    run_id = latest_run_id(mcc_home)
    reason = mcc_json("status", run_id, home=mcc_home)["reason"]
    assert f"{project / 'combine_data.py'}, line 3, in combine_data" in reason, reason
    assert "ValueError: cannot combine" in reason and "Traceback" not in reason
    logs = project / "results" / run_id / "logs"
    assert any("Traceback (most recent call last)" in p.read_text() for p in logs.glob("manager-*.log"))


@SLOW
def test_chatty_entry_keeps_one_capped_copy(mcc_home: Path, make_project) -> None:
    body = """
    import sys
    if i == 3:
        sys.stdout.write("x" * 50_000_000 + "\\n")
        sys.stdout.flush()
    """
    project = make_project(n=20, body=body, toml="workers = 1\nchunk_size = 5\n")
    done = mcc_json("run", str(project), home=mcc_home)
    assert done["state"] == "completed" and len(combined_rows(done["result"])) == 20
    logs = project / "results" / done["run_id"] / "logs"
    total = sum(p.stat().st_size for p in logs.iterdir())
    assert total < 8 << 20, f"{total} bytes of logs"  # was 105 MB (+ 52 MB in the bucket)
    assert not (logs / "merged.log").exists()  # the merged view is made by `mcc logs RUN`, not stored
    bucket_logs = mcc_home / "buckets" / done["run_id"] / "logs"
    for copy in bucket_logs.glob("*.log"):  # the bucket keeps its logs for resume: the same file, one copy
        assert copy.stat().st_ino == (logs / copy.name).stat().st_ino, copy.name
    worker_log = next(logs.glob("w-*.log")).read_text()
    assert "output of this point cut after 1048576 bytes" in worker_log


@SLOW
def test_dead_managers_lock_is_taken_over_at_once(mcc_home: Path, make_project) -> None:
    project = make_project(n=300, body="time.sleep(0.02)", toml="workers = 2\nchunk_size = 10\nlease_seconds = 30\n")
    mcc("run", str(project), "--detach", home=mcc_home, check=True)
    run_id = latest_run_id(mcc_home)
    wait_for(lambda: len(tagged_processes(mcc_home, **{"mcc:run": run_id})) >= 4, 60,
             "the queue, the manager (holding its lock) and its two workers")
    managers = tagged_processes(mcc_home, **{"mcc:run": run_id, "Name": "manager"})
    os.kill(managers[0].pid, signal.SIGKILL)  # its lock (30 s) stays in the queue
    done = mcc_json("resume", run_id, home=mcc_home)  # relaunches the manager
    assert done["state"] == "completed" and done["done"] == 300
    second = (project / "results" / run_id / "logs" / "manager-2.log").read_text()
    assert "took over the lock of a manager that is gone" in second
    assert "another manager holds the lock; waiting" not in second
