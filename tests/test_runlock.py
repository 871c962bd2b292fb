"""One driver per run (mcc.driver.runlock): a second one is told who drives; a dead holder blocks nobody."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mcc.driver.runlock import RunLock
from mcc.errors import RunBusy

HOLD = ("import sys, time; from pathlib import Path; from mcc.driver.runlock import RunLock; "
        "RunLock(Path(sys.argv[1]), 'r-1').acquire(); print('held', flush=True); time.sleep(120)")


def test_second_driver_is_told_who_drives_and_a_dead_one_blocks_nobody(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusy) as info:
            RunLock(tmp_path, "r-1").acquire()
        assert f"Another mcc process drives run r-1: pid {holder.pid} on host {socket.gethostname()}" in str(info.value)
        RunLock(tmp_path, "r-2").acquire().release()  # another run is free
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with RunLock(tmp_path, "r-1"):  # the kernel dropped the killed holder's lock
        pass


def test_clean_refuses_a_run_another_process_drives(tmp_path: Path, monkeypatch) -> None:
    from mcc import api
    from mcc.ledger import create_row, models, open_ledger

    home = tmp_path / "home"
    ledger = open_ledger(home)
    run = create_row(models.Run, backend="local", project_dir=str(tmp_path), points=1)
    ledger.close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD.replace("'r-1'", repr(run.id)), str(home)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusy, match=f"pid {holder.pid}"):
            api.clean(run.id, home=home)
        with pytest.raises(RunBusy):
            api.clean(all=True, home=home)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert api.clean(run.id, home=home)["deleted"] == []


def test_a_holder_caught_between_its_flock_and_its_name_is_still_named(tmp_path: Path) -> None:
    """Two resumes at once: the loser may look while the winner holds the flock but has not written who it is."""
    import fcntl
    import json
    import os
    import threading

    (tmp_path / "locks").mkdir()
    fd = os.open(tmp_path / "locks" / "r-1.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, the file still empty
    late = threading.Timer(0.2, lambda: os.pwrite(fd, json.dumps({"pid": 4242, "host": "h"}).encode(), 0))
    late.start()
    try:
        with pytest.raises(RunBusy, match="pid 4242 on host h"):
            RunLock(tmp_path, "r-1").acquire()
    finally:
        late.join()
        os.close(fd)
