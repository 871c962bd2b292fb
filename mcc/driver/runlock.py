"""One driver per run: an exclusive ``flock`` on ``$MCC_HOME/locks/<run>.lock`` while a command drives it.

The kernel drops the lock when its holder exits, however it exits (SIGKILL included), so a dead driver
never blocks the next one and there is no lease to expire. The file holds the holder's pid, host and
start time, for the message a second driver gets.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from mcc.errors import RunBusy


class RunLock:
    """Held from ``acquire()`` to ``release()`` (or the end of a ``with`` block)."""

    def __init__(self, home: Path, run_id: str) -> None:
        self.run_id = run_id
        self.path = home / "locks" / f"{run_id}.lock"
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock, or raise RunBusy naming the process (pid, host) that drives the run."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunBusy(
                f"Another mcc process drives run {self.run_id}: pid {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')} ({holder.get('command', 'mcc')}, since {holder.get('since', '?')}). "
                f"`mcc status {self.run_id}` shows its progress without taking it over; stop that process "
                f"to drive the run from here."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": "mcc " + " ".join(_argv()),
        }).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _holder(fd: int, wait_s: float = 1.0) -> dict[str, object]:
    """Who holds the lock, as it wrote itself into the file. It writes right after its flock succeeds, so
    a file still empty (or half written) is read again for up to ``wait_s`` (seen: "pid ?" when two
    resumes started together)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            holder = {}
        if "pid" in holder or time.monotonic() > deadline:
            return holder
        time.sleep(0.02)


def _argv() -> list[str]:
    import sys

    return [a for a in sys.argv[1:] if len(a) < 80][:4]
