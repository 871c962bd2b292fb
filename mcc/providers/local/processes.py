"""Process identity on the local machine: pid + start time, so pid reuse never kills a stranger.

A local "instance" carries its ownership tags as environment variables (``MCC_TAG_*``); a sweep reads
/proc/<pid>/environ to find every process tagged with a ledger, the way the EC2 sweep reads tags.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

PROC = Path("/proc")
TAG_ENV_PREFIX = "MCC_TAG_"


@dataclass(frozen=True)
class ProcessId:
    """A process as ``pid@start_ticks``: unique across pid reuse."""

    pid: int
    start: int

    def __str__(self) -> str:
        return f"{self.pid}@{self.start}"

    @classmethod
    def parse(cls, text: str) -> "ProcessId":
        pid, _, start = text.partition("@")
        return cls(int(pid), int(start))


def tag_env(tags: dict[str, str]) -> dict[str, str]:
    """Ownership tags as environment variables (``mcc:ledger`` → ``MCC_TAG_MCC_LEDGER``)."""
    return {TAG_ENV_PREFIX + _env_key(k): v for k, v in tags.items()}


def _env_key(tag: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in tag).upper()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks after boot, or None if there is no such live process."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def identify(pid: int) -> ProcessId | None:
    start = start_ticks(pid)
    return None if start is None else ProcessId(pid, start)


def is_alive(proc: ProcessId) -> bool:
    """True only if the same process (same pid AND start time) still runs (zombies count as gone)."""
    _reap(proc.pid)
    return start_ticks(proc.pid) == proc.start


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key.startswith(TAG_ENV_PREFIX.encode()):
            env[key.decode()] = value.decode(errors="replace")
    return env


def find_tagged(match: dict[str, str]) -> list[ProcessId]:
    """Every live process whose tag environment contains all of ``match`` (tag → value)."""
    wanted = tag_env(match)
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        if _carries(pid, wanted):
            ident = identify(pid)
            if ident is not None:
                found.append(ident)
    return found


def tags_of(proc: ProcessId) -> dict[str, str]:
    """The ownership tags of a process, read back from its environment (keys as env names)."""
    return {k[len(TAG_ENV_PREFIX) :]: v for k, v in environ_of(proc.pid).items()}


def terminate(proc: ProcessId, grace: float = 10.0) -> None:
    """SIGTERM the process group, wait up to ``grace`` s, then SIGKILL; return once it is gone.

    Signals only if pid and start time still match, so a recycled pid is never touched.
    """
    terminate_all([proc], grace)


def terminate_all(procs: list[ProcessId], grace: float = 10.0) -> None:
    """:func:`terminate` for several processes side by side: each group gets SIGTERM at once, so they
    exit together (a fleet's workers in the time of one, not one after the other)."""
    alive = [proc for proc in procs if is_alive(proc)]
    for proc in alive:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = [proc for proc in alive if not _wait_gone(proc, max(0.0, deadline - time.monotonic()))]
    for proc in left:
        _signal_group(proc, signal.SIGKILL)
    for proc in left:
        if not _wait_gone(proc, 10.0):
            raise OSError(f"process {proc} survived SIGKILL")


def _signal_group(proc: ProcessId, sig: int) -> None:
    if not is_alive(proc):
        return
    try:
        pgid = os.getpgid(proc.pid)
        if pgid == proc.pid:  # it leads its own group (start_new_session): signal the whole group
            os.killpg(pgid, sig)
        else:
            os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(proc: ProcessId, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.005  # most processes are gone within tens of ms: look often at first, then back off
    while time.monotonic() < deadline:
        if not is_alive(proc):
            return True
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
    return not is_alive(proc)


def spawn(
    argv: list[str],
    *,
    tags: dict[str, str],
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    log_path: Path | None = None,
    stdin_data: bytes | None = None,
    die_with_parent: bool = False,
) -> ProcessId:
    """Start a detached process in its own session and process group, tagged through its environment.

    ``die_with_parent``: the kernel sends it SIGKILL when this process dies (Linux ``PR_SET_PDEATHSIG``), for
    a helper that must not outlive the job it serves even if that job is SIGKILLed (a Slurm manager job's
    redis-server: in its own session it would escape the job's process tracking)."""
    import subprocess

    full_env = {k: v for k, v in os.environ.items() if not k.startswith(TAG_ENV_PREFIX)}
    full_env.update(env or {})
    full_env.update(tag_env(tags))
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        child = subprocess.Popen(
            argv,
            env=full_env,
            cwd=cwd,
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log_path else subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    finally:
        if log_path:
            log.close()
    if stdin_data is not None:
        assert child.stdin is not None
        child.stdin.write(stdin_data)
        child.stdin.close()
    # Popen keeps no reference we need: liveness is checked by identity and reaped by waitpid.
    child.returncode = 0  # stop Popen.__del__ from warning about a still-running child
    start = start_ticks(child.pid)
    if start is None:
        raise OSError(f"{argv[0]} exited immediately; see {log_path}")
    _await_tags(child.pid, tag_env(tags))
    return ProcessId(child.pid, start)


def _await_tags(pid: int, wanted: dict[str, str], timeout: float = 5.0) -> None:
    """Return once ``wanted`` reads back from /proc/<pid>/environ. Popen returns as the exec happens, and for
    a moment after it the kernel shows an empty environment (seen in ~1 of 10 spawns under load): a sweep
    then would not know the process. Waiting here makes every spawned process findable by its tags."""
    deadline = time.monotonic() + timeout
    while wanted and time.monotonic() < deadline:
        if _carries(pid, wanted) or start_ticks(pid) is None:
            return
        time.sleep(0.001)


def _carries(pid: int, wanted: dict[str, str]) -> bool:
    """True when the process's tag environment holds every one of ``wanted`` (env names → values)."""
    env = environ_of(pid)
    return bool(env) and all(env.get(k) == v for k, v in wanted.items())


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_bounded(argv: list[str], *, timeout: float, input: bytes | str | None = None, capture_output: bool = False,
                check: bool = False, on_start: Callable[[subprocess.Popen], None] | None = None,
                **popen_kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` that cannot outlast ``timeout``: the child leads its own process group, and on a
    timeout (or any exception, Ctrl-C included) the whole group is killed before the pipes are drained.

    ``subprocess.run(..., timeout=)`` kills only the child and then waits, without a limit, for its pipes
    to close: a grandchild that inherited stdout (a worker pool, a shell's background job) makes that
    wait last forever. Raises ``subprocess.TimeoutExpired`` (with what was read) after killing the group.
    ``on_start`` is given the child as soon as it runs (to signal it from elsewhere meanwhile).
    """
    if capture_output:
        popen_kwargs.setdefault("stdout", subprocess.PIPE)
        popen_kwargs.setdefault("stderr", subprocess.PIPE)
    if input is not None:
        popen_kwargs["stdin"] = subprocess.PIPE
    proc = subprocess.Popen(argv, start_new_session=True, **popen_kwargs)
    try:
        if on_start is not None:
            on_start(proc)
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()  # the group is gone: every pipe closes
        raise subprocess.TimeoutExpired(argv, timeout, out, err) from None
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check:
        result.check_returncode()
    return result


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
