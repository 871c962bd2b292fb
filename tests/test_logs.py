"""mcc.report.logs: timestamps, merge order, the copy into results/, and where `mcc logs` reads from."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from mcc.report import logs
from mcc.errors import MccError
from mcc.ledger import Run, create_row, fire, open_ledger
from mcc.work.stores import LocalStore


def local(s: str) -> float:
    return time.mktime(time.strptime(s, "%Y-%m-%d %H:%M:%S"))


MANAGER = """\
2026-11-26 10:00:00,100 manager INFO seeded 4 subproblems
2026-11-26 10:00:00,300 manager INFO launched worker w-0001
2026-11-26 10:00:02,000 manager ERROR combining failed:
Traceback (most recent call last):
  File "x.py", line 1, in <module>
ValueError: bad
2026-11-26 10:00:03,000 manager INFO finished: completed
"""
WORKER = """\
a line printed before logging started
2026-11-26 10:00:00,200 w-0001 INFO started
2026-11-26 10:00:01,500 w-0001 INFO claimed 2
"""
REDIS = """\
4242:C 26 Nov 2026 10:00:00.050 # Redis is starting
4242:M 26 Nov 2026 10:00:02.500 * Background saving started
"""


def test_parse_timestamp_formats() -> None:
    assert logs.parse_timestamp("2026-11-26 10:00:00,100 manager INFO x") == pytest.approx(local("2026-11-26 10:00:00") + 0.1)
    assert logs.parse_timestamp("4242:M 26 Nov 2026 10:00:02.500 * x") == pytest.approx(local("2026-11-26 10:00:02") + 0.5)
    assert logs.parse_timestamp("2026-11-26T10:00:00.25Z x") == pytest.approx(1795687200.25)
    assert logs.parse_timestamp("Traceback (most recent call last):") is None


def test_merge_orders_by_time_and_keeps_continuations() -> None:
    merged = logs.merge({"manager-1": MANAGER, "w-0001": WORKER, "redis": REDIS})
    sources = [line.split()[0] for line in merged]
    assert sources == ["redis", "manager-1", "w-0001", "w-0001", "manager-1", "w-0001", "manager-1", "manager-1",
                       "manager-1", "manager-1", "redis", "manager-1"]
    assert merged[1] == "manager-1 2026-11-26 10:00:00,100 manager INFO seeded 4 subproblems"
    assert merged[2].endswith("a line printed before logging started")  # takes the file's first time
    at = merged.index("manager-1 2026-11-26 10:00:02,000 manager ERROR combining failed:")
    assert [line[10:] for line in merged[at + 1:at + 4]] == MANAGER.splitlines()[3:6]  # the traceback, intact
    assert all(line[9] == " " and line[:9].strip() in ("manager-1", "w-0001", "redis") for line in merged)  # one width


def _bucket(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "bucket")
    store.put_bytes("logs/manager-1.log", MANAGER.encode())
    store.put_bytes("logs/w-0001.log", WORKER.encode())
    store.put_bytes("logs/redis.log", REDIS.encode())
    return store


def test_collect_logs_keeps_one_copy(tmp_path: Path) -> None:
    """A local bucket's logs are hard-linked into the project (one copy on disk, also when collected
    again after a resume), and the merged view is read from them, not stored beside them."""
    dest = tmp_path / "results" / "r-1" / "logs"
    store = _bucket(tmp_path)
    for _ in range(2):
        files = logs.collect_logs(store, dest)
    assert sorted(p.name for p in files) == sorted(p.name for p in dest.iterdir()) == [
        "manager-1.log", "redis.log", "w-0001.log"]
    assert (dest / "w-0001.log").read_text() == WORKER
    bucket_file = store.local_path("logs/w-0001.log")
    assert (dest / "w-0001.log").stat().st_ino == bucket_file.stat().st_ino and bucket_file.stat().st_nlink == 2
    assert logs.merge(logs.folder_logs(dest)) == logs.merge({"manager-1": MANAGER, "w-0001": WORKER, "redis": REDIS})
    assert logs.collect_logs(LocalStore(tmp_path / "empty"), tmp_path / "none") == []


def _run_with_bucket(tmp_path: Path) -> tuple[Run, LocalStore]:
    store = _bucket(tmp_path)
    run = create_row(Run, id="r-logs", backend="local", project_dir=str(tmp_path / "proj"), settings={},
                     spec={"store_url": store.url})
    for trigger in ("provision", "launch", "start"):
        run = fire(run, trigger)
    return run, store


def test_run_logs_from_the_bucket_then_from_results(mcc_home: Path, tmp_path: Path) -> None:
    open_ledger(mcc_home)
    run, store = _run_with_bucket(tmp_path)
    assert set(logs.run_logs(run.id)) == {"manager-1", "w-0001", "redis"}  # live: the bucket
    assert [line.split()[0] for line in logs.merged_lines(run.id, "w-0001")] == ["w-0001"] * 3
    assert set(logs.run_logs(run.id, "manager")) == {"manager-1"}
    with pytest.raises(MccError, match="no log named 'w-0009'"):
        logs.run_logs(run.id, "w-0009")
    logs.collect_logs(store, logs.results_logs_dir(run))
    store.put_bytes("logs/w-0001.log", (WORKER + "2026-11-26 10:00:09,000 w-0001 INFO late\n").encode())
    for trigger in ("combine", "collect", "complete"):
        run = fire(run, trigger)
    finished = logs.run_logs(run.id)  # finished: results/<run>/logs, not the bucket
    assert finished["w-0001"] == WORKER


def test_follow_stops_when_the_run_is_finished(mcc_home: Path, tmp_path: Path) -> None:
    open_ledger(mcc_home)
    run, store = _run_with_bucket(tmp_path)
    store.put_bytes("final.json", b'{"state": "completed"}')  # a detached run nobody drives to the end
    lines = list(logs.follow(run.id, poll=0.01, quiet_polls=2))
    assert lines == logs.merged_lines(run.id)
    one = list(logs.follow(run.id, "w-0001", poll=0.01, quiet_polls=2))
    assert one and all(line.startswith("w-0001 ") for line in one)
