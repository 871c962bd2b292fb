"""mcc.providers.local.processes.run_bounded: a command that cannot outlast its timeout, grandchildren included."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mcc.providers.local.processes import run_bounded


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_output_and_exit_status_as_subprocess_run() -> None:
    done = run_bounded([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
                       timeout=60, capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    with pytest.raises(subprocess.CalledProcessError):
        run_bounded([sys.executable, "-c", "raise SystemExit(1)"], timeout=60, check=True)


def test_timeout_kills_the_grandchild_that_holds_the_pipe() -> None:
    """subprocess.run would kill the child, then wait ~60 s for the grandchild to close the pipe."""
    code = ("import subprocess, sys, time\n"
            "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(g.pid, flush=True)\n"
            "time.sleep(60)\n")
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as raised:
        run_bounded([sys.executable, "-c", code], timeout=2, capture_output=True, text=True)
    grandchild = int(raised.value.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the grandchild outlived the timeout"
    assert time.monotonic() - started < 50  # far below the grandchild's 60 s: the wait did not hang on it


def test_child_of_exit_on_sigterm_gets_the_default_action_back() -> None:
    """bench's SIGTERM handler must not reach forked children (Pool.terminate() hung on one that had it)."""
    code = ("import os, signal, sys\n"
            "from bench.__main__ import exit_on_sigterm\n"
            "exit_on_sigterm()\n"
            "assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os._exit(0 if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else 7)\n"
            "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n")
    done = run_bounded([sys.executable, "-c", code], timeout=60, capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr


def test_terminate_all_ends_every_group_a_sigterm_ignorer_by_sigkill(tmp_path) -> None:
    from mcc.providers.local import processes

    ready = tmp_path / "ready"
    stubborn = (f"import signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                f"pathlib.Path({str(ready)!r}).touch(); time.sleep(600)")
    procs = [processes.spawn([sys.executable, "-c", code], tags={"mcc:test": "terminate_all"})
             for code in ("import time; time.sleep(600)", stubborn)]
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists()
        processes.terminate_all(procs, grace=0.5)
        assert not any(processes.is_alive(p) for p in procs)
    finally:
        for proc in procs:
            processes.terminate(proc, grace=0)


def test_a_spawned_process_is_found_by_its_tags_as_soon_as_spawn_returns() -> None:
    """Right after exec the kernel shows an empty /proc/<pid>/environ for a moment (about 1 spawn in 10
    under load before spawn waited for the tags): a sweep or a find-before-create then missed the process."""
    import uuid

    from mcc.providers.local import processes

    ledger = f"test-spawn-{uuid.uuid4().hex[:12]}"
    spawned = []
    try:
        for i in range(40):
            proc = processes.spawn([sys.executable, "-c", "import time; time.sleep(60)"],
                                   tags={"mcc:ledger": ledger, "mcc:entity": f"e{i}"})
            spawned.append(proc)
            assert processes.find_tagged({"mcc:ledger": ledger, "mcc:entity": f"e{i}"}) == [proc], i
    finally:
        processes.terminate_all(spawned, grace=2)
